//! What only the server knows for the medication round (`GET /v1/round`): for each person this
//! device's user is assigned to, the phones that could record their doses and when each last
//! synced, and the flags the server raised (slots overdue, follow-ups overdue); and the names,
//! roles and organisations of the staff the user works with, from the server's directory. Kept
//! in the store, so the signing list, the flags and staff names show offline what the server
//! last said.

use serde::Deserialize;
use sync_core::UserId;
use sync_core::model::round::{FlagRecord, PhoneSync};

use super::*;

/// Store meta key of the last answer (JSON).
const ROUND_KEY: &str = "client.round_status";
/// Store meta key of the staff names of the last answer (JSON), also kept by
/// [`Device::refresh_staff`], which keeps nothing else.
const STAFF_KEY: &str = "client.staff";
/// Most people kept from one answer.
const MAX_PATIENTS: usize = 500;
/// Most phones and flags kept per person.
const MAX_PER_PATIENT: usize = 200;
/// Most members of staff kept from one answer.
const MAX_STAFF: usize = 2000;
/// Longest name, role or organisation kept (characters).
const MAX_NAME_CHARS: usize = 200;

/// A member of staff as the server's directory names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffMember {
    pub user: UserId,
    pub name: String,
    pub role: String,
    pub organisation: String,
}

/// The server's answer for one person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientRoundStatus {
    pub patient: PatientId,
    /// Every phone that could record this person's doses (this one too), and its last sync.
    pub phones: Vec<PhoneSync>,
    /// Flags the server raised for this person.
    pub flags: Vec<FlagRecord>,
}

/// The server's last answer, and when it was given (by the server's clock).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRound {
    pub now: Option<Timestamp>,
    pub patients: Vec<PatientRoundStatus>,
    /// The staff the user works with (absent from older servers' answers).
    #[serde(default)]
    pub staff: Vec<StaffMember>,
}

impl ServerRound {
    pub fn of(&self, patient: &PatientId) -> Option<&PatientRoundStatus> {
        self.patients.iter().find(|p| &p.patient == patient)
    }
}

/// Staff names this device holds: user id to the directory's entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaffNames(BTreeMap<UserId, StaffMember>);

impl StaffNames {
    pub fn new(staff: impl IntoIterator<Item = StaffMember>) -> Self {
        Self(staff.into_iter().map(|m| (m.user.clone(), m)).collect())
    }

    pub fn get(&self, user: &UserId) -> Option<&StaffMember> {
        self.0.get(user)
    }

    /// Every member of staff, by id.
    pub fn members(&self) -> Vec<StaffMember> {
        self.0.values().cloned().collect()
    }

    /// The directory's name of `user`, if this device holds one that says more than the id.
    pub fn name(&self, user: &UserId) -> Option<&str> {
        self.0
            .get(user)
            .map(|m| m.name.as_str())
            .filter(|n| !n.trim().is_empty() && *n != user.as_str())
    }

    /// `Nina Berg`, or the id itself when this device holds no name.
    pub fn display(&self, user: &UserId) -> String {
        self.name(user).unwrap_or(user.as_str()).to_owned()
    }
}

impl Device {
    /// Asks the server for the round's status (slots' local times at `utc_offset_minutes`) and
    /// keeps the answer.
    pub async fn refresh_round(&self, utc_offset_minutes: i32) -> Result<ServerRound> {
        let round = self.ask_round(utc_offset_minutes).await?;
        let bytes = serde_json::to_vec(&round)
            .map_err(|e| ClientError::Transport(format!("round status: {e}")))?;
        self.lock().repo.store_mut().set_meta(ROUND_KEY, &bytes)?;
        self.keep_staff(&round.staff)?;
        Ok(round)
    }

    /// Asks the server for the names of the staff the user works with (its round answer) and
    /// keeps them, and nothing else of the answer: the signing list and its flags stay as the
    /// last [`Device::refresh_round`] left them. `nara sync` calls it after each sync.
    pub async fn refresh_staff(&self) -> Result<StaffNames> {
        let round = self.ask_round(0).await?;
        self.keep_staff(&round.staff)?;
        Ok(StaffNames::new(round.staff))
    }

    fn keep_staff(&self, staff: &[StaffMember]) -> Result<()> {
        let bytes = serde_json::to_vec(staff)
            .map_err(|e| ClientError::Transport(format!("staff names: {e}")))?;
        self.lock().repo.store_mut().set_meta(STAFF_KEY, &bytes)?;
        Ok(())
    }

    /// `GET /v1/round`, bounded.
    async fn ask_round(&self, utc_offset_minutes: i32) -> Result<ServerRound> {
        let authorization = format!("Bearer {}.{}", self.config.device, self.credential.secret);
        let path = format!("/v1/round?utc_offset_minutes={utc_offset_minutes}");
        let (status, body) =
            http::get_json(&self.addr, self.tls.clone(), &path, &authorization).await?;
        match status {
            200 => {}
            401 => return Err(ClientError::Unauthorized),
            _ => {
                return Err(ClientError::Http {
                    status,
                    message: body.chars().take(200).collect(),
                });
            }
        }
        let mut round: ServerRound = serde_json::from_str(&body)
            .map_err(|e| ClientError::Transport(format!("bad round status: {e}")))?;
        round.patients.truncate(MAX_PATIENTS);
        for p in &mut round.patients {
            p.phones.truncate(MAX_PER_PATIENT);
            p.flags.truncate(MAX_PER_PATIENT);
        }
        round.staff.truncate(MAX_STAFF);
        for m in &mut round.staff {
            for text in [&mut m.name, &mut m.role, &mut m.organisation] {
                if text.chars().count() > MAX_NAME_CHARS {
                    *text = text.chars().take(MAX_NAME_CHARS).collect();
                }
            }
        }
        Ok(round)
    }

    /// The server's last answer, if any (see [`Device::refresh_round`]).
    pub fn server_round(&self) -> Result<ServerRound> {
        let bytes = self.lock().repo.store().meta(ROUND_KEY)?;
        Ok(bytes
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default())
    }
}

impl Device {
    /// The names of the staff the user works with, as the server last said
    /// ([`Device::refresh_staff`], [`Device::refresh_round`]); empty before the first answer.
    pub fn staff(&self) -> Result<StaffNames> {
        let bytes = self.lock().repo.store().meta(STAFF_KEY)?;
        Ok(
            match bytes.and_then(|b| serde_json::from_slice::<Vec<StaffMember>>(&b).ok()) {
                Some(staff) => StaffNames::new(staff),
                None => StaffNames::new(self.server_round()?.staff),
            },
        )
    }
}
