//! The synthetic world of the benchmark, from `shared/WORKLOAD.md` and `shared/LIMITS.md`:
//! per person a patient header, a care plan, medication orders and, for one month, an
//! administration log and a journal, filled with a day of home care per day.
//!
//! Everything here is deterministic: ids are derived from the person, day and visit, and times
//! and text come from a seeded ChaCha stream per person. Nothing reads a clock.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sync_core::model::{
    AdministrationOutcome, AllergyStatus, Criticality, Edit, EventBody, GoalStatus,
    InterventionStatus, MedicationOrder, Register, RegisterValue, ResuscitationDecision,
};
use sync_core::repo::Repo;
use sync_core::store::Store;
use sync_core::{
    Author, DeviceId, DocumentId, ModelError, Month, PatientId, RecordId, Role, Timestamp, UserId,
};

/// The month the journals and administration logs cover.
pub const MONTH: &str = "2026-11";
/// Days in [`MONTH`].
pub const DAYS_IN_MONTH: u32 = 30;
/// 2026-11-01T00:00Z in milliseconds since the Unix epoch.
const MONTH_START_MS: i64 = 1_793_491_200_000;
const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

/// Visits per person per day (WORKLOAD.md: 3-6; LIMITS.md measured 4).
pub const VISITS_PER_DAY: u32 = 4;
/// Journal events per visit (LIMITS.md): start, 4 task outcomes, a note, stop.
pub const EVENTS_PER_VISIT: u32 = 7;
const TASKS_PER_VISIT: u32 = 4;
/// Medication orders per person, each with slots at 08:00 and 20:00.
pub const ORDERS: u32 = 2;
const SLOTS: [&str; 2] = ["08:00", "20:00"];
/// The day (1-based) on which the nurse revises both orders.
const REVISION_DAY: u32 = 15;

/// Start of each visit, minutes after midnight (morning, lunch, afternoon, evening).
const VISIT_STARTS: [i64; VISITS_PER_DAY as usize] =
    [7 * 60 + 40, 12 * 60, 16 * 60 + 30, 19 * 60 + 45];
/// Which visit gives each slot's doses.
const VISIT_OF_SLOT: [usize; 2] = [0, 3];

/// Local commits one person gets: header, care plan, two medication commits.
pub const SETUP_COMMITS: u64 = 4;

const TASKS: &[&str] = &[
    "Personlig hygien",
    "Frukost",
    "Lunch",
    "Middag",
    "Påklädning",
    "Tillsyn",
    "Städning",
    "Inköp",
    "Promenad",
    "Dusch",
    "Kvällsmat",
    "Sänggående",
];

const WORDS: &[&str] = &[
    "brukaren",
    "mådde",
    "bra",
    "idag",
    "åt",
    "hela",
    "frukosten",
    "och",
    "drack",
    "ett",
    "glas",
    "vatten",
    "klagade",
    "på",
    "lite",
    "smärta",
    "i",
    "höger",
    "knä",
    "promenerade",
    "med",
    "rollator",
    "till",
    "köket",
    "sov",
    "oroligt",
    "under",
    "natten",
    "enligt",
    "dottern",
    "huden",
    "hel",
    "utan",
    "rodnad",
    "tog",
    "sina",
    "tabletter",
    "själv",
    "ville",
    "inte",
    "duscha",
    "erbjuds",
    "igen",
    "imorgon",
    "pratade",
    "om",
    "sin",
    "bror",
    "var",
    "glad",
    "trött",
    "efter",
    "besöket",
    "sjuksköterskan",
    "informerad",
    "blodtrycket",
    "kontrolleras",
    "vid",
    "nästa",
    "besök",
];

/// A few carers and a nurse, each with their own phone.
#[derive(Debug)]
pub struct Staff {
    pub carers: Vec<Author>,
    pub nurse: Author,
}

impl Staff {
    pub fn new(carers: usize) -> Result<Self> {
        let carers = (1..=carers.max(1))
            .map(|i| author(&format!("carer-{i}"), Role::Carer))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            carers,
            nurse: author("nurse-1", Role::Nurse)?,
        })
    }

    fn carer(&self, rng: &mut ChaCha8Rng) -> &Author {
        &self.carers[rng.random_range(0..self.carers.len())]
    }
}

