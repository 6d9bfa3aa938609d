//! Diesel's view of the bank's tables, as `diesel print-schema` generates it. The meaning of each
//! column and the invariants are in the migration's `COMMENT ON` and CHECK constraints.

diesel::table! {
    /// Bank accounts; spendable = `balance - trading_balance`.
    accounts (id) {
        /// The account number.
        id -> Int8,
        /// Money on the account, minor units, frozen part included.
        balance -> Int8,
        /// Frozen funds of outgoing transfers in flight.
        trading_balance -> Int8,
        /// A locked account refuses new Trys.
        locked -> Bool,
        /// Row creation.
        created_at -> Timestamptz,
        /// Last change.
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    /// What each Try reserved, one row per (gid, branch_id).
    holds (id) {
        /// Surrogate key.
        id -> Int8,
        /// The global transaction id.
        gid -> Text,
        /// The branch id within the global transaction.
        branch_id -> Text,
        /// The account the hold is on.
        account_id -> Int8,
        /// Minor units, > 0.
        amount -> Int8,
        /// `out` (funds frozen) or `in` (credit pending).
        direction -> Text,
        /// `tentative`, `confirmed` or `cancelled`.
        state -> Text,
        /// When Try placed the hold.
        created_at -> Timestamptz,
        /// Last change.
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(holds -> accounts (account_id));

diesel::allow_tables_to_appear_in_same_query!(accounts, holds);
