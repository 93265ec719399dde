//! `nara-server admin --database`: the real binary acts on the directory and the audit log in
//! PostgreSQL, through the admin service the HTTP API uses, so every record carries the text
//! the HTTP API writes for the same action (`server::admin::texts`); and a command whose audit
//! record cannot be written fails and changes nothing.
//!
//! Needs `NARA_TEST_DATABASE_URL` (`eval "$(scripts/pg-test-server.sh start)"`): without it
//! these tests fail, never skip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

use postgres::{Client, NoTls};
use server::admin::texts;
use server::audit::AuditLog;
use server::directory::Directory;
use server::pg::PgDirectory;
use server::pg::audit::PgAuditLog;
use sync_core::{DeviceId, Role, UserId};

const URL_VAR: &str = "NARA_TEST_DATABASE_URL";

fn server_url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{URL_VAR} is not set: these tests need a PostgreSQL server. Run them with \
             `scripts/test`, or start one with `eval \"$(scripts/pg-test-server.sh start)\"`."
        )
    })
}

/// An empty database of its own (the binary migrates it), dropped afterwards.
struct Db {
    name: String,
}

impl Db {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "nara_admin_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = Self::admin();
        // One statement each: several would run as one transaction, which these refuse.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        Self { name }
    }

    fn admin() -> Client {
        server_url()
            .parse::<postgres::Config>()
            .unwrap()
            .connect(NoTls)
            .unwrap()
    }

    /// This database as libpq `key=value` pairs (a later `dbname` wins).
    fn url(&self) -> String {
        let url = server_url();
        assert!(
            !url.starts_with("postgres"),
            "{URL_VAR} must be key=value pairs here"
        );
        format!("{url} dbname={}", self.name)
    }

    fn config(&self) -> postgres::Config {
        self.url().parse().unwrap()
    }

    fn client(&self) -> Client {
        self.config().connect(NoTls).unwrap()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Self::admin().batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// `nara-server admin --json <args>` with `setup` applied to the command; its output.
fn admin(setup: impl FnOnce(&mut Command), args: &[&str]) -> Output {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nara-server"));
    cmd.arg("admin")
        .arg("--json")
        .arg("--data")
        .arg(tmp.path().join("unused"))
        .args(args)
        .env_remove("NARA_DATABASE_URL")
        .env("RUST_LOG", "warn");
    setup(&mut cmd);
    cmd.output().unwrap()
}

/// `nara-server admin --database <db> --json <args>`, which must succeed; its JSON.
fn admin_ok(db: &Db, args: &[&str]) -> serde_json::Value {
    let out = admin(
        |c| {
            c.arg("--database").arg(db.url());
        },
        args,
    );
    assert!(
        out.status.success(),
        "admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every record as (actor, action, patient, device, detail), in order.
fn records(db: &Db) -> Vec<Record> {
    db.client()
        .query(
            "SELECT actor, action, patient, device, detail FROM audit_log ORDER BY seq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

fn rec(action: &str, patient: Option<&str>, device: Option<&str>, detail: String) -> Record {
    (
        "admin".into(),
        action.into(),
        patient.map(str::to_owned),
        device.map(str::to_owned),
        detail,
    )
}

type Record = (String, String, Option<String>, Option<String>, String);

#[test]
fn admin_database_acts_on_postgresql_with_the_http_apis_audit_texts() {
    let db = Db::new();
    admin_ok(&db, &["add-org", "--id", "norr", "--name", "Norr"]);
    admin_ok(
        &db,
        &[
            "add-user", "--id", "nina", "--name", "Nina", "--role", "nurse", "--org", "norr",
        ],
    );
    // The flag's place taken by the environment variable.
    let out = admin(
        |c| {
            c.env("NARA_DATABASE_URL", db.url());
        },
        &["add-patient", "--id", "p-1", "--name", "Astrid"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    admin_ok(&db, &["assign", "--user", "nina", "--patient", "p-1"]);
    let enrolled = admin_ok(&db, &["enroll", "--user", "nina"]);
    let code = enrolled["code"].as_str().unwrap();
    let expires_ms = enrolled["expires_ms"].as_i64().unwrap();

    // The phone redeems the code (as the server would, on the same database).
    let dir = PgDirectory::open_config(db.config()).unwrap();
    let user = dir.user(&UserId::new("nina").unwrap()).unwrap().unwrap();
    assert_eq!((user.role, user.org.as_str()), (Role::Nurse, "norr"));
    let cred = dir.redeem(code, expires_ms - 1000).unwrap();
    let device = cred.device.to_string();

    let listed = admin_ok(&db, &["devices"]);
    let devices = listed["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{listed}");
    assert_eq!(devices[0]["id"], device.as_str());
    assert_eq!(devices[0]["revoked"], false);
    admin_ok(&db, &["revoke", "--device", &device]);
    assert!(
        dir.is_revoked(&DeviceId::new(device.as_str()).unwrap())
            .unwrap()
    );
    let export = admin(
        |c| {
            c.arg("--database").arg(db.url());
        },
        &["audit", "export", "--patient", "p-1"],
    );
    assert!(export.status.success());
    assert_eq!(String::from_utf8(export.stdout).unwrap().lines().count(), 2);

    let nina = UserId::new("nina").unwrap();
    assert_eq!(
        records(&db),
        vec![
            rec("add-org", None, None, texts::add_org("norr")),
            rec(
                "add-user",
                None,
                None,
                texts::add_user(&nina, Role::Nurse, "norr")
            ),
            rec("add-patient", Some("p-1"), None, texts::add_patient()),
            rec("assign", Some("p-1"), None, texts::assignment(&nina, true)),
            rec("enroll", None, None, texts::enroll(&nina, expires_ms)),
            rec("read", None, None, texts::device_list(1)),
            rec("revoke", None, Some(&device), texts::revoke(Some(&nina))),
            rec("read", Some("p-1"), None, texts::audit_export(2)),
        ]
    );
    // The chain verifies, as the command line and the log itself say.
    let report = PgAuditLog::open_config(db.config())
        .unwrap()
        .verify()
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 8);
    let verified = admin_ok(&db, &["audit", "verify"]);
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["records"], 8, "verify adds no record: {verified}");
}

#[test]
fn admin_database_refuses_what_needs_a_data_directory_by_name() {
    let db = Db::new();
    for (args, name) in [
        (&["backup", "--to", "/tmp/nowhere"][..], "backup"),
        (&["login-code", "--user", "nina"][..], "login-code"),
    ] {
        let out = admin(
            |c| {
                c.arg("--database").arg(db.url());
            },
            args,
        );
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("admin {name}`")) && err.contains("--database"),
            "{err}"
        );
    }
    assert!(records(&db).is_empty());
}

/// The audit log fails for real (PostgreSQL refuses every insert into it): the command fails,
/// and the directory is unchanged.
#[test]
fn admin_database_does_nothing_when_the_audit_log_cannot_be_written() {
    let db = Db::new();
    admin_ok(&db, &["add-org", "--id", "norr", "--name", "Norr"]);
    db.client()
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'the audit disk is full'; END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON audit_log
                 FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .unwrap();
    let out = admin(
        |c| {
            c.arg("--database").arg(db.url());
        },
        &["add-patient", "--id", "p-1", "--name", "Astrid"],
    );
    assert!(!out.status.success(), "added unaudited");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not be audited"), "{err}");
    let dir = PgDirectory::open_config(db.config()).unwrap();
    assert!(dir.patients().unwrap().is_empty(), "the patient was added");
    let out = admin(
        |c| {
            c.arg("--database").arg(db.url());
        },
        &["devices"],
    );
    assert!(
        !out.status.success(),
        "the device list was printed unaudited"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(records(&db).len(), 1);
}

/// `--database-ca`: over TLS to the test server, trusting only its CA; a file holding no
/// certificate is refused before anything is done.
#[test]
fn admin_database_ca_connects_over_tls() {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: start the test server with scripts/pg-test-server.sh")
        })
    };
    let (tls_url, ca) = (
        var("NARA_TEST_DATABASE_TLS_URL"),
        var("NARA_TEST_DATABASE_CA"),
    );
    let db = Db::new();
    let url = format!("{tls_url} dbname={}", db.name);
    let out = admin(
        |c| {
            c.args(["--database", &url, "--database-ca", &ca]);
        },
        &["add-org", "--id", "norr", "--name", "Norr"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(records(&db).len(), 1);
    let empty = tempfile::NamedTempFile::new().unwrap();
    let out = admin(
        |c| {
            c.args(["--database", &url, "--database-ca"])
                .arg(empty.path());
        },
        &["add-org", "--id", "syd", "--name", "Syd"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CA"), "{err}");
    assert_eq!(records(&db).len(), 1);
}

/// `nara-server admin --database <db> --json <args>`, which must fail; its stdout and error.
fn admin_fails(db: &Db, args: &[&str]) -> (String, String) {
    let out = admin(
        |c| {
            c.arg("--database").arg(db.url());
        },
        args,
    );
    assert!(!out.status.success(), "admin {args:?} succeeded");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two nodes on one database, each with its own audit key and heads file: `audit verify`
/// checks the one chain against both, and catches a rewrite made in the database after them.
#[test]
fn admin_database_audit_verify_checks_the_signed_heads_of_several_nodes() {
    use server::audit::heads::{AuditKey, Exporter, HEADS_FILE, HeadExport, KEY_FILE};
    let db = Db::new();
    admin_ok(&db, &["add-org", "--id", "norr", "--name", "Norr"]);
    admin_ok(&db, &["add-patient", "--id", "p-1", "--name", "P"]);
    let mut nodes: Vec<(tempfile::TempDir, String, Exporter)> = (0..2)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let (key, _) = AuditKey::load_or_create(&dir.path().join(KEY_FILE)).unwrap();
            let public = key.public_hex();
            let exporter = Exporter::new(HeadExport {
                key,
                file: dir.path().join(HEADS_FILE),
                every: std::time::Duration::from_secs(60),
            });
            (dir, public, exporter)
        })
        .collect();
    let log = PgAuditLog::open_config(db.config()).unwrap();
    // Node 0 exports at record 2, node 1 (after another action) at record 3.
    assert_eq!(nodes[0].2.export(&log, 1).unwrap().unwrap().seq, 2);
    admin_ok(&db, &["add-org", "--id", "syd", "--name", "Syd"]);
    assert_eq!(nodes[1].2.export(&log, 2).unwrap().unwrap().seq, 3);
    let file = |i: usize| nodes[i].0.path().join(HEADS_FILE);
    let (f0, f1) = (file(0), file(1));
    let args = |keys: &[&str]| {
        let mut a = vec![
            "audit".to_owned(),
            "verify".to_owned(),
            "--heads".to_owned(),
            f0.display().to_string(),
            "--heads".to_owned(),
            f1.display().to_string(),
        ];
        for k in keys {
            a.push("--public-key".to_owned());
            a.push((*k).to_owned());
        }
        a
    };
    let both = args(&[&nodes[0].1, &nodes[1].1]);
    let both: Vec<&str> = both.iter().map(String::as_str).collect();
    let v = admin_ok(&db, &both);
    assert_eq!(
        (v["ok"].as_bool(), v["signed_heads"].as_u64()),
        (Some(true), Some(2)),
        "{v}"
    );
    // Only node 0's key trusted: node 1's head is refused.
    let one = args(&[&nodes[0].1]);
    let one: Vec<&str> = one.iter().map(String::as_str).collect();
    let (_, err) = admin_fails(&db, &one);
    assert!(err.contains("not a trusted audit key"), "{err}");

    // Record 3 rewritten in the database, its hash and the head row recomputed.
    let mut records = log.latest(&server::audit::AuditAction::ALL, 100).unwrap();
    records.reverse();
    let mut r3 = records[2].clone();
    r3.entry.detail = "org nobody".into();
    r3.hash = r3.chain_hash();
    let mut client = db.client();
    client
        .execute(
            "UPDATE audit_log SET detail = $1, hash = $2 WHERE seq = 3",
            &[&r3.entry.detail, &r3.hash],
        )
        .unwrap();
    client
        .execute("UPDATE audit_head SET hash = $1", &[&r3.hash])
        .unwrap();
    assert!(log.verify().unwrap().ok, "consistent in itself");
    let (out, err) = admin_fails(&db, &both);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    assert!(err.contains("record 3: its hash"), "{err}");
    assert_eq!(v["problems"].as_array().unwrap().len(), 1, "{v}");
}
