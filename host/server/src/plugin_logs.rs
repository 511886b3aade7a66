//! Each plugin's recent log lines: its stdout and stderr, what it logs through
//! `plinth:host/log`, and one access line per request. Kept in a bounded ring buffer per plugin
//! (the oldest line goes first) and streamed live to followers (`plinth logs -f`).
//!
//! **Invariant:** memory is bounded: at most `capacity` lines per plugin, each at most
//! [`MAX_MESSAGE`] bytes; a follower that falls behind skips lines rather than holding them.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use tokio::sync::broadcast;

/// Longest message kept; longer ones are cut (on a character boundary) and marked.
pub const MAX_MESSAGE: usize = 4 * 1024;
/// Lines a live follower may be behind before it skips ahead.
const FOLLOW_BACKLOG: usize = 1024;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
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

impl Level {
    /// The name in JSON and in `plinth logs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// The text of a line: as written, or a request's access line kept as its parts and written
/// out only when read (there is one per request, and almost none is ever read).
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Text as the plugin or the host wrote it.
    Text(String),
    /// A request's access line.
    Access(Box<Access>),
}

/// What an access line says about a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    /// The request's method.
    pub method: http::Method,
    /// The request's path.
    pub path: String,
    /// The response status.
    pub status: u16,
    /// How long the host took to answer.
    pub elapsed: std::time::Duration,
    /// The route pattern that matched.
    pub route: String,
    /// The caller's id, if any.
    pub user: Option<String>,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} → {} in {:.1} ms (route {}, user {})",
            self.method,
            self.path,
            self.status,
            self.elapsed.as_secs_f64() * 1000.0,
            self.route,
            self.user.as_deref().unwrap_or("-"),
        )
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Text(text) => f.write_str(text),
            Message::Access(access) => access.fmt(f),
        }
    }
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Message::Text(text) => s.serialize_str(text),
            Message::Access(access) => s.collect_str(access),
        }
    }
}

/// Read back (by the CLI) as the text it was written as.
impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Message::Text)
    }
}

impl From<Access> for Message {
    fn from(mut access: Access) -> Self {
        // The rest of the line is short: a bounded path keeps it within MAX_MESSAGE.
        access.path = cut(access.path, MAX_MESSAGE / 2);
        Message::Access(Box::new(access))
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Message::Text(cut(text, MAX_MESSAGE))
    }
}

/// One line of a plugin's log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct LogLine {
    /// Position in the plugin's log since the server started (1, 2, ...); pass the last one
    /// seen as `since` to read only newer lines.
    pub seq: u64,
    /// When (RFC 3339, UTC). Kept as a time and formatted only when the line is read: most
    /// lines (one access line per request) are never read.
    #[serde(serialize_with = "rfc3339", deserialize_with = "from_rfc3339")]
    #[schema(value_type = String, example = "2026-12-01T12:00:00.123Z")]
    pub at: std::time::SystemTime,
    /// Where it came from.
    pub source: Source,
    /// How severe: `trace`, `debug`, `info`, `warn` or `error`.
    pub level: Level,
    /// The text, cut at the host's line limit, control characters escaped.
    #[schema(value_type = String)]
    pub message: Message,
    /// The request that produced it, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

fn rfc3339<S: serde::Serializer>(at: &std::time::SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::units::rfc3339_at(*at))
}

fn from_rfc3339<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::SystemTime, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
}

struct Buffer {
    lines: Mutex<Ring>,
    live: broadcast::Sender<Arc<LogLine>>,
    /// How many of the plugin's lines went to the server log this second.
    server_log: Mutex<ServerLogWindow>,
}

/// A one-second window of a plugin's lines in the server log.
struct ServerLogWindow {
    started: std::time::Instant,
    written: u32,
    /// Lines kept out of the server log since the last report.
    dropped: u64,
}

/// Whether a plugin line may go to the server log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerLog {
    /// Write it; `dropped` earlier lines were kept out and should be reported first.
    Write {
        /// Lines kept out since the last report.
        dropped: u64,
    },
    /// Over the rate: keep it out (the plugin's own buffer still has it).
    Drop,
}

