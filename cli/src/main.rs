//! `nara`: the Nära Sync device CLI. One home directory is one phone: play two care workers
//! and a nurse on one machine with three homes against a local `nara-server`.
//!
//! Every command takes `--json` and then prints one JSON object (an error too, as
//! `{"error": "..."}`, with exit code 1); `sync --watch --json` prints one object per line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use nara_client::care::{self, Clock, OrderInput};
use nara_client::{Device, EnrollRequest, Status, SyncReport};
use serde_json::{Value, json};
use sync_core::model::{AdministrationOutcome, ObservationCode};
use sync_core::{PatientId, RecordId, Timestamp};
use time::{OffsetDateTime, UtcOffset};

#[derive(Debug, Parser)]
#[command(
    name = "nara",
    version,
    about = "Nära Sync on the command line: one home directory is one device"
)]
struct Cli {
    /// The device's directory (its store and credential).
    #[arg(long, global = true, env = "NARA_HOME", default_value = ".nara")]
    home: PathBuf,
    /// Print one JSON object.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    /// Record a medication slot: given, not given (with a reason) or self-administered.
    Give {
        #[arg(long)]
        patient: PatientId,
        #[arg(long)]
        order: RecordId,
        /// `YYYY-MM-DDTHH:MM`
        #[arg(long)]
        slot: String,
        #[arg(long, value_enum, default_value_t = Outcome::Given)]
        outcome: Outcome,
        #[arg(long)]
        reason: Option<String>,
        /// Record a dose although this device already shows the slot given.
        #[arg(long)]
        again: bool,
    },
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
    /// Safety flags (possible double dose, given on a superseded order).
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
    /// Sync with the server now; `--watch` stays connected until interrupted.
    Sync {
        #[arg(long)]
        watch: bool,
    },
    /// Enrollment, changes waiting for upload, last time in sync.
    Status,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Outcome {
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
struct OrderFields {
    #[arg(long)]
    drug: Option<String>,
    #[arg(long)]
    strength: Option<String>,
    #[arg(long)]
    dose: Option<String>,
    #[arg(long)]
    route: Option<String>,
    /// Times of day, `HH:MM,HH:MM`.
    #[arg(long, value_delimiter = ',')]
    times: Option<Vec<String>>,
    /// First day, `YYYY-MM-DD`.
    #[arg(long)]
    start: Option<String>,
    /// Last day, `YYYY-MM-DD`.
    #[arg(long)]
    stop: Option<String>,
    /// Administration is delegated to home-care staff.
    #[arg(long, conflicts_with = "not_delegated")]
    delegated: bool,
    /// Administration is not delegated.
    #[arg(long)]
    not_delegated: bool,
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
        }
    }
}

/// What a command prints: one JSON object, or lines for people.
struct Output {
    json: Value,
    human: String,
}

fn main() -> ExitCode {
    // Read the local offset while the process has one thread (the only time it is sound).
    let offset = UtcOffset::current_local_offset().unwrap_or(UtcOffset::UTC);
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let json = cli.json;
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|rt| rt.block_on(run(cli, offset)));
    match result {
        Ok(out) => {
            if json {
                println!("{}", out.json);
            } else if !out.human.is_empty() {
                println!("{}", out.human.trim_end());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                println!("{}", json!({ "error": format!("{e:#}") }));
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Ctx {
    offset: UtcOffset,
    json: bool,
}

impl Ctx {
    fn clock(&self) -> anyhow::Result<Clock> {
        let now = nara_client::now();
        let date = local(now, self.offset).date();
        let today = format!(
            "{:04}-{:02}-{:02}",
            date.year(),
            u8::from(date.month()),
            date.day()
        );
        Ok(Clock::new(now, today)?)
    }

    fn when(&self, t: Timestamp) -> String {
        let dt = local(t, self.offset);
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute()
        )
    }
}

fn local(t: Timestamp, offset: UtcOffset) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.0) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(offset)
}

fn open(home: &Path) -> anyhow::Result<Device> {
    Ok(Device::open(home)?)
}

fn to_json(v: &impl serde::Serialize) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(v)?)
}

