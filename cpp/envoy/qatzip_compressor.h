// Envoy's `envoy.compression.qatzip.compressor` library over envoy-qat (thin and mechanical).
//
// The streaming gzip compressor, its QATzip session reuse per worker thread, software
// fallback and statistics live in Rust (src/compress) behind the cxx bridge. This file only
// adapts Envoy's Compressor interface: it hands each buffer to the Rust compressor and puts
// back what comes out, and copies the factory's statistics into Envoy stats under `qatzip.`
// once a second on the main thread (main_thread_ticker.h).
#pragma once

#include <memory>
#include <string>

#include "envoy/buffer/buffer.h"
#include "envoy/compression/compressor/compressor.h"
#include "envoy/compression/compressor/config.h"
#include "envoy/compression/compressor/factory.h"
#include "envoy/event/dispatcher.h"
#include "envoy/server/factory_context.h"
#include "envoy/stats/scope.h"
#include "envoy/stats/stats_macros.h"

#include "source/common/common/logger.h"
#include "source/common/protobuf/protobuf.h"

#include "cpp/api/envoy/extensions/compression/qatzip/compressor/v3alpha/qatzip.pb.h"
#include "cpp/envoy/main_thread_ticker.h"
#include "envoy-qat/src/bridge.rs.h"

namespace Envoy {
namespace Extensions {
namespace Compression {
namespace EnvoyQatzip {

using EnvoyQat::MainThreadTicker;

// clang-format off
#define ALL_QATZIP_STATS(COUNTER, GAUGE)                                                      \
  COUNTER(streams)                                                                            \
  COUNTER(bytes_in)                                                                           \
  COUNTER(bytes_out)                                                                          \
  COUNTER(hardware_bytes)                                                                     \
  COUNTER(software_bytes)                                                                     \
  COUNTER(errors)                                                                             \
  GAUGE(hardware_available, NeverImport)
// clang-format on

struct QatzipStats {
  ALL_QATZIP_STATS(GENERATE_COUNTER_STRUCT, GENERATE_GAUGE_STRUCT)
};

// What the factory, its compressors and the stats ticker share. The last owner may be on
// any thread; only the main thread's ticker reads and writes `last`.
struct QatzipShared {
  QatzipShared(rust::Box<envoy_qat::ffi::QatCompressorFactory> inner, Stats::Scope& scope);
  // Adds what the Rust factory counted since the last call to the Envoy stats.
  void publishStats();

  rust::Box<envoy_qat::ffi::QatCompressorFactory> inner;
  QatzipStats stats;
  envoy_qat::ffi::CompressorStats last{};
};

class QatzipCompressor : public Envoy::Compression::Compressor::Compressor,
                         public Logger::Loggable<Logger::Id::filter> {
public:
  QatzipCompressor(rust::Box<envoy_qat::ffi::QatCompressor> inner,
                   std::shared_ptr<QatzipShared> shared)
      : inner_(std::move(inner)), shared_(std::move(shared)) {}
  void compress(Buffer::Instance& buffer, Envoy::Compression::Compressor::State state) override;

private:
  rust::Box<envoy_qat::ffi::QatCompressor> inner_;
  std::shared_ptr<QatzipShared> shared_;
};

class QatzipCompressorFactory : public Envoy::Compression::Compressor::CompressorFactory {
public:
  // On the main thread (the ticker's timer is made there).
  QatzipCompressorFactory(rust::Box<envoy_qat::ffi::QatCompressorFactory> inner,
                          Stats::Scope& scope, Event::Dispatcher& main_dispatcher);

  Envoy::Compression::Compressor::CompressorPtr createCompressor() override;
  const std::string& statsPrefix() const override;
  const std::string& contentEncoding() const override;

private:
  std::shared_ptr<QatzipShared> shared_;
  MainThreadTicker ticker_;
};

class QatzipCompressorLibraryFactory
    : public Envoy::Compression::Compressor::NamedCompressorLibraryConfigFactory {
public:
  Envoy::Compression::Compressor::CompressorFactoryPtr createCompressorFactoryFromProto(
      const Protobuf::Message& config,
      Server::Configuration::GenericFactoryContext& context) override;
  ProtobufTypes::MessagePtr createEmptyConfigProto() override;
  // Upstream's extension name, so existing compressor_library configs work unchanged.
  std::string name() const override { return "envoy.compression.qatzip.compressor"; }
};

} // namespace EnvoyQatzip
} // namespace Compression
} // namespace Extensions
} // namespace Envoy
