//! lib0 binary encoding, the primitives of the y-websocket wire format.
//!
//! Every read checks the remaining input before it allocates or slices, so a
//! declared length can never request more memory than the frame carries.

use thiserror::Error;

/// Why bytes are not valid lib0; `what` names the field being read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The input ends inside a field.
    #[error("message ends early while reading {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// A varint runs past 64 bits, or past 32 where a `u32` is read.
    #[error("varint for {what} is longer than 64 bits")]
    VarintOverflow {
        /// The field being read.
        what: &'static str,
    },
    /// A length prefix claims more bytes than remain; refused before
    /// anything is allocated.
    #[error("{what} declares {declared} bytes but only {remaining} remain")]
    LengthTooLarge {
        /// The field being read.
        what: &'static str,
        /// The length the prefix declares.
        declared: u64,
        /// Bytes left after the prefix.
        remaining: usize,
    },
    /// A string's bytes are not UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
    },
    /// Bytes are left after a complete message: a frame carries exactly one.
    #[error("{count} unexpected bytes after the message")]
    TrailingBytes {
        /// How many bytes are left.
        count: usize,
    },
}

impl WireError {
    /// Short, stable label for metrics and tests.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Truncated { .. } => "truncated",
            WireError::VarintOverflow { .. } => "varint_overflow",
            WireError::LengthTooLarge { .. } => "length_too_large",
            WireError::InvalidUtf8 { .. } => "invalid_utf8",
            WireError::TrailingBytes { .. } => "trailing_bytes",
        }
    }
}

/// A cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the first byte of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet read: the most a declared length may claim.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes consumed so far, for error messages that point into the input.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Fails unless every byte was consumed: a frame carries exactly one message.
    pub fn finish(&self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(WireError::TrailingBytes { count }),
        }
    }

    /// One raw byte (lib0 `readUint8`).
    pub fn read_u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        let byte = *self
            .buf
            .get(self.pos)
            .ok_or(WireError::Truncated { what })?;
        self.pos += 1;
        Ok(byte)
    }

    /// Exactly `len` bytes (lib0 fixed-width numbers).
    pub fn read_exact(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if len > self.remaining() {
            return Err(WireError::Truncated { what });
        }
        let start = self.pos;
        self.pos += len;
        Ok(&self.buf[start..self.pos])
    }

    /// lib0 `readVarUint`: 7 bits per byte, little end first, high bit continues.
    pub fn read_var_u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let byte = self.read_u8(what)?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(WireError::VarintOverflow { what });
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
            if shift > 63 {
                return Err(WireError::VarintOverflow { what });
            }
        }
    }

    /// A varint that must fit in 32 bits (clocks, message tags).
    pub fn read_var_u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let value = self.read_var_u64(what)?;
        u32::try_from(value).map_err(|_| WireError::VarintOverflow { what })
    }

    /// lib0 `readVarUint8Array`: a varint length, then that many bytes.
    pub fn read_var_bytes(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let declared = self.read_var_u64(what)?;
        let remaining = self.remaining();
        if declared > remaining as u64 {
            return Err(WireError::LengthTooLarge {
                what,
                declared,
                remaining,
            });
        }
        let start = self.pos;
        self.pos += declared as usize;
        Ok(&self.buf[start..self.pos])
    }

    /// lib0 `readVarString`: UTF-8 bytes with a varint length.
    pub fn read_var_string(&mut self, what: &'static str) -> Result<&'a str, WireError> {
        let bytes = self.read_var_bytes(what)?;
        std::str::from_utf8(bytes).map_err(|_| WireError::InvalidUtf8 { what })
    }
}

/// lib0 encoder into a growable buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer; `capacity` sizes the first allocation, the buffer
    /// still grows past it.
    pub fn with_capacity(capacity: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// lib0 `writeVarUint`: 7 bits per byte, little end first.
    pub fn write_var_u64(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.buf.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        self.buf.push(value as u8);
    }

    /// lib0 `writeVarUint8Array`: a varint length, then the bytes.
    pub fn write_var_bytes(&mut self, bytes: &[u8]) {
        self.write_var_u64(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
    }

    /// lib0 `writeVarString`: the UTF-8 bytes with a varint length.
    pub fn write_var_string(&mut self, s: &str) {
        self.write_var_bytes(s.as_bytes());
    }

    /// The bytes written so far.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: u64) -> Vec<u8> {
        let mut w = Writer::default();
        w.write_var_u64(value);
        w.into_inner()
    }

    #[test]
    fn varints_round_trip_at_every_width() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let bytes = encode(value);
            let mut r = Reader::new(&bytes);
            assert_eq!(r.read_var_u64("v"), Ok(value));
            assert!(r.finish().is_ok());
        }
    }

    #[test]
    fn malformed_varints_are_errors() {
        let cases: &[(&[u8], WireError)] = &[
            (&[], WireError::Truncated { what: "v" }),
            (&[0x80], WireError::Truncated { what: "v" }),
            (&[0xff, 0xff], WireError::Truncated { what: "v" }),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                WireError::VarintOverflow { what: "v" },
            ),
            (
                &[
                    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
                ],
                WireError::VarintOverflow { what: "v" },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                Reader::new(input).read_var_u64("v").as_ref(),
                Err(expected),
                "{input:?}"
            );
        }
    }

    #[test]
    fn declared_lengths_are_checked_before_slicing() {
        // Claims 2^40 bytes, carries 3.
        let mut bytes = encode(1 << 40);
        bytes.extend_from_slice(b"abc");
        let err = Reader::new(&bytes).read_var_bytes("payload").unwrap_err();
        assert_eq!(
            err,
            WireError::LengthTooLarge {
                what: "payload",
                declared: 1 << 40,
                remaining: 3
            }
        );
    }

    #[test]
    fn strings_must_be_utf8() {
        let mut w = Writer::default();
        w.write_var_bytes(&[0xff, 0xfe]);
        let bytes = w.into_inner();
        assert_eq!(
            Reader::new(&bytes).read_var_string("s"),
            Err(WireError::InvalidUtf8 { what: "s" })
        );
    }
}
