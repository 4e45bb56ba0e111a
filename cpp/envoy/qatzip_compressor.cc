#include "cpp/envoy/qatzip_compressor.h"

#include <chrono>

#include "envoy/registry/registry.h"

#include "source/common/buffer/buffer_impl.h"
#include "source/common/http/headers.h"
#include "source/common/protobuf/utility.h"

namespace Envoy {
namespace Extensions {
namespace Compression {
namespace EnvoyQatzip {

using QatzipConfig = envoy::extensions::compression::qatzip::compressor::v3alpha::Qatzip;

void QatzipCompressor::compress(Buffer::Instance& buffer,
                                Envoy::Compression::Compressor::State state) {
  const uint64_t n = buffer.length();
  const auto* in = static_cast<const uint8_t*>(buffer.linearize(static_cast<uint32_t>(n)));
  rust::Vec<uint8_t> out;
  // The Rust side never throws for data: it reports failure and has logged why.
  const bool ok = inner_->compress(rust::Slice<const uint8_t>(in, n),
                                   state == Envoy::Compression::Compressor::State::Finish, out);
  buffer.drain(n);
  if (!ok) {
    // A gzip stream cannot carry an error: end it here, so the client sees a truncated
    // stream instead of corrupt data.
    stats_.errors_.inc();
    return;
  }
  buffer.add(out.data(), out.size());
}

QatzipCompressorFactory::QatzipCompressorFactory(
    rust::Box<envoy_qat::ffi::QatCompressorFactory> inner, Stats::Scope& scope,
    Event::Dispatcher& main_dispatcher)
    : inner_(std::move(inner)),
      stats_{ALL_QATZIP_STATS(POOL_COUNTER_PREFIX(scope, "qatzip."),
                              POOL_GAUGE_PREFIX(scope, "qatzip."))} {
  stats_.hardware_available_.set(inner_->hardware_in_use() ? 1 : 0);
  stats_timer_ = main_dispatcher.createTimer([this] {
    publishStats();
    stats_timer_->enableTimer(std::chrono::seconds(1));
  });
  stats_timer_->enableTimer(std::chrono::seconds(1));
}

QatzipCompressorFactory::~QatzipCompressorFactory() {
  if (stats_timer_) {
    stats_timer_->disableTimer();
  }
}

Envoy::Compression::Compressor::CompressorPtr QatzipCompressorFactory::createCompressor() {
  return std::make_unique<QatzipCompressor>(inner_->create(), stats_);
}

const std::string& QatzipCompressorFactory::statsPrefix() const {
  CONSTRUCT_ON_FIRST_USE(std::string, "qatzip.");
}

const std::string& QatzipCompressorFactory::contentEncoding() const {
  return Http::CustomHeaders::get().ContentEncodingValues.Gzip;
}

void QatzipCompressorFactory::publishStats() {
  const envoy_qat::ffi::CompressorStats now = inner_->stats();
  stats_.streams_.add(now.streams - last_.streams);
  stats_.bytes_in_.add(now.bytes_in - last_.bytes_in);
  stats_.bytes_out_.add(now.bytes_out - last_.bytes_out);
  stats_.hardware_bytes_.add(now.hardware_bytes - last_.hardware_bytes);
  stats_.software_bytes_.add(now.software_bytes - last_.software_bytes);
  stats_.hardware_available_.set(inner_->hardware_in_use() ? 1 : 0);
  last_ = now;
}

Envoy::Compression::Compressor::CompressorFactoryPtr
QatzipCompressorLibraryFactory::createCompressorFactoryFromProto(
    const Protobuf::Message& proto, Server::Configuration::GenericFactoryContext& context) {
  const auto& config = MessageUtil::downcastAndValidate<const QatzipConfig&>(
      proto, context.messageValidationVisitor());
  // The Rust config parser takes the proto3 JSON form and applies upstream's ranges.
  const std::string json = MessageUtil::getJsonStringFromMessageOrError(config, false, true);
  auto inner = envoy_qat::ffi::compressor_factory_from_json(json);
  return std::make_unique<QatzipCompressorFactory>(
      std::move(inner), context.scope(), context.serverFactoryContext().mainThreadDispatcher());
}

ProtobufTypes::MessagePtr QatzipCompressorLibraryFactory::createEmptyConfigProto() {
  return std::make_unique<QatzipConfig>();
}

REGISTER_FACTORY(QatzipCompressorLibraryFactory,
                 Envoy::Compression::Compressor::NamedCompressorLibraryConfigFactory);

} // namespace EnvoyQatzip
} // namespace Compression
} // namespace Extensions
} // namespace Envoy
