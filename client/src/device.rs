//! [`Device`]: an enrolled device's store, credential and sync connection.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde::Serialize;
use sync_core::model::{Edit, WriteContext};
use sync_core::protocol::wire::{CLOCK_SKEW_LIMIT_MS, CloseReason, MAX_MESSAGE_BYTES};
use sync_core::protocol::{DeviceConfig, DeviceEvent, DeviceSession, QuarantinedChange, Signer};

/// The header carrying the device's public signing key on the sync connection (the server's
/// `SIGNING_KEY_HEADER`).
pub const SIGNING_KEY_HEADER: &str = "x-nara-signing-key";
use sync_core::repo::{Repo, Saved};
use sync_core::store::{EncryptionKey, SqliteStore, Store};
use sync_core::{Author, ChangeHash, DocumentId, ModelError, PatientId, Timestamp};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, broadcast, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::config::{self, Enrollment, ServerAddr};
use crate::credential::{self, Credential};
use crate::error::{ClientError, Result};
use crate::http;
use crate::pin::ServerPin;
use crate::tls::{self, Observer, Trust};

/// Store meta key of the last time the device was in sync (ms since the epoch, decimal).
const LAST_IN_SYNC_KEY: &str = "client.last_in_sync";
const DOC_IN_SYNC_KEY: &str = "client.documents_in_sync";

/// The wall clock. The device runtime is the edge where time is read; the model and the
/// protocol take it as an argument.
pub fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0),
    )
}

/// What the device is doing, for the app's status line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Status {
    /// Not connected. `clock_off_by_ms` as in [`Status::InSync`].
    Offline {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clock_off_by_ms: Option<i64>,
    },
    Connecting,
    /// "syncing 12 of 40": `received` changes so far in this connection, `remaining` to come.
    Syncing {
        received: u64,
        remaining: u32,
    },
    /// Everything the server had is stored here and nothing of ours is in flight.
    /// `clock_off_by_ms`: this device's clock is more than 5 minutes off the server's, by this
    /// much (ms to add to the device's time to get the server's); the app should say so.
    InSync {
        at: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clock_off_by_ms: Option<i64>,
    },
    Error {
        reason: String,
    },
    /// The server revoked this device: its data and credential were erased at `at`.
    Wiped {
        at: Timestamp,
    },
}

/// Which incarnation of the device's store is in use (docs/protocol.md, "Incarnations").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IncarnationState {
    /// 0 until the server first found this store behind it.
    pub number: u32,
    /// Changes this store has written under it.
    pub written: u64,
    /// Records taken back at the last reincarnation, still to be written again (after the
    /// next complete catch-up).
    pub rewrites_waiting: usize,
}

/// This device's clock against the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClockState {
    /// Ms to add to this device's time to get the server's; `None` until a server told it.
    pub offset_ms: Option<i64>,
    /// More than 5 minutes off: times this device records are not to be trusted.
    pub off: bool,
}

/// Timings of the sync connection.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// `sync_once` ends once caught up, with nothing in flight, and nothing arriving for this long.
    pub quiet_for: Duration,
    /// Deadline for TCP connect + TLS + WebSocket upgrade.
    pub connect_timeout: Duration,
    /// Reconnection backoff in watch mode: first delay and cap (jittered).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How often watch mode looks for changes written to the store by another process, ticks
    /// the session and checks the connection is alive.
    pub poll_every: Duration,
    /// An idle watch connection is pinged after this long without a message; without any
    /// answer for as long again it is considered dead.
    pub ping_after: Duration,
    /// Patients whose documents the server should send first.
    pub priority: Vec<PatientId>,
    /// The session closes if the server says nothing for this long while it waits (ms).
    pub stall_after_ms: Option<i64>,
    /// Encrypts the device store at rest (SQLCipher) with this key, which the host app keeps in
    /// the platform keystore. `None`: a plain store (the CLI, tests).
    pub store_key: Option<EncryptionKey>,
    /// The offline lease: after this long without being in sync with the server, patient data
    /// is no longer shown ([`Device::check_lease`]); sync, and so upload, still work.
    /// `None`: no lease. Default: [`DEFAULT_OFFLINE_LEASE`].
    pub offline_lease: Option<Duration>,
    /// This device's clock: [`now`] unless a host (or a test of a phone whose clock is off)
    /// says otherwise. The runtime reads time only through it.
    pub clock: fn() -> Timestamp,
}

