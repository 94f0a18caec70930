-- One row per client: the record as one JSON document (fields later versions add need no
-- migration) plus only the columns that are indexed or compared. `revision` is the
-- compare-and-swap version; `rat_tag` the HMAC tag of the current registration access token
-- (NULL when revoked). Times are seconds since the epoch.
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    revision INT8 NOT NULL,
    rat_tag BYTEA NULL,
    record TEXT NOT NULL,
    created_at INT8 NOT NULL,
    updated_at INT8 NOT NULL
);
