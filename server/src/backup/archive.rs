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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::manifest::{base64, document_file, sha256_hex, Entry, FORMAT};
    use crate::backup::tarball::{header, padding, END};
    use crdt_core::yrs::{Doc, ReadTxn, StateVector, Text, Transact};

    fn snapshot(text: &str) -> (Vec<u8>, Vec<u8>) {
        let doc = Doc::new();
        doc.get_or_insert_text("t")
            .insert(&mut doc.transact_mut(), 0, text);
        let txn = doc.transact();
        (
            txn.encode_state_as_update_v1(&StateVector::default()),
            crdt_core::state_vector::encode_state_vector(&txn.state_vector()),
        )
    }

    /// An archive as `GET /api/backup` writes it, of documents `names`.
    fn archive(names: &[&str]) -> (Vec<u8>, Vec<(String, std::ops::Range<usize>)>) {
        let mut out = Vec::new();
        let mut entries = Vec::new();
        let mut documents = Vec::new();
        let mut put = |out: &mut Vec<u8>, name: &str, body: &[u8]| {
            out.extend_from_slice(&header(name, body.len() as u64, 0).expect("header"));
            entries.push((name.to_owned(), out.len()..out.len() + body.len()));
            out.extend_from_slice(body);
            out.extend(std::iter::repeat_n(0, padding(body.len() as u64)));
        };
        for (i, name) in names.iter().enumerate() {
            let (update, sv) = snapshot(&format!("text of {name}"));
            let file = document_file(i as u64 + 1);
            put(&mut out, &file, &update);
            documents.push(Entry {
                name: (*name).to_owned(),
                file,
                bytes: update.len() as u64,
                sha256: sha256_hex(&update),
                state_vector: base64(&sv),
                updated_at_ms: 1,
            });
        }
        let manifest = Manifest {
            format: FORMAT,
            quire_version: "test".into(),
            node_id: "n".into(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            documents,
        };
        let json = serde_json::to_vec(&manifest).expect("json");
        put(&mut out, MANIFEST_FILE, &json);
        out.extend_from_slice(&END);
        (out, entries)
    }

    #[test]
    fn an_archive_file_verifies_only_whole_and_intact() {
        let (good, entries) = archive(&["a", "team/b"]);
        let second = entries[1].1.clone();
        let manifest_at = entries[2].1.start - 512;
        type Change = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Change, Option<&str>)> = vec![
            ("intact", Box::new(|_| {}), None),
            (
                "a flipped byte in a snapshot",
                Box::new(move |a| a[second.start + 1] ^= 0x20),
                Some("document \"team/b\" (docs/00000002.yjs): SHA-256"),
            ),
            (
                "cut inside a snapshot",
                Box::new(move |a| a.truncate(entries[0].1.start + 3)),
                Some("has no manifest.json"),
            ),
            (
                "cut before the manifest",
                Box::new(move |a| a.truncate(manifest_at)),
                Some("has no manifest.json"),
            ),
            (
                "an entry after the manifest",
                Box::new(move |a| {
                    a.truncate(a.len() - END.len());
                    a.extend_from_slice(&header("extra", 0, 0).expect("header"));
                    a.extend_from_slice(&END);
                }),
                Some("unexpected entry \"extra\" after the manifest"),
            ),
            (
                "empty",
                Box::new(|a| a.clear()),
                Some("has no manifest.json"),
            ),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        for (case, change, expected) in cases {
            let mut bytes = good.clone();
            change(&mut bytes);
            let path = dir.path().join("a.tar");
            std::fs::write(&path, &bytes).expect("write");
            match (verify(&path), expected) {
                (Ok(verified), None) => {
                    assert_eq!(verified.manifest.documents.len(), 2, "{case}");
                }
                (Err(e), Some(expected)) => {
                    assert!(e.to_string().contains(expected), "{case}: {e}");
                }
                (result, _) => panic!("{case}: {result:?}"),
            }
        }
    }

    #[test]
    fn a_verified_archive_hands_over_each_document_once_in_order() {
        let (bytes, _) = archive(&["a", "b", "c/d"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.tar");
        std::fs::write(&path, &bytes).expect("write");
        let verified = verify(&path).expect("verifies");
        let mut seen = Vec::new();
        for_each_document(&path, &verified.manifest, |entry, body| {
            assert_eq!(sha256_hex(&body), entry.sha256);
            seen.push(entry.name.clone());
            Ok::<(), ArchiveError>(())
        })
        .expect("reads");
        assert_eq!(seen, ["a", "b", "c/d"]);
    }
}
