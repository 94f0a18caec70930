-- The audit trail (issue #17): one row per record, `seq` gapless and assigned in the
-- transaction of the change it describes; the record as JSON (what is hashed is derived from
-- it), `time` for retention.
CREATE TABLE IF NOT EXISTS audit_records (
    seq INT8 PRIMARY KEY,
    time INT8 NOT NULL,
    record TEXT NOT NULL
);
