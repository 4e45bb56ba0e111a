#include "envoy-qat/cpp/ssl/tls.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <string.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "envoy-qat/src/bridge.rs.h"

namespace envoy_qat {
namespace ssl {
namespace {

// The error queue of this thread as text (and cleared).
std::string drain_errors() {
  std::string out;
  uint32_t e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) {
      out += "; ";
    }
    out += buf;
  }
  return out;
}

[[noreturn]] void fail(const std::string& what) {
  const std::string errors = drain_errors();
  throw std::runtime_error(errors.empty() ? what : what + " (" + errors + ")");
}

bssl::UniquePtr<BIO> mem_bio(rust::Slice<const uint8_t> data) {
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  if (!bio) {
    fail("out of memory");
  }
  return bio;
}

// Prefer h2, then http/1.1 (server preference).
int select_alpn(SSL* /*ssl*/, const uint8_t** out, uint8_t* out_len, const uint8_t* in,
                unsigned in_len, void* /*arg*/) {
  static const uint8_t kOurs[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  uint8_t* selected = nullptr;
  if (SSL_select_next_proto(&selected, out_len, kOurs, sizeof(kOurs), in, in_len) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

// A server SSL_CTX with the certificate chain loaded; returns the leaf's SPKI (DER).
bssl::UniquePtr<SSL_CTX> new_ctx(rust::Slice<const uint8_t> cert_chain_pem,
                                 std::vector<uint8_t>* leaf_spki) {
  ERR_clear_error();
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  if (!ctx) {
    fail("SSL_CTX_new failed");
  }
  auto bio = mem_bio(cert_chain_pem);
  bssl::UniquePtr<X509> leaf(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!leaf) {
    fail("certificate: no PEM certificate found; pass a PEM file that starts with the leaf");
  }
  if (SSL_CTX_use_certificate(ctx.get(), leaf.get()) != 1) {
    fail("certificate: BoringSSL refused the leaf certificate");
  }
  for (;;) {
    bssl::UniquePtr<X509> extra(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!extra) {
      ERR_clear_error();  // End of the chain.
      break;
    }
    if (SSL_CTX_add1_chain_cert(ctx.get(), extra.get()) != 1) {
      fail("certificate: BoringSSL refused a chain certificate");
    }
  }
  uint8_t* der = nullptr;
  const int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(leaf.get()), &der);
  if (len <= 0) {
    fail("certificate: cannot encode its public key");
  }
  leaf_spki->assign(der, der + len);
  OPENSSL_free(der);

  SSL_CTX_set_alpn_select_cb(ctx.get(), select_alpn, nullptr);
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // Every connection does a full handshake (and so a private-key operation): no session
  // cache, no tickets.
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET);
  return ctx;
}

}  // namespace

TlsContext::TlsContext(bssl::UniquePtr<SSL_CTX> ctx, std::shared_ptr<const KeyProvider> provider)
    : ctx_(std::move(ctx)), provider_(std::move(provider)) {}

TlsContext::~TlsContext() = default;

std::unique_ptr<TlsContext> tls_context_with_provider(rust::Slice<const uint8_t> cert_chain_pem,
                                                      const ffi::QatEngine& engine,
                                                      const ffi::QatKey& key) {
  std::vector<uint8_t> spki;
  auto ctx = new_ctx(cert_chain_pem, &spki);
  const rust::Vec<uint8_t> key_spki = key.public_key_der();
  if (key_spki.size() != spki.size() || memcmp(key_spki.data(), spki.data(), spki.size()) != 0) {
    fail(
        "certificate: its public key does not match the private key; pass the certificate "
        "issued for this key");
  }
  const rust::Vec<uint16_t> schemes = key.signature_schemes();
  if (schemes.empty() ||
      SSL_CTX_set_signing_algorithm_prefs(ctx.get(), schemes.data(), schemes.size()) != 1) {
    fail("cannot set the signing algorithms of the private key");
  }
  SSL_CTX_set_private_key_method(ctx.get(), private_key_method());
  auto provider = std::make_shared<const KeyProvider>(engine.clone_handle(), key.clone_handle());
  return std::make_unique<TlsContext>(std::move(ctx), std::move(provider));
}

std::unique_ptr<TlsContext> tls_context_with_key(rust::Slice<const uint8_t> cert_chain_pem,
                                                 rust::Slice<const uint8_t> key_pem) {
  std::vector<uint8_t> spki;
  auto ctx = new_ctx(cert_chain_pem, &spki);
  auto bio = mem_bio(key_pem);
  bssl::UniquePtr<EVP_PKEY> pkey(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!pkey) {
    fail("private key: BoringSSL cannot read it as an unencrypted PEM key");
  }
  if (SSL_CTX_use_PrivateKey(ctx.get(), pkey.get()) != 1 ||
      SSL_CTX_check_private_key(ctx.get()) != 1) {
    fail("private key: does not match the certificate; pass the certificate issued for this key");
  }
  return std::make_unique<TlsContext>(std::move(ctx), nullptr);
}

rust::String self_signed_cert(rust::Slice<const uint8_t> key_pem, rust::Str dns_name,
                              uint32_t days) {
  ERR_clear_error();
  auto bio = mem_bio(key_pem);
  bssl::UniquePtr<EVP_PKEY> pkey(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!pkey) {
    fail("self-signed certificate: cannot read the private key PEM");
  }
  bssl::UniquePtr<X509> x(X509_new());
  if (!x || X509_set_version(x.get(), X509_VERSION_3) != 1) {
    fail("self-signed certificate: X509_new failed");
  }
  uint8_t serial[8];
  RAND_bytes(serial, sizeof(serial));
  serial[0] &= 0x7f;  // Positive.
  uint64_t serial_value = 0;
  for (uint8_t b : serial) {
    serial_value = (serial_value << 8) | b;
  }
  const std::string cn(dns_name.data(), dns_name.size());
  X509_NAME* name = X509_get_subject_name(x.get());
  if (ASN1_INTEGER_set_uint64(X509_get_serialNumber(x.get()), serial_value) != 1 ||
      X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(x.get()), static_cast<long>(days) * 86400) == nullptr ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const uint8_t*>(cn.c_str()), -1, -1, 0) != 1 ||
      X509_set_issuer_name(x.get(), name) != 1 || X509_set_pubkey(x.get(), pkey.get()) != 1) {
    fail("self-signed certificate: cannot fill in the fields");
  }
  const std::string san = "DNS:" + cn + ",IP:127.0.0.1";
  bssl::UniquePtr<X509_EXTENSION> ext(
      X509V3_EXT_nconf_nid(nullptr, nullptr, NID_subject_alt_name, san.c_str()));
  if (!ext || X509_add_ext(x.get(), ext.get(), -1) != 1) {
    fail("self-signed certificate: cannot add subjectAltName " + san);
  }
  if (X509_sign(x.get(), pkey.get(), EVP_sha256()) <= 0) {
    fail("self-signed certificate: signing failed");
  }
  bssl::UniquePtr<BIO> out(BIO_new(BIO_s_mem()));
  if (!out || PEM_write_bio_X509(out.get(), x.get()) != 1) {
    fail("self-signed certificate: PEM encoding failed");
  }
  const uint8_t* data = nullptr;
  size_t len = 0;
  BIO_mem_contents(out.get(), &data, &len);
  return rust::String(reinterpret_cast<const char*>(data), len);
}

