//! Reading a backup archive from a file: [`verify`] reads it whole, one
//! snapshot at a time, and checks every snapshot against the manifest
//! (`quire check --archive`, and the first pass of `quire restore`);
//! [`for_each_document`] hands each verified snapshot on (the second pass
//! of a restore, which checks every SHA-256 again as it goes).

use super::manifest::{self, Found, Manifest, Problem, Problems, MANIFEST_FILE};
use super::tarball::{Reader, TarError};
use crdt_core::{Document, ValidationLimits};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// The largest manifest read: far more than a million documents take.
const MAX_MANIFEST_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Tar { path: String, source: TarError },
    #[error("{path} has no {MANIFEST_FILE}: the archive is incomplete (a backup cut short?)")]
    NoManifest { path: String },
    #[error("{path}: {MANIFEST_FILE} is not a valid manifest: {error}")]
    BadManifest { path: String, error: String },
    #[error("{path}: unexpected entry {name:?} {place}")]
    Unexpected {
        path: String,
        name: String,
        place: &'static str,
    },
    #[error("{path} does not match its manifest ({} problem(s)):\n{}", problems.len(), Problems(problems))]
    Problems {
        path: String,
        problems: Vec<Problem>,
    },
    /// The file changed between the two passes of a restore.
    #[error("{path}: {file} changed while it was read (SHA-256 differs from the first pass)")]
    Changed { path: String, file: String },
}

/// A verified archive: its manifest and the bytes of all its snapshots.
#[derive(Debug)]
pub struct Verified {
    pub manifest: Manifest,
    pub bytes: u64,
}

fn open(path: &Path) -> Result<Reader<BufReader<File>>, ArchiveError> {
    let file = File::open(path).map_err(|source| ArchiveError::Open {
        path: shown(path),
        source,
    })?;
    Ok(Reader::new(BufReader::with_capacity(1 << 20, file)))
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// The state vector of a snapshot, decoded as untrusted input: validated,
/// then integrated, as a REST update would be.
pub fn decode_snapshot(bytes: &[u8]) -> Result<crdt_core::yrs::StateVector, String> {
    Document::load_with_limits(Some(bytes), [], ValidationLimits::default())
        .map(|doc| doc.state_vector())
        .map_err(|e| e.to_string())
}

/// Reads the whole archive and checks it against its manifest: present,
/// last, every snapshot's size, SHA-256 and state vector.
pub fn verify(path: &Path) -> Result<Verified, ArchiveError> {
    let mut reader = open(path)?;
    let tar = |source| ArchiveError::Tar {
        path: shown(path),
        source,
    };
    let mut found = BTreeMap::new();
    let manifest = loop {
        let Some(entry) = reader.next_entry().map_err(|e| match e {
            TarError::Truncated(_) => ArchiveError::NoManifest { path: shown(path) },
            e => tar(e),
        })?
        else {
            return Err(ArchiveError::NoManifest { path: shown(path) });
        };
        if entry.name == MANIFEST_FILE {
            if entry.size > MAX_MANIFEST_BYTES {
                return Err(ArchiveError::BadManifest {
                    path: shown(path),
                    error: format!("{} bytes", entry.size),
                });
            }
            let body = reader.read_body(&entry).map_err(|e| match e {
                TarError::Truncated(_) => ArchiveError::NoManifest { path: shown(path) },
                e => tar(e),
            })?;
            break serde_json::from_slice::<Manifest>(&body).map_err(|e| {
                ArchiveError::BadManifest {
                    path: shown(path),
                    error: e.to_string(),
                }
            })?;
        }
        if !manifest::is_document_file(&entry.name) || found.contains_key(&entry.name) {
            return Err(ArchiveError::Unexpected {
                path: shown(path),
                name: entry.name,
                place: "(not a document file, or twice)",
            });
        }
        // A snapshot cut short means the manifest never came either.
        let body = reader.read_body(&entry).map_err(|e| match e {
            TarError::Truncated(_) => ArchiveError::NoManifest { path: shown(path) },
            e => tar(e),
        })?;
        found.insert(
            entry.name,
            Found {
                bytes: body.len() as u64,
                sha256: manifest::sha256_hex(&body),
                state_vector: decode_snapshot(&body),
            },
        );
    };
    if let Some(entry) = reader.next_entry().map_err(tar)? {
        return Err(ArchiveError::Unexpected {
            path: shown(path),
            name: entry.name,
            place: "after the manifest",
        });
    }
    let problems = manifest::verify(&manifest, &found);
    if !problems.is_empty() {
        return Err(ArchiveError::Problems {
            path: shown(path),
            problems,
        });
    }
    let bytes = found.values().map(|f| f.bytes).sum();
    Ok(Verified { manifest, bytes })
}

/// Hands each document of a [`verify`]d archive to `f` with its snapshot,
/// in archive order, after checking its SHA-256 again.
pub fn for_each_document<E: From<ArchiveError>>(
    path: &Path,
    manifest: &Manifest,
    mut f: impl FnMut(&manifest::Entry, Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    let by_file: BTreeMap<&str, &manifest::Entry> = manifest
        .documents
        .iter()
        .map(|e| (e.file.as_str(), e))
        .collect();
    let mut reader = open(path)?;
    let tar = |source| ArchiveError::Tar {
        path: shown(path),
        source,
    };
    while let Some(header) = reader.next_entry().map_err(tar)? {
        let body = reader.read_body(&header).map_err(tar)?;
        if header.name == MANIFEST_FILE {
            break;
        }
        let entry = by_file
            .get(header.name.as_str())
            .ok_or_else(|| ArchiveError::Changed {
                path: shown(path),
                file: header.name.clone(),
            })?;
        if manifest::sha256_hex(&body) != entry.sha256 {
            return Err(ArchiveError::Changed {
                path: shown(path),
                file: header.name,
            }
            .into());
        }
        f(entry, body)?;
    }
    Ok(())
}
