-- One row per device ever served: the newest claim's fencing token (it only grows), who holds it
-- (a node and connection, for operators) and when it was claimed. A connection writes the
-- device's state only in a group that first checked its token is still the newest.
CREATE TABLE device_leases (
    device_id  TEXT PRIMARY KEY,
    token      INTEGER NOT NULL CHECK (token > 0),
    holder     TEXT NOT NULL,
    claimed_ms INTEGER NOT NULL
) WITHOUT ROWID;
