-- The coordinator's (TM's) durable state: global transactions, the Confirm and Cancel of each of
-- their branches, the event log of each transaction, and the gids retention deleted. The second
-- phase runs from these tables alone, so a restarted or replacement coordinator resumes it. Every
-- transition of these rows is Rust code in coordinator/src/store/ (no stored functions); the
-- rules below are what every row admits whoever writes it (docs/ARCHITECTURE.md#data-model-and-invariants).

-- Single-column rules are domains, not table CHECK constraints: Postgres prepares a table's CHECK
-- expressions again for every INSERT and UPDATE statement, while a domain's constraints are
-- prepared once per connection (the type cache). On the coordinator's hot path (eleven events and
-- four branch ops written per two-branch transaction) table constraints were a large share of
-- Postgres' CPU (docs/BENCHMARKS.md); the domains cost almost nothing, and diesel print-schema
-- reads each column as its base type. Rules that compare two columns stay table CHECKs.
CREATE DOMAIN tcc_global_status AS TEXT
    CHECK (VALUE IN ('prepared', 'submitted', 'succeed', 'aborting', 'failed'));
CREATE DOMAIN tcc_trans_type AS TEXT CHECK (VALUE = 'tcc');
CREATE DOMAIN tcc_seconds AS INTEGER CHECK (VALUE > 0);
CREATE DOMAIN tcc_count AS INTEGER CHECK (VALUE >= 0);
CREATE DOMAIN tcc_attempt AS INTEGER CHECK (VALUE >= 1);
CREATE DOMAIN tcc_http_status AS INTEGER CHECK (VALUE BETWEEN 100 AND 599);
CREATE DOMAIN tcc_branch_op AS TEXT CHECK (VALUE IN ('confirm', 'cancel'));
CREATE DOMAIN tcc_op_status AS TEXT CHECK (VALUE IN ('prepared', 'succeed'));
CREATE DOMAIN tcc_event_kind AS TEXT CHECK (VALUE IN (
    'prepared', 'branch_registered', 'try_reported', 'submitted', 'aborting', 'branch_calling',
    'branch_called', 'retry_scheduled', 'succeed', 'failed', 'force_stopped', 'retry_requested'));
CREATE DOMAIN tcc_actor AS TEXT CHECK (VALUE IN ('ap', 'tm', 'timeout', 'admin'));
CREATE DOMAIN tcc_event_op AS TEXT CHECK (VALUE IN ('try', 'confirm', 'cancel'));
CREATE DOMAIN tcc_outcome AS TEXT CHECK (VALUE IN ('success', 'failure', 'ongoing', 'error'));

COMMENT ON DOMAIN tcc_global_status IS
    'A global transaction''s status: prepared -> submitted -> succeed, or prepared -> aborting -> failed (docs/ARCHITECTURE.md#state-machine).';
COMMENT ON DOMAIN tcc_trans_type IS 'The transaction type; this coordinator runs TCC only.';
COMMENT ON DOMAIN tcc_seconds IS 'A positive number of seconds (timeouts, intervals).';
COMMENT ON DOMAIN tcc_count IS 'A count or a duration in milliseconds: zero or more.';
COMMENT ON DOMAIN tcc_attempt IS 'The how-manyth call of a branch op, from 1.';
COMMENT ON DOMAIN tcc_http_status IS 'An HTTP status code.';
COMMENT ON DOMAIN tcc_branch_op IS 'The second-phase op of a branch the TM calls.';
COMMENT ON DOMAIN tcc_op_status IS 'A branch op''s status: prepared until a call succeeded.';
COMMENT ON DOMAIN tcc_event_kind IS 'What a trans_event row records (coordinator/src/events.rs, EventKind).';
COMMENT ON DOMAIN tcc_actor IS 'Who caused an event.';
COMMENT ON DOMAIN tcc_event_op IS 'The op of a branch call: try (made by the AP), confirm or cancel (made by the TM).';
COMMENT ON DOMAIN tcc_outcome IS 'How a branch answered, read as DTM reads it.';

