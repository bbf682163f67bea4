//! Exports of a document's roots to JSON and plain text.
//!
//! A document rebuilt from updates does not know its root types (Yjs never
//! encodes them); the server has to infer each one from its content, the way
//! yrs does for `Out::UndefinedRef`, plus one step yrs lacks: a list whose
//! live children are all XML nodes is an XmlFragment (what ProseMirror and
//! Tiptap write), not an Array.

use serde_json::{Map as JsonMap, Value};
use yrs::branch::BranchPtr;
use yrs::types::{ToJson, TypeRef};
use yrs::{
    Any, Array, ArrayRef, GetString, Map, MapRef, Out, ReadTxn, TextRef, XmlFragmentRef, XmlTextRef,
};

/// The shape of a root as inferred from its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    /// `Y.Text`: text in its sequence, no map entries.
    Text,
    /// `Y.Map`: map entries without text, or no content at all.
    Map,
    /// `Y.Array`: a sequence without text, not made of XML nodes only,
    /// and no map entries.
    Array,
    /// `Y.XmlFragment`: a sequence of XML nodes only, no map entries.
    XmlFragment,
    /// `Y.XmlText`: text and map entries (its attributes).
    XmlText,
}

/// Every root as one JSON object keyed by root name (see
/// [`crate::Document::to_json`]).
pub fn roots_to_json<T: ReadTxn>(txn: &T) -> Value {
    let mut roots: Vec<(String, Out)> = txn
        .root_refs()
        .map(|(name, out)| (name.to_owned(), out))
        .collect();
    roots.sort_by(|a, b| a.0.cmp(&b.0));
    let mut object = JsonMap::new();
    for (name, out) in roots {
        object.insert(name, out_to_json(txn, &out));
    }
    Value::Object(object)
}

/// Plain text of root `name`: text as is, XML as its XML string, a map
/// or an array as its JSON; `None` without such a root.
pub fn root_text<T: ReadTxn>(txn: &T, name: &str) -> Option<String> {
    let (_, out) = txn.root_refs().find(|(root, _)| *root == name)?;
    Some(match out {
        Out::YText(t) => t.get_string(txn),
        Out::YXmlFragment(x) => x.get_string(txn),
        Out::YXmlText(x) => x.get_string(txn),
        Out::UndefinedRef(branch) => match infer_kind(txn, branch) {
            RootKind::XmlFragment => XmlFragmentRef::from(branch).get_string(txn),
            RootKind::XmlText => XmlTextRef::from(branch).get_string(txn),
            // Plain text of a map or array is its JSON; of text, the text.
            RootKind::Text => TextRef::from(branch).get_string(txn),
            // A root whose every item was deleted has no type left to
            // infer: its text is empty, as a client's `Y.Text` would read.
            RootKind::Map | RootKind::Array if is_empty(txn, branch) => String::new(),
            RootKind::Map | RootKind::Array => {
                out_to_json(txn, &Out::UndefinedRef(branch)).to_string()
            }
        },
        other => out_to_json(txn, &other).to_string(),
    })
}

/// No live entry and no live item: nothing says what the root is.
fn is_empty<T: ReadTxn>(txn: &T, branch: BranchPtr) -> bool {
    MapRef::from(branch).iter(txn).next().is_none() && branch.block_len == 0
}

/// JSON of a value. Shared types are walked here rather than with yrs's
/// `to_json`, whose array iterator can loop forever over some strings (a
/// fuzzer found it hanging on a root holding a number, then formatted text
/// with an emoji): a sequence holding text is exported as its text.
fn out_to_json<T: ReadTxn>(txn: &T, out: &Out) -> Value {
    match out {
        Out::YText(t) => Value::String(t.get_string(txn)),
        Out::YXmlFragment(x) => Value::String(x.get_string(txn)),
        Out::YXmlText(x) => Value::String(x.get_string(txn)),
        Out::YXmlElement(x) => Value::String(x.get_string(txn)),
        Out::YMap(m) => map_to_json(
            txn,
            BranchPtr::from(AsRef::<yrs::branch::Branch>::as_ref(m)),
        ),
        Out::YArray(a) => array_to_json(
            txn,
            BranchPtr::from(AsRef::<yrs::branch::Branch>::as_ref(a)),
        ),
        Out::UndefinedRef(branch) => match infer_kind(txn, *branch) {
            RootKind::Text => Value::String(TextRef::from(*branch).get_string(txn)),
            RootKind::XmlFragment => Value::String(XmlFragmentRef::from(*branch).get_string(txn)),
            RootKind::XmlText => Value::String(XmlTextRef::from(*branch).get_string(txn)),
            RootKind::Map => map_to_json(txn, *branch),
            RootKind::Array => array_to_json(txn, *branch),
        },
        Out::Any(any) => any_to_json(any),
        other => any_to_json(&other.to_json(txn)),
    }
}