fn author(user: &str, role: Role) -> Result<Author> {
    Ok(Author::new(
        UserId::new(user)?,
        role,
        DeviceId::new(format!("{user}-phone"))?,
    ))
}

pub fn rid(s: impl Into<String>) -> Result<RecordId> {
    Ok(RecordId::new(s)?)
}

/// `minute` minutes after midnight (UTC) of `day` (1-based) of [`MONTH`].
pub fn at(day: u32, minute: i64) -> Timestamp {
    Timestamp(MONTH_START_MS + i64::from(day.saturating_sub(1)) * DAY_MS + minute * MINUTE_MS)
}

/// One person's five documents.
#[derive(Debug, Clone)]
pub struct Person {
    pub index: usize,
    pub id: PatientId,
    pub header: DocumentId,
    pub plan: DocumentId,
    pub medication: DocumentId,
    pub administrations: DocumentId,
    pub journal: DocumentId,
}

impl Person {
    pub fn new(index: usize) -> Result<Self> {
        let id = PatientId::new(format!("p{index}"))?;
        let month: Month = MONTH.parse()?;
        Ok(Self {
            index,
            header: DocumentId::patient_header(&id),
            plan: DocumentId::care_plan(&id),
            medication: DocumentId::medication(&id),
            administrations: DocumentId::administrations(&id, month),
            journal: DocumentId::journal(&id, month),
            id,
        })
    }

    pub fn documents(&self) -> [&DocumentId; 5] {
        [
            &self.header,
            &self.plan,
            &self.medication,
            &self.administrations,
            &self.journal,
        ]
    }

    /// This person's own random stream: the data does not depend on how many people there are.
    pub fn rng(&self, seed: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(self.index as u64);
        rng
    }

    fn rec(&self, suffix: &str) -> Result<RecordId> {
        rid(format!("p{}-{suffix}", self.index))
    }
}

/// A note of 200-600 characters of plausible journal prose.
pub fn note(rng: &mut ChaCha8Rng) -> String {
    let target = rng.random_range(200..=600usize);
    let mut text = String::with_capacity(target + 16);
    let mut sentence_start = true;
    while text.chars().count() < target {
        let word = WORDS[rng.random_range(0..WORDS.len())];
        if !text.is_empty() {
            text.push(' ');
        }
        if sentence_start {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                text.extend(first.to_uppercase());
                text.push_str(chars.as_str());
            }
            sentence_start = false;
        } else {
            text.push_str(word);
        }
        if rng.random_bool(0.12) {
            text.push('.');
            sentence_start = true;
        }
    }
    let mut text: String = text.chars().take(target).collect();
    if !text.ends_with('.') {
        text.pop();
        text.push('.');
    }
    text
}

/// Text of `min..=max` characters, e.g. a goal's description.
fn prose(rng: &mut ChaCha8Rng, min: usize, max: usize) -> String {
    let target = rng.random_range(min..=max);
    note(rng).chars().take(target).collect()
}

fn order(dose: &str, times: &[&str], valid_from: Timestamp, drug: &str) -> RegisterValue {
    RegisterValue::Order(MedicationOrder {
        drug: drug.into(),
        strength: "50 mg".into(),
        dose: dose.into(),
        route: "oral".into(),
        times: times.iter().map(|t| (*t).to_owned()).collect(),
        start: "2026-10-01".into(),
        stop: None,
        delegated: true,
        window_minutes: None,
        prn: None,
        valid_from,
    })
}

const DRUGS: [&str; ORDERS as usize] = ["Metoprolol", "Furosemid"];

