//! Regression corpus of hostile inputs, in `tests/hostile/`.
//!
//! Each file is named after what it is fed to first:
//!
//! | prefix        | fed to                                                   |
//! |---------------|----------------------------------------------------------|
//! | `update-`     | `Document::apply_update_v1`, `decode_update_v1`, and as a sync update frame |
//! | `frame-`      | `Message::decode`, then dispatched the way the server does |
//! | `awareness-`  | `AwarenessUpdate::decode`, and as an awareness frame     |
//! | `sv-`         | `decode_state_vector`, and as a sync step 1 frame        |
//!
//! `EXPECTED` lists the reason each must be rejected with. Every file is
//! also fed to every other decoder, which must not crash. Files are written
//! by the recipes below: `QUIRE_WRITE_CORPUS=1 cargo test -p crdt-core
//! --test hostile_inputs regenerate` rewrites them, and `corpus_matches_its_recipes`
//! fails when they drift apart.

use crdt_core::protocol::encode_update;
use crdt_core::state_vector::decode_state_vector;
use crdt_core::{AwarenessTable, AwarenessUpdate, Document, Message};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use yrs::types::xml::XmlFragment;
use yrs::{Array, Doc, Map, ReadTxn, StateVector, Text, Transact, XmlElementPrelim, XmlTextPrelim};

#[path = "support/enc.rs"]
mod enc;
use enc::Enc;

/// One update of one item under root "t" with `content` (after the info byte).
fn item(info: u8, content: Enc) -> Vec<u8> {
    Enc::default()
        .var(1)
        .section(1, 1, 0)
        .root_item(info, "t")
        .raw(&content.0)
        .var(0)
        .done()
}

fn nested(open: &[u8], depth: usize, leaf: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(open.len() * depth + 1);
    for _ in 0..depth {
        v.extend_from_slice(open);
    }
    v.push(leaf);
    v
}

/// A chain of `depth` maps, each under key "k" of the previous, in one update.
fn nested_types(depth: u64) -> Vec<u8> {
    let mut e = Enc::default().var(1).section(depth, 1, 0);
    for level in 0..depth {
        // Type content, with a key.
        e = e.u8(7 | 0x20);
        e = if level == 0 {
            e.var(1).str("m")
        } else {
            e.var(0).var(1).var(level - 1)
        };
        e = e.str("k").u8(1);
    }
    e.var(0).done()
}

fn awareness_entry(client: u64, clock: u64, state: &[u8]) -> Vec<u8> {
    Enc::default()
        .var(1)
        .var(client)
        .var(clock)
        .bytes(state)
        .done()
}

struct Recipe {
    file: &'static str,
    bytes: Vec<u8>,
    reason: &'static str,
}

fn recipe(file: &'static str, reason: &'static str, bytes: Vec<u8>) -> Recipe {
    Recipe {
        file,
        bytes,
        reason,
    }
}

