-- The stock service's products and the reservations its TCC branches place on them (design §7).
-- Quantities are whole units, prices integer minor units.
CREATE TABLE products (
    id         BIGINT      PRIMARY KEY,
    name       TEXT        NOT NULL,
    price      BIGINT      NOT NULL,
    stock      BIGINT      NOT NULL,
    reserved   BIGINT      NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT products_price_not_negative CHECK (price >= 0),
    CONSTRAINT products_stock_not_negative CHECK (stock >= 0),
    CONSTRAINT products_reserved_within_stock CHECK (0 <= reserved AND reserved <= stock)
);

COMMENT ON TABLE products IS
    'Products and their inventory. Available to new Trys = stock - reserved; the CHECKs make overselling impossible.';
COMMENT ON COLUMN products.price IS
    'Unit price in minor units.';
COMMENT ON COLUMN products.stock IS
    'Units in the warehouse, reserved ones included; Confirm deducts from it.';
COMMENT ON COLUMN products.reserved IS
    'Units held by Trys whose global transaction is not settled yet (StockTry done, Confirm/Cancel not yet).';

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
    CONSTRAINT reservations_branch_uniq UNIQUE (gid, branch_id)
);

-- The "nothing stays tentative" checks read only tentative reservations.
CREATE INDEX reservations_tentative_idx ON reservations (product_id) WHERE state = 'tentative';

COMMENT ON TABLE reservations IS
    'What each StockTry reserved, one row per (gid, branch_id). Confirm and Cancel act on the reservation, never on the quantity in their request.';
COMMENT ON COLUMN reservations.state IS
    'tentative after Try; confirmed or cancelled once the global transaction settled it (both final).';
