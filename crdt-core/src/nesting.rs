//! How deeply shared types nest inside one another.
//!
//! yrs deletes, garbage-collects and exports a shared type by recursing into
//! the types it contains. 10 000 nested `Y.Map`s (an 80 KB update) followed
//! by a 6-byte deletion of the outermost one overflow the stack and abort
//! the process. Depth is a property of the document, not of one update, so
//! [`crate::Document`] checks it twice:
//!
//! 1. **Before applying** ([`plan`]): the chain of types that the update,
//!    together with whatever yrs holds pending, can form on its own is at
//!    most `max_type_depth` long. Hanging under a type that is itself at most
//!    `max_type_depth` deep, nothing in the transaction (a deletion, a map
//!    overwrite) recurses deeper than twice the limit.
//! 2. **After integrating** ([`Nesting::check`]): every new live type is at
//!    most `max_type_depth` below its root. If not, the update has already
//!    been integrated and the document must be reloaded.
//!
//! yrs exposes no parent of an item, so parents are derived from the
//! encoding (an item names its parent, or inherits it from its origin or
//! right origin) and, for items outside the update, from yrs's public API:
//! `XmlFragmentRef::parent` when the parent is an XML node, else a
//! `StickyIndex` lookup, which walks the item's left siblings. Those walks
//! are budgeted; past the budget one top-down walk of the document
//! recomputes every depth.

use crate::export::{branch_of, sequence_children};
use crate::validate::{ItemInfo, ItemSink, ParentRef};
use std::collections::HashMap;
use yrs::branch::{Branch, BranchPtr};
use yrs::{Assoc, BranchID, IndexScope, Map, MapRef, ReadTxn, StickyIndex, XmlFragmentRef, ID};

/// Parent lookups that walk siblings, per update, before falling back to
/// one walk of the whole document.
const SLOW_LOOKUPS: usize = 64;

/// Collects the items of an update, merging runs that share a parent.
#[derive(Debug, Default)]
pub(crate) struct Recorder(pub Vec<ItemInfo>);

impl ItemSink for Recorder {
    fn item(&mut self, item: ItemInfo) {
        if let Some(last) = self.0.last_mut() {
            // Typing appends items whose origin is the end of the previous
            // one and which have no right origin: their parent is the
            // previous item's parent, exactly.
            let continues = !item.is_type
                && !last.is_type
                && last.id.client == item.id.client
                && u64::from(last.id.clock) + u64::from(last.len) == u64::from(item.id.clock)
                && item.parent
                    == ParentRef::Neighbours {
                        origin: Some(ID::new(item.id.client, item.id.clock - 1)),
                        right_origin: None,
                    };
            if continues {
                last.len += item.len;
                return;
            }
        }
        self.0.push(item);
    }
}

/// One term of a record's parent depth.
#[derive(Debug, Clone, Copy)]
enum Dep {
    /// The parent is this record's type: depth of that type.
    Type(usize),
    /// The parent is this record's parent.
    Sibling(usize),
    /// The parent is a type outside the records.
    ExternalType(ID),
    /// The parent is the parent of an item outside the records.
    ExternalSibling(ID),
}

/// The items of an update and of yrs's pending structs, and how their
/// parents depend on one another.
#[derive(Debug)]
pub(crate) struct Plan {
    records: Vec<ItemInfo>,
    /// `deps[starts[r]..starts[r + 1]]` are the terms of record `r`; no
    /// terms means a root parent.
    starts: Vec<usize>,
    deps: Vec<Dep>,
    /// Records of type items, by relative depth.
    types: Vec<usize>,
    /// Longest chain of types the records form on their own.
    pub relative_depth: usize,
}

/// Sorted ranges of one disjoint set of records, for lookups by id.
struct Index<'a> {
    records: &'a [ItemInfo],
    order: Vec<usize>,
}

impl<'a> Index<'a> {
    fn new(records: &'a [ItemInfo], range: std::ops::Range<usize>) -> Self {
        let mut order: Vec<usize> = range.collect();
        order.sort_unstable_by_key(|&i| (records[i].id.client, records[i].id.clock));
        Index { records, order }
    }

