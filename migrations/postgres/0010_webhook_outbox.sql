-- The webhook outbox: one row per delivery, written in the transaction of its change. `seq`
-- orders deliveries (per hook and client); `locked_until` is the claim lease of the replica
-- sending it (seconds since the epoch, database time).
CREATE TABLE IF NOT EXISTS webhook_outbox (
    seq INT8 PRIMARY KEY,
    hook TEXT NOT NULL,
    client_id TEXT NOT NULL,
    dead BOOL NOT NULL,
    locked_until INT8 NOT NULL,
    row TEXT NOT NULL
);
