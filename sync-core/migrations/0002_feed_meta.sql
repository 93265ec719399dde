-- The change feed: every change stored gets the next position. A device keeps a cursor into
-- the server's feed; the server answers "what changed since" from here.
CREATE TABLE feed (
    seq    INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL,
    hash   BLOB NOT NULL
) STRICT;
CREATE UNIQUE INDEX feed_doc_hash ON feed (doc_id, hash);

-- Small durable values: sync cursors, disclosure sets, the store's epoch.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT, WITHOUT ROWID;

-- The epoch names this store's feed. A cursor from another epoch (a store replaced or
-- restored) is not a position in this feed.
INSERT INTO meta (key, value) VALUES ('epoch', randomblob(16));

-- Changes stored before the feed existed get positions in their stored order.
INSERT INTO feed (doc_id, hash) SELECT doc_id, hash FROM changes ORDER BY id;
