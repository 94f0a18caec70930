-- Versions applied by `registrar migrate`. Created with IF NOT EXISTS (as every step) so a
-- migration interrupted between its statement and its bookkeeping row can run again.
CREATE TABLE IF NOT EXISTS registrar_schema_migrations (
    version INT8 PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at INT8 NOT NULL
);
