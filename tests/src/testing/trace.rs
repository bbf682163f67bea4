//! The B4 "automerge-paper" editing trace (`tests/data/editing-traces`,
//! origin, licence and format in its README): real keystrokes to replay
//! through clients.

use crate::Client;
use serde::Deserialize;
use std::io::{self, Read};
use std::path::PathBuf;
use yrs::{Doc, OffsetKind, Options, Text, Transact};

#[derive(Debug, Deserialize)]
pub struct Txn {
    /// `[position, deleted, inserted]`, positions in Unicode code points.
    pub patches: Vec<(usize, usize, String)>,
}

/// `QUIRE_TRACES`, or the copy in the repository (`tests/data/editing-traces`),
/// so that a clone with nothing beside it runs the tests.
fn trace_path() -> PathBuf {
    std::env::var_os("QUIRE_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/editing-traces"))
        .join("automerge-paper.json.gz")
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Reads the first `count` transactions without parsing the whole trace.
pub fn load_txns(count: usize) -> io::Result<Vec<Txn>> {
    let path = trace_path();
    let file = std::fs::File::open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(file).read_to_end(&mut json)?;
    let key = b"\"txns\":";
    let start = json
        .windows(key.len())
        .position(|w| w == key)
        .ok_or_else(|| invalid("no txns in the trace"))?
        + key.len();
    let mut rest = &json[start..];
    let mut txns = Vec::with_capacity(count);
    while txns.len() < count {
        // Skip the `[` or `,` (and whitespace) before the next transaction.
        let skip = rest
            .iter()
            .position(|b| !matches!(b, b'[' | b',' | b' ' | b'\n' | b'\r' | b'\t'))
            .ok_or_else(|| invalid("trace ends early"))?;
        rest = &rest[skip..];
        let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<Txn>();
        let txn = stream
            .next()
            .ok_or_else(|| invalid("trace ends early"))?
            .map_err(|e| invalid(e.to_string()))?;
        rest = &rest[stream.byte_offset()..];
        txns.push(txn);
    }
    Ok(txns)
}

/// A document whose text offsets are UTF-16 units, as in Yjs.
pub fn utf16_doc() -> Doc {
    Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

/// Types one transaction of the trace through `client` into text `root`,
/// each patch one yrs transaction (one update on the wire), and applies it
/// to `reference` (code points) too.
pub fn replay(client: &Client, root: &str, reference: &mut Vec<char>, txn: &Txn) -> io::Result<()> {
    let utf16 = |chars: &[char]| chars.iter().map(|c| c.len_utf16() as u32).sum::<u32>();
    for (pos, del, ins) in &txn.patches {
        let (pos, del) = (*pos, *del);
        if pos + del > reference.len() {
            return Err(invalid("patch outside the text"));
        }
        let at = utf16(&reference[..pos]);
        let len = utf16(&reference[pos..pos + del]);
        let text = client.doc().get_or_insert_text(root);
        let mut txn = client.doc().transact_mut();
        if len > 0 {
            text.remove_range(&mut txn, at, len);
        }
        if !ins.is_empty() {
            text.insert(&mut txn, at, ins);
        }
        drop(txn);
        reference.splice(pos..pos + del, ins.chars());
    }
    Ok(())
}
