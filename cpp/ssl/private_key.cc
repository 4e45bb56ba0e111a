#include "envoy-qat/cpp/ssl/private_key.h"

#include <openssl/ssl.h>

#include <optional>
#include <string>
#include <utility>

#include "envoy-qat/src/bridge.rs.h"

namespace envoy_qat {
namespace ssl {
namespace {

// Per-SSL state, owned by the SSL's ex_data.
struct SslKeyState {
  SslKeyState(std::shared_ptr<const KeyProvider> p, PendingHook hook)
      : provider(std::move(p)), on_pending(std::move(hook)) {}
  ~SslKeyState() { clear_pending(); }

  void notify(int fd) {
    if (!on_pending) {
      return;
    }
    try {
      on_pending(fd);
    } catch (...) {
      log(0, "pending-fd hook threw; ignored");
    }
  }

  void set_pending(rust::Box<ffi::PendingOp> op) {
    pending.emplace(std::move(op));
    notify((*pending)->fd());
  }

  // Tell the hook first, then drop the op (which cancels it if unfinished and closes its fd).
  void clear_pending() {
    if (pending.has_value()) {
      notify(-1);
      pending.reset();
    }
  }

  std::shared_ptr<const KeyProvider> provider;
  PendingHook on_pending;
  std::optional<rust::Box<ffi::PendingOp>> pending;
  uint16_t last_sigalg = 0;
};

void free_state(void* /*parent*/, void* ptr, CRYPTO_EX_DATA* /*ad*/, int /*index*/, long /*argl*/,
                void* /*argp*/) {
  delete static_cast<SslKeyState*>(ptr);
}

int ex_index() {
  // Thread-safe one-time initialisation (C++11 static).
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_state);
  return index;
}

SslKeyState* state_of(const SSL* ssl) {
  const int index = ex_index();
  if (index < 0) {
    return nullptr;
  }
  return static_cast<SslKeyState*>(SSL_get_ex_data(ssl, index));
}

// Keep an operation started by sign/decrypt; fail closed if it did not start.
ssl_private_key_result_t keep(SslKeyState* st, rust::Box<ffi::PendingOp> op) {
  if (op->failed()) {
    return ssl_private_key_failure;  // Rust logged why.
  }
  st->set_pending(std::move(op));
  return ssl_private_key_retry;
}

SslKeyState* usable_state(SSL* ssl, const char* what) {
  SslKeyState* st = state_of(ssl);
  if (st == nullptr) {
    log(0, (std::string(what) + ": no envoy-qat provider attached to this SSL; failing").c_str());
    return nullptr;
  }
  if (st->pending.has_value()) {
    log(0,
        (std::string(what) + ": an operation is already in flight on this SSL; failing").c_str());
    return nullptr;
  }
  return st;
}

ssl_private_key_result_t sign(SSL* ssl, uint8_t* /*out*/, size_t* /*out_len*/, size_t /*max_out*/,
                              uint16_t sigalg, const uint8_t* in, size_t in_len) {
  try {
    SslKeyState* st = usable_state(ssl, "sign");
    if (st == nullptr) {
      return ssl_private_key_failure;
    }
    st->last_sigalg = sigalg;
    return keep(st, ffi::start_sign(st->provider->engine(), st->provider->key(), sigalg,
                                    rust::Slice<const uint8_t>(in, in_len)));
  } catch (const std::exception& e) {
    log(0, (std::string("sign: ") + e.what()).c_str());
  } catch (...) {
    log(0, "sign: unknown C++ exception");
  }
  return ssl_private_key_failure;
}

ssl_private_key_result_t decrypt(SSL* ssl, uint8_t* /*out*/, size_t* /*out_len*/,
                                 size_t /*max_out*/, const uint8_t* in, size_t in_len) {
  try {
    SslKeyState* st = usable_state(ssl, "decrypt");
    if (st == nullptr) {
      return ssl_private_key_failure;
    }
    return keep(st, ffi::start_decrypt(st->provider->engine(), st->provider->key(),
                                       rust::Slice<const uint8_t>(in, in_len)));
  } catch (const std::exception& e) {
    log(0, (std::string("decrypt: ") + e.what()).c_str());
  } catch (...) {
    log(0, "decrypt: unknown C++ exception");
  }
  return ssl_private_key_failure;
}

ssl_private_key_result_t complete(SSL* ssl, uint8_t* out, size_t* out_len, size_t max_out) {
  try {
    SslKeyState* st = state_of(ssl);
    if (st == nullptr || !st->pending.has_value()) {
      log(0, "complete: no private-key operation in flight on this SSL; failing");
      return ssl_private_key_failure;
    }
    size_t n = 0;
    const ffi::OpStatus status =
        (*st->pending)->try_complete(rust::Slice<uint8_t>(out, max_out), n);
    switch (status) {
      case ffi::OpStatus::NotReady:
        return ssl_private_key_retry;
      case ffi::OpStatus::Ready:
        st->clear_pending();
        *out_len = n;
        return ssl_private_key_success;
      case ffi::OpStatus::Failed:
      default:
        st->clear_pending();
        return ssl_private_key_failure;
    }
  } catch (const std::exception& e) {
    log(0, (std::string("complete: ") + e.what()).c_str());
  } catch (...) {
    log(0, "complete: unknown C++ exception");
  }
  return ssl_private_key_failure;
}

const SSL_PRIVATE_KEY_METHOD kMethod = {sign, decrypt, complete};

}  // namespace

KeyProvider::KeyProvider(rust::Box<ffi::QatEngine> engine, rust::Box<ffi::QatKey> key)
    : engine_(std::move(engine)), key_(std::move(key)) {}

KeyProvider::~KeyProvider() = default;

const SSL_PRIVATE_KEY_METHOD* private_key_method() { return &kMethod; }

bool attach_provider(SSL* ssl, std::shared_ptr<const KeyProvider> provider,
                     PendingHook on_pending) {
  const int index = ex_index();
  if (index < 0) {
    log(0, "attach_provider: SSL_get_ex_new_index failed");
    return false;
  }
  detach_provider(ssl);
  auto* st = new SslKeyState(std::move(provider), std::move(on_pending));
  if (SSL_set_ex_data(ssl, index, st) != 1) {
    delete st;
    log(0, "attach_provider: SSL_set_ex_data failed");
    return false;
  }
  return true;
}

int pending_fd(const SSL* ssl) {
  const SslKeyState* st = state_of(ssl);
  if (st == nullptr || !st->pending.has_value()) {
    return -1;
  }
  return (*st->pending)->fd();
}

uint16_t last_signature_algorithm(const SSL* ssl) {
  const SslKeyState* st = state_of(ssl);
  return st == nullptr ? 0 : st->last_sigalg;
}

void detach_provider(SSL* ssl) {
  const int index = ex_index();
  if (index < 0) {
    return;
  }
  auto* st = static_cast<SslKeyState*>(SSL_get_ex_data(ssl, index));
  if (st != nullptr) {
    SSL_set_ex_data(ssl, index, nullptr);
    delete st;
  }
}

void log(uint8_t level, const char* msg) {
  try {
    ffi::log_from_cpp(level, rust::Str(msg));
  } catch (...) {
    // A message that is not UTF-8: drop it rather than throw into BoringSSL.
  }
}

}  // namespace ssl
}  // namespace envoy_qat
