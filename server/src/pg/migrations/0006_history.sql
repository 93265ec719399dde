-- Which history of the database the feed's epoch belongs to (issue 12, failover): the
-- cluster's system identifier, its timeline and the database's OID, as the nodes last found
-- them. A node that finds others (a standby promoted: a new timeline; a restore from a base
-- backup with recovery: a new timeline; a pg_dump restored into another cluster: another system
-- identifier; into another database of this cluster: another OID) moves the feed to a new
-- epoch and records the new identity, under this row's lock, once (`pg/history.rs`). NULL
-- until the first node records it: a fresh database (or one migrated from an older build)
-- starts with its own epoch.
CREATE TABLE feed_history (
    id                boolean PRIMARY KEY DEFAULT true CHECK (id),
    system_identifier bigint,
    timeline          bigint,
    database_oid      bigint
);
INSERT INTO feed_history DEFAULT VALUES;