std::unique_ptr<TlsConn> tls_conn_new(const TlsContext& ctx, int32_t fd) {
  ERR_clear_error();
  bssl::UniquePtr<SSL> ssl(SSL_new(ctx.get()));
  if (!ssl) {
    fail("SSL_new failed");
  }
  if (SSL_set_fd(ssl.get(), fd) != 1) {
    fail("SSL_set_fd failed");
  }
  SSL_set_accept_state(ssl.get());
  auto hook_log = std::make_shared<TlsConn::HookLog>();
  if (ctx.provider() && !attach_provider(ssl.get(), ctx.provider(), [hook_log](int fd) {
        hook_log->calls++;
        hook_log->last_fd = fd;
      })) {
    fail("cannot attach the private-key provider to the connection");
  }
  return std::make_unique<TlsConn>(std::move(ssl), std::move(hook_log));
}

TlsConn::TlsConn(bssl::UniquePtr<SSL> ssl, std::shared_ptr<HookLog> hook_log)
    : ssl_(std::move(ssl)), hook_log_(std::move(hook_log)) {}

TlsConn::~TlsConn() {
  // Cancel an operation in flight before the SSL goes (SSL_free would do it too).
  detach_provider(ssl_.get());
}

ffi::TlsIo TlsConn::result(int ret, const char* what) {
  if (ret > 0) {
    return ffi::TlsIo{ffi::TlsStatus::Ok, static_cast<size_t>(ret)};
  }
  const int err = SSL_get_error(ssl_.get(), ret);
  switch (err) {
    case SSL_ERROR_WANT_READ:
      return ffi::TlsIo{ffi::TlsStatus::WantRead, 0};
    case SSL_ERROR_WANT_WRITE:
      return ffi::TlsIo{ffi::TlsStatus::WantWrite, 0};
    case SSL_ERROR_WANT_PRIVATE_KEY_OPERATION:
      return ffi::TlsIo{ffi::TlsStatus::WantPrivateKey, 0};
    case SSL_ERROR_ZERO_RETURN:
      return ffi::TlsIo{ffi::TlsStatus::Closed, 0};
    case SSL_ERROR_SYSCALL: {
      const int e = errno;
      const std::string errors = drain_errors();
      if (ret == 0 && errors.empty()) {
        // EOF without close_notify.
        last_error_ = std::string(what) + ": peer closed the connection";
        return ffi::TlsIo{ffi::TlsStatus::Closed, 0};
      }
      last_error_ = std::string(what) + ": " + (errors.empty() ? strerror(e) : errors);
      return ffi::TlsIo{ffi::TlsStatus::Error, 0};
    }
    default: {
      const std::string errors = drain_errors();
      last_error_ = std::string(what) + ": " + (errors.empty() ? "TLS error" : errors);
      return ffi::TlsIo{ffi::TlsStatus::Error, 0};
    }
  }
}

