-- Documents: an optional compacted snapshot, plus the changes appended since.
CREATE TABLE documents (
    doc_id   TEXT PRIMARY KEY,
    snapshot BLOB
) STRICT;

-- Changes appended one transaction at a time. A change stays here until a snapshot that
-- contains it has been written (compaction), in the same transaction that deletes it.
CREATE TABLE changes (
    id     INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id),
    hash   BLOB NOT NULL,
    bytes  BLOB NOT NULL,
    UNIQUE (doc_id, hash)
) STRICT;

-- Local changes not yet acknowledged by the server. Written in the same transaction as the
-- change itself.
CREATE TABLE pending (
    seq    INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id),
    hash   BLOB NOT NULL,
    UNIQUE (doc_id, hash)
) STRICT;
