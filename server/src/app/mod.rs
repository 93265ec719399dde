//! The HTTP application: routes, shared state, and the sync WebSocket, which is only a shell
//! that moves bytes between a socket and `sync_core::protocol::ServerSession`.
//!
//! - [`policy`]: who may read and write whom (`CarePolicy`);
//! - [`limits`]: the service's limits, the token bucket and the metrics counters (`/metrics`);
//! - [`enroll`]: the `/v1/enroll` route;
//! - [`fanout`]: learning of feed entries other nodes stored (the poll, and the listener's hint);
//! - [`sync`]: the `/v1/sync` WebSocket shell, and [`step_audit`], the audit records (and
//!   access rows) of a step's session events;
//! - [`commit`]: the group-commit workers that run sync steps, one per sync lane, [`lanes`],
//!   which lane takes a waiting step, and [`parked`], the sessions waiting connections leave
//!   with them, so that a group that stores a change also delivers it;
//! - [`admin`]: the admin API;
//! - [`logins`]: failed logins per client address (limited, audited once per run);
//! - [`audit_heads`]: the signed audit head, exported now and then and at shutdown.
//!
//! The routes come in two parts: the device routes ([`device_router`]) and the admin API
//! ([`admin_router`]). [`serve`] serves both on one listener; [`serve_with_admin`] can serve the
//! admin API on a listener of its own instead (then the device listener answers 404 for it).

pub(crate) mod admin;
mod audit_heads;
mod commit;
mod enroll;
mod fanout;
mod lanes;
mod limits;
pub(crate) mod logins;
mod names;
mod parked;
mod policy;
pub(crate) mod round;
mod step_audit;
mod sync;
mod waiting;

use admin::{
    admin_assign, admin_audit_export, admin_audit_verify, admin_devices, admin_enroll,
    admin_login_code, admin_revoke, admin_unassign,
};
use enroll::enroll;
use limits::Bucket;
pub use limits::{FEED_POLL, Limits, Metrics};
pub use policy::{CarePolicy, Ended, WRITE_GRACE_MS};
use sync::sync_ws;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use sync_core::DeviceId;
use sync_core::repo::Repo;
use sync_core::store::Store;
use tokio::sync::watch;

use crate::audit::{AuditEntry, AuditError, AuditLog};
use crate::directory::Directory;
use crate::offload::offload;
use crate::store::{FeedWatcher, HeadReader, ServerStore};
use crate::tls::TlsListener;

/// The server's clock, in one place: protocol and model never read it.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The server's document repository, on either backend (`crate::store`).
pub(crate) type ServerRepo = Repo<Box<dyn ServerStore>>;

/// A repository (its own store connection and cached documents) with the access policy the
/// steps run under: a copy of [`Inner::policy`], taken again when that changed.
struct Hub {
    repo: ServerRepo,
    policy: CarePolicy,
    /// [`Versioned::version`] of the policy copied.
    policy_version: u64,
}

/// The access policy as the directory last gave it, and how often it changed.
struct Versioned {
    version: u64,
    policy: CarePolicy,
}

