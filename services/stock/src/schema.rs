//! Diesel's view of the stock service's tables, as `diesel print-schema` generates it. The
//! meaning of each column and the invariants are in the migration's `COMMENT ON` and CHECKs.

diesel::table! {
    /// Products; available = `stock - reserved`.
    products (id) {
        /// The product number.
        id -> Int8,
        /// Display name.
        name -> Text,
        /// Unit price, minor units.
        price -> Int8,
        /// Units in the warehouse, reserved ones included.
        stock -> Int8,
        /// Units held by unsettled Trys.
        reserved -> Int8,
        /// Row creation.
        created_at -> Timestamptz,
        /// Last change.
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    /// What each StockTry reserved, one row per (gid, branch_id).
    reservations (id) {
        /// Surrogate key.
        id -> Int8,
        /// The global transaction id.
        gid -> Text,
        /// The branch id within the global transaction.
        branch_id -> Text,
        /// The product reserved.
        product_id -> Int8,
        /// Units, > 0.
        quantity -> Int8,
        /// `tentative`, `confirmed` or `cancelled`.
        state -> Text,
        /// When Try reserved.
        created_at -> Timestamptz,
        /// Last change.
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(reservations -> products (product_id));

diesel::allow_tables_to_appear_in_same_query!(products, reservations);