CREATE TABLE trans_global (
    id                 BIGSERIAL         PRIMARY KEY,
    gid                TEXT              NOT NULL UNIQUE,
    trans_type         tcc_trans_type    NOT NULL DEFAULT 'tcc',
    status             tcc_global_status NOT NULL,
    timeout_to_fail    tcc_seconds       NOT NULL,
    retry_interval     tcc_seconds       NOT NULL,
    request_timeout    tcc_seconds       NOT NULL,
    branch_headers     TEXT              NOT NULL DEFAULT '{}',
    rollback_reason    TEXT,
    next_cron_interval tcc_seconds       NOT NULL,
    next_cron_time     TIMESTAMPTZ       NOT NULL,
    owner              TEXT,
    lease_expire       TIMESTAMPTZ,
    create_time        TIMESTAMPTZ       NOT NULL DEFAULT now(),
    update_time        TIMESTAMPTZ       NOT NULL DEFAULT now(),
    finish_time        TIMESTAMPTZ,
    CONSTRAINT trans_global_finished_check
        CHECK ((status IN ('succeed', 'failed')) = (finish_time IS NOT NULL)),
    CONSTRAINT trans_global_lease_check CHECK ((owner IS NULL) = (lease_expire IS NULL))
) WITH (fillfactor = 70);

-- The worker's queue: unfinished transactions by due time. Finished ones never match.
CREATE INDEX trans_global_due_idx ON trans_global (next_cron_time)
    WHERE status IN ('prepared', 'submitted', 'aborting');
-- The admin list and `all` filtered by status, newest first.
CREATE INDEX trans_global_status_id_idx ON trans_global (status, id);
-- Retention: finished transactions by finish time, oldest first. Unfinished ones have no
-- finish_time and are never deleted, so they do not weigh on it.
CREATE INDEX trans_global_finished_idx ON trans_global (finish_time)
    WHERE status IN ('succeed', 'failed');

COMMENT ON TABLE trans_global IS
    'One row per global transaction (DTM: trans_global). fillfactor 70 leaves room in each page for the new version of a row, so that the updates of the second phase that touch no indexed column (a lease renewed) stay heap-only.';
COMMENT ON COLUMN trans_global.id IS 'Surrogate key, in creation order; the keyset position of the list of transactions.';
COMMENT ON COLUMN trans_global.gid IS 'The global transaction id chosen by the AP; used once, even after retention (trans_gid_tombstone).';
COMMENT ON COLUMN trans_global.trans_type IS 'Always tcc.';
COMMENT ON COLUMN trans_global.status IS 'prepared, submitted, succeed, aborting or failed; every change is a compare-and-set on the old value.';
COMMENT ON COLUMN trans_global.timeout_to_fail IS
    'Seconds after creation at which a transaction still prepared is aborted (its AP crashed or hung).';
COMMENT ON COLUMN trans_global.retry_interval IS
    'Seconds: base of the exponential backoff between second-phase attempts, and the poll interval after an ONGOING answer.';
COMMENT ON COLUMN trans_global.request_timeout IS 'Seconds: timeout of each branch call.';
COMMENT ON COLUMN trans_global.branch_headers IS 'JSON object of extra headers sent with every branch call.';
COMMENT ON COLUMN trans_global.rollback_reason IS 'Why it rolled back: the AP''s reason, Timeout after N seconds, or an operator''s force stop.';
COMMENT ON COLUMN trans_global.next_cron_interval IS
    'Seconds: the backoff step the next failed attempt waits; doubles up to the configured cap.';
COMMENT ON COLUMN trans_global.next_cron_time IS
    'When a worker should next look at this transaction: the timeout of a prepared one, the next retry of a submitted or aborting one.';
COMMENT ON COLUMN trans_global.owner IS
    'Lease token of the second-phase pass running it now (`<coordinator id>:<32 hex digits>`), or NULL.';
COMMENT ON COLUMN trans_global.lease_expire IS
    'Until when the owner may run it; after that any replica may claim it (the owner died).';
COMMENT ON COLUMN trans_global.create_time IS 'When prepare created it.';
COMMENT ON COLUMN trans_global.update_time IS 'Its last change.';
COMMENT ON COLUMN trans_global.finish_time IS
    'When the transaction reached succeed or failed; NULL while unfinished. Finished rows are deleted RETENTION_SECONDS after it.';

