// A periodic callback on Envoy's main thread, for copying engine statistics into Envoy stats.
//
// Envoy's timers belong to the dispatcher that made them: they must be created, fired and
// destroyed on that dispatcher's thread. The objects that own one here (a private key
// provider, a compressor factory) are made on the main thread but their last reference can
// be dropped on a worker (a connection or stream that outlives a configuration update). So
// the timer lives in a slot that only the main thread touches: destroying the ticker on a
// worker posts the slot's destruction to the main thread. Until then the timer may still
// fire: `tick` must therefore not refer to its owner directly (capture a weak_ptr).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <utility>

#include "envoy/event/dispatcher.h"
#include "envoy/event/timer.h"

#include "source/common/common/assert.h"

namespace Envoy {
namespace Extensions {
namespace EnvoyQat {

class MainThreadTicker {
public:
  // On the main thread: `tick` runs there every `period` until the ticker is gone.
  MainThreadTicker(Event::Dispatcher& main_dispatcher, std::chrono::milliseconds period,
                   std::function<void()> tick)
      : main_dispatcher_(main_dispatcher), slot_(std::make_unique<Slot>()) {
    ASSERT(main_dispatcher_.isThreadSafe());
    Slot* slot = slot_.get();
    slot->timer = main_dispatcher_.createTimer([slot, period, tick = std::move(tick)]() {
      tick();
      slot->timer->enableTimer(period);
    });
    slot->timer->enableTimer(period);
  }

  // On any thread. Off the main thread the timer's destruction is posted there.
  ~MainThreadTicker() {
    if (main_dispatcher_.isThreadSafe()) {
      slot_.reset();
      return;
    }
    main_dispatcher_.post([slot = std::move(slot_)]() mutable { slot.reset(); });
  }

  MainThreadTicker(const MainThreadTicker&) = delete;
  MainThreadTicker& operator=(const MainThreadTicker&) = delete;

private:
  struct Slot {
    Event::TimerPtr timer;
  };

  Event::Dispatcher& main_dispatcher_;
  std::unique_ptr<Slot> slot_;
};

} // namespace EnvoyQat
} // namespace Extensions
} // namespace Envoy
