DROP FUNCTION tcc_record_success, tcc_begin_second_phase, tcc_lease_for_call, tcc_start_pass,
              tcc_report_try, tcc_register_branch, tcc_record_try_reports, tcc_prepare;
ALTER TABLE trans_branch_op DROP COLUMN target;
-- Rows a foreign key would have refused (there should be none), so that the keys can come back.
DELETE FROM trans_branch_op o WHERE NOT EXISTS (SELECT 1 FROM trans_global g WHERE g.gid = o.gid);
DELETE FROM trans_event e WHERE NOT EXISTS (SELECT 1 FROM trans_global g WHERE g.gid = e.gid);
ALTER TABLE trans_branch_op ADD CONSTRAINT trans_branch_op_gid_fkey
    FOREIGN KEY (gid) REFERENCES trans_global (gid) ON DELETE CASCADE;
ALTER TABLE trans_event ADD CONSTRAINT trans_event_gid_fkey
    FOREIGN KEY (gid) REFERENCES trans_global (gid) ON DELETE CASCADE;
