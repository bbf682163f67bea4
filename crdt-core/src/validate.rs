//! Structural validation of Yjs v1 updates, run before yrs sees the bytes.
//!
//! yrs 0.28.1 trusts its input in ways a server cannot afford: nested `Any`
//! values are decoded by recursion (100 000 nested arrays overflow a worker's
//! stack and abort the process), declared counts drive allocations, clocks are
//! added without overflow checks, and some content it decodes cannot be
//! decoded again once re-encoded. [`validate_update_v1`] walks the same
//! grammar as yrs's v1 decoder (`Update::decode`, `ItemContent::decode`,
//! `Any::decode`, `IdSet::decode`) without building anything, and rejects:
//!
//! - truncated input and trailing bytes;
//! - declared lengths and counts larger than the remaining bytes could hold;
//! - `Any` and JSON values nested deeper than [`ValidationLimits::max_depth`];
//! - client ids beyond 53 bits and clocks whose range ends past
//!   [`ValidationLimits::max_clock`] (yrs mixes `u32` and `i32` clock arithmetic);
//! - unknown struct, content, type and value tags, and legacy JSON content
//!   (ref 2), which yrs 0.28.1 decodes with one element more than it encodes;
//! - a client listed twice, empty GC or skip structs, parent info other than 0/1;
//! - more structs or delete-set ranges than the per-update budget.
//!
//! The grammar, as yrs and Yjs write it:
//!
//! ```text
//! update     = varUint(n) section^n delete_set
//! section    = varUint(count) varUint(client) varUint(clock) struct^count
//! struct     = 0 varUint(len)                                   GC
//!            | 10 varUint(len)                                  skip
//!            | info [id] [id] [parent [varString(key)]] content item
//! info       = 0x80 has origin | 0x40 has right origin | 0x20 has key | content ref (1..=9)
//! parent     = varUint(1) varString(root name) | varUint(0) id  (only without origins)
//! id         = varUint(client) varUint(clock)
//! content    = 1 varUint(len)                deleted
//!            | 3 varUint8Array               binary
//!            | 4 varString                   string (length in UTF-16 units)
//!            | 5 varString(JSON)             embed
//!            | 6 varString varString(JSON)   format
//!            | 7 u8(type ref) [varString]    shared type (name for XmlElement)
//!            | 8 varUint(n) any^n            any
//!            | 9 varString(guid) any         subdocument
//! any        = 127 undefined | 126 null | 125 varInt | 124 f32 | 123 f64 | 122 i64
//!            | 121 false | 120 true | 119 varString | 118 varUint(n) (varString any)^n
//!            | 117 varUint(n) any^n | 116 varUint8Array
//! delete_set = varUint(n) (varUint(client) varUint(m) (varUint(clock) varUint(len))^m)^n
//! ```
//!
//! Validation builds nothing but a list of the clients it met (16 bytes per
//! client, at most a third of the input's size in entries), to find a
//! client listed twice.

use crate::state_vector::MAX_CLIENT_ID;
use crate::wire::{Reader, WireError};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use thiserror::Error;
use yrs::block::ClientID;
use yrs::ID;

/// Default for [`ValidationLimits::max_depth`].
pub const DEFAULT_MAX_DEPTH: usize = 64;
/// Default for [`ValidationLimits::max_type_depth`].
pub const DEFAULT_MAX_TYPE_DEPTH: usize = 64;
/// Default for [`ValidationLimits::max_structs`].
pub const DEFAULT_MAX_STRUCTS: usize = 1 << 20;
/// Default for [`ValidationLimits::max_delete_ranges`].
pub const DEFAULT_MAX_DELETE_RANGES: usize = 1 << 20;
/// Default for [`ValidationLimits::max_clock`]: yrs computes clock offsets as
/// `i32`, so clocks at or past 2^31 make it overflow.
pub const DEFAULT_MAX_CLOCK: u32 = i32::MAX as u32;
/// Depth limits above this are treated as this: the validator, yrs's decoder
/// and everything that walks a value recurse once per level.
pub const DEPTH_CEILING: usize = 256;