fn recipes() -> Vec<Recipe> {
    let u32max = u64::from(u32::MAX);
    let deep_any = item(
        8,
        Enc::default().var(1).raw(&nested(&[117, 1], 20_000, 126)),
    );
    vec![
        // Stack: nesting that yrs decodes by recursion.
        recipe("update-deep-any-arrays.bin", "too_deep", deep_any.clone()),
        recipe(
            "update-deep-any-maps.bin",
            "too_deep",
            item(
                8,
                Enc::default().var(1).raw(&nested(&[118, 1, 0], 5_000, 126)),
            ),
        ),
        recipe(
            "update-deep-subdoc-options.bin",
            "too_deep",
            item(
                9,
                Enc::default()
                    .str("guid")
                    .raw(&nested(&[117, 1], 5_000, 126)),
            ),
        ),
        recipe(
            "update-deep-json-embed.bin",
            "too_deep",
            item(5, Enc::default().str(&"[".repeat(2_000))),
        ),
        recipe(
            "update-deep-json-format.bin",
            "too_deep",
            item(
                6,
                Enc::default().str("bold").str(&format!(
                    "{}0{}",
                    "{\"a\":".repeat(100),
                    "}".repeat(100)
                )),
            ),
        ),
        recipe(
            "update-deep-types.bin",
            "types_too_deep",
            nested_types(2_000),
        ),
        // Memory: declared sizes no input could back.
        recipe(
            "update-huge-client-count.bin",
            "count_too_large",
            Enc::default().var(u32max).var(0).done(),
        ),
        recipe(
            "update-huge-struct-count.bin",
            "count_too_large",
            Enc::default()
                .var(1)
                .section(u32max - 1, 1, 0)
                .var(0)
                .done(),
        ),
        recipe(
            "update-huge-string.bin",
            "length_too_large",
            item(4, Enc::default().var(u32max).raw(b"abc")),
        ),
        recipe(
            "update-huge-binary.bin",
            "length_too_large",
            item(3, Enc::default().var(1 << 31).raw(b"abc")),
        ),
        recipe(
            "update-huge-root-name.bin",
            "length_too_large",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .u8(4)
                .var(1)
                .var(u32max)
                .done(),
        ),
        recipe(
            "update-huge-any-count.bin",
            "count_too_large",
            item(8, Enc::default().var(u32max)),
        ),
        recipe(
            "update-huge-any-array.bin",
            "count_too_large",
            item(8, Enc::default().var(1).u8(117).var(1 << 60)),
        ),
        recipe(
            "update-huge-any-map.bin",
            "count_too_large",
            item(8, Enc::default().var(1).u8(118).var(1 << 40)),
        ),
        recipe(
            "update-huge-any-buffer.bin",
            "length_too_large",
            item(8, Enc::default().var(1).u8(116).var(u32max)),
        ),
        recipe(
            "update-huge-delete-set-clients.bin",
            "count_too_large",
            Enc::default().var(0).var(u32max).done(),
        ),
        recipe(
            "update-huge-delete-ranges.bin",
            "count_too_large",
            Enc::default().var(0).var(1).var(1).var(u32max).done(),
        ),
        // Clocks: arithmetic that wraps or overflows in yrs.
        recipe(
            "update-clock-wrap-string.bin",
            "clock_overflow",
            Enc::default()
                .var(1)
                .section(1, 1, u32max - 5)
                .root_item(4, "t")
                .str("a long string that wraps the clock")
                .var(0)
                .done(),
        ),
        recipe(
            "update-clock-wrap-deleted.bin",
            "clock_overflow",
            Enc::default()
                .var(1)
                .section(2, 1, 1)
                .root_item(1, "t")
                .var(u32max)
                .root_item(4, "t")
                .str("x")
                .var(0)
                .done(),
        ),
        recipe(
            "update-clock-wrap-gc.bin",
            "clock_overflow",
            Enc::default()
                .var(1)
                .section(2, 1, 7)
                .u8(0)
                .var(u32max - 3)
                .u8(10)
                .var(9)
                .var(0)
                .done(),
        ),
        recipe(
            "update-clock-wrap-delete-range.bin",
            "clock_overflow",
            Enc::default()
                .var(0)
                .var(1)
                .var(1)
                .var(1)
                .var(u32max)
                .var(2)
                .done(),
        ),
        recipe(
            "update-clock-past-i32.bin",
            "clock_overflow",
            Enc::default()
                .var(1)
                .section(1, 1, 1 << 31)
                .root_item(4, "t")
                .str("x")
                .var(0)
                .done(),
        ),
        recipe(
            "update-clock-beyond-u32.bin",
            "varint_overflow",
            Enc::default().var(1).section(1, 1, 1 << 33).done(),
        ),
        // Client ids beyond JavaScript's safe integers.
        recipe(
            "update-client-54-bits.bin",
            "client_id_too_large",
            Enc::default()
                .var(1)
                .section(1, 1 << 53, 0)
                .root_item(4, "t")
                .str("x")
                .var(0)
                .done(),
        ),
        recipe(
            "update-origin-client-64-bits.bin",
            "client_id_too_large",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .u8(0x84)
                .var(u64::MAX)
                .var(0)
                .str("x")
                .var(0)
                .done(),
        ),
        recipe(
            "update-delete-set-client-64-bits.bin",
            "client_id_too_large",
            Enc::default()
                .var(0)
                .var(1)
                .var(u64::MAX)
                .var(1)
                .var(0)
                .var(1)
                .done(),
        ),
        // Tags yrs does not know, or decodes into something it cannot reload.
        recipe(
            "update-content-ref-11.bin",
            "unknown_content",
            item(11, Enc::default().var(1)),
        ),
        recipe(
            "update-content-ref-17.bin",
            "unknown_content",
            item(17, Enc::default().var(3)),
        ),
        recipe(
            "update-gc-with-flags.bin",
            "unknown_content",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .u8(0x20)
                .var(1)
                .var(0)
                .done(),
        ),
        recipe(
            "update-legacy-json-content.bin",
            "json_content",
            item(2, Enc::default().var(1).str("1").str("2")),
        ),
        recipe(
            "update-weak-link-type.bin",
            "unknown_type_ref",
            item(7, Enc::default().u8(7).u8(0).var(1).var(0)),
        ),
        recipe(
            "update-type-ref-8.bin",
            "unknown_type_ref",
            item(7, Enc::default().u8(8)),
        ),
        recipe(
            "update-any-tag-115.bin",
            "unknown_value_tag",
            item(8, Enc::default().var(1).u8(115)),
        ),
        recipe(
            "update-int-11-bytes.bin",
            "integer_overflow",
            item(8, Enc::default().var(1).u8(125).raw(&[0xff; 10]).u8(0)),
        ),
        recipe(
            "update-int-i64-min.bin",
            "integer_overflow",
            item(
                8,
                Enc::default()
                    .var(1)
                    .u8(125)
                    .raw(&[0xc0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x04]),
            ),
        ),
        recipe(
            "update-parent-info-2.bin",
            "invalid_parent_info",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .u8(4)
                .var(2)
                .str("x")
                .var(0)
                .done(),
        ),
        recipe(
            "update-empty-gc.bin",
            "empty_struct",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .u8(0)
                .var(0)
                .var(0)
                .done(),
        ),
        recipe(
            "update-invalid-utf8.bin",
            "invalid_utf8",
            item(4, Enc::default().bytes(&[0xf0, 0x28, 0x8c, 0x28])),
        ),
        recipe(
            "update-duplicate-client.bin",
            "duplicate_client",
            Enc::default()
                .var(2)
                .section(1, 5, 0)
                .root_item(4, "t")
                .str("ab")
                .section(1, 5, 1)
                .root_item(4, "t")
                .str("c")
                .var(0)
                .done(),
        ),
        recipe(
            "update-trailing-bytes.bin",
            "trailing_bytes",
            Enc::default().var(0).var(0).raw(b"extra").done(),
        ),
        recipe("update-truncated.bin", "truncated", deep_any[..6].to_vec()),
        // Frames: the envelope decodes, what it carries does not.
        recipe(
            "frame-update-deep-any.bin",
            "too_deep",
            encode_update(&item(
                8,
                Enc::default().var(1).raw(&nested(&[117, 1], 10_000, 126)),
            )),
        ),
        recipe(
            "frame-huge-payload.bin",
            "length_too_large",
            Enc::default().var(0).var(2).var(1 << 40).raw(b"x").done(),
        ),
        recipe(
            "frame-step1-huge-state-vector.bin",
            "bad_state_vector",
            Enc::default()
                .var(0)
                .var(0)
                .bytes(&Enc::default().var(u32max).var(1).var(1).done())
                .done(),
        ),
        recipe(
            "frame-awareness-deep-json.bin",
            "invalid_json",
            crdt_core::protocol::encode_awareness(&awareness_entry(
                1,
                1,
                "[".repeat(10_000).as_bytes(),
            )),
        ),
        recipe(
            "frame-message-type-beyond-64-bits.bin",
            "varint_overflow",
            vec![0xff; 11],
        ),
        // Awareness updates.
        recipe(
            "awareness-huge-count.bin",
            "count_too_large",
            Enc::default().var(u64::MAX).done(),
        ),
        recipe(
            "awareness-client-64-bits.bin",
            "client_id_too_large",
            awareness_entry(u64::MAX, 1, b"{}"),
        ),
        recipe(
            "awareness-clock-beyond-u32.bin",
            "varint_overflow",
            awareness_entry(1, 1 << 40, b"{}"),
        ),
        recipe(
            "awareness-deep-json.bin",
            "invalid_json",
            awareness_entry(
                1,
                1,
                format!("{}{}", "[".repeat(200), "]".repeat(200)).as_bytes(),
            ),
        ),
        recipe(
            "awareness-huge-state.bin",
            "length_too_large",
            Enc::default()
                .var(1)
                .var(1)
                .var(1)
                .var(1 << 31)
                .raw(b"{}")
                .done(),
        ),
        recipe(
            "awareness-invalid-utf8.bin",
            "invalid_utf8",
            awareness_entry(1, 1, &[b'"', 0xff, b'"']),
        ),
        // State vectors.
        recipe(
            "sv-huge-count.bin",
            "count_too_large",
            Enc::default().var(u32max).var(1).var(1).done(),
        ),
        recipe(
            "sv-client-54-bits.bin",
            "client_id_too_large",
            Enc::default().var(1).var(1 << 53).var(1).done(),
        ),
        recipe(
            "sv-clock-beyond-u32.bin",
            "varint_overflow",
            Enc::default().var(1).var(1).var(1 << 32).done(),
        ),
        recipe(
            "sv-trailing-bytes.bin",
            "trailing_bytes",
            Enc::default().var(1).var(1).var(1).u8(0).done(),
        ),
    ]
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile")
}

