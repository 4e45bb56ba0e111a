//! The simulator's fast arithmetic: the system's OpenSSL 3 `libcrypto.so.3`, loaded at
//! run time with `RTLD_LOCAL | RTLD_DEEPBIND`.
//!
//! Why: the simulated device computes on this machine's cores, beside the engine it is
//! meant to measure. With num-bigint an RSA-2048 CRT exponentiation takes milliseconds
//! and the p256 crate's ECDSA about a hundred microseconds, so benchmarks would measure
//! the simulator. libcrypto's constant-time Montgomery exponentiation and its
//! precomputed P-256 generator tables are several times faster.
//!
//! Why dlopen and DEEPBIND: the processes that load the simulator also carry BoringSSL
//! (`libcrypto.so.0`), which exports the same `BN_*` and `EC_*` names. Loaded deep-bound,
//! libcrypto.so.3's own references resolve inside itself, and the simulator calls it only
//! through the symbols looked up here, so neither library sees the other's functions.
//!
//! When libcrypto.so.3 cannot be loaded (or `QAT_SIM_ARITH=bigint`), the simulator uses
//! its portable num-bigint / p256 / p384 path instead; both paths are checked against
//! each other in the tests.

use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

type Ptr = *mut c_void;

/// The libcrypto functions the simulator uses, looked up once.
pub(crate) struct Ossl {
    _lib: libloading::Library,
    bn_new: unsafe extern "C" fn() -> Ptr,
    bn_clear_free: unsafe extern "C" fn(Ptr),
    bn_bin2bn: unsafe extern "C" fn(*const u8, c_int, Ptr) -> Ptr,
    bn_bn2binpad: unsafe extern "C" fn(Ptr, *mut u8, c_int) -> c_int,
    bn_cmp: unsafe extern "C" fn(Ptr, Ptr) -> c_int,
    bn_is_zero: unsafe extern "C" fn(Ptr) -> c_int,
    bn_ctx_new: unsafe extern "C" fn() -> Ptr,
    bn_ctx_free: unsafe extern "C" fn(Ptr),
    bn_nnmod: unsafe extern "C" fn(Ptr, Ptr, Ptr, Ptr) -> c_int,
    bn_mod_sub: unsafe extern "C" fn(Ptr, Ptr, Ptr, Ptr, Ptr) -> c_int,
    bn_mod_mul: unsafe extern "C" fn(Ptr, Ptr, Ptr, Ptr, Ptr) -> c_int,
    bn_mod_add: unsafe extern "C" fn(Ptr, Ptr, Ptr, Ptr, Ptr) -> c_int,
    bn_mul: unsafe extern "C" fn(Ptr, Ptr, Ptr, Ptr) -> c_int,
    bn_add: unsafe extern "C" fn(Ptr, Ptr, Ptr) -> c_int,
    bn_sub_word: unsafe extern "C" fn(Ptr, u64) -> c_int,
    bn_mod_exp_mont_consttime: unsafe extern "C" fn(Ptr, Ptr, Ptr, Ptr, Ptr, Ptr) -> c_int,
    ec_group_new_by_curve_name: unsafe extern "C" fn(c_int) -> Ptr,
    ec_point_new: unsafe extern "C" fn(Ptr) -> Ptr,
    ec_point_free: unsafe extern "C" fn(Ptr),
    ec_point_mul: unsafe extern "C" fn(Ptr, Ptr, Ptr, Ptr, Ptr, Ptr) -> c_int,
    ec_point_get_affine_coordinates: unsafe extern "C" fn(Ptr, Ptr, Ptr, Ptr, Ptr) -> c_int,
    /// EC groups (P-256, P-384), created once; never freed (process lifetime).
    groups: [usize; 2],
}

// SAFETY: the function pointers are plain code addresses; the EC_GROUP objects are only
// read after creation (OpenSSL documents EC_GROUP as safe for concurrent read-only use).
unsafe impl Send for Ossl {}
// SAFETY: as above.
unsafe impl Sync for Ossl {}

const NID_P256: c_int = 415; // NID_X9_62_prime256v1
const NID_P384: c_int = 715; // NID_secp384r1