/// What an update may contain. `Default` is for updates from clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationLimits {
    /// Deepest nesting of `Any` arrays and maps, and of JSON arrays and
    /// objects in embeds and formats. Capped at [`DEPTH_CEILING`].
    pub max_depth: usize,
    /// Deepest nesting of shared types (a map in an array in a map...).
    /// Depends on the document, so [`crate::Document`] enforces it, not
    /// [`validate_update_v1`]. Capped at [`DEPTH_CEILING`].
    pub max_type_depth: usize,
    /// Most structs (items, GC and skip ranges) in one update: bounds the
    /// work yrs does to integrate one message.
    pub max_structs: usize,
    /// Most delete-set ranges in one update.
    pub max_delete_ranges: usize,
    /// Largest clock a struct or a deleted range may end at.
    pub max_clock: u32,
}

impl Default for ValidationLimits {
    fn default() -> Self {
        Self::untrusted()
    }
}

impl ValidationLimits {
    /// For updates from clients and peers.
    pub const fn untrusted() -> Self {
        ValidationLimits {
            max_depth: DEFAULT_MAX_DEPTH,
            max_type_depth: DEFAULT_MAX_TYPE_DEPTH,
            max_structs: DEFAULT_MAX_STRUCTS,
            max_delete_ranges: DEFAULT_MAX_DELETE_RANGES,
            max_clock: DEFAULT_MAX_CLOCK,
        }
    }

    fn depth(&self) -> usize {
        self.max_depth.min(DEPTH_CEILING)
    }
}

/// Why an update was rejected, and where.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid update at byte {offset}: {kind}")]
pub struct ValidationError {
    /// Offset of the field that failed, from the start of the update.
    pub offset: usize,
    /// What is wrong there.
    pub kind: InvalidUpdate,
}

impl ValidationError {
    /// Short, stable label for metrics and tests.
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }
}

/// What is wrong with a rejected update.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum InvalidUpdate {
    /// The lib0 encoding is malformed, or a length or clock does not fit in
    /// the 32 bits yrs reads it into.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A count larger than the remaining bytes could hold; refused before
    /// yrs allocates for it.
    #[error("declares {declared} {what} but only {remaining} bytes remain")]
    TooManyDeclared {
        /// What is counted.
        what: &'static str,
        /// The declared count.
        declared: u64,
        /// Bytes left after the count.
        remaining: usize,
    },
    /// `Any` or JSON values nested deeper than the limit; yrs would decode
    /// them by recursion.
    #[error("values nested deeper than {max} levels")]
    TooDeep {
        /// [`ValidationLimits::max_depth`], capped at [`DEPTH_CEILING`].
        max: usize,
    },
    /// A client id beyond the 53 bits Yjs uses.
    #[error("client id {0} exceeds 53 bits")]
    ClientIdTooLarge(u64),
    /// A clock, struct or deleted range that ends past
    /// [`ValidationLimits::max_clock`], where yrs's clock arithmetic
    /// overflows.
    #[error("clock range {clock}+{len} of client {client} ends past {max}")]
    ClockOverflow {
        /// The client it belongs to.
        client: u64,
        /// Where it starts.
        clock: u64,
        /// Its length in clock units; 0 for a lone clock.
        len: u64,
        /// The `max_clock` in force.
        max: u32,
    },
    /// A struct info byte (given whole) that is neither GC (0) nor skip
    /// (10) and whose content ref (low 5 bits) is not 1 to 9.
    #[error("unknown struct info {0:#04x}")]
    UnknownContent(u8),
    /// Legacy JSON content (ref 2): yrs 0.28.1 decodes it with one element
    /// more than it encodes, so a document holding it would not reload.
    #[error("legacy JSON content (ref 2) is not accepted: yrs cannot reload it")]
    JsonContent,
    /// A shared-type ref yrs does not decode; 7 (weak link) needs a yrs
    /// feature Quire leaves off.
    #[error("unknown shared type ref {0}")]
    UnknownTypeRef(u8),
    /// An `Any` tag outside 116 to 127.
    #[error("unknown value tag {0}")]
    UnknownValueTag(u8),
    /// A varint integer longer than 10 bytes or beyond `i64`, which yrs
    /// would shift past 64 bits or negate into overflow.
    #[error("integer value does not fit in 64 bits")]
    IntegerOverflow,
    /// An item without origins whose parent info is neither 1 (a root, by
    /// name) nor 0 (a type, by id).
    #[error("parent info must be 0 or 1, not {0}")]
    InvalidParentInfo(u32),
    /// An embed or format value that yrs's JSON parser would refuse
    /// (integers must fit in `i64`); serde_json's message.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// A GC or skip struct covering no clock.
    #[error("GC or skip struct of length 0")]
    EmptyStruct,
    /// A client with two sections, or two delete-set entries.
    #[error("client {0} is listed twice")]
    DuplicateClient(u64),
    /// More structs than [`ValidationLimits::max_structs`].
    #[error("more than {max} structs")]
    TooManyStructs {
        /// The budget.
        max: usize,
    },
    /// More delete-set ranges than [`ValidationLimits::max_delete_ranges`].
    #[error("more than {max} deleted ranges")]
    TooManyDeleteRanges {
        /// The budget.
        max: usize,
    },
}

