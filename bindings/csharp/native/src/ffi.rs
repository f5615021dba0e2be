//! The `extern "C"` functions and `#[repr(C)]` types of `liblangtian_cs`. csbindgen reads this
//! file (see build.rs) to write the C# P/Invoke declarations, so it holds only the ABI: the
//! logic is in `client.rs`. Every function catches panics and returns a status code.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::client::{
    Client, ConnectOptions, FfiError, IncomingMessage, Live, PublishOptions, Registration, Status,
    Subscription,
};

/// Bytes owned by the library; free with `lt_buffer_free`.
#[repr(C)]
#[derive(Debug)]
pub struct LtBuffer {
    pub ptr: *mut u8,
    pub len: usize,
    pub cap: usize,
}

/// Borrowed UTF-8 text (not NUL-terminated), valid during a callback only.
#[repr(C)]
#[derive(Debug)]
pub struct LtStr {
    pub ptr: *const u8,
    pub len: usize,
}

/// A message handed to a subscription callback; every pointer is valid during the call only.
#[repr(C)]
#[derive(Debug)]
pub struct LtMessage {
    pub subject: LtStr,
    /// The raw payload.
    pub data: LtStr,
    /// 1 when the payload is an envelope (the fields below are then set).
    pub is_envelope: u8,
    pub event_id: LtStr,
    pub event_type: LtStr,
    pub source: LtStr,
    pub content_type: LtStr,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// The envelope's payload.
    pub payload: LtStr,
}

thread_local! {
    static LAST_ERROR: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn set_last_error(msg: &str) {
    LAST_ERROR.with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        e.extend_from_slice(msg.as_bytes());
    });
}

/// Runs `f`, maps its error (or a panic) to a status code and the last-error text.
fn guarded(f: impl FnOnce() -> Result<(), FfiError>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Status::Ok as i32,
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            e.status() as i32
        }
        Err(_) => {
            set_last_error("internal error: the library panicked (please report it)");
            Status::Internal as i32
        }
    }
}

fn str_arg<'a>(name: &'static str, p: *const c_char) -> Result<&'a str, FfiError> {
    if p.is_null() {
        return Err(FfiError::arg(name, "is null"));
    }
    // SAFETY: the caller passes a NUL-terminated string that lives during the call.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|e| FfiError::arg(name, format!("is not UTF-8: {e}")))
}

fn opt_str_arg<'a>(name: &'static str, p: *const c_char) -> Result<Option<&'a str>, FfiError> {
    if p.is_null() {
        Ok(None)
    } else {
        str_arg(name, p).map(Some)
    }
}

fn json_arg<T: serde::de::DeserializeOwned + Default>(
    name: &'static str,
    p: *const c_char,
) -> Result<T, FfiError> {
    match opt_str_arg(name, p)? {
        None | Some("") => Ok(T::default()),
        Some(s) => serde_json::from_str(s).map_err(|e| FfiError::arg(name, e)),
    }
}

fn bytes_arg<'a>(name: &'static str, p: *const u8, len: usize) -> Result<&'a [u8], FfiError> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(FfiError::arg(name, "is null with a non-zero length"));
    }
    // SAFETY: the caller passes `len` readable bytes that live during the call.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

fn out_arg<'a, T>(name: &'static str, p: *mut T) -> Result<&'a mut T, FfiError> {
    // SAFETY: a non-null out-pointer from the caller points to writable memory for a T.
    unsafe { p.as_mut() }.ok_or_else(|| FfiError::arg(name, "is null"))
}

fn handle<'a, T>(name: &'static str, p: *mut c_void) -> Result<&'a T, FfiError> {
    // SAFETY: handles are pointers this library returned from Box::into_raw and not yet freed.
    unsafe { (p as *const T).as_ref() }.ok_or_else(|| FfiError::arg(name, "is a null handle"))
}

fn to_buffer(v: Vec<u8>) -> LtBuffer {
    let mut v = std::mem::ManuallyDrop::new(v);
    LtBuffer {
        ptr: v.as_mut_ptr(),
        len: v.len(),
        cap: v.capacity(),
    }
}

fn json_buffer(v: &impl serde::Serialize) -> Result<LtBuffer, FfiError> {
    serde_json::to_vec(v)
        .map(to_buffer)
        .map_err(|e| FfiError::Internal(format!("encoding JSON: {e}")))
}

