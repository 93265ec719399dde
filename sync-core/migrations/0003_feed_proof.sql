-- The feed's running hash: proof(p) = SHA-256("nara-feed\0" || proof(p-1) || doc id || hash at p),
-- proof(0) = 32 zero bytes. A device's cursor carries the proof at its position, so a server
-- whose feed differs from the one the device saw (restored, replaced, a promoted replica)
-- notices. Rows written before this column existed are filled in by the store on open.
ALTER TABLE feed ADD COLUMN proof BLOB;
