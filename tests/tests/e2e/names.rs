//! Document names: 1 to 200 of `A-Z a-z 0-9 . _ ~ -` and `/`, compared after
//! percent-decoding, no empty, `.` or `..` segment. Anything else is HTTP
//! 400 before the upgrade.

use crate::support::Rest;
use anyhow::Result;
use quire_client::testing::TestServer;
use quire_client::{ClientError, RawSocket};

/// Upgrade paths after `/ws/` and whether the server must accept them.
/// (The empty one, `/ws/`, is the Hocuspocus endpoint: `hocuspocus.rs`.)
fn cases() -> Vec<(String, bool)> {
    let mut cases: Vec<(String, bool)> = [
        ("notes", true),
        ("a/b/c", true),
        ("Az09._~-", true),
        ("...", true),
        ("%41bc", true),
        (".", false),
        ("..", false),
        ("a/..", false),
        ("a/./b", false),
        ("a//b", false),
        ("a/", false),
        ("/a", false),
        ("bad%20name", false),
        ("caf%C3%A9", false),
        ("a%2F..", false),
        ("a%2F%2Fb", false),
        ("semi;colon", false),
        ("100%", false),
    ]
    .iter()
    .map(|(path, ok)| (path.to_string(), *ok))
    .collect();
    cases.push(("n".repeat(200), true));
    cases.push(("n".repeat(201), false));
    cases.push((format!("{}/{}", "a".repeat(100), "b".repeat(99)), true));
    cases
}

#[tokio::test]
async fn invalid_names_are_refused_with_400_before_the_upgrade() -> Result<()> {
    let server = TestServer::start().await?;
    let mut failures = Vec::new();
    for (path, valid) in cases() {
        // Raw URL: `..` and `//` must reach the server unnormalised.
        let url = format!("ws://{}/ws/{path}", server.addr());
        let outcome = match RawSocket::connect(&url).await {
            Ok(socket) => {
                let _ = socket.close(1000).await;
                "upgraded".to_owned()
            }
            Err(ClientError::Rejected { status, .. }) => format!("HTTP {status}"),
            Err(err) => format!("error: {err}"),
        };
        let expected = if valid { "upgraded" } else { "HTTP 400" };
        if outcome != expected {
            failures.push(format!("/ws/{path}: {outcome}, expected {expected}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[tokio::test]
async fn rest_calls_validate_names_too() -> Result<()> {
    let server = TestServer::start().await?;
    let rest = Rest::new(&server);
    let mut failures = Vec::new();
    for segment in [
        "bad%20name",
        "a%2F%2Fb",
        "..%2Fx",
        "a%2F..",
        &"n".repeat(201),
    ] {
        for path in [
            format!("/api/docs/{segment}"),
            format!("/api/docs/{segment}/snapshot?format=yjs"),
        ] {
            let status = rest.get(&path).await?.status().as_u16();
            if status != 400 {
                failures.push(format!("GET {path}: {status}, expected 400"));
            }
        }
        let path = format!("/api/docs/{segment}/updates");
        let status = rest
            .post(&path, crate::support::text_update("t", "x"))
            .await?
            .status()
            .as_u16();
        if status != 400 {
            failures.push(format!("POST {path}: {status}, expected 400"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
