DROP TABLE IF EXISTS dtm_barrier.barrier;
DROP SCHEMA IF EXISTS dtm_barrier;