/// The `EXPECTED` manifest: file name and reason per line.
fn manifest(recipes: &[Recipe]) -> String {
    let mut out = String::from(
        "# file reason: every file in this directory and the reason it is rejected with.\n\
         # Written by tests/hostile_inputs.rs (cargo test -p crdt-core --test hostile_inputs -- --ignored regenerate).\n",
    );
    for r in recipes {
        out.push_str(&format!("{} {}\n", r.file, r.reason));
    }
    out
}

fn read_corpus() -> BTreeMap<String, (Vec<u8>, String)> {
    let dir = corpus_dir();
    let expected = std::fs::read_to_string(dir.join("EXPECTED")).expect("tests/hostile/EXPECTED");
    let mut corpus = BTreeMap::new();
    for line in expected
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (file, reason) = line.split_once(' ').expect("file reason");
        let bytes = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        corpus.insert(file.to_owned(), (bytes, reason.to_owned()));
    }
    corpus
}

/// Rewrites `tests/hostile/` from the recipes when asked:
/// `QUIRE_WRITE_CORPUS=1 cargo test -p crdt-core --test hostile_inputs regenerate`.
#[test]
fn regenerate() {
    if std::env::var_os("QUIRE_WRITE_CORPUS").is_none() {
        return;
    }
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).expect("mkdir");
    for entry in std::fs::read_dir(&dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "bin") {
            std::fs::remove_file(path).expect("remove");
        }
    }
    let recipes = recipes();
    for r in &recipes {
        std::fs::write(dir.join(r.file), &r.bytes).expect("write");
    }
    std::fs::write(dir.join("EXPECTED"), manifest(&recipes)).expect("write");
}