impl InvalidUpdate {
    /// Short, stable label, the one [`ValidationError::reason`] gives.
    pub fn reason(&self) -> &'static str {
        match self {
            InvalidUpdate::Wire(e) => e.reason(),
            InvalidUpdate::TooManyDeclared { .. } => "count_too_large",
            InvalidUpdate::TooDeep { .. } => "too_deep",
            InvalidUpdate::ClientIdTooLarge(_) => "client_id_too_large",
            InvalidUpdate::ClockOverflow { .. } => "clock_overflow",
            InvalidUpdate::UnknownContent(_) => "unknown_content",
            InvalidUpdate::JsonContent => "json_content",
            InvalidUpdate::UnknownTypeRef(_) => "unknown_type_ref",
            InvalidUpdate::UnknownValueTag(_) => "unknown_value_tag",
            InvalidUpdate::IntegerOverflow => "integer_overflow",
            InvalidUpdate::InvalidParentInfo(_) => "invalid_parent_info",
            InvalidUpdate::InvalidJson(_) => "invalid_json",
            InvalidUpdate::EmptyStruct => "empty_struct",
            InvalidUpdate::DuplicateClient(_) => "duplicate_client",
            InvalidUpdate::TooManyStructs { .. } => "too_many_structs",
            InvalidUpdate::TooManyDeleteRanges { .. } => "too_many_delete_ranges",
        }
    }
}

/// What a valid update holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateSummary {
    /// Structs: items, GC and skip ranges.
    pub structs: usize,
    /// Items of shared-type content (`Y.Map`, `Y.Text`... created by this update).
    pub type_items: usize,
    /// Ranges in the delete set.
    pub delete_ranges: usize,
}

/// Checks that `update` is a well-formed v1 update within `limits`.
pub fn validate_update_v1(
    update: &[u8],
    limits: &ValidationLimits,
) -> Result<UpdateSummary, ValidationError> {
    validate_with(update, limits, &mut ())
}

/// The parent an item names in the encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParentRef {
    /// A root type, by name.
    Root,
    /// The shared type created by the item with this id.
    Type(ID),
    /// Not encoded: the parent of the item at the origin or right origin.
    Neighbours {
        origin: Option<ID>,
        right_origin: Option<ID>,
    },
}

/// An item that takes part in the document (length > 0), as the validator
/// saw it. GC and skip ranges are not reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ItemInfo {
    pub id: ID,
    pub len: u32,
    pub parent: ParentRef,
    pub is_type: bool,
}

/// Receives the structs of a valid prefix of the update, in encoding order.
pub(crate) trait ItemSink {
    fn item(&mut self, _item: ItemInfo) {}
    /// A client section begins at `clock`.
    fn section(&mut self, _client: u64, _clock: u32) {}
    /// A skip struct: the update leaves `clock..clock + len` out.
    fn skip(&mut self, _client: u64, _clock: u32, _len: u32) {}
}

impl ItemSink for () {}

pub(crate) fn validate_with<S: ItemSink>(
    update: &[u8],
    limits: &ValidationLimits,
    sink: &mut S,
) -> Result<UpdateSummary, ValidationError> {
    let mut v = Validator {
        r: Reader::new(update),
        limits: *limits,
        max_depth: limits.depth(),
        summary: UpdateSummary::default(),
        sink,
    };
    v.update()?;
    Ok(v.summary)
}

