//! The document actor in-process: a real registry over real sled in a temp
//! dir, connections as outbound queues, commands through the mailbox.
//! What each connection receives is read frame by frame, in order.

use super::{
    CloseReason, DeleteOrigin, DocCommand, DocHandle, IfAbsent, Outbound, OutboundReceiver,
    Received, Registry,
};
use crate::config::Config;
use crate::names::DocName;
use crate::store::{Spool, Store, StoreOptions};
use bytes::Bytes;
use crdt_core::awareness::AwarenessEntry;
use crdt_core::protocol::encode_sync_step2;
use crdt_core::yrs::updates::decoder::Decode;
use crdt_core::yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};
use crdt_core::{AwarenessUpdate, Message};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const WAIT: Duration = Duration::from_secs(5);

/// A registry over a fresh sled, and what stops it.
struct Server {
    registry: Registry,
    store: Store,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    storage_thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        Server::start_in(tempfile::tempdir().expect("temp dir"))
    }

    fn start_in(dir: tempfile::TempDir) -> Server {
        let config = Config::for_data_dir(dir.path());
        let (store, storage_thread) = Store::open(
            &config.data_dir,
            StoreOptions {
                cache_bytes: 1 << 20,
                flush_interval: config.flush_interval(),
                accept_data_loss: false,
                spool: Spool::Off,
                webhooks: None,
            },
        )
        .expect("sled opens");
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let registry = Registry::new(store.clone(), &config, tracker.clone(), shutdown.clone());
        Server {
            registry,
            store,
            shutdown,
            tracker,
            storage_thread: Some(storage_thread),
            _dir: dir,
        }
    }

    async fn open(&self, name: &str) -> DocHandle {
        self.registry
            .open(&doc_name(name), IfAbsent::Create)
            .await
            .expect("opens")
    }

    /// Stops every actor (each compacts on its way out) and the storage
    /// thread; returns the data dir to start again in.
    async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.store.shutdown().await.expect("storage stops");
        if let Some(thread) = self.storage_thread.take() {
            thread.join().expect("storage thread ends");
        }
        self._dir
    }
}

fn doc_name(name: &str) -> DocName {
    DocName::parse(name).expect("valid name")
}

/// One connection, as the actor sees it.
struct Conn {
    id: u64,
    rx: OutboundReceiver,
}

impl Conn {
    /// A Hocuspocus session: greeted with nothing but presence.
    async fn join_hocuspocus(doc: &DocHandle, id: u64) -> Conn {
        let (outbound, rx) = Outbound::channel(64);
        doc.request(|reply| DocCommand::Connect {
            id,
            outbound,
            dialect: super::Dialect::Hocuspocus,
            who: None,
            reply,
        })
        .await
        .expect("actor runs");
        Conn { id, rx }
    }

    async fn join(doc: &DocHandle, id: u64) -> Conn {
        let (outbound, rx) = Outbound::channel(64);
        doc.request(|reply| DocCommand::Connect {
            id,
            outbound,
            dialect: super::Dialect::YWebsocket,
            who: None,
            reply,
        })
        .await
        .expect("actor runs");
        let mut conn = Conn { id, rx };
        match conn.next().await {
            Heard::SyncStep1 => {}
            other => panic!("connection {id} opened with {other:?}"),
        }
        conn
    }

    async fn next(&mut self) -> Heard {
        let received =
            tokio::time::timeout(WAIT, std::future::poll_fn(|cx| self.rx.poll_recv(cx, true)))
                .await
                .unwrap_or_else(|_| panic!("connection {} heard nothing", self.id));
        match received {
            Received::Frame(frame) => Heard::from_frame(&frame),
            Received::Closed(reason) => Heard::Closed(reason.code),
        }
    }