/// The offline lease unless set otherwise: 72 hours (a long weekend without signal).
pub const DEFAULT_OFFLINE_LEASE: Duration = Duration::from_secs(72 * 3600);

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            quiet_for: Duration::from_millis(300),
            connect_timeout: Duration::from_secs(20),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            poll_every: Duration::from_secs(1),
            ping_after: Duration::from_secs(30),
            priority: Vec::new(),
            stall_after_ms: Some(60_000),
            store_key: None,
            offline_lease: Some(DEFAULT_OFFLINE_LEASE),
            clock: now,
        }
    }
}

/// A register that became conflicting during a sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RaisedConflict {
    pub document: DocumentId,
    pub register: String,
}

/// A flag that appeared (or reopened) during a sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RaisedFlag {
    pub patient: PatientId,
    pub flag: String,
}

/// A change from the server that this device refused to store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncomingRefusal {
    pub document: DocumentId,
    pub change: ChangeHash,
    pub detail: String,
}

/// What one sync (or a watch session so far) did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SyncReport {
    /// Changes from others received and stored.
    pub received: u64,
    /// Our changes the server acknowledged as stored.
    pub uploaded: usize,
    pub documents_updated: BTreeSet<DocumentId>,
    pub conflicts_raised: Vec<RaisedConflict>,
    pub flags_raised: Vec<RaisedFlag>,
    /// Our changes the server refused (now quarantined: kept locally, never resent).
    pub refused: Vec<QuarantinedChange>,
    pub incoming_refused: Vec<IncomingRefusal>,
    /// Patients this user may no longer read.
    pub withdrawn: Vec<PatientId>,
    /// Withdrawn patients whose documents were removed from the device (after their pending
    /// changes were uploaded).
    pub purged: Vec<PatientId>,
    /// Local changes still waiting for upload after the sync.
    pub pending: usize,
    /// When the device was last in sync, if it was during this sync.
    pub in_sync_at: Option<Timestamp>,
    /// This device's clock offset from the server's (ms to add to the device's time), if the
    /// server told it during this sync.
    pub clock_offset_ms: Option<i64>,
    /// The clock is more than 5 minutes off the server's.
    pub clock_off: bool,
    /// The server found this device's store behind what it holds from it (restored from a
    /// backup, or copied to another phone): the store went on as this incarnation, and the
    /// records it had not had acknowledged are written again once it is caught up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reincarnated: Option<u32>,
    /// Records written again after a reincarnation (those the server sent back are not).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rewritten: usize,
    /// Records taken back at a reincarnation that the model refused to write again, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewrite_refused: Vec<IncomingRefusal>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl SyncReport {
    fn absorb(&mut self, event: &DeviceEvent) {
        match event {
            DeviceEvent::Progress { received, .. } => {
                // Per connection: a report spanning reconnections adds them up.
                self.received = self.received.max(*received);
            }
            DeviceEvent::DocumentUpdated { doc } => {
                self.documents_updated.insert(doc.clone());
            }
            DeviceEvent::ConflictRaised { doc, register } => {
                self.conflicts_raised.push(RaisedConflict {
                    document: doc.clone(),
                    register: register.clone(),
                })
            }
            DeviceEvent::FlagRaised { patient, flag } => self.flags_raised.push(RaisedFlag {
                patient: patient.clone(),
                flag: flag.clone(),
            }),
            DeviceEvent::UploadAcknowledged { changes } => self.uploaded += changes,
            DeviceEvent::ChangeRefused(q) => self.refused.push(q.clone()),
            DeviceEvent::IncomingRefused {
                doc,
                change,
                detail,
            } => self.incoming_refused.push(IncomingRefusal {
                document: doc.clone(),
                change: *change,
                detail: detail.clone(),
            }),
            DeviceEvent::AccessWithdrawn { patients } => {
                self.withdrawn.extend(patients.iter().cloned())
            }
            DeviceEvent::Purged { patient } => self.purged.push(patient.clone()),
            DeviceEvent::ClockChecked { offset_ms, off } => {
                self.clock_offset_ms = Some(*offset_ms);
                self.clock_off = *off;
            }
            DeviceEvent::Reincarnated { incarnation, .. } => self.reincarnated = Some(*incarnation),
            DeviceEvent::Rewritten { records } => self.rewritten += records,
            DeviceEvent::RewriteRefused { doc, detail } => {
                self.rewrite_refused.push(IncomingRefusal {
                    document: doc.clone(),
                    change: ChangeHash([0; 32]),
                    detail: detail.clone(),
                })
            }
            DeviceEvent::CaughtUp | DeviceEvent::Closed { .. } => {}
        }
    }
}

