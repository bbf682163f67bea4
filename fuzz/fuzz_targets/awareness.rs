//! Awareness updates, decoded and applied to one table in sequence.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quire_fuzz::Server;
use std::sync::OnceLock;

static SEED: OnceLock<Vec<u8>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let seed = SEED.get_or_init(|| crdt_core::Document::new().encode_state_v1());
    let mut server = Server::new(seed);
    server.awareness(data);
    if let Some(parts) = quire_fuzz::framed(data) {
        for part in parts {
            server.awareness(part);
        }
    }
});
