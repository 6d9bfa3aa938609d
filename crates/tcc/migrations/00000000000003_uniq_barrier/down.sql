ALTER TABLE dtm_barrier.barrier RENAME CONSTRAINT uniq_barrier TO barrier_uniq;
