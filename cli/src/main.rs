//! `nara`: the Nära Sync device CLI. One home directory is one phone: play two care workers
//! and a nurse on one machine with three homes against a local `nara-server`.
//!
//! Every command takes `--json` and then prints one JSON object (an error too, as
//! `{"error": "..."}`, with exit code 1); `sync --watch --json` prints one object per line.

/// The allocator every binary of the workspace runs on (`server/src/main.rs` says why).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use nara_client::care::{self, Clock};
use nara_client::{Device, EnrollRequest, Status, SyncReport};
use serde_json::{Value, json};
use sync_core::Timestamp;
use sync_core::model::ObservationCode;
use time::{OffsetDateTime, UtcOffset};

mod alerts;
mod args;
mod handover;
mod human;
mod round;
mod visit;

use args::*;
use human::*;

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
    /// The names of the staff the user works with, as the device holds them (filled when a
    /// command opens the device).
    staff: std::cell::RefCell<nara_client::StaffNames>,
}

impl Ctx {
    /// Opens the device of `home` and reads the staff names it holds.
    fn open(&self, home: &Path) -> anyhow::Result<Device> {
        let device = Device::open(home)?;
        match device.staff() {
            Ok(staff) => *self.staff.borrow_mut() = staff,
            Err(e) => tracing::warn!(error = %e, "staff names not read"),
        }
        Ok(device)
    }

    /// A member of staff as people read them: `Nina Berg`, or the id when the device holds no
    /// name (the server names the staff in its round answer: `nara sync` or `nara round`).
    fn who(&self, user: &sync_core::UserId) -> String {
        self.staff.borrow().display(user)
    }

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

    /// A time as people read it, in local time: `24 Nov 09:12`, with the year when it is not
    /// this year's.
    fn when(&self, t: Timestamp) -> String {
        let dt = local(t, self.offset);
        let this_year = local(nara_client::now(), self.offset).year();
        let month = human::MONTHS
            .get(usize::from(u8::from(dt.month())).saturating_sub(1))
            .copied()
            .unwrap_or("?");
        if dt.year() == this_year {
            format!("{} {month} {:02}:{:02}", dt.day(), dt.hour(), dt.minute())
        } else {
            format!(
                "{} {month} {} {:02}:{:02}",
                dt.day(),
                dt.year(),
                dt.hour(),
                dt.minute()
            )
        }
    }
}

fn local(t: Timestamp, offset: UtcOffset) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.0) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(offset)
}

fn to_json(v: &impl serde::Serialize) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(v)?)
}

