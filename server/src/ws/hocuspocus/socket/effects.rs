//! Performing a session's effects, in order: verdicts, replies, joining
//! the document, commands to its actor, endings. Only joining and a full
//! mailbox make the work wait ([`Stall`]); reading waits with it.

use super::{
    forget, frame, grant, too_slow, Link, LinkDoc, Socket, TOO_MANY_SESSIONS, UNAVAILABLE,
};
use crate::doc::{ConnId, Dialect, DocCommand, DocHandle, Gone, Offer, Outbound, Permit};
use crate::names::DocName;
use crate::ws::connection::{join, Ending};
use bytes::Bytes;
use crdt_core::hocuspocus::session::{Effect, Event, Phase, Reply, CLOSE_INVALID_MESSAGE};
use crdt_core::hocuspocus::ServerMessage;
use crdt_core::AwarenessUpdate;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tokio::time::Instant;

/// What the work queue waits for; reading waits too.
pub(super) enum Stall {
    /// The session's document opening and taking the connection.
    Join {
        key: u64,
        joined: Pin<Box<dyn Future<Output = Option<DocHandle>> + Send>>,
    },
    /// Room in an actor's full mailbox for `command`.
    Mailbox {
        /// Taken when sent.
        command: Option<DocCommand>,
        handle: DocHandle,
        permit: Pin<Box<dyn Future<Output = Result<Permit, Gone>> + Send>>,
    },
}

impl Socket {
    /// Performs queued effects in order until done or waiting.
    pub(super) fn drive(&mut self) -> Result<(), Ending> {
        while self.stall.is_none() {
            let Some((key, effect)) = self.work.pop_front() else {
                // Most sockets sit idle between bursts: give it back.
                self.work.shrink_to_fit();
                break;
            };
            self.perform(key, effect)?;
        }
        Ok(())
    }

    pub(super) fn find(&self, key: u64) -> Option<usize> {
        self.entries.iter().position(|e| e.key == key)
    }

    pub(super) fn perform(&mut self, key: u64, effect: Effect) -> Result<(), Ending> {
        // Work of a session that ended since is void.
        let Some(at) = self.find(key) else {
            return Ok(());
        };
        match effect {
            Effect::VerifyToken {
                token,
                provider_version,
            } => self.verify(at, &token, provider_version.is_some()),
            Effect::Send(reply) => self.reply(at, &reply),
            Effect::SendAwarenessStates => {
                let Some(link) = &mut self.entries[at].link else {
                    return Ok(());
                };
                match std::mem::replace(&mut link.doc, LinkDoc::Joined(None)) {
                    LinkDoc::Joining(joining) => {
                        let (name, outbound, who) = *joining;
                        self.join(at, name, outbound, who);
                        Ok(())
                    }
                    joined => {
                        link.doc = joined;
                        self.command(at, |id| DocCommand::QueryAwareness { id })
                    }
                }
            }
            Effect::AnswerSyncStep1(state_vector) => self.command(at, |id| DocCommand::SyncStep1 {
                id,
                state_vector: Box::new(state_vector),
            }),
            Effect::Apply(update) => self.command(at, |id| DocCommand::Update {
                id,
                update: Bytes::from(update),
            }),
            Effect::AckIfContained(update) => self.command(at, |id| DocCommand::CheckContained {
                id,
                update: Bytes::from(update),
            }),
            Effect::ApplyAwareness(bytes) => match AwarenessUpdate::decode(&bytes) {
                Ok(update) => self.command(at, |id| DocCommand::Awareness {
                    id,
                    update: Box::new(update),
                }),
                Err(e) => {
                    tracing::debug!(error = %e, "invalid awareness update");
                    crate::metrics::rejected_frame("invalid_payload");
                    self.end(at, Some(format!("{CLOSE_INVALID_MESSAGE}awareness")))
                }
            },
            Effect::RelayStateless(payload) => self.command(at, |id| DocCommand::Stateless {
                from: Some(id),
                payload: payload.into_boxed_str(),
            }),
            Effect::Ignore(label) => {
                tracing::debug!(label, "ignored frame");
                Ok(())
            }
            Effect::End { close } => self.end(at, close),
        }
    }

    /// Decides an Auth and hands the verdict to the session; what it
    /// returns is performed next, before any other work.
    pub(super) fn verify(&mut self, at: usize, token: &str, v4: bool) -> Result<(), Ending> {
        if v4 && self.hp_ping_at.is_none() {
            self.hp_ping_at = self
                .env
                .config
                .hocuspocus_ping()
                .map(|d| Instant::now() + d);
        }
        let open = self.entries.iter().filter(|e| e.link.is_some()).count();
        let entry = &mut self.entries[at];
        let opening = entry.link.is_none();
        let document = entry.address.split('\0').next().unwrap_or_default();
        let verdict = if opening && open >= self.env.config.hocuspocus_max_sessions {
            Err(TOO_MANY_SESSIONS.to_owned())
        } else {
            grant::grant(&self.env.auth, document, token, self.url_token.as_deref())
        };
        let effects = entry.session.handle(Event::Verdict(
            verdict.as_ref().map(|g| g.scope).map_err(Clone::clone),
        ));
        match verdict {
            Ok(granted) => match &mut entry.link {
                Some(link) => link.set_deadlines(granted.exp),
                None => {
                    let (outbound, rx) = Outbound::channel(self.env.config.outbound_queue);
                    let mut link = Link {
                        id: self.env.next_conn_id.fetch_add(1, Ordering::Relaxed),
                        rx,
                        doc: LinkDoc::Joining(Box::new((granted.name, outbound, granted.who))),
                        token: None,
                    };
                    link.set_deadlines(granted.exp);
                    entry.link = Some(link);
                    self.auth_deadline = None;
                }
            },
            Err(reason) => {
                tracing::debug!(address = %entry.address, %reason, "authentication denied");
            }
        }
        let key = entry.key;
        for effect in effects.into_iter().rev() {
            self.work.push_front((key, effect));
        }
        Ok(())
    }

