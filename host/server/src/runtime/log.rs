//! Host side of `plinth:host/log`: a plugin's log lines go to its buffer (for `plinth logs`)
//! and to the server log, tagged with the plugin and the request id.
//!
//! Plugin text is untrusted: a line is cut at [`MAX_LOG_LINE`] bytes, its control characters
//! (newlines above all) are escaped so it cannot forge server log lines, and at most
//! [`LOG_LINES_PER_SECOND`] lines a second per plugin reach the server log (the rest are
//! counted and reported; the plugin's own buffer keeps them all, within its bound).

use super::bindings::plinth::host::log::{Host, Level as WitLevel};
use super::limits::{LOG_LINES_PER_SECOND, MAX_LOG_LINE};
use crate::plugin_logs::{Level, PluginLogs, ServerLog, Source};
use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};

/// Characters a line is escaped for besides control characters: line and paragraph separators
/// (some viewers break lines on them) and bidirectional overrides (which reorder what a reader
/// sees of the rest of the line).
fn deceptive(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every control character (and [`deceptive`] one) escaped (`\n`, `\u{1b}`), so
/// it stays one line and reads as written.
fn escape_controls(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || deceptive(c);
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Where one instance's log lines go.
#[derive(Clone)]
pub struct LogCtx {
    /// Whose log the lines go to (its name, shared with every line).
    pub plugin: Arc<str>,
    /// The id of the request being handled; shared with the instance's stdout and stderr, and
    /// replaced when a reused instance takes its next request.
    pub request_id: Arc<Mutex<Option<Arc<str>>>>,
    /// Every plugin's buffers.
    pub logs: Arc<PluginLogs>,
}

impl LogCtx {
    /// Records one line from `source`, also as a tracing event.
    pub fn write(&self, source: Source, level: Level, message: String) {
        let plugin = &*self.plugin;
        let message = crate::plugin_logs::cut(message, MAX_LOG_LINE);
        let request_id = self.current_request();
        let request_id = request_id.as_deref();
        // Lines the server log filters out anyway do not use up the plugin's rate.
        let shown = match level {
            Level::Trace => tracing::enabled!(target: "plugin", tracing::Level::TRACE),
            Level::Debug => tracing::enabled!(target: "plugin", tracing::Level::DEBUG),
            Level::Info => tracing::enabled!(target: "plugin", tracing::Level::INFO),
            Level::Warn => tracing::enabled!(target: "plugin", tracing::Level::WARN),
            Level::Error => tracing::enabled!(target: "plugin", tracing::Level::ERROR),
        };
        if shown
            && let ServerLog::Write { dropped } =
                self.logs.admit_to_server_log(plugin, LOG_LINES_PER_SECOND)
        {
            if dropped > 0 {
                tracing::warn!(
                    target: "plugin",
                    plugin,
                    dropped,
                    "plugin log lines kept out of the server log: over {LOG_LINES_PER_SECOND} a \
                     second (the plugin's log buffer has them)"
                );
            }
            Self::trace(
                plugin,
                source,
                level,
                request_id,
                &escape_controls(&message),
            );
        }
        self.logs.push(plugin, source, level, message, request_id);
    }

    /// Writes a plugin line to the server log.
    fn trace(plugin: &str, source: Source, level: Level, request_id: Option<&str>, message: &str) {
        let source_name = source.as_str();
        match level {
            Level::Trace => {
                tracing::trace!(target: "plugin", plugin, source = source_name, request_id, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "plugin", plugin, source = source_name, request_id, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "plugin", plugin, source = source_name, request_id, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "plugin", plugin, source = source_name, request_id, "{message}")
            }
            Level::Error => {
                tracing::error!(target: "plugin", plugin, source = source_name, request_id, "{message}")
            }
        }
    }

    /// The id of the request being handled.
    fn current_request(&self) -> Option<Arc<str>> {
        self.request_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Tags later lines with `request_id`.
    pub fn set_request(&self, request_id: Option<Arc<str>>) {
        *self
            .request_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = request_id;
    }
}

impl Host for LogCtx {
    fn write(&mut self, level: WitLevel, message: String) {
        let level = match level {
            WitLevel::Trace => Level::Trace,
            WitLevel::Debug => Level::Debug,
            WitLevel::Info => Level::Info,
            WitLevel::Warn => Level::Warn,
            WitLevel::Error => Level::Error,
        };
        LogCtx::write(self, Source::Log, level, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_so_a_line_stays_one_line() {
        assert_eq!(escape_controls("plain text"), "plain text");
        assert_eq!(
            escape_controls("a\u{2028}b\u{202E}c"),
            "a\\u{2028}b\\u{202e}c"
        );
        assert_eq!(
            escape_controls("ok\n2026-12-03T00:00:00Z  INFO forged\r\u{1b}[31m"),
            "ok\\n2026-12-03T00:00:00Z  INFO forged\\r\\u{1b}[31m"
        );
    }

    #[test]
    fn a_plugin_gets_its_rate_of_server_log_lines_and_the_rest_is_counted() {
        let logs = PluginLogs::new(10);
        for _ in 0..3 {
            assert_eq!(
                logs.admit_to_server_log("noisy", 3),
                ServerLog::Write { dropped: 0 }
            );
        }
        assert_eq!(logs.admit_to_server_log("noisy", 3), ServerLog::Drop);
        assert_eq!(logs.admit_to_server_log("noisy", 3), ServerLog::Drop);
        // Another plugin has its own allowance.
        assert_eq!(
            logs.admit_to_server_log("quiet", 3),
            ServerLog::Write { dropped: 0 }
        );
    }
}