struct Inner {
    /// One hub per sync lane, at least one: each lane's group-commit worker (`commit.rs`) runs
    /// its steps on it. What is not a sync step (names from the directory, the web views, the
    /// round's status) takes a hub no lane is on ([`AppState::free_hub`]); compaction takes the
    /// first. More lanes (PostgreSQL
    /// only, [`AppState::new_lanes`]), each on its own connection as nodes are, keep a device
    /// whose step waits (for a lock in the database, a long upload) from holding up the others.
    hubs: Vec<Mutex<Hub>>,
    /// The sync steps waiting for a lane (`lanes.rs`).
    lanes: Arc<lanes::Lanes>,
    /// The sessions of this node's waiting connections (`parked.rs`).
    parking: parked::Parking,
    /// The access policy every lane's steps run under: a refresh changes it here, and each lane
    /// copies it before its next group (so a lane whose step waits in the database does not
    /// hold up a revocation reaching the others).
    policy: Mutex<Versioned>,
    /// The directory's names are still to be written to people's headers (a refresh told the
    /// sessions of a change of access, then failed to write them): the next refresh tries again.
    names_pending: AtomicBool,
    directory: Arc<dyn Directory>,
    audit: Arc<dyn AuditLog>,
    /// The feed head after the last stored upload: sessions push what is new.
    feed: watch::Sender<u64>,
    /// The directory's generation: sessions re-check access and revocation.
    access: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    /// The connection currently serving each device (a newer one replaces it).
    live: Mutex<BTreeMap<DeviceId, u64>>,
    /// Changes uploaded (stored or refused) on each connection whose device reported what it
    /// had waiting (`x-nara-waiting`), by connection: subtracted from the report at its end.
    uploaded: Mutex<BTreeMap<u64, u64>>,
    next_conn: AtomicU64,
    ready: AtomicBool,
    admin_token: String,
    limits: Limits,
    /// Enrollment attempts, across the server; and whether the last one was refused for it.
    enroll_limit: Mutex<(Bucket, bool)>,
    /// Failed sync logins per client address.
    login_failures: Mutex<logins::LoginFailures>,
    /// Failed admin logins per client address (kept apart from the devices').
    admin_login_failures: Mutex<logins::LoginFailures>,
    /// Read-log entries per device: a token bucket, and whether the last ones were refused.
    read_rates: Mutex<BTreeMap<DeviceId, (Bucket, bool)>>,
    pub metrics: Metrics,
    /// The web views under `/app/`, once enabled ([`AppState::enable_web`]).
    web: OnceLock<Arc<crate::web::Web>>,
    /// The feed head's own reader, once set ([`AppState::read_head_with`]).
    head_reader: OnceLock<Mutex<Box<dyn HeadReader>>>,
    /// What tells this node at once that other nodes moved the feed, once set
    /// ([`AppState::wake_with`]); taken when serving starts.
    feed_watcher: Mutex<Option<Box<dyn FeedWatcher>>>,
    /// A `/readyz` read of the database is under way (another one answers 503 at once).
    probing: AtomicBool,
    /// The signed audit head's export, once set ([`AppState::export_audit_heads`]).
    audit_heads: OnceLock<Mutex<crate::audit::heads::Exporter>>,
}

impl Drop for Inner {
    /// The lanes' workers end once the steps still queued (none: each holds the state) ran.
    fn drop(&mut self) {
        self.lanes.close();
    }
}