struct Ring {
    lines: VecDeque<Arc<LogLine>>,
    next_seq: u64,
}

/// A page of lines, oldest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogPage {
    /// The plugin whose log this is.
    pub plugin: String,
    /// The lines, oldest first; each `seq` is one past the line before it.
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

/// Cuts `message` to `max` bytes on a character boundary, marking the cut.
pub fn cut(mut message: String, max: usize) -> String {
    if message.len() > max {
        let mut end = max;
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
                    server_log: Mutex::new(ServerLogWindow {
                        started: std::time::Instant::now(),
                        written: 0,
                        dropped: 0,
                    }),
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
        message: impl Into<Message>,
        request_id: Option<&str>,
    ) {
        let buffer = self.buffer(plugin);
        let mut ring = buffer.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let line = Arc::new(LogLine {
            seq: ring.next_seq,
            at: std::time::SystemTime::now(),
            source,
            level,
            message: message.into(),
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

    /// Whether one more of `plugin`'s lines may go to the server log: at most `per_second` a
    /// second, so a plugin cannot fill the operator's disk or drown other plugins' lines.
    pub fn admit_to_server_log(&self, plugin: &str, per_second: u32) -> ServerLog {
        let buffer = self.buffer(plugin);
        let mut window = buffer
            .server_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if window.started.elapsed() >= std::time::Duration::from_secs(1) {
            window.started = std::time::Instant::now();
            window.written = 0;
        }
        if window.written >= per_second {
            window.dropped += 1;
            return ServerLog::Drop;
        }
        window.written += 1;
        ServerLog::Write {
            dropped: std::mem::take(&mut window.dropped),
        }
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
        logs.push(plugin, Source::Stdout, Level::Info, text.to_string(), None);
    }

    #[test]
    fn the_ring_keeps_the_newest_lines_and_pages_by_seq() {
        let logs = PluginLogs::new(3);
        for i in 1..=5 {
            push(&logs, "a", &format!("line {i}"));
        }
        push(&logs, "b", "other plugin");
        let all = logs.read("a", None, 10);
        let texts: Vec<_> = all.lines.iter().map(|l| l.message.to_string()).collect();
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
        let text = line.message.to_string();
        assert!(text.len() <= MAX_MESSAGE + " …[cut]".len());
        assert!(text.ends_with("[cut]"));
    }

    #[tokio::test]
    async fn followers_get_the_backlog_then_every_new_line_in_order() {
        let logs = PluginLogs::new(100);
        push(&logs, "a", "old");
        let (backlog, mut live) = logs.follow("a", Some(0), 10);
        assert_eq!(backlog.len(), 1);
        push(&logs, "a", "new 1");
        push(&logs, "a", "new 2");
        assert_eq!(live.recv().await.unwrap().message.to_string(), "new 1");
        assert_eq!(live.recv().await.unwrap().seq, 3);
    }

    #[test]
    fn an_access_line_reads_as_one_bounded_text() {
        let logs = PluginLogs::new(3);
        let access = |path: String| Access {
            method: http::Method::GET,
            path,
            status: 200,
            elapsed: std::time::Duration::from_micros(1_250),
            route: "/hello/{name}".into(),
            user: None,
        };
        logs.push(
            "a",
            Source::Access,
            Level::Info,
            access("/hello/x".into()),
            Some("r1"),
        );
        logs.push(
            "a",
            Source::Access,
            Level::Info,
            access("/x".repeat(MAX_MESSAGE)),
            None,
        );
        let page = logs.read("a", None, 2);
        let json = serde_json::to_value(&page.lines[0]).unwrap();
        assert_eq!(
            json["message"],
            "GET /hello/x → 200 in 1.2 ms (route /hello/{name}, user -)"
        );
        assert_eq!(json["source"], "access");
        assert_eq!(json["request_id"], "r1");
        let long = page.lines[1].message.to_string();
        assert!(long.len() <= MAX_MESSAGE, "{}", long.len());
        assert!(long.contains("[cut] → 200"));
    }
}