/// JSON of any value, as the exports write it (for comparing versions).
pub(crate) fn value_json<T: ReadTxn>(txn: &T, out: &Out) -> Value {
    out_to_json(txn, out)
}

fn map_to_json<T: ReadTxn>(txn: &T, branch: BranchPtr) -> Value {
    let mut object = JsonMap::new();
    for (key, value) in MapRef::from(branch).iter(txn) {
        object.insert(key.to_owned(), out_to_json(txn, &value));
    }
    Value::Object(object)
}

fn array_to_json<T: ReadTxn>(txn: &T, branch: BranchPtr) -> Value {
    if sequence_children(txn, branch).1 {
        return Value::String(TextRef::from(branch).get_string(txn));
    }
    Value::Array(
        ArrayRef::from(branch)
            .iter(txn)
            .map(|value| out_to_json(txn, &value))
            .collect(),
    )
}

fn any_to_json(any: &Any) -> Value {
    serde_json::to_value(any).unwrap_or(Value::Null)
}

/// What a root of unknown type holds, as yrs's `infer_type_from_content`
/// decides it, without materialising the content (which walks it with the
/// array iterator): map entries and text make XML text, text alone Text,
/// a list of XML nodes an XmlFragment, other lists an Array, entries alone
/// (or nothing) a Map.
pub fn infer_kind<T: ReadTxn>(txn: &T, branch: BranchPtr) -> RootKind {
    let has_map = MapRef::from(branch).iter(txn).next().is_some();
    let (children, has_text) = sequence_children(txn, branch);
    if has_text {
        return if has_map {
            RootKind::XmlText
        } else {
            RootKind::Text
        };
    }
    let has_list = branch.block_len > 0;
    match (has_map, has_list) {
        (false, true) => {
            let all_xml = !children.is_empty()
                && children.len() == branch.block_len as usize
                && children.iter().all(|child| {
                    matches!(
                        child.type_ref(),
                        TypeRef::XmlElement(_) | TypeRef::XmlText | TypeRef::XmlFragment
                    )
                });
            if all_xml {
                RootKind::XmlFragment
            } else {
                RootKind::Array
            }
        }
        _ => RootKind::Map,
    }
}

/// Deletes every live subdocument item of `doc` (see `Document`'s `Drop`).
/// Subdocuments inside text are left alone: yrs's array iterator can loop
/// forever over some strings.
pub(crate) fn release_subdocuments(doc: &yrs::Doc) {
    use yrs::Transact;
    let mut txn = doc.transact_mut();
    let mut stack: Vec<BranchPtr> = txn
        .root_refs()
        .filter_map(|(_, out)| branch_of(&out))
        .collect();
    while let Some(branch) = stack.pop() {
        let map = MapRef::from(branch);
        let mut keys = Vec::new();
        for (key, out) in map.iter(&txn) {
            match out {
                Out::YDoc(_) => keys.push(key.to_owned()),
                other => stack.extend(branch_of(&other)),
            }
        }
        for key in keys {
            map.remove(&mut txn, &key);
        }
        let (children, has_text) = sequence_children(&txn, branch);
        stack.extend(children);
        if has_text {
            continue;
        }
        let array = ArrayRef::from(branch);
        let indexes: Vec<u32> = array
            .iter(&txn)
            .enumerate()
            .filter(|(_, out)| matches!(out, Out::YDoc(_)))
            .map(|(i, _)| i as u32)
            .collect();
        for i in indexes.into_iter().rev() {
            array.remove(&mut txn, i);
        }
    }
}

/// The shared types in a branch's sequence, and whether it holds text
/// (strings or embeds).
/// Walks items with the text differ, which reads each string once, where
/// yrs's array iterator reads strings a character at a time (and can loop
/// forever over some of them).
pub(crate) fn sequence_children<T: ReadTxn>(txn: &T, branch: BranchPtr) -> (Vec<BranchPtr>, bool) {
    use yrs::types::text::YChange;
    use yrs::Text;
    let mut children = Vec::new();
    let mut has_text = false;
    for chunk in TextRef::from(branch).diff(txn, YChange::identity) {
        match &chunk.insert {
            // Strings and embeds.
            Out::Any(_) => has_text = true,
            other => children.extend(branch_of(other)),
        }
    }
    (children, has_text)
}

