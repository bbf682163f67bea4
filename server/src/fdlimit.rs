//! The open-files limit (`RLIMIT_NOFILE`).
//!
//! Every WebSocket holds one file descriptor, and the soft limit a process
//! starts with (1024 under systemd and in most shells) is far below
//! `--max-connections`' default. Past it, accepting a connection fails with
//! EMFILE and sled cannot open its files. An unprivileged process may raise
//! its soft limit up to the hard one, so the server does that at start and
//! says when even the hard limit is too low for `--max-connections`.

/// Descriptors kept for everything but WebSocket connections: sled's files,
/// the listener, Redis connections, stdio, the runtime's event loop, and
/// REST and SSE requests in flight. Generous on purpose: running short costs
/// failed accepts, a spare descriptor costs nothing.
pub const FD_MARGIN: u64 = 64;

/// Raises the soft open-files limit as far as the hard limit allows, logs
/// the result, and warns when `max_connections` does not fit in it.
pub fn raise_and_check(max_connections: usize) {
    let Some(nofile) = raise() else {
        return;
    };
    tracing::info!(limit = nofile, "open files limit (RLIMIT_NOFILE)");
    if let Some(warning) = fd_budget_warning(max_connections, nofile) {
        tracing::warn!("{warning}");
    }
}

/// The soft limit after trying to raise it, or `None` if it cannot be read.
#[cfg(unix)]
fn raise() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(nofile) => Some(nofile),
        Err(error) => {
            // On Linux an unlimited hard limit cannot become the soft one
            // (the kernel caps it at fs.nr_open): keep what there is.
            tracing::warn!(%error, "cannot raise the open files limit");
            match rlimit::Resource::NOFILE.get() {
                Ok((soft, _hard)) => Some(soft),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the open files limit");
                    None
                }
            }
        }
    }
}

#[cfg(not(unix))]
fn raise() -> Option<u64> {
    None
}

/// The warning to log when `max_connections` connections, plus
/// [`FD_MARGIN`] descriptors for everything else, need more than `nofile`.
pub fn fd_budget_warning(max_connections: usize, nofile: u64) -> Option<String> {
    let connections = u64::try_from(max_connections).unwrap_or(u64::MAX);
    let needed = connections.saturating_add(FD_MARGIN);
    if needed <= nofile {
        return None;
    }
    Some(format!(
        "--max-connections {max_connections} needs about {needed} open files \
         ({FD_MARGIN} kept for storage, listeners and Redis) but the limit is {nofile}: \
         past about {} connections, accepting one fails. Raise the hard limit \
         (LimitNOFILE= in a systemd unit, --ulimit nofile= in Docker, ulimit -Hn) \
         or lower --max-connections",
        nofile.saturating_sub(FD_MARGIN)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_when_connections_and_margin_exceed_the_limit() {
        // (max_connections, nofile, warns)
        let cases = [
            (50_000, 1_024, true),
            (50_000, 50_063, true),
            (50_000, 50_064, false),
            (50_000, 1_048_576, false),
            (960, 1_024, false),
            (961, 1_024, true),
            (0, 64, false),
            (0, 63, true),
            (0, 0, true),
            (1, u64::MAX, false),
        ];
        for (max_connections, nofile, warns) in cases {
            assert_eq!(
                fd_budget_warning(max_connections, nofile).is_some(),
                warns,
                "max_connections {max_connections}, nofile {nofile}"
            );
        }
    }

    #[test]
    fn the_warning_names_the_numbers_and_the_way_out() {
        let warning = fd_budget_warning(50_000, 1_024).unwrap_or_default();
        assert!(warning.contains("--max-connections 50000"), "{warning}");
        assert!(warning.contains("50064 open files"), "{warning}");
        assert!(warning.contains("limit is 1024"), "{warning}");
        assert!(warning.contains("about 960 connections"), "{warning}");
        assert!(warning.contains("LimitNOFILE="), "{warning}");
    }
}
