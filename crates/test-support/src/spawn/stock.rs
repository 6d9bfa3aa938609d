//! Spawning the stock service in tests.

use stock::configuration::Settings;

use super::{spawn_rm, test_common, Spawned};
use crate::db::TestDb;

/// Products a test stock service seeds: 1..=10, each with the production defaults (1,000,000
/// units, price 100 * N).
pub const TEST_SEED_PRODUCTS: u32 = 10;

/// Starts the stock service in-process on 127.0.0.1, port 0, with a fresh database (migrated and
/// seeded with products 1..=[`TEST_SEED_PRODUCTS`]).
pub async fn spawn_stock() -> Spawned {
    spawn_stock_with(TestDb::create("stock"), |_| {}).await
}

/// Starts the stock service on `db` (a fresh one, or one handed back by [`Spawned::stop`]).
/// `configure` may change any setting after the test defaults are applied; `database_url` is
/// `db`'s.
pub async fn spawn_stock_with(db: TestDb, configure: impl FnOnce(&mut Settings)) -> Spawned {
    let defaults = Settings::defaults();
    let mut settings = Settings {
        common: test_common(defaults.common, &db),
        seed_products: TEST_SEED_PRODUCTS,
        ..defaults
    };
    configure(&mut settings);
    spawn_rm(settings, db).await
}
