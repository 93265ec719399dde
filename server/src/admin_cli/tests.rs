//! Tests of `admin_cli`.

use super::audit_cmd::readable_detail;
use super::*;
use crate::audit::{AuditAction, AuditEntry, AuditLog};
use crate::directory::{Directory, SqliteDirectory};
use clap::Parser;
use sync_core::Role;
use sync_core::store::SqliteStore;

#[derive(Debug, Parser)]
struct T {
    #[command(flatten)]
    a: AdminArgs,
}

fn parse(data: &Path, args: &[&str]) -> Result<AdminArgs, clap::Error> {
    let mut argv = vec!["admin", "--data", data.to_str().unwrap()];
    argv.extend_from_slice(args);
    T::try_parse_from(argv).map(|t| t.a)
}

/// Runs a command and returns what it printed.
fn run_ok(data: &Path, args: &[&str]) -> String {
    let mut out = Vec::new();
    run_to(parse(data, args).unwrap(), &mut out).unwrap_or_else(|e| panic!("{args:?}: {e:#}"));
    String::from_utf8(out).unwrap()
}

fn run_err(data: &Path, args: &[&str]) -> String {
    let mut out = Vec::new();
    let err = run_to(parse(data, args).unwrap(), &mut out).unwrap_err();
    format!("{err:#}")
}

fn json_of(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// An org, a carer, a nurse, an admin and two patients, through the CLI.
fn setup() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    run_ok(d, &["add-org", "--id", "o1", "--name", "Hemtjänst Norr"]);
    run_ok(
        d,
        &[
            "add-user", "--id", "u-anna", "--name", "Anna", "--role", "carer", "--org", "o1",
        ],
    );
    run_ok(
        d,
        &[
            "add-user", "--id", "u-berit", "--name", "Berit", "--role", "nurse", "--org", "o1",
        ],
    );
    run_ok(
        d,
        &[
            "add-user", "--id", "u-cilla", "--name", "Cilla", "--role", "admin", "--org", "o1",
        ],
    );
    run_ok(d, &["add-patient", "--id", "p-1", "--name", "Dagny"]);
    run_ok(d, &["add-patient", "--id", "p-2", "--name", "Einar"]);
    tmp
}

#[test]
fn add_commands_print_json_and_are_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("nested/data");
    let v = json_of(&run_ok(
        &d,
        &["add-org", "--id", "o1", "--name", "Org", "--json"],
    ));
    assert_eq!(v["command"], "add-org");
    assert_eq!(v["id"], "o1");
    assert_eq!(v["audit_seq"], 1);
    let v = json_of(&run_ok(
        &d,
        &[
            "--json", "add-user", "--id", "u1", "--name", "U", "--role", "nurse", "--org", "o1",
        ],
    ));
    assert_eq!(
        (v["role"].as_str(), v["audit_seq"].as_u64()),
        (Some("nurse"), Some(2))
    );
    let v = json_of(&run_ok(
        &d,
        &["add-patient", "--id", "p1", "--name", "P", "--json"],
    ));
    assert_eq!(v["id"], "p1");
    let human = run_ok(&d, &["add-patient", "--id", "p2", "--name", "Q"]);
    assert_eq!(human, "added patient p2 (Q)\n");

    let dir = SqliteDirectory::open(&directory_path(&d)).unwrap();
    let user = dir.user(&UserId::new("u1").unwrap()).unwrap().unwrap();
    assert_eq!((user.role, user.org.as_str()), (Role::Nurse, "o1"));
    assert_eq!(dir.patients().unwrap().len(), 2);

    let audit = SqliteAudit::open(&audit_path(&d)).unwrap();
    assert_eq!(audit.len().unwrap(), 4);
    let p1 = audit
        .export_patient(&PatientId::new("p1").unwrap())
        .unwrap();
    assert_eq!(p1.len(), 1);
    assert_eq!(p1[0].entry.action, AuditAction::AddPatient);
    assert_eq!(p1[0].entry.actor, "admin");
    assert!(
        !p1[0].entry.detail.contains('P'),
        "no patient name in the log"
    );
}

