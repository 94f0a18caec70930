-- The last outbox `seq` (one row, id 1), taken in the transaction that enqueues.
CREATE TABLE IF NOT EXISTS webhook_outbox_seq (
    id INT8 PRIMARY KEY,
    value INT8 NOT NULL
);
