//! Each database's `src/schema.rs` is generated, never written by hand: these tests migrate a
//! fresh database exactly as the binary does at start, run `diesel print-schema` in the crate's
//! directory (its `diesel.toml` says which tables and where), and fail when the checked-in file
//! differs from what the migrations produce. To regenerate one after changing a migration:
//!
//! ```text
//! createdb -h 127.0.0.1 -U postgres scratch
//! # migrate it (start the binary against it once, or `diesel migration run` for one set), then
//! (cd services/bank && diesel print-schema --database-url postgres://postgres@127.0.0.1/scratch > src/schema.rs)
//! ```
//!
//! `diesel` is diesel_cli, installed by `scripts/install_deps.sh`; `DIESEL` names another binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use diesel_migrations::EmbeddedMigrations;
use service_kit::db::{build_pool, run_migrations};
use test_support::TestDb;

/// The diesel_cli binary: `DIESEL`, else `diesel` on PATH, else cargo's install directory.
fn diesel_cli() -> PathBuf {
    if let Some(explicit) = std::env::var_os("DIESEL") {
        return PathBuf::from(explicit);
    }
    let on_path = Command::new("diesel").arg("--version").output();
    if on_path.is_ok_and(|o| o.status.success()) {
        return PathBuf::from("diesel");
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .expect("HOME or CARGO_HOME is set");
    home.join("bin/diesel")
}

/// Migrates a fresh database with `sets`, in order, as the binary's start does.
fn migrated_database(prefix: &str, sets: &[&EmbeddedMigrations]) -> TestDb {
    let db = TestDb::create(prefix);
    let pool = build_pool(&db.url, 1).expect("a pool on the fresh database");
    run_migrations(&pool, sets).unwrap_or_else(|e| panic!("{prefix}: migrating failed: {e}"));
    db
}

/// What `diesel print-schema` prints for `db`, run in `crate_dir` so that its `diesel.toml` applies.
fn print_schema(crate_dir: &Path, db: &TestDb) -> String {
    let cli = diesel_cli();
    let out = Command::new(&cli)
        .args(["print-schema", "--database-url", &db.url])
        .current_dir(crate_dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): install diesel_cli with scripts/install_deps.sh \
                 (cargo install diesel_cli --no-default-features --features postgres)",
                cli.display()
            )
        });
    assert!(
        out.status.success(),
        "diesel print-schema failed in {}: {}",
        crate_dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("print-schema prints UTF-8")
}

fn workspace_dir(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

/// Fails, with the command that regenerates it, when `crate_dir/src/schema.rs` is not what the
/// migrations produce.
fn assert_schema_is_generated(crate_dir: &str, sets: &[&EmbeddedMigrations]) {
    let dir = workspace_dir(crate_dir);
    let db = migrated_database(&crate_dir.replace('/', "_"), sets);
    let generated = print_schema(&dir, &db);
    let checked_in = std::fs::read_to_string(dir.join("src/schema.rs")).expect("src/schema.rs");
    assert!(
        generated == checked_in,
        "{crate_dir}/src/schema.rs differs from what its migrations produce; regenerate it with \
         `diesel print-schema` (see tests/schema_drift.rs). Generated:\n{generated}"
    );
}

#[test]
fn the_coordinators_schema_rs_is_what_its_migrations_generate() {
    assert_schema_is_generated("coordinator", &[&coordinator::startup::MIGRATIONS]);
}

#[test]
fn the_banks_schema_rs_is_what_its_migrations_generate() {
    assert_schema_is_generated("services/bank", bank::ALL_MIGRATIONS);
}

#[test]
fn the_stock_services_schema_rs_is_what_its_migrations_generate() {
    assert_schema_is_generated("services/stock", stock::ALL_MIGRATIONS);
}
