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

/// Reports why a service binary stops: `"<bin>: error: <error>"` on stderr, or with JSON logs
/// an error event with `code` (`config_invalid`, `nats_unreachable`, `service_failed`, …) and
/// `error` fields, so that a log pipeline still reads nothing but JSON.
///
/// ```
/// langtian_core::console::fail("lt-demo", "config_invalid", &"--listen: invalid address");
/// ```
pub fn fail(bin: &str, code: &str, error: &dyn std::fmt::Display) {
    if JSON.load(Ordering::Relaxed) {
        tracing::error!(code, %error, "{bin}: error: {error}");
    } else {
        eprintln!("{bin}: error: {error}");
    }
}

/// A warning a service binary goes on after: `"<bin>: warning: <what>: <error>"`, or a warn event
/// with `code` and `error` fields when logs are JSON.
pub fn warn(bin: &str, code: &str, what: &str, error: &dyn std::fmt::Display) {
    if JSON.load(Ordering::Relaxed) {
        tracing::warn!(code, %error, "{bin}: warning: {what}: {error}");
    } else {
        eprintln!("{bin}: warning: {what}: {error}");
    }
}

#[cfg(test)]
mod tests {

    /// The arguments of every `tracing::warn!(…)` / `tracing::error!(…)` call in `text`, with the
    /// line it starts on (string literals may hold parentheses: they are skipped).
    fn warn_and_error_calls(text: &str) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for mac in ["tracing::warn!(", "tracing::error!("] {
            let mut from = 0;
            while let Some(i) = text[from..].find(mac) {
                let start = from + i + mac.len();
                let (mut depth, mut in_str, mut escaped, mut end) = (1usize, false, false, text.len());
                for (j, c) in text[start..].char_indices() {
                    match (in_str, escaped, c) {
                        (true, true, _) => escaped = false,
                        (true, false, '\\') => escaped = true,
                        (true, false, '"') => in_str = false,
                        (true, false, _) => {}
                        (false, _, '"') => in_str = true,
                        (false, _, '(') => depth += 1,
                        (false, _, ')') => {
                            depth -= 1;
                            if depth == 0 {
                                end = start + j;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                out.push((text[..start].lines().count(), text[start..end].to_owned()));
                from = end;
            }
        }
        out
    }

    /// Every warning and error the library logs names what happened in a `code` field (seed 002:
    /// structured logs with error codes; the tables in docs/gateway.md and docs/aggregator.md).
    #[test]
    fn every_warning_and_error_has_a_code() {
        let files = crate::source_scan::library_sources();
        let mut calls = 0;
        let mut missing = Vec::new();
        // (This file's tests hold such calls inside strings.)
        for f in files.iter().filter(|f| !f.ends_with("console.rs")) {
            let text = std::fs::read_to_string(f).unwrap();
            for (line, args) in warn_and_error_calls(&text) {
                calls += 1;
                // `code = "…"`, or the shorthand `code` for a local named so.
                if !args
                    .split(',')
                    .any(|a| a.trim_start().starts_with("code = ") || a.trim() == "code")
                {
                    missing.push(format!("{}:{line}", f.display()));
                }
            }
        }
        assert!(calls > 40, "found only {calls} calls: the scan is broken");
        assert!(
            missing.is_empty(),
            "warnings/errors without a code field: {missing:#?}"
        );
    }

    #[test]
    fn the_scan_sees_parentheses_in_strings_and_multi_line_calls() {
        let text =
            "tracing::warn!(x, \"a (b\");\nfoo();\ntracing::error!(\n    code = \"c\",\n    \"d)\"\n);";
        let calls = warn_and_error_calls(text);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0], (1, "x, \"a (b\"".to_owned()));
        assert!(calls[1].1.contains("code = \"c\""));
        assert_eq!(
            warn_and_error_calls("tracing::warn!(code, %peer, \"x\");")[0].1,
            "code, %peer, \"x\""
        );
    }
}
