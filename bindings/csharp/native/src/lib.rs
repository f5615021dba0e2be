//! `liblangtian_cs`: a small C ABI over `langtian-core` for the C# package (`Langtian`).
//!
//! * [`ffi`] holds the `extern "C"` functions; `build.rs` turns them into
//!   `bindings/csharp/src/NativeMethods.g.cs` with csbindgen. The idiomatic C# layer
//!   (`LangtianClient`, exceptions, events) is in `bindings/csharp/src/`.
//! * [`client`] holds the logic in safe Rust: one tokio runtime for the library, the calls
//!   (connect, publish, subscribe, request, KV register/heartbeat/nodes) as blocking functions
//!   with typed errors ([`FfiError`]), which `ffi` maps once to a status code and a last-error text.
//!
//! Conventions of the C ABI: every call returns an `i32` status (`LT_OK` = 0, see [`Status`]);
//! results go to out-parameters; the message of the last failure on the calling thread is read
//! with `lt_last_error`. Handles are opaque pointers freed by their `*_free`; byte buffers the
//! library returns are freed with `lt_buffer_free`. Subscription callbacks run on one dedicated
//! thread per subscription (never on a runtime thread), in arrival order, so a callback may call
//! back into the library.

#![allow(unsafe_code)] // a C ABI: raw pointers from C# are what this crate is for

pub mod client;
pub mod ffi;

pub use client::{FfiError, Status};