struct Inner {
    path: PathBuf,
    key: Option<EncryptionKey>,
    repo: Repo<SqliteStore>,
    session: DeviceSession,
    /// Pending changes this process knows its loaded documents hold.
    known_pending: BTreeSet<(DocumentId, ChangeHash)>,
    /// Set once the server revoked the device and its data was erased: why.
    wiped: Option<String>,
}

impl Inner {
    /// If another process wrote local changes into the store, reload the documents (the
    /// cached ones lack those changes) and offer the changes to the session. Returns whether
    /// there were any.
    fn pick_up_external_changes(&mut self) -> Result<bool> {
        if self.wiped.is_some() {
            return Ok(false);
        }
        let pending: BTreeSet<(DocumentId, ChangeHash)> =
            self.repo.pending()?.into_iter().collect();
        let new = pending.difference(&self.known_pending).next().is_some();
        if new {
            tracing::debug!("local changes from another process: reloading documents");
            self.repo = Repo::new(open_store(&self.path, self.key.as_ref())?);
            self.session.local_change(&mut self.repo)?;
        }
        self.known_pending = pending;
        Ok(new)
    }

    fn drain(&mut self) -> (Vec<Vec<u8>>, Vec<DeviceEvent>) {
        (
            std::iter::from_fn(|| self.session.poll_transmit()).collect(),
            std::iter::from_fn(|| self.session.poll_event()).collect(),
        )
    }
}

/// An enrolled device: its documents (`DIR/device.db`), its credential (`DIR/device.json`) and
/// its sync connection.
///
/// Every method takes `&self`: the app (or a CLI command) can edit while [`Device::watch`] runs
/// on the same value. The store is only touched under an internal lock that is never held
/// across an `.await`.
pub struct Device {
    home: PathBuf,
    config: Enrollment,
    /// From the store; never in `device.json`.
    credential: Credential,
    addr: ServerAddr,
    tls: Arc<rustls::ClientConfig>,
    /// What the last TLS handshake saw of the server's key.
    observer: Observer,
    options: SyncOptions,
    /// The offline lease in force ([`Device::check_lease`]).
    lease: Mutex<Option<Duration>>,
    /// How far off this device's clock is, if more than 5 minutes (as last told).
    clock_off: Mutex<Option<i64>>,
    dialer: Option<Dialer>,
    inner: Mutex<Inner>,
    local: Notify,
    status: watch::Sender<Status>,
    events: broadcast::Sender<DeviceEvent>,
}

/// The offset if it is more than 5 minutes.
fn off_by(offset_ms: Option<i64>) -> Option<i64> {
    offset_ms.filter(|o| o.unsigned_abs() > CLOCK_SKEW_LIMIT_MS.unsigned_abs())
}

fn open_store(path: &Path, key: Option<&EncryptionKey>) -> Result<SqliteStore> {
    Ok(match key {
        Some(key) => SqliteStore::open_encrypted(path, key)?,
        None => SqliteStore::open(path)?,
    })
}

/// Events kept for a slow [`Device::events`] subscriber before it starts missing some.
const EVENT_BUFFER: usize = 1024;

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("home", &self.home)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How one connection ended without an error.
enum End {
    Quiet,
    Shutdown,
}

/// A byte stream to the server, which sync runs TLS and the WebSocket over.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// Opens the byte stream to the server instead of a TCP connection to the enrolled address
/// (a simulated network in tests). See [`Device::with_dialer`].
pub type Dialer = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Transport>>> + Send>>
        + Send
        + Sync,
>;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<Box<dyn Transport>>>;

impl Device {
    /// Opens the enrolled device in `home`.
    pub fn open(home: &Path) -> Result<Device> {
        Self::open_with(home, SyncOptions::default())
    }

