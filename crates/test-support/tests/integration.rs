//! Every integration test of the workspace, in one test binary.
//!
//! Each file beside this one is a module here, named after what it tests; run one group with
//! `cargo test -p test-support --test integration <module>::` (e.g. `bank::`). The chaos run is
//! its own binary (`tests/chaos.rs`, run by `scripts/chaos.sh`). One binary means one link
//! instead of eighteen: on a two-core machine linking was most of a cold `cargo test`.
//!
//! Tests share nothing but the Postgres server: each creates its own databases
//! ([`test_support::TestDb`]) and spawns its own binaries on port 0.

mod admin;
mod admin_browser;
mod app;
mod bad_input;
mod bank;
mod barrier_props;
mod baseline;
mod compose_file;
mod coordinator;
mod coordinator_metrics;
mod diagrams;
mod end_to_end;
mod failures;
mod metrics;
mod misbehaving_rm;
mod nested;
mod openapi;
mod rate_limit;
mod reconcile;
mod retention;
mod schema_drift;
mod signing;
mod state_machine_props;
mod steps;
mod stock;