async fn run(cli: Cli, offset: UtcOffset) -> anyhow::Result<Output> {
    let ctx = Ctx {
        offset,
        json: cli.json,
    };
    let home = cli.home.as_path();
    match cli.command {
        Command::Enroll {
            enrollment,
            server,
            code,
            pin,
            ca_cert,
            insecure_trust_first_use,
        } => {
            let mut request = match (enrollment, server, code) {
                (Some(link), _, _) => EnrollRequest::from_link(&link)?,
                (None, Some(server), Some(code)) => EnrollRequest {
                    server,
                    code,
                    ..EnrollRequest::default()
                },
                _ => anyhow::bail!("give the enrollment string, or --server and --code"),
            };
            if pin.is_some() {
                request.pin = pin;
            }
            if let Some(path) = ca_cert {
                request.ca_pem = Some(
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?,
                );
            }
            request.insecure_trust_first_use = insecure_trust_first_use;
            let (_, e) = Device::enroll(home, &request).await?;
            let mut human = format!(
                "enrolled {} as {} ({}) with {}\nserver trusted by {}",
                e.device,
                e.user,
                e.role.as_str(),
                e.server,
                e.pin
            );
            if e.trusted_on_first_use {
                human.push_str(
                    "\n(trust on first use, as asked: this key is now pinned; compare it with the pin `nara-server admin enroll` prints)",
                );
            }
            if !e.role_from_server {
                human.push_str("\n(the server did not say the role; assumed carer)");
            }
            Ok(Output {
                json: to_json(&e)?,
                human,
            })
        }
        Command::Patients => {
            let device = open(home)?;
            let list = care::patients(&device)?;
            let human = if list.is_empty() {
                "no people on this device yet (sync first?)".to_owned()
            } else {
                list.iter()
                    .map(|p| {
                        format!(
                            "{}  {}  {} documents{}{}",
                            p.patient,
                            p.display_name.as_deref().unwrap_or("-"),
                            p.documents,
                            if p.conflicts > 0 {
                                format!(", {} conflicts", p.conflicts)
                            } else {
                                String::new()
                            },
                            if p.open_flags > 0 {
                                format!(", {} open flags", p.open_flags)
                            } else {
                                String::new()
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok(Output {
                json: json!({ "patients": to_json(&list)? }),
                human,
            })
        }
        Command::Show { patient } => {
            let device = open(home)?;
            let o = care::overview(&device, &patient, &ctx.clock()?)?;
            let human = show_human(&ctx, &o)?;
            Ok(Output {
                json: to_json(&o)?,
                human,
            })
        }
        Command::Note { patient, text } => {
            let device = open(home)?;
            let r = care::add_note(&device, &patient, &text, &ctx.clock()?)?;
            written(
                &device,
                &r,
                format!("note {} saved in {}", r.record, r.document),
            )
        }
        Command::Observe {
            patient,
            code,
            value,
            unit,
        } => {
            let code: ObservationCode = serde_json::from_value(Value::String(code.clone()))
                .with_context(|| {
                    format!(
                        "unknown observation code {code:?}; one of body-weight, blood-pressure-systolic, blood-pressure-diastolic, body-temperature, heart-rate, oxygen-saturation, blood-glucose, pain"
                    )
                })?;
            let device = open(home)?;
            let r = care::observe(&device, &patient, code, value, &unit, &ctx.clock()?)?;
            written(
                &device,
                &r,
                format!("observation {} saved in {}", r.record, r.document),
            )
        }
        Command::Give {
            patient,
            order,
            slot,
            outcome,
            reason,
            again,
        } => {
            let device = open(home)?;
            let a = care::give(
                &device,
                &patient,
                &order,
                &slot,
                outcome.into(),
                reason.as_deref(),
                again,
                &ctx.clock()?,
            )?;
            let mut human = format!(
                "{} for {} at {} recorded against version {} ({})",
                match outcome {
                    Outcome::Given => "given",
                    Outcome::NotGiven => "not given",
                    Outcome::SelfAdministered => "self-administered",
                },
                a.order,
                a.slot,
                a.order_version,
                a.order_revision
            );
            if let care::SlotView::PossibleDoubleDose { administrations } = &a.slot_status {
                human.push_str(&format!(
                    "\nWARNING: possible double dose: {} administrations recorded for this slot",
                    administrations.len()
                ));
            }
            let mut json = to_json(&a)?;
            json["pending"] = json!(device.pending_count()?);
            Ok(Output { json, human })
        }
        Command::Order {
            patient,
            order,
            fields,
        } => {
            let device = open(home)?;
            let w = care::write_order(&device, &patient, &order, &fields.into(), &ctx.clock()?)?;
            order_written(&device, &w)
        }
        Command::Resolve {
            patient,
            order,
            from,
            fields,
        } => {
            let device = open(home)?;
            let w = care::resolve_order(
                &device,
                &patient,
                &order,
                from.as_ref(),
                &fields.into(),
                &ctx.clock()?,
            )?;
            order_written(&device, &w)
        }
        Command::Goal {
            patient,
            goal,
            text,
            title,
        } => {
            let device = open(home)?;
            let g = care::set_goal(
                &device,
                &patient,
                &goal,
                &text,
                title.as_deref(),
                &ctx.clock()?,
            )?;
            let human = format!(
                "goal {} {}: {}",
                g.goal,
                if g.created { "created" } else { "updated" },
                g.text
            );
            let mut json = to_json(&g)?;
            json["pending"] = json!(device.pending_count()?);
            Ok(Output { json, human })
        }
        Command::Conflicts { patient } => {
            let device = open(home)?;
            let list = care::conflicts(&device, patient.as_ref())?;
            let mut human = Vec::new();
            for c in &list {
                human.push(format!("{} {} in conflict:", c.document, c.register));
                for cand in &c.candidates {
                    human.push(format!(
                        "  {} (version {}) by {} ({}) at {}: {}",
                        cand.revision,
                        cand.version,
                        cand.author.user,
                        cand.author.role.as_str(),
                        ctx.when(cand.at),
                        serde_json::to_string(&cand.value)?
                    ));
                }
            }
            if list.is_empty() {
                human.push("no conflicts".into());
            }
            Ok(Output {
                json: json!({ "conflicts": to_json(&list)? }),
                human: human.join("\n"),
            })
        }
        Command::Flags {
            patient,
            open: only_open,
        } => {
            let device = open(home)?;
            let list: Vec<_> = care::flags(&device, patient.as_ref())?
                .into_iter()
                .filter(|f| f.open || !only_open)
                .collect();
            let mut human: Vec<String> = list
                .iter()
                .map(|f| {
                    format!(
                        "{} {}  {} ({} records{})",
                        f.patient,
                        f.id,
                        if f.open { "OPEN" } else { "acknowledged" },
                        f.evidence.len(),
                        if f.acknowledgements.is_empty() {
                            String::new()
                        } else {
                            format!(", {} acknowledgements", f.acknowledgements.len())
                        }
                    )
                })
                .collect();
            if list.is_empty() {
                human.push("no flags".into());
            }
            Ok(Output {
                json: json!({ "flags": to_json(&list)? }),
                human: human.join("\n"),
            })
        }
        Command::Ack {
            patient,
            flag,
            comment,
        } => {
            let device = open(home)?;
            let r = care::ack_flag(&device, &patient, &flag, comment.as_deref(), &ctx.clock()?)?;
            written(
                &device,
                &r,
                format!("flag {flag} acknowledged ({})", r.record),
            )
        }
        Command::Sync { watch: false } => {
            let device = open(home)?;
            let report = device.sync_once().await?;
            Ok(Output {
                json: to_json(&report)?,
                human: report_human(&ctx, &report),
            })
        }
        Command::Sync { watch: true } => watch(&ctx, home).await,
        Command::Status => {
            let device = open(home)?;
            let e = device.enrollment();
            let pending = device.pending_count()?;
            let quarantined = device.quarantined()?;
            let last = device.last_in_sync()?;
            let clock = device.clock()?;
            let incarnation = device.incarnation()?;
            let incarnation_line = match incarnation {
                i if i.number == 0 && i.rewrites_waiting == 0 => String::new(),
                i => format!(
                    "\nincarnation {} (this phone's data was restored or copied){}",
                    i.number,
                    if i.rewrites_waiting > 0 {
                        format!(
                            "; {} records to write again after the next sync",
                            i.rewrites_waiting
                        )
                    } else {
                        String::new()
                    }
                ),
            };
            let clock_line = match clock.offset_ms {
                Some(o) if clock.off => clock_warning(o).trim_start_matches("; ").to_owned(),
                Some(_) => "clock: within 5 minutes of the server's".to_owned(),
                None => "clock: not checked against the server yet".to_owned(),
            };
            let human = format!(
                "{} ({}) on device {} with {}\n{} changes waiting for upload{}\nlast in sync: {}\n{clock_line}{incarnation_line}",
                e.user,
                e.role.as_str(),
                e.device,
                e.server,
                pending,
                if quarantined.is_empty() {
                    String::new()
                } else {
                    format!(", {} refused by the server (kept here)", quarantined.len())
                },
                last.map(|t| ctx.when(t)).unwrap_or_else(|| "never".into())
            );
            Ok(Output {
                json: json!({
                    "device": e.device,
                    "user": e.user,
                    "role": e.role,
                    "server": e.server,
                    "pin": e.pin.describe(),
                    "status": device.status(),
                    "pending": pending,
                    "quarantined": to_json(&quarantined)?,
                    "last_in_sync": last,
                    "clock": clock,
                    "incarnation": incarnation,
                }),
                human,
            })
        }
    }
}

fn written(device: &Device, r: &care::Recorded, human: String) -> anyhow::Result<Output> {
    let mut json = to_json(r)?;
    json["pending"] = json!(device.pending_count()?);
    Ok(Output { json, human })
}

fn order_written(device: &Device, w: &care::OrderWritten) -> anyhow::Result<Output> {
    let human = format!(
        "order {} {} version {} ({}): {} {} {} {} at {}",
        w.order,
        if w.created {
            "created as"
        } else {
            "revised to"
        },
        w.version,
        w.revision,
        w.value.drug,
        w.value.strength,
        w.value.dose,
        w.value.route,
        w.value.times.join(", ")
    );
    let mut json = to_json(w)?;
    json["pending"] = json!(device.pending_count()?);
    Ok(Output { json, human })
}

fn report_human(ctx: &Ctx, r: &SyncReport) -> String {
    let mut lines = vec![format!(
        "received {} changes, uploaded {}; {} waiting for upload",
        r.received, r.uploaded, r.pending
    )];
    for c in &r.conflicts_raised {
        lines.push(format!("CONFLICT: {} {}", c.document, c.register));
    }
    for f in &r.flags_raised {
        lines.push(format!("FLAG: {} {}", f.patient, f.flag));
    }
    for q in &r.refused {
        lines.push(format!(
            "REFUSED by the server ({:?}): a change to {}: {}",
            q.code, q.doc, q.detail
        ));
    }
    for i in &r.incoming_refused {
        lines.push(format!(
            "refused from the server: a change to {}: {}",
            i.document, i.detail
        ));
    }
    if !r.withdrawn.is_empty() {
        let names: Vec<String> = r.withdrawn.iter().map(ToString::to_string).collect();
        lines.push(format!("no longer on your case: {}", names.join(", ")));
    }
    if let Some(n) = r.reincarnated {
        lines.push(format!(
            "RESTORED OR COPIED: this phone's data was behind the server (a backup put back, or \
             copied from another phone); it goes on as incarnation {n}, and what it had not \
             uploaded is written again"
        ));
    }
    if r.rewritten > 0 {
        lines.push(format!("{} records written again", r.rewritten));
    }
    for i in &r.rewrite_refused {
        lines.push(format!(
            "NOT WRITTEN AGAIN: a record of {}: {}",
            i.document, i.detail
        ));
    }
    if let Some(at) = r.in_sync_at {
        lines.push(format!("in sync at {}", ctx.when(at)));
    }
    if let Some(offset) = r.clock_offset_ms.filter(|_| r.clock_off) {
        lines.push(clock_warning(offset).trim_start_matches("; ").to_owned());
    }
    lines.join("\n")
}

/// "; CLOCK OFF: ..." for a device clock more than 5 minutes off the server's.
fn clock_warning(offset_ms: i64) -> String {
    let minutes = offset_ms.unsigned_abs() / 60_000;
    let side = if offset_ms > 0 { "behind" } else { "ahead of" };
    format!(
        "; CLOCK OFF: this device's clock is {}h{:02}m {side} the server's (times it records are flagged for review)",
        minutes / 60,
        minutes % 60
    )
}

fn status_human(ctx: &Ctx, s: &Status, pending: usize) -> String {
    match s {
        Status::Offline { clock_off_by_ms } => {
            let clock = clock_off_by_ms.map(clock_warning).unwrap_or_default();
            format!("offline; {pending} changes waiting{clock}")
        }
        Status::Connecting => "connecting...".into(),
        Status::Syncing {
            received,
            remaining,
        } => format!("syncing {received} of {}", received + u64::from(*remaining)),
        Status::InSync {
            at,
            clock_off_by_ms,
        } => {
            let clock = clock_off_by_ms.map(clock_warning).unwrap_or_default();
            format!(
                "in sync at {}; {pending} changes waiting{clock}",
                ctx.when(*at)
            )
        }
        Status::Error { reason } => format!("error: {reason}; {pending} changes waiting"),
        Status::Wiped { .. } => "revoked by the server: this device's data was erased".into(),
    }
}

/// `sync --watch`: prints every status change until Ctrl-C.
async fn watch(ctx: &Ctx, home: &Path) -> anyhow::Result<Output> {
    let device = open(home)?;
    let mut status = device.subscribe();
    let print = |s: &Status| -> anyhow::Result<()> {
        let pending = device.pending_count()?;
        if ctx.json {
            println!("{}", json!({ "status": s, "pending": pending }));
        } else {
            println!("{}", status_human(ctx, s, pending));
        }
        Ok(())
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let printer = async {
        while status.changed().await.is_ok() {
            let s = status.borrow_and_update().clone();
            if let Err(e) = print(&s) {
                tracing::warn!(error = %e, "status unavailable");
            }
        }
    };
    let report = tokio::select! {
        r = device.watch(shutdown) => r?,
        _ = printer => bail!("status updates ended"),
    };
    Ok(Output {
        json: json!({ "stopped": true, "report": to_json(&report)? }),
        human: report_human(ctx, &report),
    })
}

fn show_human(ctx: &Ctx, o: &care::Overview) -> anyhow::Result<String> {
    use care::RegisterShown;
    let value = |r: &RegisterShown| -> anyhow::Result<String> {
        Ok(match r {
            RegisterShown::Unset => "-".into(),
            RegisterShown::Value(v) => format!(
                "{} (v{} by {})",
                serde_json::to_string(&v.value)?,
                v.version,
                v.author.user
            ),
            RegisterShown::Conflict { candidates } => format!(
                "IN CONFLICT: {}",
                candidates
                    .iter()
                    .map(|c| Ok(format!(
                        "{} v{} by {}: {}",
                        c.revision,
                        c.version,
                        c.author.user,
                        serde_json::to_string(&c.value)?
                    )))
                    .collect::<anyhow::Result<Vec<_>>>()?
                    .join(" | ")
            ),
        })
    };
    let mut l = vec![format!(
        "{} {}",
        o.patient,
        o.display_name.as_deref().unwrap_or("")
    )];
    l.push(format!("resuscitation: {}", value(&o.resuscitation)?));
    for (title, list) in [
        ("allergies", &o.allergies),
        ("risks", &o.risks),
        ("goals", &o.goals),
        ("interventions", &o.interventions),
        ("orders", &o.orders),
    ] {
        if list.is_empty() {
            continue;
        }
        l.push(format!("{title}:"));
        for e in list {
            l.push(format!("  {}: {}", e.id, value(&e.value)?));
            if let Some(text) = e.text.as_deref().filter(|t| !t.is_empty()) {
                l.push(format!("    {text}"));
            }
        }
    }
    if !o.today.is_empty() {
        l.push("today:".into());
        for s in &o.today {
            l.push(format!(
                "  {} {}: {}",
                s.slot,
                s.order,
                serde_json::to_value(&s.status)?["status"]
                    .as_str()
                    .unwrap_or("?")
            ));
        }
    }
    if !o.open_flags.is_empty() {
        l.push("OPEN FLAGS:".into());
        for f in &o.open_flags {
            l.push(format!("  {}", f.id));
        }
    }
    if !o.journal.is_empty() {
        l.push("journal:".into());
        for j in &o.journal {
            let body = match &j.body {
                sync_core::model::EventBody::Note { body, .. } => body.clone(),
                other => serde_json::to_string(other)?,
            };
            l.push(format!(
                "  {} {}{}: {}",
                ctx.when(j.at),
                j.author.user,
                if j.entered_in_error {
                    " (entered in error)"
                } else {
                    ""
                },
                body
            ));
        }
    }
    Ok(l.join("\n"))
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
