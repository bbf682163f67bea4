//! Real editing traces (`josephg/editing-traces`, sequential format; the
//! ones used are copied in `tests/data/editing-traces`) replayed into a yrs
//! document, the way the crdt-benchmarks suite builds its "B4" document: one
//! transaction per trace transaction on a `Y.Text`.

use anyhow::{bail, ensure, Context, Result};
use flate2::read::GzDecoder;
use serde::Deserialize;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, OffsetKind, Options, ReadTxn, StateVector, Text, Transact, Update};

/// The root the trace is replayed into.
pub(crate) const ROOT: &str = "text";

#[derive(Deserialize)]
struct Trace {
    #[serde(default)]
    kind: Option<String>,
    #[serde(rename = "startContent", default)]
    start_content: String,
    #[serde(rename = "endContent")]
    end_content: String,
    txns: Vec<Txn>,
}

#[derive(Deserialize)]
struct Txn {
    /// `[position, deleted, inserted]`, positions in Unicode code points.
    patches: Vec<(u32, u32, String)>,
}

/// A replayed trace: the document as one v1 update, and its text.
pub(crate) struct Replayed {
    pub update: Vec<u8>,
    pub text: String,
    pub transactions: usize,
    pub replay_time: Duration,
}

/// Replays the first `limit` transactions (all when `None`) of the trace
/// at `path` (`.json` or `.json.gz`). A full replay must end at the trace's
/// `endContent`.
pub(crate) fn replay(path: &Path, limit: Option<usize>) -> Result<Replayed> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let json = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..]).read_to_end(&mut out)?;
        out
    } else {
        raw
    };
    let trace: Trace = serde_json::from_slice(&json).context("parsing the trace")?;
    if trace.kind.as_deref() == Some("concurrent") {
        bail!("concurrent traces are not supported; use a sequential one (automerge-paper)");
    }
    let started = Instant::now();
    // Positions are code points; UTF-16 offsets equal them for text in the
    // Basic Multilingual Plane, and the end check catches any other text.
    let doc = Doc::with_options(Options {
        client_id: yrs::block::ClientID::new(1),
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    });
    let text = doc.get_or_insert_text(ROOT);
    if !trace.start_content.is_empty() {
        text.insert(&mut doc.transact_mut(), 0, &trace.start_content);
    }
    let count = limit.unwrap_or(usize::MAX).min(trace.txns.len());
    for txn in &trace.txns[..count] {
        let mut t = doc.transact_mut();
        for (pos, del, ins) in &txn.patches {
            if *del > 0 {
                text.remove_range(&mut t, *pos, *del);
            }
            if !ins.is_empty() {
                text.insert(&mut t, *pos, ins);
            }
        }
    }
    let replay_time = started.elapsed();
    let txn = doc.transact();
    let content = text.get_string(&txn);
    if count == trace.txns.len() {
        ensure!(
            content == trace.end_content,
            "replay did not reach endContent ({} vs {} chars)",
            content.chars().count(),
            trace.end_content.chars().count()
        );
    }
    Ok(Replayed {
        update: txn.encode_state_as_update_v1(&StateVector::default()),
        text: content,
        transactions: count,
        replay_time,
    })
}

/// What yrs itself needs for an update: decoding it, and decoding plus
/// integrating it into a fresh document (crdt-benchmarks' "parse time"),
/// and encoding the loaded document again (what a server answering sync
/// step 1 from an empty client does on top).
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct YrsCost {
    pub decode_ms: f64,
    pub decode_apply_ms: f64,
    pub encode_ms: f64,
}

/// Medians over `runs` repetitions.
pub(crate) fn yrs_cost(update: &[u8], runs: usize) -> Result<YrsCost> {
    let mut decode = Vec::new();
    let mut apply = Vec::new();
    let mut encode = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let parsed = Update::decode_v1(update)?;
        decode.push(t.elapsed());
        drop(parsed);

        let t = Instant::now();
        let doc = Doc::new();
        doc.transact_mut()
            .apply_update(Update::decode_v1(update)?)?;
        apply.push(t.elapsed());

        let t = Instant::now();
        let encoded = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        encode.push(t.elapsed());
        ensure!(!encoded.is_empty());
    }
    Ok(YrsCost {
        decode_ms: median_ms(decode),
        decode_apply_ms: median_ms(apply),
        encode_ms: median_ms(encode),
    })
}

/// The text of root [`ROOT`] after applying `update` to a fresh document.
pub(crate) fn text_of(update: &[u8]) -> Result<String> {
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(update)?)?;
    let text = doc.get_or_insert_text(ROOT);
    let txn = doc.transact();
    Ok(text.get_string(&txn))
}

pub(crate) fn median_ms(mut times: Vec<Duration>) -> f64 {
    times.sort_unstable();
    let mid = times.get(times.len() / 2).copied().unwrap_or_default();
    (mid.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_a_small_sequential_trace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        std::fs::write(
            &path,
            r#"{"startContent":"","endContent":"hallo!","txns":[
                {"patches":[[0,0,"hello"]]},
                {"patches":[[1,1,"a"],[5,0,"!"]]}]}"#,
        )
        .unwrap();
        let replayed = replay(&path, None).unwrap();
        assert_eq!(replayed.text, "hallo!");
        assert_eq!(replayed.transactions, 2);
        assert_eq!(text_of(&replayed.update).unwrap(), "hallo!");
        assert_eq!(replay(&path, Some(1)).unwrap().text, "hello");
        let cost = yrs_cost(&replayed.update, 3).unwrap();
        assert!(cost.decode_apply_ms >= 0.0);

        std::fs::write(&path, r#"{"endContent":"x","txns":[]}"#).unwrap();
        assert!(replay(&path, None).is_err(), "end content not reached");
    }
}
