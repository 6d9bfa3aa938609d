//! Spawning a bank (`trans-out` or `trans-in`) in tests.

use bank::configuration::{Role, Settings};

use super::{spawn_rm, test_common, Spawned};
use crate::db::TestDb;

/// Accounts a test bank seeds: 1..=10, [`TEST_SEED_BALANCE`] each.
pub const TEST_SEED_ACCOUNTS: u32 = 10;
/// Balance of each seeded test account, minor units (the production default).
pub const TEST_SEED_BALANCE: i64 = 1_000_000;

/// Starts the bank `role` in-process on 127.0.0.1, port 0, with a fresh database (migrated and
/// seeded with accounts 1..=[`TEST_SEED_ACCOUNTS`] holding [`TEST_SEED_BALANCE`]).
pub async fn spawn_bank(role: Role) -> Spawned {
    spawn_bank_with(role, TestDb::create(role.database()), |_| {}).await
}

/// Starts the bank `role` on `db` (a fresh one, or one handed back by [`Spawned::stop`] to
/// restart on the same data). `configure` may change any setting after the test defaults are
/// applied (e.g. `common.fault_injection = false`); `database_url` is `db`'s.
pub async fn spawn_bank_with(
    role: Role,
    db: TestDb,
    configure: impl FnOnce(&mut Settings),
) -> Spawned {
    let defaults = Settings::defaults(role);
    let mut settings = Settings {
        common: test_common(defaults.common, &db),
        seed_accounts: TEST_SEED_ACCOUNTS,
        seed_balance: TEST_SEED_BALANCE,
        ..defaults
    };
    configure(&mut settings);
    spawn_rm(settings, db).await
}