    fn find(&self, id: &ID) -> Option<usize> {
        let key = (id.client, id.clock);
        let after = self.order.partition_point(|&i| {
            let r = &self.records[i];
            (r.id.client, r.id.clock) <= key
        });
        let i = *self.order.get(after.checked_sub(1)?)?;
        let r = &self.records[i];
        (r.id.client == id.client && u64::from(id.clock) < u64::from(r.id.clock) + u64::from(r.len))
            .then_some(i)
    }
}

/// Relates `records` (pending structs first, `pending` of them, then the
/// update's) and measures the chains of types they form.
pub(crate) fn plan(records: Vec<ItemInfo>, pending: usize) -> Plan {
    let indexes = [
        Index::new(&records, 0..pending),
        Index::new(&records, pending..records.len()),
    ];
    let mut starts = Vec::with_capacity(records.len() + 1);
    let mut deps = Vec::new();
    for record in &records {
        starts.push(deps.len());
        match record.parent {
            ParentRef::Root => {}
            ParentRef::Type(parent) => {
                let mut found = false;
                for index in &indexes {
                    if let Some(j) = index.find(&parent) {
                        if records[j].is_type && records[j].id == parent {
                            deps.push(Dep::Type(j));
                            found = true;
                        }
                    }
                }
                if !found {
                    deps.push(Dep::ExternalType(parent));
                }
            }
            ParentRef::Neighbours {
                origin,
                right_origin,
            } => {
                for neighbour in [origin, right_origin].into_iter().flatten() {
                    let mut found = false;
                    for index in &indexes {
                        if let Some(j) = index.find(&neighbour) {
                            deps.push(Dep::Sibling(j));
                            found = true;
                        }
                    }
                    if !found {
                        deps.push(Dep::ExternalSibling(neighbour));
                    }
                }
            }
        }
    }
    starts.push(deps.len());
    let mut plan = Plan {
        records,
        starts,
        deps,
        types: Vec::new(),
        relative_depth: 0,
    };
    let relative = plan.evaluate(|_| 0);
    let mut types: Vec<usize> = (0..plan.records.len())
        .filter(|&r| plan.records[r].is_type)
        .collect();
    types.sort_by_key(|&r| relative[r]);
    plan.relative_depth = types.last().map_or(0, |&r| relative[r] as usize + 1);
    plan.types = types;
    plan
}

impl Plan {
    /// For every record, the largest depth its parent can have, given the
    /// depth of parents outside the records. Iterative, since chains can be
    /// as long as the update. A record on a cycle never integrates (yrs
    /// waits for its dependencies forever), so a cycle counts as 0.
    fn evaluate(&self, mut external: impl FnMut(Dep) -> u32) -> Vec<u32> {
        const UNVISITED: u8 = 0;
        const ACTIVE: u8 = 1;
        const DONE: u8 = 2;
        let n = self.records.len();
        let mut state = vec![UNVISITED; n];
        let mut value = vec![0u32; n];
        let mut stack: Vec<(usize, usize)> = Vec::new();
        for root in 0..n {
            if state[root] != UNVISITED {
                continue;
            }
            state[root] = ACTIVE;
            stack.push((root, self.starts[root]));
            while let Some(top) = stack.last_mut() {
                let (r, next) = *top;
                if next == self.starts[r + 1] {
                    state[r] = DONE;
                    stack.pop();
                    continue;
                }
                top.1 += 1;
                let (j, plus) = match self.deps[next] {
                    Dep::Type(j) => (j, 1),
                    Dep::Sibling(j) => (j, 0),
                    dep => {
                        value[r] = value[r].max(external(dep));
                        continue;
                    }
                };
                match state[j] {
                    DONE => value[r] = value[r].max(value[j] + plus),
                    ACTIVE => {}
                    _ => {
                        // Come back to this term once `j` is known.
                        top.1 -= 1;
                        state[j] = ACTIVE;
                        stack.push((j, self.starts[j]));
                    }
                }
            }
        }
        value
    }
}

/// Depth of the shared types of one document, kept across updates.
#[derive(Debug, Default)]
pub(crate) struct Nesting {
    /// Depth (root children are 1) of nested types seen so far, or an upper
    /// bound of it: parents never change, so entries never go stale.
    depths: HashMap<ID, u32>,
    /// yrs holds pending structs that may contain types.
    pub pending_types: bool,
}

