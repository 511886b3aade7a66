//! Each plugin's recent log lines: its stdout and stderr, what it logs through
//! `plinth:host/log`, and one access line per request. Kept in a bounded ring buffer per plugin
//! (the oldest line goes first) and streamed live to followers (`plinth logs -f`).
//!
//! **Invariant:** memory is bounded: at most `capacity` lines per plugin, each at most
//! [`MAX_MESSAGE`] bytes; a follower that falls behind skips lines rather than holding them.

use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use tokio::sync::broadcast;

/// Longest message kept; longer ones are cut (on a character boundary) and marked.
pub const MAX_MESSAGE: usize = 4 * 1024;
/// Lines a live follower may be behind before it skips ahead.
const FOLLOW_BACKLOG: usize = 1024;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `wasi:cli/stdout`.
    Stdout,
    /// `wasi:cli/stderr`.
    Stderr,
    /// `plinth:host/log`.
    Log,
    /// The host's line for a request (route, status, duration, user).
    Access,
}

impl Source {
    /// The name in JSON and in the server log.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Stdout => "stdout",
            Source::Stderr => "stderr",
            Source::Log => "log",
            Source::Access => "access",
        }
    }
}

/// Severity, as `plinth:host/log` and tracing know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Very detailed.
    Trace,
    /// For developers.
    Debug,
    /// Normal operation.
    Info,
    /// Something to look at.
    Warn,
    /// Something failed.
    Error,
}

/// One line of a plugin's log.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LogLine {
    /// Position in the plugin's log since the server started (1, 2, ...); pass the last one
    /// seen as `since` to read only newer lines.
    pub seq: u64,
    /// When (RFC 3339, UTC). Kept as a time and formatted only when the line is read: most
    /// lines (one access line per request) are never read.
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, example = "2026-12-01T12:00:00.123Z")]
    pub at: std::time::SystemTime,
    /// Where it came from.
    pub source: Source,
    /// How severe.
    pub level: Level,
    /// The text.
    pub message: String,
    /// The request that produced it, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

fn rfc3339<S: serde::Serializer>(at: &std::time::SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*at))
}

struct Buffer {
    lines: Mutex<Ring>,
    live: broadcast::Sender<Arc<LogLine>>,
}

struct Ring {
    lines: VecDeque<Arc<LogLine>>,
    next_seq: u64,
}

/// A page of lines, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogPage {
    /// The plugin.
    pub plugin: String,
    /// The lines.
    #[schema(value_type = Vec<LogLine>)]
    pub lines: Vec<Arc<LogLine>>,
    /// The `seq` of the last line returned (or the `since` given): pass it as `since` next.
    pub next_since: u64,
}

/// Every plugin's log buffer.
pub struct PluginLogs {
    buffers: RwLock<HashMap<String, Arc<Buffer>>>,
    capacity: usize,
}

/// Cuts a message to [`MAX_MESSAGE`] bytes on a character boundary.
fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(" …[cut]");
    }
    message
}