CREATE TABLE trans_branch_op (
    id          BIGSERIAL     PRIMARY KEY,
    gid         TEXT          NOT NULL REFERENCES trans_global (gid) ON DELETE CASCADE,
    branch_id   TEXT          NOT NULL,
    op          tcc_branch_op NOT NULL,
    url         TEXT          NOT NULL,
    data        TEXT          NOT NULL,
    status      tcc_op_status NOT NULL,
    attempts    tcc_count     NOT NULL DEFAULT 0,
    last_result TEXT,
    target      TEXT          NOT NULL,
    create_time TIMESTAMPTZ   NOT NULL DEFAULT now(),
    update_time TIMESTAMPTZ   NOT NULL DEFAULT now(),
    finish_time TIMESTAMPTZ,
    CONSTRAINT trans_branch_op_uniq UNIQUE (gid, branch_id, op),
    CONSTRAINT trans_branch_op_finished_check CHECK ((status = 'succeed') = (finish_time IS NOT NULL))
) WITH (fillfactor = 80);

COMMENT ON TABLE trans_branch_op IS
    'The Confirm and Cancel of each registered branch (DTM: trans_branch_op); id order is registration order, and the second phase calls them in the reverse order. Deleted with their transaction.';
COMMENT ON COLUMN trans_branch_op.id IS 'Surrogate key; ascending is registration order.';
COMMENT ON COLUMN trans_branch_op.gid IS 'The global transaction.';
COMMENT ON COLUMN trans_branch_op.branch_id IS 'The branch id the AP chose.';
COMMENT ON COLUMN trans_branch_op.op IS 'confirm or cancel.';
COMMENT ON COLUMN trans_branch_op.url IS 'The URL the TM calls.';
COMMENT ON COLUMN trans_branch_op.data IS 'The branch data registered by the AP, sent raw as the body of the call.';
COMMENT ON COLUMN trans_branch_op.status IS 'prepared until a call succeeded, then succeed.';
COMMENT ON COLUMN trans_branch_op.attempts IS 'Calls made so far; an alert is raised past the configured count.';
COMMENT ON COLUMN trans_branch_op.last_result IS 'Outcome of the last call (success, ongoing, failure: ..., error: ...).';
COMMENT ON COLUMN trans_branch_op.target IS
    'The branch''s service name (TransOutConfirm -> TransOut), computed once at registration; the events of its calls copy it.';
COMMENT ON COLUMN trans_branch_op.create_time IS 'When it was registered.';
COMMENT ON COLUMN trans_branch_op.update_time IS 'Its last change.';
COMMENT ON COLUMN trans_branch_op.finish_time IS 'When a call of it succeeded; NULL while prepared.';

-- The event log. Rows are written in the database transaction of the change they describe
-- (coordinator/src/store.rs), so the log never claims a change that did not commit.
CREATE TABLE trans_event (
    id          BIGSERIAL         NOT NULL,
    gid         TEXT              NOT NULL,
    kind        tcc_event_kind    NOT NULL,
    actor       tcc_actor         NOT NULL,
    status      tcc_global_status,
    branch_id   TEXT,
    op          tcc_event_op,
    target      TEXT,
    url         TEXT,
    outcome     tcc_outcome,
    http_status tcc_http_status,
    latency_ms  tcc_count,
    attempt     tcc_attempt,
    retry_in_ms tcc_count,
    detail      TEXT,
    create_time TIMESTAMPTZ       NOT NULL DEFAULT clock_timestamp(),
    -- Read by gid in id order only, so (gid, id) is the key: no second index to write per event.
    CONSTRAINT trans_event_pkey PRIMARY KEY (gid, id),
    -- A call or a report is about one branch op; a state change of the global transaction is not.
    CONSTRAINT trans_event_branch_check
        CHECK ((kind IN ('branch_registered', 'try_reported', 'branch_calling', 'branch_called',
                         'retry_scheduled'))
               = (branch_id IS NOT NULL)),
    CONSTRAINT trans_event_outcome_check
        CHECK ((kind IN ('try_reported', 'branch_called')) = (outcome IS NOT NULL))
);

COMMENT ON TABLE trans_event IS
    'Event log of each global transaction: state changes, branch calls by the TM, Try calls reported by the AP (docs/ARCHITECTURE.md#seeing-what-happened). id order is the order they were recorded in; deleted with the transaction.';
COMMENT ON CONSTRAINT trans_event_pkey ON trans_event IS
    'Reading one transaction''s history in order (the diagrams); also serves retention''s delete by gid.';