/// The shared type an output value is, if any.
pub(crate) fn branch_of(out: &Out) -> Option<BranchPtr> {
    use yrs::branch::Branch;
    Some(match out {
        Out::YText(r) => BranchPtr::from(AsRef::<Branch>::as_ref(r)),
        Out::YArray(r) => BranchPtr::from(AsRef::<Branch>::as_ref(r)),
        Out::YMap(r) => BranchPtr::from(AsRef::<Branch>::as_ref(r)),
        Out::YXmlElement(r) => BranchPtr::from(AsRef::<Branch>::as_ref(r)),
        Out::YXmlFragment(r) => BranchPtr::from(AsRef::<Branch>::as_ref(r)),
        Out::YXmlText(r) => BranchPtr::from(AsRef::<Branch>::as_ref(r)),
        Out::UndefinedRef(branch) => *branch,
        Out::Any(_) | Out::YDoc(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use crate::Document;
    use serde_json::json;
    use yrs::types::xml::XmlFragment;
    use yrs::{
        Array, Doc, Map, ReadTxn, StateVector, Text, Transact, XmlElementPrelim, XmlTextPrelim,
    };

    /// Builds a document the way a Yjs client would, then reloads it on the
    /// server side where root types are unknown.
    fn reloaded(build: impl Fn(&Doc)) -> Document {
        let doc = Doc::new();
        build(&doc);
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        Document::load(Some(&update), []).expect("reload")
    }

    #[test]
    fn the_text_of_a_root_whose_every_item_was_deleted_is_empty() {
        let doc = reloaded(|d| {
            let t = d.get_or_insert_text("t");
            t.insert(&mut d.transact_mut(), 0, "gone");
            t.remove_range(&mut d.transact_mut(), 0, 4);
        });
        assert_eq!(doc.root_text("t").as_deref(), Some(""));
        let map = reloaded(|d| {
            d.get_or_insert_map("m")
                .insert(&mut d.transact_mut(), "k", 1);
        });
        assert_eq!(map.root_text("m").as_deref(), Some(r#"{"k":1}"#));
    }

    #[test]
    fn every_root_kind_exports_as_json() {
        type Build = fn(&Doc);
        let cases: Vec<(&str, Build, serde_json::Value)> = vec![
            (
                "text",
                |d| {
                    d.get_or_insert_text("t")
                        .insert(&mut d.transact_mut(), 0, "héllo")
                },
                json!({"t": "héllo"}),
            ),
            (
                "map",
                |d| {
                    let m = d.get_or_insert_map("m");
                    let mut txn = d.transact_mut();
                    m.insert(&mut txn, "n", 1.5);
                    m.insert(&mut txn, "s", "x");
                },
                json!({"m": {"n": 1.5, "s": "x"}}),
            ),
            (
                "array",
                |d| {
                    let a = d.get_or_insert_array("a");
                    let mut txn = d.transact_mut();
                    a.push_back(&mut txn, true);
                    a.push_back(&mut txn, "two");
                },
                json!({"a": [true, "two"]}),
            ),
            (
                "xml fragment",
                |d| {
                    let x = d.get_or_insert_xml_fragment("prosemirror");
                    let mut txn = d.transact_mut();
                    let p = x.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
                    p.push_back(&mut txn, XmlTextPrelim::new("hi"));
                },
                json!({"prosemirror": "<paragraph>hi</paragraph>"}),
            ),
            (
                "several roots",
                |d| {
                    d.get_or_insert_text("b")
                        .insert(&mut d.transact_mut(), 0, "B");
                    d.get_or_insert_map("a")
                        .insert(&mut d.transact_mut(), "k", "v");
                },
                json!({"a": {"k": "v"}, "b": "B"}),
            ),
        ];
        for (name, build, expected) in cases {
            assert_eq!(reloaded(build).to_json(), expected, "{name}");
        }
    }

    #[test]
    fn plain_text_of_one_root() {
        let doc = reloaded(|d| {
            d.get_or_insert_text("body")
                .insert(&mut d.transact_mut(), 0, "line 1\nline 2");
            let x = d.get_or_insert_xml_fragment("rich");
            let mut txn = d.transact_mut();
            let p = x.push_back(&mut txn, XmlElementPrelim::empty("p"));
            p.push_back(&mut txn, XmlTextPrelim::new("rich"));
        });
        assert_eq!(doc.root_text("body").as_deref(), Some("line 1\nline 2"));
        assert_eq!(doc.root_text("rich").as_deref(), Some("<p>rich</p>"));
        assert_eq!(doc.root_text("missing"), None);
    }
}