type EditFn = Box<dyn FnOnce(&mut Edit<'_>) -> Result<(), ModelError>>;

/// One `Repo::change`, timed: the duration goes to `on_commit`.
pub fn timed_change<S: Store, F>(
    repo: &mut Repo<S>,
    doc: &DocumentId,
    who: &Author,
    when: Timestamp,
    f: F,
    on_commit: &mut dyn FnMut(Duration),
) -> Result<()>
where
    F: FnOnce(&mut Edit<'_>) -> Result<(), ModelError>,
{
    let started = Instant::now();
    let result = repo.change(doc, who, when, f);
    let elapsed = started.elapsed();
    result.with_context(|| format!("writing {doc}"))?;
    on_commit(elapsed);
    Ok(())
}

/// Counts of what [`build_person`] wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub commits: u64,
    pub events: u64,
    pub revisions: u64,
}

/// Writes one person's documents: the setup commits and `days` days of visits and doses.
/// `on_commit` is called with the duration of every `Repo::change` call.
pub fn build_person<S: Store>(
    repo: &mut Repo<S>,
    staff: &Staff,
    person: &Person,
    days: u32,
    seed: u64,
    on_commit: &mut dyn FnMut(Duration),
) -> Result<Written> {
    let mut rng = person.rng(seed);
    let mut written = Written::default();
    let nurse = &staff.nurse;
    let mut commit = |repo: &mut Repo<S>, doc: &DocumentId, who: &Author, when, f: EditFn| {
        timed_change(repo, doc, who, when, f, on_commit)
    };

    // Patient header: name, one allergy, the resuscitation decision. Written before the month.
    let before_month = at(1, -17 * 24 * 60 + 10 * 60);
    let name = format!("Person {}", person.index);
    let allergy = person.rec("allergy-1")?;
    let header_ids = [
        person.rec("name-r1")?,
        person.rec("allergy-1-r1")?,
        person.rec("hlr-r1")?,
    ];
    let decision = if rng.random_bool(0.3) {
        ResuscitationDecision::DoNotAttempt
    } else {
        ResuscitationDecision::Attempt
    };
    let [name_r1, allergy_r1, hlr_r1] = header_ids;
    commit(
        repo,
        &person.header,
        nurse,
        before_month,
        Box::new(move |e| {
            e.create(
                name_r1,
                Register::DisplayName,
                RegisterValue::DisplayName { name },
                None,
            )?;
            e.create(
                allergy_r1,
                Register::Allergy(allergy),
                RegisterValue::Allergy {
                    substance: "Penicillin".into(),
                    criticality: Criticality::High,
                    status: AllergyStatus::Active,
                    reaction: Some("Utslag och andningsbesvär".into()),
                },
                None,
            )?;
            e.create(
                hlr_r1,
                Register::Resuscitation,
                RegisterValue::Resuscitation {
                    decision,
                    comment: Some("Beslut av ansvarig läkare efter samtal med brukaren".into()),
                },
                None,
            )
        }),
    )?;
    written.commits += 1;
    written.revisions += 3;

    // Care plan: two goals with description text, two interventions.
    let mut plan_items = Vec::new();
    for g in 1..=2 {
        let goal = person.rec(&format!("goal-{g}"))?;
        plan_items.push((
            person.rec(&format!("goal-{g}-r1"))?,
            Register::Goal(goal.clone()),
            RegisterValue::Goal {
                title: format!("Mål {g}"),
                status: GoalStatus::Active,
            },
            prose(&mut rng, 50, 200),
        ));
        plan_items.push((
            person.rec(&format!("intervention-{g}-r1"))?,
            Register::Intervention(person.rec(&format!("intervention-{g}"))?),
            RegisterValue::Intervention {
                title: TASKS[g % TASKS.len()].into(),
                responsible_organisation: "Hemtjänst Norr".into(),
                status: InterventionStatus::InProgress,
                goal: Some(goal),
            },
            prose(&mut rng, 50, 200),
        ));
    }
    let n_plan = plan_items.len() as u64;
    commit(
        repo,
        &person.plan,
        nurse,
        at(1, -16 * 24 * 60 + 11 * 60),
        Box::new(move |e| {
            for (id, register, value, text) in plan_items {
                e.create(id, register, value, Some(&text))?;
            }
            Ok(())
        }),
    )?;
    written.commits += 1;
    written.revisions += n_plan;

    // Medication: two orders at 08:00 and 20:00, both revised once (a new dose) on day 15.
    let order_ids = (1..=ORDERS)
        .map(|o| person.rec(&format!("order-{o}")))
        .collect::<Result<Vec<_>>>()?;
    let r1 = (1..=ORDERS)
        .map(|o| person.rec(&format!("order-{o}-r1")))
        .collect::<Result<Vec<_>>>()?;
    let r2 = (1..=ORDERS)
        .map(|o| person.rec(&format!("order-{o}-r2")))
        .collect::<Result<Vec<_>>>()?;
    let times: Vec<&str> = SLOTS.to_vec();
    let created = at(1, -15 * 24 * 60 + 9 * 60);
    let revised = at(REVISION_DAY, 7 * 60);
    {
        let (ids, r1, times) = (order_ids.clone(), r1.clone(), times.clone());
        commit(
            repo,
            &person.medication,
            nurse,
            created,
            Box::new(move |e| {
                for ((o, r), drug) in ids.into_iter().zip(r1).zip(DRUGS) {
                    e.create(
                        r,
                        Register::Order(o),
                        order("1 tablett", &times, created, drug),
                        Some("Ges med mat. Kontrollera puls före."),
                    )?;
                }
                Ok(())
            }),
        )?;
    }
    {
        let (ids, r2, times) = (order_ids.clone(), r2.clone(), times.clone());
        commit(
            repo,
            &person.medication,
            nurse,
            revised,
            Box::new(move |e| {
                for ((o, r), drug) in ids.into_iter().zip(r2).zip(DRUGS) {
                    e.update(
                        r,
                        Register::Order(o),
                        order("1/2 tablett", &times, revised, drug),
                    )?;
                }
                Ok(())
            }),
        )?;
    }
    written.commits += 2;
    written.revisions += 2 * u64::from(ORDERS);

    // The month: per day 4 visits (one journal commit each) and 4 doses (one commit each).
    for day in 1..=days {
        for (v, start_minute) in VISIT_STARTS.iter().enumerate() {
            let carer = staff.carer(&mut rng);
            let start = *start_minute + rng.random_range(-15..=15);
            let length = rng.random_range(15..=45);
            for (s, slot) in SLOTS.iter().enumerate() {
                if VISIT_OF_SLOT[s] != v {
                    continue;
                }
                for o in 0..ORDERS as usize {
                    let given_at = at(day, start + 5 + o as i64);
                    let revision = if given_at >= revised { &r2[o] } else { &r1[o] };
                    let body = EventBody::Administration {
                        order: order_ids[o].clone(),
                        order_revision: revision.clone(),
                        slot: format!("{MONTH}-{day:02}T{slot}"),
                        outcome: AdministrationOutcome::Given,
                        reason: None,
                        occurred_at: given_at,
                    };
                    let id = person.rec(&format!("d{day}-o{}-s{s}", o + 1))?;
                    commit(
                        repo,
                        &person.administrations,
                        carer,
                        given_at,
                        Box::new(move |e| e.record(id, body)),
                    )?;
                    written.commits += 1;
                    written.events += 1;
                }
            }
            let events = visit_events(person, &mut rng, day, v, start, length)?;
            written.events += events.len() as u64;
            commit(
                repo,
                &person.journal,
                carer,
                at(day, start + length),
                Box::new(move |e| {
                    for (id, body) in events {
                        e.record(id, body)?;
                    }
                    Ok(())
                }),
            )?;
            written.commits += 1;
        }
    }
    Ok(written)
}

/// The seven journal events of one visit: start, four task outcomes, a note, stop.
fn visit_events(
    person: &Person,
    rng: &mut ChaCha8Rng,
    day: u32,
    visit: usize,
    start: i64,
    length: i64,
) -> Result<Vec<(RecordId, EventBody)>> {
    let prefix = format!("d{day}-v{visit}");
    let visit_id = person.rec(&prefix)?;
    let ev = |k: u32| person.rec(&format!("{prefix}-e{k}"));
    let mut events = Vec::with_capacity(EVENTS_PER_VISIT as usize);
    events.push((
        ev(0)?,
        EventBody::VisitStart {
            visit: visit_id.clone(),
            occurred_at: at(day, start),
        },
    ));
    for k in 1..=TASKS_PER_VISIT {
        let done = !rng.random_bool(0.1);
        events.push((
            ev(k)?,
            EventBody::TaskOutcome {
                visit: visit_id.clone(),
                task: TASKS[rng.random_range(0..TASKS.len())].into(),
                done,
                reason: (!done).then(|| "Brukaren avböjde".to_owned()),
                intervention: None,
            },
        ));
    }
    events.push((
        ev(TASKS_PER_VISIT + 1)?,
        EventBody::Note {
            body: note(rng),
            corrects: None,
        },
    ));
    events.push((
        ev(TASKS_PER_VISIT + 2)?,
        EventBody::VisitStop {
            visit: visit_id,
            occurred_at: at(day, start + length),
        },
    ));
    Ok(events)
}
