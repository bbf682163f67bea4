//! Small files Quire keeps in the data directory beside sled's, because sled
//! cannot be trusted to keep them: its recovery treats the first damaged
//! record as the end of its log and silently drops everything after it
//! (issue 12). What lives here must survive that.
//!
//! - `node-id`: this node's id (UTF-8, one line), written once.
//!
//! Each is written atomically (temp file, fsync, rename, fsync of the
//! directory): a crash leaves the old content or the new, never a mix.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// The file holding this node's id.
pub const NODE_ID_FILE: &str = "node-id";

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: io::Error },
    #[error("{path} does not hold a node id (empty or not UTF-8); restore it or delete it to take a new id")]
    InvalidNodeId { path: String },
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Replaces `dir/name` with `bytes`, durably.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), DataDirError> {
    let path = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp"));
    let write = || -> io::Result<()> {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, &path)?;
        sync_dir(dir)
    };
    write().map_err(|source| DataDirError::Write {
        path: shown(&path),
        source,
    })
}

/// Makes a rename or a new file in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The node id kept in the data directory, if there is one.
pub fn read_node_id(dir: &Path) -> Result<Option<String>, DataDirError> {
    let path = dir.join(NODE_ID_FILE);
    let raw = match std::fs::read(&path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DataDirError::Read {
                path: shown(&path),
                source,
            })
        }
    };
    match String::from_utf8(raw) {
        Ok(id) if !id.trim().is_empty() => Ok(Some(id.trim().to_owned())),
        _ => Err(DataDirError::InvalidNodeId { path: shown(&path) }),
    }
}

pub fn write_node_id(dir: &Path, id: &str) -> Result<(), DataDirError> {
    write_atomically(dir, NODE_ID_FILE, format!("{id}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_id_written_is_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_node_id(dir.path()).expect("read"), None);
        write_node_id(dir.path(), "node-a").expect("write");
        assert_eq!(
            read_node_id(dir.path()).expect("read").as_deref(),
            Some("node-a")
        );
        // Rewriting replaces it whole, and leaves no temp file behind.
        write_node_id(dir.path(), "node-b").expect("write");
        assert_eq!(
            read_node_id(dir.path()).expect("read").as_deref(),
            Some("node-b")
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [NODE_ID_FILE]);
    }

    #[test]
    fn an_empty_node_id_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(NODE_ID_FILE), b"\n").expect("write");
        assert!(matches!(
            read_node_id(dir.path()),
            Err(DataDirError::InvalidNodeId { .. })
        ));
    }
}
