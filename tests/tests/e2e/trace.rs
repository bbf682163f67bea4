//! A realistic edit stream: the start of the B4 "automerge-paper" trace,
//! typed through two clients taking turns, must end identical on both
//! clients, on the server, and in a plain replay of the same patches.

use crate::support::{wait_text, Rest};
use anyhow::{ensure, Result};
use quire_client::testing::trace::{load_txns, replay, utf16_doc};
use quire_client::testing::TestServer;
use quire_client::Client;

/// Transactions replayed: enough for a realistic stream, quick in debug builds.
const TXNS: usize = 2000;
/// Transactions one client types before handing over to the other.
const TURN: usize = 250;

#[tokio::test]
async fn two_clients_typing_the_b4_trace_in_turns_end_identical_to_the_server() -> Result<()> {
    let txns = load_txns(TXNS)?;
    let server = TestServer::start().await?;
    let config = |server: &TestServer| server.client_config("paper.tex").ydoc(utf16_doc());
    let alice = Client::connect(config(&server)).await?;
    let bob = Client::connect(config(&server)).await?;
    alice.wait_synced(crate::support::WAIT).await?;
    bob.wait_synced(crate::support::WAIT).await?;

    let mut reference: Vec<char> = Vec::new();
    for (turn, chunk) in txns.chunks(TURN).enumerate() {
        let (typist, other) = if turn % 2 == 0 {
            (&alice, &bob)
        } else {
            (&bob, &alice)
        };
        for txn in chunk {
            replay(typist, "content", &mut reference, txn)?;
        }
        let expected: String = reference.iter().collect();
        assert_eq!(
            typist.text("content"),
            expected,
            "turn {turn}: typist diverged"
        );
        // The other client must have everything before taking over.
        wait_text(other, "content", &expected).await?;
    }

    let expected: String = reference.iter().collect();
    ensure!(!expected.is_empty(), "replayed nothing");
    Rest::new(&server)
        .wait_text("paper.tex", "content", &expected)
        .await?;
    let late = server.client("paper.tex").await?;
    assert_eq!(late.text("content"), expected);
    Ok(())
}