#[test]
fn corpus_matches_its_recipes() {
    let recipes = recipes();
    let corpus = read_corpus();
    let total: usize = corpus.values().map(|(b, _)| b.len()).sum();
    assert!(total < 200 * 1024, "corpus is {total} bytes");
    assert_eq!(
        corpus.len(),
        recipes.len(),
        "EXPECTED lists other files than the recipes; run `QUIRE_WRITE_CORPUS=1 cargo test -p crdt-core --test hostile_inputs regenerate`"
    );
    for r in &recipes {
        let (bytes, reason) = corpus
            .get(r.file)
            .unwrap_or_else(|| panic!("{} missing; run `QUIRE_WRITE_CORPUS=1 cargo test -p crdt-core --test hostile_inputs regenerate`", r.file));
        assert!(bytes == &r.bytes, "{} differs from its recipe", r.file);
        assert_eq!(reason, r.reason, "{}", r.file);
    }
}

/// A document with some of everything, as a server would hold.
fn seeded() -> Document {
    let doc = Doc::with_client_id(42);
    // Roots first: each takes its own transaction.
    let (text, map, array) = (
        doc.get_or_insert_text("t"),
        doc.get_or_insert_map("m"),
        doc.get_or_insert_array("a"),
    );
    let xml = doc.get_or_insert_xml_fragment("prosemirror");
    {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "hello");
        map.insert(&mut txn, "k", 1);
        array.push_back(&mut txn, "x");
        let p = xml.push_back(&mut txn, XmlElementPrelim::empty("p"));
        p.push_back(&mut txn, XmlTextPrelim::new("rich"));
    }
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    Document::load(Some(&update), []).expect("seed")
}

