//! Logging: env_logger, level from `RUST_LOG` (default `info`), millisecond timestamps.

/// Initialises env_logger once; later calls (tests start many apps in one process) do nothing.
pub fn init() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .try_init();
}
