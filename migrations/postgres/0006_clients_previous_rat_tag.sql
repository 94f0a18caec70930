-- The registration access token replaced by the last rotation, during its GET-only grace
-- (README "Client lifecycle"); NULL otherwise. It finds its client like the current one.
ALTER TABLE clients ADD COLUMN IF NOT EXISTS previous_rat_tag BYTEA;