fn lt_str(s: &[u8]) -> LtStr {
    LtStr {
        ptr: s.as_ptr(),
        len: s.len(),
    }
}

/// The library version (a static NUL-terminated string).
#[no_mangle]
pub extern "C" fn lt_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Copies the last error of this thread into `buf` (UTF-8, NUL-terminated, cut to `len`);
/// returns the bytes the whole message needs, without the NUL (call with len 0 to ask).
#[no_mangle]
pub extern "C" fn lt_last_error(buf: *mut u8, len: usize) -> usize {
    LAST_ERROR.with(|e| {
        let e = e.borrow();
        if let Some(out) = out_bytes(buf, len) {
            let n = e.len().min(out.len() - 1);
            out[..n].copy_from_slice(&e[..n]);
            out[n] = 0;
        }
        e.len()
    })
}

/// The caller's writable buffer of `len` bytes (None when null or empty).
fn out_bytes<'a>(buf: *mut u8, len: usize) -> Option<&'a mut [u8]> {
    if buf.is_null() || len == 0 {
        return None;
    }
    // SAFETY: the caller passes `len` writable bytes that live during the call.
    Some(unsafe { std::slice::from_raw_parts_mut(buf, len) })
}

/// Frees a buffer the library returned.
#[no_mangle]
pub extern "C" fn lt_buffer_free(buffer: LtBuffer) {
    if !buffer.ptr.is_null() {
        // SAFETY: the buffer came from `to_buffer` (a leaked Vec<u8>) and is freed once.
        drop(unsafe { Vec::from_raw_parts(buffer.ptr, buffer.len, buffer.cap) });
    }
}

/// Connects to NATS. `options_json` (nullable): `{"name","token","user","password","creds","nkeySeed","inboxPrefix","timeoutMs"}`.
#[no_mangle]
pub extern "C" fn lt_connect(
    url: *const c_char,
    options_json: *const c_char,
    out_client: *mut *mut c_void,
) -> i32 {
    guarded(|| {
        let url = str_arg("url", url)?;
        let opts: ConnectOptions = json_arg("options_json", options_json)?;
        let out = out_arg("out_client", out_client)?;
        let client = Client::connect(url, opts)?;
        *out = Box::into_raw(Box::new(client)).cast();
        Ok(())
    })
}

/// Closes a connection (null is ignored).
#[no_mangle]
pub extern "C" fn lt_client_free(client: *mut c_void) {
    if !client.is_null() {
        let _ = catch_unwind(|| {
            // SAFETY: `client` came from lt_connect and is freed once.
            drop(unsafe { Box::from_raw(client.cast::<Client>()) });
        });
    }
}

/// Wraps `payload` in an envelope and publishes it; `out_receipt_json` receives
/// `{"subject","eventId","stream","sequence","duplicate"}`. `options_json` (nullable):
/// `{"qos","source","prefix","subject","eventId","contentType","partitionKey"}`.
#[no_mangle]
pub extern "C" fn lt_publish(
    client: *mut c_void,
    event_type: *const c_char,
    payload: *const u8,
    payload_len: usize,
    options_json: *const c_char,
    out_receipt_json: *mut LtBuffer,
) -> i32 {
    guarded(|| {
        let client: &Client = handle("client", client)?;
        let event_type = str_arg("event_type", event_type)?;
        let payload = bytes_arg("payload", payload, payload_len)?;
        let opts: PublishOptions = json_arg("options_json", options_json)?;
        let out = out_arg("out_receipt_json", out_receipt_json)?;
        let receipt = client.publish(event_type, payload, opts)?;
        *out = json_buffer(&receipt)?;
        Ok(())
    })
}

/// Sends a request and waits up to `timeout_ms` for the reply, written to `out_reply`.
#[no_mangle]
pub extern "C" fn lt_request(
    client: *mut c_void,
    subject: *const c_char,
    payload: *const u8,
    payload_len: usize,
    timeout_ms: u32,
    out_reply: *mut LtBuffer,
) -> i32 {
    guarded(|| {
        let client: &Client = handle("client", client)?;
        let subject = str_arg("subject", subject)?;
        let payload = bytes_arg("payload", payload, payload_len)?;
        let out = out_arg("out_reply", out_reply)?;
        *out = to_buffer(client.request(subject, payload, u64::from(timeout_ms))?);
        Ok(())
    })
}

struct UserData(usize);

