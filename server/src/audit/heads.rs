//! Signed audit heads: the chain's head (record number and hash) signed with the server's
//! audit key and kept OUTSIDE the database, so that a chain rewritten in the database (every
//! hash recomputed, which [`super::AuditLog::verify`] alone cannot tell from an honest one) is
//! caught against what was signed before.
//!
//! - [`AuditKey`]: the server's Ed25519 audit signing key, a file (`DATA/audit-key`, or
//!   `--audit-key FILE` given to every node on one PostgreSQL database) made on first start,
//!   owner-only (`0600`).
//! - [`SignedHead`]: one exported head, one JSON line of the heads file (`DATA/audit-heads.jsonl`
//!   or `--audit-heads FILE`), with the signer's public key, appended and fsynced.
//! - [`Exporter`]: what the server runs now and then (and at a clean shutdown): sign the head if
//!   it moved since the last export, append it.
//! - [`Checkpoints`]: heads files read back for `verify`: each line's signature checked against
//!   the trusted public keys, and the heads that verify handed to the chain's
//!   [`super::chain::Verifier`], which checks that the record with that number has that hash.
//!
//! The signed message is
//!
//! ```text
//! "nara-audit-head-v1\0" || u64be(seq) || u64be(len(hash)) || utf8(hash) || i64be(at_ms)
//! ```
//!
//! where `hash` is the record's hash as hex and `at_ms` the signing time. No clock and no
//! randomness are read here except where a caller passes them in (`at_ms`) or a key is made.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::{AuditError, AuditLog, MAX_PROBLEMS};

/// The domain-separation prefix of a signed head.
pub const HEAD_DOMAIN: &[u8] = b"nara-audit-head-v1\0";

/// The heads file in a data directory (`--audit-heads` overrides it).
pub const HEADS_FILE: &str = "audit-heads.jsonl";

/// The audit key file in a data directory (`--audit-key` overrides it).
pub const KEY_FILE: &str = "audit-key";

/// How often the server exports its head by default (when it moved).
pub const DEFAULT_EVERY: Duration = Duration::from_secs(60);

/// Longest line read from a heads file (a head is about 300 bytes); a longer one is a problem.
pub const MAX_LINE: usize = 2048;

/// Most lines read from the heads files by one `verify` (a head a minute for about two years;
/// about 150 MB held at most); past it `verify` stops with [`HeadError::TooMany`]: start a new
/// file.
pub const MAX_HEADS: u64 = 1_000_000;

/// Errors of the audit key and the heads file.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not hold an audit key (64 hex digits)")]
    BadKeyFile { path: PathBuf },
    #[error("not an Ed25519 public key (64 hex digits): {0:?}")]
    BadPublicKey(String),
    #[error("the heads files hold more than {MAX_HEADS} lines; start a new file")]
    TooMany,
    #[error(transparent)]
    Audit(#[from] AuditError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HeadError + '_ {
    move |source| HeadError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The server's audit signing key.
pub struct AuditKey {
    key: SigningKey,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field("public", &self.public_hex())
            .finish_non_exhaustive()
    }
}

