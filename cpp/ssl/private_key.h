// BoringSSL SSL_PRIVATE_KEY_METHOD over the Rust private-key engine (src/bridge.rs).
//
// Envoy-free: Envoy's "qat" private key provider and `envoy-qat serve` both use it.
// Include only BoringSSL headers in a translation unit that includes this file.
//
// Per SSL the method keeps one state in ex_data: the provider (engine + key) and the
// operation in flight. BoringSSL calls `sign` / `decrypt`, which start the operation in
// Rust and return ssl_private_key_retry; the handshake then reports
// SSL_ERROR_WANT_PRIVATE_KEY_OPERATION. The event loop waits until pending_fd(ssl) is
// readable and calls the handshake again; BoringSSL then calls `complete`, which takes the
// result.
//
// Releasing: detach_provider(ssl) or SSL_free(ssl) drops the state; an operation still in
// flight is cancelled (its fd closed, its result discarded) and nothing touches the SSL
// afterwards. An event loop that watches pending_fd(ssl) must stop watching it before that.
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "rust/cxx.h"

namespace envoy_qat {
namespace ffi {
struct QatEngine;
struct QatKey;
}  // namespace ffi

namespace ssl {

// One key and the engine that performs its operations; shared by every SSL that uses it.
class KeyProvider {
 public:
  KeyProvider(rust::Box<ffi::QatEngine> engine, rust::Box<ffi::QatKey> key);
  ~KeyProvider();
  KeyProvider(const KeyProvider&) = delete;
  KeyProvider& operator=(const KeyProvider&) = delete;

  const ffi::QatEngine& engine() const { return *engine_; }
  const ffi::QatKey& key() const { return *key_; }

 private:
  rust::Box<ffi::QatEngine> engine_;
  rust::Box<ffi::QatKey> key_;
};

// The method table (static; valid for the life of the process).
const SSL_PRIVATE_KEY_METHOD* private_key_method();

// Called on the thread that drives `ssl`: with the notification fd when an operation
// starts, and with -1 when it ends (completed, failed) or is cancelled, always before that
// fd closes. Envoy's shim registers / removes its dispatcher file event here.
using PendingHook = std::function<void(int fd)>;

// Give `ssl` its per-connection state. Replaces (and cancels) any earlier state.
// `on_pending` (optional) is owned by the state and destroyed with it.
// Returns false if ex_data could not be set (logged).
bool attach_provider(SSL* ssl, std::shared_ptr<const KeyProvider> provider,
                     PendingHook on_pending = nullptr);

// The notification fd of the operation in flight on `ssl`, or -1 if there is none.
int pending_fd(const SSL* ssl);

// The TLS SignatureScheme of the last signature made for `ssl` (0 if none).
uint16_t last_signature_algorithm(const SSL* ssl);

// Drop the per-connection state now, cancelling an operation in flight. Idempotent.
// After it returns nothing fires for `ssl` and its fd is closed.
void detach_provider(SSL* ssl);

// Log through the Rust side's tracing (level: 0 error, 1 warn, 2 info, 3 debug).
void log(uint8_t level, const char* msg);

}  // namespace ssl
}  // namespace envoy_qat