    /// Opens the enrolled device in `home` with `options` (the store's key, the lease). A
    /// device enrolled by an older build, whose `device.json` holds its secret, has the secret
    /// moved into the store and `device.json` rewritten without it.
    pub fn open_with(home: &Path, options: SyncOptions) -> Result<Device> {
        let (config, legacy_secret) = Enrollment::load(home)?;
        let addr = ServerAddr::parse(&config.server)?;
        let observer = Observer::default();
        let tls = tls::client_config_observed(Trust::from_pin(&config.pin)?, observer.clone())?;
        let path = home.join(config::STORE_FILE);
        let store_key = options.store_key.clone();
        let mut store = open_store(&path, store_key.as_ref())?;
        credential::migrate(home, &config, legacy_secret, &mut store)?;
        let mut credential =
            Credential::load(&store)?.ok_or_else(|| ClientError::ConfigDamaged {
                path: path.clone(),
                detail: "the store holds no device credential".into(),
            })?;
        let key = credential.ensure_key(&mut store)?;
        let repo = Repo::new(store);
        let known_pending = repo.pending()?.into_iter().collect();
        let mut session = DeviceSession::new(DeviceConfig {
            priority: options.priority.clone(),
            stall_after_ms: options.stall_after_ms,
            tell_clock: true,
        });
        session.set_signer(Some(Signer {
            device: config.device.clone(),
            key,
        }));
        let clock_off = off_by(DeviceSession::clock_offset(&repo)?);
        let (status, _) = watch::channel(Status::Offline {
            clock_off_by_ms: clock_off,
        });
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Ok(Device {
            home: home.to_path_buf(),
            config,
            credential,
            addr,
            tls,
            observer,
            lease: Mutex::new(options.offline_lease),
            clock_off: Mutex::new(clock_off),
            options,
            dialer: None,
            inner: Mutex::new(Inner {
                key: store_key,
                path,
                repo,
                session,
                known_pending,
                wiped: None,
            }),
            local: Notify::new(),
            status,
            events,
        })
    }

