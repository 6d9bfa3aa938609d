// @generated automatically by Diesel CLI.

diesel::table! {
    /// The Confirm and Cancel of each registered branch (DTM: trans_branch_op); id order is registration order, and the second phase calls them in the reverse order. Deleted with their transaction.
    trans_branch_op (id) {
        /// Surrogate key; ascending is registration order.
        id -> Int8,
        /// The global transaction.
        gid -> Text,
        /// The branch id the AP chose.
        branch_id -> Text,
        /// confirm or cancel.
        op -> Text,
        /// The URL the TM calls.
        url -> Text,
        /// The branch data registered by the AP, sent raw as the body of the call.
        data -> Text,
        /// prepared until a call succeeded, then succeed.
        status -> Text,
        /// Calls made so far; an alert is raised past the configured count.
        attempts -> Int4,
        /// Outcome of the last call (success, ongoing, failure: ..., error: ...).
        last_result -> Nullable<Text>,
        /// The branch's service name (TransOutConfirm -> TransOut), computed once at registration; the events of its calls copy it.
        target -> Text,
        /// When it was registered.
        create_time -> Timestamptz,
        /// Its last change.
        update_time -> Timestamptz,
        /// When a call of it succeeded; NULL while prepared.
        finish_time -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// Event log of each global transaction: state changes, branch calls by the TM, Try calls reported by the AP (docs/ARCHITECTURE.md#seeing-what-happened). id order is the order they were recorded in; deleted with the transaction.
    trans_event (gid, id) {
        /// Position in the log: ascending is the order the events were recorded in.
        id -> Int8,
        /// The global transaction. No foreign key: its check costs about 12 us per inserted row (measured: 20,000 inserts, 38 us with it, 26 us without), and eleven events are written per two-branch transaction, some 3% of the CPU a transaction costs. Every writer of an event instead holds a lock on the transaction's row (an UPDATE, FOR SHARE or FOR KEY SHARE) or writes for an unfinished transaction holding its lease, and retention, which deletes only finished transactions, deletes their events in the same database transaction.
        gid -> Text,
        /// prepared, branch_registered, try_reported, submitted, aborting, branch_calling (a Confirm/Cancel call is being sent), branch_called (its answer), retry_scheduled, succeed, failed, force_stopped and retry_requested (operator actions).
        kind -> Text,
        /// Who caused it: ap (the AP: prepare, registerBranch, submit, abort, Try reports), tm (the coordinator's second phase), timeout (timeout_to_fail passed), admin (an operator action).
        actor -> Text,
        /// Global status after a state change; NULL for calls and reports.
        status -> Nullable<Text>,
        /// The branch a registration, call, report or retry is about.
        branch_id -> Nullable<Text>,
        /// try (reported by the AP), confirm or cancel (called by the TM).
        op -> Nullable<Text>,
        /// The branch's service, named from its URL's last path segment without the Try/Confirm/Cancel suffix (TransOutConfirm -> TransOut), else host:port.
        target -> Nullable<Text>,
        /// The URL called (Try, Confirm or Cancel).
        url -> Nullable<Text>,
        /// How the branch answered, read as DTM reads it: success, failure (409/FAILURE), ongoing (425/ONGOING), error (anything else, no answer included).
        outcome -> Nullable<Text>,
        /// HTTP status of the answer; NULL when none was read (timeout, refused connection).
        http_status -> Nullable<Int4>,
        /// Milliseconds from sending the call to reading the whole answer (or giving up).
        latency_ms -> Nullable<Int4>,
        /// branch_called: the how-manyth call of this branch op (1 = first).
        attempt -> Nullable<Int4>,
        /// retry_scheduled: milliseconds until the next attempt (backoff step plus jitter, or the fixed ONGOING poll).
        retry_in_ms -> Nullable<Int4>,
        /// Free text: the rollback reason of aborting, the options of prepared, the Confirm/Cancel URLs of branch_registered, the message or error of a call, the alert of a retry.
        detail -> Nullable<Text>,
        /// When it happened: when the event was recorded (clock_timestamp(): distinct within one database transaction), except for the calls a pass records when it ends, dated when the call was sent (branch_calling) or answered (branch_called). A Try report carried by a later call is recorded when that call arrives; its latency_ms is the Try's own.
        create_time -> Timestamptz,
    }
}

diesel::table! {
    /// The gid of each transaction retention deleted, so that prepare refuses it again (a gid is used once).
    trans_gid_tombstone (gid) {
        /// The deleted transaction's gid.
        gid -> Text,
        /// When the deleted transaction finished; the tombstone is kept GID_TOMBSTONE_SECONDS after it.
        finish_time -> Timestamptz,
    }
}

diesel::table! {
    /// One row per global transaction (DTM: trans_global). fillfactor 70 leaves room in each page for the new version of a row, so that the updates of the second phase that touch no indexed column (a lease renewed) stay heap-only.
    trans_global (id) {
        /// Surrogate key, in creation order; the keyset position of the list of transactions.
        id -> Int8,
        /// The global transaction id chosen by the AP; used once, even after retention (trans_gid_tombstone).
        gid -> Text,
        /// Always tcc.
        trans_type -> Text,
        /// prepared, submitted, succeed, aborting or failed; every change is a compare-and-set on the old value.
        status -> Text,
        /// Seconds after creation at which a transaction still prepared is aborted (its AP crashed or hung).
        timeout_to_fail -> Int4,
        /// Seconds: base of the exponential backoff between second-phase attempts, and the poll interval after an ONGOING answer.
        retry_interval -> Int4,
        /// Seconds: timeout of each branch call.
        request_timeout -> Int4,
        /// JSON object of extra headers sent with every branch call.
        branch_headers -> Text,
        /// Why it rolled back: the AP's reason, Timeout after N seconds, or an operator's force stop.
        rollback_reason -> Nullable<Text>,
        /// Seconds: the backoff step the next failed attempt waits; doubles up to the configured cap.
        next_cron_interval -> Int4,
        /// When a worker should next look at this transaction: the timeout of a prepared one, the next retry of a submitted or aborting one.
        next_cron_time -> Timestamptz,
        /// Lease token of the second-phase pass running it now (`<coordinator id>:<32 hex digits>`), or NULL.
        owner -> Nullable<Text>,
        /// Until when the owner may run it; after that any replica may claim it (the owner died).
        lease_expire -> Nullable<Timestamptz>,
        /// When prepare created it.
        create_time -> Timestamptz,
        /// Its last change.
        update_time -> Timestamptz,
        /// When the transaction reached succeed or failed; NULL while unfinished. Finished rows are deleted RETENTION_SECONDS after it.
        finish_time -> Nullable<Timestamptz>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    trans_branch_op,
    trans_event,
    trans_gid_tombstone,
    trans_global,
);
