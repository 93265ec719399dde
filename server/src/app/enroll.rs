//! `/v1/enroll`: a one-time code redeemed for a device credential.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use sync_core::signing::PublicKey;

use crate::audit::{AuditAction, AuditEntry};

use super::{AppState, error, internal, lock, now_ms};

#[derive(Debug, Deserialize)]
pub(super) struct EnrollRequest {
    code: String,
    /// The device's Ed25519 public signing key, 64 hex digits (signed changes); absent from
    /// devices built before signing, which register one on their first connection.
    #[serde(default)]
    signing_key: Option<String>,
}

/// Redeems a one-time enrollment code for a device credential.
pub(super) async fn enroll(
    State(state): State<AppState>,
    body: Result<Json<EnrollRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    // Every attempt counts, before the code is looked at: guessing codes is slow, and a flood
    // costs one comparison per request. The first refusal of a run is audited, not each one.
    let (allowed, first_refusal) = {
        let limits = &state.inner.limits;
        let mut guard = lock(&state.inner.enroll_limit);
        let (bucket, limited) = &mut *guard;
        let allowed = bucket.take(limits.enroll_per_second, limits.enroll_burst);
        let first = !allowed && !*limited;
        *limited = !allowed;
        (allowed, first)
    };
    if !allowed {
        if first_refusal {
            // Best effort: the attempt is refused whether or not this is recorded.
            let _ = state.audit(AuditEntry {
                at_ms: now_ms(),
                actor: "unknown".into(),
                device: None,
                action: AuditAction::RateLimited,
                patient: None,
                document: None,
                detail: "enrollment attempts over the limit: refused until they slow down".into(),
            });
        }
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many enrollment attempts: try again later",
        );
    }
    let Ok(Json(req)) = body else {
        return error(StatusCode::BAD_REQUEST, "expected {\"code\": \"...\"}");
    };
    let signing_key = match req.signing_key.as_deref().map(PublicKey::from_hex) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "signing_key must be an Ed25519 public key in 64 hex digits",
            );
        }
    };
    match state.inner.directory.redeem(req.code.trim(), now_ms()) {
        Ok(cred) => {
            // The credential is handed out only once the enrollment is recorded; if it cannot
            // be, the new device is revoked at once (the directory is another file: the two
            // cannot commit together) and its credential is never seen.
            let recorded = state.audit(AuditEntry {
                at_ms: now_ms(),
                actor: cred.user.to_string(),
                device: Some(cred.device.clone()),
                action: AuditAction::Redeem,
                patient: None,
                document: None,
                detail: "device enrolled".into(),
            });
            if recorded.is_err() {
                if let Err(e) = state.inner.directory.revoke(&cred.device) {
                    tracing::error!(device = %cred.device, error = %e,
                        "an unaudited enrollment could not be revoked");
                }
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the enrollment could not be audited: try again later",
                );
            }
            if let Some(key) = signing_key {
                // Should this fail, the device registers its key on its first connection.
                if let Err(e) = state.inner.directory.register_key(&cred.device, &key.0) {
                    tracing::error!(device = %cred.device, error = %e, "registering the signing key failed");
                }
            }
            let _ = state.refresh();
            let role = match state.inner.directory.user(&cred.user) {
                Ok(Some(user)) => user.role,
                Ok(None) => return internal("an enrolled device's user is missing"),
                Err(e) => return internal(e),
            };
            Json(json!({
                "device": cred.device,
                "secret": cred.secret,
                "user": cred.user,
                "role": role.as_str(),
                // This server takes uploads signed once over their root (`signing/root.rs`):
                // the device's first upload may be signed so.
                "signatures": sync_core::signing::ROOT_SIGNATURES,
            }))
            .into_response()
        }
        Err(crate::directory::DirectoryError::InvalidCode) => {
            state
                .inner
                .metrics
                .auth_failures
                .fetch_add(1, Ordering::Relaxed);
            // Best effort: the code is refused whether or not this is recorded.
            let _ = state.audit(AuditEntry {
                at_ms: now_ms(),
                actor: "unknown".into(),
                device: None,
                action: AuditAction::AuthFailed,
                patient: None,
                document: None,
                detail: "enrollment refused: unknown, used or expired code".into(),
            });
            error(
                StatusCode::BAD_REQUEST,
                "the enrollment code is unknown, used or expired",
            )
        }
        Err(e) => internal(e),
    }
}
