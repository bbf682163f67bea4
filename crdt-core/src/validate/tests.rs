use super::*;
use std::collections::HashMap;
use std::sync::Arc;
use yrs::types::text::YChange;
use yrs::types::xml::XmlFragment;
use yrs::types::Attrs;
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, ArrayPrelim, Doc, GetString, Map, MapPrelim, ReadTxn, StateVector, Text,
    TextPrelim, Transact, TransactionMut, Update, Xml, XmlElementPrelim, XmlTextPrelim,
};

#[path = "../../tests/support/enc.rs"]
mod enc;
use enc::Enc;

/// A one-client update holding one item of ContentAny with `value` (raw Any bytes).
fn any_update(value: Vec<u8>) -> Vec<u8> {
    Enc::default()
        .var(1)
        .section(1, 1, 0)
        .root_item(8, "a")
        .var(1)
        .raw(&value)
        .no_deletes()
        .done()
}

fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(depth * 2 + 1);
    for _ in 0..depth {
        v.extend_from_slice(&[117, 1]);
    }
    v.push(126);
    v
}

fn encode(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

fn edit(doc: &Doc, f: impl FnOnce(&mut TransactionMut)) -> Vec<u8> {
    let mut txn = doc.transact_mut();
    f(&mut txn);
    txn.encode_update_v1()
}

/// Every update yrs writes must validate, and yrs must decode it too.
#[test]
fn updates_written_by_yrs_validate() {
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let doc = Doc::with_client_id(1);
    let text = doc.get_or_insert_text("text");
    cases.push((
        "text insert",
        edit(&doc, |t| text.insert(t, 0, "hello wörld 🎉")),
    ));
    cases.push((
        "text format",
        edit(&doc, |t| {
            let attrs: Attrs = HashMap::from([(Arc::from("bold"), Any::Bool(true))]);
            text.format(t, 0, 5, attrs)
        }),
    ));
    cases.push((
        "text embed",
        edit(&doc, |t| {
            text.insert_embed(
                t,
                2,
                Any::from(HashMap::from([("image".to_owned(), Any::from("x.png"))])),
            );
        }),
    ));
    cases.push(("text delete", edit(&doc, |t| text.remove_range(t, 1, 3))));
    let map = doc.get_or_insert_map("map");
    cases.push((
        "map of values",
        edit(&doc, |t| {
            map.insert(t, "null", Any::Null);
            map.insert(t, "undefined", Any::Undefined);
            map.insert(t, "int", 42);
            map.insert(t, "negative", -7_000_000_000i64);
            map.insert(t, "big", i64::MAX);
            map.insert(t, "float", 1.5);
            map.insert(t, "bool", false);
            map.insert(t, "string", "s");
            map.insert(t, "buffer", Any::from(vec![1u8, 2, 3]));
            map.insert(
                t,
                "nested",
                Any::from(HashMap::from([(
                    "list".to_owned(),
                    Any::from(vec![Any::from(1), Any::from(vec![Any::Null])]),
                )])),
            );
        }),
    ));
    cases.push((
        "nested shared types",
        edit(&doc, |t| {
            let inner = map.insert(t, "inner", MapPrelim::default());
            let list = inner.insert(t, "list", ArrayPrelim::default());
            list.push_back(t, TextPrelim::new("deep"));
        }),
    ));
    cases.push((
        "map overwrite and remove",
        edit(&doc, |t| {
            map.insert(t, "int", 43);
            map.remove(t, "string");
        }),
    ));
    let array = doc.get_or_insert_array("array");
    cases.push((
        "array",
        edit(&doc, |t| {
            array.insert_range(t, 0, [1, 2, 3]);
            array.push_back(t, MapPrelim::default());
            array.remove_range(t, 0, 2);
        }),
    ));
    let xml = doc.get_or_insert_xml_fragment("prosemirror");
    cases.push((
        "xml",
        edit(&doc, |t| {
            let p = xml.push_back(t, XmlElementPrelim::empty("paragraph"));
            p.insert_attribute(t, "align", "left");
            let txt = p.push_back(t, XmlTextPrelim::new("rich text"));
            let attrs: Attrs = HashMap::from([(Arc::from("em"), Any::Bool(true))]);
            txt.format(t, 0, 4, attrs);
        }),
    ));
    cases.push((
        "subdocument",
        edit(&doc, |t| {
            map.insert(t, "sub", Doc::new());
        }),
    ));
    let other = Doc::with_client_id(u64::from(u32::MAX) + 7);
    other
        .transact_mut()
        .apply_update(Update::decode_v1(&encode(&doc)).expect("decodes"))
        .expect("applies");
    let other_text = other.get_or_insert_text("text");
    cases.push((
        "second client, id beyond 32 bits",
        edit(&other, |t| other_text.insert(t, 0, ">")),
    ));
    cases.push(("whole state", encode(&doc)));
    cases.push(("empty", Doc::new().transact_mut().encode_update_v1()));
    // Two updates with a hole between them merge into one with a skip struct.
    let gappy = Doc::with_client_id(9);
    let t = gappy.get_or_insert_text("t");
    let first = edit(&gappy, |txn| t.insert(txn, 0, "a"));
    let _second = edit(&gappy, |txn| t.insert(txn, 1, "b"));
    let third = edit(&gappy, |txn| t.insert(txn, 2, "c"));
    cases.push((
        "merged with skip",
        yrs::merge_updates_v1([first.as_slice(), third.as_slice()]).expect("merges"),
    ));
    // Deleted content collected into GC structs.
    let collected = Doc::with_client_id(3);
    let list = collected.get_or_insert_array("l");
    edit(&collected, |t| {
        list.push_back(t, MapPrelim::from([("k", 1)]));
    });
    edit(&collected, |t| list.remove(t, 0));
    cases.push(("garbage collected", encode(&collected)));

    for (name, update) in &cases {
        let summary = validate_update_v1(update, &ValidationLimits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        Update::decode_v1(update).unwrap_or_else(|e| panic!("{name}: yrs says {e}"));
        assert!(summary.structs >= summary.type_items, "{name}");
    }
    // The JSON root of the source document round-trips through the server side.
    let reloaded = crate::Document::load(Some(&encode(&doc)), []).expect("reload");
    assert_eq!(
        reloaded.root_text("text"),
        Some(text.get_string(&doc.transact()))
    );
    let _ = text.diff(&doc.transact(), YChange::identity);
}

#[test]
fn summary_counts_what_the_update_holds() {
    let doc = Doc::with_client_id(1);
    let map = doc.get_or_insert_map("m");
    let update = edit(&doc, |t| {
        map.insert(t, "a", 1);
        map.insert(t, "b", MapPrelim::default());
        map.remove(t, "a");
    });
    let summary = validate_update_v1(&update, &ValidationLimits::default()).expect("valid");
    assert_eq!(
        summary,
        UpdateSummary {
            structs: 2,
            type_items: 1,
            delete_ranges: 1,
        }
    );
}

/// `check(input, reason)`: the update is rejected for that reason.
fn check(name: &str, input: &[u8], reason: &str) {
    check_with(name, input, &ValidationLimits::default(), reason)
}

fn check_with(name: &str, input: &[u8], limits: &ValidationLimits, reason: &str) {
    match validate_update_v1(input, limits) {
        Ok(summary) => panic!("{name}: accepted ({summary:?}), expected {reason}"),
        Err(e) => assert_eq!(e.reason(), reason, "{name}: {e}"),
    }
}

#[test]
fn hostile_updates_are_rejected_precisely() {
    let long_string = "x".repeat(64);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty input", vec![], "truncated"),
        ("no delete set", Enc::default().var(0).done(), "truncated"),
        (
            "trailing byte",
            Enc::default().var(0).no_deletes().u8(0).done(),
            "trailing_bytes",
        ),
        (
            "u32::MAX client sections",
            Enc::default().var(u64::from(u32::MAX)).done(),
            "count_too_large",
        ),
        (
            "client count beyond u32",
            Enc::default().var(1 << 40).done(),
            "varint_overflow",
        ),
        (
            "struct count beyond the bytes",
            Enc::default().var(1).section(1_000_000, 1, 0).done(),
            "count_too_large",
        ),
        (
            "client id beyond 53 bits",
            Enc::default().var(1).section(1, 1 << 53, 0).done(),
            "client_id_too_large",
        ),
        (
            "clock at the limit",
            Enc::default()
                .var(1)
                .section(1, 1, u64::from(u32::MAX))
                .done(),
            "clock_overflow",
        ),
        (
            "string past the clock limit",
            Enc::default()
                .var(1)
                .section(1, 1, u64::from(DEFAULT_MAX_CLOCK) - 10)
                .root_item(4, "t")
                .str(&long_string)
                .no_deletes()
                .done(),
            "clock_overflow",
        ),
        (
            "deleted content wraps the clock",
            Enc::default()
                .var(1)
                .section(2, 1, 0)
                .root_item(1, "t")
                .var(u64::from(u32::MAX))
                .root_item(4, "t")
                .str("a")
                .no_deletes()
                .done(),
            "clock_overflow",
        ),
        (
            "GC range wraps the clock",
            Enc::default()
                .var(1)
                .section(2, 1, 5)
                .u8(0)
                .var(u64::from(u32::MAX) - 1)
                .u8(0)
                .var(5)
                .no_deletes()
                .done(),
            "clock_overflow",
        ),
        (
            "empty GC",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .u8(0)
                .var(0)
                .no_deletes()
                .done(),
            "empty_struct",
        ),
        (
            "empty skip",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .u8(10)
                .var(0)
                .no_deletes()
                .done(),
            "empty_struct",
        ),
        (
            "content ref 0 with flags",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .u8(0x20)
                .var(0)
                .no_deletes()
                .done(),
            "unknown_content",
        ),
        (
            "content ref 11",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .root_item(11, "t")
                .no_deletes()
                .done(),
            "unknown_content",
        ),
        (
            "content ref 17 (yrs masks 4 bits and reads it as deleted)",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .root_item(17, "t")
                .var(3)
                .no_deletes()
                .done(),
            "unknown_content",
        ),
        (
            "legacy JSON content",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .root_item(2, "t")
                .var(1)
                .str("1")
                .no_deletes()
                .done(),
            "json_content",
        ),
        (
            "weak link type",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .root_item(7, "t")
                .u8(7)
                .no_deletes()
                .done(),
            "unknown_type_ref",
        ),
        (
            "parent info 2",
            Enc::default().var(1).section(1, 1, 0).u8(4).var(2).done(),
            "invalid_parent_info",
        ),
        (
            "root name longer than the input",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .u8(4)
                .var(1)
                .var(1 << 30)
                .done(),
            "length_too_large",
        ),
        (
            "string content of 4 GiB",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .root_item(4, "t")
                .var(u64::from(u32::MAX))
                .done(),
            "length_too_large",
        ),
        (
            "string length beyond u32 (yrs would wrap it)",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .root_item(4, "t")
                .var((1 << 32) + 1)
                .u8(b'x')
                .done(),
            "varint_overflow",
        ),
        (
            "invalid UTF-8",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .root_item(4, "t")
                .var(2)
                .raw(&[0xc3, 0x28])
                .no_deletes()
                .done(),
            "invalid_utf8",
        ),
        (
            "binary longer than the input",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .root_item(3, "t")
                .var(1000)
                .done(),
            "length_too_large",
        ),
        (
            "any count beyond the bytes",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .root_item(8, "t")
                .var(u64::from(u32::MAX))
                .done(),
            "count_too_large",
        ),
        (
            "any array of 2^60",
            any_update(Enc::default().u8(117).var(1 << 60).done()),
            "count_too_large",
        ),
        (
            "any map of 2^40",
            any_update(Enc::default().u8(118).var(1 << 40).done()),
            "count_too_large",
        ),
        ("any tag 115", any_update(vec![115]), "unknown_value_tag"),
        ("any tag 0", any_update(vec![0]), "unknown_value_tag"),
        (
            "varint of 11 bytes (yrs shifts past 64 bits)",
            any_update(Enc::default().u8(125).raw(&[0xff; 10]).u8(0).done()),
            "integer_overflow",
        ),
        (
            "varint of i64::MIN magnitude (yrs negation overflows)",
            any_update(
                Enc::default()
                    .u8(125)
                    .raw(&[0xc0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x04])
                    .done(),
            ),
            "integer_overflow",
        ),
        (
            "float64 cut short",
            any_update(vec![123, 0, 0]),
            "truncated",
        ),
        (
            "100 000 nested arrays",
            any_update(nested_arrays(100_000)),
            "too_deep",
        ),
        (
            "65 nested arrays",
            any_update(nested_arrays(65)),
            "too_deep",
        ),
        (
            "nested maps",
            any_update({
                let mut v = Vec::new();
                for _ in 0..100 {
                    v.extend_from_slice(&[118, 1, 1, b'k']);
                }
                v.push(126);
                v
            }),
            "too_deep",
        ),
        (
            "deep JSON embed",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .root_item(5, "t")
                .str(&"[".repeat(100))
                .no_deletes()
                .done(),
            "too_deep",
        ),
        (
            "deep JSON format value",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .root_item(6, "t")
                .str("bold")
                .str(&format!("{}1{}", "{\"a\":".repeat(70), "}".repeat(70)))
                .no_deletes()
                .done(),
            "too_deep",
        ),
        (
            "embed that is not JSON",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .root_item(5, "t")
                .str("{nope")
                .no_deletes()
                .done(),
            "invalid_json",
        ),
        (
            "embed with an integer beyond i64",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .root_item(5, "t")
                .str("18446744073709551615")
                .no_deletes()
                .done(),
            "invalid_json",
        ),
        (
            "subdocument options nested too deep",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .root_item(9, "t")
                .str("guid")
                .raw(&nested_arrays(1000))
                .no_deletes()
                .done(),
            "too_deep",
        ),
        (
            "client listed twice",
            Enc::default()
                .var(2)
                .section(1, 5, 0)
                .root_item(4, "t")
                .str("a")
                .section(1, 5, 0)
                .root_item(4, "t")
                .str("b")
                .no_deletes()
                .done(),
            "duplicate_client",
        ),
        (
            "delete set client listed twice",
            Enc::default()
                .var(0)
                .var(2)
                .var(3)
                .var(1)
                .var(0)
                .var(1)
                .var(3)
                .var(1)
                .var(4)
                .var(1)
                .done(),
            "duplicate_client",
        ),
        (
            "delete set client count beyond the bytes",
            Enc::default().var(0).var(u64::from(u32::MAX)).done(),
            "count_too_large",
        ),
        (
            "delete range count beyond the bytes",
            Enc::default().var(0).var(1).var(1).var(1 << 30).done(),
            "count_too_large",
        ),
        (
            "delete range wraps the clock",
            Enc::default()
                .var(0)
                .var(1)
                .var(1)
                .var(1)
                .var(u64::from(u32::MAX) - 1)
                .var(10)
                .done(),
            "clock_overflow",
        ),
        (
            "delete set client id beyond 53 bits",
            Enc::default().var(0).var(1).var(u64::MAX).var(0).done(),
            "client_id_too_large",
        ),
        (
            "origin client beyond 53 bits",
            Enc::default()
                .var(1)
                .section(1, 1, 0)
                .u8(0x84)
                .var(1 << 60)
                .var(0)
                .done(),
            "client_id_too_large",
        ),
    ];
    for (name, input, reason) in &cases {
        check(name, input, reason);
        // yrs itself either agrees or is one of the cases it cannot survive;
        // none of these may reach it.
    }
}

#[test]
fn budgets_cap_the_work_per_update() {
    let doc = Doc::with_client_id(1);
    let array = doc.get_or_insert_array("a");
    for i in 0..10u32 {
        // Separate transactions at alternating ends: separate structs.
        edit(&doc, |t| {
            array.insert(t, if i % 2 == 0 { 0 } else { i }, i);
        });
    }
    let whole = encode(&doc);
    let tight = ValidationLimits {
        max_structs: 5,
        ..ValidationLimits::default()
    };
    check_with("struct budget", &whole, &tight, "too_many_structs");
    assert!(validate_update_v1(&whole, &ValidationLimits::default()).is_ok());

    let deletions = edit(&doc, |t| {
        array.remove(t, 0);
        array.remove(t, 2);
        array.remove(t, 4);
    });
    let tight = ValidationLimits {
        max_delete_ranges: 1,
        ..ValidationLimits::default()
    };
    check_with(
        "delete budget",
        &deletions,
        &tight,
        "too_many_delete_ranges",
    );
    assert!(validate_update_v1(&deletions, &ValidationLimits::default()).is_ok());
}

#[test]
fn depth_limit_is_exact_and_capped() {
    let at_limit = any_update(nested_arrays(DEFAULT_MAX_DEPTH));
    assert!(validate_update_v1(&at_limit, &ValidationLimits::default()).is_ok());
    Update::decode_v1(&at_limit).expect("yrs decodes what passes");
    check(
        "one past the limit",
        &any_update(nested_arrays(DEFAULT_MAX_DEPTH + 1)),
        "too_deep",
    );
    let huge = ValidationLimits {
        max_depth: usize::MAX,
        ..ValidationLimits::default()
    };
    check_with(
        "ceiling",
        &any_update(nested_arrays(DEPTH_CEILING + 1)),
        &huge,
        "too_deep",
    );
    assert_eq!(
        check_json(&"[".repeat(64), 64).map_err(|e| e.reason()),
        Err("invalid_json")
    );
    assert_eq!(
        check_json(&format!("{}{}", "[".repeat(64), "]".repeat(64)), 64),
        Ok(())
    );
    assert_eq!(
        check_json(&format!("{}{}", "[".repeat(65), "]".repeat(65)), 64).map_err(|e| e.reason()),
        Err("too_deep")
    );
}

#[test]
fn errors_point_at_the_offending_field() {
    let input = Enc::default()
        .var(1)
        .section(1, 1, 0)
        .root_item(8, "a")
        .var(1)
        .u8(99)
        .done();
    let err = validate_update_v1(&input, &ValidationLimits::default()).unwrap_err();
    assert_eq!(err.kind, InvalidUpdate::UnknownValueTag(99));
    assert_eq!(err.offset, input.len() - 1);
    assert_eq!(
        err.to_string(),
        format!(
            "invalid update at byte {}: unknown value tag 99",
            input.len() - 1
        )
    );
}

/// Whatever the validator accepts, yrs decodes: the validator is never the
/// more permissive of the two. Checked on every prefix of real updates.
#[test]
fn accepted_prefixes_decode_in_yrs() {
    let doc = Doc::with_client_id(77);
    let map = doc.get_or_insert_map("m");
    let text = doc.get_or_insert_text("t");
    edit(&doc, |t| {
        map.insert(t, "k", Any::from(vec![Any::from(1.25), Any::from("x")]));
        text.insert(t, 0, "abc");
        text.insert_embed(t, 1, Any::from(true));
    });
    edit(&doc, |t| text.remove_range(t, 0, 1));
    let full = encode(&doc);
    for end in 0..=full.len() {
        let prefix = &full[..end];
        if validate_update_v1(prefix, &ValidationLimits::default()).is_ok() {
            Update::decode_v1(prefix).unwrap_or_else(|e| panic!("prefix {end}: {e}"));
        }
    }
}
