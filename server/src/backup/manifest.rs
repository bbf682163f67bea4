//! The manifest of a backup archive, and what an archive must satisfy
//! against it ([`verify`], pure).
//!
//! `manifest.json` is the archive's last entry: an archive cut short has
//! none, so it can never pass for a whole one. It names each document
//! (names may contain `/`, so files are numbered, `docs/00000001.yjs`),
//! and holds what each snapshot file must match: its size, its SHA-256
//! and the state vector of the state it holds.

use base64::Engine;
use crdt_core::state_vector::decode_state_vector;
use crdt_core::yrs::StateVector;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The archive format this Quire writes and reads.
pub const FORMAT: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
const DOCS_DIR: &str = "docs/";

/// The file of the `index`th document (from 1).
pub fn document_file(index: u64) -> String {
    format!("{DOCS_DIR}{index:08}.yjs")
}

/// Whether `name` is where a document's snapshot goes.
pub fn is_document_file(name: &str) -> bool {
    name.strip_prefix(DOCS_DIR)
        .and_then(|rest| rest.strip_suffix(".yjs"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The version of the Quire that wrote the archive.
    pub quire_version: String,
    /// The node the archive was taken from.
    pub node_id: String,
    /// When the backup started (RFC 3339).
    pub created_at: String,
    pub documents: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    /// The snapshot's file in the archive.
    pub file: String,
    /// The snapshot's size.
    pub bytes: u64,
    /// SHA-256 of the snapshot, lowercase hex.
    pub sha256: String,
    /// The snapshot's state vector, v1 encoding, standard base64.
    pub state_vector: String,
    /// When the document last changed (ms since the epoch).
    pub updated_at_ms: i64,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What reading one snapshot file of an archive found.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub bytes: u64,
    pub sha256: String,
    /// The state vector of the decoded snapshot, or why it did not decode.
    pub state_vector: Result<StateVector, String>,
}

/// One way an archive fails its manifest. Each names the document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("manifest format {0}, this quire reads format {FORMAT}")]
    Format(u32),
    #[error("document {name:?}: invalid name: {error}")]
    BadName { name: String, error: String },
    #[error("document {name:?} is listed twice")]
    DuplicateName { name: String },
    #[error("document {name:?}: {file} is not a document file name, or is listed twice")]
    BadFile { name: String, file: String },
    #[error("document {name:?}: {file} is missing from the archive")]
    Missing { name: String, file: String },
    #[error("document {name:?} ({file}): SHA-256 {found} differs from the manifest's {expected}: the snapshot is damaged")]
    Checksum {
        name: String,
        file: String,
        expected: String,
        found: String,
    },
    #[error("document {name:?} ({file}): {found} bytes, the manifest says {expected}")]
    Size {
        name: String,
        file: String,
        expected: u64,
        found: u64,
    },
    #[error("document {name:?} ({file}) does not decode: {error}")]
    Undecodable {
        name: String,
        file: String,
        error: String,
    },
    #[error("document {name:?}: the manifest's state vector does not decode: {error}")]
    BadStateVector { name: String, error: String },
    #[error("document {name:?} ({file}): its state vector differs from the manifest's")]
    StateVector { name: String, file: String },
    #[error("{file} is in the archive but not in the manifest")]
    Unlisted { file: String },
}

/// Every problem, one per line.
pub struct Problems<'a>(pub &'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {problem}")?;
        }
        Ok(())
    }
}

/// Decodes a manifest state vector (base64 of v1).
pub fn decode_manifest_state_vector(encoded: &str) -> Result<StateVector, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("not base64: {e}"))?;
    decode_state_vector(&bytes).map_err(|e| e.to_string())
}

