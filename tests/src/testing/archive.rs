//! Reading a backup archive (`GET /api/backup`) in tests, independently of
//! the server's own reader: a plain ustar walk and the manifest as JSON.

use std::ops::Range;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("no end-of-archive marker")]
    Unterminated,
    #[error("tar header at byte {0} is not readable")]
    BadHeader(usize),
    #[error("the last entry is {0:?}, not manifest.json")]
    NoManifest(String),
    #[error("manifest.json: {0}")]
    Json(#[from] serde_json::Error),
}

/// The entries of a tar archive: each name and where its bytes are.
pub fn tar_entries(archive: &[u8]) -> Result<Vec<(String, Range<usize>)>, ArchiveError> {
    let mut entries = Vec::new();
    let mut at = 0;
    while at + 512 <= archive.len() {
        let header = &archive[at..at + 512];
        if header.iter().all(|&b| b == 0) {
            return Ok(entries);
        }
        let name_len = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = std::str::from_utf8(&header[..name_len])
            .map_err(|_| ArchiveError::BadHeader(at))?
            .to_owned();
        let size = std::str::from_utf8(&header[124..135])
            .ok()
            .and_then(|octal| usize::from_str_radix(octal.trim(), 8).ok())
            .ok_or(ArchiveError::BadHeader(at))?;
        let start = at + 512;
        entries.push((name, start..start + size));
        at = start + size.div_ceil(512) * 512;
    }
    Err(ArchiveError::Unterminated)
}

/// The archive's manifest, its last entry.
pub fn manifest_of(archive: &[u8]) -> Result<serde_json::Value, ArchiveError> {
    let entries = tar_entries(archive)?;
    match entries.last() {
        Some((name, range)) if name == "manifest.json" => {
            Ok(serde_json::from_slice(&archive[range.clone()])?)
        }
        last => Err(ArchiveError::NoManifest(
            last.map(|(name, _)| name.clone()).unwrap_or_default(),
        )),
    }
}

/// Each document's name and snapshot (a v1 update), as the manifest maps them.
pub fn documents_of(archive: &[u8]) -> Result<Vec<(String, Vec<u8>)>, ArchiveError> {
    let manifest = manifest_of(archive)?;
    let entries = tar_entries(archive)?;
    let mut out = Vec::new();
    for doc in manifest["documents"].as_array().into_iter().flatten() {
        let (Some(name), Some(file)) = (doc["name"].as_str(), doc["file"].as_str()) else {
            continue;
        };
        if let Some((_, range)) = entries.iter().find(|(n, _)| n == file) {
            out.push((name.to_owned(), archive[range.clone()].to_vec()));
        }
    }
    Ok(out)
}
