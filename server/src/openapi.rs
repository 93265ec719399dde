//! The OpenAPI document served at `/v1/openapi.json`, written by hand: the API is small, and a
//! generator would add a dependency tree for a page of JSON.

use serde_json::{Value, json};

pub fn document() -> Value {
    let bearer = json!([{ "bearer": [] }]);
    let error = json!({ "description": "Error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    let assignment_body = json!({
        "required": true,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Assignment" } } }
    });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Nära Sync server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Sync of shared care plans. /v1/sync is a WebSocket carrying the protocol in docs/protocol.md; admin routes need the admin token from the data directory, and are served on the admin listener instead when the server runs with --admin-listen (404 on the device listener then). Failed admin logins are limited per address (429); admin actions and reads are audited first, and neither made nor answered if they cannot be (503)."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } },
                "Assignment": {
                    "type": "object", "required": ["user", "patient"],
                    "properties": { "user": { "type": "string" }, "patient": { "type": "string" } }
                }
            }
        },
        "paths": {
            "/healthz": { "get": { "summary": "Liveness", "responses": { "200": { "description": "ok" } } } },
            "/readyz": { "get": { "summary": "Readiness", "responses": { "200": { "description": "ready" }, "503": { "description": "shutting down" } } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "responses": { "200": { "description": "text exposition format" } } } },
            "/v1/enroll": { "post": {
                "summary": "Redeem a one-time enrollment code for a device credential",
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["code"], "properties": { "code": { "type": "string" },
                        "signing_key": { "type": "string", "description": "The device's Ed25519 public key, 64 hex digits (signed changes)" } } } } } },
                "responses": {
                    "200": { "description": "The credential", "content": { "application/json": { "schema": {
                        "type": "object", "properties": { "device": { "type": "string" }, "secret": { "type": "string" }, "user": { "type": "string" }, "role": { "type": "string", "enum": ["carer", "nurse", "admin"] } } } } } },
                    "400": error,
                    "429": error
                }
            } },
            "/v1/sync": { "get": {
                "summary": "The sync WebSocket (binary frames, docs/protocol.md); Authorization: Bearer <device>.<secret>; x-nara-signing-key: the device's Ed25519 public key (64 hex digits), registered if it has none; x-nara-waiting: the changes the device has waiting for upload (optional, decimal)",
                "responses": { "101": { "description": "Switching protocols" }, "401": error }
            } },
            "/v1/round": { "get": {
                "summary": "The medication round's status for the people the device's user cares for: the phones that could record their doses with their last sync (null: never), and the flags the server raises (overdue slots, follow-ups overdue, and the chart's flags as the server holds the records); Authorization: Bearer <device>.<secret>; audited as a disclosure",
                "parameters": [{ "name": "utc_offset_minutes", "in": "query", "required": false, "schema": { "type": "integer", "minimum": -840, "maximum": 840 }, "description": "The local offset from UTC that the slots' times are in (default 0)" }],
                "responses": { "200": { "description": "{ now, patients: [{ patient, phones: [{ device, user, last_synced }], flags: [{ id, kind, order, slot?, administration?, document, evidence, open }] }], staff: [{ user, name, role, organisation }] }" }, "400": error, "401": error, "429": error, "503": error }
            } },
            "/v1/admin/devices": { "get": { "summary": "Enrolled devices", "security": bearer, "responses": { "200": { "description": "Devices" }, "401": error, "429": error, "503": error } } },
            "/v1/admin/devices/{id}/revoke": { "post": {
                "summary": "Revoke a device: its connections close within a second, new ones are refused",
                "security": bearer,
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": { "200": { "description": "Revoked" }, "400": error, "401": error, "429": error, "503": error }
            } },
            "/v1/admin/assignments": {
                "post": { "summary": "Assign a user to a patient (the care relationship)", "security": bearer, "requestBody": assignment_body, "responses": { "200": { "description": "Assigned" }, "400": error, "401": error, "429": error, "503": error } },
                "delete": { "summary": "Take a user off a patient's case", "security": bearer, "requestBody": assignment_body, "responses": { "200": { "description": "Unassigned" }, "400": error, "401": error, "429": error, "503": error } }
            },
            "/v1/admin/enrollments": { "post": {
                "summary": "Issue a one-time enrollment code for a user",
                "security": bearer,
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["user"], "properties": { "user": { "type": "string" } } } } } },
                "responses": { "200": { "description": "The code" }, "400": error, "401": error, "429": error, "503": error }
            } },
            "/v1/admin/login-codes": { "post": {
                "summary": "Issue a one-time sign-in code (15 minutes) for the web views under /app/, for a member of staff (user), a person (patient), or a relative the person has authorised (patient and relative; 403 without the person's consent)",
                "security": bearer,
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "properties": { "user": { "type": "string" }, "patient": { "type": "string" }, "relative": { "type": "string" } } } } } },
                "responses": { "200": { "description": "The code, its expiry (expires_ms) and the sign-in path" }, "400": error, "401": error, "403": error, "404": error, "429": error, "503": error }
            } },
            "/v1/admin/audit/verify": { "get": { "summary": "Verify the audit log's hash chain", "security": bearer, "responses": { "200": { "description": "Report" }, "401": error, "429": error, "503": error } } },
            "/v1/admin/audit/export": { "get": {
                "summary": "A patient's access log, as JSON lines",
                "security": bearer,
                "parameters": [{ "name": "patient", "in": "query", "required": true, "schema": { "type": "string" } }],
                "responses": { "200": { "description": "application/x-ndjson" }, "400": error, "401": error, "429": error, "503": error }
            } }
        }
    })
}