/// Subscribes to `subject` (wildcards allowed). `callback(user_data, message)` runs for every
/// message on one dedicated thread, in order, until `lt_subscription_free`.
#[no_mangle]
pub extern "C" fn lt_subscribe(
    client: *mut c_void,
    subject: *const c_char,
    callback: extern "C" fn(user_data: usize, message: *const LtMessage),
    user_data: usize,
    out_subscription: *mut *mut c_void,
) -> i32 {
    guarded(|| {
        let client: &Client = handle("client", client)?;
        let subject = str_arg("subject", subject)?;
        let out = out_arg("out_subscription", out_subscription)?;
        let ud = UserData(user_data);
        let sub = client.subscribe(subject, move |m: IncomingMessage| {
            let ud = &ud;
            let _ = catch_unwind(AssertUnwindSafe(|| deliver(callback, ud.0, &m)));
        })?;
        *out = Box::into_raw(Box::new(sub)).cast();
        Ok(())
    })
}

fn deliver(callback: extern "C" fn(usize, *const LtMessage), user_data: usize, m: &IncomingMessage) {
    let empty = lt_str(&[]);
    let env = m.envelope.as_ref();
    let msg = LtMessage {
        subject: lt_str(m.subject.as_bytes()),
        data: lt_str(&m.data),
        is_envelope: u8::from(env.is_some()),
        event_id: env.map_or_else(|| lt_str(&[]), |e| lt_str(e.event_id().as_bytes())),
        event_type: env.map_or_else(|| lt_str(&[]), |e| lt_str(e.event_type().as_bytes())),
        source: env.map_or_else(|| lt_str(&[]), |e| lt_str(e.source_system().as_bytes())),
        content_type: env.map_or_else(|| lt_str(&[]), |e| lt_str(e.content_type().as_bytes())),
        timestamp_ns: env.map_or(0, |e| e.event_timestamp()),
        payload: env.map_or(empty, |e| lt_str(e.payload())),
    };
    callback(user_data, &msg);
}

/// Unsubscribes and waits until no callback of it runs any more (null is ignored).
#[no_mangle]
pub extern "C" fn lt_subscription_free(subscription: *mut c_void) {
    if !subscription.is_null() {
        let _ = catch_unwind(|| {
            // SAFETY: `subscription` came from lt_subscribe and is freed once.
            drop(unsafe { Box::from_raw(subscription.cast::<Subscription>()) });
        });
    }
}

/// The nodes registered in KV bucket `bucket` (null: `lt_nodes`), as a JSON array of NodeInfo.
#[no_mangle]
pub extern "C" fn lt_nodes(client: *mut c_void, bucket: *const c_char, out_nodes_json: *mut LtBuffer) -> i32 {
    guarded(|| {
        let client: &Client = handle("client", client)?;
        let bucket = opt_str_arg("bucket", bucket)?;
        let out = out_arg("out_nodes_json", out_nodes_json)?;
        *out = json_buffer(&client.nodes(bucket)?)?;
        Ok(())
    })
}

/// Registers a node in KV (`node_json`: `{"nodeId","role","version","host","endpoints","metadata"}`;
/// bucket null: `lt_nodes`, created if missing) and heartbeats it every TTL/3 until
/// `lt_node_free`, which unregisters it.
#[no_mangle]
pub extern "C" fn lt_node_register(
    client: *mut c_void,
    node_json: *const c_char,
    bucket: *const c_char,
    out_node: *mut *mut c_void,
) -> i32 {
    guarded(|| {
        let client: &Client = handle("client", client)?;
        let node: crate::client::NewNode = serde_json::from_str(str_arg("node_json", node_json)?)
            .map_err(|e| FfiError::arg("node_json", e))?;
        let bucket = opt_str_arg("bucket", bucket)?;
        let out = out_arg("out_node", out_node)?;
        let reg = client.register(node.into(), bucket)?;
        *out = Box::into_raw(Box::new(reg)).cast();
        Ok(())
    })
}

/// Writes a heartbeat now with a new load figure; `out_revision` gets the KV revision.
#[no_mangle]
pub extern "C" fn lt_node_heartbeat(node: *mut c_void, load: f64, out_revision: *mut u64) -> i32 {
    guarded(|| {
        let node: &Registration = handle("node", node)?;
        let out = out_arg("out_revision", out_revision)?;
        *out = node.heartbeat(load)?;
        Ok(())
    })
}

