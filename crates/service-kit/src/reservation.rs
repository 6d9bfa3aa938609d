//! [`ReservationState`]: the state of what a Try reserved (a bank hold, a stock reservation),
//! stored as text in the RMs' tables, whose CHECK constraints list the same three words.

use std::fmt;

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;

/// Where a reservation stands: `tentative` after its Try, then `confirmed` or `cancelled` for
/// good, once the global transaction settled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub enum ReservationState {
    /// `tentative`: reserved by Try; Confirm or Cancel will settle it.
    Tentative,
    /// `confirmed`: used by Confirm. Final.
    Confirmed,
    /// `cancelled`: released by Cancel. Final.
    Cancelled,
}

impl ReservationState {
    /// The stored word: `tentative`, `confirmed` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationState::Tentative => "tentative",
            ReservationState::Confirmed => "confirmed",
            ReservationState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for ReservationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql<Text, Pg> for ReservationState {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <str as ToSql<Text, Pg>>::to_sql(self.as_str(), out)
    }
}

impl FromSql<Text, Pg> for ReservationState {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        match <String as FromSql<Text, Pg>>::from_sql(value)?.as_str() {
            "tentative" => Ok(ReservationState::Tentative),
            "confirmed" => Ok(ReservationState::Confirmed),
            "cancelled" => Ok(ReservationState::Cancelled),
            other => Err(format!("unknown reservation state {other:?}").into()),
        }
    }
}
