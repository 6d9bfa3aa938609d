//! Logging: env_logger, level from `RUST_LOG` (default `info`), millisecond timestamps.
//!
//! The convention of every binary (docs/WORKSHOP.md, "Following one transaction"): a line about
//! a transaction carries `gid=<gid> branch_id=<id> op=<op>`, with `-` for a key that does not
//! apply (`branch_id=- op=-` on a line about the whole transaction), so that one `grep
//! "gid=<gid>"` over the five logs finds all of it.

/// Initialises env_logger once; later calls (tests start many apps in one process) do nothing.
pub fn init() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .try_init();
}