async fn run(cli: Cli, offset: UtcOffset) -> anyhow::Result<Output> {
    let ctx = Ctx {
        offset,
        json: cli.json,
        staff: Default::default(),
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
            let device = ctx.open(home)?;
            let list = care::patients(&device)?;
            let human = if list.is_empty() {
                "no people on this device yet (sync first?)".to_owned()
            } else {
                list.iter()
                    .map(|p| {
                        format!(
                            "{}: {} documents{}{}",
                            match &p.display_name {
                                Some(n) => format!("{n} ({})", p.patient),
                                None => p.patient.to_string(),
                            },
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
            let device = ctx.open(home)?;
            let o = care::overview(
                &device,
                &patient,
                &ctx.clock()?,
                round::offset_minutes(&ctx),
            )?;
            let wishes = care::what_matters(&device, &patient)?;
            let human = format!(
                "{}{}",
                show_human(&ctx, &o)?,
                what_matters_human(&ctx, &wishes)
            );
            let mut json = to_json(&o)?;
            json["what_matters"] = to_json(&wishes)?;
            Ok(Output { json, human })
        }
        Command::Note { patient, text } => {
            let device = ctx.open(home)?;
            let r = care::add_note(&device, &patient, &text, &ctx.clock()?)?;
            let name = patient_name(&device, &patient);
            written(
                &device,
                &r,
                format!("Note signed for {name} (record {})", r.record),
            )
        }
        Command::Visit { patient, file } => visit::run(&ctx, home, &patient, &file),
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
            let device = ctx.open(home)?;
            let r = care::observe(&device, &patient, code, value, &unit, &ctx.clock()?)?;
            let name = patient_name(&device, &patient);
            written(
                &device,
                &r,
                format!(
                    "Observation recorded for {name}: {} (record {})",
                    event_sentence(
                        &ctx,
                        &sync_core::model::EventBody::Observation {
                            code,
                            value,
                            unit: unit.clone(),
                            occurred_at: nara_client::now(),
                        }
                    ),
                    r.record
                ),
            )
        }
        Command::Give {
            patient,
            order,
            slot,
            outcome,
            reason,
            again,
            anyway,
            confirm_allergy,
        } => {
            let Some(slot) = slot else {
                let anyway = if anyway { reason.as_deref() } else { None };
                return round::give_when_needed(
                    &ctx,
                    home,
                    &patient,
                    &order,
                    anyway,
                    confirm_allergy,
                );
            };
            let device = ctx.open(home)?;
            let a = care::give(
                &device,
                &patient,
                &order,
                &slot,
                outcome.into(),
                reason.as_deref(),
                again,
                confirm_allergy,
                &ctx.clock()?,
            )
            .map_err(|e| match e {
                nara_client::ClientError::AllergyWarning { .. } => {
                    anyhow::anyhow!("{e}: give --confirm-allergy to record it anyway")
                }
                e => e.into(),
            })?;
            let mut human = format!(
                "{} for {}: {} {}, recorded against order version {}",
                capitalise(&slot_words(&a.slot)),
                patient_name(&device, &patient),
                order_name(&device, &patient, a.order.as_str()),
                match outcome {
                    Outcome::Given => "given",
                    Outcome::NotGiven => "not given",
                    Outcome::SelfAdministered => "self-administered",
                },
                a.order_version,
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
        Command::Round(a) => round::round(&ctx, home, a).await,
        Command::Delegate(a) => round::delegate(&ctx, home, a),
        Command::Delegations(a) => round::delegations(&ctx, home, a),
        Command::RevokeDelegation(a) => round::revoke(&ctx, home, a),
        Command::Effect(a) => round::effect(&ctx, home, a),
        Command::Order {
            patient,
            order,
            fields,
        } => {
            let device = ctx.open(home)?;
            let w = care::write_order(&device, &patient, &order, &fields.into(), &ctx.clock()?)?;
            order_written(&device, &w)
        }
        Command::Resolve {
            patient,
            order,
            from,
            fields,
        } => {
            let device = ctx.open(home)?;
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
            let device = ctx.open(home)?;
            let g = care::set_goal(
                &device,
                &patient,
                &goal,
                &text,
                title.as_deref(),
                &ctx.clock()?,
            )?;
            let human = format!(
                "Goal {} {}: {}",
                g.goal,
                if g.created { "created" } else { "updated" },
                g.text
            );
            let mut json = to_json(&g)?;
            json["pending"] = json!(device.pending_count()?);
            Ok(Output { json, human })
        }
        Command::Conflicts { patient } => {
            let device = ctx.open(home)?;
            let list = care::conflicts(&device, patient.as_ref())?;
            let mut human = Vec::new();
            for c in &list {
                human.push(format!(
                    "{} of {} is in conflict; a nurse resolves it:",
                    capitalise(&register_words(&device, &c.patient, &c.register)),
                    patient_name(&device, &c.patient)
                ));
                for cand in &c.candidates {
                    human.push(format!(
                        "  {}; version {} by {} ({}), {} (revision {})",
                        value_sentence(&ctx, &cand.value),
                        cand.version,
                        ctx.who(&cand.author.user),
                        cand.author.role.as_str(),
                        ctx.when(cand.at),
                        cand.revision,
                    ));
                }
            }
            if list.is_empty() {
                human.push("No conflicts.".into());
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
            let device = ctx.open(home)?;
            let list: Vec<_> = care::flags(&device, patient.as_ref())?
                .into_iter()
                .filter(|f| f.open || !only_open)
                .collect();
            let mut human: Vec<String> = list
                .iter()
                .map(|f| {
                    let drug = |o: &str| order_name(&device, &f.patient, o);
                    format!(
                        "{}: {}",
                        patient_name(&device, &f.patient),
                        flag_sentence(&ctx, f, &drug)
                    )
                })
                .collect();
            if list.is_empty() {
                human.push("No flags.".into());
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
            let device = ctx.open(home)?;
            let r = care::ack_flag(&device, &patient, &flag, comment.as_deref(), &ctx.clock()?)?;
            written(
                &device,
                &r,
                format!("Flag {flag} reviewed (record {})", r.record),
            )
        }
        Command::Allergy(a) => alerts::allergy(&ctx, home, a),
        Command::Resuscitation(a) => alerts::resuscitation(&ctx, home, a),
        Command::Correct(a) => alerts::correct(&ctx, home, a),
        Command::Handover(a) => handover::handover(&ctx, home, a),
        Command::Sync { watch: false } => {
            let device = ctx.open(home)?;
            let report = device.sync_once().await?;
            // The names of the staff the user works with: asked after each sync, so that
            // `show` and the other views name them offline too.
            match device.refresh_staff().await {
                Ok(staff) => *ctx.staff.borrow_mut() = staff,
                Err(e) => tracing::debug!(error = %e, "staff names not refreshed"),
            }
            Ok(Output {
                json: to_json(&report)?,
                human: report_human(&ctx, &device, &report),
            })
        }
        Command::Sync { watch: true } => watch(&ctx, home).await,
        Command::Status => {
            let device = ctx.open(home)?;
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

/// `sync --watch`: prints every status change until Ctrl-C.
async fn watch(ctx: &Ctx, home: &Path) -> anyhow::Result<Output> {
    let device = ctx.open(home)?;
    // Every change in order (the latest value alone would coalesce quick ones), after the
    // status it starts from.
    let mut status = device.status_changes();
    let _current = status.next().await;
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
        while let Some(s) = status.next().await {
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
        human: report_human(ctx, &device, &report),
    })
}
