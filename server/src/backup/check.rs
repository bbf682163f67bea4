//! `quire check --data-dir`: verifies a stopped server's data directory
//! offline. The same integrity check a start makes (sled's commit counter
//! against the commit journal, `crate::journal::decide`), the node id
//! file, and every stored document rebuilt from its snapshot and log.
//!
//! It writes nothing of Quire's; sled's own recovery may rewrite sled's
//! files as at any open. sled locks its directory: a running server's data
//! directory cannot be checked (stop it, or check a backup instead).

use crate::config::DEFAULT_SLED_CACHE_BYTES;
use crate::datadir;
use crate::journal::{self, Verdict};
use crate::names::DocName;
use crate::store;
use crdt_core::{Document, ValidationLimits};
use std::fmt;
use std::path::Path;

/// Documents listed per sled scan.
const PAGE: usize = 1000;
/// sled's own files: a directory without them holds no store.
const SLED_FILES: [&str; 2] = ["conf", "db"];

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{path} is not a Quire data directory (no sled database in it)")]
    NotADataDir { path: String },
    #[error("{path} is in use (a server running on it holds sled's lock): stop it first, or check a backup instead")]
    Locked { path: String },
    #[error("cannot open the sled database in {path}: {error}")]
    Open { path: String, error: sled::Error },
}

/// One problem found, which makes the check fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataDirProblem {
    #[error("sled lost acknowledged writes: {0}")]
    LostWrites(String),
    /// The commit journal or the node id file.
    #[error("{0}")]
    Files(String),
    #[error("document {name:?} does not load: {error}")]
    Document { name: String, error: String },
    #[error("document {name:?}: the stored state vector differs from its snapshot's")]
    StateVector { name: String },
    #[error("sled cannot read {what}: {error}")]
    Unreadable { what: &'static str, error: String },
    #[error("sled cannot read its list of documents past {after:?}: {error}")]
    Unlistable {
        after: Option<String>,
        error: String,
    },
    #[error("stored name {name:?} is not a valid document name")]
    Name { name: String },
}

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    pub documents: usize,
    /// Snapshot and log bytes, as the documents' metadata count them.
    pub bytes: u64,
    /// The last commit sled holds, and the journal's (None: no journal).
    pub commit: u64,
    pub journal: Option<u64>,
    pub problems: Vec<DataDirProblem>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let journal = match self.journal {
            Some(commit) => format!("journal commit {commit}"),
            None => "no commit journal".to_owned(),
        };
        write!(
            f,
            "{} document(s), {} bytes, sled commit {}, {journal}",
            self.documents, self.bytes, self.commit
        )?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

/// Checks the data directory at `path`; problems are in the report, an
/// error means the check could not run.
pub fn data_dir(path: &Path) -> Result<Report, CheckError> {
    let shown = path.display().to_string();
    if !SLED_FILES.iter().all(|f| path.join(f).is_file()) {
        return Err(CheckError::NotADataDir { path: shown });
    }
    let db = store::open_db(path, DEFAULT_SLED_CACHE_BYTES).map_err(|error| match &error {
        sled::Error::Io(e) if e.kind() == std::io::ErrorKind::WouldBlock => CheckError::Locked {
            path: shown.clone(),
        },
        _ => CheckError::Open {
            path: shown.clone(),
            error,
        },
    })?;
    let mut report = Report::default();
    match store::stored_commit(&db) {
        Ok(commit) => report.commit = commit,
        Err(e) => report.problems.push(DataDirProblem::Unreadable {
            what: "its commit counter",
            error: e.to_string(),
        }),
    }
    match journal::read(path) {
        Ok(records) => {
            report.journal = records.as_ref().and_then(|r| r.last()).map(|r| r.commit);
            let verdict = journal::decide(records.as_deref(), report.commit, false);
            if let Verdict::Refuse(loss) | Verdict::StartWithLoss(loss) = verdict {
                report
                    .problems
                    .push(DataDirProblem::LostWrites(loss.to_string()));
            }
        }
        Err(e) => report.problems.push(DataDirProblem::Files(e.to_string())),
    }
    if let Err(e) = datadir::read_node_id(path) {
        report.problems.push(DataDirProblem::Files(e.to_string()));
    }
    let mut after = None;
    loop {
        let page = match store::list(&db, "", after.as_deref(), PAGE) {
            Ok(page) => page,
            Err(e) => {
                report.problems.push(DataDirProblem::Unlistable {
                    after,
                    error: e.to_string(),
                });
                break;
            }
        };
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (name, meta) in page {
            report.documents += 1;
            report.bytes += meta.bytes;
            if let Some(problem) = check_document(&db, name) {
                report.problems.push(problem);
            }
        }
    }
    Ok(report)
}

/// Rebuilds one document as a load does; its problem, if any.
fn check_document(db: &sled::Db, name: String) -> Option<DataDirProblem> {
    let Ok(doc) = DocName::parse(&name) else {
        return Some(DataDirProblem::Name { name });
    };
    let stored = match store::load(db, &doc) {
        Ok(stored) => stored,
        Err(e) => {
            return Some(DataDirProblem::Document {
                name,
                error: e.to_string(),
            })
        }
    };
    let loaded = match Document::load_stored(
        stored.snapshot.as_deref(),
        stored.log.iter().map(|(_, u)| u.as_slice()),
        ValidationLimits::default(),
    ) {
        Ok(loaded) => loaded,
        Err(e) => {
            return Some(DataDirProblem::Document {
                name,
                error: e.to_string(),
            })
        }
    };
    // A cold load trusts the stored state vector: it must be the snapshot's.
    if let (Some(sv), true) = (&stored.snapshot_state_vector, stored.log.is_empty()) {
        let same = crdt_core::state_vector::decode_state_vector(sv)
            .is_ok_and(|stored_sv| stored_sv == loaded.state_vector());
        if !same {
            return Some(DataDirProblem::StateVector { name });
        }
    }
    None
}
