// Envoy's `qat` private key provider over envoy-qat (thin and mechanical).
//
// All crypto, threading and policy live below this file: the Rust engine (src/engine,
// src/backend) behind the cxx bridge (src/bridge.rs) and the Envoy-free BoringSSL glue
// (cpp/ssl). This file only adapts Envoy's interfaces to them:
//  - the typed config becomes the bridge's ProviderOptions;
//  - registerPrivateKeyMethod attaches cpp/ssl's per-SSL state and turns each operation's
//    notification fd into a dispatcher file event that calls onPrivateKeyMethodComplete on
//    the connection's own thread;
//  - unregisterPrivateKeyMethod detaches it (cancelling an operation in flight);
//  - engine statistics are copied into Envoy stats under `qat.` once a second, on the main
//    thread (main_thread_ticker.h).
#pragma once

#include <memory>
#include <string>

#include "envoy/event/dispatcher.h"
#include "envoy/extensions/transport_sockets/tls/v3/cert.pb.h"
#include "envoy/server/transport_socket_config.h"
#include "envoy/ssl/private_key/private_key.h"
#include "envoy/ssl/private_key/private_key_config.h"
#include "envoy/stats/scope.h"
#include "envoy/stats/stats_macros.h"

#include "source/common/common/logger.h"

#include "cpp/api/envoy/extensions/private_key_providers/qat/v3alpha/qat.pb.h"
#include "cpp/envoy/main_thread_ticker.h"
#include "envoy-qat/cpp/ssl/private_key.h"
#include "envoy-qat/src/bridge.rs.h"

namespace Envoy {
namespace Extensions {
namespace PrivateKeyMethodProvider {
namespace EnvoyQat {

using Extensions::EnvoyQat::MainThreadTicker;

// clang-format off
#define ALL_QAT_PROVIDER_STATS(COUNTER, GAUGE)                                                \
  COUNTER(operations)                                                                         \
  COUNTER(retries)                                                                            \
  COUNTER(failovers)                                                                          \
  COUNTER(failures)                                                                           \
  COUNTER(cancelled)                                                                          \
  COUNTER(rejected_busy)                                                                      \
  GAUGE(in_flight, Accumulate)                                                                \
  GAUGE(latency_p50_us, NeverImport)                                                          \
  GAUGE(latency_p99_us, NeverImport)                                                          \
  GAUGE(hardware_available, NeverImport)
// clang-format on

struct QatProviderStats {
  ALL_QAT_PROVIDER_STATS(GENERATE_COUNTER_STRUCT, GENERATE_GAUGE_STRUCT)
};

// What the provider and its stats ticker share; the provider's last reference may be dropped
// on any thread. Only the main thread's ticker reads and writes `last`.
struct QatProviderShared {
  QatProviderShared(std::shared_ptr<const envoy_qat::ssl::KeyProvider> key_provider,
                    Stats::Scope& scope);
  // Adds what the engine counted since the last call to the Envoy stats.
  void publishStats();

  std::shared_ptr<const envoy_qat::ssl::KeyProvider> provider;
  QatProviderStats stats;
  envoy_qat::ffi::ProviderStats last{};
};

class QatPrivateKeyMethodProvider : public virtual Ssl::PrivateKeyMethodProvider,
                                    public Logger::Loggable<Logger::Id::connection> {
public:
  // On the main thread (the ticker's timer is made there). The config is validated.
  QatPrivateKeyMethodProvider(
      const envoy::extensions::private_key_providers::qat::v3alpha::QatPrivateKeyMethodConfig&
          config,
      Server::Configuration::TransportSocketFactoryContext& context);

  // Ssl::PrivateKeyMethodProvider
  void registerPrivateKeyMethod(SSL* ssl, Ssl::PrivateKeyConnectionCallbacks& cb,
                                Event::Dispatcher& dispatcher) override;
  void unregisterPrivateKeyMethod(SSL* ssl) override;
  bool checkFips() override;
  bool isAvailable() override;
  Ssl::BoringSslPrivateKeyMethodSharedPtr getBoringSslPrivateKeyMethod() override;

private:
  std::string unavailable_reason_;
  std::shared_ptr<QatProviderShared> shared_;
  std::unique_ptr<MainThreadTicker> ticker_;
};

class QatPrivateKeyMethodFactory : public Ssl::PrivateKeyMethodProviderInstanceFactory {
public:
  Ssl::PrivateKeyMethodProviderSharedPtr createPrivateKeyMethodProviderInstance(
      const envoy::extensions::transport_sockets::tls::v3::PrivateKeyProvider& message,
      Server::Configuration::TransportSocketFactoryContext& context) override;
  // Upstream's factory name, so `provider_name: qat` works unchanged.
  std::string name() const override { return "qat"; }
};

} // namespace EnvoyQat
} // namespace PrivateKeyMethodProvider
} // namespace Extensions
} // namespace Envoy
