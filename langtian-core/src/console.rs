//! The service binaries' banners and status lines on stderr ("lt-gateway: UI …", the periodic
//! status line, "stopping — …"). With text logs they are printed as they are; after
//! `cli::init_logging` with `--log-format json` they become info events, so that everything on
//! stderr is one JSON object per line for a log pipeline.
//!
//! ```
//! langtian_core::console::say("lt-demo: serving"); // printed to stderr as is (text logs)
//! ```

use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);

/// Called by `cli::init_logging`: whether log lines are JSON.
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// Prints a banner or status line: as it is, or as an info event when logs are JSON.
pub fn say(text: &str) {
    if JSON.load(Ordering::Relaxed) {
        tracing::info!("{text}");
    } else {
        eprintln!("{text}");
    }
}
