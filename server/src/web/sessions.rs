//! Sign-in codes and browser sessions, kept on the server in `DATA/web.db` (its own file, so
//! the directory's and the store's schemas stay as they are; `nara-server admin login-code`
//! writes codes into it beside the running server).
//!
//! Neither codes nor session tokens are stored, only their SHA-256 hashes under distinct
//! domain prefixes (both are random, so a plain hash is enough, as for enrollment codes). A
//! code is 12 characters of Crockford base32, valid [`LOGIN_CODE_TTL_MS`], usable once; a
//! session lasts [`SESSION_TTL_MS`] from sign-in and ends earlier when signed out or revoked.
//! Each session has its own CSRF token, which every form of the session carries.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rand::Rng;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use sync_core::{PatientId, UserId};

use crate::db;

/// How long a sign-in code stays valid.
pub const LOGIN_CODE_TTL_MS: i64 = 15 * 60 * 1000;
/// How long a browser session lasts (a working day).
pub const SESSION_TTL_MS: i64 = 8 * 60 * 60 * 1000;
/// Sessions kept at most; the oldest expired ones are removed first, then sign-in is refused.
pub const MAX_SESSIONS: i64 = 100_000;

const CODE_PREFIX: &[u8] = b"nara-web-login-code-v1\0";
const TOKEN_PREFIX: &[u8] = b"nara-web-session-v1\0";
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CODE_LEN: usize = 12;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE login_codes (
    code_hash    BLOB PRIMARY KEY NOT NULL,
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('user', 'patient')),
    subject_id   TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    used_ms      INTEGER
) WITHOUT ROWID;

CREATE TABLE sessions (
    token_hash   BLOB PRIMARY KEY NOT NULL,
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('user', 'patient')),
    subject_id   TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    revoked_ms   INTEGER
) WITHOUT ROWID;
CREATE INDEX sessions_by_subject ON sessions (subject_kind, subject_id);
"#,
    r#"
-- A relative the person has authorised (issue 15): subject_kind 'relative', subject_id the
-- person, relative the relative's name. The tables are rebuilt for the wider CHECK.
CREATE TABLE login_codes2 (
    code_hash    BLOB PRIMARY KEY NOT NULL,
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('user', 'patient', 'relative')),
    subject_id   TEXT NOT NULL,
    relative     TEXT NOT NULL DEFAULT '',
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    used_ms      INTEGER
) WITHOUT ROWID;
INSERT INTO login_codes2 (code_hash, subject_kind, subject_id, created_ms, expires_ms, used_ms)
    SELECT code_hash, subject_kind, subject_id, created_ms, expires_ms, used_ms FROM login_codes;
DROP TABLE login_codes;
ALTER TABLE login_codes2 RENAME TO login_codes;

CREATE TABLE sessions2 (
    token_hash   BLOB PRIMARY KEY NOT NULL,
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('user', 'patient', 'relative')),
    subject_id   TEXT NOT NULL,
    relative     TEXT NOT NULL DEFAULT '',
    csrf         TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    revoked_ms   INTEGER
) WITHOUT ROWID;
INSERT INTO sessions2 (token_hash, subject_kind, subject_id, csrf, created_ms, expires_ms, revoked_ms)
    SELECT token_hash, subject_kind, subject_id, csrf, created_ms, expires_ms, revoked_ms FROM sessions;
DROP TABLE sessions;
ALTER TABLE sessions2 RENAME TO sessions;
CREATE INDEX sessions_by_subject ON sessions (subject_kind, subject_id, relative);
"#,
];

/// Errors of the session store.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("web session database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("web session schema version {found} is newer than this build supports ({supported})")]
    NewerSchema { found: i64, supported: i64 },
    #[error("bad row in the web session database: {0}")]
    BadRow(String),
    #[error("too many open sessions")]
    Full,
}

impl From<db::OpenError> for SessionError {
    fn from(e: db::OpenError) -> Self {
        match e {
            db::OpenError::Sqlite(e) => Self::Sqlite(e),
            db::OpenError::NewerSchema { found, supported } => {
                Self::NewerSchema { found, supported }
            }
        }
    }
}

/// Who is signed in: a member of staff, a person receiving care (their own record only), or a
/// relative the person has authorised (the person's record, read only, while the consent
/// lasts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Staff(UserId),
    Person(PatientId),
    Relative {
        patient: PatientId,
        relative: String,
    },
}

