//! Test helpers for the whole workspace. Every integration test of the sample lives in this
//! crate's `tests/` directory, because it needs several binaries at once.
//!
//! * [`db`]: a fresh Postgres database per test ([`db::TestDb`]).
//! * [`spawn`]: each binary started in-process on port 0 with its own fresh database, and
//!   [`spawn::spawn_system`] for all five wired together.
//! * [`rm`]: calling an RM (a bank, the stock service) under test and reading its database, with
//!   the assertions on branch answers ([`rm::assert_success`], ...).
//! * [`metrics`]: scraping a binary's `GET /api/metrics` and reading its samples by name and
//!   exact labels ([`metrics::scrape`], [`metrics::Exposition`]).
//! * [`process`]: the binaries as real OS processes, for tests that kill (`SIGKILL`) and restart
//!   them.
//! * [`stub`]: a scripted stand-in for a misbehaving RM (a redirect, a 202, a call held open).
//!
//! It also runs the code blocks of `docs/ADOPTING.md` as doctests, so that what readers copy
//! compiles; here rather than in `tcc`, which must build and test when copied alone.

pub mod db;
pub mod metrics;
pub mod process;
pub mod rm;
pub mod spawn;
pub mod stub;

pub use db::{pg_url, TestDb};

/// `docs/ADOPTING.md`, whose code blocks run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/ADOPTING.md")]
pub struct AdoptingGuide;
