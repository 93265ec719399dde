//! A person's consent that a relative may read their record (issue 15): the rows of
//! `relative_consents`, for [`SqliteDirectory`]'s [`Directory`] methods. A consent is the
//! person's own act; staff cannot give it for them (the web views give it only from the
//! person's own session).

use rusqlite::params;
use sync_core::PatientId;

use super::sqlite::{check_name, exists, parse_patient};
use super::{DirectoryError, MAX_RELATIVES, RelativeConsent, SqliteDirectory};

pub(super) fn grant(
    dir: &SqliteDirectory,
    patient: &PatientId,
    relative: &str,
    now_ms: i64,
) -> Result<RelativeConsent, DirectoryError> {
    let relative = relative.trim();
    check_name("relative", relative)?;
    dir.change(|tx| {
        if !exists(tx, "SELECT 1 FROM patients WHERE id = ?1", patient.as_str())? {
            return Err(DirectoryError::NotFound {
                what: "patient",
                id: patient.to_string(),
            });
        }
        let live: i64 = tx
            .prepare_cached(
                "SELECT count(*) FROM relative_consents \
                 WHERE patient_id = ?1 AND withdrawn_ms IS NULL",
            )?
            .query_row([patient.as_str()], |r| r.get(0))?;
        let live_same: i64 = tx
            .prepare_cached(
                "SELECT count(*) FROM relative_consents \
                 WHERE patient_id = ?1 AND relative = ?2 AND withdrawn_ms IS NULL",
            )?
            .query_row(params![patient.as_str(), relative], |r| r.get(0))?;
        if live_same > 0 {
            return Err(DirectoryError::Exists {
                what: "consent for relative",
                id: relative.to_owned(),
            });
        }
        if usize::try_from(live).unwrap_or(usize::MAX) >= MAX_RELATIVES {
            return Err(DirectoryError::Invalid(format!(
                "a person may authorise at most {MAX_RELATIVES} relatives"
            )));
        }
        tx.prepare_cached(
            "INSERT INTO relative_consents (patient_id, relative, granted_ms) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![patient.as_str(), relative, now_ms])?;
        Ok(())
    })?;
    tracing::info!(patient = %patient, "relative's consent recorded");
    Ok(RelativeConsent {
        patient: patient.clone(),
        relative: relative.to_owned(),
        granted_ms: now_ms,
    })
}

pub(super) fn withdraw(
    dir: &SqliteDirectory,
    patient: &PatientId,
    relative: &str,
    now_ms: i64,
) -> Result<(), DirectoryError> {
    let relative = relative.trim();
    dir.change(|tx| {
        let n = tx
            .prepare_cached(
                "UPDATE relative_consents SET withdrawn_ms = ?3 \
                 WHERE patient_id = ?1 AND relative = ?2 AND withdrawn_ms IS NULL",
            )?
            .execute(params![patient.as_str(), relative, now_ms])?;
        if n == 0 {
            return Err(DirectoryError::NotFound {
                what: "consent for relative",
                id: relative.to_owned(),
            });
        }
        Ok(())
    })?;
    tracing::info!(patient = %patient, "relative's consent withdrawn");
    Ok(())
}

pub(super) fn live(
    dir: &SqliteDirectory,
    patient: &PatientId,
) -> Result<Vec<RelativeConsent>, DirectoryError> {
    let conn = dir.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT patient_id, relative, granted_ms FROM relative_consents \
         WHERE patient_id = ?1 AND withdrawn_ms IS NULL ORDER BY relative",
    )?;
    let rows: Vec<(String, String, i64)> = stmt
        .query_map([patient.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(p, relative, granted_ms)| {
            Ok(RelativeConsent {
                patient: parse_patient(p)?,
                relative,
                granted_ms,
            })
        })
        .collect()
}