/// What the server does with one frame; returns the reason it was refused.
fn dispatch(doc: &mut Document, awareness: &mut AwarenessTable, frame: &[u8]) -> Option<String> {
    let message = match Message::decode(frame) {
        Ok(message) => message,
        Err(e) => return Some(e.reason().to_owned()),
    };
    match message {
        Message::SyncStep1(sv) => {
            doc.diff_v1(&sv);
            None
        }
        Message::SyncStep2(update) | Message::Update(update) => doc
            .apply_update_v1(update)
            .err()
            .map(|e| e.reason().to_owned()),
        Message::Awareness(bytes) => match AwarenessUpdate::decode(bytes) {
            Ok(update) => {
                awareness.apply(update);
                None
            }
            Err(e) => Some(e.reason().to_owned()),
        },
        Message::AuthDenied(_) | Message::QueryAwareness => None,
    }
}

/// Feeds `bytes` to every decoder; returns each one's verdict, and checks
/// that the document did not change whenever the update was refused.
fn feed_everywhere(doc: &mut Document, bytes: &[u8]) -> BTreeMap<&'static str, Option<String>> {
    let before = (doc.encode_state_v1(), doc.to_json());
    let mut verdicts = BTreeMap::new();
    let applied = doc.apply_update_v1(bytes);
    if let Err(e) = &applied {
        assert_ne!(e.reason(), "poisoned");
        assert_eq!((doc.encode_state_v1(), doc.to_json()), before, "{e}");
    }
    verdicts.insert("update", applied.err().map(|e| e.reason().to_owned()));
    verdicts.insert(
        "decode_update_v1",
        crdt_core::decode_update_v1(bytes)
            .err()
            .map(|e| e.reason().to_owned()),
    );
    let mut awareness = AwarenessTable::default();
    let before = (doc.encode_state_v1(), doc.to_json());
    let refused = dispatch(doc, &mut awareness, bytes);
    if refused.is_some() {
        assert_eq!((doc.encode_state_v1(), doc.to_json()), before);
    }
    verdicts.insert("frame", refused);
    verdicts.insert(
        "awareness",
        AwarenessUpdate::decode(bytes)
            .err()
            .map(|e| e.reason().to_owned()),
    );
    verdicts.insert(
        "sv",
        decode_state_vector(bytes)
            .err()
            .map(|e| e.reason().to_owned()),
    );
    verdicts
}

#[test]
fn every_hostile_input_is_refused_and_changes_nothing() {
    let mut doc = seeded();
    let pristine = (doc.encode_state_v1(), doc.to_json());
    for (file, (bytes, reason)) in read_corpus() {
        let verdicts = feed_everywhere(&mut doc, &bytes);
        let (first, wrapped) = match file.split('-').next() {
            Some("update") => ("update", Some(encode_update(&bytes))),
            Some("frame") => ("frame", None),
            Some("awareness") => (
                "awareness",
                Some(crdt_core::protocol::encode_awareness(&bytes)),
            ),
            Some("sv") => ("sv", Some(crdt_core::protocol::encode_sync_step1(&bytes))),
            _ => panic!("{file}: unknown prefix"),
        };
        assert_eq!(
            verdicts[first].as_deref(),
            Some(reason.as_str()),
            "{file} fed to {first}: {verdicts:?}"
        );
        if first == "update" {
            assert_eq!(
                verdicts["decode_update_v1"].as_deref(),
                Some(reason.as_str()).filter(|r| *r != "types_too_deep"),
                "{file}: decode_update_v1"
            );
        }
        if let Some(frame) = wrapped {
            let mut awareness = AwarenessTable::default();
            let refused = dispatch(&mut doc, &mut awareness, &frame);
            let expected = match first {
                // A state vector is decoded with the frame.
                "sv" => "bad_state_vector",
                _ => reason.as_str(),
            };
            assert_eq!(refused.as_deref(), Some(expected), "{file} in a frame");
        }
        assert_eq!((doc.encode_state_v1(), doc.to_json()), pristine, "{file}");
    }
    doc.verify_roundtrip().expect("still round-trips");
}

