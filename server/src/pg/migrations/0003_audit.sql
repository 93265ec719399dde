-- The audit log on PostgreSQL: one hash chain for every node on this database (the format and
-- the checks are in server/src/audit.rs and audit/chain.rs, shared with SQLite).
--
-- Forks are impossible. An append locks the one head row (SELECT .. FOR UPDATE), links its
-- records to the head's hash and moves the head as its last statement, in the transaction of
-- what it records; the lock is held to commit, so appends from any node follow one another.
-- Should a writer ever bypass the head, the UNIQUE constraints refuse a second record with the
-- same number or after the same record.

CREATE TABLE audit_log (
    seq      bigint PRIMARY KEY CHECK (seq > 0),
    at_ms    bigint NOT NULL,
    actor    text NOT NULL,
    device   text,
    action   text NOT NULL,
    patient  text COLLATE "C",
    document text,
    detail   text NOT NULL,
    prev     text NOT NULL UNIQUE,
    hash     text NOT NULL
);
CREATE INDEX audit_by_patient ON audit_log (patient, seq) WHERE patient IS NOT NULL;

-- One row: how many records the log holds and the hash of the last one (64 zeros: none yet).
CREATE TABLE audit_head (
    id    boolean PRIMARY KEY DEFAULT true CHECK (id),
    count bigint NOT NULL CHECK (count >= 0),
    hash  text NOT NULL
);
INSERT INTO audit_head (count, hash) VALUES (0, repeat('0', 64));