ffi::TlsIo TlsConn::handshake() {
  ERR_clear_error();
  const int ret = SSL_do_handshake(ssl_.get());
  if (ret == 1) {
    return ffi::TlsIo{ffi::TlsStatus::Ok, 0};
  }
  return result(ret, "handshake");
}

ffi::TlsIo TlsConn::read(rust::Slice<uint8_t> buf) {
  ERR_clear_error();
  const int len = buf.size() > INT32_MAX ? INT32_MAX : static_cast<int>(buf.size());
  return result(SSL_read(ssl_.get(), buf.data(), len), "read");
}

ffi::TlsIo TlsConn::write(rust::Slice<const uint8_t> buf) {
  if (buf.size() == 0) {
    return ffi::TlsIo{ffi::TlsStatus::Ok, 0};
  }
  ERR_clear_error();
  const int len = buf.size() > INT32_MAX ? INT32_MAX : static_cast<int>(buf.size());
  return result(SSL_write(ssl_.get(), buf.data(), len), "write");
}

ffi::TlsIo TlsConn::shutdown() {
  ERR_clear_error();
  const int ret = SSL_shutdown(ssl_.get());
  if (ret >= 0) {
    return ffi::TlsIo{ffi::TlsStatus::Ok, 0};
  }
  return result(ret, "shutdown");
}

int32_t TlsConn::private_key_fd() const { return pending_fd(ssl_.get()); }

rust::String TlsConn::alpn() const {
  const uint8_t* data = nullptr;
  unsigned len = 0;
  SSL_get0_alpn_selected(ssl_.get(), &data, &len);
  if (data == nullptr || len == 0) {
    return rust::String();
  }
  return rust::String(reinterpret_cast<const char*>(data), len);
}

rust::String TlsConn::describe() const {
  std::string s = SSL_get_version(ssl_.get());
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl_.get());
  s += " ";
  s += cipher != nullptr ? SSL_CIPHER_get_name(cipher) : "none";
  const uint16_t sigalg = last_signature_algorithm(ssl_.get());
  if (sigalg != 0) {
    const char* name = SSL_get_signature_algorithm_name(sigalg, 0);
    s += " ";
    s += name != nullptr ? name : "unknown";
  }
  return rust::String(s);
}

rust::String TlsConn::last_error() const { return rust::String(last_error_); }

uint64_t TlsConn::hook_calls() const { return hook_log_->calls; }

int32_t TlsConn::hook_last_fd() const { return hook_log_->last_fd; }

}  // namespace ssl
}  // namespace envoy_qat
