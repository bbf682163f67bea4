//! y-websocket frames, decoded and dispatched as a connection does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quire_fuzz::{framed, seeded_state, Server};
use std::sync::OnceLock;

static SEED: OnceLock<Vec<u8>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let seed = SEED.get_or_init(seeded_state);
    let mut server = Server::new(seed);
    server.frame(data);
    if let Some(frames) = framed(data) {
        for frame in frames {
            server.frame(frame);
        }
    }
});