impl AuditKey {
    /// The key in `path`, made there first if there is none (random, owner-only, fsynced). Nodes
    /// starting at once on one key file agree: the file appears whole or not at all (written
    /// aside, then linked into place; whoever links second reads the first one's key).
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), HeadError> {
        match Self::load(path) {
            Err(HeadError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            other => return other.map(|k| (k, false)),
        }
        let seed: [u8; 32] = rand::random();
        let tmp = path.with_extension(format!("tmp-{}", hex::encode(rand::random::<[u8; 6]>())));
        write_owner_only(&tmp, format!("{}\n", hex::encode(seed)).as_bytes())?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_parent(path);
                tracing::info!(path = %path.display(), "made the audit signing key");
                Ok((
                    Self {
                        key: SigningKey::from_bytes(&seed),
                    },
                    true,
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Self::load(path).map(|k| (k, false))
            }
            Err(e) => Err(io(path)(e)),
        }
    }

    /// The key in `path`; a file readable by others is made owner-only first.
    pub fn load(path: &Path) -> Result<Self, HeadError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path).map_err(io(path))?;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the audit key was readable by others: made owner-only");
                std::fs::set_permissions(
                    path,
                    std::fs::Permissions::from_mode(crate::datadir::FILE_MODE),
                )
                .map_err(io(path))?;
            }
        }
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| HeadError::BadKeyFile {
            path: path.to_owned(),
        })?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The public key, as hex: what an auditor keeps outside the server.
    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }

    /// The public key.
    pub fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// `head` signed at `at_ms`.
    pub fn sign(&self, head: &AuditHead, at_ms: i64) -> SignedHead {
        let sig = self.key.sign(&message(head.seq, &head.hash, at_ms));
        SignedHead {
            seq: head.seq,
            hash: head.hash.clone(),
            at_ms,
            key: self.public_hex(),
            sig: hex::encode(sig.to_bytes()),
        }
    }
}

/// Parses a public key given as 64 hex digits (`--public-key`).
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, HeadError> {
    let bad = || HeadError::BadPublicKey(hex_key.chars().take(80).collect());
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_key.trim(), &mut bytes).map_err(|_| bad())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
}

/// The chain's head: how many records were appended, and the last one's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: String,
}

/// One exported head: a line of the heads file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHead {
    /// The number of the record the head ends at.
    pub seq: u64,
    /// That record's hash (hex).
    pub hash: String,
    /// When it was signed, milliseconds since the Unix epoch (the signer's clock).
    pub at_ms: i64,
    /// The signer's Ed25519 public key (hex).
    pub key: String,
    /// The signature over [`HEAD_DOMAIN`], `seq`, `hash` and `at_ms` (hex).
    pub sig: String,
}

fn message(seq: u64, hash: &str, at_ms: i64) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEAD_DOMAIN.len() + 24 + hash.len());
    m.extend_from_slice(HEAD_DOMAIN);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&(hash.len() as u64).to_be_bytes());
    m.extend_from_slice(hash.as_bytes());
    m.extend_from_slice(&at_ms.to_be_bytes());
    m
}

impl SignedHead {
    /// Whether this head is signed by one of `trusted` (strict Ed25519); why not if not.
    pub fn check(&self, trusted: &[VerifyingKey]) -> Result<(), String> {
        let key = parse_public_key(&self.key).map_err(|e| e.to_string())?;
        if !trusted.contains(&key) {
            return Err(format!(
                "signed by key {}, which is not a trusted audit key",
                self.key
            ));
        }
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&self.sig, &mut sig)
            .map_err(|_| "the signature is not 128 hex digits".to_owned())?;
        key.verify_strict(
            &message(self.seq, &self.hash, self.at_ms),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| "the signature does not verify: the line was altered".to_owned())
    }
}

/// Appends `head` to the heads file at `path` as one JSON line, in one write, and fsyncs it;
/// the file is made owner-only if new. Several nodes may append to one file (`O_APPEND`). A
/// line torn by a crash mid-write is ended first, so the new line stays whole (the torn one is
/// skipped when read, see [`Checkpoints::load`]).
pub fn append(path: &Path, head: &SignedHead) -> Result<(), HeadError> {
    let mut line = serde_json::to_vec(head).map_err(|e| io(path)(e.into()))?;
    line.push(b'\n');
    let existed = path.exists();
    let mut options = std::fs::OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(crate::datadir::FILE_MODE);
    }
    let mut file = options.open(path).map_err(io(path))?;
    if ends_torn(&mut file).map_err(io(path))? {
        line.insert(0, b'\n');
    }
    file.write_all(&line).map_err(io(path))?;
    file.sync_data().map_err(io(path))?;
    if !existed {
        sync_parent(path);
    }
    Ok(())
}

