-- A bank's accounts and the holds its TCC branches place on them (see
-- docs/ARCHITECTURE.md#data-model-and-invariants). Both banks run this same schema, each in its
-- own database (trans_out, trans_in). Amounts are integer minor units.
CREATE TABLE accounts (
    id              BIGINT      PRIMARY KEY,
    balance         BIGINT      NOT NULL,
    trading_balance BIGINT      NOT NULL DEFAULT 0,
    locked          BOOLEAN     NOT NULL DEFAULT false,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT accounts_id_positive CHECK (id > 0),
    CONSTRAINT accounts_balance_not_negative CHECK (balance >= 0),
    CONSTRAINT accounts_frozen_within_balance CHECK (0 <= trading_balance AND trading_balance <= balance)
);

COMMENT ON TABLE accounts IS
    'Bank accounts. Spendable money is balance - trading_balance; incoming credits stay in holds until Confirm.';
COMMENT ON COLUMN accounts.id IS
    'The account number, > 0.';
COMMENT ON COLUMN accounts.balance IS
    'Money on the account, in minor units, including the frozen part (trading_balance).';
COMMENT ON COLUMN accounts.trading_balance IS
    'Frozen funds: the sum of outgoing transfers in flight (TransOut Try done, Confirm/Cancel not yet). Spendable = balance - trading_balance.';
COMMENT ON COLUMN accounts.locked IS
    'A locked account refuses new Trys (409 FAILURE); Confirm and Cancel of holds already placed still run.';
COMMENT ON COLUMN accounts.created_at IS
    'When the account row was created.';
COMMENT ON COLUMN accounts.updated_at IS
    'Last change of the balances or the lock.';

CREATE TABLE holds (
    id         BIGSERIAL   PRIMARY KEY,
    gid        TEXT        NOT NULL,
    branch_id  TEXT        NOT NULL,
    account_id BIGINT      NOT NULL REFERENCES accounts (id),
    amount     BIGINT      NOT NULL,
    direction  TEXT        NOT NULL,
    state      TEXT        NOT NULL DEFAULT 'tentative',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT holds_amount_positive CHECK (amount > 0),
    CONSTRAINT holds_direction_known CHECK (direction IN ('out', 'in')),
    CONSTRAINT holds_state_known CHECK (state IN ('tentative', 'confirmed', 'cancelled')),
    -- The branch query's limits (tcc::protocol::MAX_GID_LEN, MAX_BRANCH_ID_LEN).
    CONSTRAINT holds_branch_named CHECK (char_length(gid) BETWEEN 1 AND 128 AND char_length(branch_id) BETWEEN 1 AND 64),
    CONSTRAINT holds_branch_uniq UNIQUE (gid, branch_id)
);

-- Pending credits of an account (GET /api/accounts/{id}, the TransIn overflow check) and the
-- "nothing stays tentative" checks read only tentative holds.
CREATE INDEX holds_tentative_idx ON holds (account_id, direction) WHERE state = 'tentative';

COMMENT ON TABLE holds IS
    'What each Try reserved, one row per (gid, branch_id). Confirm and Cancel act on the hold, never on the amount in their request.';
COMMENT ON COLUMN holds.id IS
    'Surrogate key.';
COMMENT ON COLUMN holds.gid IS
    'The global transaction id of the branch whose Try placed the hold.';
COMMENT ON COLUMN holds.branch_id IS
    'The branch id within the global transaction: 01, 02, ... (0201 when nested).';
COMMENT ON COLUMN holds.account_id IS
    'The account the hold is on.';
COMMENT ON COLUMN holds.amount IS
    'Minor units, > 0: what Try froze (out) or promised (in); Confirm and Cancel use exactly this.';
COMMENT ON COLUMN holds.direction IS
    'out: TransOut froze amount in accounts.trading_balance; in: TransIn promised a credit of amount, added to balance on Confirm.';
COMMENT ON COLUMN holds.state IS
    'tentative after Try; confirmed or cancelled once the global transaction settled it (both final).';
COMMENT ON COLUMN holds.created_at IS
    'When Try placed the hold: the age of a tentative hold is how long its funds have been frozen.';
COMMENT ON COLUMN holds.updated_at IS
    'When Confirm or Cancel settled the hold (its creation until then).';