    /// Syncs over streams opened by `dialer` instead of TCP connections to the enrolled
    /// address; TLS (with the pinned certificate) and the WebSocket still run on top.
    pub fn with_dialer(mut self, dialer: Dialer) -> Self {
        self.dialer = Some(dialer);
        self
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn enrollment(&self) -> &Enrollment {
        &self.config
    }

    /// Who this device's changes are authored by.
    pub fn author(&self) -> Author {
        self.config.author()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the repo as the store has it (every write is a
        // transaction); carry on with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with the repo (reads, charts).
    pub fn with_repo<T>(&self, f: impl FnOnce(&mut Repo<SqliteStore>) -> T) -> T {
        f(&mut self.lock().repo)
    }

    /// Makes a local change to `doc` as this device's author, durable before it returns, and
    /// wakes a running [`Device::watch`] to upload it.
    pub fn change<T>(
        &self,
        doc: &DocumentId,
        at: Timestamp,
        f: impl FnOnce(&mut Edit<'_>) -> Result<T, ModelError>,
    ) -> Result<Saved<T>> {
        let author = self.author();
        let saved = {
            let mut inner = self.lock();
            // Every record says how far off this device's clock was, as last learned.
            let clock_offset_ms = DeviceSession::clock_offset(&inner.repo)?;
            let saved = inner.repo.change(doc, &author, at, |e| {
                e.set_context(WriteContext {
                    clock_offset_ms,
                    after: Vec::new(),
                });
                f(e)
            })?;
            if let Some(hash) = saved.change {
                inner.known_pending.insert((doc.clone(), hash));
            }
            saved
        };
        if saved.change.is_some() {
            self.local.notify_one();
        }
        Ok(saved)
    }

    /// The time by this device's clock ([`SyncOptions::clock`]).
    pub fn now(&self) -> Timestamp {
        (self.options.clock)()
    }

    /// This device's clock against the server's, as the server last told it (at a sync).
    pub fn clock(&self) -> Result<ClockState> {
        let offset_ms = DeviceSession::clock_offset(&self.lock().repo)?;
        Ok(ClockState {
            offset_ms,
            off: off_by(offset_ms).is_some(),
        })
    }

    /// Which incarnation of this device's store is in use (a new one after the server found
    /// the store behind it: restored from a backup, or copied), and how many records taken back
    /// then still wait to be written again.
    pub fn incarnation(&self) -> Result<IncarnationState> {
        let inner = self.lock();
        let inc = inner.repo.incarnation()?;
        Ok(IncarnationState {
            number: inc.number,
            written: inc.written,
            rewrites_waiting: DeviceSession::rewrites_waiting(&inner.repo)?,
        })
    }

    /// Records, durably and before showing it, that `what` of `patient` is shown to the user;
    /// the read log goes to the server's audit log with the next sync.
    pub fn log_read(&self, patient: &PatientId, what: &str) -> Result<()> {
        let mut inner = self.lock();
        DeviceSession::log_read(&mut inner.repo, patient, what, self.now())?;
        Ok(())
    }

    /// Read-log entries not yet in the server's audit log.
    pub fn unsent_reads(&self) -> Result<usize> {
        Ok(DeviceSession::read_log(&self.lock().repo)?.len())
    }

    /// Local changes waiting for upload.
    pub fn pending_count(&self) -> Result<usize> {
        Ok(self.lock().repo.pending()?.len())
    }

    /// Local changes the server refused (kept locally, never resent).
    pub fn quarantined(&self) -> Result<Vec<QuarantinedChange>> {
        Ok(DeviceSession::quarantined(&self.lock().repo)?)
    }

    /// When this device was last in sync with the server, from the store.
    pub fn last_in_sync(&self) -> Result<Option<Timestamp>> {
        let bytes = self.lock().repo.store().meta(LAST_IN_SYNC_KEY)?;
        Ok(bytes
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse().ok())
            .map(Timestamp))
    }

    /// When `doc` was last in sync with the server (nothing of it waiting for upload, everything
    /// the server had received), or `None` if it never was.
    pub fn last_in_sync_of(&self, doc: &DocumentId) -> Result<Option<Timestamp>> {
        let times: BTreeMap<String, i64> = self
            .lock()
            .repo
            .store()
            .meta(DOC_IN_SYNC_KEY)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(times.get(&doc.to_string()).copied().map(Timestamp))
    }

    /// Whether patient data may be shown now: refused with [`ClientError::LeaseExpired`] once
    /// the device has been out of sync longer than its offline lease (a lost phone stops
    /// showing what it holds; what it wrote is still uploaded when it gets signal), and with
    /// [`ClientError::Wiped`] once the server revoked the device.
    pub fn check_lease(&self, now: Timestamp) -> Result<()> {
        if let Some(why) = self.lock().wiped.clone() {
            return Err(ClientError::Wiped(why));
        }
        let lease = *self.lease.lock().unwrap_or_else(|p| p.into_inner());
        let Some(lease) = lease else {
            return Ok(());
        };
        let last = self.last_in_sync()?;
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        match last {
            Some(t) if now.0.saturating_sub(t.0) <= lease_ms => Ok(()),
            // Never in sync: nothing was received, so nothing is there to hide.
            None => Ok(()),
            Some(t) => Err(ClientError::LeaseExpired {
                last_contact_ms: Some(t.0),
            }),
        }
    }

    /// Sets the offline lease (`None`: none) from now on; the default is
    /// [`DEFAULT_OFFLINE_LEASE`].
    pub fn set_offline_lease(&self, lease: Option<Duration>) {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = lease;
    }

    /// The offline lease in force.
    pub fn offline_lease(&self) -> Option<Duration> {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the server revoked this device and its data was erased.
    pub fn is_wiped(&self) -> bool {
        self.lock().wiped.is_some()
    }

    /// Erases the device after the server revoked it: closes the store (an empty in-memory one
    /// takes its place, so later calls see nothing), deletes the store files and
    /// `device.json` (see [`credential::wipe`]) and reports [`Status::Wiped`]. Pending changes
    /// are lost with the rest, by design: a revoked phone is presumed lost or stolen.
    fn erase(&self, cause: &ClientError) -> ClientError {
        let why = cause.to_string();
        let at = self.now();
        {
            let mut inner = self.lock();
            match SqliteStore::open(":memory:") {
                Ok(empty) => inner.repo = Repo::new(empty),
                Err(e) => tracing::error!(error = %e, "cannot open an empty store"),
            }
            inner.session = DeviceSession::new(DeviceConfig::default());
            inner.known_pending.clear();
            inner.wiped = Some(why.clone());
        }
        if let Err(e) = credential::wipe(&self.home, at.0, &why) {
            tracing::error!(error = %e, "erasing the revoked device failed");
        }
        self.set_status(Status::Wiped { at });
        ClientError::Wiped(why)
    }

    /// A device enrolled with the leaf certificate pinned moves to pinning its key once a
    /// connection passed the old pin.
    fn upgrade_pin(&self) {
        if !matches!(self.config.pin, ServerPin::Certificate { .. }) {
            return;
        }
        let key = self.observer.lock().ok().and_then(|o| o.key.clone());
        if let Some(sha256) = key {
            let mut config = self.config.clone();
            config.pin = ServerPin::Spki { sha256 };
            match config.save(&self.home) {
                Ok(()) => tracing::info!("the server's key is pinned instead of its certificate"),
                Err(e) => tracing::warn!(error = %e, "cannot rewrite device.json"),
            }
        }
    }

    /// The error of a failed connection, told apart: a certificate refused because it is not
    /// the pinned one is [`ClientError::ServerKeyMismatch`].
    pub(crate) fn connect_error(
        observer: &Observer,
        addr: &ServerAddr,
        pin: &str,
        e: ClientError,
    ) -> ClientError {
        let observed = observer.lock().map(|o| o.clone()).unwrap_or_default();
        if observed.mismatch && matches!(e, ClientError::Connect { .. }) {
            ClientError::ServerKeyMismatch {
                addr: addr.authority(),
                seen: observed.key.unwrap_or_else(|| "unreadable".into()),
                pinned: pin.to_owned(),
            }
        } else {
            e
        }
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Status updates, for the app's status line.
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// What the sync does as it happens: documents updated by others, conflicts and flags
    /// raised, refusals, withdrawn access. A subscriber that falls more than 1,024 events
    /// behind is told it lagged (and can re-read the documents).
    pub fn events(&self) -> broadcast::Receiver<DeviceEvent> {
        self.events.subscribe()
    }

    /// The offline status, with the clock's offset if it is off.
    fn offline(&self) -> Status {
        Status::Offline {
            clock_off_by_ms: self.clock_off_by(),
        }
    }

    fn clock_off_by(&self) -> Option<i64> {
        *self.clock_off.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_status(&self, status: Status) {
        self.status.send_if_modified(|s| {
            // An erased device stays so.
            if *s == status || matches!(s, Status::Wiped { .. }) {
                false
            } else {
                *s = status;
                true
            }
        });
    }

    /// Connects, uploads what is pending, stores what the server has for this device, and
    /// disconnects once caught up with nothing in flight and the connection quiet for
    /// [`SyncOptions::quiet_for`].
    pub async fn sync_once(&self) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let result = self
            .connection(false, &mut report, &mut std::future::pending::<()>())
            .await;
        report.pending = self.pending_count()?;
        match result {
            Ok(_) => {
                self.set_status(self.offline());
                Ok(report)
            }
            Err(e) => {
                self.set_status(Status::Error {
                    reason: e.to_string(),
                });
                Err(e)
            }
        }
    }

    /// Stays connected until `shutdown` completes: uploads local changes as soon as they are
    /// saved (through [`Device::change`], or by another process into the same store), stores
    /// what arrives, and reconnects with jittered exponential backoff after a failure. Returns
    /// early only on a permanent error (the credential refused, the device revoked). Follow it
    /// with [`Device::subscribe`] (status) and [`Device::events`]; the report it returns adds
    /// up all its connections.
    pub async fn watch(&self, shutdown: impl Future<Output = ()>) -> Result<SyncReport> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut report = SyncReport::default();
        let mut failures: u32 = 0;
        loop {
            let before = report.clone();
            let result = self.connection(true, &mut report, &mut shutdown).await;
            match result {
                Ok(End::Shutdown) => {
                    self.set_status(self.offline());
                    report.pending = self.pending_count()?;
                    return Ok(report);
                }
                Ok(End::Quiet) => failures = 0,
                Err(e) if e.is_permanent() => {
                    tracing::error!(error = %e, "sync stopped");
                    self.set_status(Status::Error {
                        reason: e.to_string(),
                    });
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sync connection failed; will retry");
                    self.set_status(Status::Error {
                        reason: e.to_string(),
                    });
                    // A connection that got in sync before it failed starts the backoff over.
                    if report.in_sync_at != before.in_sync_at {
                        failures = 0;
                    }
                    let delay = backoff(
                        failures,
                        self.options.backoff_min,
                        self.options.backoff_max,
                        &mut rand::rng(),
                    );
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = &mut shutdown => {
                            self.set_status(self.offline());
                            report.pending = self.pending_count()?;
                            return Ok(report);
                        }
                    }
                }
            }
        }
    }

    async fn open_ws(&self) -> Result<Ws> {
        let url = format!("wss://{}/v1/sync", self.addr.authority());
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::BadUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let token = HeaderValue::from_str(&format!(
            "Bearer {}.{}",
            self.config.device, self.credential.secret
        ))
        .map_err(|_| ClientError::ConfigDamaged {
            path: Enrollment::path(&self.home),
            detail: "the device secret is not a valid header value".into(),
        })?;
        request.headers_mut().insert(header::AUTHORIZATION, token);
        // Registers the signing key of a device enrolled before signed changes; the server
        // never replaces a registered one.
        if let Ok(Some(key)) = self.credential.device_key() {
            if let Ok(value) = HeaderValue::from_str(&key.public().to_hex()) {
                request.headers_mut().insert(SIGNING_KEY_HEADER, value);
            }
        }
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES + 1024))
            .max_frame_size(Some(MAX_MESSAGE_BYTES + 1024));
        let connect = async {
            let tcp: Box<dyn Transport> = match &self.dialer {
                Some(dial) => dial().await.map_err(|e| ClientError::Connect {
                    addr: self.addr.authority(),
                    detail: e.to_string(),
                })?,
                None => Box::new(http::connect_tcp(&self.addr).await?),
            };
            tokio_tungstenite::client_async_tls_with_config(
                request,
                tcp,
                Some(ws_config),
                Some(tokio_tungstenite::Connector::Rustls(self.tls.clone())),
            )
            .await
            .map_err(|e| match e {
                tungstenite::Error::Http(response) => {
                    let status = response.status().as_u16();
                    if status == 401 {
                        return ClientError::Unauthorized;
                    }
                    let message = response
                        .body()
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(b).chars().take(200).collect())
                        .unwrap_or_default();
                    ClientError::Http { status, message }
                }
                other => ClientError::Connect {
                    addr: self.addr.authority(),
                    detail: other.to_string(),
                },
            })
        };
        let (ws, _) = tokio::time::timeout(self.options.connect_timeout, connect)
            .await
            .map_err(|_| ClientError::Timeout("connecting to the server"))?
            .map_err(|e| {
                Self::connect_error(&self.observer, &self.addr, &self.config.pin.describe(), e)
            })?;
        self.upgrade_pin();
        Ok(ws)
    }

