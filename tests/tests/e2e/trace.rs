//! A realistic edit stream: the start of the B4 "automerge-paper" trace,
//! typed through two clients taking turns, must end identical on both
//! clients, on the server, and in a plain replay of the same patches.

use crate::support::{wait_text, Rest};
use anyhow::{ensure, Context, Result};
use quire_client::testing::TestServer;
use quire_client::Client;
use serde::Deserialize;
use std::io::Read;
use std::path::PathBuf;
use yrs::{Doc, OffsetKind, Options, Text, Transact};

/// Transactions replayed: enough for a realistic stream, quick in debug builds.
const TXNS: usize = 2000;
/// Transactions one client types before handing over to the other.
const TURN: usize = 250;

#[derive(Deserialize)]
struct Txn {
    /// `[position, deleted, inserted]`, positions in Unicode code points.
    patches: Vec<(usize, usize, String)>,
}

fn trace_path() -> PathBuf {
    std::env::var_os("QUIRE_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/editing-traces")
        })
        .join("automerge-paper.json.gz")
}

/// Reads the first `count` transactions without parsing the whole trace.
fn load_txns(count: usize) -> Result<Vec<Txn>> {
    let path = trace_path();
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(file).read_to_end(&mut json)?;
    let key = b"\"txns\":";
    let start = json
        .windows(key.len())
        .position(|w| w == key)
        .context("no txns in the trace")?
        + key.len();
    let mut rest = &json[start..];
    let mut txns = Vec::with_capacity(count);
    while txns.len() < count {
        // Skip the `[` or `,` (and whitespace) before the next transaction.
        let skip = rest
            .iter()
            .position(|b| !matches!(b, b'[' | b',' | b' ' | b'\n' | b'\r' | b'\t'))
            .context("trace ends early")?;
        rest = &rest[skip..];
        let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<Txn>();
        let txn = stream.next().context("trace ends early")??;
        rest = &rest[stream.byte_offset()..];
        txns.push(txn);
    }
    Ok(txns)
}

/// `Array.prototype.splice` on code points, as the trace defines it.
fn splice(text: &mut Vec<char>, pos: usize, del: usize, ins: &str) {
    text.splice(pos..pos + del, ins.chars());
}

/// Applies one patch to a client, converting code points to UTF-16 offsets.
fn apply(client: &Client, reference: &[char], pos: usize, del: usize, ins: &str) {
    let utf16 = |chars: &[char]| chars.iter().map(|c| c.len_utf16() as u32).sum::<u32>();
    let at = utf16(&reference[..pos]);
    let len = utf16(&reference[pos..pos + del]);
    let text = client.doc().get_or_insert_text("content");
    let mut txn = client.doc().transact_mut();
    if len > 0 {
        text.remove_range(&mut txn, at, len);
    }
    if !ins.is_empty() {
        text.insert(&mut txn, at, ins);
    }
}

fn utf16_doc() -> Doc {
    Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

#[tokio::test]
async fn two_clients_typing_the_b4_trace_in_turns_end_identical_to_the_server() -> Result<()> {
    let txns = load_txns(TXNS)?;
    let server = TestServer::start().await?;
    let config = |server: &TestServer| server.client_config("paper.tex").ydoc(utf16_doc());
    let alice = Client::connect(config(&server)).await?;
    let bob = Client::connect(config(&server)).await?;
    alice.wait_synced(crate::support::WAIT).await?;
    bob.wait_synced(crate::support::WAIT).await?;

    let mut reference: Vec<char> = Vec::new();
    for (turn, chunk) in txns.chunks(TURN).enumerate() {
        let (typist, other) = if turn % 2 == 0 {
            (&alice, &bob)
        } else {
            (&bob, &alice)
        };
        for txn in chunk {
            // Each patch is one yrs transaction, so one update on the wire.
            for (pos, del, ins) in &txn.patches {
                ensure!(*pos + *del <= reference.len(), "patch outside the text");
                apply(typist, &reference, *pos, *del, ins);
                splice(&mut reference, *pos, *del, ins);
            }
        }
        let expected: String = reference.iter().collect();
        assert_eq!(
            typist.text("content"),
            expected,
            "turn {turn}: typist diverged"
        );
        // The other client must have everything before taking over.
        wait_text(other, "content", &expected).await?;
    }

    let expected: String = reference.iter().collect();
    ensure!(!expected.is_empty(), "replayed nothing");
    Rest::new(&server)
        .wait_text("paper.tex", "content", &expected)
        .await?;
    let late = server.client("paper.tex").await?;
    assert_eq!(late.text("content"), expected);
    Ok(())
}
