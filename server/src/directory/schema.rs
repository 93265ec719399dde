//! The directory's schema, as migrations applied in order (`PRAGMA user_version` counts
//! them); each is only ever added to, never changed.

pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE orgs (
    id   TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE users (
    id   TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('carer', 'nurse', 'admin')),
    org  TEXT NOT NULL REFERENCES orgs (id)
) WITHOUT ROWID;

CREATE TABLE patients (
    id   TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL
) WITHOUT ROWID;

-- The care relationship: a user may read and write the patients assigned to them.
CREATE TABLE assignments (
    user_id    TEXT NOT NULL REFERENCES users (id),
    patient_id TEXT NOT NULL REFERENCES patients (id),
    PRIMARY KEY (user_id, patient_id)
) WITHOUT ROWID;

-- One-time enrollment codes, stored only as SHA-256 hashes.
CREATE TABLE enrollment_codes (
    code_hash  BLOB PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id),
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms    INTEGER,
    device_id  TEXT
) WITHOUT ROWID;

-- Enrolled devices; the secret is stored only as a SHA-256 hash.
CREATE TABLE devices (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id),
    secret_hash  BLOB NOT NULL,
    created_ms   INTEGER NOT NULL,
    last_seen_ms INTEGER,
    cursor       INTEGER,
    revoked      INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
) WITHOUT ROWID;
CREATE INDEX devices_by_user ON devices (user_id);

-- Bumped by every change, in the change's transaction; polled by the running server.
CREATE TABLE generation (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO generation (id, value) VALUES (1, 0);
"#,
    r#"
-- Signed changes: each device's Ed25519 public key (32 bytes), registered at enrollment or,
-- for a device enrolled before, on its first connection after. NULL: an unsigned legacy device.
ALTER TABLE devices ADD COLUMN signing_key BLOB CHECK (signing_key IS NULL OR length(signing_key) = 32);
"#,
    r#"
-- Two installations found using one device credential (a store copied to another phone): when
-- first found, and the pairs of store incarnations seen in use together ("0-1,0-2"). Left for
-- an administrator to settle (revoke the device, enroll the other phone again).
ALTER TABLE devices ADD COLUMN copy_detected_ms INTEGER;
ALTER TABLE devices ADD COLUMN copies TEXT NOT NULL DEFAULT '';
"#,
    r#"
-- A person's recorded consent that a relative may read their record in the web views (issue
-- 15): given and withdrawn by the person themselves; a withdrawn consent stays as history.
CREATE TABLE relative_consents (
    patient_id   TEXT NOT NULL REFERENCES patients (id),
    relative     TEXT NOT NULL,
    granted_ms   INTEGER NOT NULL,
    withdrawn_ms INTEGER
);
CREATE UNIQUE INDEX relative_consents_live
    ON relative_consents (patient_id, relative) WHERE withdrawn_ms IS NULL;
"#,
    r#"
-- How many local changes the device had waiting for upload, as it last reported them (the
-- x-nara-waiting header of its sync connection, less what that connection then uploaded), and
-- when. NULL: it never reported (a device of an older build).
ALTER TABLE devices ADD COLUMN waiting INTEGER CHECK (waiting IS NULL OR waiting >= 0);
ALTER TABLE devices ADD COLUMN waiting_ms INTEGER;
"#,
    r#"
-- Web devices (issue 15): the device a member of staff's browser sessions write as
-- (`web-<user>`), a row in `devices` with a credential nobody holds, and here the seed of its
-- Ed25519 signing key. The server signs the browser's changes with it, as a phone signs its
-- uploads (the browser holds no key); its public key is the row's `signing_key`.
CREATE TABLE web_devices (
    device_id  TEXT PRIMARY KEY NOT NULL REFERENCES devices (id),
    seed       BLOB NOT NULL CHECK (length(seed) = 32),
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
-- A person's web device (issue 15): the device their own browser sessions write as
-- (`web-<patient>`, "what matters to me"), signed like a member of staff's. Not a row in
-- `devices`, whose rows belong to staff users; here its registered public key, looked up
-- with the `devices` rows' keys, and the seed of its Ed25519 signing key, which the server
-- signs with (the browser holds no key). One per person; an id is never in both tables.
CREATE TABLE person_web_devices (
    device_id   TEXT PRIMARY KEY NOT NULL,
    patient_id  TEXT NOT NULL UNIQUE REFERENCES patients (id),
    signing_key BLOB NOT NULL CHECK (length(signing_key) = 32),
    seed        BLOB NOT NULL CHECK (length(seed) = 32),
    created_ms  INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
-- Access state (issue 12), shared by every server node: when an assignment ended and the
-- feed's head then (the write grace of sync_core::protocol::policy), and what each device was
-- told of a withdrawal (told on a live connection; connections it was sent on before).
CREATE TABLE ended_assignments (
    user_id    TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    ended_ms   INTEGER NOT NULL,
    feed_head  INTEGER NOT NULL CHECK (feed_head >= 0),
    PRIMARY KEY (user_id, patient_id)
) WITHOUT ROWID;
CREATE TABLE withdrawals (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    told       INTEGER NOT NULL DEFAULT 0 CHECK (told IN (0, 1)),
    sent       INTEGER NOT NULL DEFAULT 0 CHECK (sent >= 0),
    PRIMARY KEY (user_id, device_id, patient_id)
) WITHOUT ROWID;
"#,
];
