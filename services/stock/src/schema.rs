// @generated automatically by Diesel CLI.

diesel::table! {
    /// Products and their inventory. Available to new Trys = stock - reserved; the CHECKs make overselling impossible.
    products (id) {
        /// The product number, > 0.
        id -> Int8,
        /// Display name.
        name -> Text,
        /// Unit price in minor units.
        price -> Int8,
        /// Units in the warehouse, reserved ones included; Confirm deducts from it.
        stock -> Int8,
        /// Units held by Trys whose global transaction is not settled yet (StockTry done, Confirm/Cancel not yet).
        reserved -> Int8,
        /// When the product row was created.
        created_at -> Timestamptz,
        /// Last change of stock or reserved.
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    /// What each StockTry reserved, one row per (gid, branch_id). Confirm and Cancel act on the reservation, never on the quantity in their request.
    reservations (id) {
        /// Surrogate key.
        id -> Int8,
        /// The global transaction id of the branch whose Try made the reservation.
        gid -> Text,
        /// The branch id within the global transaction: 01, 02, ... (0201 when nested).
        branch_id -> Text,
        /// The product reserved.
        product_id -> Int8,
        /// Units, > 0: what Try reserved; Confirm and Cancel use exactly this.
        quantity -> Int8,
        /// tentative after Try; confirmed or cancelled once the global transaction settled it (both final).
        state -> Text,
        /// When Try reserved: the age of a tentative reservation is how long its units have been held.
        created_at -> Timestamptz,
        /// When Confirm or Cancel settled the reservation (its creation until then).
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(reservations -> products (product_id));

diesel::allow_tables_to_appear_in_same_query!(products, reservations,);
