-- The running SHA state of an upload at its acknowledged size, so any node can continue it
-- without re-reading the stored bytes (which object stores cannot return before completion).
ALTER TABLE uploads ADD COLUMN hash_state TEXT;