impl Subject {
    fn kind(&self) -> &'static str {
        match self {
            Subject::Staff(_) => "user",
            Subject::Person(_) => "patient",
            Subject::Relative { .. } => "relative",
        }
    }

    /// The user or the person (for a relative: the person whose record they read).
    pub fn id(&self) -> &str {
        match self {
            Subject::Staff(u) => u.as_str(),
            Subject::Person(p) | Subject::Relative { patient: p, .. } => p.as_str(),
        }
    }

    /// The relative's name ("" for anyone else).
    fn relative(&self) -> &str {
        match self {
            Subject::Relative { relative, .. } => relative,
            _ => "",
        }
    }

    /// The person whose record this subject reads, if it is not staff.
    pub fn patient(&self) -> Option<&PatientId> {
        match self {
            Subject::Staff(_) => None,
            Subject::Person(p) | Subject::Relative { patient: p, .. } => Some(p),
        }
    }

    fn parse(kind: &str, id: String, relative: String) -> Result<Self, SessionError> {
        let bad = |e: sync_core::IdError| SessionError::BadRow(e.to_string());
        match kind {
            "user" => Ok(Subject::Staff(UserId::new(id).map_err(bad)?)),
            "patient" => Ok(Subject::Person(PatientId::new(id).map_err(bad)?)),
            "relative" if !relative.is_empty() => Ok(Subject::Relative {
                patient: PatientId::new(id).map_err(bad)?,
                relative,
            }),
            other => Err(SessionError::BadRow(format!("subject kind {other:?}"))),
        }
    }

    /// The actor of audit records: a user id, `person:<patient>`, or
    /// `relative:<patient>:<name>`.
    pub fn actor(&self) -> String {
        match self {
            Subject::Staff(u) => u.to_string(),
            Subject::Person(p) => format!("person:{p}"),
            Subject::Relative { patient, relative } => format!("relative:{patient}:{relative}"),
        }
    }
}

/// A live browser session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub subject: Subject,
    /// The token every form of this session carries.
    pub csrf: String,
    pub expires_ms: i64,
    /// A short, non-secret name of the session for the audit log (a prefix of its hash).
    pub label: String,
}

/// Sign-in codes and sessions in one SQLite file.
#[derive(Debug)]
pub struct SqliteSessions {
    conn: Mutex<Connection>,
}

fn hash(prefix: &[u8], secret: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prefix);
    h.update(secret.as_bytes());
    h.finalize().to_vec()
}

/// Upper case, without spaces or dashes, O read as 0 and I or L as 1.
fn normalise(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .collect()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(buf.as_mut_slice());
    hex::encode(buf)
}

impl SqliteSessions {
    /// Opens (creating if needed) the file at `path`.
    pub fn open(path: &Path) -> Result<Self, SessionError> {
        let conn = db::open(path, "web sessions", MIGRATIONS)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new one-time code for `subject`, valid [`LOGIN_CODE_TTL_MS`] from `now_ms`.
    pub fn issue_code(&self, subject: &Subject, now_ms: i64) -> Result<String, SessionError> {
        let mut rng = rand::rng();
        let code: String = (0..CODE_LEN)
            .map(|_| char::from(CROCKFORD[rng.random_range(0..CROCKFORD.len())]))
            .collect();
        let mut conn = self.conn();
        let tx = db::write_tx(&mut conn)?;
        // Expired and used codes are of no further use.
        tx.execute(
            "DELETE FROM login_codes WHERE expires_ms < ?1 OR used_ms IS NOT NULL",
            [now_ms],
        )?;
        tx.execute(
            "INSERT INTO login_codes \
             (code_hash, subject_kind, subject_id, relative, created_ms, expires_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                hash(CODE_PREFIX, &code),
                subject.kind(),
                subject.id(),
                subject.relative(),
                now_ms,
                now_ms.saturating_add(LOGIN_CODE_TTL_MS)
            ],
        )?;
        tx.commit()?;
        Ok(code)
    }

    /// Uses `code` once: whom it was issued for, if it is known, unused and not expired.
    pub fn redeem_code(&self, code: &str, now_ms: i64) -> Result<Option<Subject>, SessionError> {
        let code = normalise(code);
        if code.len() != CODE_LEN || !code.bytes().all(|b| CROCKFORD.contains(&b)) {
            return Ok(None);
        }
        let mut conn = self.conn();
        let tx = db::write_tx(&mut conn)?;
        let key = hash(CODE_PREFIX, &code);
        let row: Option<(String, String, String)> = tx
            .query_row(
                "SELECT subject_kind, subject_id, relative FROM login_codes \
                 WHERE code_hash = ?1 AND used_ms IS NULL AND expires_ms >= ?2",
                params![key, now_ms],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((kind, id, relative)) = row else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE login_codes SET used_ms = ?2 WHERE code_hash = ?1",
            params![key, now_ms],
        )?;
        tx.commit()?;
        Subject::parse(&kind, id, relative).map(Some)
    }

