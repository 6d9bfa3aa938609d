-- Calls seen per (gid, branch_id, op) by the fault injector, so that `error:N` ("fail the first N
-- calls") counts across retries and survives a restart of the RM.
CREATE TABLE IF NOT EXISTS fault_counters (
    gid        TEXT        NOT NULL,
    branch_id  TEXT        NOT NULL,
    op         TEXT        NOT NULL,
    calls      INTEGER     NOT NULL CHECK (calls > 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (gid, branch_id, op)
);
COMMENT ON TABLE fault_counters IS
    'Demo fault injection: how many times each branch op was called, for error:N faults.';