/// The deepest file really is fatal without the guards: yrs's own decoder,
/// in a child process on a 2 MiB stack (a tokio worker's), aborts the
/// process. The suite itself never runs it.
#[test]
fn unguarded_yrs_aborts_on_the_deep_any_file() {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let output = std::process::Command::new(exe)
        .args([
            "--exact",
            "unguarded_decode_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            "QUIRE_UNGUARDED_DECODE",
            corpus_dir().join("update-deep-any-arrays.bin"),
        )
        .output()
        .expect("spawn child");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the child survived: {stderr}");
    assert!(stderr.contains("overflowed its stack"), "{stderr}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(output.status.signal(), Some(6), "SIGABRT: {stderr}");
    }
    // The guarded path refuses the same bytes on the same stack.
    let bytes = std::fs::read(corpus_dir().join("update-deep-any-arrays.bin")).expect("read");
    let refused = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            Document::new()
                .apply_update_v1(&bytes)
                .err()
                .map(|e| e.reason())
        })
        .expect("thread")
        .join()
        .expect("no panic");
    assert_eq!(refused, Some("too_deep"));
}

/// Runs only in the child process of the test above.
#[test]
fn unguarded_decode_child() {
    use yrs::updates::decoder::Decode;
    let Some(path) = std::env::var_os("QUIRE_UNGUARDED_DECODE") else {
        return;
    };
    let bytes = std::fs::read(path).expect("read");
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let _ = yrs::Update::decode_v1(&bytes);
        })
        .expect("thread")
        .join()
        .expect("joined");
}

