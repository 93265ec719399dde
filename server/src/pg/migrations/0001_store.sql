-- The document store on PostgreSQL: the same contract as sync-core's SQLite store
-- (sync_core::store::Store), for several server nodes on one database.
-- Document ids sort bytewise (COLLATE "C"), as in SQLite, whatever the cluster's locale.

-- Documents: an optional compacted snapshot, plus the changes appended since.
CREATE TABLE documents (
    doc_id   text COLLATE "C" PRIMARY KEY,
    snapshot bytea
);

-- Changes not yet folded into a snapshot. Deleted by compaction in the same transaction that
-- writes the snapshot containing them.
CREATE TABLE changes (
    doc_id text COLLATE "C" NOT NULL REFERENCES documents (doc_id),
    hash   bytea NOT NULL,
    bytes  bytea NOT NULL,
    PRIMARY KEY (doc_id, hash)
);

-- The change feed: every change ever stored, with its position and the feed's running hash
-- there. A row is inserted without a position and numbered, before its transaction commits,
-- from the one counter row below; no transaction ever sees a row without one but its own.
CREATE TABLE feed (
    doc_id text COLLATE "C" NOT NULL,
    hash   bytea NOT NULL,
    seq    bigint UNIQUE CHECK (seq > 0),
    proof  bytea CHECK (octet_length(proof) = 32),
    PRIMARY KEY (doc_id, hash)
);

-- The feed's one counter: the newest position and the running hash there. A writing
-- transaction locks it (SELECT .. FOR UPDATE) to number its rows and updates it as its last
-- statement; the lock is held to commit, so transactions commit in position order.
CREATE TABLE feed_head (
    id    boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq   bigint NOT NULL CHECK (seq >= 0),
    proof bytea NOT NULL CHECK (octet_length(proof) = 32)
);
INSERT INTO feed_head (seq, proof) VALUES (0, decode(repeat('00', 32), 'hex'));

-- Local changes not yet acknowledged (a device's; kept for the contract's sake).
CREATE TABLE pending (
    id     bigint GENERATED ALWAYS AS IDENTITY,
    doc_id text COLLATE "C" NOT NULL REFERENCES documents (doc_id),
    hash   bytea NOT NULL,
    PRIMARY KEY (doc_id, hash)
);
CREATE INDEX pending_order ON pending (id);

-- Small durable values: cursors, disclosure sets, the store's epoch.
CREATE TABLE meta (
    key   text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);

-- The epoch names this store's feed: 16 random bytes.
INSERT INTO meta (key, value)
VALUES ('epoch', decode(replace(gen_random_uuid()::text, '-', ''), 'hex'));
