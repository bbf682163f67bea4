//! Exports of a document's roots to JSON and plain text.
//!
//! A document rebuilt from updates does not know its root types (Yjs never
//! encodes them); the server has to infer each one from its content, the way
//! yrs does for `Out::UndefinedRef`, plus one step yrs lacks: a list whose
//! live children are all XML nodes is an XmlFragment (what ProseMirror and
//! Tiptap write), not an Array.

use serde_json::{Map as JsonMap, Value};
use yrs::branch::BranchPtr;
use yrs::types::{AsPrelim, ToJson};
use yrs::{
    Any, Array, ArrayRef, GetString, In, MapRef, Out, ReadTxn, TextRef, XmlFragmentRef, XmlTextRef,
};

/// The shape of a root as inferred from its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    Text,
    Map,
    Array,
    XmlFragment,
    XmlText,
}

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
            RootKind::Map | RootKind::Array => {
                out_to_json(txn, &Out::UndefinedRef(branch)).to_string()
            }
        },
        other => out_to_json(txn, &other).to_string(),
    })
}

fn out_to_json<T: ReadTxn>(txn: &T, out: &Out) -> Value {
    match out {
        Out::YText(t) => Value::String(t.get_string(txn)),
        Out::YXmlFragment(x) => Value::String(x.get_string(txn)),
        Out::YXmlText(x) => Value::String(x.get_string(txn)),
        Out::YXmlElement(x) => Value::String(x.get_string(txn)),
        Out::UndefinedRef(branch) => match infer_kind(txn, *branch) {
            RootKind::Text => Value::String(TextRef::from(*branch).get_string(txn)),
            RootKind::XmlFragment => Value::String(XmlFragmentRef::from(*branch).get_string(txn)),
            RootKind::XmlText => Value::String(XmlTextRef::from(*branch).get_string(txn)),
            RootKind::Map => any_to_json(&MapRef::from(*branch).to_json(txn)),
            RootKind::Array => any_to_json(&ArrayRef::from(*branch).to_json(txn)),
        },
        other => any_to_json(&other.to_json(txn)),
    }
}

fn any_to_json(any: &Any) -> Value {
    serde_json::to_value(any).unwrap_or(Value::Null)
}

pub fn infer_kind<T: ReadTxn>(txn: &T, branch: BranchPtr) -> RootKind {
    match Out::UndefinedRef(branch).as_prelim(txn) {
        In::Text(_) => RootKind::Text,
        In::XmlText(_) => RootKind::XmlText,
        In::Array(_) => {
            let array = ArrayRef::from(branch);
            let mut children = array.iter(txn).peekable();
            let all_xml = children.peek().is_some()
                && children.all(|child| {
                    matches!(
                        child,
                        Out::YXmlElement(_) | Out::YXmlText(_) | Out::YXmlFragment(_)
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
