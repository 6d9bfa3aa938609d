DROP TABLE trans_gid_tombstone;
DROP TABLE trans_event;
DROP TABLE trans_branch_op;
DROP TABLE trans_global;
DROP DOMAIN tcc_global_status, tcc_trans_type, tcc_seconds, tcc_count, tcc_attempt,
    tcc_http_status, tcc_branch_op, tcc_op_status, tcc_event_kind, tcc_actor, tcc_event_op,
    tcc_outcome;