#[test]
fn assign_and_unassign() {
    let tmp = setup();
    let d = tmp.path();
    let v = json_of(&run_ok(
        d,
        &["assign", "--user", "u-anna", "--patient", "p-1", "--json"],
    ));
    assert_eq!(
        (v["user"].as_str(), v["patient"].as_str()),
        (Some("u-anna"), Some("p-1"))
    );
    run_ok(d, &["assign", "--user", "u-berit", "--patient", "p-1"]);
    let dir = SqliteDirectory::open(&directory_path(d)).unwrap();
    assert_eq!(dir.assignments().unwrap().len(), 2);
    assert_eq!(
        run_ok(d, &["unassign", "--user", "u-anna", "--patient", "p-1"]),
        "unassigned u-anna from p-1\n"
    );
    assert_eq!(dir.assignments().unwrap().len(), 1);

    let audit = SqliteAudit::open(&audit_path(d)).unwrap();
    let actions: Vec<_> = audit
        .export_patient(&PatientId::new("p-1").unwrap())
        .unwrap()
        .into_iter()
        .map(|r| r.entry.action)
        .collect();
    assert_eq!(
        actions,
        vec![
            AuditAction::AddPatient,
            AuditAction::Assign,
            AuditAction::Assign,
            AuditAction::Unassign
        ]
    );
}

