//! The y-websocket wire format, as much of it as a load generator needs.
//!
//! Deliberately independent of `crdt-core`: the instrument measures Quire
//! and its peers with the same bytes, and must not change when Quire's codec
//! does. Every frame starts with a lib0 varUint message type:
//!
//! ```text
//! 0 sync       varUint sub-type, then varUint8Array payload
//!              (0 step 1: state vector, 1 step 2: update, 2 update)
//! 1 awareness  varUint8Array awareness update
//! 2 auth       server-specific
//! ```
//!
//! Hocuspocus puts a varString document name before every frame, in both
//! directions; [`crate::target::Framing`] adds and strips it.

/// Message type of sync messages.
pub(crate) const MSG_SYNC: u64 = 0;
/// Message type of auth messages (Hocuspocus: token, authenticated, denied).
pub(crate) const MSG_AUTH: u64 = 2;
pub(crate) const SYNC_STEP_1: u64 = 0;
pub(crate) const SYNC_STEP_2: u64 = 1;
pub(crate) const SYNC_UPDATE: u64 = 2;

/// A v1 state vector with no entries.
pub(crate) const EMPTY_STATE_VECTOR: &[u8] = &[0];
/// A v1 update with no structs and no deletions.
pub(crate) const EMPTY_UPDATE: &[u8] = &[0, 0];

/// Appends `value` as a lib0 varUint.
pub(crate) fn write_var(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Appends a varUint length and the bytes.
pub(crate) fn write_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    write_var(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// Reads lib0 values off a byte slice; `None` when the input ends early.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub(crate) fn var(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(value);
            }
        }
        None
    }

    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.var()?).ok()?;
        let end = self.pos.checked_add(len)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    /// Bytes read so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }
}

/// A message from a server, borrowed from its frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Msg<'a> {
    SyncStep1(&'a [u8]),
    SyncStep2(&'a [u8]),
    Update(&'a [u8]),
    /// Any other message type (awareness, auth, query, server extensions).
    Other(u64),
}

/// Parses one y-websocket message (without any Hocuspocus prefix).
pub(crate) fn parse(body: &[u8]) -> Option<Msg<'_>> {
    let mut cursor = Cursor::new(body);
    let kind = cursor.var()?;
    if kind != MSG_SYNC {
        return Some(Msg::Other(kind));
    }
    let sub = cursor.var()?;
    let payload = cursor.bytes()?;
    match sub {
        SYNC_STEP_1 => Some(Msg::SyncStep1(payload)),
        SYNC_STEP_2 => Some(Msg::SyncStep2(payload)),
        SYNC_UPDATE => Some(Msg::Update(payload)),
        _ => None,
    }
}

fn sync_message(sub: u64, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(payload.len() + 8);
    write_var(&mut buf, MSG_SYNC);
    write_var(&mut buf, sub);
    write_bytes(&mut buf, payload);
    buf
}

pub(crate) fn sync_step1(state_vector: &[u8]) -> Vec<u8> {
    sync_message(SYNC_STEP_1, state_vector)
}

pub(crate) fn sync_step2(update: &[u8]) -> Vec<u8> {
    sync_message(SYNC_STEP_2, update)
}

pub(crate) fn sync_update(update: &[u8]) -> Vec<u8> {
    sync_message(SYNC_UPDATE, update)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for value in [0, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut buf = Vec::new();
            write_var(&mut buf, value);
            assert_eq!(Cursor::new(&buf).var(), Some(value), "{value}");
        }
    }

    #[test]
    fn parses_what_it_writes() {
        assert_eq!(parse(&sync_step1(&[1, 2])), Some(Msg::SyncStep1(&[1, 2])));
        assert_eq!(
            parse(&sync_step2(EMPTY_UPDATE)),
            Some(Msg::SyncStep2(&[0, 0]))
        );
        assert_eq!(parse(&sync_update(&[9])), Some(Msg::Update(&[9])));
        assert_eq!(parse(&[1, 0]), Some(Msg::Other(1)));
        assert_eq!(parse(&[0, 2, 5, 1]), None, "truncated payload");
    }
}
