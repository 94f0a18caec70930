-- The chain head: one row (id 1), locked and rewritten by every transaction that appends to the
-- trail, so that replicas append to one chain in commit order.
CREATE TABLE IF NOT EXISTS audit_head (
    id INT8 PRIMARY KEY,
    seq INT8 NOT NULL,
    hash TEXT NOT NULL
);
