DROP TABLE IF EXISTS fault_counters;
