//! The B4 editing trace reader shared with the e2e suite.

pub(crate) use quire_client::testing::trace::{load_txns, replay, utf16_doc};
