#include "cpp/envoy/qat_private_key_provider.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "envoy/common/exception.h"
#include "envoy/registry/registry.h"

#include "source/common/config/datasource.h"
#include "source/common/config/utility.h"
#include "source/common/protobuf/message_validator_impl.h"
#include "source/common/protobuf/utility.h"

#include "cpp/api/envoy/extensions/private_key_providers/qat/v3alpha/qat.pb.validate.h"
#include "openssl/ssl.h"

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

QatProviderShared::QatProviderShared(
    std::shared_ptr<const envoy_qat::ssl::KeyProvider> key_provider, Stats::Scope& scope)
    : provider(std::move(key_provider)),
      stats{ALL_QAT_PROVIDER_STATS(POOL_COUNTER_PREFIX(scope, "qat."),
                                   POOL_GAUGE_PREFIX(scope, "qat."))} {}

void QatProviderShared::publishStats() {
  const envoy_qat::ffi::ProviderStats now = provider->engine().stats();
  stats.operations_.add(now.submitted - last.submitted);
  stats.retries_.add(now.started_async - last.started_async);
  stats.failovers_.add(now.fallbacks - last.fallbacks);
  stats.failures_.add(now.op_failures - last.op_failures);
  stats.cancelled_.add(now.cancelled - last.cancelled);
  stats.rejected_busy_.add(now.rejected_busy - last.rejected_busy);
  stats.in_flight_.set(now.in_flight);
  stats.latency_p50_us_.set(now.latency_p50_ns / 1000);
  stats.latency_p99_us_.set(now.latency_p99_ns / 1000);
  last = now;
}

QatPrivateKeyMethodProvider::QatPrivateKeyMethodProvider(
    const QatConfig& config, Server::Configuration::TransportSocketFactoryContext& context) {
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
  if (!unavailable_reason_.empty()) {
    ENVOY_LOG(warn, "qat private key provider unavailable: {}", unavailable_reason_);
  }
  shared_ = std::make_shared<QatProviderShared>(
      std::make_shared<const envoy_qat::ssl::KeyProvider>(std::move(engine), std::move(key)),
      context.statsScope());
  shared_->stats.hardware_available_.set(unavailable_reason_.empty() ? 1 : 0);
  ticker_ =
      std::make_unique<MainThreadTicker>(server.mainThreadDispatcher(), std::chrono::seconds(1),
                                         [weak = std::weak_ptr<QatProviderShared>(shared_)]() {
                                           if (auto shared = weak.lock()) {
                                             shared->publishStats();
                                           }
                                         });
}

void QatPrivateKeyMethodProvider::registerPrivateKeyMethod(SSL* ssl,
                                                           Ssl::PrivateKeyConnectionCallbacks& cb,
                                                           Event::Dispatcher& dispatcher) {
  auto events = std::make_shared<ConnectionEvents>(cb, dispatcher);
  if (!envoy_qat::ssl::attach_provider(ssl, shared_->provider,
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

Ssl::PrivateKeyMethodProviderSharedPtr
QatPrivateKeyMethodFactory::createPrivateKeyMethodProviderInstance(
    const envoy::extensions::transport_sockets::tls::v3::PrivateKeyProvider& message,
    Server::Configuration::TransportSocketFactoryContext& context) {
  // As every Envoy extension: unpack the Any, then enforce the proto rules (a poll_delay
  // below 1 ms, an undefined poll_policy... are rejected here, with the field named).
  QatConfig message_config;
  THROW_IF_NOT_OK(Config::Utility::translateOpaqueConfig(
      message.typed_config(), context.messageValidationVisitor(), message_config));
  const QatConfig& config = MessageUtil::downcastAndValidate<const QatConfig&>(
      message_config, context.messageValidationVisitor());
  return std::make_shared<QatPrivateKeyMethodProvider>(config, context);
}

REGISTER_FACTORY(QatPrivateKeyMethodFactory, Ssl::PrivateKeyMethodProviderInstanceFactory);

} // namespace EnvoyQat
} // namespace PrivateKeyMethodProvider
} // namespace Extensions
} // namespace Envoy
