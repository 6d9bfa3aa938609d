//! CPU time of processes from `/proc/<pid>/stat` (Linux): user + system time, in seconds.
//!
//! Postgres runs as a postmaster and one backend per connection; its CPU is the postmaster's own
//! time, plus the time of the children it already reaped (`cutime`/`cstime`: backends that
//! exited), plus the time of every live child. A backend that exits during a measurement moves
//! its time from "live child" to the postmaster's `cutime` without being lost.

use std::collections::BTreeMap;
use std::fs;

/// Clock ticks per second of `/proc` times. `sysconf(_SC_CLK_TCK)` is 100 on every Linux
/// architecture this runs on; reading it would need libc for one constant.
const TICKS_PER_SECOND: f64 = 100.0;

/// The fields after the `(comm)` of `/proc/<pid>/stat`, split on spaces; `None` when the process
/// is gone. The command name may contain spaces and parentheses, hence the search for the last `)`.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    // Field 3 (state) is a letter: keep a 0 in its place so indexes stay `field number - 3`.
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// User + system seconds of `pid` (its own threads only), `None` when it is gone.
pub fn process_seconds(pid: u32) -> Option<f64> {
    let f = stat_fields(pid)?;
    // utime is field 14, stime field 15 (1-based, see proc(5)).
    Some((f.get(11)? + f.get(12)?) as f64 / TICKS_PER_SECOND)
}

/// User + system seconds of this process.
pub fn own_seconds() -> f64 {
    process_seconds(std::process::id()).unwrap_or(0.0)
}

/// CPU seconds of a process tree rooted at `root` one level deep (Postgres' postmaster and its
/// backends and helpers), reaped children included.
pub fn tree_seconds(root: u32) -> Option<f64> {
    let f = stat_fields(root)?;
    // cutime and cstime are fields 16 and 17.
    let mut ticks = f.get(11)? + f.get(12)? + f.get(13)? + f.get(14)?;
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(child) = stat_fields(pid) {
            // ppid is field 4.
            if child.get(1) == Some(&u64::from(root)) {
                ticks += child.get(11).unwrap_or(&0) + child.get(12).unwrap_or(&0);
            }
        }
    }
    Some(ticks as f64 / TICKS_PER_SECOND)
}

/// The processes whose CPU a run reports: a name and how to read it.
#[derive(Debug, Clone)]
pub struct Watched {
    /// Service pids by name (`coordinator`, `trans-out`, ...).
    pub services: BTreeMap<String, u32>,
    /// The Postgres postmaster, if known.
    pub postgres: Option<u32>,
}

impl Watched {
    /// A snapshot of every watched process's CPU seconds, plus `bench` (this process).
    pub fn snapshot(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (name, pid) in &self.services {
            if let Some(secs) = process_seconds(*pid) {
                out.insert(name.clone(), secs);
            }
        }
        if let Some(secs) = self.postgres.and_then(tree_seconds) {
            out.insert("postgres".into(), secs);
        }
        out.insert("bench".into(), own_seconds());
        out
    }
}

/// `after - before` per name (names missing from either side are dropped).
pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(name, a)| before.get(name).map(|b| (name.clone(), (a - b).max(0.0))))
        .collect()
}

/// Reads `<run_dir>/<name>.pid` for each name; missing or unreadable files are skipped.
pub fn pids_from_run_dir(run_dir: &str, names: &[&str]) -> BTreeMap<String, u32> {
    names
        .iter()
        .filter_map(|name| {
            let text = fs::read_to_string(format!("{run_dir}/{name}.pid")).ok()?;
            Some(((*name).to_owned(), text.trim().parse().ok()?))
        })
        .collect()
}

/// The postmaster pid of a cluster: the first line of `<data_dir>/postmaster.pid`.
pub fn postmaster_pid(data_dir: &str) -> Option<u32> {
    let text = fs::read_to_string(format!("{data_dir}/postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}