/// A type nested deeper than allowed is live in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooDeep {
    pub depth: usize,
}

enum Walk {
    Depth(u32),
    OverBudget,
}

struct Lookup<'t, T: ReadTxn> {
    txn: &'t T,
    max: u32,
    slow: usize,
}

impl<T: ReadTxn> Lookup<'_, T> {
    /// The parent of a nested type, exactly: through its XML parent when
    /// it has one, else with a sibling walk.
    fn parent(&mut self, branch: BranchPtr, id: ID) -> Option<Option<BranchPtr>> {
        if let Some(parent) = XmlFragmentRef::from(branch).parent() {
            return Some(Some(BranchPtr::from(AsRef::<Branch>::as_ref(&parent))));
        }
        self.parent_of_item(id)
    }

    /// The parent of any item, with a sibling walk; `None` when over budget.
    fn parent_of_item(&mut self, id: ID) -> Option<Option<BranchPtr>> {
        if self.slow == 0 {
            return None;
        }
        self.slow -= 1;
        let index = StickyIndex::new(IndexScope::Relative(id), Assoc::After);
        Some(index.get_offset(self.txn).map(|offset| offset.branch))
    }
}

impl Nesting {
    /// Depth of `branch` (roots are 0), walking up to the nearest known
    /// ancestor; capped at `max + 1`.
    fn branch_depth<T: ReadTxn>(&mut self, lookup: &mut Lookup<T>, branch: BranchPtr) -> Walk {
        let mut path: Vec<ID> = Vec::new();
        let mut current = branch;
        let base = loop {
            let id = match current.id() {
                BranchID::Root(_) => break 0,
                BranchID::Nested(id) => id,
            };
            if let Some(&depth) = self.depths.get(&id) {
                break depth;
            }
            path.push(id);
            if path.len() as u32 > lookup.max {
                // Too deep whatever lies above; nothing here is exact.
                return Walk::Depth(lookup.max + 1);
            }
            match lookup.parent(current, id) {
                None => return Walk::OverBudget,
                // The parent was collected: nothing can be nested under it.
                Some(None) => break 0,
                Some(Some(parent)) => current = parent,
            }
        };
        let mut depth = base;
        for id in path.into_iter().rev() {
            depth = (depth + 1).min(lookup.max + 1);
            self.depths.insert(id, depth);
        }
        Walk::Depth(depth)
    }

    /// Depth of the parent an external term names, looked up in the
    /// document; `None` when the sibling walks are over budget.
    fn external_depth<T: ReadTxn>(&mut self, lookup: &mut Lookup<T>, dep: Dep) -> Option<u32> {
        let parent = match dep {
            // An explicit parent that is not a live type: the item is
            // collected or waits for it, nothing hangs under it yet.
            Dep::ExternalType(id) => match BranchID::get_nested(lookup.txn, &id) {
                Some(branch) => branch,
                None => return Some(0),
            },
            Dep::ExternalSibling(id) => match lookup.parent_of_item(id)? {
                Some(parent) => parent,
                None => return Some(0),
            },
            Dep::Type(_) | Dep::Sibling(_) => unreachable!("only external terms are looked up"),
        };
        match self.branch_depth(lookup, parent) {
            Walk::Depth(depth) => Some(depth),
            Walk::OverBudget => None,
        }
    }

    /// Before integrating: an upper bound of the depth each type of `plan`
    /// will have, from the document as it is. Past the lookup budget, a
    /// parent outside the plan counts as `max` deep (no live type is deeper).
    pub(crate) fn precheck<T: ReadTxn>(
        &mut self,
        txn: &T,
        plan: &Plan,
        max: usize,
    ) -> Result<(), TooDeep> {
        if plan.types.is_empty() {
            return Ok(());
        }
        let max = max as u32;
        let mut lookup = Lookup {
            txn,
            max,
            slow: SLOW_LOOKUPS,
        };
        let mut external: HashMap<ID, u32> = HashMap::new();
        let bounds = plan.evaluate(|dep| {
            let (Dep::ExternalType(id) | Dep::ExternalSibling(id)) = dep else {
                unreachable!("only external terms are looked up")
            };
            if let Some(&depth) = external.get(&id) {
                return depth;
            }
            let depth = self.external_depth(&mut lookup, dep).unwrap_or(max);
            external.insert(id, depth);
            depth
        });
        let deepest = plan.types.iter().map(|&r| bounds[r] + 1).max().unwrap_or(0);
        if deepest > max {
            return Err(TooDeep {
                depth: deepest as usize,
            });
        }
        Ok(())
    }

