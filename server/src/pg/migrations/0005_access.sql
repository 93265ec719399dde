-- Access state (issue 12), shared by every node: when an assignment ended and the feed's head
-- then (the write grace of sync_core::protocol::policy), and what each device was told of a
-- withdrawal (told on a live connection; connections it was sent on before).
CREATE TABLE ended_assignments (
    user_id    text COLLATE "C" NOT NULL,
    patient_id text COLLATE "C" NOT NULL,
    ended_ms   bigint NOT NULL,
    feed_head  bigint NOT NULL CHECK (feed_head >= 0),
    PRIMARY KEY (user_id, patient_id)
);
CREATE TABLE withdrawals (
    user_id    text COLLATE "C" NOT NULL,
    device_id  text COLLATE "C" NOT NULL,
    patient_id text COLLATE "C" NOT NULL,
    told       boolean NOT NULL DEFAULT false,
    sent       bigint NOT NULL DEFAULT 0 CHECK (sent >= 0),
    PRIMARY KEY (user_id, device_id, patient_id)
);
