-- The head of each (hook, client_id) delivery line, found by index: without it the worker's
-- claim ran one scan of the whole outbox per candidate row, so a backlog made every claim
-- slower than the last (issue #19, BENCHMARKS.md).
CREATE INDEX IF NOT EXISTS webhook_outbox_line ON webhook_outbox (hook, client_id, seq);
