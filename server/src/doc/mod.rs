//! Loaded documents: one actor task per document, reached through handles.

mod actor;
mod cold;
mod command;
mod mailbox;
mod outbound;
mod peers;
mod registry;
mod relay;
mod wakeup;

pub use command::{
    ApplyError, CloseReason, ConnId, DocCommand, DocEvent, DocInfo, Gone, SnapshotBody,
    SnapshotFormat, SnapshotRequest, Subscription,
};
pub use mailbox::{Offer, Permit};
pub use outbound::{Outbound, OutboundReceiver, QueueError, Received};
pub use registry::{DocHandle, OpenError, Registry, RegistryOptions};