#[test]
fn bad_input_gives_clear_errors() {
    let tmp = setup();
    let d = tmp.path();
    let e = run_err(d, &["assign", "--user", "u-nobody", "--patient", "p-1"]);
    assert!(e.contains("user \"u-nobody\" not found"), "{e}");
    let e = run_err(d, &["assign", "--user", "u-cilla", "--patient", "p-1"]);
    assert!(e.contains("admin"), "{e}");
    let e = run_err(d, &["unassign", "--user", "u-anna", "--patient", "p-2"]);
    assert!(e.contains("not found"), "{e}");
    let e = run_err(
        d,
        &[
            "add-user", "--id", "u-x", "--name", "X", "--role", "carer", "--org", "nope",
        ],
    );
    assert!(e.contains("org \"nope\" not found"), "{e}");
    let e = run_err(d, &["add-org", "--id", "o 2", "--name", "X"]);
    assert!(e.contains("invalid org id"), "{e}");
    let e = run_err(d, &["enroll", "--user", "u-nobody"]);
    assert!(e.contains("not found"), "{e}");
    let e = run_err(d, &["revoke", "--device", "dev-0000"]);
    assert!(e.contains("device \"dev-0000\" not found"), "{e}");

    // Refused by the parser.
    let e = parse(
        d,
        &[
            "add-user", "--id", "u-x", "--name", "X", "--role", "doctor", "--org", "o1",
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("doctor") && e.contains("carer"), "{e}");
    let e = parse(d, &["add-patient", "--id", "p 1", "--name", "X"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid patient id"), "{e}");
    let e = parse(d, &["assign", "--user", "ä", "--patient", "p-1"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid user id"), "{e}");

    // Failed commands are audited before they act, then marked as not done.
    let audit = SqliteAudit::open(&audit_path(d)).unwrap();
    let conn = rusqlite::Connection::open(audit_path(d)).unwrap();
    let not_done: u32 = conn
        .query_row(
            "SELECT count(*) FROM audit_log WHERE detail LIKE 'NOT DONE%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(not_done >= 5, "{not_done}");
    assert_eq!(audit.len().unwrap(), 6 + 2 * u64::from(not_done));
}

#[test]
fn enroll_prints_the_enrollment_string_with_the_key_pin() {
    let tmp = setup();
    let d = tmp.path();
    // Before the server ever ran: the code alone.
    let v = json_of(&run_ok(d, &["enroll", "--user", "u-anna", "--json"]));
    assert!(v["enrollment"].is_null() && v["code"].is_string(), "{v}");
    let tls = crate::tls::load_or_create(d, None, None).unwrap();
    let v = json_of(&run_ok(
        d,
        &[
            "enroll",
            "--user",
            "u-anna",
            "--server",
            "10.0.0.5:8443",
            "--json",
        ],
    ));
    let code = v["code"].as_str().unwrap();
    assert_eq!(v["server_key_pin"], tls.spki_pin.as_str());
    assert_eq!(
        v["enrollment"],
        format!("nara:{code}@10.0.0.5:8443#{}", tls.spki_pin).as_str()
    );
    let human = run_ok(d, &["enroll", "--user", "u-anna"]);
    assert!(human.contains("@127.0.0.1:7443#"), "{human}");
    // A renewed certificate on the same key has the same pin.
    crate::tls::renew_dev_cert(d).unwrap();
    let renewed = crate::tls::load_or_create(d, None, None).unwrap();
    assert_ne!(renewed.fingerprint, tls.fingerprint);
    assert_eq!(renewed.spki_pin, tls.spki_pin);
    let e = run_err(d, &["enroll", "--user", "u-anna", "--server", "https://x/"]);
    assert!(e.contains("host:port"), "{e}");
}

#[test]
fn enroll_devices_and_revoke() {
    let tmp = setup();
    let d = tmp.path();
    let v = json_of(&run_ok(d, &["enroll", "--user", "u-anna", "--json"]));
    let code = v["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 12);
    assert!(v["expires_ms"].as_i64().unwrap() > now_ms().unwrap());
    let human = run_ok(d, &["enroll", "--user", "u-berit"]);
    assert!(
        human.starts_with("enrollment code for u-berit: "),
        "{human}"
    );

    // The phone redeems the code through the server.
    let dir = SqliteDirectory::open(&directory_path(d)).unwrap();
    let cred = dir.redeem(&code, now_ms().unwrap()).unwrap();
    dir.touch(&cred.device, 1_767_225_600_000, Some(7)).unwrap();

    let v = json_of(&run_ok(d, &["devices", "--json"]));
    let list = v["devices"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], cred.device.as_str());
    assert_eq!(list[0]["user"], "u-anna");
    assert_eq!(list[0]["revoked"], false);
    assert_eq!(list[0]["cursor"], 7);
    assert_eq!(list[0]["last_seen_ms"], 1_767_225_600_000_i64);
    let human = run_ok(d, &["devices"]);
    assert!(human.contains("last seen 2026-01-01T00:00:00Z"), "{human}");
    assert!(human.contains("active"), "{human}");

    let g = dir.generation().unwrap();
    let v = json_of(&run_ok(
        d,
        &["revoke", "--device", cred.device.as_str(), "--json"],
    ));
    assert_eq!(v["user"], "u-anna");
    assert!(dir.generation().unwrap() > g, "the server sees the change");
    assert!(dir.is_revoked(&cred.device).unwrap());
    assert_eq!(dir.authenticate(&cred.device, &cred.secret).unwrap(), None);
    assert!(run_ok(d, &["devices"]).contains("REVOKED"));

    let audit = SqliteAudit::open(&audit_path(d)).unwrap();
    let report = audit.verify().unwrap();
    assert!(report.ok, "{report:?}");
    // The code is never in the audit log.
    let raw = std::fs::read(audit_path(d)).unwrap();
    let wal = std::fs::read(d.join("audit.db-wal")).unwrap_or_default();
    for hay in [raw, wal] {
        assert!(!hay.windows(12).any(|w| w == code.as_bytes()));
    }
}

#[test]
fn devices_counts_pending_changes_from_the_store() {
    use sync_core::store::Origin;
    use sync_core::{ChangeHash, DocumentId};
    let tmp = setup();
    let d = tmp.path();
    run_ok(d, &["assign", "--user", "u-anna", "--patient", "p-1"]);
    let dir = SqliteDirectory::open(&directory_path(d)).unwrap();
    let code = dir.enroll(&UserId::new("u-anna").unwrap(), 0).unwrap();
    let cred = dir.redeem(&code, 1).unwrap();
    assert_eq!(
        json_of(&run_ok(d, &["devices", "--json"]))["devices"][0]["pending"],
        serde_json::Value::Null
    );

    let mut store = SqliteStore::open(store_path(d)).unwrap();
    let p1: DocumentId = "p-1/careplan".parse().unwrap();
    let p2: DocumentId = "p-2/careplan".parse().unwrap();
    store
        .append(&p1, &[(ChangeHash([1; 32]), b"a")], Origin::Remote)
        .unwrap();
    store
        .append(&p2, &[(ChangeHash([2; 32]), b"b")], Origin::Remote)
        .unwrap();
    store
        .append(&p1, &[(ChangeHash([3; 32]), b"c")], Origin::Remote)
        .unwrap();
    dir.touch(&cred.device, 2, Some(1)).unwrap();
    // After its cursor (1): one change of p-1 (seq 3); p-2 is not assigned.
    let v = json_of(&run_ok(d, &["devices", "--json"]));
    assert_eq!(v["devices"][0]["pending"], 1);
}

#[test]
fn audit_verify_passes_then_fails_after_a_hand_edit() {
    let tmp = setup();
    let d = tmp.path();
    let v = json_of(&run_ok(d, &["audit", "verify", "--json"]));
    assert_eq!(
        (v["ok"].as_bool(), v["records"].as_u64()),
        (Some(true), Some(6))
    );
    let human = run_ok(d, &["audit", "verify"]);
    assert!(
        human.starts_with("audit log ok: 6 records, head "),
        "{human}"
    );
    // Verify reads only.
    assert_eq!(SqliteAudit::open(&audit_path(d)).unwrap().len().unwrap(), 6);

    rusqlite::Connection::open(audit_path(d))
        .unwrap()
        .execute("UPDATE audit_log SET actor = 'someone' WHERE seq = 2", [])
        .unwrap();
    let mut out = Vec::new();
    let err = run_to(parse(d, &["audit", "verify", "--json"]).unwrap(), &mut out).unwrap_err();
    assert!(format!("{err:#}").contains("record 2"), "{err:#}");
    let v = json_of(std::str::from_utf8(&out).unwrap());
    assert_eq!(v["ok"], false);
    let e = run_err(d, &["audit", "verify"]);
    assert!(e.contains("failed verification"), "{e}");
}

#[test]
fn audit_verify_refuses_a_missing_log() {
    let tmp = tempfile::tempdir().unwrap();
    let e = run_err(tmp.path(), &["audit", "verify"]);
    assert!(e.contains("no audit log"), "{e}");
    assert!(!audit_path(tmp.path()).exists(), "verify created nothing");
}

#[test]
fn audit_export_gives_one_persons_log_as_json_lines() {
    let tmp = setup();
    let d = tmp.path();
    run_ok(d, &["assign", "--user", "u-anna", "--patient", "p-1"]);
    run_ok(d, &["assign", "--user", "u-anna", "--patient", "p-2"]);
    {
        // The server logs a disclosure to a device.
        let audit = SqliteAudit::open(&audit_path(d)).unwrap();
        audit
            .append(
                AuditEntry::new(1_767_225_600_000, "u-anna", AuditAction::Disclose)
                    .device(&DeviceId::new("dev-0123456789abcdef").unwrap())
                    .patient(&PatientId::new("p-1").unwrap())
                    .document("p-1/careplan"),
            )
            .unwrap();
    }
    let out = run_ok(d, &["audit", "export", "--patient", "p-1", "--json"]);
    let lines: Vec<serde_json::Value> = out.lines().map(json_of).collect();
    assert_eq!(lines.len(), 3, "{out}");
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(lines.iter().all(|l| l["patient"] == "p-1"));
    let last = &lines[2];
    assert_eq!(last["action"], "disclose");
    assert_eq!(last["actor"], "u-anna");
    assert_eq!(last["device"], "dev-0123456789abcdef");
    assert_eq!(last["at_ms"], 1_767_225_600_000_i64);

    let human = run_ok(d, &["audit", "export", "--patient", "p-1"]);
    assert!(
        human.contains("2026-01-01T00:00:00Z") && human.contains("disclose by u-anna on dev-"),
        "{human}"
    );
    // The first export is itself in the log now.
    assert!(human.contains("audit export (3 records)"), "{human}");
    assert_eq!(
        run_ok(d, &["audit", "export", "--patient", "p-404"]),
        "no audit records for p-404\n"
    );
}

#[test]
fn json_flag_is_accepted_anywhere() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["--json", "audit", "verify"][..],
        &["audit", "--json", "verify"],
        &["audit", "verify", "--json"],
    ] {
        assert!(parse(tmp.path(), args).unwrap().json, "{args:?}");
    }
    let a = T::try_parse_from(["admin", "devices"]).unwrap().a;
    assert_eq!(a.data, PathBuf::from("./nara-data"));
    assert!(!a.json);
}

#[test]
fn format_ms_is_utc() {
    assert_eq!(format_ms(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_ms(1_767_225_600_000), "2026-01-01T00:00:00Z");
    assert_eq!(format_ms(951_825_599_000), "2000-02-29T11:59:59Z");
    assert_eq!(format_ms(-1000), "1969-12-31T23:59:59Z");
}

#[test]
fn read_entries_recorded_with_epoch_times_export_readable() {
    assert_eq!(
        readable_detail("handover shown at 1796001096331 (device time)"),
        "handover shown at 2026-11-30T01:11:36Z (device time)"
    );
    assert_eq!(
        readable_detail("audit export (3 records)"),
        "audit export (3 records)"
    );
    assert_eq!(readable_detail("name shown at 12"), "name shown at 12");
}

#[test]
fn login_codes_for_staff_and_persons_and_sessions_revoked_at_once() {
    let tmp = setup();
    let d = tmp.path();
    let v = json_of(&run_ok(d, &["--json", "login-code", "--user", "u-berit"]));
    let code = v["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 12);
    assert!(v["url"].as_str().unwrap().ends_with("/app/login"));
    let v = json_of(&run_ok(d, &["--json", "login-code", "--patient", "p-1"]));
    assert_eq!(v["subject"], "person:p-1");
    assert!(run_err(d, &["login-code", "--user", "nobody"]).contains("not in the directory"));
    assert!(
        parse(d, &["login-code"]).is_err(),
        "a user or a patient is needed"
    );

    // The code signs in once; the session ends when revoked from the command line.
    let sessions = crate::web::SqliteSessions::open(&web_path(d)).unwrap();
    let now = now_ms().unwrap();
    let who = sessions.redeem_code(&code, now).unwrap().unwrap();
    let (token, _) = sessions.create(&who, now).unwrap();
    let v = json_of(&run_ok(
        d,
        &["--json", "revoke-sessions", "--user", "u-berit"],
    ));
    assert_eq!(v["revoked"], 1);
    assert_eq!(sessions.session(&token, now).unwrap(), None);

    // Both are in the audit log, never the code itself.
    let audit = open_audit(d).unwrap();
    let all = audit
        .latest(&[AuditAction::LoginCode, AuditAction::SignOut], 10)
        .unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|r| !r.entry.detail.contains(&code)));
}

#[test]
fn a_relatives_login_code_is_refused_without_the_persons_consent() {
    let tmp = setup();
    let d = tmp.path();
    let args = [
        "--json",
        "login-code",
        "--relative",
        "Erik",
        "--patient",
        "p-1",
    ];
    assert!(run_err(d, &args).contains("has not authorised a relative named \"Erik\""));
    assert!(
        parse(d, &["login-code", "--relative", "Erik"]).is_err(),
        "a relative needs the person"
    );
    let dir = SqliteDirectory::open(&directory_path(d)).unwrap();
    dir.grant_relative(&PatientId::new("p-1").unwrap(), "Erik", 1)
        .unwrap();
    let v = json_of(&run_ok(d, &args));
    assert_eq!(v["subject"], "relative:p-1:Erik");
    // An administrator can end the relative's sessions alone.
    let sessions = crate::web::SqliteSessions::open(&web_path(d)).unwrap();
    let now = now_ms().unwrap();
    let erik = sessions
        .redeem_code(v["code"].as_str().unwrap(), now)
        .unwrap()
        .unwrap();
    let (token, _) = sessions.create(&erik, now).unwrap();
    let revoke = [
        "--json",
        "revoke-sessions",
        "--patient",
        "p-1",
        "--relative",
        "Erik",
    ];
    assert_eq!(json_of(&run_ok(d, &revoke))["revoked"], 1);
    assert_eq!(sessions.session(&token, now).unwrap(), None);
    dir.withdraw_relative(&PatientId::new("p-1").unwrap(), "Erik", 2)
        .unwrap();
    assert!(run_err(d, &args).contains("has not authorised"));
}

/// The data directory's records, oldest first.
fn all_records(d: &Path) -> Vec<crate::audit::AuditRecord> {
    let mut records = SqliteAudit::open(&audit_path(d))
        .unwrap()
        .latest(&AuditAction::ALL, 1000)
        .unwrap();
    records.reverse();
    records
}

/// Exports the signed head as the server does, with the data directory's key and heads file.
fn export_head(d: &Path) -> crate::audit::heads::SignedHead {
    use crate::audit::heads::{AuditKey, Exporter, HEADS_FILE, HeadExport, KEY_FILE};
    let (key, _) = AuditKey::load_or_create(&d.join(KEY_FILE)).unwrap();
    let mut exporter = Exporter::new(HeadExport {
        key,
        file: d.join(HEADS_FILE),
        every: std::time::Duration::from_secs(60),
    });
    let audit = SqliteAudit::open(&audit_path(d)).unwrap();
    exporter.export(&audit, now_ms().unwrap()).unwrap().unwrap()
}

#[test]
fn audit_verify_fails_on_a_chain_rewritten_after_a_signed_head() {
    let tmp = setup();
    let d = tmp.path();
    let public = run_ok(d, &["audit", "key"]).trim().to_owned();
    assert_eq!(public.len(), 64, "{public}");
    let head = export_head(d);
    assert_eq!((head.seq, head.key.as_str()), (6, public.as_str()));
    let human = run_ok(d, &["audit", "verify"]);
    assert!(human.contains("1 signed heads checked"), "{human}");
    let v = json_of(&run_ok(
        d,
        &["audit", "verify", "--json", "--public-key", &public],
    ));
    assert_eq!(
        (v["ok"].as_bool(), v["signed_heads"].as_u64()),
        (Some(true), Some(1))
    );

    // Record 4 rewritten, and every hash after it recomputed with the chain's own function.
    let records = all_records(d);
    let conn = rusqlite::Connection::open(audit_path(d)).unwrap();
    crate::audit::conformance::rewrite_from(
        &|sql| {
            conn.execute_batch(sql).unwrap();
        },
        &records,
        4,
        "nothing to see",
    );
    assert!(
        SqliteAudit::open(&audit_path(d))
            .unwrap()
            .verify()
            .unwrap()
            .ok,
        "the chain alone cannot tell"
    );
    let mut out = Vec::new();
    let err = run_to(parse(d, &["audit", "verify"]).unwrap(), &mut out).unwrap_err();
    let printed = String::from_utf8(out).unwrap();
    assert!(
        printed.starts_with("audit log DAMAGED: 6 records"),
        "{printed}"
    );
    assert!(printed.contains("record 6: its hash"), "{printed}");
    assert!(
        format!("{err:#}").contains("rewritten at or before record 6"),
        "{err:#}"
    );
}

#[test]
fn audit_verify_fails_on_a_tampered_or_untrusted_head_and_without_a_key() {
    let tmp = setup();
    let d = tmp.path();
    let head = export_head(d);
    let file = d.join(crate::audit::heads::HEADS_FILE);
    let text = std::fs::read_to_string(&file).unwrap();
    // Someone moved the head back to record 5 and left the signature as it was.
    let r5 = &all_records(d)[4];
    std::fs::write(
        &file,
        text.replace(&head.hash, &r5.hash)
            .replace("\"seq\":6", "\"seq\":5"),
    )
    .unwrap();
    let e = run_err(d, &["audit", "verify"]);
    assert!(e.contains("line 1: the signature does not verify"), "{e}");
    std::fs::write(&file, &text).unwrap();
    run_ok(d, &["audit", "verify"]);

    // A key other than the signer's is trusted: the head is not.
    let other = tempfile::tempdir().unwrap();
    let other_key = run_ok(other.path(), &["audit", "key"]).trim().to_owned();
    let e = run_err(d, &["audit", "verify", "--public-key", &other_key]);
    assert!(e.contains("not a trusted audit key"), "{e}");

    // Heads, but no key to check them with: refused, saying what to pass.
    std::fs::remove_file(d.join(crate::audit::heads::KEY_FILE)).unwrap();
    let e = run_err(d, &["audit", "verify"]);
    assert!(e.contains("--public-key"), "{e}");
    let e = run_err(
        d,
        &[
            "audit",
            "verify",
            "--heads",
            "/nonexistent/heads.jsonl",
            "--public-key",
            &head.key,
        ],
    );
    assert!(e.contains("nonexistent"), "{e}");
}
#[test]
fn new_epoch_moves_the_feed_to_a_new_epoch_audited() {
    let tmp = setup();
    let d = tmp.path();
    let old = {
        let store = SqliteStore::open(store_path(d)).unwrap();
        sync_core::store::Store::epoch(&store).unwrap()
    };
    let before = SqliteAudit::open(&audit_path(d)).unwrap().len().unwrap();
    let v = json_of(&run_ok(d, &["new-epoch", "--json"]));
    assert_eq!(v["command"], "new-epoch");
    assert_eq!(v["old_epoch"], hex::encode(old));
    let store = SqliteStore::open(store_path(d)).unwrap();
    let new = sync_core::store::Store::epoch(&store).unwrap();
    assert_ne!(new, old);
    assert_eq!(v["epoch"], hex::encode(new));
    let audit = SqliteAudit::open(&audit_path(d)).unwrap();
    assert_eq!(audit.len().unwrap(), before + 1);
    let human = run_ok(d, &["new-epoch"]);
    assert!(human.starts_with("new feed epoch "), "{human}");
    assert!(
        human.contains(&format!("(was {})", hex::encode(new))),
        "{human}"
    );
}
