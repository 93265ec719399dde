//! [`NaraDevice`]: the exported device object. Each method forwards to `nara-client` and
//! converts what comes back; nothing is decided here.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nara_client::care::{self, Clock};
use nara_client::{Device, now};
use sync_core::{PatientId, RecordId};
use tokio::runtime::Runtime;

use crate::error::NaraError;
use crate::handles::{EventListener, StatusListener, SubscriptionHandle, WatchHandle};
use crate::types::{
    FfiAdministered, FfiConflict, FfiEnrollment, FfiFlag, FfiGoalWritten, FfiObservationCode,
    FfiOrderInput, FfiOrderWritten, FfiOutcome, FfiOverview, FfiPatient, FfiQuarantined,
    FfiRecorded, FfiStatus, FfiSyncReport, FfiVisit, FfiVisitSaved, FfiWhatMatters, all, count,
    named,
};

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The runtime every device's network IO and subscriptions run on, started on first use.
fn runtime() -> Result<&'static Runtime, NaraError> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("nara-sync")
        .enable_all()
        .build()
        .map_err(|e| NaraError::Internal {
            detail: format!("cannot start the sync runtime: {e}"),
        })?;
    Ok(RUNTIME.get_or_init(|| rt))
}

pub(crate) fn patient(id: String) -> Result<PatientId, NaraError> {
    Ok(PatientId::new(id)?)
}

pub(crate) fn record(id: String) -> Result<RecordId, NaraError> {
    Ok(RecordId::new(id)?)
}

/// The time of an edit: now, and the app's local date (`YYYY-MM-DD`), which picks the month's
/// journal. The app passes the date because the platform knows the user's time zone.
pub(crate) fn clock(today: String) -> Result<Clock, NaraError> {
    Ok(Clock::new(now(), today)?)
}

/// An enrolled device: its store and credential in a home directory, and its
/// sync connection. Methods block; call them off the UI thread.
#[derive(Debug, uniffi::Object)]
pub struct NaraDevice {
    pub(crate) inner: Arc<Device>,
    pub(crate) runtime: &'static Runtime,
}

/// Device options with the store key, which must be 32 bytes.
fn options(store_key: Vec<u8>) -> Result<nara_client::SyncOptions, NaraError> {
    let key: [u8; 32] = store_key
        .try_into()
        .map_err(|k: Vec<u8>| NaraError::InvalidArgument {
            detail: format!("the store key must be 32 bytes, not {}", k.len()),
        })?;
    Ok(nara_client::SyncOptions {
        store_key: Some(sync_core::store::EncryptionKey(key)),
        ..nara_client::SyncOptions::default()
    })
}

#[uniffi::export]
impl NaraDevice {
    /// Enrolls a new device in `home` with the `enrollment` string an administrator gives
    /// (`nara:<code>@<host:port>#<key pin>`, often read from a QR code): the server is trusted
    /// by the pin of its key, which survives certificate renewals. Without a pin in the string,
    /// give the private CA's certificate (`ca_certificate_pem`), or set
    /// `insecure_trust_first_use` to accept the key seen now (only on a network you trust);
    /// otherwise enrollment is refused (`NaraError::ServerNotTrusted`). `store_key` (32 bytes,
    /// kept by the app in the platform keystore) encrypts the device's store, which also holds
    /// its credential, at rest: always, through these bindings. The offline lease is 72 hours
    /// (see [`NaraDevice::set_offline_lease_hours`]).
    #[uniffi::constructor]
    pub fn enroll(
        home: String,
        enrollment: String,
        store_key: Vec<u8>,
        ca_certificate_pem: Option<String>,
        insecure_trust_first_use: bool,
    ) -> Result<Arc<Self>, NaraError> {
        let runtime = runtime()?;
        let mut request = nara_client::EnrollRequest::from_link(&enrollment)?;
        request.ca_pem = ca_certificate_pem;
        request.insecure_trust_first_use = insecure_trust_first_use;
        let (device, _) = runtime.block_on(Device::enroll_with(
            Path::new(&home),
            &request,
            options(store_key)?,
        ))?;
        Ok(Arc::new(Self {
            inner: Arc::new(device),
            runtime,
        }))
    }

    /// Opens the device enrolled in `home`, its store decrypted with `store_key`. A wrong key
    /// is `NaraError::WrongKey`.
    #[uniffi::constructor]
    pub fn open(home: String, store_key: Vec<u8>) -> Result<Arc<Self>, NaraError> {
        let runtime = runtime()?;
        let device = Device::open_with(Path::new(&home), options(store_key)?)?;
        Ok(Arc::new(Self {
            inner: Arc::new(device),
            runtime,
        }))
    }

    /// Server, device, user and role of this device, and what the server is trusted by.
    pub fn enrollment(&self) -> FfiEnrollment {
        self.inner.enrollment().into()
    }