/// Whether the file's last byte is not a newline (a write cut short by a crash).
fn ends_torn(file: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::{Seek, SeekFrom};
    if file.metadata()?.len() == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

fn write_owner_only(path: &Path, bytes: &[u8]) -> Result<(), HeadError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(crate::datadir::FILE_MODE);
    }
    let mut file = options.open(path).map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// Makes a new file's directory entry durable (best effort: not every filesystem allows it).
fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
    {
        let _ = d.sync_all();
    }
}

/// What the server exports: with which key, to which file, how often.
#[derive(Debug)]
pub struct HeadExport {
    pub key: AuditKey,
    pub file: PathBuf,
    pub every: Duration,
}

/// Exports the head when it moved since the last export (by this exporter).
#[derive(Debug)]
pub struct Exporter {
    export: HeadExport,
    last: Option<AuditHead>,
}

impl Exporter {
    pub fn new(export: HeadExport) -> Self {
        Self { export, last: None }
    }

    /// How often to call [`Exporter::export`].
    pub fn every(&self) -> Duration {
        self.export.every
    }

    /// The heads this exporter wrote so far (its file, checked with its key), for a
    /// verification of the chain against them; none while the file does not exist yet.
    pub fn checkpoints(&self) -> Result<Checkpoints, HeadError> {
        if !self.export.file.exists() {
            return Ok(Checkpoints::none());
        }
        Checkpoints::load(
            std::slice::from_ref(&self.export.file),
            &[self.export.key.public()],
        )
    }

    /// Signs the log's head at `now_ms` and appends it to the heads file, unless the log is
    /// empty or the head is the one exported last. Returns what was exported.
    pub fn export(
        &mut self,
        audit: &dyn AuditLog,
        now_ms: i64,
    ) -> Result<Option<SignedHead>, HeadError> {
        let head = audit.head()?;
        if head.seq == 0 || self.last.as_ref() == Some(&head) {
            return Ok(None);
        }
        let signed = self.export.key.sign(&head, now_ms);
        append(&self.export.file, &signed)?;
        tracing::debug!(seq = head.seq, file = %self.export.file.display(), "exported the signed audit head");
        self.last = Some(head);
        Ok(Some(signed))
    }
}

/// Where a head came from, for problem lines: a file (by its index in
/// [`Checkpoints::files`]) and a line number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Origin {
    file: usize,
    line: u64,
}

/// An origin shown with its file's name.
struct Shown<'a>(&'a [String], Origin);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.0.get(self.1.file).map_or("?", String::as_str);
        write!(f, "{name} line {}", self.1.line)
    }
}

/// Signed heads read back, for the chain's verification: the hash each names for its record,
/// and the problems found in the files themselves (lines that do not parse or verify).
#[derive(Debug, Default)]
pub struct Checkpoints {
    files: Vec<String>,
    by_seq: BTreeMap<u64, Vec<(String, Origin)>>,
    problems: Vec<String>,
    unlisted: u64,
    verified: u64,
    torn: u64,
}

impl Checkpoints {
    /// None: the chain is checked on its own.
    pub const fn none() -> Self {
        Self {
            files: Vec::new(),
            by_seq: BTreeMap::new(),
            problems: Vec::new(),
            unlisted: 0,
            verified: 0,
            torn: 0,
        }
    }