/// The loaded library, or None when it is unavailable or disabled.
pub(crate) fn get() -> Option<&'static Ossl> {
    static O: OnceLock<Option<Ossl>> = OnceLock::new();
    O.get_or_init(|| {
        if std::env::var("QAT_SIM_ARITH").is_ok_and(|v| v == "bigint") {
            return None;
        }
        // SAFETY: loading the system's OpenSSL runs only its own initialisers.
        unsafe { load() }.ok()
    })
    .as_ref()
}

unsafe fn load() -> Result<Ossl, libloading::Error> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: see `get`; RTLD_DEEPBIND keeps libcrypto.so.3's own references inside it.
    let lib: libloading::Library = unsafe {
        Library::open(
            Some("libcrypto.so.3"),
            RTLD_NOW | RTLD_LOCAL | libc_deepbind(),
        )
    }?
    .into();
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the field's type is the C prototype of this OpenSSL 3 function.
            *unsafe { lib.get(concat!($name, "\0").as_bytes()) }?
        };
    }
    let mut o = Ossl {
        bn_new: sym!("BN_new"),
        bn_clear_free: sym!("BN_clear_free"),
        bn_bin2bn: sym!("BN_bin2bn"),
        bn_bn2binpad: sym!("BN_bn2binpad"),
        bn_cmp: sym!("BN_cmp"),
        bn_is_zero: sym!("BN_is_zero"),
        bn_ctx_new: sym!("BN_CTX_new"),
        bn_ctx_free: sym!("BN_CTX_free"),
        bn_nnmod: sym!("BN_nnmod"),
        bn_mod_sub: sym!("BN_mod_sub"),
        bn_mod_mul: sym!("BN_mod_mul"),
        bn_mod_add: sym!("BN_mod_add"),
        bn_mul: sym!("BN_mul"),
        bn_add: sym!("BN_add"),
        bn_sub_word: sym!("BN_sub_word"),
        bn_mod_exp_mont_consttime: sym!("BN_mod_exp_mont_consttime"),
        ec_group_new_by_curve_name: sym!("EC_GROUP_new_by_curve_name"),
        ec_point_new: sym!("EC_POINT_new"),
        ec_point_free: sym!("EC_POINT_free"),
        ec_point_mul: sym!("EC_POINT_mul"),
        ec_point_get_affine_coordinates: sym!("EC_POINT_get_affine_coordinates"),
        groups: [0; 2],
        _lib: lib,
    };
    for (slot, nid) in o.groups.iter_mut().zip([NID_P256, NID_P384]) {
        // SAFETY: a plain constructor; NULL is handled below.
        let g = unsafe { (o.ec_group_new_by_curve_name)(nid) };
        if g.is_null() {
            return Err(libloading::Error::DlOpenUnknown);
        }
        *slot = g as usize;
    }
    Ok(o)
}

const fn libc_deepbind() -> c_int {
    0x8 // RTLD_DEEPBIND (glibc)
}

/// A BIGNUM owned by the caller, cleared and freed on drop.
struct Bn<'a>(&'a Ossl, Ptr);

impl Drop for Bn<'_> {
    fn drop(&mut self) {
        // SAFETY: we own this BIGNUM; BN_clear_free zeroes it (key material) and frees it.
        unsafe { (self.0.bn_clear_free)(self.1) }
    }
}

/// A BN_CTX scratch area, freed on drop.
struct Ctx<'a>(&'a Ossl, Ptr);

impl Drop for Ctx<'_> {
    fn drop(&mut self) {
        // SAFETY: we own this BN_CTX.
        unsafe { (self.0.bn_ctx_free)(self.1) }
    }
}

/// An EC_POINT, freed on drop.
struct Point<'a>(&'a Ossl, Ptr);

impl Drop for Point<'_> {
    fn drop(&mut self) {
        // SAFETY: we own this EC_POINT.
        unsafe { (self.0.ec_point_free)(self.1) }
    }
}

/// Arithmetic failed (allocation or a value out of range).
#[derive(Debug)]
pub(crate) struct Failed;

