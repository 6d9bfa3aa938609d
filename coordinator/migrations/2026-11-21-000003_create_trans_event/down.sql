DROP TABLE trans_event;