/// Writes the seed corpora of the fuzz targets (`fuzz/corpus/<target>/`):
/// updates of every kind yrs writes, on top of the same seeded document the
/// targets start from, the frames that carry them, awareness updates, and
/// the hostile corpus, when asked:
/// `QUIRE_WRITE_CORPUS=1 cargo test -p crdt-core --test hostile_inputs fuzz_seeds`.
#[test]
fn fuzz_seeds() {
    if std::env::var_os("QUIRE_WRITE_CORPUS").is_none() {
        return;
    }
    use crdt_core::protocol::{encode_awareness, encode_sync_step1, encode_sync_step2};
    use std::collections::HashMap;
    use std::sync::Arc;
    use yrs::types::Attrs;
    use yrs::updates::decoder::Decode;
    use yrs::{Any, ArrayPrelim, MapPrelim, TextPrelim, Update, Xml};

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let seed = seeded().encode_state_v1();
    // A client that starts from the server's state, so its edits reference it.
    let client = Doc::with_client_id(7);
    client
        .transact_mut()
        .apply_update(Update::decode_v1(&seed).expect("seed"))
        .expect("applies");
    let text = client.get_or_insert_text("t");
    let map = client.get_or_insert_map("m");
    let array = client.get_or_insert_array("a");
    let xml = client.get_or_insert_xml_fragment("prosemirror");
    let mut updates: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut edit = |name: &'static str, f: &dyn Fn(&mut yrs::TransactionMut)| {
        let mut txn = client.transact_mut();
        f(&mut txn);
        updates.push((name, txn.encode_update_v1()));
    };
    edit("text-insert", &|t| text.insert(t, 5, " ü🎉 more"));
    edit("text-delete", &|t| text.remove_range(t, 0, 1));
    edit("text-format", &|t| {
        let attrs: Attrs = HashMap::from([(Arc::from("bold"), Any::Bool(true))]);
        text.format(t, 0, 2, attrs)
    });
    edit("text-embed", &|t| {
        text.insert_embed(
            t,
            1,
            Any::from(HashMap::from([("img".to_owned(), Any::from("x"))])),
        );
    });
    edit("map-values", &|t| {
        map.insert(t, "n", 1.5);
        map.insert(t, "big", i64::MAX);
        map.insert(t, "buf", Any::from(vec![1u8, 2]));
        map.insert(
            t,
            "nested",
            Any::from(vec![
                Any::Null,
                Any::Undefined,
                Any::from(vec![Any::from(true)]),
            ]),
        );
    });
    edit("map-types", &|t| {
        let inner = map.insert(t, "inner", MapPrelim::default());
        let list = inner.insert(t, "list", ArrayPrelim::default());
        list.push_back(t, TextPrelim::new("deep"));
    });
    edit("map-overwrite", &|t| {
        map.insert(t, "k", "v2");
        map.remove(t, "n");
    });
    edit("array", &|t| {
        array.insert_range(t, 0, [1, 2, 3]);
        array.push_back(t, MapPrelim::default());
        array.remove_range(t, 1, 1);
    });
    edit("xml", &|t| {
        let p = xml.push_back(t, XmlElementPrelim::empty("h1"));
        p.insert_attribute(t, "level", "1");
        let txt = p.push_back(t, XmlTextPrelim::new("title"));
        let attrs: Attrs = HashMap::from([(Arc::from("em"), Any::Bool(true))]);
        txt.format(t, 0, 2, attrs);
    });
    edit("subdoc", &|t| {
        map.insert(t, "sub", Doc::new());
    });
    let whole = client
        .transact()
        .encode_state_as_update_v1(&StateVector::default());

    let framed = |parts: &[&[u8]]| {
        let mut e = Enc::default();
        for p in parts {
            e = e.bytes(p);
        }
        e.done()
    };
    let mut corpus: Vec<(&str, String, Vec<u8>)> = Vec::new();
    for (name, update) in &updates {
        corpus.push(("apply_update", format!("seed-{name}"), update.clone()));
        corpus.push((
            "protocol_decode",
            format!("seed-update-{name}"),
            encode_update(update),
        ));
    }
    corpus.push(("apply_update", "seed-whole-state".into(), whole.clone()));
    let parts: Vec<&[u8]> = updates.iter().map(|(_, u)| u.as_slice()).collect();
    corpus.push((
        "apply_update",
        "seed-sequence-reversed".into(),
        framed(&parts.iter().rev().copied().collect::<Vec<_>>()),
    ));
    corpus.push(("apply_update", "seed-sequence".into(), framed(&parts)));
    corpus.push((
        "protocol_decode",
        "seed-step2".into(),
        encode_sync_step2(&whole),
    ));
    corpus.push((
        "protocol_decode",
        "seed-step1".into(),
        encode_sync_step1(&seeded().state_vector_v1()),
    ));
    corpus.push((
        "protocol_decode",
        "seed-step1-empty".into(),
        vec![0, 0, 1, 0],
    ));
    corpus.push(("protocol_decode", "seed-query-awareness".into(), vec![3]));
    corpus.push((
        "protocol_decode",
        "seed-auth-denied".into(),
        crdt_core::protocol::encode_auth_denied("no"),
    ));
    let present = awareness_entry(
        7,
        1,
        br##"{"user":{"name":"ann","color":"#f00"},"cursor":null}"##,
    );
    let gone = awareness_entry(7, 2, b"null");
    let two = Enc::default()
        .var(2)
        .var(7)
        .var(3)
        .str(r#"{"a":[1,2,{"b":null}]}"#)
        .var(8)
        .var(1)
        .str("{}")
        .done();
    corpus.push((
        "protocol_decode",
        "seed-awareness".into(),
        encode_awareness(&present),
    ));
    corpus.push((
        "protocol_decode",
        "seed-sequence".into(),
        framed(&[
            &encode_awareness(&present),
            &encode_update(&updates[0].1),
            &[3],
            &encode_awareness(&gone),
        ]),
    ));
    for (name, bytes) in [("present", &present), ("gone", &gone), ("two", &two)] {
        corpus.push(("awareness", format!("seed-{name}"), bytes.clone()));
    }
    corpus.push((
        "awareness",
        "seed-sequence".into(),
        framed(&[&present, &two, &gone]),
    ));
    for (file, (bytes, _)) in read_corpus() {
        let target = match file.split('-').next() {
            Some("update") => "apply_update",
            Some("frame") | Some("sv") => "protocol_decode",
            _ => "awareness",
        };
        let name = format!("hostile-{}", file.trim_end_matches(".bin"));
        corpus.push((target, name, bytes));
    }
    for target in ["apply_update", "protocol_decode", "awareness"] {
        let dir = root.join(target);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
    }
    for (target, name, bytes) in corpus {
        std::fs::write(root.join(target).join(name), bytes).expect("write");
    }
}

