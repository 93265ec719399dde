-- The directory on PostgreSQL: the same rows as the SQLite directory (server.db,
-- directory/schema.rs), for several server nodes on one database. The rules are the
-- directory service's (directory/service.rs); these tables hold rows. Ids sort bytewise
-- (COLLATE "C"), as in SQLite, whatever the cluster's locale.

CREATE TABLE orgs (
    id   text COLLATE "C" PRIMARY KEY,
    name text NOT NULL
);

CREATE TABLE users (
    id   text COLLATE "C" PRIMARY KEY,
    name text NOT NULL,
    role text NOT NULL CHECK (role IN ('carer', 'nurse', 'admin')),
    org  text COLLATE "C" NOT NULL REFERENCES orgs (id)
);

CREATE TABLE patients (
    id   text COLLATE "C" PRIMARY KEY,
    name text NOT NULL
);

-- The care relationship: a user may read and write the patients assigned to them.
CREATE TABLE assignments (
    user_id    text COLLATE "C" NOT NULL REFERENCES users (id),
    patient_id text COLLATE "C" NOT NULL REFERENCES patients (id),
    PRIMARY KEY (user_id, patient_id)
);

-- One-time enrollment codes, stored only as SHA-256 hashes.
CREATE TABLE enrollment_codes (
    code_hash  bytea PRIMARY KEY CHECK (octet_length(code_hash) = 32),
    user_id    text COLLATE "C" NOT NULL REFERENCES users (id),
    created_ms bigint NOT NULL,
    expires_ms bigint NOT NULL,
    used_ms    bigint,
    device_id  text COLLATE "C"
);
CREATE INDEX enrollment_codes_open ON enrollment_codes (created_ms) WHERE used_ms IS NULL;

-- Enrolled devices (and members of staff's web devices); the secret is stored only as a
-- SHA-256 hash. signing_key NULL: an unsigned legacy device. copies: the pairs of store
-- incarnations seen in use together ("0-1,0-2"), copy_detected_ms when first found. waiting,
-- waiting_ms: what the device last reported it had waiting for upload, and when.
CREATE TABLE devices (
    id               text COLLATE "C" PRIMARY KEY,
    user_id          text COLLATE "C" NOT NULL REFERENCES users (id),
    secret_hash      bytea NOT NULL,
    created_ms       bigint NOT NULL,
    last_seen_ms     bigint,
    cursor           bigint,
    revoked          boolean NOT NULL DEFAULT false,
    signing_key      bytea CHECK (signing_key IS NULL OR octet_length(signing_key) = 32),
    copy_detected_ms bigint,
    copies           text NOT NULL DEFAULT '',
    waiting          bigint CHECK (waiting IS NULL OR waiting >= 0),
    waiting_ms       bigint
);
CREATE INDEX devices_by_user ON devices (user_id);

-- A person's recorded consent that a relative may read their record: given and withdrawn by
-- the person themselves; a withdrawn consent stays as history.
CREATE TABLE relative_consents (
    patient_id   text COLLATE "C" NOT NULL REFERENCES patients (id),
    relative     text COLLATE "C" NOT NULL,
    granted_ms   bigint NOT NULL,
    withdrawn_ms bigint
);
CREATE UNIQUE INDEX relative_consents_live
    ON relative_consents (patient_id, relative) WHERE withdrawn_ms IS NULL;

-- A member of staff's web device (`web-<user>`): a row in `devices` with a credential nobody
-- holds, and here the seed of its Ed25519 signing key.
CREATE TABLE web_devices (
    device_id  text COLLATE "C" PRIMARY KEY REFERENCES devices (id),
    seed       bytea NOT NULL CHECK (octet_length(seed) = 32),
    created_ms bigint NOT NULL
);

-- A person's web device (`web-<patient>`): not a row in `devices`, whose rows belong to staff;
-- its registered public key and its seed. One per person; an id is never in both tables.
CREATE TABLE person_web_devices (
    device_id   text COLLATE "C" PRIMARY KEY,
    patient_id  text COLLATE "C" NOT NULL UNIQUE REFERENCES patients (id),
    signing_key bytea NOT NULL CHECK (octet_length(signing_key) = 32),
    seed        bytea NOT NULL CHECK (octet_length(seed) = 32),
    created_ms  bigint NOT NULL
);

-- Bumped by every change, in the change's transaction; polled by every node.
CREATE TABLE directory_generation (
    id    boolean PRIMARY KEY DEFAULT true CHECK (id),
    value bigint NOT NULL
);
INSERT INTO directory_generation (value) VALUES (0);
