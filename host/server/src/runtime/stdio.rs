//! A plugin's stdout and stderr (`wasi:cli/stdout`, `wasi:cli/stderr`): each line goes to the
//! plugin's log buffer and the host log, tagged with the plugin, the stream and the request.
//!
//! The guest's writes are taken in the host call itself ([`OutputStream`]): a line costs a copy
//! into the log buffer, and nothing waits. wasmtime-wasi's default adapter for an `AsyncWrite`
//! spawns a task per stream and hands every write to it, which cost a request that prints one
//! line ~7 µs of CPU (see docs/performance.md).

use super::log::LogCtx;
use crate::plugin_logs::{Level, Source};
use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// A line longer than this is logged in pieces, so a plugin cannot make the host buffer without
/// bound by never writing a newline.
const MAX_LINE: usize = super::limits::MAX_LOG_LINE;

/// Bytes a guest may hand over in one write (`check-write`), as wasmtime-wasi's own adapter
/// allows. A write is taken in the host call, where no epoch tick can interrupt it, so a larger
/// one traps: otherwise one call with megabytes of newlines would hold the serving thread.
const WRITE_BUDGET: usize = 8 * 1024;

/// Which of the plugin's output streams.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stream {
    /// `wasi:cli/stdout`.
    Stdout,
    /// `wasi:cli/stderr`.
    Stderr,
}

/// The stdout or stderr handed to one instance.
#[derive(Clone)]
pub(super) struct PluginOutput {
    log: LogCtx,
    stream: Stream,
}

impl PluginOutput {
    /// Output on `stream`, written to `log`.
    pub(super) fn new(log: LogCtx, stream: Stream) -> Self {
        Self { log, stream }
    }
}

impl IsTerminal for PluginOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.line_logger())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.line_logger())
    }
}

impl PluginOutput {
    fn line_logger(&self) -> LineLogger {
        LineLogger {
            output: self.clone(),
            buf: Vec::new(),
        }
    }
}

/// Buffers bytes until a newline, then logs the line.
struct LineLogger {
    output: PluginOutput,
    buf: Vec<u8>,
}

impl LineLogger {
    fn emit(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r').to_string();
        let (source, level) = match self.output.stream {
            Stream::Stdout => (Source::Stdout, Level::Info),
            Stream::Stderr => (Source::Stderr, Level::Warn),
        };
        self.output.log.write(source, level, text);
    }

    fn emit_rest(&mut self) {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.emit(&rest);
        }
    }

    /// Takes `data`: each complete line is logged, a line reaching [`MAX_LINE`] is logged in
    /// pieces, and the rest waits for its newline. A line that arrives whole in one write (the
    /// common case) is logged straight from `data`, without passing through the buffer.
    fn take(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            // The buffer is always shorter than MAX_LINE here: a full piece is logged at once.
            let room = MAX_LINE - self.buf.len();
            let window = &data[..data.len().min(room)];
            let Some(end) = window.iter().position(|&byte| byte == b'\n') else {
                self.buf.extend_from_slice(window);
                if self.buf.len() >= MAX_LINE {
                    self.emit_rest();
                }
                data = &data[window.len()..];
                continue;
            };
            if self.buf.is_empty() {
                self.emit(&window[..end]);
            } else {
                self.buf.extend_from_slice(&window[..end]);
                let line = std::mem::take(&mut self.buf);
                self.emit(&line);
            }
            data = &data[end + 1..];
        }
    }
}

#[async_trait::async_trait]
impl Pollable for LineLogger {
    /// Always writable: a write is taken in full when it is made.
    async fn ready(&mut self) {}
}

