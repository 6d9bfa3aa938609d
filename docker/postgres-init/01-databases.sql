-- Run once by the official postgres image on an empty data directory (mounted into
-- /docker-entrypoint-initdb.d by docker-compose.yml): one database per service, each owned
-- by that service alone (docs/ARCHITECTURE.md#roles-and-the-path-of-one-transfer). Keep in
-- sync with scripts/services.txt; the test crates/test-support/tests/compose_file.rs checks it.
CREATE DATABASE coordinator;
CREATE DATABASE trans_out;
CREATE DATABASE trans_in;
CREATE DATABASE stock;
