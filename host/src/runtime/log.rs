//! Host side of `plinth:host/log`: a plugin's log lines go to its buffer (for `plinth logs`)
//! and to the server log, tagged with the plugin and the request id.

use super::bindings::plinth::host::log::{Host, Level as WitLevel};
use crate::plugin_logs::{Level, PluginLogs, Source};
use std::sync::{Arc, Mutex, PoisonError};

/// Where one instance's log lines go.
#[derive(Clone)]
pub struct LogCtx {
    /// The plugin.
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
        let request_id = self.current_request();
        let request_id = request_id.as_deref();
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
        self.logs.push(plugin, source, level, message, request_id);
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