    /// Reads the heads `files`, each line checked against `trusted`.
    pub fn load(files: &[PathBuf], trusted: &[VerifyingKey]) -> Result<Self, HeadError> {
        let mut c = Self::none();
        let mut lines = 0u64;
        for path in files {
            let file = std::fs::File::open(path).map_err(io(path))?;
            c.files.push(path.display().to_string());
            let index = c.files.len() - 1;
            let mut reader = BufReader::new(file);
            let mut n = 0u64;
            while let Some(line) = read_line(&mut reader).map_err(io(path))? {
                n += 1;
                lines += 1;
                if lines > MAX_HEADS {
                    return Err(HeadError::TooMany);
                }
                let at = Origin {
                    file: index,
                    line: n,
                };
                let origin = Shown(&c.files, at).to_string();
                match line {
                    Line::TooLong => c.problem(format!(
                        "signed head at {origin}: longer than {MAX_LINE} bytes: not a head"
                    )),
                    Line::Text(text) if text.trim().is_empty() => {}
                    Line::Text(text) => match serde_json::from_str::<SignedHead>(&text) {
                        // A write cut short by a crash: as if the line had not been written
                        // (which removing a line from the file would give anyone anyway).
                        Err(e) if e.is_eof() => {
                            tracing::warn!(%origin, "a signed head line torn by a crash: skipped");
                            c.torn += 1;
                        }
                        Err(e) => {
                            c.problem(format!("signed head at {origin}: not a signed head ({e})"))
                        }
                        Ok(head) => match head.check(trusted) {
                            Err(why) => c.problem(format!("signed head at {origin}: {why}")),
                            Ok(()) => c.add(head, at),
                        },
                    },
                }
            }
        }
        Ok(c)
    }

    fn add(&mut self, head: SignedHead, origin: Origin) {
        self.verified += 1;
        let at = self.by_seq.entry(head.seq).or_default();
        // Nodes export the same head: one kept per distinct hash.
        if !at.iter().any(|(h, _)| *h == head.hash) {
            at.push((head.hash, origin));
        }
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        } else {
            self.unlisted += 1;
        }
    }

    /// Heads whose signature verified.
    pub fn verified(&self) -> u64 {
        self.verified
    }

    /// Lines skipped as torn by a crash mid-write (a JSON object cut short).
    pub fn torn(&self) -> u64 {
        self.torn
    }

    /// The problems with record `seq` whose stored hash is `hash`: one per signed head naming
    /// another hash for it.
    pub(crate) fn check_record(&self, seq: u64, hash: &str) -> Vec<String> {
        self.by_seq
            .get(&seq)
            .into_iter()
            .flatten()
            .filter(|(h, _)| h != hash)
            .map(|(h, at)| {
                let origin = Shown(&self.files, *at);
                format!(
                    "record {seq}: its hash {hash} differs from {h} in the signed head at \
                     {origin}: the chain was rewritten at or before record {seq} after that \
                     head was exported"
                )
            })
            .collect()
    }

    /// The problems of a log that ends at record `last`: signed heads naming records past it,
    /// then the heads files' own problems.
    pub(crate) fn finish(&self, last: u64) -> Vec<String> {
        let mut problems: Vec<String> = self
            .by_seq
            .range(last.saturating_add(1)..)
            .take(MAX_PROBLEMS)
            .flat_map(|(seq, heads)| {
                heads.iter().map(move |(_, at)| {
                    let origin = Shown(&self.files, *at);
                    format!(
                        "record {seq} is named by the signed head at {origin} but the log ends \
                         at record {last}: records were deleted"
                    )
                })
            })
            .collect();
        problems.extend(self.problems.iter().cloned());
        if self.unlisted > 0 {
            problems.push(format!(
                "... and {} more problems in the heads files",
                self.unlisted
            ));
        }
        problems
    }
}

enum Line {
    Text(String),
    TooLong,
}

/// The next line (without its newline), read at most [`MAX_LINE`] bytes at a time: a longer
/// one is skipped to its end and reported, never held whole.
fn read_line(reader: &mut impl BufRead) -> std::io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
    let n = reader.by_ref().take(limit).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_LINE {
        // Skip the rest of the line.
        loop {
            let chunk = reader.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    reader.consume(i + 1);
                    break;
                }
                None => {
                    let len = chunk.len();
                    reader.consume(len);
                }
            }
        }
        return Ok(Some(Line::TooLong));
    }
    Ok(Some(Line::Text(String::from_utf8_lossy(&buf).into_owned())))
}

#[cfg(test)]
mod tests;