fn ok(r: c_int) -> Result<(), Failed> {
    if r == 1 {
        Ok(())
    } else {
        Err(Failed)
    }
}

impl Ossl {
    fn new_bn(&self) -> Result<Bn<'_>, Failed> {
        // SAFETY: plain constructor.
        let p = unsafe { (self.bn_new)() };
        if p.is_null() {
            Err(Failed)
        } else {
            Ok(Bn(self, p))
        }
    }

    fn bn(&self, b: &[u8]) -> Result<Bn<'_>, Failed> {
        let len = c_int::try_from(b.len()).map_err(|_| Failed)?;
        // SAFETY: `b` is valid for `len` bytes; a NULL `ret` makes a new BIGNUM.
        let p = unsafe { (self.bn_bin2bn)(b.as_ptr(), len, std::ptr::null_mut()) };
        if p.is_null() {
            Err(Failed)
        } else {
            Ok(Bn(self, p))
        }
    }

    fn ctx(&self) -> Result<Ctx<'_>, Failed> {
        // SAFETY: plain constructor.
        let p = unsafe { (self.bn_ctx_new)() };
        if p.is_null() {
            Err(Failed)
        } else {
            Ok(Ctx(self, p))
        }
    }

    /// Big-endian, left-padded to `len` bytes (fails if it does not fit).
    fn bytes(&self, v: &Bn<'_>, len: usize) -> Result<Vec<u8>, Failed> {
        let mut out = vec![0u8; len];
        let l = c_int::try_from(len).map_err(|_| Failed)?;
        // SAFETY: `out` has `len` writable bytes.
        let r = unsafe { (self.bn_bn2binpad)(v.1, out.as_mut_ptr(), l) };
        if r < 0 {
            Err(Failed)
        } else {
            Ok(out)
        }
    }

    fn lt(&self, a: &Bn<'_>, b: &Bn<'_>) -> bool {
        // SAFETY: both are valid BIGNUMs.
        unsafe { (self.bn_cmp)(a.1, b.1) < 0 }
    }

    fn is_zero(&self, a: &Bn<'_>) -> bool {
        // SAFETY: a valid BIGNUM.
        unsafe { (self.bn_is_zero)(a.1) == 1 }
    }

    /// RSA with key representation type 1: `c^d mod n`, `c < n`.
    pub(crate) fn rsa_rep1(&self, n: &[u8], d: &[u8], c: &[u8]) -> Result<Vec<u8>, Failed> {
        let ctx = self.ctx()?;
        let (n_, d_, c_) = (self.bn(n)?, self.bn(d)?, self.bn(c)?);
        if !self.lt(&c_, &n_) {
            return Err(Failed);
        }
        let m = self.new_bn()?;
        // SAFETY: valid BIGNUMs and context; no Montgomery context is passed.
        ok(unsafe {
            (self.bn_mod_exp_mont_consttime)(m.1, c_.1, d_.1, n_.1, ctx.1, std::ptr::null_mut())
        })?;
        self.bytes(&m, n.len())
    }

    /// RSA with key representation type 2 (CRT), `c < p·q`; output `out_len` bytes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rsa_rep2(
        &self,
        p: &[u8],
        q: &[u8],
        dp: &[u8],
        dq: &[u8],
        qinv: &[u8],
        c: &[u8],
        out_len: usize,
    ) -> Result<Vec<u8>, Failed> {
        let ctx = self.ctx()?;
        let (p_, q_, dp_, dq_, qinv_, c_) = (
            self.bn(p)?,
            self.bn(q)?,
            self.bn(dp)?,
            self.bn(dq)?,
            self.bn(qinv)?,
            self.bn(c)?,
        );
        let n = self.new_bn()?;
        let (cp, cq, m1, m2, h, m) = (
            self.new_bn()?,
            self.new_bn()?,
            self.new_bn()?,
            self.new_bn()?,
            self.new_bn()?,
            self.new_bn()?,
        );
        let x = ctx.1;
        let null = std::ptr::null_mut();
        // SAFETY: every pointer is a live BIGNUM or the context created above; results
        // go to distinct BIGNUMs.
        unsafe {
            ok((self.bn_mul)(n.1, p_.1, q_.1, x))?;
            if !self.lt(&c_, &n) {
                return Err(Failed);
            }
            ok((self.bn_nnmod)(cp.1, c_.1, p_.1, x))?;
            ok((self.bn_nnmod)(cq.1, c_.1, q_.1, x))?;
            ok((self.bn_mod_exp_mont_consttime)(
                m1.1, cp.1, dp_.1, p_.1, x, null,
            ))?;
            ok((self.bn_mod_exp_mont_consttime)(
                m2.1, cq.1, dq_.1, q_.1, x, null,
            ))?;
            // h = qInv · (m1 − m2) mod p; m = m2 + h·q
            ok((self.bn_nnmod)(cq.1, m2.1, p_.1, x))?;
            ok((self.bn_mod_sub)(cp.1, m1.1, cq.1, p_.1, x))?;
            ok((self.bn_mod_mul)(h.1, qinv_.1, cp.1, p_.1, x))?;
            ok((self.bn_mul)(cp.1, h.1, q_.1, x))?;
            ok((self.bn_add)(m.1, m2.1, cp.1))?;
        }
        self.bytes(&m, out_len)
    }

    /// ECDSA `(r, s)` for nonce `k`, digest integer `m` and private scalar `d`, on P-256
    /// (`p384 == false`) or P-384; `n` is the group order. `k` and `d` must be in
    /// [1, n−1]; `m` is reduced mod n.
    pub(crate) fn ecdsa(
        &self,
        p384: bool,
        n: &[u8],
        k: &[u8],
        m: &[u8],
        d: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), Failed> {
        let len = n.len();
        let group = self.groups[usize::from(p384)] as Ptr;
        let ctx = self.ctx()?;
        let x = ctx.1;
        let null = std::ptr::null_mut();
        let (n_, k_, m_, d_) = (self.bn(n)?, self.bn(k)?, self.bn(m)?, self.bn(d)?);
        if self.is_zero(&k_) || !self.lt(&k_, &n_) || self.is_zero(&d_) || !self.lt(&d_, &n_) {
            return Err(Failed);
        }
        // SAFETY: a valid group.
        let point = unsafe { (self.ec_point_new)(group) };
        if point.is_null() {
            return Err(Failed);
        }
        let point = Point(self, point);
        let (px, r, s, kinv, mm, n2) = (
            self.new_bn()?,
            self.new_bn()?,
            self.new_bn()?,
            self.new_bn()?,
            self.new_bn()?,
            self.bn(n)?,
        );
        // SAFETY: live objects from this library, as above.
        unsafe {
            // R = k·G (generator multiplication: no point/scalar pair given).
            ok((self.ec_point_mul)(group, point.1, k_.1, null, null, x))?;
            ok((self.ec_point_get_affine_coordinates)(
                group, point.1, px.1, null, x,
            ))?;
            ok((self.bn_nnmod)(r.1, px.1, n_.1, x))?;
            if self.is_zero(&r) {
                return Err(Failed);
            }
            // s = k⁻¹ · (m + r·d) mod n
            ok((self.bn_nnmod)(mm.1, m_.1, n_.1, x))?;
            ok((self.bn_mod_mul)(s.1, r.1, d_.1, n_.1, x))?;
            ok((self.bn_mod_add)(s.1, s.1, mm.1, n_.1, x))?;
            // k⁻¹ = k^(n−2) mod n (n is prime): a Montgomery exponentiation, several
            // times faster than BN_mod_inverse's binary Euclid at these sizes.
            ok((self.bn_sub_word)(n2.1, 2))?;
            ok((self.bn_mod_exp_mont_consttime)(
                kinv.1, k_.1, n2.1, n_.1, x, null,
            ))?;
            ok((self.bn_mod_mul)(s.1, s.1, kinv.1, n_.1, x))?;
            if self.is_zero(&s) {
                return Err(Failed);
            }
        }
        Ok((self.bytes(&r, len)?, self.bytes(&s, len)?))
    }
}