    /// One connection. `watch`: stay until `shutdown`; otherwise until quiet. A device the
    /// server says is revoked (it closes with `Revoked`, or refuses the credential) is erased.
    async fn connection<F: Future<Output = ()> + Unpin>(
        &self,
        watch: bool,
        report: &mut SyncReport,
        shutdown: &mut F,
    ) -> Result<End> {
        if let Some(why) = self.lock().wiped.clone() {
            return Err(ClientError::Wiped(why));
        }
        match self.connect_and_drive(watch, report, shutdown).await {
            Err(
                e @ (ClientError::Unauthorized
                | ClientError::Closed {
                    reason: CloseReason::Revoked,
                    ..
                }),
            ) => Err(self.erase(&e)),
            other => other,
        }
    }

    async fn connect_and_drive<F: Future<Output = ()> + Unpin>(
        &self,
        watch: bool,
        report: &mut SyncReport,
        shutdown: &mut F,
    ) -> Result<End> {
        self.set_status(Status::Connecting);
        let mut ws = tokio::select! {
            ws = self.open_ws() => ws?,
            _ = &mut *shutdown, if watch => return Ok(End::Shutdown),
        };
        tracing::debug!(server = %self.addr.authority(), "sync connected");
        self.set_status(Status::Syncing {
            received: 0,
            remaining: 0,
        });
        let result = self.drive(&mut ws, watch, report, shutdown).await;
        self.lock().session.disconnected();
        // Say goodbye politely; the outcome is already decided and durable.
        if ws.close(None).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
        }
        result
    }

    async fn drive<F: Future<Output = ()> + Unpin>(
        &self,
        ws: &mut Ws,
        watch: bool,
        report: &mut SyncReport,
        shutdown: &mut F,
    ) -> Result<End> {
        let (mut out, mut events) = {
            let mut inner = self.lock();
            let inner = &mut *inner;
            inner.pick_up_external_changes()?;
            inner.session.connect(&mut inner.repo, self.now())?;
            inner.drain()
        };
        let mut ticks = tokio::time::interval(self.options.poll_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = tokio::time::Instant::now();
        let mut pinged = false;
        let mut was_quiet = false;
        loop {
            for bytes in out.drain(..) {
                ws.send(Message::Binary(bytes.into()))
                    .await
                    .map_err(|e| ClientError::Transport(e.to_string()))?;
            }
            for event in events.drain(..) {
                report.absorb(&event);
                if let DeviceEvent::ClockChecked { offset_ms, .. } = event {
                    *self.clock_off.lock().unwrap_or_else(|p| p.into_inner()) =
                        off_by(Some(offset_ms));
                }
                // Nobody listening is fine.
                let _ = self.events.send(event.clone());
                match event {
                    DeviceEvent::Closed { reason, detail } => {
                        return Err(ClientError::Closed { reason, detail });
                    }
                    DeviceEvent::Progress {
                        received,
                        remaining,
                    } if remaining > 0 => {
                        self.set_status(Status::Syncing {
                            received,
                            remaining,
                        });
                    }
                    _ => {}
                }
            }
            let (caught_up, in_flight) = {
                let inner = self.lock();
                (
                    inner.session.is_caught_up(),
                    inner.session.uploads_in_flight(),
                )
            };
            let quiet = caught_up && in_flight == 0;
            if quiet && !was_quiet {
                let at = self.now();
                {
                    let mut inner = self.lock();
                    let repo = &mut inner.repo;
                    repo.store_mut()
                        .set_meta(LAST_IN_SYNC_KEY, at.0.to_string().as_bytes())?;
                    // Every document with nothing waiting for upload is in sync as of now.
                    let pending: BTreeSet<DocumentId> =
                        repo.pending()?.into_iter().map(|(d, _)| d).collect();
                    let mut times: BTreeMap<String, i64> = repo
                        .store()
                        .meta(DOC_IN_SYNC_KEY)?
                        .and_then(|b| serde_json::from_slice(&b).ok())
                        .unwrap_or_default();
                    let held = repo.document_ids()?;
                    let held_names: BTreeSet<String> = held.iter().map(|d| d.to_string()).collect();
                    times.retain(|d, _| held_names.contains(d));
                    for doc in held.iter().filter(|d| !pending.contains(*d)) {
                        times.insert(doc.to_string(), at.0);
                    }
                    let bytes = serde_json::to_vec(&times).unwrap_or_default();
                    repo.store_mut().set_meta(DOC_IN_SYNC_KEY, &bytes)?;
                }
                report.in_sync_at = Some(at);
                self.set_status(Status::InSync {
                    at,
                    clock_off_by_ms: self.clock_off_by(),
                });
            } else if !quiet && was_quiet {
                self.set_status(Status::Syncing {
                    received: report.received,
                    remaining: 0,
                });
            }
            was_quiet = quiet;

            tokio::select! {
                msg = ws.next() => {
                    last_heard = tokio::time::Instant::now();
                    pinged = false;
                    match msg {
                        Some(Ok(Message::Binary(bytes))) => {
                            let mut inner = self.lock();
                            let inner = &mut *inner;
                            inner.session.handle_bytes(&mut inner.repo, &bytes, self.now());
                            (out, events) = inner.drain();
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let detail = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                            let mut inner = self.lock();
                            (_, events) = inner.drain();
                            drop(inner);
                            for e in &events {
                                report.absorb(e);
                                if let DeviceEvent::Closed { reason, detail } = e {
                                    return Err(ClientError::Closed { reason: *reason, detail: detail.clone() });
                                }
                            }
                            return Err(ClientError::Transport(format!("the server closed the connection {detail}")));
                        }
                        Some(Ok(Message::Text(_))) => {
                            return Err(ClientError::Closed {
                                reason: CloseReason::Malformed,
                                detail: "the server sent a text frame".into(),
                            });
                        }
                        Some(Ok(_)) => {} // ping, pong, raw frame
                        Some(Err(e)) => return Err(ClientError::Transport(e.to_string())),
                        None => return Err(ClientError::Transport("the connection was cut".into())),
                    }
                }
                _ = ticks.tick() => {
                    {
                        let mut inner = self.lock();
                        let inner = &mut *inner;
                        inner.session.tick(self.now());
                        if watch {
                            inner.pick_up_external_changes()?;
                        }
                        (out, events) = inner.drain();
                    }
                    let idle = last_heard.elapsed();
                    if watch && idle >= self.options.ping_after * 2 && pinged {
                        return Err(ClientError::Timeout("no answer from the server to a ping"));
                    }
                    if watch && idle >= self.options.ping_after && !pinged {
                        ws.send(Message::Ping(Vec::new().into()))
                            .await
                            .map_err(|e| ClientError::Transport(e.to_string()))?;
                        pinged = true;
                    }
                }
                _ = self.local.notified(), if watch => {
                    let mut inner = self.lock();
                    let inner = &mut *inner;
                    inner.session.local_change(&mut inner.repo)?;
                    (out, events) = inner.drain();
                }
                _ = &mut *shutdown, if watch => return Ok(End::Shutdown),
                _ = tokio::time::sleep(self.options.quiet_for), if quiet && !watch => {
                    let mut inner = self.lock();
                    // Idle upkeep: compact documents that are due.
                    if let Err(e) = inner.repo.maintain(16) {
                        tracing::warn!(error = %e, "compaction failed");
                    }
                    return Ok(End::Quiet);
                }
            }
        }
    }
}

/// The delay before reconnection attempt `failures` (0-based): exponential from `min`, capped
/// at `max`, with "equal jitter" (half fixed, half random) so devices do not reconnect in step.
pub fn backoff(failures: u32, min: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let exp = min
        .checked_mul(1u32 << failures.min(20))
        .unwrap_or(max)
        .min(max);
    let half = exp / 2;
    let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(rng.random_range(0..=jitter_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let mut rng = rand::rng();
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        for failures in 0..40 {
            let d = backoff(failures, min, max, &mut rng);
            let exp = (min * 2u32.pow(failures.min(20))).min(max);
            assert!(d >= exp / 2 && d <= exp, "{failures}: {d:?}");
        }
    }
}
