//! What versions cost on the B4 "automerge-paper" trace: the size of a
//! version, rebuilding and exporting an old one, taking one (the actor's
//! part of recording it), and a restore.
//!
//! The trace is read uncompressed (the repository keeps it gzipped):
//!
//! ```sh
//! gunzip -c tests/data/editing-traces/automerge-paper.json.gz > target/tmp/b4.json
//! cargo run --release -p crdt-core --example history_cost -- target/tmp/b4.json [DIR]
//! ```
//!
//! With `DIR`, the states half way and at the end are written there
//! (`b4-half.bin`, `b4-final.bin`), to replay through a server.

use crdt_core::history::{document_at, restore_update_v1, snapshot_v1, text_diff};
use crdt_core::Document;
use std::time::{Duration, Instant};
use yrs::{Doc, OffsetKind, Options, ReadTxn, StateVector, Text, Transact};

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let started = Instant::now();
        last = Some(f());
        times.push(started.elapsed());
    }
    (median(times), last.expect("runs > 0"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: history_cost B4.json")?;
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let txns = trace["txns"].as_array().ok_or("no txns")?;
    let client = Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        skip_gc: true,
        ..Options::default()
    });
    let text = client.get_or_insert_text("text");
    let mut live = Document::new();
    let half = txns.len() / 2;
    let mut half_snapshot = Vec::new();
    let mut half_text = String::new();
    for (i, txn) in txns.iter().enumerate() {
        let mut t = client.transact_mut();
        for patch in txn["patches"].as_array().ok_or("no patches")? {
            let pos = patch[0].as_u64().ok_or("pos")? as u32;
            let del = patch[1].as_u64().ok_or("del")? as u32;
            let ins = patch[2].as_str().ok_or("ins")?;
            if del > 0 {
                text.remove_range(&mut t, pos, del);
            }
            if !ins.is_empty() {
                text.insert(&mut t, pos, ins);
            }
        }
        let update = t.encode_update_v1();
        drop(t);
        live.apply_update_v1(&update)?;
        if i + 1 == half {
            if let Some(dir) = std::env::args().nth(2) {
                // For measuring through the server: the state half way.
                std::fs::write(format!("{dir}/b4-half.bin"), live.encode_state_v1())?;
            }
            half_snapshot = snapshot_v1(&live);
            half_text = live.root_text("text").unwrap_or_default();
        }
    }
    let state = client
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    if let Some(dir) = std::env::args().nth(2) {
        std::fs::write(format!("{dir}/b4-final.bin"), live.encode_state_v1())?;
    }
    println!(
        "B4: {} transactions, final text {} chars, document {} bytes (v1)",
        txns.len(),
        live.root_text("text").unwrap_or_default().chars().count(),
        state.len()
    );
    let (take, snapshot) = time(21, || snapshot_v1(&live));
    println!(
        "version of the final document: {} bytes; taking it (the actor's part of recording): {:?}",
        snapshot.len(),
        take
    );
    println!("version at half the trace: {} bytes", half_snapshot.len());
    let (rebuild, past) = time(5, || document_at(&live, &half_snapshot));
    let past = past?;
    assert_eq!(past.root_text("text").unwrap_or_default(), half_text);
    println!("rebuild the half-way version: {rebuild:?}");
    let (text_export, _) = time(5, || past.root_text("text"));
    let (json_export, _) = time(5, || past.to_json());
    let (yjs_export, bytes) = time(5, || past.encode_state_v1());
    println!(
        "export it: text {text_export:?}, json {json_export:?}, yjs {yjs_export:?} ({} bytes)",
        bytes.len()
    );
    let now = live.root_text("text").unwrap_or_default();
    let (diff, runs) = time(3, || text_diff(&half_text, &now));
    println!("diff half-way -> final: {diff:?}, {} runs", runs.len());
    let (restore, update) = time(3, || restore_update_v1(&live, &past));
    let update = update?.ok_or("nothing to restore")?;
    println!(
        "restore update to the half-way version: {restore:?}, {} bytes",
        update.len()
    );
    let (apply, applied) = time(1, || live.apply_update_v1(&update));
    println!("applying it as a client's update (validated): {apply:?}, {applied:?}");
    applied?;
    assert_eq!(live.root_text("text").unwrap_or_default(), half_text);
    println!("restored text equals the half-way text");
    Ok(())
}