struct Validator<'a, 's, S> {
    r: Reader<'a>,
    limits: ValidationLimits,
    max_depth: usize,
    summary: UpdateSummary,
    sink: &'s mut S,
}

type Result<T, E = ValidationError> = std::result::Result<T, E>;

const INFO_ORIGIN: u8 = 0b1000_0000;
const INFO_RIGHT_ORIGIN: u8 = 0b0100_0000;
const INFO_PARENT_SUB: u8 = 0b0010_0000;
const INFO_CONTENT: u8 = 0b0001_1111;

const STRUCT_GC: u8 = 0;
const STRUCT_SKIP: u8 = 10;

const CONTENT_DELETED: u8 = 1;
const CONTENT_JSON: u8 = 2;
const CONTENT_BINARY: u8 = 3;
const CONTENT_STRING: u8 = 4;
const CONTENT_EMBED: u8 = 5;
const CONTENT_FORMAT: u8 = 6;
const CONTENT_TYPE: u8 = 7;
const CONTENT_ANY: u8 = 8;
const CONTENT_DOC: u8 = 9;

const TYPE_XML_ELEMENT: u8 = 3;
/// Array, Map, Text, XmlElement, XmlFragment, XmlHook, XmlText, Doc, Undefined.
/// 7 (weak link) is only decoded when yrs has its `weak` feature, which Quire does not enable.
const KNOWN_TYPE_REFS: [u8; 9] = [0, 1, 2, 3, 4, 5, 6, 9, 15];

const ANY_UNDEFINED: u8 = 127;
const ANY_NULL: u8 = 126;
const ANY_INTEGER: u8 = 125;
const ANY_FLOAT32: u8 = 124;
const ANY_FLOAT64: u8 = 123;
const ANY_BIGINT: u8 = 122;
const ANY_FALSE: u8 = 121;
const ANY_TRUE: u8 = 120;
const ANY_STRING: u8 = 119;
const ANY_MAP: u8 = 118;
const ANY_ARRAY: u8 = 117;
const ANY_BUFFER: u8 = 116;

/// Clients listed in one part of the update, to find one listed twice.
/// Yjs and yrs write sections in descending client order, which needs no
/// sort; any other order is sorted once at the end.
#[derive(Default)]
struct Clients {
    seen: Vec<(u64, usize)>,
    unordered: bool,
}

impl Clients {
    fn push(&mut self, client: u64, at: usize) {
        if let Some(&(last, _)) = self.seen.last() {
            self.unordered |= client >= last;
        }
        self.seen.push((client, at));
    }

    /// The second occurrence of a client listed twice, if any.
    fn duplicate(mut self) -> Option<(u64, usize)> {
        if !self.unordered {
            return None;
        }
        self.seen.sort_unstable();
        self.seen
            .windows(2)
            .find(|pair| pair[0].0 == pair[1].0)
            .map(|pair| pair[1])
    }
}