impl PluginLogs {
    /// Buffers keeping `capacity` lines per plugin.
    pub fn new(capacity: usize) -> Self {
        Self {
            buffers: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn buffer(&self, plugin: &str) -> Arc<Buffer> {
        if let Some(buffer) = self
            .buffers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(plugin)
        {
            return buffer.clone();
        }
        self.buffers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(plugin.to_string())
            .or_insert_with(|| {
                Arc::new(Buffer {
                    lines: Mutex::new(Ring {
                        lines: VecDeque::new(),
                        next_seq: 1,
                    }),
                    live: broadcast::channel(FOLLOW_BACKLOG).0,
                })
            })
            .clone()
    }

    /// Appends a line to `plugin`'s log and hands it to live followers.
    pub fn push(
        &self,
        plugin: &str,
        source: Source,
        level: Level,
        message: String,
        request_id: Option<&str>,
    ) {
        let buffer = self.buffer(plugin);
        let mut ring = buffer.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let line = Arc::new(LogLine {
            seq: ring.next_seq,
            at: std::time::SystemTime::now(),
            source,
            level,
            message: bounded(message),
            request_id: request_id.map(str::to_string),
        });
        ring.next_seq += 1;
        if ring.lines.len() == self.capacity {
            ring.lines.pop_front();
        }
        ring.lines.push_back(line.clone());
        // Sent under the lock, so followers see lines in `seq` order. No follower: no error.
        let _ = buffer.live.send(line);
    }

    /// Lines after `since` (oldest first, at most `limit`), or without `since` the newest
    /// `limit` lines.
    pub fn read(&self, plugin: &str, since: Option<u64>, limit: usize) -> LogPage {
        let buffer = self.buffer(plugin);
        let ring = buffer.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let lines: Vec<_> = match since {
            Some(since) => ring
                .lines
                .iter()
                .filter(|l| l.seq > since)
                .take(limit)
                .cloned()
                .collect(),
            None => {
                let skip = ring.lines.len().saturating_sub(limit);
                ring.lines.iter().skip(skip).cloned().collect()
            }
        };
        LogPage {
            plugin: plugin.to_string(),
            next_since: lines.last().map_or(since.unwrap_or(0), |l| l.seq),
            lines,
        }
    }

    /// Lines after `since` now, plus a receiver of every later line, with no gap between them.
    pub fn follow(
        &self,
        plugin: &str,
        since: Option<u64>,
        backlog: usize,
    ) -> (Vec<Arc<LogLine>>, broadcast::Receiver<Arc<LogLine>>) {
        let buffer = self.buffer(plugin);
        // Subscribing while holding the ring's lock: no line can land between the two.
        let ring = buffer.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let receiver = buffer.live.subscribe();
        let lines = match since {
            Some(since) => ring
                .lines
                .iter()
                .filter(|l| l.seq > since)
                .cloned()
                .collect(),
            None => {
                let skip = ring.lines.len().saturating_sub(backlog);
                ring.lines.iter().skip(skip).cloned().collect()
            }
        };
        (lines, receiver)
    }

    /// Forgets a plugin's lines (when it is deleted with its data).
    pub fn forget(&self, plugin: &str) {
        self.buffers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(plugin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(logs: &PluginLogs, plugin: &str, text: &str) {
        logs.push(plugin, Source::Stdout, Level::Info, text.into(), None);
    }

    #[test]
    fn the_ring_keeps_the_newest_lines_and_pages_by_seq() {
        let logs = PluginLogs::new(3);
        for i in 1..=5 {
            push(&logs, "a", &format!("line {i}"));
        }
        push(&logs, "b", "other plugin");
        let all = logs.read("a", None, 10);
        let texts: Vec<_> = all.lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(texts, ["line 3", "line 4", "line 5"]);
        assert_eq!(all.next_since, 5);
        let newer = logs.read("a", Some(3), 1);
        assert_eq!(newer.lines[0].seq, 4);
        assert_eq!(newer.next_since, 4);
        assert!(logs.read("a", Some(5), 10).lines.is_empty());
        assert_eq!(logs.read("a", Some(5), 10).next_since, 5);
        assert_eq!(logs.read("b", None, 10).lines[0].seq, 1);
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let logs = PluginLogs::new(3);
        push(&logs, "a", &"é".repeat(MAX_MESSAGE));
        let line = &logs.read("a", None, 1).lines[0];
        assert!(line.message.len() <= MAX_MESSAGE + " …[cut]".len());
        assert!(line.message.ends_with("[cut]"));
    }

    #[tokio::test]
    async fn followers_get_the_backlog_then_every_new_line_in_order() {
        let logs = PluginLogs::new(100);
        push(&logs, "a", "old");
        let (backlog, mut live) = logs.follow("a", Some(0), 10);
        assert_eq!(backlog.len(), 1);
        push(&logs, "a", "new 1");
        push(&logs, "a", "new 2");
        assert_eq!(live.recv().await.unwrap().message, "new 1");
        assert_eq!(live.recv().await.unwrap().seq, 3);
    }
}
