//! Capturing a child's output without ever letting its pipes fill.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;
use tokio::sync::oneshot;

/// Bytes of log kept; older output is cut so a chatty server cannot grow
/// a test's memory without bound.
const MAX_LOG_BYTES: usize = 4 << 20;

/// The log marker that carries the bound address.
const LISTENING: &str = "listening on http://";

/// Shared, append-only text of a server's output (across restarts).
#[derive(Clone, Default)]
pub(super) struct ServerLog {
    text: Arc<Mutex<String>>,
}

impl ServerLog {
    pub(super) fn contents(&self) -> String {
        self.text
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn append(&self, line: &str) {
        let mut text = self.text.lock().unwrap_or_else(PoisonError::into_inner);
        text.push_str(line);
        text.push('\n');
        if text.len() > MAX_LOG_BYTES {
            let mut cut = text.len() - MAX_LOG_BYTES / 2;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            text.replace_range(..cut, "[… earlier output cut …]\n");
        }
    }

    /// Takes the child's stdout and stderr and drains both into the log
    /// until they close. The receiver yields the first listening address
    /// seen, or an error if the output ends first.
    pub(super) fn attach(&self, child: &mut Child) -> oneshot::Receiver<SocketAddr> {
        let (found, listening) = oneshot::channel();
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(drain(stderr, self.clone(), Some(found)));
        }
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(drain(stdout, self.clone(), None));
        }
        listening
    }
}

/// Copies lines into the log; the task ends when the pipe closes, which
/// the child's exit (or kill) guarantees.
async fn drain<R: AsyncRead + Unpin>(
    pipe: R,
    log: ServerLog,
    mut found: Option<oneshot::Sender<SocketAddr>>,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = strip_ansi(&line);
        log.append(&line);
        if found.is_some() {
            if let Some(addr) = listening_addr(&line) {
                if let Some(sender) = found.take() {
                    let _ = sender.send(addr);
                }
            }
        }
    }
}

/// The address in `… listening on http://127.0.0.1:PORT …`.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let start = line.find(LISTENING)? + LISTENING.len();
    let addr: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    addr.parse().ok()
}

/// Removes terminal colour sequences (`ESC [ … letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_listening_address() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "2025-01-01T00:00:00Z  INFO quire: quire listening on http://127.0.0.1:4321",
                Some("127.0.0.1:4321"),
            ),
            (
                r#"{"fields":{"message":"quire listening on http://127.0.0.1:80 (open mode)"}}"#,
                Some("127.0.0.1:80"),
            ),
            ("quire listening on http://[::1]:9/", Some("[::1]:9")),
            ("listening soon", None),
        ];
        for (line, expected) in cases {
            let expected = expected.map(|a| a.parse::<SocketAddr>().unwrap());
            assert_eq!(listening_addr(line), expected, "{line}");
        }
    }

    #[test]
    fn strips_colours() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2025\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x"),
            "2025  INFO x"
        );
    }
}
