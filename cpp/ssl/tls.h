// A small server-side TLS layer over BoringSSL for `envoy-qat serve`: an SSL_CTX with our
// private-key method (or a key BoringSSL holds itself) and SSL connections over
// non-blocking sockets. Everything is driven by the caller's event loop: each call returns
// what it waits for (socket readable/writable, or the private-key fd).
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <string>

#include "envoy-qat/cpp/ssl/private_key.h"
#include "rust/cxx.h"

namespace envoy_qat {
namespace ffi {
struct TlsIo;
}  // namespace ffi

namespace ssl {

class TlsContext {
 public:
  TlsContext(bssl::UniquePtr<SSL_CTX> ctx, std::shared_ptr<const KeyProvider> provider);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  SSL_CTX* get() const { return ctx_.get(); }
  // Null when BoringSSL holds the key itself.
  const std::shared_ptr<const KeyProvider>& provider() const { return provider_; }

 private:
  bssl::UniquePtr<SSL_CTX> ctx_;
  std::shared_ptr<const KeyProvider> provider_;
};

class TlsConn {
 public:
  // What the pending-fd hook of cpp/ssl reported for this connection.
  struct HookLog {
    uint64_t calls = 0;
    int last_fd = -1;
  };

  TlsConn(bssl::UniquePtr<SSL> ssl, std::shared_ptr<HookLog> hook_log);
  // Frees the SSL: an operation in flight is cancelled, nothing fires afterwards.
  ~TlsConn();
  TlsConn(const TlsConn&) = delete;
  TlsConn& operator=(const TlsConn&) = delete;

  ffi::TlsIo handshake();
  ffi::TlsIo read(rust::Slice<uint8_t> buf);
  ffi::TlsIo write(rust::Slice<const uint8_t> buf);
  ffi::TlsIo shutdown();
  int32_t private_key_fd() const;
  rust::String alpn() const;
  rust::String describe() const;
  rust::String last_error() const;
  // Calls of the pending-fd hook so far, and the fd of the last one (-1 = ended).
  uint64_t hook_calls() const;
  int32_t hook_last_fd() const;

 private:
  ffi::TlsIo result(int ret, const char* what);

  bssl::UniquePtr<SSL> ssl_;
  std::shared_ptr<HookLog> hook_log_;
  std::string last_error_;
};

std::unique_ptr<TlsContext> tls_context_with_provider(rust::Slice<const uint8_t> cert_chain_pem,
                                                      const ffi::QatEngine& engine,
                                                      const ffi::QatKey& key);
std::unique_ptr<TlsContext> tls_context_with_key(rust::Slice<const uint8_t> cert_chain_pem,
                                                 rust::Slice<const uint8_t> key_pem);
rust::String self_signed_cert(rust::Slice<const uint8_t> key_pem, rust::Str dns_name,
                              uint32_t days);
std::unique_ptr<TlsConn> tls_conn_new(const TlsContext& ctx, int32_t fd);

}  // namespace ssl
}  // namespace envoy_qat
