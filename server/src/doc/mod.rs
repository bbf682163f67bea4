//! Loaded documents: one actor task per document, reached through handles.

mod actor;
mod command;
mod registry;

pub use command::{
    CloseReason, ConnId, DocCommand, DocInfo, Gone, SnapshotBody, SnapshotFormat, SnapshotRequest,
};
pub use registry::{DocHandle, OpenError, Registry, RegistryOptions};