    /// Nothing more arrives (after the actor served `barrier`'s command).
    async fn hears_nothing_after(&mut self, doc: &DocHandle) {
        doc.request(|reply| DocCommand::Info { reply })
            .await
            .expect("actor runs");
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let std::task::Poll::Ready(received) = self.rx.poll_recv(&mut cx, true) {
            panic!("connection {} heard {received:?}", self.id);
        }
    }
}

/// A frame, as much of it as the tests compare.
#[derive(Debug, PartialEq, Eq)]
enum Heard {
    SyncStep1,
    SyncStep2(Vec<u8>),
    Update(Vec<u8>),
    /// Awareness entries as (client, clock).
    Awareness(Vec<(u64, u32)>),
    /// Hocuspocus only: an acknowledgement, 1 or 0.
    SyncStatus(u8),
    /// Hocuspocus only: a stateless payload.
    Stateless(String),
    Closed(u16),
}

impl Heard {
    fn from_frame(frame: &[u8]) -> Heard {
        // The bodies only Hocuspocus sessions get (without their address).
        match frame {
            [8, status] => return Heard::SyncStatus(*status),
            [5, rest @ ..] => {
                let mut r = crdt_core::wire::Reader::new(rest);
                let payload = r.read_var_string("payload").expect("a string");
                return Heard::Stateless(payload.to_owned());
            }
            _ => {}
        }
        match Message::decode(frame).expect("a y-websocket frame") {
            Message::SyncStep1(_) => Heard::SyncStep1,
            Message::SyncStep2(update) => Heard::SyncStep2(update.to_vec()),
            Message::Update(update) => Heard::Update(update.to_vec()),
            Message::Awareness(update) => Heard::Awareness(
                AwarenessUpdate::decode(update)
                    .expect("awareness")
                    .entries
                    .iter()
                    .map(|e| (e.client, e.clock))
                    .collect(),
            ),
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// A v1 update inserting `text` at the start of "body", by `client`.
fn typed(client: u64, text: &str) -> Bytes {
    let doc = Doc::with_client_id(client);
    doc.get_or_insert_text("body")
        .insert(&mut doc.transact_mut(), 0, text);
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    Bytes::from(update)
}

fn presence(client: u64, clock: u32) -> Box<AwarenessUpdate> {
    Box::new(AwarenessUpdate {
        entries: vec![AwarenessEntry {
            client,
            clock,
            state: Some(r#"{"user":"ada"}"#.to_owned()),
        }],
    })
}

fn text_of(update: &[u8]) -> String {
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).expect("decodes"))
        .expect("applies");
    let body = doc.get_or_insert_text("body");
    let txn = doc.transact();
    body.get_string(&txn)
}

#[tokio::test]
async fn a_lone_connection_hears_its_own_presence_renewals_included() {
    let server = Server::start();
    let doc = server.open("alone").await;
    let mut ada = Conn::join(&doc, 1).await;
    for clock in [1, 2] {
        doc.send(DocCommand::Awareness {
            id: 1,
            update: presence(70, clock),
        })
        .await
        .expect("actor runs");
        assert_eq!(ada.next().await, Heard::Awareness(vec![(70, clock)]));
    }
    // A stale renewal changes nothing and is not relayed.
    doc.send(DocCommand::Awareness {
        id: 1,
        update: presence(70, 1),
    })
    .await
    .expect("actor runs");
    ada.hears_nothing_after(&doc).await;
    server.stop().await;
}

#[tokio::test]
async fn an_update_reaches_everyone_but_its_sender_before_what_follows_it() {
    let server = Server::start();
    let doc = server.open("relay").await;
    let mut ada = Conn::join(&doc, 1).await;
    let mut bob = Conn::join(&doc, 2).await;
    let update = typed(10, "hello");
    doc.send(DocCommand::Update {
        id: 1,
        update: update.clone(),
    })
    .await
    .expect("actor runs");
    doc.send(DocCommand::Awareness {
        id: 1,
        update: presence(10, 1),
    })
    .await
    .expect("actor runs");
    assert_eq!(bob.next().await, Heard::Update(update.to_vec()));
    assert_eq!(bob.next().await, Heard::Awareness(vec![(10, 1)]));
    // Ada's own update is not echoed: her presence is the next thing she hears.
    assert_eq!(ada.next().await, Heard::Awareness(vec![(10, 1)]));

    // Bob leaves without a goodbye: Ada is told his presence is gone.
    doc.send(DocCommand::Awareness {
        id: 2,
        update: presence(20, 1),
    })
    .await
    .expect("actor runs");
    assert_eq!(ada.next().await, Heard::Awareness(vec![(20, 1)]));
    doc.send(DocCommand::Disconnect { id: 2 })
        .await
        .expect("actor runs");
    assert_eq!(ada.next().await, Heard::Awareness(vec![(20, 2)]));
    server.stop().await;
}

#[tokio::test]
async fn an_update_that_does_not_apply_closes_its_sender_and_changes_nothing() {
    let server = Server::start();
    let doc = server.open("hostile").await;
    let mut ada = Conn::join(&doc, 1).await;
    let mut eve = Conn::join(&doc, 2).await;
    doc.send(DocCommand::Update {
        id: 2,
        update: Bytes::from_static(&[5]),
    })
    .await
    .expect("actor runs");
    assert_eq!(
        eve.next().await,
        Heard::Closed(CloseReason::INVALID_PAYLOAD)
    );
    ada.hears_nothing_after(&doc).await;
    let info = doc
        .request(|reply| DocCommand::Info { reply })
        .await
        .expect("actor runs");
    assert_eq!((info.bytes, info.clients), (0, 1));
    server.stop().await;
}

#[tokio::test]
async fn a_compacted_document_answers_a_page_load_from_its_stored_bytes_then_warms_for_an_edit() {
    let server = Server::start();
    let doc = server.open("cold").await;
    doc.request(|reply| DocCommand::ApplyUpdate {
        update: typed(10, "stored"),
        reply,
    })
    .await
    .expect("actor runs")
    .expect("applies");
    // Shutdown compacts: the document is stored as one snapshot.
    let dir = server.stop().await;
    let stored = {
        let (store, thread) = Store::open(
            dir.path(),
            StoreOptions {
                cache_bytes: 1 << 20,
                flush_interval: Duration::from_millis(5),
                accept_data_loss: false,
                spool: Spool::Off,
                webhooks: None,
            },
        )
        .expect("sled opens");
        let stored = store.load(doc_name("cold")).await.expect("loads");
        store.shutdown().await.expect("storage stops");
        thread.join().expect("storage thread ends");
        stored
    };
    let snapshot = stored.snapshot.expect("a snapshot");
    assert!(stored.log.is_empty() && stored.snapshot_state_vector.is_some());

    let server = Server::start_in(dir);
    let doc = server.open("cold").await;
    let mut ada = Conn::join(&doc, 1).await;
    let mut bob = Conn::join(&doc, 2).await;
    doc.send(DocCommand::SyncStep1 {
        id: 1,
        state_vector: Box::default(),
    })
    .await
    .expect("actor runs");
    let answer = ada.next().await;
    assert_eq!(answer, Heard::from_frame(&encode_sync_step2(&snapshot)));

    let edit = typed(11, "warm ");
    doc.send(DocCommand::Update {
        id: 1,
        update: edit.clone(),
    })
    .await
    .expect("actor runs");
    assert_eq!(bob.next().await, Heard::Update(edit.to_vec()));
    doc.send(DocCommand::SyncStep1 {
        id: 2,
        state_vector: Box::default(),
    })
    .await
    .expect("actor runs");
    match bob.next().await {
        Heard::SyncStep2(state) => {
            let text = text_of(&state);
            assert!(
                text.len() == 11 && text.contains("warm ") && text.contains("stored"),
                "{text:?}"
            );
        }
        other => panic!("expected the whole state, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn a_backup_gets_a_cold_documents_stored_snapshot_as_is_and_a_warm_ones_state_with_its_own_state_vector(
) {
    let server = Server::start();
    let doc = server.open("kept").await;
    doc.request(|reply| DocCommand::ApplyUpdate {
        update: typed(20, "stored"),
        reply,
    })
    .await
    .expect("actor runs")
    .expect("applies");
    let dir = server.stop().await;

    let server = Server::start_in(dir);
    let stored = server.store.load(doc_name("kept")).await.expect("loads");
    let doc = server.open("kept").await;
    let cold = doc
        .request(|reply| DocCommand::Backup { reply })
        .await
        .expect("actor runs");
    // Cold: the stored bytes themselves, not a re-encoding of them.
    assert_eq!(Some(cold.update.to_vec()), stored.snapshot);
    assert_eq!(Some(cold.state_vector_v1), stored.snapshot_state_vector);

    doc.request(|reply| DocCommand::ApplyUpdate {
        update: typed(21, "warm "),
        reply,
    })
    .await
    .expect("actor runs")
    .expect("applies");
    let warm = doc
        .request(|reply| DocCommand::Backup { reply })
        .await
        .expect("actor runs");
    // Two clients inserted at 0: yrs orders them by client id.
    assert_eq!(text_of(&warm.update), "storedwarm ");
    let restored = crdt_core::Document::load(Some(&warm.update), []).expect("loads");
    assert_eq!(warm.state_vector_v1, restored.state_vector_v1());
    server.stop().await;
}

#[tokio::test]
async fn a_deleted_document_closes_its_connections_and_is_gone() {
    let server = Server::start();
    let doc = server.open("doomed").await;
    let mut ada = Conn::join(&doc, 1).await;
    doc.request(|reply| DocCommand::ApplyUpdate {
        update: typed(10, "x"),
        reply,
    })
    .await
    .expect("actor runs")
    .expect("applies");
    doc.request(|reply| DocCommand::Delete {
        origin: DeleteOrigin::Here,
        reply,
    })
    .await
    .expect("actor runs")
    .expect("deleted");
    assert_eq!(ada.next().await, Heard::Closed(CloseReason::DELETED));
    assert!(doc
        .request(|reply| DocCommand::Info { reply })
        .await
        .is_err());
    assert!(matches!(
        server
            .registry
            .open(&doc_name("doomed"), IfAbsent::NotFound)
            .await,
        Err(super::OpenError::NotFound)
    ));
    server.stop().await;
}

/// Each part of the actor owns its state and is used by the parts above it;
/// none reaches back. A cycle here is how rules end up living as
/// conventions across files.
#[test]
fn the_modules_of_doc_import_each_other_without_a_cycle() {
    const MODULES: &[(&str, &str)] = &[
        ("actor", include_str!("actor.rs")),
        ("close", include_str!("close.rs")),
        ("command", include_str!("command.rs")),
        ("conns", include_str!("conns.rs")),
        ("content", include_str!("content.rs")),
        ("directory", include_str!("directory.rs")),
        ("faults", include_str!("faults.rs")),
        ("handle", include_str!("handle.rs")),
        ("heal", include_str!("heal.rs")),
        ("load", include_str!("load.rs")),
        ("log", include_str!("log.rs")),
        ("mailbox", include_str!("mailbox.rs")),
        ("outbound", include_str!("outbound.rs")),
        ("peers", include_str!("peers.rs")),
        ("presence", include_str!("presence.rs")),
        ("registry", include_str!("registry.rs")),
        ("settings", include_str!("settings.rs")),
        ("wakeup", include_str!("wakeup.rs")),
    ];
    let names: Vec<&str> = MODULES.iter().map(|(name, _)| *name).collect();
    // What each module's own code (not its tests) names through `super::`.
    let imports: Vec<Vec<usize>> = MODULES
        .iter()
        .map(|(_, source)| {
            let code = source.split("#[cfg(test)]").next().unwrap_or(source);
            let mut used: Vec<usize> = code
                .split("super::")
                .skip(1)
                .filter_map(|rest| {
                    let word: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    names.iter().position(|name| *name == word)
                })
                .collect();
            used.sort_unstable();
            used.dedup();
            used
        })
        .collect();
    assert!(
        imports[names.iter().position(|n| *n == "conns").unwrap_or(0)]
            .contains(&names.iter().position(|n| *n == "outbound").unwrap_or(0)),
        "the scan finds imports"
    );
    // Depth-first search; a module met again while on the path closes a cycle.
    fn visit(
        at: usize,
        imports: &[Vec<usize>],
        path: &mut Vec<usize>,
        done: &mut [bool],
        names: &[&str],
    ) {
        if done[at] {
            return;
        }
        if let Some(start) = path.iter().position(|m| *m == at) {
            let cycle: Vec<&str> = path[start..]
                .iter()
                .chain([&at])
                .map(|m| names[*m])
                .collect();
            panic!("import cycle: {}", cycle.join(" -> "));
        }
        path.push(at);
        for &next in &imports[at] {
            visit(next, imports, path, done, names);
        }
        path.pop();
        done[at] = true;
    }
    let mut done = vec![false; MODULES.len()];
    for module in 0..MODULES.len() {
        visit(module, &imports, &mut Vec::new(), &mut done, &names);
    }
}

#[tokio::test]
async fn a_hocuspocus_session_gets_no_unsolicited_sync_and_one_ack_per_update() {
    let server = Server::start();
    let doc = server.open("hp").await;
    let mut yws = Conn::join(&doc, 1).await;
    let mut hp = Conn::join_hocuspocus(&doc, 2).await;
    let mut other = Conn::join_hocuspocus(&doc, 3).await;
    hp.hears_nothing_after(&doc).await;

    // Its SyncStep1 is answered with the server's, then the diff.
    doc.send(DocCommand::SyncStep1 {
        id: 2,
        state_vector: Box::default(),
    })
    .await
    .expect("sent");
    assert_eq!(hp.next().await, Heard::SyncStep1);
    assert!(matches!(hp.next().await, Heard::SyncStep2(_)));

    // An update: relayed to the others, then acknowledged to its sender.
    let update = typed(20, "hello");
    doc.send(DocCommand::Update {
        id: 2,
        update: update.clone(),
    })
    .await
    .expect("sent");
    assert_eq!(yws.next().await, Heard::Update(update.to_vec()));
    assert_eq!(other.next().await, Heard::Update(update.to_vec()));
    assert_eq!(hp.next().await, Heard::SyncStatus(1));
    // The same update again changes nothing, and is acknowledged all the same.
    doc.send(DocCommand::Update {
        id: 2,
        update: update.clone(),
    })
    .await
    .expect("sent");
    assert_eq!(hp.next().await, Heard::SyncStatus(1));

    // Read-only SyncStep2s: 1 only for what the document holds.
    for (update, expected) in [(update.clone(), 1), (typed(21, "new"), 0)] {
        doc.send(DocCommand::CheckContained { id: 3, update })
            .await
            .expect("sent");
        assert_eq!(other.next().await, Heard::SyncStatus(expected));
    }

    // Stateless: to the other Hocuspocus sessions only.
    doc.send(DocCommand::Stateless {
        from: Some(2),
        payload: "ping".into(),
    })
    .await
    .expect("sent");
    assert_eq!(other.next().await, Heard::Stateless("ping".into()));
    hp.hears_nothing_after(&doc).await;
    yws.hears_nothing_after(&doc).await;

    // A read-only SyncStep2 that does not decode closes that session (1007).
    doc.send(DocCommand::CheckContained {
        id: 3,
        update: Bytes::from_static(&[0xff, 0xff]),
    })
    .await
    .expect("sent");
    assert_eq!(
        other.next().await,
        Heard::Closed(CloseReason::INVALID_PAYLOAD)
    );
    server.stop().await;
}