    /// Checks every type of `plan` that is now live in the document.
    pub(crate) fn check<T: ReadTxn>(
        &mut self,
        txn: &T,
        plan: &Plan,
        max: usize,
    ) -> Result<(), TooDeep> {
        let max = max as u32;
        let mut lookup = Lookup {
            txn,
            max,
            slow: SLOW_LOOKUPS,
        };
        let mut over_budget = false;
        let mut external: HashMap<ID, u32> = HashMap::new();
        let bounds = plan.evaluate(|dep| {
            if over_budget {
                return 0;
            }
            let id = match dep {
                Dep::ExternalType(id) | Dep::ExternalSibling(id) => id,
                _ => unreachable!("only external terms are looked up"),
            };
            if let Some(&depth) = external.get(&id) {
                return depth;
            }
            let depth = match dep {
                // An explicit parent that is not a live type: the item is
                // collected, nothing hangs under it.
                Dep::ExternalType(id) => match BranchID::get_nested(txn, &id) {
                    Some(branch) => match self.branch_depth(&mut lookup, branch) {
                        Walk::Depth(depth) => depth,
                        Walk::OverBudget => {
                            over_budget = true;
                            0
                        }
                    },
                    None => 0,
                },
                _ => match lookup.parent_of_item(id) {
                    None => {
                        over_budget = true;
                        0
                    }
                    Some(None) => 0,
                    Some(Some(parent)) => match self.branch_depth(&mut lookup, parent) {
                        Walk::Depth(depth) => depth,
                        Walk::OverBudget => {
                            over_budget = true;
                            0
                        }
                    },
                },
            };
            external.insert(id, depth);
            depth
        });
        if !over_budget {
            let mut fits = true;
            for &r in &plan.types {
                let id = plan.records[r].id;
                let Some(branch) = BranchID::get_nested(txn, &id) else {
                    continue;
                };
                if branch.is_deleted() {
                    continue;
                }
                // Exact when the parent is an XML node, else an upper bound.
                let depth = match XmlFragmentRef::from(branch).parent() {
                    Some(parent) => {
                        match self.branch_depth(
                            &mut lookup,
                            BranchPtr::from(AsRef::<Branch>::as_ref(&parent)),
                        ) {
                            Walk::Depth(depth) => depth + 1,
                            Walk::OverBudget => {
                                over_budget = true;
                                break;
                            }
                        }
                    }
                    None => bounds[r] + 1,
                };
                self.depths.insert(id, depth.min(max + 1));
                if depth > max {
                    fits = false;
                    break;
                }
            }
            if fits && !over_budget {
                return Ok(());
            }
        }
        // Over budget, or too deep by an estimate: measure exactly.
        self.measure(txn, max)
    }

