//! What only the server knows for the medication round (`GET /v1/round`): for each person this
//! device's user is assigned to, the phones that could record their doses and when each last
//! synced, and the flags the server raised (slots overdue, follow-ups overdue). Kept in the
//! store, so the signing list and the flags show offline what the server last said.

use serde::Deserialize;
use sync_core::model::round::{FlagRecord, PhoneSync};

use super::*;

/// Store meta key of the last answer (JSON).
const ROUND_KEY: &str = "client.round_status";
/// Most people kept from one answer.
const MAX_PATIENTS: usize = 500;
/// Most phones and flags kept per person.
const MAX_PER_PATIENT: usize = 200;

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
}

impl ServerRound {
    pub fn of(&self, patient: &PatientId) -> Option<&PatientRoundStatus> {
        self.patients.iter().find(|p| &p.patient == patient)
    }
}

impl Device {
    /// Asks the server for the round's status (slots' local times at `utc_offset_minutes`) and
    /// keeps the answer.
    pub async fn refresh_round(&self, utc_offset_minutes: i32) -> Result<ServerRound> {
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
        let bytes = serde_json::to_vec(&round)
            .map_err(|e| ClientError::Transport(format!("round status: {e}")))?;
        self.lock().repo.store_mut().set_meta(ROUND_KEY, &bytes)?;
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
