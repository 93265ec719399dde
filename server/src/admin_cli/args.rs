//! The command line of `nara-server admin`: its arguments and commands (clap).

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use sync_core::{DeviceId, PatientId, Role, UserId};

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The data directory the server uses.
    #[arg(long, default_value = "./nara-data")]
    pub data: PathBuf,
    /// Act on the server's PostgreSQL database instead of the data directory's SQLite files
    /// (a `postgres://` URL or libpq `key=value` pairs; default: the environment variable
    /// `NARA_DATABASE_URL`, if set). The directory and the audit log are the database's.
    #[arg(long, value_name = "URL", global = true)]
    pub database: Option<String>,
    /// With --database: connect over TLS, trusting only the certificate authorities in this
    /// PEM file (the database's own CA); without it, no TLS (a Unix socket or a private
    /// network).
    #[arg(long, value_name = "FILE", global = true)]
    pub database_ca: Option<PathBuf>,
    /// Print JSON (one object; JSON lines for `audit export`).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

fn role_parser() -> impl TypedValueParser<Value = Role> {
    PossibleValuesParser::new([
        Role::Carer.as_str(),
        Role::Nurse.as_str(),
        Role::Admin.as_str(),
    ])
    .try_map(|s| s.parse::<Role>())
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Add an organisation.
    AddOrg {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
    },
    /// Add a member of staff to an organisation.
    AddUser {
        #[arg(long)]
        id: UserId,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = role_parser())]
        role: Role,
        #[arg(long)]
        org: String,
    },
    /// Add a person receiving care (a pseudonymous id, never a personnummer).
    AddPatient {
        #[arg(long)]
        id: PatientId,
        #[arg(long)]
        name: String,
    },
    /// Give a user access to a person (the care relationship).
    Assign {
        #[arg(long)]
        user: UserId,
        #[arg(long)]
        patient: PatientId,
    },
    /// End a user's access to a person.
    Unassign {
        #[arg(long)]
        user: UserId,
        #[arg(long)]
        patient: PatientId,
    },
    /// Print a one-time enrollment code (valid 24 hours) for a user's new phone, and the
    /// enrollment string (`nara:<code>@<host:port>#<key pin>`, for a QR code) that also pins
    /// the server's key.
    Enroll {
        #[arg(long)]
        user: UserId,
        /// The server's address as phones reach it (host:port).
        #[arg(long, default_value = "127.0.0.1:7443")]
        server: String,
        /// The server's certificate (PEM) when it was started with --tls-cert; default: the
        /// development certificate in the data directory.
        #[arg(long)]
        tls_cert: Option<PathBuf>,
    },
    /// Print a one-time sign-in code (valid 15 minutes) for the web views under /app/: for a
    /// member of staff (--user; an admin opens the coordinator's dashboard), a person
    /// (--patient; their own record), or a relative the person has authorised on their own
    /// page (--relative NAME --patient P; refused without the person's recorded consent).
    LoginCode {
        #[arg(long, conflicts_with = "patient", required_unless_present = "patient")]
        user: Option<UserId>,
        #[arg(long)]
        patient: Option<PatientId>,
        /// The relative's name, as the person gave it in their consent (needs --patient).
        #[arg(long, requires = "patient")]
        relative: Option<String>,
        /// The server's address as browsers reach it (host:port), for the printed link.
        #[arg(long, default_value = "127.0.0.1:7443")]
        server: String,
    },
    /// End every web session of a member of staff (--user) or a person (--patient) at once: a
    /// lost computer, a code given to the wrong person, someone who left.
    RevokeSessions {
        #[arg(long, conflicts_with = "patient", required_unless_present = "patient")]
        user: Option<UserId>,
        #[arg(long)]
        patient: Option<PatientId>,
        /// A relative of --patient (their sessions only; the consent stays the person's).
        #[arg(long, requires = "patient")]
        relative: Option<String>,
    },
    /// List enrolled devices: user, last seen, revoked, feed cursor and changes pending.
    Devices,
    /// Revoke a device: its connections close within a second and it cannot connect again.
    Revoke {
        #[arg(long)]
        device: DeviceId,
    },
    /// Check or export the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// A consistent copy of the stores (documents, directory, audit log) into a new directory,
    /// taken while the server runs (SQLite's online backup API), audited first.
    Backup {
        #[arg(long)]
        to: PathBuf,
    },
    /// Put a backup back, with the server stopped: the current stores are moved aside (kept),
    /// the feed gets a new epoch so that every device recovers at its next sync, and the
    /// restored audit log records the restore and what it cut off.
    Restore {
        #[arg(long)]
        from: PathBuf,
    },
    /// Move the feed to a new epoch, audited first: every device reconciles what it holds with
    /// the server at its next sync (one recovery each), so what the server lost comes back from
    /// the devices; nothing is deleted. For stores put back by other means than `restore`: a
    /// PostgreSQL database restored or failed over in a way the nodes cannot see (they move the
    /// epoch themselves when the cluster's identity, timeline or database changes), a data
    /// directory copied back. Safe while the server runs.
    NewEpoch,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain and check it against the signed heads the server exported;
    /// fails if any record was edited or deleted, if the chain was rewritten after a head was
    /// exported, or if a signed head does not verify. Prints the head hash.
    Verify(VerifyArgs),
    /// Print the audit signing key's public key (the key is made first if there is none, as
    /// `serve` would): keep it outside the server for `audit verify --public-key`.
    Key {
        /// The key file (default: DATA/audit-key), as given to `serve --audit-key`.
        #[arg(long, value_name = "FILE")]
        audit_key: Option<PathBuf>,
    },
    /// A person's access log: who, what, when, from which device (JSON lines with --json).
    Export {
        #[arg(long)]
        patient: PatientId,
    },
}

/// What `audit verify` checks the chain against besides itself.
#[derive(Debug, Default, clap::Args)]
pub struct VerifyArgs {
    /// A file of signed heads (repeatable: one per node that exports its own); default:
    /// DATA/audit-heads.jsonl if there is one.
    #[arg(long, value_name = "FILE")]
    pub heads: Vec<PathBuf>,
    /// A trusted audit public key, 64 hex digits (repeatable; `nara-server admin audit key`
    /// prints it). Default: the public key of --audit-key.
    #[arg(long = "public-key", value_name = "HEX")]
    pub public_keys: Vec<String>,
    /// Without --public-key, trust the key in this file (default: DATA/audit-key). An auditor
    /// keeps the public key outside the server and passes --public-key instead.
    #[arg(long, value_name = "FILE")]
    pub audit_key: Option<PathBuf>,
}
