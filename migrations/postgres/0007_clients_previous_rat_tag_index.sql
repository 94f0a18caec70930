-- The previous token's index: one lookup finds a client by its current or previous token.
CREATE UNIQUE INDEX IF NOT EXISTS clients_previous_rat_tag ON clients (previous_rat_tag);
