-- The key registration access token tags are made with, stored once for every replica.
CREATE TABLE IF NOT EXISTS registrar_keys (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
