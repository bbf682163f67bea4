//! Property: random concurrent edits from several clients, delivered to the
//! server in any order and with duplicates, converge to one state, the same
//! as delivering them in the order they were made.

use crdt_core::Document;
use proptest::prelude::*;
use yrs::block::ClientID;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, OffsetKind, Options, ReadTxn, StateVector, Text, Transact, Update};

#[derive(Debug, Clone)]
enum Op {
    /// Insert `text` at a position given as a fraction of the length.
    Insert { at: f64, text: String },
    /// Delete up to `len` characters from a fractional position.
    Delete { at: f64, len: u32 },
    /// The client catches up with everything another client has sent so
    /// far, so later edits depend on theirs (and arrive out of order elsewhere).
    Pull { from: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0.0..=1.0f64, "[a-zé ]{1,6}").prop_map(|(at, text)| Op::Insert { at, text }),
        2 => (0.0..=1.0f64, 1u32..5).prop_map(|(at, len)| Op::Delete { at, len }),
        1 => (0usize..4).prop_map(|from| Op::Pull { from }),
    ]
}

/// Replays each client's operations, round-robin, returning every update
/// in the order it was made.
fn edit(clients: usize, scripts: &[Vec<Op>]) -> Vec<Vec<u8>> {
    // UTF-16 offsets, as a JavaScript client counts.
    let docs: Vec<Doc> = (0..clients)
        .map(|i| {
            Doc::with_options(Options {
                client_id: ClientID::new(i as u64 + 1),
                offset_kind: OffsetKind::Utf16,
                ..Options::default()
            })
        })
        .collect();
    let mut log: Vec<(usize, Vec<u8>)> = Vec::new();
    let longest = scripts.iter().map(Vec::len).max().unwrap_or(0);
    for step in 0..longest {
        for (i, script) in scripts.iter().enumerate().take(clients) {
            let Some(op) = script.get(step) else { continue };
            let doc = &docs[i];
            let text = doc.get_or_insert_text("t");
            match op {
                Op::Pull { from } => {
                    let from = from % clients;
                    for (_, update) in log.iter().filter(|(author, _)| *author == from) {
                        let update = Update::decode_v1(update).expect("own update decodes");
                        doc.transact_mut().apply_update(update).expect("applies");
                    }
                }
                Op::Insert { at, text: s } => {
                    let mut txn = doc.transact_mut();
                    let len = text.len(&txn);
                    text.insert(&mut txn, (f64::from(len) * at) as u32, s);
                    log.push((i, txn.encode_update_v1()));
                }
                Op::Delete { at, len } => {
                    let mut txn = doc.transact_mut();
                    let total = text.len(&txn);
                    if total == 0 {
                        continue;
                    }
                    let start = ((f64::from(total) * at) as u32).min(total - 1);
                    text.remove_range(&mut txn, start, (*len).min(total - start));
                    log.push((i, txn.encode_update_v1()));
                }
            }
        }
    }
    log.into_iter().map(|(_, update)| update).collect()
}

fn text_of(doc: &Document) -> String {
    doc.root_text("t").unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn delivery_order_and_duplicates_do_not_matter(
        clients in 2usize..5,
        scripts in proptest::collection::vec(proptest::collection::vec(op(), 1..25), 4),
        order in proptest::collection::vec(any::<proptest::sample::Index>(), 0..80),
        seed in any::<u64>(),
    ) {
        let updates = edit(clients, &scripts);
        prop_assume!(!updates.is_empty());

        let mut in_order = Document::new();
        for update in &updates {
            in_order.apply_update_v1(update).expect("in-order update applies");
        }

        // Every update once in a shuffled order, plus random duplicates.
        let mut shuffled: Vec<&Vec<u8>> = updates.iter().collect();
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        for index in &order {
            shuffled.push(index.get(&updates));
        }
        let mut any_order = Document::new();
        for update in shuffled {
            any_order.apply_update_v1(update).expect("shuffled update applies");
        }

        prop_assert_eq!(any_order.state_vector(), in_order.state_vector());
        prop_assert_eq!(text_of(&any_order), text_of(&in_order));
        // And the state survives a snapshot round trip.
        let reloaded = Document::load(Some(&any_order.encode_state_v1()), []).expect("reloads");
        prop_assert_eq!(text_of(&reloaded), text_of(&in_order));

        // A client that receives the server's full state agrees too.
        let client = Doc::new();
        let full = Update::decode_v1(&any_order.diff_v1(&StateVector::default())).expect("decodes");
        client.transact_mut().apply_update(full).expect("applies");
        let t = client.get_or_insert_text("t");
        prop_assert_eq!(t.get_string(&client.transact()), text_of(&in_order));
        prop_assert!(client.transact().state_vector() == in_order.state_vector());
    }
}