impl<'a, S: ItemSink> Validator<'a, '_, S> {
    fn fail<T>(&self, offset: usize, kind: InvalidUpdate) -> Result<T> {
        Err(ValidationError { offset, kind })
    }

    fn wire<T>(&self, offset: usize, read: Result<T, WireError>) -> Result<T> {
        read.map_err(|e| ValidationError {
            offset,
            kind: e.into(),
        })
    }

    fn u8(&mut self, what: &'static str) -> Result<u8> {
        let at = self.r.position();
        let read = self.r.read_u8(what);
        self.wire(at, read)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        let at = self.r.position();
        let read = self.r.read_var_u32(what);
        self.wire(at, read)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        let at = self.r.position();
        let read = self.r.read_var_u64(what);
        self.wire(at, read)
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let at = self.r.position();
        // yrs reads byte lengths as u32.
        let read = self.r.clone().read_var_u32(what);
        self.wire(at, read)?;
        let read = self.r.read_var_bytes(what);
        self.wire(at, read)
    }

    fn string(&mut self, what: &'static str) -> Result<&'a str> {
        let at = self.r.position();
        let read = self.r.clone().read_var_u32(what);
        self.wire(at, read)?;
        let read = self.r.read_var_string(what);
        self.wire(at, read)
    }

    fn fixed(&mut self, len: usize, what: &'static str) -> Result<()> {
        let at = self.r.position();
        let read = self.r.read_exact(len, what);
        self.wire(at, read).map(drop)
    }

    /// A declared count whose elements take at least `min_bytes` each.
    fn count(
        &mut self,
        what: &'static str,
        declared: u64,
        at: usize,
        min_bytes: u64,
    ) -> Result<u64> {
        let remaining = self.r.remaining();
        if declared.saturating_mul(min_bytes) > remaining as u64 {
            return self.fail(
                at,
                InvalidUpdate::TooManyDeclared {
                    what,
                    declared,
                    remaining,
                },
            );
        }
        Ok(declared)
    }

    fn count_u32(&mut self, what: &'static str, min_bytes: u64) -> Result<u64> {
        let at = self.r.position();
        let declared = self.u32(what)?;
        self.count(what, u64::from(declared), at, min_bytes)
    }

    fn count_u64(&mut self, what: &'static str, min_bytes: u64) -> Result<u64> {
        let at = self.r.position();
        let declared = self.u64(what)?;
        self.count(what, declared, at, min_bytes)
    }

    fn client(&mut self, what: &'static str) -> Result<u64> {
        let at = self.r.position();
        let client = self.u64(what)?;
        if client > MAX_CLIENT_ID {
            return self.fail(at, InvalidUpdate::ClientIdTooLarge(client));
        }
        Ok(client)
    }

    fn clock(&mut self, what: &'static str, client: u64) -> Result<u32> {
        let at = self.r.position();
        let clock = self.u32(what)?;
        if clock > self.limits.max_clock {
            return self.fail(
                at,
                InvalidUpdate::ClockOverflow {
                    client,
                    clock: u64::from(clock),
                    len: 0,
                    max: self.limits.max_clock,
                },
            );
        }
        Ok(clock)
    }

    fn id(&mut self, what: &'static str) -> Result<ID> {
        let client = self.client(what)?;
        let clock = self.clock(what, client)?;
        Ok(ID::new(ClientID::new(client), clock))
    }

    /// Checks that `clock + len` stays within `max_clock`.
    fn range_end(&self, at: usize, client: u64, clock: u64, len: u64) -> Result<u64> {
        let end = clock + len;
        if end > u64::from(self.limits.max_clock) {
            return self.fail(
                at,
                InvalidUpdate::ClockOverflow {
                    client,
                    clock,
                    len,
                    max: self.limits.max_clock,
                },
            );
        }
        Ok(end)
    }

    fn update(&mut self) -> Result<()> {
        // A section is at least three bytes: count, client, clock.
        let sections = self.count_u32("client sections", 3)?;
        let mut clients = Clients::default();
        for _ in 0..sections {
            // Each struct is at least two bytes (info and one more).
            let structs = self.count_u32("structs", 2)?;
            let at = self.r.position();
            let client = self.client("client")?;
            clients.push(client, at);
            let mut clock = u64::from(self.clock("clock", client)?);
            self.sink.section(client, clock as u32);
            for _ in 0..structs {
                self.summary.structs += 1;
                if self.summary.structs > self.limits.max_structs {
                    let at = self.r.position();
                    return self.fail(
                        at,
                        InvalidUpdate::TooManyStructs {
                            max: self.limits.max_structs,
                        },
                    );
                }
                clock = self.struct_(client, clock)?;
            }
        }
        if let Some((client, at)) = clients.duplicate() {
            return self.fail(at, InvalidUpdate::DuplicateClient(client));
        }
        self.delete_set()?;
        let at = self.r.position();
        let finished = self.r.finish();
        self.wire(at, finished)
    }

    /// One struct at `clock`; returns the clock after it.
    fn struct_(&mut self, client: u64, clock: u64) -> Result<u64> {
        let at = self.r.position();
        let info = self.u8("struct info")?;
        if info == STRUCT_GC || info == STRUCT_SKIP {
            let len = self.u32("struct length")?;
            if len == 0 {
                return self.fail(at, InvalidUpdate::EmptyStruct);
            }
            let end = self.range_end(at, client, clock, u64::from(len))?;
            if info == STRUCT_SKIP {
                self.sink.skip(client, clock as u32, len);
            }
            return Ok(end);
        }
        let content = info & INFO_CONTENT;
        if !(CONTENT_DELETED..=CONTENT_DOC).contains(&content) {
            return self.fail(at, InvalidUpdate::UnknownContent(info));
        }
        if content == CONTENT_JSON {
            return self.fail(at, InvalidUpdate::JsonContent);
        }
        let origin = if info & INFO_ORIGIN != 0 {
            Some(self.id("origin")?)
        } else {
            None
        };
        let right_origin = if info & INFO_RIGHT_ORIGIN != 0 {
            Some(self.id("right origin")?)
        } else {
            None
        };
        let parent = if origin.is_none() && right_origin.is_none() {
            let info_at = self.r.position();
            let parent = match self.u32("parent info")? {
                1 => {
                    self.string("root name")?;
                    ParentRef::Root
                }
                0 => ParentRef::Type(self.id("parent")?),
                other => return self.fail(info_at, InvalidUpdate::InvalidParentInfo(other)),
            };
            if info & INFO_PARENT_SUB != 0 {
                self.string("parent key")?;
            }
            parent
        } else {
            ParentRef::Neighbours {
                origin,
                right_origin,
            }
        };
        let len = self.content(content)?;
        if len == 0 {
            // yrs drops empty items without advancing the clock.
            return Ok(clock);
        }
        let end = self.range_end(at, client, clock, len)?;
        let is_type = content == CONTENT_TYPE;
        if is_type {
            self.summary.type_items += 1;
        }
        self.sink.item(ItemInfo {
            id: ID::new(ClientID::new(client), clock as u32),
            len: len as u32,
            parent,
            is_type,
        });
        Ok(end)
    }

    /// Item content; returns its length in clock units.
    fn content(&mut self, content: u8) -> Result<u64> {
        match content {
            CONTENT_DELETED => Ok(u64::from(self.u32("deleted length")?)),
            CONTENT_BINARY => self.bytes("binary content").map(|_| 1),
            CONTENT_STRING => {
                let s = self.string("string content")?;
                Ok(s.chars().map(|c| c.len_utf16() as u64).sum())
            }
            CONTENT_EMBED => self.json("embed").map(|_| 1),
            CONTENT_FORMAT => {
                self.string("format key")?;
                self.json("format value").map(|_| 1)
            }
            CONTENT_TYPE => {
                let at = self.r.position();
                let type_ref = self.u8("type ref")?;
                if !KNOWN_TYPE_REFS.contains(&type_ref) {
                    return self.fail(at, InvalidUpdate::UnknownTypeRef(type_ref));
                }
                if type_ref == TYPE_XML_ELEMENT {
                    self.string("XML element name")?;
                }
                Ok(1)
            }
            CONTENT_ANY => {
                let values = self.count_u32("values", 1)?;
                for _ in 0..values {
                    self.any(0)?;
                }
                Ok(values)
            }
            CONTENT_DOC => {
                self.string("subdocument guid")?;
                self.any(0)?;
                Ok(1)
            }
            _ => unreachable!("content refs are checked by the caller"),
        }
    }

    /// lib0 `Any`; `depth` counts the arrays and maps around it.
    fn any(&mut self, depth: usize) -> Result<()> {
        let at = self.r.position();
        match self.u8("value tag")? {
            ANY_UNDEFINED | ANY_NULL | ANY_TRUE | ANY_FALSE => Ok(()),
            ANY_INTEGER => self.var_int(),
            ANY_FLOAT32 => self.fixed(4, "float32"),
            ANY_FLOAT64 => self.fixed(8, "float64"),
            ANY_BIGINT => self.fixed(8, "bigint"),
            ANY_STRING => self.string("string value").map(drop),
            ANY_BUFFER => self.bytes("buffer value").map(drop),
            tag @ (ANY_MAP | ANY_ARRAY) => {
                if depth >= self.max_depth {
                    return self.fail(
                        at,
                        InvalidUpdate::TooDeep {
                            max: self.max_depth,
                        },
                    );
                }
                if tag == ANY_MAP {
                    // A key length and a value tag at least.
                    let entries = self.count_u64("map entries", 2)?;
                    for _ in 0..entries {
                        self.string("map key")?;
                        self.any(depth + 1)?;
                    }
                } else {
                    let values = self.count_u64("array values", 1)?;
                    for _ in 0..values {
                        self.any(depth + 1)?;
                    }
                }
                Ok(())
            }
            tag => self.fail(at, InvalidUpdate::UnknownValueTag(tag)),
        }
    }

    /// lib0 `readVarInt`: sign in bit 6 of the first byte, 6 + 7n bits of
    /// magnitude. yrs shifts an `i64` by 7 more bits per byte (a shift of 64
    /// or more panics) and negates it (which overflows for `i64::MIN`), so
    /// the magnitude must fit in 63 bits within 10 bytes.
    fn var_int(&mut self) -> Result<()> {
        let at = self.r.position();
        let mut byte = self.u8("integer")?;
        let mut magnitude = u128::from(byte & 0x3f);
        let mut shift = 6u32;
        let mut len = 1;
        while byte & 0x80 != 0 {
            if len == 10 {
                return self.fail(at, InvalidUpdate::IntegerOverflow);
            }
            byte = self.u8("integer")?;
            magnitude |= u128::from(byte & 0x7f) << shift;
            shift += 7;
            len += 1;
        }
        if magnitude > i64::MAX as u128 {
            return self.fail(at, InvalidUpdate::IntegerOverflow);
        }
        Ok(())
    }

    fn json(&mut self, what: &'static str) -> Result<()> {
        let at = self.r.position();
        let text = self.string(what)?;
        check_json(text, self.max_depth).map_err(|kind| ValidationError { offset: at, kind })
    }

    fn delete_set(&mut self) -> Result<()> {
        // A client id and a range count at least.
        let entries = self.count_u32("delete set clients", 2)?;
        let mut clients = Clients::default();
        for _ in 0..entries {
            let at = self.r.position();
            let client = self.client("delete set client")?;
            clients.push(client, at);
            let ranges = self.count_u32("deleted ranges", 2)?;
            for _ in 0..ranges {
                self.summary.delete_ranges += 1;
                let at = self.r.position();
                if self.summary.delete_ranges > self.limits.max_delete_ranges {
                    return self.fail(
                        at,
                        InvalidUpdate::TooManyDeleteRanges {
                            max: self.limits.max_delete_ranges,
                        },
                    );
                }
                let clock = self.u32("deleted clock")?;
                let len = self.u32("deleted length")?;
                self.range_end(at, client, u64::from(clock), u64::from(len))?;
            }
        }
        match clients.duplicate() {
            Some((client, at)) => self.fail(at, InvalidUpdate::DuplicateClient(client)),
            None => Ok(()),
        }
    }
}

