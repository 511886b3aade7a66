//! A plugin's stdout and stderr (`wasi:cli/stdout`, `wasi:cli/stderr`): each line goes to the
//! plugin's log buffer and the host log, tagged with the plugin, the stream and the request.

use super::log::LogCtx;
use crate::plugin_logs::{Level, Source};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// A line longer than this is logged in pieces, so a plugin cannot make the host buffer without
/// bound by never writing a newline.
const MAX_LINE: usize = super::limits::MAX_LOG_LINE;

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
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineLogger {
            output: self.clone(),
            buf: Vec::new(),
        })
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
}

impl AsyncWrite for LineLogger {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        for &byte in data {
            if byte == b'\n' {
                let line = std::mem::take(&mut this.buf);
                this.emit(&line);
            } else {
                this.buf.push(byte);
                if this.buf.len() >= MAX_LINE {
                    this.emit_rest();
                }
            }
        }
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
