//! State vectors (`Y.encodeStateVector`) decoded from untrusted bytes.
//!
//! yrs's own decoder trusts the declared entry count; this one bounds it by
//! the bytes present and rejects client ids beyond the 53 bits Yjs uses.

use crate::wire::{Reader, WireError, Writer};
use thiserror::Error;
use yrs::block::ClientID;
use yrs::StateVector;

/// Yjs client ids are JavaScript safe integers.
pub const MAX_CLIENT_ID: u64 = (1 << 53) - 1;

/// Why bytes are not a state vector.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StateVectorError {
    /// The lib0 encoding is malformed, or a clock does not fit in 32 bits.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// More entries than the remaining bytes could hold (two bytes at least
    /// each); refused before allocating for them.
    #[error("declares {declared} entries but only {remaining} bytes remain")]
    TooManyEntries {
        /// Entries the state vector declares.
        declared: u64,
        /// Bytes left after the count.
        remaining: usize,
    },
    /// A client id beyond [`MAX_CLIENT_ID`].
    #[error("client id {0} exceeds 53 bits")]
    ClientIdTooLarge(u64),
}

impl StateVectorError {
    /// Short, stable label for metrics and tests.
    pub fn reason(&self) -> &'static str {
        match self {
            StateVectorError::Wire(e) => e.reason(),
            StateVectorError::TooManyEntries { .. } => "count_too_large",
            StateVectorError::ClientIdTooLarge(_) => "client_id_too_large",
        }
    }
}

/// Decodes `Y.encodeStateVector` bytes from an untrusted peer; a client
/// listed twice keeps its higher clock.
pub fn decode_state_vector(bytes: &[u8]) -> Result<StateVector, StateVectorError> {
    let mut r = Reader::new(bytes);
    let declared = r.read_var_u64("state vector length")?;
    // Each entry takes at least two bytes (client id and clock).
    if declared > (r.remaining() / 2) as u64 {
        return Err(StateVectorError::TooManyEntries {
            declared,
            remaining: r.remaining(),
        });
    }
    let mut sv = StateVector::default();
    for _ in 0..declared {
        let client = r.read_var_u64("state vector client")?;
        if client > MAX_CLIENT_ID {
            return Err(StateVectorError::ClientIdTooLarge(client));
        }
        let clock = r.read_var_u32("state vector clock")?;
        sv.set_max(ClientID::new(client), clock);
    }
    r.finish()?;
    Ok(sv)
}

/// `Y.encodeStateVector` layout, clients in ascending order for stable bytes.
pub fn encode_state_vector(sv: &StateVector) -> Vec<u8> {
    let mut entries: Vec<(u64, u32)> = sv.iter().map(|(c, clock)| (c.get(), *clock)).collect();
    entries.sort_unstable();
    let mut w = Writer::with_capacity(1 + entries.len() * 8);
    w.write_var_u64(entries.len() as u64);
    for (client, clock) in entries {
        w.write_var_u64(client);
        w.write_var_u64(u64::from(clock));
    }
    w.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::encoder::Encode;

    #[test]
    fn agrees_with_yrs_encoding() {
        let mut sv = StateVector::default();
        sv.set_max(ClientID::new(1), 10);
        sv.set_max(ClientID::new(MAX_CLIENT_ID), u32::MAX);
        let ours = encode_state_vector(&sv);
        assert_eq!(decode_state_vector(&ours), Ok(sv.clone()));
        assert_eq!(decode_state_vector(&sv.encode_v1()), Ok(sv));
    }

    #[test]
    fn rejects_hostile_state_vectors() {
        let cases: &[(&[u8], &str)] = &[
            (&[], "message ends early"),
            (&[0xff, 0xff, 0xff, 0xff, 0x0f], "declares"),
            (&[1, 1], "declares"),
            (&[1, 1, 0x80], "ends early"),
            (
                &[1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 1],
                "exceeds 53 bits",
            ),
            (&[1, 1, 0x80, 0x80, 0x80, 0x80, 0x10], "longer than"),
            (&[0, 0], "unexpected bytes"),
        ];
        for (input, needle) in cases {
            let err = decode_state_vector(input).expect_err("hostile");
            assert!(err.to_string().contains(needle), "{input:?}: {err}");
        }
    }
}
