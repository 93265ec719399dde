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
/// The header in which the device says how many local changes it has waiting for upload when
/// it connects (the server's `WAITING_HEADER`; shown on the coordinator's dashboard).
pub const WAITING_HEADER: &str = "x-nara-waiting";
use sync_core::repo::{Repo, Saved};
use sync_core::store::{EncryptionKey, SqliteStore, Store};
use sync_core::{Author, ChangeHash, DocumentId, ModelError, PatientId, Timestamp};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, broadcast};
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

mod connection;
mod in_sync;
mod report;
mod round;
mod status;
mod upgrade;

pub use connection::backoff;
pub use report::*;
pub use round::{PatientRoundStatus, ServerRound, StaffMember, StaffNames};
use status::StatusCell;
pub use status::StatusChanges;

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
            self.repo = device_repo(open_store(&self.path, self.key.as_ref())?);
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
    /// The last connection with early frames failed before the upgrade's answer was read
    /// (a refusal lost to the server closing on the frames, or a path that does not pass
    /// them): the next one waits for the answer first.
    wait_for_upgrade: std::sync::atomic::AtomicBool,
    inner: Mutex<Inner>,
    local: Notify,
    status: StatusCell,
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

type Ws = tokio_tungstenite::WebSocketStream<
    upgrade::Upgrading<tokio_rustls::client::TlsStream<Box<dyn Transport>>>,
>;

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
        let repo = device_repo(store);
        let known_pending = repo.pending()?.into_iter().collect();
        let mut session = DeviceSession::new(DeviceConfig {
            priority: options.priority.clone(),
            stall_after_ms: options.stall_after_ms,
            tell_clock: true,
            compress: options.compress,
            upload_bytes: options.upload_bytes,
        });
        session.set_signer(Some(Signer {
            device: config.device.clone(),
            key,
        }));
        let clock_off = off_by(DeviceSession::clock_offset(&repo)?);
        let status = StatusCell::new(Status::Offline {
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
            wait_for_upgrade: std::sync::atomic::AtomicBool::new(false),
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

    /// Ed25519 checks this device made of the signatures relayed to it (since it was opened).
    pub fn signature_checks(&self) -> u64 {
        self.lock().session.signature_checks()
    }

    /// The server said (at enrollment) whether it takes uploads signed once over their root.
    pub(crate) fn server_takes_root_signatures(&self, takes: bool) -> Result<()> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner
            .session
            .server_takes_root_signatures(&mut inner.repo, takes)?;
        Ok(())
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

    /// Local changes to several documents saved together (one change each, one store
    /// transaction: all or none), as this device's author; wakes a running [`Device::watch`].
    pub fn change_together(
        &self,
        docs: &[DocumentId],
        at: Timestamp,
        mut f: impl FnMut(&DocumentId, &mut Edit<'_>) -> Result<(), ModelError>,
    ) -> Result<Vec<Option<ChangeHash>>> {
        let author = self.author();
        let saved = {
            let mut inner = self.lock();
            let clock_offset_ms = DeviceSession::clock_offset(&inner.repo)?;
            let saved = inner.repo.change_together(docs, &author, at, |doc, e| {
                e.set_context(WriteContext {
                    clock_offset_ms,
                    after: Vec::new(),
                });
                f(doc, e)
            })?;
            for (doc, hash) in docs.iter().zip(&saved) {
                if let Some(hash) = hash {
                    inner.known_pending.insert((doc.clone(), *hash));
                }
            }
            saved
        };
        if saved.iter().any(Option::is_some) {
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
        Ok(in_sync::last(self.lock().repo.store())?)
    }

    /// When `doc` was last in sync with the server (nothing of it waiting for upload, everything
    /// the server had received), or `None` if it never was.
    pub fn last_in_sync_of(&self, doc: &DocumentId) -> Result<Option<Timestamp>> {
        Ok(in_sync::of(self.lock().repo.store(), doc)?)
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
                Ok(empty) => inner.repo = device_repo(empty),
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

    /// What the sync does as it happens: documents updated by others, conflicts and flags
    /// raised, refusals, withdrawn access. A subscriber that falls more than 1,024 events
    /// behind is told it lagged (and can re-read the documents).
    pub fn events(&self) -> broadcast::Receiver<DeviceEvent> {
        self.events.subscribe()
    }
}

/// The device's repo: it sends no one else's changes on, so it keeps none of them decoded
/// ([`Repo::with_recent_changes`]).
fn device_repo(store: SqliteStore) -> Repo<SqliteStore> {
    Repo::new(store).with_recent_changes(0)
}