/// Checks JSON as yrs's `Any::from_json` parses it (serde_json, integers
/// within `i64`), with nesting bounded by `max_depth`, building nothing.
pub fn check_json(text: &str, max_depth: usize) -> Result<(), InvalidUpdate> {
    let too_deep = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let shape = JsonShape {
        depth: 0,
        max_depth: max_depth.min(DEPTH_CEILING),
        too_deep: &too_deep,
    };
    match shape.deserialize(&mut de).and_then(|()| de.end()) {
        Ok(()) => Ok(()),
        Err(_) if too_deep.get() => Err(InvalidUpdate::TooDeep {
            max: max_depth.min(DEPTH_CEILING),
        }),
        Err(e) => Err(InvalidUpdate::InvalidJson(e.to_string())),
    }
}

#[derive(Clone, Copy)]
struct JsonShape<'c> {
    depth: usize,
    max_depth: usize,
    too_deep: &'c Cell<bool>,
}

impl JsonShape<'_> {
    fn enter<E: serde::de::Error>(self) -> Result<Self, E> {
        if self.depth >= self.max_depth {
            self.too_deep.set(true);
            return Err(E::custom("nested too deep"));
        }
        Ok(JsonShape {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> DeserializeSeed<'de> for JsonShape<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonShape<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        if v > i64::MAX as u64 {
            return Err(E::custom(format!("Value {v} out of range for i64")));
        }
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
