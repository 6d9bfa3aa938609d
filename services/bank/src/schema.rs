// @generated automatically by Diesel CLI.

diesel::table! {
    /// Bank accounts. Spendable money is balance - trading_balance; incoming credits stay in holds until Confirm.
    accounts (id) {
        /// The account number, > 0.
        id -> Int8,
        /// Money on the account, in minor units, including the frozen part (trading_balance).
        balance -> Int8,
        /// Frozen funds: the sum of outgoing transfers in flight (TransOut Try done, Confirm/Cancel not yet). Spendable = balance - trading_balance.
        trading_balance -> Int8,
        /// A locked account refuses new Trys (409 FAILURE); Confirm and Cancel of holds already placed still run.
        locked -> Bool,
        /// When the account row was created.
        created_at -> Timestamptz,
        /// Last change of the balances or the lock.
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    /// What each Try reserved, one row per (gid, branch_id). Confirm and Cancel act on the hold, never on the amount in their request.
    holds (id) {
        /// Surrogate key.
        id -> Int8,
        /// The global transaction id of the branch whose Try placed the hold.
        gid -> Text,
        /// The branch id within the global transaction: 01, 02, ... (0201 when nested).
        branch_id -> Text,
        /// The account the hold is on.
        account_id -> Int8,
        /// Minor units, > 0: what Try froze (out) or promised (in); Confirm and Cancel use exactly this.
        amount -> Int8,
        /// out: TransOut froze amount in accounts.trading_balance; in: TransIn promised a credit of amount, added to balance on Confirm.
        direction -> Text,
        /// tentative after Try; confirmed or cancelled once the global transaction settled it (both final).
        state -> Text,
        /// When Try placed the hold: the age of a tentative hold is how long its funds have been frozen.
        created_at -> Timestamptz,
        /// When Confirm or Cancel settled the hold (its creation until then).
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(holds -> accounts (account_id));

diesel::allow_tables_to_appear_in_same_query!(accounts, holds,);
