//! Safe wrappers over the callbacks for one HTTP stream: headers, bodies, stats.
//!
//! A [`Stream`] is made from the `filter_envoy_ptr` Envoy passes to a hook and used only
//! during that hook, on Envoy's worker thread for the stream.

use crate::abi::{self, Api, EnvoyBuffer, FilterEnvoyPtr, ModuleBuffer, ModuleHttpHeader};

/// One HTTP stream in Envoy, for the duration of a hook.
pub struct Stream {
    api: &'static Api,
    ptr: FilterEnvoyPtr,
}

impl Stream {
    /// # Safety
    /// `ptr` is the `filter_envoy_ptr` of the hook being run; the result is used only
    /// during that hook.
    pub unsafe fn new(api: &'static Api, ptr: FilterEnvoyPtr) -> Self {
        Self { api, ptr }
    }

    pub fn raw(&self) -> FilterEnvoyPtr {
        self.ptr
    }

    /// Value `index` of a header, copied, and how many values the header has.
    fn header_at(&self, kind: u32, key: &str, index: usize) -> (Option<Vec<u8>>, usize) {
        let mut out = EnvoyBuffer::empty();
        let mut count = 0usize;
        // SAFETY: live stream pointer; the key buffer lives for the call; Envoy writes
        // one EnvoyBuffer and one usize.
        let found = unsafe {
            (self.api.http_get_header)(
                self.ptr,
                kind,
                ModuleBuffer::of(key.as_bytes()),
                &mut out,
                index,
                &mut count,
            )
        };
        if !found || index >= count {
            return (None, count);
        }
        // SAFETY: Envoy's header value stays valid until the header map changes; it is
        // copied before any change.
        (Some(unsafe { out.as_slice() }.to_vec()), count)
    }

    /// The first value of a header, copied.
    pub fn header(&self, kind: u32, key: &str) -> Option<Vec<u8>> {
        self.header_at(kind, key, 0).0
    }

    /// Every value of a header, copied.
    pub fn header_values(&self, kind: u32, key: &str) -> Vec<Vec<u8>> {
        let mut values = Vec::new();
        while let (Some(v), count) = self.header_at(kind, key, values.len()) {
            values.push(v);
            if values.len() >= count {
                break;
            }
        }
        values
    }

    /// Set a header (replacing every value).
    pub fn set_header(&self, kind: u32, key: &str, value: &[u8]) -> bool {
        // SAFETY: live stream pointer; both buffers live for the call.
        unsafe {
            (self.api.http_set_header)(
                self.ptr,
                kind,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value),
            )
        }
    }

    /// Remove a header (a null value removes it).
    pub fn remove_header(&self, kind: u32, key: &str) -> bool {
        // SAFETY: live stream pointer; the key lives for the call.
        unsafe {
            (self.api.http_set_header)(
                self.ptr,
                kind,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::null(),
            )
        }
    }

    /// The body bytes of `kind`, copied (`out` is cleared first).
    pub fn body(&self, kind: u32, out: &mut Vec<u8>) -> bool {
        out.clear();
        // SAFETY: live stream pointer.
        let n = unsafe { (self.api.http_get_body_chunks_size)(self.ptr, kind) };
        if n == 0 {
            return true;
        }
        let mut chunks = vec![EnvoyBuffer::empty(); n];
        // SAFETY: `chunks` has room for the `n` buffers Envoy reported.
        if !unsafe { (self.api.http_get_body_chunks)(self.ptr, kind, chunks.as_mut_ptr()) } {
            return false;
        }
        let total: usize = chunks.iter().map(|c| c.length).sum();
        out.reserve(total);
        for c in &chunks {
            // SAFETY: Envoy's slices stay valid until the buffer is changed; copied now.
            out.extend_from_slice(unsafe { c.as_slice() });
        }
        true
    }

    /// Bytes in the body of `kind`.
    pub fn body_len(&self, kind: u32) -> usize {
        // SAFETY: live stream pointer.
        unsafe { (self.api.http_get_body_size)(self.ptr, kind) }
    }

    /// Drain `n` bytes from the front of the body of `kind`.
    pub fn drain(&self, kind: u32, n: usize) -> bool {
        // SAFETY: live stream pointer.
        n == 0 || unsafe { (self.api.http_drain_body)(self.ptr, kind, n) }
    }

    /// Append to the body of `kind` (Envoy copies the bytes).
    pub fn append(&self, kind: u32, data: &[u8]) -> bool {
        // SAFETY: live stream pointer; `data` lives for the call.
        data.is_empty()
            || unsafe { (self.api.http_append_body)(self.ptr, kind, ModuleBuffer::of(data)) }
    }

    /// Resume response iteration after a stop.
    pub fn continue_encoding(&self) {
        // SAFETY: live stream pointer, on its worker thread.
        unsafe { (self.api.http_filter_continue_encoding)(self.ptr) }
    }

    /// Resume request iteration after a stop.
    pub fn continue_decoding(&self) {
        // SAFETY: live stream pointer, on its worker thread.
        unsafe { (self.api.http_filter_continue_decoding)(self.ptr) }
    }

    /// Reset the stream (the downstream sees a reset, never a corrupt body).
    pub fn reset(&self, details: &str) {
        // SAFETY: live stream pointer; details live for the call. Reason 0: local reset.
        unsafe {
            (self.api.http_filter_reset_stream)(self.ptr, 0, ModuleBuffer::of(details.as_bytes()))
        }
    }

    /// Send a local reply with a text body.
    pub fn send_response(&self, status: u32, body: &str, details: &str) {
        let k = b"content-type";
        let v = b"text/plain; charset=utf-8";
        let mut headers = [ModuleHttpHeader {
            key_ptr: k.as_ptr().cast(),
            key_length: k.len(),
            value_ptr: v.as_ptr().cast(),
            value_length: v.len(),
        }];
        // SAFETY: live stream pointer; the header array and both buffers live for the call.
        unsafe {
            (self.api.http_send_response)(
                self.ptr,
                status,
                headers.as_mut_ptr(),
                headers.len(),
                ModuleBuffer::of(body.as_bytes()),
                ModuleBuffer::of(details.as_bytes()),
            )
        }
    }

    /// Add `value` to a counter defined by this stream's filter config.
    pub fn count(&self, id: Option<usize>, value: u64) {
        if let (Some(id), true) = (id, value > 0) {
            // SAFETY: live stream pointer; no labels.
            unsafe {
                (self.api.http_filter_increment_counter)(
                    self.ptr,
                    id,
                    std::ptr::null_mut(),
                    0,
                    value,
                );
            }
        }
    }
}

