DROP TABLE trans_branch_op;
DROP TABLE trans_global;
