//! The tar (ustar) framing of a backup archive, written and read here.
//!
//! Only what a backup needs: regular files with names under 100 bytes and
//! sizes under 8 GiB (11 octal digits). Each entry is a 512-byte header,
//! its bytes, and zeros up to the next 512; two zero blocks end the
//! archive. Any `tar` lists and extracts it.
//!
//! Written by hand rather than with the `tar` crate because the writer is
//! a stream of `Bytes` (a header, then slices of a snapshot, never a copy),
//! and the reader must say precisely where an archive is cut short.

use std::io::{self, Read};

pub const BLOCK: usize = 512;
/// The largest size 11 octal digits hold.
pub const MAX_SIZE: u64 = 0o777_7777_7777;
/// The end of an archive: two zero blocks.
pub const END: [u8; 2 * BLOCK] = [0; 2 * BLOCK];
const NAME_LEN: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("entry name {0:?} does not fit a ustar header")]
    NameTooLong(String),
    #[error("entry {name:?} of {size} bytes does not fit a ustar header")]
    TooLarge { name: String, size: u64 },
    #[error("the archive is truncated {0}")]
    Truncated(String),
    #[error("damaged tar header at byte {offset}: {reason}")]
    BadHeader { offset: u64, reason: &'static str },
    #[error("cannot read the archive: {0}")]
    Io(#[from] io::Error),
}

/// The ustar header of a regular file.
pub fn header(name: &str, size: u64, mtime_secs: u64) -> Result<[u8; BLOCK], TarError> {
    if name.is_empty() || name.len() >= NAME_LEN || name.contains('\0') {
        return Err(TarError::NameTooLong(name.to_owned()));
    }
    if size > MAX_SIZE {
        return Err(TarError::TooLarge {
            name: name.to_owned(),
            size,
        });
    }
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    put(&mut h[100..108], b"0000644\0");
    put(&mut h[108..116], b"0000000\0");
    put(&mut h[116..124], b"0000000\0");
    put(&mut h[124..136], format!("{size:011o}\0").as_bytes());
    put(
        &mut h[136..148],
        format!("{:011o}\0", mtime_secs.min(MAX_SIZE)).as_bytes(),
    );
    h[156] = b'0';
    put(&mut h[257..263], b"ustar\0");
    put(&mut h[263..265], b"00");
    let sum = checksum(&h);
    put(&mut h[148..156], format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

fn put(field: &mut [u8], value: &[u8]) {
    field.copy_from_slice(value);
}

/// The header checksum: every byte, the checksum field counted as spaces.
fn checksum(h: &[u8; BLOCK]) -> u32 {
    h.iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum()
}

/// Zeros after an entry of `size` bytes, up to the next block.
pub fn padding(size: u64) -> usize {
    (BLOCK - (size % BLOCK as u64) as usize) % BLOCK
}

/// An octal field: digits, then NULs or spaces.
fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c| c == ' ' || c == '\0');
    if digits.is_empty() {
        return None;
    }
    u64::from_str_radix(digits, 8).ok()
}

/// An entry's header, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub size: u64,
}