/// Everything the routes share.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves data that is still consistent on disk; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AppState {
    pub fn new(
        store: impl ServerStore + 'static,
        directory: Arc<dyn Directory>,
        audit: Arc<dyn AuditLog>,
        admin_token: String,
        limits: Limits,
    ) -> anyhow::Result<Self> {
        // Reads and writes the store and the directory: off the async threads.
        offload(|| Self::open(vec![Box::new(store)], directory, audit, admin_token, limits))
    }

    /// Like [`AppState::new`], with one sync lane per store in `stores` (at least one): each
    /// its own connection to one database, as several nodes would be. Only for a store whose
    /// writers may run side by side (PostgreSQL: `ServerStore::conflicts_pass`); SQLite has one
    /// writer, and more connections to it would only wait for each other.
    pub fn new_lanes(
        stores: Vec<Box<dyn ServerStore>>,
        directory: Arc<dyn Directory>,
        audit: Arc<dyn AuditLog>,
        admin_token: String,
        limits: Limits,
    ) -> anyhow::Result<Self> {
        if stores.is_empty() {
            anyhow::bail!("no store for the sync lanes");
        }
        if stores.len() > 1 && stores.iter().any(|s| !s.conflicts_pass()) {
            anyhow::bail!(
                "{} sync lanes on a store with one writer (SQLite): give one",
                stores.len()
            );
        }
        offload(|| Self::open(stores, directory, audit, admin_token, limits))
    }

    fn open(
        stores: Vec<Box<dyn ServerStore>>,
        directory: Arc<dyn Directory>,
        audit: Arc<dyn AuditLog>,
        admin_token: String,
        limits: Limits,
    ) -> anyhow::Result<Self> {
        let mut stores = stores.into_iter();
        let mut store = stores.next().context("no store for the sync lanes")?;
        policy::migrate_snapshot(&mut store, directory.as_ref(), now_ms())?;
        let mut policy = CarePolicy {
            keys: Some(policy::KeyDirectory(directory.clone())),
            ..CarePolicy::default()
        };
        policy.reload(directory.as_ref(), now_ms())?;
        store
            .prepare()
            .context("creating the audit tables in the document store")?;
        let generation = directory.generation()?;
        let mut repo = Repo::new(store).with_max_loaded(limits.max_loaded_documents);
        let names = names::write_names(&mut repo, &directory.patients()?, now_ms())?;
        let head = repo.store().feed_head()?;
        audit_names(audit.as_ref(), &names);
        let mut hubs = vec![Hub {
            repo,
            policy: policy.clone(),
            policy_version: 0,
        }];
        for store in stores {
            let repo = Repo::new(store).with_max_loaded(limits.max_loaded_documents);
            hubs.push(Hub {
                repo,
                policy: policy.clone(),
                policy_version: 0,
            });
        }
        // The compression dictionaries, ready before the first frame (see `prepare`).
        sync_core::protocol::compress::prepare();
        let lanes = Arc::new(lanes::Lanes::new(hubs.len()));
        for lane in 0..lanes.count() {
            if let Err(e) = commit::start(lane, lanes.clone()) {
                lanes.close();
                return Err(e).context("starting a sync commit worker");
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                hubs: hubs.into_iter().map(Mutex::new).collect(),
                lanes,
                parking: parked::Parking::default(),
                policy: Mutex::new(Versioned { version: 0, policy }),
                names_pending: AtomicBool::new(false),
                directory,
                audit,
                feed: watch::channel(head).0,
                access: watch::channel(generation).0,
                shutdown: watch::channel(false).0,
                live: Mutex::new(BTreeMap::new()),
                uploaded: Mutex::new(BTreeMap::new()),
                next_conn: AtomicU64::new(1),
                ready: AtomicBool::new(true),
                admin_token,
                enroll_limit: Mutex::new((Bucket::full(limits.enroll_burst), false)),
                login_failures: Mutex::new(logins::LoginFailures::new(
                    "sync logins with no valid device credential",
                )),
                admin_login_failures: Mutex::new(logins::LoginFailures::new(
                    "admin logins with no valid admin token",
                )),
                read_rates: Mutex::new(BTreeMap::new()),
                limits,
                metrics: Metrics::default(),
                web: OnceLock::new(),
                head_reader: OnceLock::new(),
                feed_watcher: Mutex::new(None),
                probing: AtomicBool::new(false),
                audit_heads: OnceLock::new(),
            }),
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Sync sessions parked now, their connections waiting (`parked.rs`).
    pub fn parked_sessions(&self) -> usize {
        self.inner.parking.parked()
    }

    /// The first lane's hub: compaction and the test hook [`AppState::with_store_held`] work
    /// on it.
    fn hub(&self) -> MutexGuard<'_, Hub> {
        lock(&self.inner.hubs[0])
    }

    /// A hub no lane is working on, for what is not a sync step (names from the directory, an
    /// unassignment's feed head, the web views, the round's status): a lane whose step waits
    /// in the database must not hold up an admin's answer or a nurse's page. With one lane
    /// (SQLite) that lane's hub. If every lane is busy, tries again every 2 ms (lanes free up
    /// between groups) rather than queueing behind one lane, which may be the stuck one.
    fn free_hub(&self) -> MutexGuard<'_, Hub> {
        let hubs = &self.inner.hubs;
        if hubs.len() == 1 {
            return lock(&hubs[0]);
        }
        loop {
            for hub in hubs {
                match hub.try_lock() {
                    Ok(guard) => return guard,
                    Err(std::sync::TryLockError::Poisoned(e)) => return e.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => {}
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Serves the web views (`/app/`) beside the device routes, from now on (call it before
    /// [`serve`]). Returns `false` if they were enabled already.
    pub fn enable_web(&self, web: crate::web::Web) -> bool {
        self.inner.web.set(Arc::new(web)).is_ok()
    }

    /// Reads the feed's head with `reader` (a connection of its own: PostgreSQL's) from now
    /// on, for fan-out across nodes and for `/readyz`, which then answers 503 while the
    /// database does not. Without it, the head is read from the server's store. Returns `false`
    /// if one was set already.
    pub fn read_head_with(&self, reader: Box<dyn HeadReader>) -> bool {
        self.inner.head_reader.set(Mutex::new(reader)).is_ok()
    }

    /// Learns from `watcher` (PostgreSQL's listener) when other nodes moved the feed, on a
    /// thread of its own while serving: their changes reach this node's devices without waiting
    /// for the poll of the head ([`Limits::feed_poll`]), which stays as the fallback. Call it
    /// before [`serve`]. Returns `false` if one was set already.
    pub fn wake_with(&self, watcher: Box<dyn FeedWatcher>) -> bool {
        let mut slot = lock(&self.inner.feed_watcher);
        if slot.is_some() {
            return false;
        }
        *slot = Some(watcher);
        true
    }

    /// The feed's head as the database has it now (blocking: off the async threads).
    fn read_head(&self) -> Result<u64, sync_core::StoreError> {
        match self.inner.head_reader.get() {
            Some(reader) => lock(reader).feed_head(),
            None => self.free_hub().repo.store().feed_head(),
        }
    }

    /// Wakes every session if the feed's head moved past what they were last told (another
    /// node or process stored changes): each pushes its device what is new.
    fn publish_head(&self, head: u64) {
        self.inner.feed.send_if_modified(|known| {
            let moved = head > *known;
            if moved {
                *known = head;
            }
            moved
        });
    }

    /// The web views, if enabled.
    pub fn web(&self) -> Option<&Arc<crate::web::Web>> {
        self.inner.web.get()
    }

    pub(crate) fn directory(&self) -> &Arc<dyn Directory> {
        &self.inner.directory
    }

    pub(crate) fn audit_log(&self) -> &Arc<dyn AuditLog> {
        &self.inner.audit
    }

    /// Appends one audit record, durably (see [`AppState::audit`]).
    pub(crate) fn audit_entry(&self, entry: AuditEntry) -> Result<(), AuditError> {
        self.audit(entry)
    }

    /// Makes a change in the server's store on behalf of a browser session, which writes as a
    /// device of its user (`author`): checked by the model's rules like any change, stored in
    /// the feed, and every sync session woken so that devices receive it like an upload. With
    /// `key` (the web device's, [`crate::web::device_key`]) the change is signed as a phone
    /// signs an upload, over the document's new head, and the signature kept with the change,
    /// in one transaction, as the server keeps a verified upload's: relayed to devices, so a
    /// restored server takes the change back from any phone.
    pub(crate) fn write_as<T>(
        &self,
        doc: &sync_core::DocumentId,
        author: &sync_core::Author,
        key: Option<&sync_core::signing::DeviceKey>,
        at: sync_core::Timestamp,
        f: impl FnOnce(&mut sync_core::model::Edit<'_>) -> Result<T, sync_core::ModelError>,
    ) -> Result<sync_core::repo::Saved<T>, sync_core::RepoError> {
        use sync_core::protocol::signatures::{self, StoredSignature};
        let (saved, head) = offload(|| {
            let mut hub = self.free_hub();
            let saved = hub.repo.grouped(|repo| {
                let saved = repo.change(doc, author, at, f)?;
                if let (Some(key), Some(change)) = (key, saved.change) {
                    let signature = key.sign_heads(&author.device, doc, &[change]);
                    let sig = StoredSignature {
                        signature,
                        key: key.public(),
                        anchor: 0,
                    };
                    signatures::keep_anchored(repo, sig)?;
                }
                Ok(saved)
            })?;
            Ok::<_, sync_core::RepoError>((saved, hub.repo.store().feed_head().unwrap_or(0)))
        })?;
        self.publish_head(head);
        Ok(saved)
    }

    /// When an assignment ending now ends: this server's time and its feed head, as
    /// [`Directory::unassign`] records them (the write grace admits what builds on no more).
    pub fn ended_now(&self) -> Result<Ended, sync_core::StoreError> {
        let head = offload(|| self.free_hub().repo.store().feed_head())?;
        Ok(Ended {
            at_ms: now_ms(),
            head,
        })
    }

    /// Runs `f` while holding the server's store, as a long sync step or compaction would: a
    /// hook for tests (sync steps that arrive meanwhile wait, then commit together).
    #[doc(hidden)]
    pub fn with_store_held<T>(&self, f: impl FnOnce() -> T) -> T {
        offload(|| {
            let _hub = self.hub();
            f()
        })
    }

    /// Runs `f` on the server's document repository (under its lock: keep it short).
    pub(crate) fn with_repo<T>(&self, f: impl FnOnce(&mut ServerRepo) -> T) -> T {
        offload(|| f(&mut self.free_hub().repo))
    }

    /// Re-reads the directory if it changed (admin commands may come from another process):
    /// refreshes access and wakes every session, which closes revoked devices.
    pub fn refresh(&self) -> anyhow::Result<()> {
        offload(|| self.refresh_here())
    }

    fn refresh_here(&self) -> anyhow::Result<()> {
        let generation = self.inner.directory.generation()?;
        let names_pending = &self.inner.names_pending;
        if generation == *self.inner.access.borrow() && !names_pending.load(Ordering::Acquire) {
            self.change_policy(|p| p.rules.now_ms = now_ms());
            return Ok(());
        }
        let access = self.inner.directory.access()?;
        let patients = self.inner.directory.patients()?;
        // The policy, then the sessions are told (each then checks its access, on whichever
        // lane is free), then the names, on a free lane's store: a revocation must not wait
        // for a step waiting in the database, nor the admin who asked for it.
        self.change_policy(|p| {
            p.rules.rows = access;
            p.rules.now_ms = now_ms();
        });
        self.inner.access.send_replace(generation);
        names_pending.store(true, Ordering::Release);
        let (names, head) = {
            let mut hub = self.free_hub();
            let names = names::write_names(&mut hub.repo, &patients, now_ms())?;
            (names, hub.repo.store().feed_head()?)
        };
        names_pending.store(false, Ordering::Release);
        audit_names(self.inner.audit.as_ref(), &names);
        if names.iter().any(|n| n.change.is_some()) {
            self.publish_head(head);
        }
        Ok(())
    }

    /// Changes the access policy; every lane takes the change before its next group.
    fn change_policy(&self, f: impl FnOnce(&mut CarePolicy)) {
        let mut shared = lock(&self.inner.policy);
        f(&mut shared.policy);
        shared.version += 1;
    }

    /// Brings `hub`'s copy of the access policy up to date (a lane, before a group).
    fn current_policy(&self, hub: &mut Hub) {
        let shared = lock(&self.inner.policy);
        if hub.policy_version != shared.version {
            hub.policy = shared.policy.clone();
            hub.policy_version = shared.version;
        }
    }

    /// Background upkeep: compaction of documents that are due.
    fn maintain(&self) {
        if let Err(e) = offload(|| self.hub().repo.maintain(8)) {
            tracing::error!(error = %e, "compaction failed");
        }
    }

    /// Appends one record, durably. The audit log is a legal requirement: a caller that gets
    /// an error must not go on with what it records (it answers an error instead).
    fn audit(&self, entry: AuditEntry) -> Result<(), AuditError> {
        self.inner.audit.append(entry).map(drop).inspect_err(|e| {
            tracing::error!(error = %e, "could not append to the audit log");
        })
    }
}

/// Audits the names written from the directory into people's headers (the `add-patient` that
/// gave them was audited before it acted).
fn audit_names(audit: &dyn AuditLog, names: &[names::NameWritten]) {
    for n in names.iter().filter(|n| n.change.is_some()) {
        let entry = AuditEntry::new(now_ms(), "directory", crate::audit::AuditAction::Accept)
            .patient(&n.patient)
            .document(n.document.to_string())
            .detail(format!(
                "the directory's name written to the header ({})",
                n.change.map(|h| h.to_string()).unwrap_or_default()
            ));
        if let Err(e) = audit.append(entry) {
            tracing::error!(error = %e, "could not audit a name written from the directory");
        }
    }
}

/// All the routes, device and admin, without a socket (tests can call them in process).
pub fn router(state: AppState) -> Router {
    device_router(state.clone()).merge(admin_router(state))
}

/// What devices (and probes) use: health, readiness, metrics, the OpenAPI document,
/// enrollment, the sync WebSocket and the round's status (`round.rs`).
pub fn device_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(limits::metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/enroll", post(enroll))
        .route("/v1/sync", get(sync_ws))
        .route("/v1/round", get(round::round_status))
        .with_state(state.clone())
        .merge(crate::web::router(state))
}

/// The admin API (`/v1/admin/...`, the admin token).
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/v1/admin/devices", get(admin_devices))
        .route("/v1/admin/devices/{id}/revoke", post(admin_revoke))
        .route(
            "/v1/admin/assignments",
            post(admin_assign).delete(admin_unassign),
        )
        .route("/v1/admin/enrollments", post(admin_enroll))
        .route("/v1/admin/login-codes", post(admin_login_code))
        .route("/v1/admin/audit/verify", get(admin_audit_verify))
        .route("/v1/admin/audit/export", get(admin_audit_export))
        .with_state(state)
}

/// Serves the device routes and the admin API on `listener` (see [`serve_with_admin`]).
pub async fn serve<L>(
    listener: L,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    for<'a> ClientAddr: axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    serve_with_admin(listener, None::<L>, state, shutdown).await
}

/// Serves the application on `listener` until `shutdown` completes, then closes every sync
/// session with a reason, lets them flush, and returns. With `admin`, the admin API is served
/// there and only there (the device listener answers 404 for it); without, on `listener`. A
/// background task polls the directory every second, so admin changes made by another process
/// reach live connections within a second.
pub async fn serve_with_admin<L, A>(
    listener: L,
    admin: Option<A>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    A: axum::serve::Listener<Addr = std::net::SocketAddr>,
    for<'a> ClientAddr: axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
    for<'a> ClientAddr: axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, A>>,
{
    let upkeep = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                // Storage work (the directory, compaction under the store's lock) runs off the
                // async threads: a long sync step holding the lock must not stall the runtime.
                let state = state.clone();
                let done = tokio::task::spawn_blocking(move || {
                    if let Err(e) = state.refresh() {
                        tracing::error!(error = %e, "reading the directory failed");
                    }
                    state.maintain();
                })
                .await;
                if let Err(e) = done {
                    tracing::error!(error = %e, "upkeep failed");
                }
            }
        })
    };
    let fanout = fanout::start(&state);
    let heads = audit_heads::spawn(&state);
    let final_heads = state.clone();
    let stop = state.inner.shutdown.clone();
    let ready = state.clone();
    let app = if admin.is_some() {
        device_router(state.clone())
    } else {
        router(state.clone())
    };
    let app = app.into_make_service_with_connect_info::<ClientAddr>();
    let devices = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        ready.inner.ready.store(false, Ordering::SeqCst);
        stop.send_replace(true);
    });
    let result = match admin {
        None => devices.await,
        Some(admin) => {
            let mut stopped = state.inner.shutdown.subscribe();
            let app = admin_router(state).into_make_service_with_connect_info::<ClientAddr>();
            let admin = axum::serve(admin, app).with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            });
            let (devices, admin) = tokio::join!(devices.into_future(), admin.into_future());
            devices.and(admin)
        }
    };
    upkeep.abort();
    fanout.stop();
    if let Some(heads) = heads {
        heads.abort();
    }
    audit_heads::at_shutdown(&final_heads).await;
    result
}

/// How long `/readyz` waits for the database to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// The client's address, as the listener saw it (failed logins are limited per address).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

impl<S> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener<S>>>
    for ClientAddr
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener<S>>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// 200 while serving; 503 when shutting down or, with a head reader (PostgreSQL), when the
/// database does not answer one read of the feed's head within [`READY_TIMEOUT`].
async fn readyz(State(state): State<AppState>) -> Response {
    if !state.inner.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    if state.inner.head_reader.get().is_some() {
        let unreachable = || (StatusCode::SERVICE_UNAVAILABLE, "database unreachable");
        // One read at a time: probes do not pile up behind a database that hangs.
        if state.inner.probing.swap(true, Ordering::SeqCst) {
            return unreachable().into_response();
        }
        let probe = state.clone();
        let read = tokio::task::spawn_blocking(move || {
            let head = probe.read_head();
            probe.inner.probing.store(false, Ordering::SeqCst);
            head
        });
        match tokio::time::timeout(READY_TIMEOUT, read).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "readiness: the database does not answer");
                return unreachable().into_response();
            }
            _ => return unreachable().into_response(),
        }
    }
    (StatusCode::OK, "ready").into_response()
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

/// A JSON error with a status; internal details are logged, never returned.
fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "request failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}