/// Define a counter on a filter config (main thread, in `config_new`). None when Envoy
/// refuses (the name is then logged and the counter skipped).
///
/// # Safety
/// `config` is the `filter_config_envoy_ptr` of the `config_new` hook being run.
pub unsafe fn define_counter(api: &Api, config: abi::ConfigEnvoyPtr, name: &str) -> Option<usize> {
    let mut id = 0usize;
    // SAFETY: the config pointer Envoy passed to config_new; the name lives for the call.
    let r = unsafe {
        (api.http_filter_config_define_counter)(
            config,
            ModuleBuffer::of(name.as_bytes()),
            std::ptr::null_mut(),
            0,
            &mut id,
        )
    };
    if r == abi::METRICS_SUCCESS {
        Some(id)
    } else {
        abi::log(
            abi::log_level::WARN,
            &format!("envoy-qat module: Envoy refused counter {name} (result {r})"),
        );
        None
    }
}

/// A filter scheduler: lets another thread wake this stream on its Envoy worker. Deleted
/// when the last owner drops it; committing after the stream is gone is a no-op in Envoy
/// (the scheduler holds only a weak reference to the filter).
pub struct Scheduler {
    api: &'static Api,
    ptr: abi::SchedulerPtr,
}

// SAFETY: Envoy's scheduler commit posts to the stream's dispatcher and is meant to be
// called from any thread; delete frees an object holding a weak reference and a
// dispatcher reference, which is also thread-safe.
unsafe impl Send for Scheduler {}
// SAFETY: as above; commit takes the pointer by value and has no module-side state.
unsafe impl Sync for Scheduler {}

impl Scheduler {
    pub fn new(stream: &Stream) -> Option<Self> {
        // SAFETY: live stream pointer, on its worker thread.
        let ptr = unsafe { (stream.api.http_filter_scheduler_new)(stream.ptr) };
        (!ptr.is_null()).then_some(Self {
            api: stream.api,
            ptr,
        })
    }

    pub fn commit(&self, event: u64) {
        // SAFETY: the scheduler is alive until drop.
        unsafe { (self.api.http_filter_scheduler_commit)(self.ptr, event) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: created by scheduler_new, deleted once.
        unsafe { (self.api.http_filter_scheduler_delete)(self.ptr) }
    }
}