/// Reads an archive entry by entry, from any `Read`, never more than one
/// entry's bytes at a time.
pub struct Reader<R> {
    inner: R,
    /// Bytes consumed so far, for messages.
    offset: u64,
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader { inner, offset: 0 }
    }

    /// Fills `buf`; false if the input ended before the first byte.
    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<bool, TarError> {
        let mut read = 0;
        while read < buf.len() {
            match self.inner.read(&mut buf[read..]) {
                Ok(0) if read == 0 => return Ok(false),
                Ok(0) => {
                    return Err(TarError::Truncated(format!(
                        "inside {what} (at byte {})",
                        self.offset + read as u64
                    )))
                }
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.offset += read as u64;
        Ok(true)
    }

    /// The next entry's header; None at the end-of-archive marker. An
    /// input that ends without that marker is truncated.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, TarError> {
        let offset = self.offset;
        let mut h = [0u8; BLOCK];
        if !self.fill(&mut h, "a header")? {
            return Err(TarError::Truncated(format!(
                "at byte {offset}: no end-of-archive marker"
            )));
        }
        if h.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let bad = |reason| TarError::BadHeader { offset, reason };
        let stored = octal(&h[148..156]).ok_or(bad("no checksum"))?;
        if u64::from(checksum(&h)) != stored {
            return Err(bad("checksum mismatch"));
        }
        if !matches!(h[156], b'0' | 0) {
            return Err(bad("not a regular file"));
        }
        let name_end = h[..NAME_LEN]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(NAME_LEN);
        let name = std::str::from_utf8(&h[..name_end])
            .map_err(|_| bad("name is not UTF-8"))?
            .to_owned();
        let size = octal(&h[124..136]).ok_or(bad("no size"))?;
        Ok(Some(Entry { name, size }))
    }

    /// The bytes of `entry`, the one [`Reader::next_entry`] just returned.
    pub fn read_body(&mut self, entry: &Entry) -> Result<Vec<u8>, TarError> {
        let what = format!("entry {}", entry.name);
        let mut body = Vec::new();
        // Not preallocated: the size is the archive's word until read.
        let read = (&mut self.inner).take(entry.size).read_to_end(&mut body)?;
        self.offset += read as u64;
        if (read as u64) < entry.size {
            return Err(TarError::Truncated(format!(
                "inside {what} ({read} of {} bytes)",
                entry.size
            )));
        }
        let mut pad = [0u8; BLOCK];
        let pad = &mut pad[..padding(entry.size)];
        if !pad.is_empty() && !self.fill(pad, &what)? {
            return Err(TarError::Truncated(format!("after {what}")));
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, body) in entries {
            out.extend_from_slice(&header(name, body.len() as u64, 1_700_000_000).expect("header"));
            out.extend_from_slice(body);
            out.extend(std::iter::repeat_n(0, padding(body.len() as u64)));
        }
        out.extend_from_slice(&END);
        out
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, TarError> {
        let mut reader = Reader::new(bytes);
        let mut out = Vec::new();
        while let Some(entry) = reader.next_entry()? {
            let body = reader.read_body(&entry)?;
            out.push((entry.name, body));
        }
        Ok(out)
    }

    #[test]
    fn padding_fills_the_last_block() {
        for (size, pad) in [(0, 0), (1, 511), (511, 1), (512, 0), (513, 511), (1024, 0)] {
            assert_eq!(padding(size), pad, "size {size}");
        }
    }

    #[test]
    fn what_is_written_reads_back() {
        let big = vec![7u8; 1300];
        let entries: &[(&str, &[u8])] = &[
            ("docs/00000001.yjs", b"abc"),
            ("docs/00000002.yjs", b""),
            ("docs/00000003.yjs", &big),
            ("manifest.json", b"{}"),
        ];
        let read = read_all(&archive(entries)).expect("reads");
        let expected: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|(n, b)| ((*n).to_owned(), b.to_vec()))
            .collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn headers_are_what_tar_expects() {
        let h = header("docs/00000001.yjs", 0o1234, 0).expect("header");
        assert_eq!(&h[124..136], b"00000001234\0");
        assert_eq!(&h[257..263], b"ustar\0");
        assert_eq!(h[156], b'0');
        assert_eq!(octal(&h[148..156]), Some(u64::from(checksum(&h))));
    }

    #[test]
    fn names_and_sizes_that_do_not_fit_are_refused() {
        assert!(matches!(
            header(&"x".repeat(100), 1, 0),
            Err(TarError::NameTooLong(_))
        ));
        assert!(matches!(header("", 1, 0), Err(TarError::NameTooLong(_))));
        assert!(matches!(
            header("a", MAX_SIZE + 1, 0),
            Err(TarError::TooLarge { .. })
        ));
        assert!(header(&"x".repeat(99), MAX_SIZE, 0).is_ok());
    }

    #[test]
    fn a_cut_or_damaged_archive_is_an_error_saying_where() {
        let whole = archive(&[("a", b"hello"), ("b", &[1u8; 700])]);
        let cases: &[(&str, Vec<u8>, &str)] = &[
            ("empty", Vec::new(), "no end-of-archive marker"),
            ("inside a header", whole[..100].to_vec(), "inside a header"),
            ("inside an entry", whole[..515].to_vec(), "inside entry a"),
            ("inside padding", whole[..600].to_vec(), "inside entry a"),
            (
                "before the end marker",
                whole[..whole.len() - 1024].to_vec(),
                "no end-of-archive marker",
            ),
            (
                "a flipped header byte",
                {
                    let mut bytes = whole.clone();
                    bytes[0] ^= 1;
                    bytes
                },
                "checksum mismatch",
            ),
        ];
        for (case, bytes, expected) in cases {
            let error = read_all(bytes).expect_err(case).to_string();
            assert!(error.contains(expected), "{case}: {error}");
        }
    }
}
