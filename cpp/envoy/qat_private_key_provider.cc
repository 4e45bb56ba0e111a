#include "cpp/envoy/qat_private_key_provider.h"

#include <chrono>

#include "envoy/registry/registry.h"

#include "source/common/config/datasource.h"
#include "source/common/config/utility.h"
#include "source/common/protobuf/message_validator_impl.h"
#include "source/common/protobuf/utility.h"

namespace Envoy {
namespace Extensions {
namespace PrivateKeyMethodProvider {
namespace EnvoyQat {

using QatConfig = envoy::extensions::private_key_providers::qat::v3alpha::QatPrivateKeyMethodConfig;

namespace {

// The typed config as the bridge's options: a field copy, nothing decided here.
envoy_qat::ffi::ProviderOptions toOptions(const QatConfig& config) {
  envoy_qat::ffi::ProviderOptions o;
  o.poll_delay_ms =
      config.has_poll_delay()
          ? static_cast<uint32_t>(DurationUtil::durationToMilliseconds(config.poll_delay()))
          : 0;
  o.software_failover = config.software_failover();
  o.ecdsa = config.has_ecdsa() ? config.ecdsa().value() : true;
  o.section_name = config.section_name();
  o.library_dir = config.library_dir();
  o.max_in_flight = config.has_max_in_flight() ? config.max_in_flight().value() : 0;
  o.fixed_poll = config.poll_policy() == QatConfig::FIXED;
  return o;
}

// Per connection: the callbacks and dispatcher Envoy gave us, and the file event of the
// operation in flight. Owned by cpp/ssl's per-SSL state through the hook; destroyed when the
// SSL is detached, after which nothing fires.
class ConnectionEvents {
public:
  ConnectionEvents(Ssl::PrivateKeyConnectionCallbacks& cb, Event::Dispatcher& dispatcher)
      : cb_(cb), dispatcher_(dispatcher) {}

  // cpp/ssl calls this on the connection's thread: fd >= 0 when an operation starts,
  // -1 when it ends or is cancelled.
  void onPending(int fd) {
    event_.reset();
    if (fd < 0) {
      return;
    }
    event_ = dispatcher_.createFileEvent(
        fd,
        [this](uint32_t) {
          // Drop the event first: completing the handshake closes the fd.
          event_.reset();
          cb_.onPrivateKeyMethodComplete();
          return absl::OkStatus();
        },
        Event::FileTriggerType::Level, Event::FileReadyType::Read);
  }

private:
  Ssl::PrivateKeyConnectionCallbacks& cb_;
  Event::Dispatcher& dispatcher_;
  Event::FileEventPtr event_;
};

} // namespace

QatPrivateKeyMethodProvider::QatPrivateKeyMethodProvider(
    const QatConfig& config, Server::Configuration::TransportSocketFactoryContext& context)
    : stats_{ALL_QAT_PROVIDER_STATS(POOL_COUNTER_PREFIX(context.statsScope(), "qat."),
                                    POOL_GAUGE_PREFIX(context.statsScope(), "qat."))} {
  auto& server = context.serverFactoryContext();
  const std::string key_bytes = THROW_OR_RETURN_VALUE(
      Config::DataSource::read(config.private_key(), true, server.api()), std::string);
  // Errors from Rust arrive as rust::Error (std::exception): Envoy rejects the config with
  // the message, which names the field and the fix.
  auto key = envoy_qat::ffi::key_from_bytes(
      rust::Slice<const uint8_t>(reinterpret_cast<const uint8_t*>(key_bytes.data()),
                                 key_bytes.size()),
      "private_key");
  auto engine = envoy_qat::ffi::engine_from_options(toOptions(config));
  unavailable_reason_ = std::string(engine->hardware_unavailable_reason());
  stats_.hardware_available_.set(unavailable_reason_.empty() ? 1 : 0);
  if (!unavailable_reason_.empty()) {
    ENVOY_LOG(warn, "qat private key provider unavailable: {}", unavailable_reason_);
  }
  provider_ =
      std::make_shared<const envoy_qat::ssl::KeyProvider>(std::move(engine), std::move(key));
  stats_timer_ = server.mainThreadDispatcher().createTimer([this] {
    publishStats();
    stats_timer_->enableTimer(std::chrono::seconds(1));
  });
  stats_timer_->enableTimer(std::chrono::seconds(1));
}

QatPrivateKeyMethodProvider::~QatPrivateKeyMethodProvider() {
  if (stats_timer_) {
    stats_timer_->disableTimer();
  }
}

void QatPrivateKeyMethodProvider::registerPrivateKeyMethod(SSL* ssl,
                                                           Ssl::PrivateKeyConnectionCallbacks& cb,
                                                           Event::Dispatcher& dispatcher) {
  auto events = std::make_shared<ConnectionEvents>(cb, dispatcher);
  if (!envoy_qat::ssl::attach_provider(ssl, provider_,
                                       [events](int fd) { events->onPending(fd); })) {
    throw EnvoyException("qat private key provider: cannot attach to the TLS connection");
  }
}

void QatPrivateKeyMethodProvider::unregisterPrivateKeyMethod(SSL* ssl) {
  envoy_qat::ssl::detach_provider(ssl);
}

// The software path runs the RustCrypto crates and QAT runs qatlib: neither is a
// FIPS-validated module as Envoy's FIPS build requires, so say no.
bool QatPrivateKeyMethodProvider::checkFips() { return false; }

bool QatPrivateKeyMethodProvider::isAvailable() { return unavailable_reason_.empty(); }

Ssl::BoringSslPrivateKeyMethodSharedPtr
QatPrivateKeyMethodProvider::getBoringSslPrivateKeyMethod() {
  // A static table: share it without ownership.
  return Ssl::BoringSslPrivateKeyMethodSharedPtr(
      const_cast<SSL_PRIVATE_KEY_METHOD*>(envoy_qat::ssl::private_key_method()),
      [](SSL_PRIVATE_KEY_METHOD*) {});
}

void QatPrivateKeyMethodProvider::publishStats() {
  const envoy_qat::ffi::ProviderStats now = provider_->engine().stats();
  stats_.operations_.add(now.submitted - last_.submitted);
  stats_.retries_.add(now.started_async - last_.started_async);
  stats_.failovers_.add(now.fallbacks - last_.fallbacks);
  stats_.failures_.add(now.op_failures - last_.op_failures);
  stats_.cancelled_.add(now.cancelled - last_.cancelled);
  stats_.rejected_busy_.add(now.rejected_busy - last_.rejected_busy);
  stats_.in_flight_.set(now.in_flight);
  stats_.latency_p50_us_.set(now.latency_p50_ns / 1000);
  stats_.latency_p99_us_.set(now.latency_p99_ns / 1000);
  last_ = now;
}

Ssl::PrivateKeyMethodProviderSharedPtr
QatPrivateKeyMethodFactory::createPrivateKeyMethodProviderInstance(
    const envoy::extensions::transport_sockets::tls::v3::PrivateKeyProvider& message,
    Server::Configuration::TransportSocketFactoryContext& context) {
  QatConfig config;
  THROW_IF_NOT_OK(Config::Utility::translateOpaqueConfig(
      message.typed_config(), context.messageValidationVisitor(), config));
  return std::make_shared<QatPrivateKeyMethodProvider>(config, context);
}

REGISTER_FACTORY(QatPrivateKeyMethodFactory, Ssl::PrivateKeyMethodProviderInstanceFactory);

} // namespace EnvoyQat
} // namespace PrivateKeyMethodProvider
} // namespace Extensions
} // namespace Envoy