    /// A frame the session decided on: through its queue once it has one,
    /// else (a denial) directly.
    pub(super) fn reply(&mut self, at: usize, reply: &Reply) -> Result<(), Ending> {
        let body = reply.message().encode_body();
        let entry = &mut self.entries[at];
        match &entry.link {
            Some(link) => {
                if !link.rx.push_reply(Bytes::from(body)) {
                    return Err(too_slow());
                }
            }
            None => {
                let frame = frame(&entry.address, &body);
                // Denied and holding nothing: forget the address, so that
                // it stops counting as pending; a later Auth starts afresh.
                if entry.session.phase() == Phase::Pending && entry.session.queued() == (0, 0) {
                    self.entries.swap_remove(at);
                }
                self.push_direct(frame)?;
            }
        }
        Ok(())
    }

    /// Opens the document and joins its actor; work waits until then.
    pub(super) fn join(
        &mut self,
        at: usize,
        name: DocName,
        outbound: Outbound,
        who: Option<std::sync::Arc<str>>,
    ) {
        let entry = &self.entries[at];
        let Some(link) = &entry.link else { return };
        let (id, key, registry) = (link.id, entry.key, self.env.registry.clone());
        let joined = Box::pin(async move {
            join(&registry, &name, id, outbound, Dialect::Hocuspocus, who).await
        });
        self.stall = Some(Box::new(Stall::Join { key, joined }));
    }

    /// Sends the session's actor a command; a full mailbox stalls the work.
    pub(super) fn command(
        &mut self,
        at: usize,
        make: impl FnOnce(ConnId) -> DocCommand,
    ) -> Result<(), Ending> {
        let Some(link) = &self.entries[at].link else {
            return Ok(());
        };
        let Some(handle) = link.handle() else {
            return Ok(());
        };
        match handle.offer(make(link.id)) {
            Ok(()) => Ok(()),
            Err(Offer::Full(command)) => {
                let handle = handle.clone();
                let permit = Box::pin(handle.reserve());
                self.stall = Some(Box::new(Stall::Mailbox {
                    command: Some(command),
                    handle,
                    permit,
                }));
                Ok(())
            }
            Err(Offer::Gone) => self.end(at, Some(UNAVAILABLE.to_owned())),
        }
    }

    /// Ends a session: leaves its document (the actor removes and
    /// broadcasts its presence), then sends CLOSE(reason) if there is one.
    pub(super) fn end(&mut self, at: usize, close: Option<String>) -> Result<(), Ending> {
        let entry = self.entries.swap_remove(at);
        forget(&entry);
        if let Some((link, handle)) = entry
            .link
            .as_ref()
            .and_then(|link| link.handle().map(|h| (link, h)))
        {
            match handle.offer(DocCommand::Disconnect { id: link.id }) {
                Ok(()) | Err(Offer::Gone) => {}
                Err(Offer::Full(command)) => {
                    self.stall = Some(Box::new(Stall::Mailbox {
                        command: Some(command),
                        handle: handle.clone(),
                        permit: Box::pin(handle.reserve()),
                    }));
                }
            }
        }
        match close {
            Some(reason) => {
                tracing::debug!(address = %entry.address, %reason, "session closed");
                self.push_direct(frame(
                    &entry.address,
                    &ServerMessage::Close(&reason).encode_body(),
                ))
            }
            None => Ok(()),
        }
    }

    /// Carries on after what the work waited for.
    pub(super) fn unstall(&mut self, done: Unstalled) -> Result<(), Ending> {
        match done {
            Unstalled::Joined { key, handle } => {
                let Some(at) = self.find(key) else {
                    // Ended meanwhile (cannot happen: work waited); leave.
                    return Ok(());
                };
                match handle {
                    Some(handle) => {
                        if let Some(link) = &mut self.entries[at].link {
                            link.doc = LinkDoc::Joined(Some(handle));
                            crate::metrics::hocuspocus_sessions(1.0);
                        }
                        Ok(())
                    }
                    None => self.end(at, Some(UNAVAILABLE.to_owned())),
                }
            }
            Unstalled::Sent => Ok(()),
        }
    }
}

/// What a stall ended with.
pub(super) enum Unstalled {
    Joined { key: u64, handle: Option<DocHandle> },
    Sent,
}

pub(super) fn poll_stall(stall: &mut Stall, cx: &mut Context<'_>) -> Poll<Unstalled> {
    match stall {
        Stall::Join { key, joined } => joined
            .as_mut()
            .poll(cx)
            .map(|handle| Unstalled::Joined { key: *key, handle }),
        Stall::Mailbox {
            command, permit, ..
        } => match permit.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(permit)) => {
                if let Some(command) = command.take() {
                    permit.send(command);
                }
                Poll::Ready(Unstalled::Sent)
            }
            // The document stopped; the session's queue will say how.
            Poll::Ready(Err(Gone)) => Poll::Ready(Unstalled::Sent),
        },
    }
}