impl OutputStream for LineLogger {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.len() > WRITE_BUDGET {
            return Err(StreamError::Trap(wasmtime::format_err!(
                "a write of {} bytes to stdout or stderr is over the {WRITE_BUDGET} bytes \
                 check-write allows",
                bytes.len()
            )));
        }
        self.take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

impl AsyncWrite for LineLogger {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.take(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.emit_rest();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineLogger {
    fn drop(&mut self) {
        // A final line without a newline is still logged when the instance goes away.
        self.emit_rest();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin_logs::PluginLogs;
    use std::sync::{Arc, Mutex};

    fn output(logs: &Arc<PluginLogs>, stream: Stream) -> PluginOutput {
        let log = LogCtx {
            plugin: Arc::from("p"),
            request_id: Arc::new(Mutex::new(Some(Arc::from("req-1")))),
            logs: logs.clone(),
        };
        PluginOutput::new(log, stream)
    }

    fn lines(logs: &PluginLogs) -> Vec<(String, String, Option<String>)> {
        logs.read("p", None, 100)
            .lines
            .iter()
            .map(|l| {
                (
                    l.source.as_str().to_string(),
                    l.message.to_string(),
                    l.request_id.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn writes_become_lines_whole_split_cut_and_flushed_at_the_end() {
        let logs = Arc::new(PluginLogs::new(100));
        let mut stdout = output(&logs, Stream::Stdout).p2_stream();
        assert!(stdout.check_write().unwrap() > 0);
        stdout.write(Bytes::from_static(b"one\ntw")).unwrap();
        stdout.write(Bytes::from_static(b"o\r\nthr")).unwrap();
        stdout.flush().unwrap();
        let stdout_line =
            |text: &str| ("stdout".to_string(), text.to_string(), Some("req-1".into()));
        assert_eq!(lines(&logs), vec![stdout_line("one"), stdout_line("two")]);
        // A write over the budget traps (and takes nothing).
        assert!(matches!(
            stdout.write(Bytes::from(vec![b'\n'; WRITE_BUDGET + 1])),
            Err(StreamError::Trap(_))
        ));
        assert_eq!(lines(&logs).len(), 2);
        // A line without a newline is logged in pieces of at most MAX_LINE bytes.
        for piece in vec![b'x'; MAX_LINE + 10].chunks(1000) {
            stdout.write(Bytes::copy_from_slice(piece)).unwrap();
        }
        let logged = lines(&logs);
        assert_eq!(logged.len(), 3);
        assert_eq!(logged[2].1.len(), MAX_LINE);
        assert!(logged[2].1.starts_with("thrxx"));
        // What is left is logged when the stream goes (the instance's end).
        drop(stdout);
        let logged = lines(&logs);
        assert_eq!(logged.len(), 4);
        assert_eq!(logged[3].1, "x".repeat(13));
        let mut stderr = output(&logs, Stream::Stderr).p2_stream();
        stderr.write(Bytes::from_static(b"oops\n")).unwrap();
        assert_eq!(lines(&logs)[4].0, "stderr");
    }

    /// The lines a byte-at-a-time reading of `text` gives: the definition `take` must keep,
    /// however the writes split it.
    fn reference_lines(text: &[u8]) -> Vec<String> {
        let (mut lines, mut buf) = (Vec::new(), Vec::new());
        for &byte in text {
            if byte == b'\n' {
                lines.push(String::from_utf8_lossy(&std::mem::take(&mut buf)).into_owned());
            } else {
                buf.push(byte);
                if buf.len() >= MAX_LINE {
                    lines.push(String::from_utf8_lossy(&std::mem::take(&mut buf)).into_owned());
                }
            }
        }
        if !buf.is_empty() {
            lines.push(String::from_utf8_lossy(&buf).into_owned());
        }
        lines
    }

    #[test]
    fn lines_are_the_same_however_the_writes_split_them() {
        // Lines around MAX_LINE (one short, exact, one over, twice over), empty lines and a
        // final line without a newline.
        let mut text = Vec::new();
        for len in [
            0,
            3,
            MAX_LINE - 1,
            MAX_LINE,
            MAX_LINE + 1,
            2 * MAX_LINE + 5,
            0,
            7,
        ] {
            text.extend(std::iter::repeat_n(b'a' + (len % 26) as u8, len));
            text.push(b'\n');
        }
        text.extend_from_slice(b"tail");
        let expected = reference_lines(&text);
        for chunk in [
            1,
            2,
            7,
            64,
            1000,
            MAX_LINE - 1,
            MAX_LINE,
            MAX_LINE + 1,
            WRITE_BUDGET,
        ] {
            let logs = Arc::new(PluginLogs::new(100));
            let mut stdout = output(&logs, Stream::Stdout).p2_stream();
            for piece in text.chunks(chunk) {
                stdout.write(Bytes::copy_from_slice(piece)).unwrap();
            }
            drop(stdout);
            let got: Vec<String> = lines(&logs).into_iter().map(|(_, text, _)| text).collect();
            assert_eq!(got, expected, "writes of {chunk} bytes");
        }
    }
}