    /// Walks every live type from the roots and records its exact depth.
    pub(crate) fn measure<T: ReadTxn>(&mut self, txn: &T, max: u32) -> Result<(), TooDeep> {
        self.depths.clear();
        let mut stack: Vec<(BranchPtr, u32)> = txn
            .root_refs()
            .filter_map(|(_, out)| branch_of(&out))
            .map(|branch| (branch, 0))
            .collect();
        while let Some((branch, depth)) = stack.pop() {
            let mut children: Vec<BranchPtr> = MapRef::from(branch)
                .iter(txn)
                .filter_map(|(_, out)| branch_of(&out))
                .collect();
            children.extend(sequence_children(txn, branch).0);
            for child in children {
                if child.is_deleted() {
                    continue;
                }
                let depth = depth + 1;
                if depth > max {
                    return Err(TooDeep {
                        depth: depth as usize,
                    });
                }
                if let BranchID::Nested(id) = child.id() {
                    self.depths.insert(id, depth);
                }
                stack.push((child, depth));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::document::{Document, DocumentError};
    use crate::validate::DEFAULT_MAX_TYPE_DEPTH;
    use yrs::types::xml::XmlFragment;
    use yrs::updates::decoder::Decode;
    use yrs::{
        Array, ArrayPrelim, ArrayRef, Doc, Map, MapPrelim, MapRef, ReadTxn, Transact,
        XmlElementPrelim, XmlElementRef,
    };

    /// How each level of a chain of nested types is written.
    #[derive(Debug, Clone, Copy)]
    enum Shape {
        /// A map under key "k" of the previous map: explicit parent.
        Maps,
        /// An array pushed after a number written by an earlier update: the
        /// parent comes from an origin outside the update.
        ArraysAfterValues,
        /// An XML element in the previous element (ProseMirror's lists).
        Xml,
    }

    /// One update per level, `levels` deep.
    fn chain(shape: Shape, levels: usize) -> Vec<Vec<u8>> {
        let doc = Doc::with_client_id(1);
        let mut updates = Vec::new();
        match shape {
            Shape::Maps => {
                let mut current: MapRef = doc.get_or_insert_map("m");
                for _ in 0..levels {
                    let mut txn = doc.transact_mut();
                    current = current.insert(&mut txn, "k", MapPrelim::default());
                    updates.push(txn.encode_update_v1());
                }
            }
            Shape::ArraysAfterValues => {
                let mut current: ArrayRef = doc.get_or_insert_array("a");
                for _ in 0..levels {
                    let mut txn = doc.transact_mut();
                    current.push_back(&mut txn, 0);
                    updates.push(txn.encode_update_v1());
                    drop(txn);
                    let mut txn = doc.transact_mut();
                    current = current.push_back(&mut txn, ArrayPrelim::default());
                    updates.push(txn.encode_update_v1());
                }
            }
            Shape::Xml => {
                let root = doc.get_or_insert_xml_fragment("prosemirror");
                let mut txn = doc.transact_mut();
                let mut current: XmlElementRef =
                    root.push_back(&mut txn, XmlElementPrelim::empty("list"));
                updates.push(txn.encode_update_v1());
                drop(txn);
                for _ in 1..levels {
                    let mut txn = doc.transact_mut();
                    current = current.push_back(&mut txn, XmlElementPrelim::empty("list"));
                    updates.push(txn.encode_update_v1());
                }
            }
        }
        updates
    }

    fn one_update(updates: &[Vec<u8>]) -> Vec<u8> {
        yrs::merge_updates_v1(updates).expect("merges")
    }

    #[test]
    fn chains_up_to_the_limit_apply_and_delete() {
        for shape in [Shape::Maps, Shape::ArraysAfterValues, Shape::Xml] {
            let updates = chain(shape, DEFAULT_MAX_TYPE_DEPTH);
            let mut doc = Document::new();
            for (i, update) in updates.iter().enumerate() {
                doc.apply_update_v1(update)
                    .unwrap_or_else(|e| panic!("{shape:?} update {i}: {e}"));
            }
            let mut at_once = Document::new();
            at_once
                .apply_update_v1(&one_update(&updates))
                .unwrap_or_else(|e| panic!("{shape:?} in one update: {e}"));
            assert_eq!(at_once.state_vector(), doc.state_vector(), "{shape:?}");
            doc.verify_roundtrip().expect("round-trips");
        }
    }

    #[test]
    fn one_level_too_many_is_refused_before_applying() {
        for shape in [Shape::Maps, Shape::ArraysAfterValues, Shape::Xml] {
            let updates = chain(shape, DEFAULT_MAX_TYPE_DEPTH + 1);
            let (last, before) = updates.split_last().expect("levels");
            let mut doc = Document::new();
            for update in before {
                doc.apply_update_v1(update).expect("within the limit");
            }
            let before = doc.encode_state_v1();
            assert_eq!(
                doc.apply_update_v1(last),
                Err(DocumentError::TypesTooDeep { depth: 65, max: 64 }),
                "{shape:?}"
            );
            assert_eq!(doc.encode_state_v1(), before, "{shape:?}");
        }
    }

    #[test]
    fn a_deep_chain_in_one_update_is_refused_before_applying() {
        for shape in [Shape::Maps, Shape::ArraysAfterValues, Shape::Xml] {
            let update = one_update(&chain(shape, 1000));
            let mut doc = Document::new();
            let err = doc.apply_update_v1(&update).expect_err("too deep");
            assert!(
                matches!(
                    err,
                    DocumentError::TypesTooDeep {
                        depth: 1000,
                        max: 64
                    }
                ),
                "{shape:?}: {err}"
            );
            assert_eq!(doc.encode_state_v1(), Document::new().encode_state_v1());
        }
    }

    /// Levels delivered last to first are held until the first arrives,
    /// then integrated in order: the one level too many is dropped, and
    /// what depends on it waits for it forever.
    #[test]
    fn chains_delivered_backwards_stop_at_the_limit() {
        let updates = chain(Shape::Maps, 200);
        let mut doc = Document::new();
        for (i, update) in updates.iter().enumerate().rev() {
            doc.apply_update_v1(update)
                .unwrap_or_else(|e| panic!("update {i}: {e}"));
        }
        let mut depth = 0;
        let mut value = &doc.to_json()["m"];
        while let Some(inner) = value.get("k") {
            depth += 1;
            value = inner;
        }
        assert_eq!(depth, DEFAULT_MAX_TYPE_DEPTH);
        doc.verify_roundtrip().expect("round-trips");
    }

    /// The attack that aborts an unguarded server: build a deep chain, then
    /// delete its outermost map. The server persists what applied, reloads
    /// when poisoned, and survives the deletion.
    #[test]
    fn deleting_a_deep_chain_cannot_be_reached() {
        let doc = Doc::with_client_id(1);
        let root = doc.get_or_insert_map("m");
        let mut updates = Vec::new();
        let mut current = root.clone();
        for _ in 0..300 {
            let mut txn = doc.transact_mut();
            current = current.insert(&mut txn, "k", MapPrelim::default());
            updates.push(txn.encode_update_v1());
        }
        let delete = {
            let mut txn = doc.transact_mut();
            root.insert(&mut txn, "k", MapPrelim::default());
            txn.encode_update_v1()
        };
        updates.push(delete);
        let mut server = Document::new();
        let mut persisted: Vec<&[u8]> = Vec::new();
        let (mut poisoned, mut refused) = (0, 0);
        for update in &updates {
            match server.apply_update_v1(update) {
                Ok(_) => persisted.push(update),
                Err(DocumentError::Poisoned) => {
                    poisoned += 1;
                    server = Document::load(None, persisted.iter().copied()).expect("reload");
                }
                Err(DocumentError::TypesTooDeep { .. }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(poisoned, 0);
        assert_eq!(
            refused, 1,
            "the first level too many; those above wait for it"
        );
        // The attacker's own deletion waits behind the levels that never
        // came; another client deletes what the server holds.
        let other = Doc::with_client_id(2);
        let snapshot = server.encode_state_v1();
        other
            .transact_mut()
            .apply_update(yrs::Update::decode_v1(&snapshot).expect("decodes"))
            .expect("applies");
        let root = other.get_or_insert_map("m");
        let delete = {
            let mut txn = other.transact_mut();
            root.insert(&mut txn, "k", MapPrelim::default());
            txn.encode_update_v1()
        };
        server.apply_update_v1(&delete).expect("deletes 64 levels");
        assert_eq!(server.to_json(), serde_json::json!({"m": {"k": {}}}));
    }

    #[test]
    fn wide_documents_stay_cheap() {
        // 2000 maps side by side in an array, each with a nested map, sent
        // one per update: every check walks siblings at most once per update.
        let doc = Doc::with_client_id(1);
        let array = doc.get_or_insert_array("rows");
        let mut server = Document::new();
        let started = std::time::Instant::now();
        for _ in 0..2000 {
            let mut txn = doc.transact_mut();
            let row = array.push_back(&mut txn, MapPrelim::default());
            row.insert(&mut txn, "cell", MapPrelim::default());
            let update = txn.encode_update_v1();
            drop(txn);
            server.apply_update_v1(&update).expect("applies");
        }
        let whole = doc
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        Document::load(Some(&whole), []).expect("loads");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }
}