    /// Sets the offline lease: after this many hours without being in sync with the server,
    /// patient data is no longer shown (`NaraError::LeaseExpired`) until the device syncs.
    /// 72 by default; 0 turns the lease off. Not kept: set it after every open.
    pub fn set_offline_lease_hours(&self, hours: u32) {
        let lease = (hours > 0).then(|| Duration::from_secs(u64::from(hours) * 3600));
        self.inner.set_offline_lease(lease);
    }

    /// The offline lease in hours (0: none).
    pub fn offline_lease_hours(&self) -> u64 {
        self.inner
            .offline_lease()
            .map(|d| d.as_secs() / 3600)
            .unwrap_or(0)
    }

    /// Whether patient data may be shown now: `NaraError::LeaseExpired` once the lease ran
    /// out, `NaraError::Revoked` once the server revoked (and so erased) this device.
    pub fn check_lease(&self) -> Result<(), NaraError> {
        Ok(self.inner.check_lease(now())?)
    }

    /// Whether the server revoked this device and its data was erased.
    pub fn is_wiped(&self) -> bool {
        self.inner.is_wiped()
    }

    /// Connects, uploads what is pending, stores what the server has for this device, and
    /// returns once in sync and quiet.
    pub fn sync_now(&self) -> Result<FfiSyncReport, NaraError> {
        Ok(self.runtime.block_on(self.inner.sync_once())?.into())
    }

    /// Stays connected in the background (uploads soon after each local change, reconnects
    /// with backoff) until the handle is stopped or dropped.
    pub fn start_watch(&self) -> Arc<WatchHandle> {
        Arc::new(WatchHandle::spawn(self.runtime, self.inner.clone()))
    }

    pub fn status(&self) -> FfiStatus {
        self.inner.status().into()
    }

    /// Status changes, starting with the current status, until the handle is cancelled or
    /// dropped.
    pub fn subscribe(&self, listener: Box<dyn StatusListener>) -> Arc<SubscriptionHandle> {
        Arc::new(SubscriptionHandle::statuses(
            self.runtime,
            &self.inner,
            listener,
        ))
    }

    /// What the sync does from now on (documents updated, conflicts and flags raised, access
    /// withdrawn, ...), until the handle is cancelled or dropped.
    pub fn subscribe_events(&self, listener: Box<dyn EventListener>) -> Arc<SubscriptionHandle> {
        Arc::new(SubscriptionHandle::events(
            self.runtime,
            &self.inner,
            listener,
        ))
    }

    /// Local changes waiting for upload.
    pub fn pending_count(&self) -> Result<u64, NaraError> {
        Ok(count(self.inner.pending_count()?))
    }

