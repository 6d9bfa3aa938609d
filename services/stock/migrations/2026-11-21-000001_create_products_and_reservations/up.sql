-- The stock service's products and the reservations its TCC branches place on them (see
-- docs/ARCHITECTURE.md#data-model-and-invariants). Quantities are whole units, prices integer
-- minor units.
CREATE TABLE products (
    id         BIGINT      PRIMARY KEY,
    name       TEXT        NOT NULL,
    price      BIGINT      NOT NULL,
    stock      BIGINT      NOT NULL,
    reserved   BIGINT      NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT products_id_positive CHECK (id > 0),
    CONSTRAINT products_price_not_negative CHECK (price >= 0),
    CONSTRAINT products_stock_not_negative CHECK (stock >= 0),
    CONSTRAINT products_reserved_within_stock CHECK (0 <= reserved AND reserved <= stock)
);

COMMENT ON TABLE products IS
    'Products and their inventory. Available to new Trys = stock - reserved; the CHECKs make overselling impossible.';
COMMENT ON COLUMN products.id IS
    'The product number, > 0.';
COMMENT ON COLUMN products.name IS
    'Display name.';
COMMENT ON COLUMN products.price IS
    'Unit price in minor units.';
COMMENT ON COLUMN products.stock IS
    'Units in the warehouse, reserved ones included; Confirm deducts from it.';
COMMENT ON COLUMN products.reserved IS
    'Units held by Trys whose global transaction is not settled yet (StockTry done, Confirm/Cancel not yet).';
COMMENT ON COLUMN products.created_at IS
    'When the product row was created.';
COMMENT ON COLUMN products.updated_at IS
    'Last change of stock or reserved.';

CREATE TABLE reservations (
    id         BIGSERIAL   PRIMARY KEY,
    gid        TEXT        NOT NULL,
    branch_id  TEXT        NOT NULL,
    product_id BIGINT      NOT NULL REFERENCES products (id),
    quantity   BIGINT      NOT NULL,
    state      TEXT        NOT NULL DEFAULT 'tentative',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT reservations_quantity_positive CHECK (quantity > 0),
    CONSTRAINT reservations_state_known CHECK (state IN ('tentative', 'confirmed', 'cancelled')),
    -- The branch query's limits (tcc::protocol::MAX_GID_LEN, MAX_BRANCH_ID_LEN).
    CONSTRAINT reservations_branch_named CHECK (char_length(gid) BETWEEN 1 AND 128 AND char_length(branch_id) BETWEEN 1 AND 64),
    CONSTRAINT reservations_branch_uniq UNIQUE (gid, branch_id)
);

-- The "nothing stays tentative" checks read only tentative reservations.
CREATE INDEX reservations_tentative_idx ON reservations (product_id) WHERE state = 'tentative';

COMMENT ON TABLE reservations IS
    'What each StockTry reserved, one row per (gid, branch_id). Confirm and Cancel act on the reservation, never on the quantity in their request.';
COMMENT ON COLUMN reservations.id IS
    'Surrogate key.';
COMMENT ON COLUMN reservations.gid IS
    'The global transaction id of the branch whose Try made the reservation.';
COMMENT ON COLUMN reservations.branch_id IS
    'The branch id within the global transaction: 01, 02, ... (0201 when nested).';
COMMENT ON COLUMN reservations.product_id IS
    'The product reserved.';
COMMENT ON COLUMN reservations.quantity IS
    'Units, > 0: what Try reserved; Confirm and Cancel use exactly this.';
COMMENT ON COLUMN reservations.state IS
    'tentative after Try; confirmed or cancelled once the global transaction settled it (both final).';
COMMENT ON COLUMN reservations.created_at IS
    'When Try reserved: the age of a tentative reservation is how long its units have been held.';
COMMENT ON COLUMN reservations.updated_at IS
    'When Confirm or Cancel settled the reservation (its creation until then).';
