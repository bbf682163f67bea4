//! A lib0 v1 encoder for hand-made updates, shared by the validator's unit
//! tests (`src/validate/tests.rs`) and the hostile corpus
//! (`tests/hostile_inputs.rs`), which include this file by path.

#![allow(dead_code)]

#[derive(Default, Clone)]
pub(super) struct Enc(pub Vec<u8>);

impl Enc {
    pub(super) fn u8(mut self, b: u8) -> Self {
        self.0.push(b);
        self
    }
    pub(super) fn var(mut self, mut v: u64) -> Self {
        while v >= 0x80 {
            self.0.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }
    pub(super) fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }
    /// Length-prefixed bytes.
    pub(super) fn bytes(self, b: &[u8]) -> Self {
        self.var(b.len() as u64).raw(b)
    }
    pub(super) fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    /// One client section header.
    pub(super) fn section(self, structs: u64, client: u64, clock: u64) -> Self {
        self.var(structs).var(client).var(clock)
    }
    /// Item with a root parent and no origins: `info` carries the content ref.
    pub(super) fn root_item(self, info: u8, root: &str) -> Self {
        self.u8(info).var(1).str(root)
    }
    /// An empty delete set.
    pub(super) fn no_deletes(self) -> Self {
        self.var(0)
    }
    pub(super) fn done(self) -> Vec<u8> {
        self.0
    }
}
