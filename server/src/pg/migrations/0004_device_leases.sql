-- One row per device ever served: the newest claim's fencing token (it only grows), who holds it
-- (a node and connection, for operators) and when it was claimed. A claim updates the row; a
-- group that writes the device's state first reads it FOR SHARE, so a claim by another node
-- waits for that group to commit, and the group's writes all happen under a valid lease.
CREATE TABLE device_leases (
    device_id  text COLLATE "C" PRIMARY KEY,
    token      bigint NOT NULL CHECK (token > 0),
    holder     text NOT NULL,
    claimed_ms bigint NOT NULL
);
