// @generated in the shape of `diesel print-schema` for the migrations in ../migrations.

diesel::table! {
    trans_branch_op (id) {
        id -> Int8,
        gid -> Text,
        branch_id -> Text,
        op -> Text,
        url -> Text,
        data -> Text,
        status -> Text,
        attempts -> Int4,
        last_result -> Nullable<Text>,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        finish_time -> Nullable<Timestamptz>,
        target -> Nullable<Text>,
    }
}

diesel::table! {
    trans_event (gid, id) {
        id -> Int8,
        gid -> Text,
        kind -> Text,
        actor -> Text,
        status -> Nullable<Text>,
        branch_id -> Nullable<Text>,
        op -> Nullable<Text>,
        target -> Nullable<Text>,
        url -> Nullable<Text>,
        outcome -> Nullable<Text>,
        http_status -> Nullable<Int4>,
        latency_ms -> Nullable<Int4>,
        attempt -> Nullable<Int4>,
        retry_in_ms -> Nullable<Int4>,
        detail -> Nullable<Text>,
        create_time -> Timestamptz,
    }
}

diesel::table! {
    trans_global (id) {
        id -> Int8,
        gid -> Text,
        trans_type -> Text,
        status -> Text,
        timeout_to_fail -> Int4,
        retry_interval -> Int4,
        request_timeout -> Int4,
        branch_headers -> Text,
        rollback_reason -> Nullable<Text>,
        next_cron_interval -> Int4,
        next_cron_time -> Timestamptz,
        owner -> Nullable<Text>,
        lease_expire -> Nullable<Timestamptz>,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        finish_time -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    trans_gid_tombstone (gid) {
        gid -> Text,
        finish_time -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    trans_branch_op,
    trans_event,
    trans_global,
    trans_gid_tombstone,
);