/// Unregisters the node and frees its handle; returns the status of the KV delete.
#[no_mangle]
pub extern "C" fn lt_node_free(node: *mut c_void) -> i32 {
    guarded(|| {
        if node.is_null() {
            return Ok(());
        }
        // SAFETY: `node` came from lt_node_register and is freed once.
        let reg = unsafe { Box::from_raw(node.cast::<Registration>()) };
        reg.unregister()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn last_error() -> String {
        let mut buf = vec![0u8; lt_last_error(std::ptr::null_mut(), 0) + 1];
        let n = lt_last_error(buf.as_mut_ptr(), buf.len());
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn bad_arguments_get_status_1_and_a_message_naming_the_argument() {
        let mut out: *mut c_void = std::ptr::null_mut();
        assert_eq!(
            lt_connect(std::ptr::null(), std::ptr::null(), &mut out),
            Status::Argument as i32
        );
        assert!(last_error().contains("`url`"), "{}", last_error());
        let url = c"nats://127.0.0.1:1";
        let bad_json = c"{\"timeoutMs\": \"soon\"}";
        assert_eq!(
            lt_connect(url.as_ptr(), bad_json.as_ptr(), &mut out),
            Status::Argument as i32
        );
        assert!(last_error().contains("options_json"), "{}", last_error());
        let unknown = c"{\"timeout\": 5}";
        assert_eq!(
            lt_connect(url.as_ptr(), unknown.as_ptr(), &mut out),
            Status::Argument as i32
        );
        assert!(last_error().contains("unknown field"), "{}", last_error());
        let not_utf8 = [0xffu8, 0xfe, 0];
        assert_eq!(
            lt_connect(not_utf8.as_ptr().cast(), std::ptr::null(), &mut out),
            Status::Argument as i32
        );
        assert!(last_error().contains("not UTF-8"), "{}", last_error());
        assert!(out.is_null());
        // Null handles are refused, not dereferenced.
        let mut buf = LtBuffer {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        };
        assert_eq!(
            lt_nodes(std::ptr::null_mut(), std::ptr::null(), &mut buf),
            Status::Argument as i32
        );
        assert!(last_error().contains("null handle"), "{}", last_error());
        assert_eq!(
            lt_live_records(std::ptr::null_mut(), &mut buf),
            Status::Argument as i32
        );
        assert!(last_error().contains("`live`"), "{}", last_error());
        let (mut kind, mut shard, mut keys) = (0i32, 0u32, 0u64);
        assert_eq!(
            lt_live_next(std::ptr::null_mut(), 10, &mut kind, &mut shard, &mut keys),
            Status::Argument as i32
        );
        let mut live: *mut c_void = std::ptr::null_mut();
        assert_eq!(
            lt_live_open(
                std::ptr::null_mut(),
                c"ticks".as_ptr(),
                c"shfe".as_ptr(),
                std::ptr::null(),
                &mut live
            ),
            Status::Argument as i32
        );
        assert!(live.is_null());
    }

    #[test]
    fn no_server_is_status_2() {
        let mut out: *mut c_void = std::ptr::null_mut();
        let url = c"nats://127.0.0.1:1";
        let opts = c"{\"timeoutMs\": 500}";
        assert_eq!(
            lt_connect(url.as_ptr(), opts.as_ptr(), &mut out),
            Status::Connect as i32
        );
        assert!(last_error().contains("127.0.0.1:1"), "{}", last_error());
    }

    #[test]
    fn last_error_is_cut_to_the_buffer_and_nul_terminated() {
        set_last_error("abcdef");
        let mut small = [0xaau8; 4];
        assert_eq!(lt_last_error(small.as_mut_ptr(), small.len()), 6);
        assert_eq!(&small, b"abc\0");
        assert_eq!(lt_last_error(std::ptr::null_mut(), 0), 6);
    }

    #[test]
    fn a_panic_becomes_status_99() {
        assert_eq!(guarded(|| panic!("boom")), Status::Internal as i32);
        assert!(last_error().contains("panicked"));
    }

    #[test]
    fn buffers_round_trip_and_free() {
        let b = to_buffer(b"hello".to_vec());
        // SAFETY: b came from to_buffer.
        assert_eq!(unsafe { std::slice::from_raw_parts(b.ptr, b.len) }, b"hello");
        lt_buffer_free(b);
        lt_buffer_free(LtBuffer {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        });
    }
}

/// Follows group `group` of the aggregator live: `kind` is `ticks`, `contracts` or `battery`,
/// `bucket` the aggregator's KV bucket (null: `md_snapshots`). `out_live` gets a handle for
/// `lt_live_*`; free it with `lt_live_free`. Status 8 when no aggregator has seen the group.
#[no_mangle]
pub extern "C" fn lt_live_open(
    client: *mut c_void,
    kind: *const c_char,
    group: *const c_char,
    bucket: *const c_char,
    out_live: *mut *mut c_void,
) -> i32 {
    guarded(|| {
        let client: &Client = handle("client", client)?;
        let kind = str_arg("kind", kind)?;
        let group = str_arg("group", group)?;
        let bucket = opt_str_arg("bucket", bucket)?;
        let out = out_arg("out_live", out_live)?;
        let live = client.live(kind, group, bucket)?;
        *out = Box::into_raw(Box::new(live)).cast();
        Ok(())
    })
}

/// Waits up to `timeout_ms` for the next delta and applies it. `out_kind`: 0 nothing came in
/// time, 1 applied (`out_shard`, `out_keys` set), 2 stale, 3 resynced from a snapshot after a gap
/// (`out_keys` = the snapshot's version).
#[no_mangle]
pub extern "C" fn lt_live_next(
    live: *mut c_void,
    timeout_ms: u64,
    out_kind: *mut i32,
    out_shard: *mut u32,
    out_keys: *mut u64,
) -> i32 {
    guarded(|| {
        let live: &Live = handle("live", live)?;
        let kind = out_arg("out_kind", out_kind)?;
        let shard = out_arg("out_shard", out_shard)?;
        let keys = out_arg("out_keys", out_keys)?;
        let (k, s, n) = match live.next(timeout_ms)? {
            None => (0, 0, 0),
            Some(langtian_core::aggregate::LiveUpdate::Applied { shard, keys }) => (1, shard, keys as u64),
            Some(langtian_core::aggregate::LiveUpdate::Stale) => (2, 0, 0),
            Some(langtian_core::aggregate::LiveUpdate::Resynced { snapshot_version }) => {
                (3, 0, snapshot_version)
            }
        };
        (*kind, *shard, *keys) = (k, s, n);
        Ok(())
    })
}

/// Every record of the group now, as a JSON array of objects (`out_json`, free it with
/// `lt_buffer_free`).
#[no_mangle]
pub extern "C" fn lt_live_records(live: *mut c_void, out_json: *mut LtBuffer) -> i32 {
    guarded(|| {
        let live: &Live = handle("live", live)?;
        let out = out_arg("out_json", out_json)?;
        *out = to_buffer(live.records_json()?);
        Ok(())
    })
}

/// One record by key as a JSON object, or `null` (`out_json`, free it with `lt_buffer_free`).
#[no_mangle]
pub extern "C" fn lt_live_get(live: *mut c_void, key: *const c_char, out_json: *mut LtBuffer) -> i32 {
    guarded(|| {
        let live: &Live = handle("live", live)?;
        let key = str_arg("key", key)?;
        let out = out_arg("out_json", out_json)?;
        *out = to_buffer(live.get_json(key)?);
        Ok(())
    })
}

/// A live group's size and counts.
#[repr(C)]
#[derive(Debug, Default)]
pub struct LtLiveCounts {
    /// Records held.
    pub len: u64,
    /// Deltas applied.
    pub applied: u64,
    /// Deltas skipped as already contained.
    pub stale: u64,
    /// Snapshots read again after gaps.
    pub resyncs: u64,
    /// Messages on the delta subjects that were not a delta of the group.
    pub rejected: u64,
}

/// How many records the group holds and what it received.
#[no_mangle]
pub extern "C" fn lt_live_counts(live: *mut c_void, out_counts: *mut LtLiveCounts) -> i32 {
    guarded(|| {
        let live: &Live = handle("live", live)?;
        let out = out_arg("out_counts", out_counts)?;
        let (len, [applied, stale, resyncs, rejected]) = live.counts()?;
        *out = LtLiveCounts {
            len,
            applied,
            stale,
            resyncs,
            rejected,
        };
        Ok(())
    })
}

/// Stops following the group and frees the handle (null is ignored).
#[no_mangle]
pub extern "C" fn lt_live_free(live: *mut c_void) {
    if !live.is_null() {
        let _ = catch_unwind(|| {
            // SAFETY: `live` came from lt_live_open and is freed once.
            drop(unsafe { Box::from_raw(live.cast::<Live>()) });
        });
    }
}