/// Every way the snapshot files `found` (by file name) fail `manifest`;
/// empty when the archive is whole and intact.
pub fn verify(manifest: &Manifest, found: &BTreeMap<String, Found>) -> Vec<Problem> {
    let mut problems = Vec::new();
    if manifest.format != FORMAT {
        problems.push(Problem::Format(manifest.format));
        return problems;
    }
    let mut names = BTreeSet::new();
    let mut files = BTreeSet::new();
    for entry in &manifest.documents {
        let (name, file) = (entry.name.clone(), entry.file.clone());
        if let Err(e) = crate::names::DocName::parse(&entry.name) {
            problems.push(Problem::BadName {
                name,
                error: e.to_string(),
            });
            continue;
        }
        if !names.insert(entry.name.as_str()) {
            problems.push(Problem::DuplicateName { name });
            continue;
        }
        if !is_document_file(&entry.file) || !files.insert(entry.file.as_str()) {
            problems.push(Problem::BadFile { name, file });
            continue;
        }
        let Some(snapshot) = found.get(&entry.file) else {
            problems.push(Problem::Missing { name, file });
            continue;
        };
        if snapshot.sha256 != entry.sha256 {
            problems.push(Problem::Checksum {
                name,
                file,
                expected: entry.sha256.clone(),
                found: snapshot.sha256.clone(),
            });
            continue;
        }
        if snapshot.bytes != entry.bytes {
            problems.push(Problem::Size {
                name,
                file,
                expected: entry.bytes,
                found: snapshot.bytes,
            });
            continue;
        }
        let decoded = match &snapshot.state_vector {
            Ok(sv) => sv,
            Err(error) => {
                problems.push(Problem::Undecodable {
                    name,
                    file,
                    error: error.clone(),
                });
                continue;
            }
        };
        match decode_manifest_state_vector(&entry.state_vector) {
            Err(error) => problems.push(Problem::BadStateVector { name, error }),
            Ok(expected) if &expected != decoded => {
                problems.push(Problem::StateVector { name, file });
            }
            Ok(_) => {}
        }
    }
    for file in found.keys() {
        if !files.contains(file.as_str()) {
            problems.push(Problem::Unlisted { file: file.clone() });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crdt_core::yrs::ClientID;

    fn sv(entries: &[(u64, u32)]) -> StateVector {
        let mut sv = StateVector::default();
        for &(client, clock) in entries {
            sv.set_max(ClientID::new(client), clock);
        }
        sv
    }

    fn entry(name: &str, index: u64, body: &[u8], state: &StateVector) -> Entry {
        Entry {
            name: name.into(),
            file: document_file(index),
            bytes: body.len() as u64,
            sha256: sha256_hex(body),
            state_vector: base64(&crdt_core::state_vector::encode_state_vector(state)),
            updated_at_ms: 1,
        }
    }

    fn found(body: &[u8], state: Result<StateVector, String>) -> Found {
        Found {
            bytes: body.len() as u64,
            sha256: sha256_hex(body),
            state_vector: state,
        }
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn document_files_are_numbered() {
        assert_eq!(document_file(1), "docs/00000001.yjs");
        for (name, ok) in [
            ("docs/00000001.yjs", true),
            ("docs/123456789.yjs", true),
            ("docs/.yjs", false),
            ("docs/a.yjs", false),
            ("docs/1.yjs/x", false),
            ("manifest.json", false),
            ("../docs/1.yjs", false),
        ] {
            assert_eq!(is_document_file(name), ok, "{name}");
        }
    }

    #[test]
    fn an_archive_is_checked_against_its_manifest() {
        let a = sv(&[(1, 5)]);
        let b = sv(&[(2, 3), (7, 1)]);
        let good = || Manifest {
            format: FORMAT,
            quire_version: "0.1.0".into(),
            node_id: "n".into(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            documents: vec![entry("a", 1, b"aaa", &a), entry("team/b", 2, b"bb", &b)],
        };
        let files = || {
            BTreeMap::from([
                (document_file(1), found(b"aaa", Ok(a.clone()))),
                (document_file(2), found(b"bb", Ok(b.clone()))),
            ])
        };
        type Case = (
            &'static str,
            Box<dyn Fn(&mut Manifest, &mut BTreeMap<String, Found>)>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            ("intact", Box::new(|_, _| {}), vec![]),
            (
                "a flipped byte",
                Box::new(|_, f| {
                    f.insert(document_file(2), found(b"bc", Ok(sv(&[(2, 3), (7, 1)]))));
                }),
                vec!["document \"team/b\" (docs/00000002.yjs): SHA-256"],
            ),
            (
                "a snapshot that does not decode",
                Box::new(|m, f| {
                    m.documents[0] = entry("a", 1, b"zzz", &sv(&[(1, 5)]));
                    f.insert(document_file(1), found(b"zzz", Err("bad".into())));
                }),
                vec!["document \"a\" (docs/00000001.yjs) does not decode: bad"],
            ),
            (
                "another state",
                Box::new(|_, f| {
                    f.insert(document_file(1), found(b"aaa", Ok(sv(&[(1, 6)]))));
                }),
                vec!["document \"a\" (docs/00000001.yjs): its state vector differs"],
            ),
            (
                "a missing file",
                Box::new(|_, f| {
                    f.remove(&document_file(2));
                }),
                vec!["document \"team/b\": docs/00000002.yjs is missing"],
            ),
            (
                "an unlisted file",
                Box::new(|_, f| {
                    f.insert(document_file(3), found(b"", Ok(StateVector::default())));
                }),
                vec!["docs/00000003.yjs is in the archive but not in the manifest"],
            ),
            (
                "a size that disagrees",
                Box::new(|m, _| m.documents[0].bytes = 4),
                vec!["document \"a\" (docs/00000001.yjs): 3 bytes, the manifest says 4"],
            ),
            (
                "a name listed twice",
                Box::new(|m, f| {
                    m.documents
                        .push(entry("a", 3, b"", &StateVector::default()));
                    f.insert(document_file(3), found(b"", Ok(StateVector::default())));
                }),
                vec![
                    "document \"a\" is listed twice",
                    "docs/00000003.yjs is in the archive but not in the manifest",
                ],
            ),
            (
                "an invalid name",
                Box::new(|m, _| m.documents[0].name = "../x".into()),
                vec![
                    "document \"../x\": invalid name",
                    "docs/00000001.yjs is in the archive but not in the manifest",
                ],
            ),
            (
                "a file outside docs/",
                Box::new(|m, _| m.documents[0].file = "../etc/passwd".into()),
                vec![
                    "document \"a\": ../etc/passwd is not a document file name",
                    "docs/00000001.yjs is in the archive but not in the manifest",
                ],
            ),
            (
                "a state vector that is not base64",
                Box::new(|m, _| m.documents[0].state_vector = "!".into()),
                vec!["document \"a\": the manifest's state vector does not decode"],
            ),
            (
                "another format",
                Box::new(|m, _| m.format = 2),
                vec!["manifest format 2, this quire reads format 1"],
            ),
        ];
        for (case, change, expected) in cases {
            let (mut manifest, mut files) = (good(), files());
            change(&mut manifest, &mut files);
            let problems: Vec<String> = verify(&manifest, &files)
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(problems.len(), expected.len(), "{case}: {problems:?}");
            for (problem, expected) in problems.iter().zip(&expected) {
                assert!(problem.starts_with(expected), "{case}: {problem}");
            }
        }
    }

    #[test]
    fn a_manifest_round_trips_through_json() {
        let manifest = Manifest {
            format: FORMAT,
            quire_version: "0.1.0".into(),
            node_id: "n".into(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            documents: vec![entry("a/b", 1, b"x", &sv(&[(1, 1)]))],
        };
        let json = serde_json::to_vec(&manifest).expect("json");
        let back: Manifest = serde_json::from_slice(&json).expect("parses");
        assert_eq!(back, manifest);
    }
}
