//! The measured server's CPU time and resident memory, read from `/proc`.

use serde::Serialize;
use std::time::Instant;

/// Linux reports CPU times in clock ticks of `USER_HZ`, 100 on every
/// architecture Linux runs this on.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system) and RSS of a set of processes, summed.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Sample {
    pub cpu_seconds: f64,
    pub rss_kib: u64,
    #[serde(skip)]
    pub at: Instant,
}

impl Sample {
    pub(crate) fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

/// The processes of the server under test (several for a cluster).
#[derive(Debug, Clone, Default)]
pub(crate) struct Procs {
    pids: Vec<u32>,
}

impl Procs {
    pub(crate) fn new(pids: Vec<u32>) -> Procs {
        Procs { pids }
    }

    /// `None` when no pid was given or a process is gone.
    pub(crate) fn sample(&self) -> Option<Sample> {
        if self.pids.is_empty() {
            return None;
        }
        let mut total = Sample {
            cpu_seconds: 0.0,
            rss_kib: 0,
            at: Instant::now(),
        };
        for &pid in &self.pids {
            let one = sample_pid(&pid.to_string())?;
            total.cpu_seconds += one.cpu_seconds;
            total.rss_kib += one.rss_kib;
        }
        Some(total)
    }

    /// This process (the load generator), to show it was not the bottleneck.
    pub(crate) fn own() -> Option<Sample> {
        sample_pid("self")
    }
}

fn sample_pid(pid: &str) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // After the comm, field 0 is `state`; utime and stime are fields 11 and 12.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(Sample {
        cpu_seconds: ticks / TICKS_PER_SECOND,
        rss_kib,
        at: Instant::now(),
    })
}

/// CPU used and memory before and after a measured window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Usage {
    pub cpu_seconds: f64,
    /// CPU seconds per wall-clock second (1.0 = one core busy).
    pub cpu_cores: f64,
    pub rss_before_mib: f64,
    pub rss_after_mib: f64,
}

impl Usage {
    pub(crate) fn between(before: Option<Sample>, after: Option<Sample>) -> Option<Usage> {
        let (before, after) = (before?, after?);
        let cpu_seconds = after.cpu_seconds - before.cpu_seconds;
        let wall = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
        Some(Usage {
            cpu_seconds: round3(cpu_seconds),
            cpu_cores: round3(cpu_seconds / wall),
            rss_before_mib: round3(before.rss_mib()),
            rss_after_mib: round3(after.rss_mib()),
        })
    }
}

pub(crate) fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let own = Procs::own().expect("/proc/self");
        assert!(own.rss_kib > 0);
        let mine = Procs::new(vec![std::process::id()]).sample().unwrap();
        assert!(mine.rss_kib > 0);
        assert!(Procs::new(vec![]).sample().is_none());
    }
}
