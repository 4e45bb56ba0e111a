#include "cpp/envoy/qatzip_compressor.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "envoy/registry/registry.h"

#include "source/common/common/macros.h"
#include "source/common/http/headers.h"
#include "source/common/protobuf/utility.h"

#include "cpp/api/envoy/extensions/compression/qatzip/compressor/v3alpha/qatzip.pb.validate.h"

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
    shared_->stats.errors_.inc();
    return;
  }
  buffer.add(out.data(), out.size());
}

QatzipShared::QatzipShared(rust::Box<envoy_qat::ffi::QatCompressorFactory> inner_factory,
                           Stats::Scope& scope)
    : inner(std::move(inner_factory)),
      stats{ALL_QATZIP_STATS(POOL_COUNTER_PREFIX(scope, "qatzip."),
                             POOL_GAUGE_PREFIX(scope, "qatzip."))} {
  stats.hardware_available_.set(inner->hardware_in_use() ? 1 : 0);
}

void QatzipShared::publishStats() {
  const envoy_qat::ffi::CompressorStats now = inner->stats();
  stats.streams_.add(now.streams - last.streams);
  stats.bytes_in_.add(now.bytes_in - last.bytes_in);
  stats.bytes_out_.add(now.bytes_out - last.bytes_out);
  stats.hardware_bytes_.add(now.hardware_bytes - last.hardware_bytes);
  stats.software_bytes_.add(now.software_bytes - last.software_bytes);
  stats.hardware_available_.set(inner->hardware_in_use() ? 1 : 0);
  last = now;
}

QatzipCompressorFactory::QatzipCompressorFactory(
    rust::Box<envoy_qat::ffi::QatCompressorFactory> inner, Stats::Scope& scope,
    Event::Dispatcher& main_dispatcher)
    : shared_(std::make_shared<QatzipShared>(std::move(inner), scope)),
      ticker_(main_dispatcher, std::chrono::seconds(1),
              [weak = std::weak_ptr<QatzipShared>(shared_)]() {
                if (auto shared = weak.lock()) {
                  shared->publishStats();
                }
              }) {}

Envoy::Compression::Compressor::CompressorPtr QatzipCompressorFactory::createCompressor() {
  return std::make_unique<QatzipCompressor>(shared_->inner->create(), shared_);
}

const std::string& QatzipCompressorFactory::statsPrefix() const {
  CONSTRUCT_ON_FIRST_USE(std::string, "qatzip.");
}

const std::string& QatzipCompressorFactory::contentEncoding() const {
  return Http::CustomHeaders::get().ContentEncodingValues.Gzip;
}

Envoy::Compression::Compressor::CompressorFactoryPtr
QatzipCompressorLibraryFactory::createCompressorFactoryFromProto(
    const Protobuf::Message& proto, Server::Configuration::GenericFactoryContext& context) {
  // The proto rules (ranges, enum values) are enforced here, as for every Envoy extension;
  // the Rust parser below checks the same ranges again for its other callers.
  const auto& config = MessageUtil::downcastAndValidate<const QatzipConfig&>(
      proto, context.messageValidationVisitor());
  // The Rust config parser takes the proto3 JSON form.
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