/// Found by the `apply_update` fuzz target: an update whose first struct
/// comes after a gap in its client's clocks was integrated behind a skip,
/// and yrs 0.28.1 then wrote v2 that did not decode (and panicked with
/// pending deletions). Such updates are now held, and
/// `Document::encode_state_v2` converts from v1 in any case.
#[test]
fn a_document_with_a_gap_encodes_as_v2() {
    use yrs::updates::decoder::Decode;
    let mut doc = seeded();
    let gap = [
        0x01, 0x01, 0x07, 0x17, 0xa8, 0x2a, 0x05, 0x01, 0x77, 0x02, 0x76, 0x32, 0x02, 0x07, 0x01,
        0x0c, 0x01, 0x2a, 0x01, 0x05, 0x01,
    ];
    assert_eq!(doc.apply_update_v1(&gap), Ok(true));
    doc.verify_roundtrip().expect("v1 round-trips");
    let v2 = doc.encode_state_v2();
    let update = yrs::Update::decode_v2(&v2).expect("v2 decodes");
    let probe = Doc::new();
    probe.transact_mut().apply_update(update).expect("applies");
    assert_eq!(probe.transact().state_vector(), doc.state_vector());
    let partial = doc.diff_v2(&seeded().state_vector());
    yrs::Update::decode_v2(&partial).expect("diff v2 decodes");
}

/// Found by the `protocol_decode` fuzz target under AddressSanitizer: a
/// client's update that starts past what the server holds of it (clock 1
/// of client 7, none before) used to be integrated behind a gap; a second
/// update covering clocks 0..9 with other content then made yrs read an
/// item it had freed. Updates that start past the document are now held
/// until what comes before them arrives; yrs never sees a gap.
#[test]
fn an_update_overlapping_a_held_one_is_harmless() {
    let mut doc = seeded();
    let pristine = doc.state_vector();
    let after_gap = Enc::default()
        .var(1)
        .section(1, 7, 1)
        .u8(0x84)
        .var(42)
        .var(4)
        .str(" :\"f0\",\0\0\0\0\0")
        .var(0)
        .done();
    let overlapping = Enc::default()
        .var(1)
        .section(1, 7, 0)
        .u8(0x84)
        .var(42)
        .var(4)
        .str(" ü🎉 mor")
        .var(0)
        .done();
    assert_eq!(doc.apply_update_v1(&after_gap), Ok(true), "held");
    assert_eq!(doc.state_vector(), pristine);
    assert_eq!(doc.held_updates().len(), 1);
    assert_eq!(doc.apply_update_v1(&overlapping), Ok(true));
    // The held update now starts within what the document holds: applied,
    // and yrs keeps the first content it saw for each clock.
    assert!(doc.held_updates().is_empty());
    doc.verify_roundtrip().expect("round-trips");
    let frames = [encode_update(&after_gap), encode_update(&overlapping)];
    let mut server = seeded();
    let mut awareness = AwarenessTable::default();
    for frame in &frames {
        assert_eq!(dispatch(&mut server, &mut awareness, frame), None);
    }
}

/// Found by the `apply_update` fuzz target: after a sequence of ordinary
/// edits (text with an emoji, bold, an embed, map values...), exporting the
/// document as JSON looped forever inside yrs's array iterator, which
/// `infer_type_from_content` and `to_json` use. Exports no longer use it on
/// sequences that hold text.
#[test]
fn exports_finish_on_mixed_content() {
    let hex = "1501010700842a060c20c3bcf09f8e89206d6f7265000600012a0100012301020709c62a002a0104626f6c250474727565c62a022a0304626f6c64046e756c6c00160101070bc52a052a330b7b22696d67223a2278227d003f0104070c2801016d016e017c3fc000002801016d03626967017c5f0000002801016d0362756601740201252801016d066e6573745e65640175037e7f7501780028010407102701016d05696e6e65720127000710046c010000000000003969737400070007110204000712044064656570001501010717a82a0501770276320207010c012a0105012301040718482a06017d01c807182a06017d02c807192a06017d03872a06010107011901450107071c872a07030268312800071c056c6576656c017701310700071c060400071e02746984072003746c6546071f026504756d747265c60720072102656d046e756c6c0059010107262901016d000001002464656463646632392d306436382d346564322d396132372d386361646332333035316136760408656e636f64696e677d0102676378086175746f4c6f6164790a73686f756c644c6f61647800";
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    let mut parts = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let mut r = crdt_core::wire::Reader::new(rest);
        let part = r.read_var_bytes("part").expect("framed");
        rest = &rest[rest.len() - r.remaining()..];
        parts.push(part.to_vec());
    }
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut doc = seeded();
        for part in &parts {
            let _ = doc.apply_update_v1(part);
            let _ = doc.to_json();
            for root in doc.root_names() {
                let _ = doc.root_text(&root);
            }
        }
        let _ = done.send(());
    });
    finished
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("exports finish");
}