COMMENT ON COLUMN trans_event.id IS 'Position in the log: ascending is the order the events were recorded in.';
COMMENT ON COLUMN trans_event.gid IS
    'The global transaction. No foreign key: its check costs about 12 us per inserted row (measured: 20,000 inserts, 38 us with it, 26 us without), and eleven events are written per two-branch transaction, some 3% of the CPU a transaction costs. Every writer of an event instead holds a lock on the transaction''s row (an UPDATE, FOR SHARE or FOR KEY SHARE) or writes for an unfinished transaction holding its lease, and retention, which deletes only finished transactions, deletes their events in the same database transaction.';
COMMENT ON COLUMN trans_event.kind IS
    'prepared, branch_registered, try_reported, submitted, aborting, branch_calling (a Confirm/Cancel call is being sent), branch_called (its answer), retry_scheduled, succeed, failed, force_stopped and retry_requested (operator actions).';
COMMENT ON COLUMN trans_event.actor IS
    'Who caused it: ap (the AP: prepare, registerBranch, submit, abort, Try reports), tm (the coordinator''s second phase), timeout (timeout_to_fail passed), admin (an operator action).';
COMMENT ON COLUMN trans_event.status IS 'Global status after a state change; NULL for calls and reports.';
COMMENT ON COLUMN trans_event.branch_id IS 'The branch a registration, call, report or retry is about.';
COMMENT ON COLUMN trans_event.op IS 'try (reported by the AP), confirm or cancel (called by the TM).';
COMMENT ON COLUMN trans_event.target IS
    'The branch''s service, named from its URL''s last path segment without the Try/Confirm/Cancel suffix (TransOutConfirm -> TransOut), else host:port.';
COMMENT ON COLUMN trans_event.url IS 'The URL called (Try, Confirm or Cancel).';
COMMENT ON COLUMN trans_event.outcome IS 'How the branch answered, read as DTM reads it: success, failure (409/FAILURE), ongoing (425/ONGOING), error (anything else, no answer included).';
COMMENT ON COLUMN trans_event.http_status IS 'HTTP status of the answer; NULL when none was read (timeout, refused connection).';
COMMENT ON COLUMN trans_event.latency_ms IS 'Milliseconds from sending the call to reading the whole answer (or giving up).';
COMMENT ON COLUMN trans_event.attempt IS 'branch_called: the how-manyth call of this branch op (1 = first).';
COMMENT ON COLUMN trans_event.retry_in_ms IS 'retry_scheduled: milliseconds until the next attempt (backoff step plus jitter, or the fixed ONGOING poll).';
COMMENT ON COLUMN trans_event.detail IS
    'Free text: the rollback reason of aborting, the options of prepared, the Confirm/Cancel URLs of branch_registered, the message or error of a call, the alert of a retry.';
COMMENT ON COLUMN trans_event.create_time IS
    'When it happened: when the event was recorded (clock_timestamp(): distinct within one database transaction), except for the calls a pass records when it ends, dated when the call was sent (branch_calling) or answered (branch_called). A Try report carried by a later call is recorded when that call arrives; its latency_ms is the Try''s own.';

-- A gid is used once, even after retention deleted its transaction: the RMs keep their
-- sub-transaction barrier rows on a clock of their own (BARRIER_RETENTION_SECONDS), and a new Try
-- and Confirm under a reused gid would be read there as duplicates, a succeed that moved nothing.
-- DTM never deletes a transaction, so it refuses a used gid forever.
CREATE TABLE trans_gid_tombstone (
    gid         TEXT        PRIMARY KEY,
    finish_time TIMESTAMPTZ NOT NULL
);
-- Retention deletes expired tombstones oldest first.
CREATE INDEX trans_gid_tombstone_finish_idx ON trans_gid_tombstone (finish_time);

COMMENT ON TABLE trans_gid_tombstone IS
    'The gid of each transaction retention deleted, so that prepare refuses it again (a gid is used once).';
COMMENT ON COLUMN trans_gid_tombstone.gid IS 'The deleted transaction''s gid.';
COMMENT ON COLUMN trans_gid_tombstone.finish_time IS
    'When the deleted transaction finished; the tombstone is kept GID_TOMBSTONE_SECONDS after it.';
