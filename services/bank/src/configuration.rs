//! [`Role`] (which bank this process is) and [`Settings`], read from environment variables.

use std::fmt;

use service_kit::settings::{env_or, RmCommonSettings, SettingsError};

/// Which of the two banks a process is. Both run the same schema; the role decides the routes,
/// the default port and the default database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Bank A, binary `trans-out`: debits. Port 8081, database `trans_out`.
    TransOut,
    /// Bank B, binary `trans-in`: credits. Port 8082, database `trans_in`.
    TransIn,
}

impl Role {
    /// The binary's name: `trans-out` or `trans-in`.
    pub fn name(self) -> &'static str {
        match self {
            Role::TransOut => "trans-out",
            Role::TransIn => "trans-in",
        }
    }

    /// The default database name: `trans_out` or `trans_in`.
    pub fn database(self) -> &'static str {
        match self {
            Role::TransOut => "trans_out",
            Role::TransIn => "trans_in",
        }
    }

    /// The default port: 8081 or 8082.
    pub fn default_port(self) -> u16 {
        match self {
            Role::TransOut => 8081,
            Role::TransIn => 8082,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything a bank reads from its environment: the settings every RM shares, and its seed
/// data.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Which bank this is (set by the binary, not the environment).
    pub role: Role,
    /// Listening address, database, body limit, fault injection, who may call the branch
    /// endpoints (signing secret, Try verification) and barrier retention, read as every RM
    /// reads them
    /// ([`RmCommonSettings::from_env`]); the port and database default to
    /// [`Role::default_port`] and [`Role::database`].
    pub common: RmCommonSettings,
    /// Accounts 1..=N created when the `accounts` table is empty; 0 disables seeding.
    /// Env `SEED_ACCOUNTS`, default 1000.
    pub seed_accounts: u32,
    /// Starting balance of each seeded account, minor units, >= 0. Env `SEED_BALANCE`,
    /// default 1000000.
    pub seed_balance: i64,
}

impl Settings {
    /// The defaults, without reading the environment (tests start from these).
    pub fn defaults(role: Role) -> Settings {
        Settings {
            role,
            common: RmCommonSettings::defaults(role.default_port(), role.database()),
            seed_accounts: 1000,
            seed_balance: 1_000_000,
        }
    }

    /// The defaults overridden by the environment. Errors name the variable that does not
    /// parse, or a negative `SEED_BALANCE`.
    pub fn from_env(role: Role) -> Result<Settings, SettingsError> {
        let d = Settings::defaults(role);
        let seed_balance = env_or("SEED_BALANCE", d.seed_balance)?;
        if seed_balance < 0 {
            return Err(SettingsError {
                name: "SEED_BALANCE".into(),
                value: seed_balance.to_string(),
                message: "a balance cannot be negative".into(),
            });
        }
        Ok(Settings {
            role,
            common: RmCommonSettings::from_env(role.default_port(), role.database())?,
            seed_accounts: env_or("SEED_ACCOUNTS", d.seed_accounts)?,
            seed_balance,
        })
    }
}
