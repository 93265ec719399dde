-- A stored change's bytes, keyed by its feed entry (`feed.seq`). The `changes` table repeated
-- the feed's document and hash with a unique index of its own on them: four B-tree inserts for
-- each stored change where two do (session 33: about 4% of the whole team's morning, S8). A
-- document's changes are read through the feed's (doc_id, hash) index, in feed order (the order
-- they were stored in, as `changes.id` was). A row goes when a snapshot covers its change
-- (compaction); the feed entry stays.
CREATE TABLE change_bytes (
    seq   INTEGER PRIMARY KEY,
    bytes BLOB NOT NULL
) STRICT;

INSERT INTO change_bytes (seq, bytes)
    SELECT feed.seq, changes.bytes
    FROM changes JOIN feed ON feed.doc_id = changes.doc_id AND feed.hash = changes.hash;

DROP TABLE changes;
