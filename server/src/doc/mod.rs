//! Loaded documents: one actor task per document, reached through handles.
//!
//! Imports between these modules form a tree (leaves first):
//!
//! ```text
//! close, wakeup, heal, log, settings, presence
//! faults    → close, settings
//! outbound  → close, wakeup
//! command   → outbound, close
//! mailbox   → command, wakeup
//! handle    → mailbox, command
//! directory → handle, mailbox
//! conns     → outbound, close, command
//! content   → command
//! load      → content, log
//! peers     → heal, presence
//! actor     → all of the above
//! registry  → actor, directory, handle, load, content, log, mailbox, settings
//! ```

mod actor;
mod close;
mod command;
mod conns;
mod content;
mod directory;
mod faults;
mod handle;
mod heal;
mod load;
mod log;
mod mailbox;
mod outbound;
mod peers;
mod presence;
mod registry;
mod settings;
#[cfg(test)]
mod tests;
mod wakeup;

pub use close::CloseReason;
pub use command::{
    ApplyError, BackupState, ConnId, DeleteOrigin, Dialect, DocCommand, DocEvent, DocInfo, Gone,
    HistoryCommand, HistoryFailure, SnapshotBody, SnapshotFormat, SnapshotRequest, Subscription,
};
pub use handle::{DocHandle, DocStats};
pub use load::OpenError;
pub use mailbox::{Offer, Permit};
pub use outbound::{Outbound, OutboundReceiver, QueueError, Received};
pub use registry::{IfAbsent, Registry};
