//! Which server is measured, and how to reach a document on it.
//!
//! The servers differ only in the URL of a document and, for Hocuspocus, in
//! framing: every frame in both directions starts with the document name as
//! a lib0 varString, and the client must send an auth message (any token
//! when no `onAuthenticate` hook is set) before the server handles anything
//! else (`ClientConnection.handleQueueingMessage` in `@hocuspocus/server`).

use crate::wire::{write_bytes, write_var, Cursor, MSG_AUTH};
use clap::ValueEnum;
use serde::Serialize;

/// Kinds of server `quire-bench` knows how to address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Flavor {
    /// Quire: `/ws/{doc}`.
    Quire,
    /// `y-websocket`'s `bin/server.js`: the document is the whole path.
    YWebsocket,
    /// `y-sweet serve`: `/d/{doc}/ws/{doc}` (the name twice, for y-websocket clients).
    YSweet,
    /// `@hocuspocus/server`: any path, document name inside every frame.
    Hocuspocus,
    /// `quire-bench relay`, the no-CRDT floor: the document is the whole path.
    Relay,
    /// Quire's Hocuspocus dialect: `/hocuspocus`, framed as for `@hocuspocus/server`.
    QuireHocuspocus,
}

impl Flavor {
    fn default_path(self) -> &'static str {
        match self {
            Flavor::Quire => "/ws/{doc}",
            Flavor::YWebsocket | Flavor::Relay | Flavor::Hocuspocus => "/{doc}",
            Flavor::YSweet => "/d/{doc}/ws/{doc}",
            Flavor::QuireHocuspocus => "/hocuspocus",
        }
    }
}

/// How frames are wrapped on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Plain y-websocket frames.
    Plain,
    /// Hocuspocus: varString document name, then the y-websocket message.
    Hocuspocus,
}

/// One server to measure.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `ws://HOST:PORT`, no trailing slash.
    pub base: String,
    /// Path template with `{doc}` placeholders.
    pub path: String,
    pub framing: Framing,
    pub flavor: Flavor,
}

impl Target {
    pub(crate) fn new(base: &str, flavor: Flavor, path: Option<&str>) -> Target {
        let base = base.trim_end_matches('/');
        let base = match base.strip_prefix("http://") {
            Some(rest) => format!("ws://{rest}"),
            None => base.to_owned(),
        };
        Target {
            base,
            path: path.unwrap_or(flavor.default_path()).to_owned(),
            framing: match flavor {
                Flavor::Hocuspocus | Flavor::QuireHocuspocus => Framing::Hocuspocus,
                _ => Framing::Plain,
            },
            flavor,
        }
    }

    /// The upgrade URL of `doc` (names used by the bench need no escaping).
    pub(crate) fn url(&self, doc: &str) -> String {
        format!("{}{}", self.base, self.path.replace("{doc}", doc))
    }

    /// `http://HOST:PORT` of the same server.
    pub(crate) fn http_base(&self) -> String {
        match self.base.strip_prefix("ws://") {
            Some(rest) => format!("http://{rest}"),
            None => self.base.clone(),
        }
    }

    /// What goes before every frame sent for `doc`.
    pub(crate) fn prefix(&self, doc: &str) -> Vec<u8> {
        match self.framing {
            Framing::Plain => Vec::new(),
            Framing::Hocuspocus => {
                let mut prefix = Vec::new();
                write_bytes(&mut prefix, doc.as_bytes());
                prefix
            }
        }
    }

    /// Messages to send right after the upgrade, before sync step 1.
    pub(crate) fn greeting(&self) -> Vec<Vec<u8>> {
        match self.framing {
            Framing::Plain => Vec::new(),
            Framing::Hocuspocus => {
                // Auth, sub-type Token (0), the token; Hocuspocus accepts any
                // token when the server sets no onAuthenticate hook.
                let mut auth = Vec::new();
                write_var(&mut auth, MSG_AUTH);
                write_var(&mut auth, 0);
                write_bytes(&mut auth, b"quire-bench");
                vec![auth]
            }
        }
    }

    /// Offset of the y-websocket message inside a frame from the server.
    pub(crate) fn body_offset(&self, frame: &[u8]) -> Option<usize> {
        match self.framing {
            Framing::Plain => Some(0),
            Framing::Hocuspocus => {
                let mut cursor = Cursor::new(frame);
                cursor.bytes()?;
                Some(cursor.position())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_per_flavor() {
        let check = |flavor, expect: &str| {
            assert_eq!(Target::new("ws://h:1/", flavor, None).url("d-1"), expect);
        };
        check(Flavor::Quire, "ws://h:1/ws/d-1");
        check(Flavor::YWebsocket, "ws://h:1/d-1");
        check(Flavor::YSweet, "ws://h:1/d/d-1/ws/d-1");
        check(Flavor::Relay, "ws://h:1/d-1");
        check(Flavor::QuireHocuspocus, "ws://h:1/hocuspocus");
        assert_eq!(
            Target::new("http://h:1", Flavor::Quire, Some("/x/{doc}")).url("a"),
            "ws://h:1/x/a"
        );
    }

    #[test]
    fn hocuspocus_frames_carry_the_name() {
        let target = Target::new("ws://h:1", Flavor::Hocuspocus, None);
        let mut frame = target.prefix("doc");
        assert_eq!(frame, [3, b'd', b'o', b'c']);
        frame.extend_from_slice(&[0, 1, 0]);
        assert_eq!(target.body_offset(&frame), Some(4));
        assert_eq!(target.greeting()[0][..3], [MSG_AUTH as u8, 0, 11]);
    }
}
