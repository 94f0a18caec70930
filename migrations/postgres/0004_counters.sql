-- Durable counters: initial access token uses, software statement jti replay, policy quotas.
-- The key is BYTEA because it embeds claims of presented JWTs (a jti may hold any character,
-- NUL included, which TEXT cannot store).
CREATE TABLE IF NOT EXISTS counters (
    key BYTEA PRIMARY KEY,
    value INT8 NOT NULL
);
