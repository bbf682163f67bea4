//! Finding (and if needed building) the `quire` binary.

use super::ServerError;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The `quire` binary to test: `QUIRE_BIN` if set; otherwise the workspace's
/// `target/debug/quire` (honouring `CARGO_TARGET_DIR`), after one
/// `cargo build -p quire-server --bin quire` per process so it is current.
pub async fn quire_binary() -> Result<PathBuf, ServerError> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if let Some(found) = BINARY.get() {
        return found.clone().map_err(ServerError::Binary);
    }
    let found = tokio::task::spawn_blocking(|| BINARY.get_or_init(locate).clone())
        .await
        .map_err(|e| ServerError::Binary(format!("locating task failed: {e}")))?;
    found.map_err(ServerError::Binary)
}

fn locate() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("QUIRE_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("QUIRE_BIN={} is not a file", bin.display()))
        };
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("the tests crate has no parent directory")?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let bin = target.join("debug").join("quire");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["build", "--quiet", "-p", "quire-server", "--bin", "quire"])
        .current_dir(workspace)
        .output()
        .map_err(|e| format!("running cargo build: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo build -p quire-server --bin quire failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} does not exist after building", bin.display()))
    }
}