    /// Local changes the server refused (kept locally, never resent).
    pub fn quarantined(&self) -> Result<Vec<FfiQuarantined>, NaraError> {
        Ok(self
            .inner
            .quarantined()?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// When this device was last in sync with the server (ms since the epoch).
    pub fn last_in_sync_ms(&self) -> Result<Option<i64>, NaraError> {
        Ok(self.inner.last_in_sync()?.map(|t| t.0))
    }

    /// This device's clock offset from the server's (ms to add to its time), as the server
    /// last told it; `None` until it did.
    pub fn clock_offset_ms(&self) -> Result<Option<i64>, NaraError> {
        Ok(self.inner.clock()?.offset_ms)
    }

    /// Whether this device's clock is more than 5 minutes off the server's (times it records
    /// are flagged for review): the app should show it.
    pub fn clock_off(&self) -> Result<bool, NaraError> {
        Ok(self.inner.clock()?.off)
    }

    /// Which incarnation of this device's store is in use: 0 until the server first found its
    /// data behind what it holds (a backup put back, or copied from another phone).
    pub fn incarnation(&self) -> Result<u32, NaraError> {
        Ok(self.inner.incarnation()?.number)
    }

    /// Every person with documents on this device.
    pub fn patients(&self) -> Result<Vec<FfiPatient>, NaraError> {
        Ok(care::patients(&self.inner)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Signs a journal note in the journal of `today`'s month (`YYYY-MM-DD`, local date).
    pub fn add_note(
        &self,
        patient: String,
        text: String,
        today: String,
    ) -> Result<FfiRecorded, NaraError> {
        Ok(care::add_note(&self.inner, &self::patient(patient)?, &text, &clock(today)?)?.into())
    }

    /// Records an observation (vital sign) in the journal of `today`'s month.
    pub fn observe(
        &self,
        patient: String,
        code: FfiObservationCode,
        value: f64,
        unit: String,
        today: String,
    ) -> Result<FfiRecorded, NaraError> {
        Ok(care::observe(
            &self.inner,
            &self::patient(patient)?,
            code.into(),
            value,
            &unit,
            &clock(today)?,
        )?
        .into())
    }

    /// Saves a visit's records together at its end (tasks, notes, observations in the journal
    /// of `today`'s month, doses in their slot's administration log): one change per
    /// document, all or nothing.
    pub fn save_visit(
        &self,
        patient: String,
        visit: FfiVisit,
        today: String,
    ) -> Result<FfiVisitSaved, NaraError> {
        let visit = visit.try_into()?;
        Ok(care::visit(
            &self.inner,
            &self::patient(patient)?,
            &visit,
            &clock(today)?,
        )?
        .into())
    }

    /// Records the outcome of a medication slot (`YYYY-MM-DDTHH:MM`) against the order's
    /// current revision. A dose not given needs a `reason`. Unless `again`, refused if this
    /// device already shows the dose given (the app asks before a second dose); unless
    /// `allergy_confirmed`, refused with `NaraError::AllergyWarning` if the drug matches an
    /// active allergy (the app warns, and asks).
    #[allow(clippy::too_many_arguments)] // the fields of one administration
    #[uniffi::method(default(allergy_confirmed = false))]
    pub fn give(
        &self,
        patient: String,
        order: String,
        slot: String,
        outcome: FfiOutcome,
        reason: Option<String>,
        again: bool,
        today: String,
        allergy_confirmed: bool,
    ) -> Result<FfiAdministered, NaraError> {
        Ok(care::give(
            &self.inner,
            &self::patient(patient)?,
            &record(order)?,
            &slot,
            outcome.into(),
            reason.as_deref(),
            again,
            allergy_confirmed,
            &clock(today)?,
        )?
        .into())
    }

    /// Adds an order or revises its current version (nurse).
    pub fn write_order(
        &self,
        patient: String,
        order: String,
        input: FfiOrderInput,
        today: String,
    ) -> Result<FfiOrderWritten, NaraError> {
        Ok(care::write_order(
            &self.inner,
            &self::patient(patient)?,
            &record(order)?,
            &input.into(),
            &clock(today)?,
        )?
        .into())
    }

    /// Resolves an order's conflict (nurse) with a version superseding every current one;
    /// fields not given come from the candidate revision `from`.
    pub fn resolve_order(
        &self,
        patient: String,
        order: String,
        from: Option<String>,
        input: FfiOrderInput,
        today: String,
    ) -> Result<FfiOrderWritten, NaraError> {
        let from = from.map(record).transpose()?;
        Ok(care::resolve_order(
            &self.inner,
            &self::patient(patient)?,
            &record(order)?,
            from.as_ref(),
            &input.into(),
            &clock(today)?,
        )?
        .into())
    }

    /// Acknowledges a flag (nurse), covering the evidence seen now.
    pub fn ack_flag(
        &self,
        patient: String,
        flag: String,
        comment: Option<String>,
        today: String,
    ) -> Result<FfiRecorded, NaraError> {
        Ok(care::ack_flag(
            &self.inner,
            &self::patient(patient)?,
            &flag,
            comment.as_deref(),
            &clock(today)?,
        )?
        .into())
    }

    /// Edits a goal's description (concurrent edits merge), or creates the goal (nurse; the
    /// title defaults to the text's first line).
    pub fn set_goal(
        &self,
        patient: String,
        goal: String,
        text: String,
        title: Option<String>,
        today: String,
    ) -> Result<FfiGoalWritten, NaraError> {
        Ok(care::set_goal(
            &self.inner,
            &self::patient(patient)?,
            &record(goal)?,
            &text,
            title.as_deref(),
            &clock(today)?,
        )?
        .into())
    }

    /// A person's record as a care worker sees it on `today` (local date): header, plan,
    /// orders, today's medication slots (local times at `utc_offset_minutes`, with the
    /// signing list's statuses: the same as `round`), recent journal, conflicts and open
    /// flags. Logged as a read, and counts as this user viewing the person: the next handover
    /// starts from here.
    pub fn overview(
        &self,
        patient: String,
        today: String,
        utc_offset_minutes: i32,
    ) -> Result<FfiOverview, NaraError> {
        let o = care::overview(
            &self.inner,
            &self::patient(patient)?,
            &clock(today)?,
            utc_offset_minutes,
        )?;
        Ok(named(&self.inner, || o.into()))
    }

    /// "What matters to me": the person's own words in their plan, oldest first, each with
    /// who wrote it (read only).
    pub fn what_matters(&self, patient: String) -> Result<Vec<FfiWhatMatters>, NaraError> {
        let list = care::what_matters(&self.inner, &self::patient(patient)?)?;
        Ok(named(&self.inner, || all(list)))
    }

    /// Registers in conflict, of `patient` or of everyone on this device.
    pub fn conflicts(&self, patient: Option<String>) -> Result<Vec<FfiConflict>, NaraError> {
        let patient = patient.map(self::patient).transpose()?;
        let list = care::conflicts(&self.inner, patient.as_ref())?;
        Ok(named(&self.inner, || all(list)))
    }

    /// Safety flags, open or acknowledged, of `patient` or of everyone on this device.
    pub fn flags(&self, patient: Option<String>) -> Result<Vec<FfiFlag>, NaraError> {
        let patient = patient.map(self::patient).transpose()?;
        let list = care::flags(&self.inner, patient.as_ref())?;
        Ok(named(&self.inner, || all(list)))
    }
}