    /// Starts a session for `subject`: returns the token for the cookie (never stored) and the
    /// session.
    pub fn create(
        &self,
        subject: &Subject,
        now_ms: i64,
    ) -> Result<(String, Session), SessionError> {
        let token = random_hex(32);
        let csrf = random_hex(16);
        let key = hash(TOKEN_PREFIX, &token);
        let expires_ms = now_ms.saturating_add(SESSION_TTL_MS);
        let mut conn = self.conn();
        let tx = db::write_tx(&mut conn)?;
        tx.execute(
            "DELETE FROM sessions WHERE expires_ms < ?1 OR revoked_ms IS NOT NULL",
            [now_ms],
        )?;
        let open: i64 = tx.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))?;
        if open >= MAX_SESSIONS {
            return Err(SessionError::Full);
        }
        tx.execute(
            "INSERT INTO sessions \
             (token_hash, subject_kind, subject_id, relative, csrf, created_ms, expires_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                key,
                subject.kind(),
                subject.id(),
                subject.relative(),
                csrf,
                now_ms,
                expires_ms
            ],
        )?;
        tx.commit()?;
        let label = hex::encode(&key[..6]);
        Ok((
            token,
            Session {
                subject: subject.clone(),
                csrf,
                expires_ms,
                label,
            },
        ))
    }

    /// The live session of `token`, if any (not expired, not revoked).
    pub fn session(&self, token: &str, now_ms: i64) -> Result<Option<Session>, SessionError> {
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let key = hash(TOKEN_PREFIX, token);
        let row: Option<(String, String, String, String, i64)> = self
            .conn()
            .prepare_cached(
                "SELECT subject_kind, subject_id, relative, csrf, expires_ms FROM sessions \
                 WHERE token_hash = ?1 AND revoked_ms IS NULL AND expires_ms > ?2",
            )?
            .query_row(params![key, now_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        row.map(|(kind, id, relative, csrf, expires_ms)| {
            Ok(Session {
                subject: Subject::parse(&kind, id, relative)?,
                csrf,
                expires_ms,
                label: hex::encode(&key[..6]),
            })
        })
        .transpose()
    }

    /// Ends the session of `token` (signing out). Returns whether there was one.
    pub fn revoke(&self, token: &str, now_ms: i64) -> Result<bool, SessionError> {
        let n = self.conn().execute(
            "UPDATE sessions SET revoked_ms = ?2 WHERE token_hash = ?1 AND revoked_ms IS NULL",
            params![hash(TOKEN_PREFIX, token), now_ms],
        )?;
        Ok(n > 0)
    }

    /// Ends every session of `subject` (a lost computer, a user who left, a relative whose
    /// consent was withdrawn). Returns how many.
    pub fn revoke_subject(&self, subject: &Subject, now_ms: i64) -> Result<usize, SessionError> {
        Ok(self.conn().execute(
            "UPDATE sessions SET revoked_ms = ?4 \
             WHERE subject_kind = ?1 AND subject_id = ?2 AND relative = ?3 AND revoked_ms IS NULL",
            params![subject.kind(), subject.id(), subject.relative(), now_ms],
        )?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SqliteSessions) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteSessions::open(&dir.path().join("web.db")).unwrap();
        (dir, s)
    }

    #[test]
    fn a_code_signs_in_once_and_not_after_it_expires() {
        let (_d, s) = store();
        let who = Subject::Person(PatientId::new("p1").unwrap());
        let code = s.issue_code(&who, 1_000).unwrap();
        let typed = format!("{}-{}", &code[..6], code[6..].to_lowercase());
        assert_eq!(s.redeem_code(&typed, 2_000).unwrap(), Some(who.clone()));
        assert_eq!(s.redeem_code(&code, 2_000).unwrap(), None, "used once");
        let late = s.issue_code(&who, 1_000).unwrap();
        assert_eq!(
            s.redeem_code(&late, 1_000 + LOGIN_CODE_TTL_MS + 1).unwrap(),
            None
        );
        assert_eq!(s.redeem_code("not a code", 2_000).unwrap(), None);
    }

    #[test]
    fn a_session_lasts_eight_hours_and_ends_when_revoked() {
        let (_d, s) = store();
        let who = Subject::Staff(UserId::new("u1").unwrap());
        let (token, session) = s.create(&who, 0).unwrap();
        assert_eq!(s.session(&token, 1).unwrap(), Some(session.clone()));
        assert_eq!(s.session(&token, SESSION_TTL_MS).unwrap(), None);
        let (other, _) = s.create(&who, 0).unwrap();
        assert!(s.revoke(&other, 5).unwrap());
        assert_eq!(s.session(&other, 6).unwrap(), None);
        let (third, _) = s.create(&who, 10).unwrap();
        assert_eq!(s.revoke_subject(&who, 11).unwrap(), 2);
        assert_eq!(s.session(&third, 12).unwrap(), None);
        assert_eq!(s.session(&"0".repeat(64), 12).unwrap(), None);
    }

    #[test]
    fn a_relatives_code_and_sessions_are_their_own_and_end_alone() {
        let (_d, s) = store();
        let p = PatientId::new("p1").unwrap();
        let erik = Subject::Relative {
            patient: p.clone(),
            relative: "Erik Dagnysson".into(),
        };
        let code = s.issue_code(&erik, 0).unwrap();
        assert_eq!(s.redeem_code(&code, 1).unwrap(), Some(erik.clone()));
        let (rt, rs) = s.create(&erik, 1).unwrap();
        assert_eq!(rs.subject, erik);
        assert_eq!(erik.actor(), "relative:p1:Erik Dagnysson");
        let (pt, _) = s.create(&Subject::Person(p.clone()), 1).unwrap();
        assert_eq!(s.revoke_subject(&erik, 2).unwrap(), 1);
        assert_eq!(s.session(&rt, 3).unwrap(), None);
        assert!(
            s.session(&pt, 3).unwrap().is_some(),
            "the person's own stays"
        );
    }
}
