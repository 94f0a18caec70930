-- The registration access token index: a token finds its client, and no two clients share one.
CREATE UNIQUE INDEX IF NOT EXISTS clients_rat_tag ON clients (rat_tag);
