//! Untrusted v1 updates into a seeded document: refused ones change
//! nothing, applied ones leave a document that still encodes and reloads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quire_fuzz::{framed, seeded_state, Server};
use std::sync::OnceLock;

static SEED: OnceLock<Vec<u8>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let seed = SEED.get_or_init(seeded_state);
    let mut server = Server::new(seed);
    server.apply(data);
    if let Some(parts) = framed(data) {
        let mut server = Server::new(seed);
        for part in parts {
            server.apply(part);
        }
    }
});
