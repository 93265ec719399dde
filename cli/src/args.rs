//! The command line: every command, its flags and their help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use nara_client::care::OrderInput;
use sync_core::model::AdministrationOutcome;
use sync_core::{PatientId, RecordId};

#[derive(Debug, Parser)]
#[command(
    name = "nara",
    version,
    about = "Nära Sync on the command line: one home directory is one device"
)]
pub(crate) struct Cli {
    /// The device's directory (its store and credential).
    #[arg(long, global = true, env = "NARA_HOME", default_value = ".nara")]
    pub(crate) home: PathBuf,
    /// Print one JSON object.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Enroll this device with the enrollment string `nara-server admin enroll` prints
    /// (`nara:<code>@<host:port>#<key pin>`), or with --server and --code and one of --pin,
    /// --ca-cert or --insecure-trust-first-use.
    Enroll {
        /// The enrollment string: code, server and the pin of the server's key.
        #[arg(conflicts_with_all = ["server", "code"], required_unless_present = "code")]
        enrollment: Option<String>,
        /// `https://host:port`
        #[arg(long, requires = "code")]
        server: Option<String>,
        /// The one-time code (with --server).
        #[arg(long, requires = "server")]
        code: Option<String>,
        /// The server key's pin: SHA-256 of its SPKI, base64url (as `admin enroll` prints it).
        /// Base64url may begin with `-`: such a pin is still the value, not another flag.
        #[arg(long, allow_hyphen_values = true)]
        pin: Option<String>,
        /// A private CA certificate (PEM) that issued the server's certificate.
        #[arg(long)]
        ca_cert: Option<PathBuf>,
        /// Accept and pin the key the server presents now (only on a network you trust).
        #[arg(long)]
        insecure_trust_first_use: bool,
    },
    /// People with documents on this device.
    Patients,
    /// A person's header, plan, orders, today's medication and recent journal.
    Show {
        #[arg(long)]
        patient: PatientId,
    },
    /// Sign a journal note.
    Note {
        #[arg(long)]
        patient: PatientId,
        #[arg(long)]
        text: String,
    },
    /// Record an observation (body-weight, blood-pressure-systolic, heart-rate, ...).
    Observe {
        #[arg(long)]
        patient: PatientId,
        #[arg(long)]
        code: String,
        #[arg(long, allow_hyphen_values = true)]
        value: f64,
        #[arg(long)]
        unit: String,
    },
    /// Save a visit's records together at its end (tasks, notes, observations, doses) as one
    /// change per document: read as JSON from --file, or stdin (`-`). See `care::Visit`.
    Visit {
        #[arg(long)]
        patient: PatientId,
        /// A JSON file: {"started_ms", "tasks": [{"task", "done", "reason"}], "notes": [..],
        /// "observations": [{"code", "value", "unit"}], "doses": [{"order", "slot",
        /// "outcome", "reason", "again"}]}; `-` reads stdin.
        #[arg(long, default_value = "-")]
        file: PathBuf,
    },
    /// Record a medication slot: given, not given (with a reason) or self-administered.
    Give {
        #[arg(long)]
        patient: PatientId,
        #[arg(long)]
        order: RecordId,
        /// `YYYY-MM-DDTHH:MM`; without it, a "when needed" order's dose now.
        #[arg(long)]
        slot: Option<String>,
        #[arg(long, value_enum, default_value_t = Outcome::Given)]
        outcome: Outcome,
        #[arg(long)]
        reason: Option<String>,
        /// Record a dose although this device already shows the slot given.
        #[arg(long)]
        again: bool,
        /// A "when needed" dose past the order's limits, with --reason: flagged for the nurse.
        #[arg(long, requires = "reason")]
        anyway: bool,
        /// Record a dose although the drug matches an active allergy of the person.
        #[arg(long)]
        confirm_allergy: bool,
    },
    /// The signing list of a shift: every due slot and its status.
    Round(crate::round::RoundArgs),
    /// Delegate medication tasks to a worker for some people (nurse).
    Delegate(crate::round::DelegateArgs),
    /// Delegations, or those ending soon.
    Delegations(crate::round::DelegationsArgs),
    /// Revoke a delegation (nurse).
    RevokeDelegation(crate::round::RevokeArgs),
    /// Record the effect of a "when needed" dose (its follow-up).
    Effect(crate::round::EffectArgs),
    /// Add a medication order, or revise its current version (nurse).
    Order {
        #[arg(long)]
        patient: PatientId,
        #[arg(long)]
        order: RecordId,
        #[command(flatten)]
        fields: OrderFields,
    },
    /// Edit a goal's description; creates the goal if it is new (nurse).
    Goal {
        #[arg(long)]
        patient: PatientId,
        #[arg(long)]
        goal: RecordId,
        #[arg(long)]
        text: String,
        /// The goal's title (new goal: default the text's first line).
        #[arg(long)]
        title: Option<String>,
    },
    /// Registers with concurrent values, waiting for a nurse.
    Conflicts {
        #[arg(long)]
        patient: Option<PatientId>,
    },
    /// Safety flags (possible double dose, given on a superseded order, without a valid
    /// delegation, past a "when needed" limit; from the server: overdue slots and follow-ups).
    Flags {
        #[arg(long)]
        patient: Option<PatientId>,
        /// Only flags not yet acknowledged.
        #[arg(long)]
        open: bool,
    },
    /// Resolve an order's conflict with a version superseding all current ones (nurse).
    Resolve {
        #[arg(long)]
        patient: PatientId,
        #[arg(long)]
        order: RecordId,
        /// Start from this candidate revision; fields given override it.
        #[arg(long)]
        from: Option<RecordId>,
        #[command(flatten)]
        fields: OrderFields,
    },
    /// Acknowledge a flag (nurse).
    Ack {
        #[arg(long)]
        patient: PatientId,
        #[arg(long)]
        flag: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Record an allergy, or a new value of one (criticality, reaction, status).
    Allergy(crate::alerts::AllergyArgs),
    /// Record the resuscitation decision (nurse).
    Resuscitation(crate::alerts::ResuscitationArgs),
    /// Mark a note, an observation or an administration entered in error, with a reason.
    Correct(crate::alerts::CorrectArgs),
    /// What others recorded for a person since you last viewed them on this device (`show` or
    /// `handover`): notes, doses, corrections, order and alert changes, flags.
    Handover(crate::handover::HandoverArgs),
    /// Sync with the server now; `--watch` stays connected until interrupted.
    Sync {
        #[arg(long)]
        watch: bool,
    },
    /// Enrollment, changes waiting for upload, last time in sync.
    Status,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Outcome {
    Given,
    NotGiven,
    SelfAdministered,
}

impl From<Outcome> for AdministrationOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Given => AdministrationOutcome::Given,
            Outcome::NotGiven => AdministrationOutcome::NotGiven,
            Outcome::SelfAdministered => AdministrationOutcome::SelfAdministered,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct OrderFields {
    #[arg(long)]
    pub(crate) drug: Option<String>,
    #[arg(long)]
    pub(crate) strength: Option<String>,
    #[arg(long)]
    pub(crate) dose: Option<String>,
    #[arg(long)]
    pub(crate) route: Option<String>,
    /// Times of day, `HH:MM,HH:MM`.
    #[arg(long, value_delimiter = ',')]
    pub(crate) times: Option<Vec<String>>,
    /// First day, `YYYY-MM-DD`.
    #[arg(long)]
    pub(crate) start: Option<String>,
    /// Last day, `YYYY-MM-DD`.
    #[arg(long)]
    pub(crate) stop: Option<String>,
    /// Administration is delegated to home-care staff.
    #[arg(long, conflicts_with = "not_delegated")]
    pub(crate) delegated: bool,
    /// Administration is not delegated.
    #[arg(long)]
    pub(crate) not_delegated: bool,
    /// Minutes either side of a slot within which a dose is on time (default 60).
    #[arg(long)]
    pub(crate) window_minutes: Option<u32>,
    /// "When needed" (no --times): with --max-per-day, --min-interval, --follow-up-minutes.
    #[arg(long, requires_all = ["max_per_day", "min_interval", "follow_up_minutes"])]
    pub(crate) prn: bool,
    /// Most doses in 24 hours (with --prn).
    #[arg(long, requires = "prn")]
    pub(crate) max_per_day: Option<u32>,
    /// Least hours between two doses (with --prn).
    #[arg(long, requires = "prn")]
    pub(crate) min_interval: Option<f64>,
    /// Minutes after a dose when its effect is followed up (with --prn).
    #[arg(long, requires = "prn")]
    pub(crate) follow_up_minutes: Option<u32>,
}

impl From<OrderFields> for OrderInput {
    fn from(f: OrderFields) -> Self {
        OrderInput {
            drug: f.drug,
            strength: f.strength,
            dose: f.dose,
            route: f.route,
            times: f.times,
            start: f.start,
            stop: f.stop,
            delegated: match (f.delegated, f.not_delegated) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            window_minutes: f.window_minutes,
            prn: match (f.prn, f.max_per_day, f.min_interval, f.follow_up_minutes) {
                (true, Some(max_per_day), Some(hours), Some(follow_up_minutes)) => {
                    Some(sync_core::model::PrnRule {
                        max_per_day,
                        // Bounded by the model's check; a negative or huge value is refused there.
                        min_interval_minutes: (hours * 60.0).round().clamp(0.0, f64::from(u32::MAX))
                            as u32,
                        follow_up_minutes,
                    })
                }
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_that_begins_with_a_hyphen_is_the_pin() {
        let cli = Cli::try_parse_from([
            "nara",
            "enroll",
            "--server",
            "https://localhost:7443",
            "--code",
            "MH6HDM0RGEND",
            "--pin",
            "-dUhUnnEmPWEcxCulCntPis33-C1vThop5PlKHKu0k0",
        ]);
        match cli.map(|c| c.command) {
            Ok(Command::Enroll { pin, .. }) => assert_eq!(
                pin.as_deref(),
                Some("-dUhUnnEmPWEcxCulCntPis33-C1vThop5PlKHKu0k0")
            ),
            other => panic!("{other:?}"),
        }
    }
}
