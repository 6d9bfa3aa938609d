//! [`Settings`], read from environment variables.

use service_kit::settings::{env_or, RmCommonSettings, SettingsError};

/// The stock service's port when `PORT` is unset: 8083 (the sample's port table).
pub const DEFAULT_PORT: u16 = 8083;

/// The stock service's database when `DATABASE_URL` is unset: `stock` on the local Postgres.
pub const DEFAULT_DATABASE: &str = "stock";

/// Everything the stock service reads from its environment: the settings every RM shares, and
/// its seed data.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listening address, database, body limit, fault injection, who may call the branch
    /// endpoints (signing secret, Try verification) and barrier retention, read as every RM
    /// reads them
    /// ([`RmCommonSettings::from_env`]); the port defaults to [`DEFAULT_PORT`] and the database
    /// to [`DEFAULT_DATABASE`].
    pub common: RmCommonSettings,
    /// Products 1..=N created when the `products` table is empty; 0 disables seeding.
    /// Env `SEED_PRODUCTS`, default 100.
    pub seed_products: u32,
    /// Units in stock of each seeded product, >= 0. Env `SEED_STOCK`, default 1000000.
    pub seed_stock: i64,
    /// Base price in minor units, >= 0: product N costs `seed_price * N`. Env `SEED_PRICE`,
    /// default 100.
    pub seed_price: i64,
}

impl Settings {
    /// The defaults, without reading the environment (tests start from these).
    pub fn defaults() -> Settings {
        Settings {
            common: RmCommonSettings::defaults(DEFAULT_PORT, DEFAULT_DATABASE),
            seed_products: 100,
            seed_stock: 1_000_000,
            seed_price: 100,
        }
    }

    /// The defaults overridden by the environment. Errors name the variable that does not
    /// parse, a negative `SEED_STOCK` or `SEED_PRICE`, or a price `SEED_PRICE * SEED_PRODUCTS`
    /// that does not fit in an i64.
    pub fn from_env() -> Result<Settings, SettingsError> {
        let d = Settings::defaults();
        let settings = Settings {
            common: RmCommonSettings::from_env(DEFAULT_PORT, DEFAULT_DATABASE)?,
            seed_products: env_or("SEED_PRODUCTS", d.seed_products)?,
            seed_stock: env_or("SEED_STOCK", d.seed_stock)?,
            seed_price: env_or("SEED_PRICE", d.seed_price)?,
        };
        let invalid = |name: &str, value: i64, message: &str| SettingsError {
            name: name.into(),
            value: value.to_string(),
            message: message.into(),
        };
        if settings.seed_stock < 0 {
            return Err(invalid("SEED_STOCK", settings.seed_stock, "must be >= 0"));
        }
        if settings.seed_price < 0 {
            return Err(invalid("SEED_PRICE", settings.seed_price, "must be >= 0"));
        }
        if settings
            .seed_price
            .checked_mul(i64::from(settings.seed_products))
            .is_none()
        {
            return Err(invalid(
                "SEED_PRICE",
                settings.seed_price,
                "SEED_PRICE * SEED_PRODUCTS must fit in a 64-bit integer",
            ));
        }
        Ok(settings)
    }
}
