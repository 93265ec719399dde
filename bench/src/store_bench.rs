//! `nara-bench store`: builds a SQLite store of a caseload's month and measures opening it,
//! loading a person, and a local durable write.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use sync_core::model::EventBody;
use sync_core::repo::{DEFAULT_COMPACT_AFTER, DEFAULT_MAX_LOADED, Repo};
use sync_core::store::{MemoryStore, Origin, SqliteStore, Store};
use sync_core::{DocumentId, Timestamp};

use crate::stats::{Samples, round3};
use crate::workload::{
    self, DAYS_IN_MONTH, EVENTS_PER_VISIT, Person, SETUP_COMMITS, Staff, VISITS_PER_DAY, Written,
};

/// The targets of the issue.
pub const TARGET_OPEN_MS: f64 = 50.0;
pub const TARGET_WRITE_P99_MS: f64 = 5.0;
/// How many people the write phase spreads its writes over (their documents stay loaded).
const MAX_WRITE_PEOPLE: usize = 50;
/// Carers in the team; one nurse besides.
const CARERS: usize = 6;

#[derive(Debug, Clone)]
pub struct Params {
    pub people: usize,
    pub days: u32,
    pub writes: usize,
    pub seed: u64,
    pub open_repeats: usize,
    /// Where to create the temporary directory; the system's default if `None`.
    pub dir: Option<PathBuf>,
}

pub fn run(params: &Params) -> Result<Value> {
    if params.people == 0 {
        bail!("--people must be at least 1");
    }
    if !(1..=DAYS_IN_MONTH).contains(&params.days) {
        bail!(
            "--days must be 1 to {DAYS_IN_MONTH} (one month, {})",
            workload::MONTH
        );
    }
    if params.open_repeats == 0 {
        bail!("--open-repeats must be at least 1");
    }
    let dir = match &params.dir {
        Some(d) => {
            tempfile::tempdir_in(d).with_context(|| format!("temporary dir in {}", d.display()))?
        }
        None => tempfile::tempdir().context("temporary dir")?,
    };
    let path = dir.path().join("nara.db");
    let staff = Staff::new(CARERS)?;
    let people = (0..params.people)
        .map(Person::new)
        .collect::<Result<Vec<_>>>()?;
    let docs_total = people.len() * 5;

    // 1. Build.
    eprintln!(
        "building {} people x {} days into {}",
        params.people,
        params.days,
        path.display()
    );
    let mut commit_times =
        Samples::with_capacity(params.people * (SETUP_COMMITS as usize + params.days as usize * 8));
    let mut written = Written::default();
    let started = Instant::now();
    {
        let store =
            SqliteStore::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut repo = Repo::new(store);
        let step = (people.len() / 10).max(1);
        for (i, person) in people.iter().enumerate() {
            let w = workload::build_person(
                &mut repo,
                &staff,
                person,
                params.days,
                params.seed,
                &mut |d| commit_times.push(d),
            )?;
            written.commits += w.commits;
            written.events += w.events;
            written.revisions += w.revisions;
            if (i + 1) % step == 0 {
                eprintln!(
                    "  {}/{} people, {:.1} s",
                    i + 1,
                    people.len(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    let build = started.elapsed();
    let db_main_bytes = file_size(&path)?;
    let db_wal_bytes = file_size(&wal_path(&path))?;
    eprintln!(
        "built in {:.2} s: {} commits, {} bytes",
        build.as_secs_f64(),
        written.commits,
        db_main_bytes + db_wal_bytes
    );

    // 2. Open: SQLite open + migrations check + the list of documents.
    let mut open_times = Samples::with_capacity(params.open_repeats);
    for _ in 0..params.open_repeats {
        let started = Instant::now();
        let repo = Repo::new(SqliteStore::open(&path)?);
        let ids = repo.document_ids()?;
        open_times.push(started.elapsed());
        ensure!(
            ids.len() == docs_total,
            "the store lists {} documents, expected {docs_total}",
            ids.len()
        );
        drop(repo);
    }

    // 3. Load each person's five documents into a fresh repo (same connection, warm cache).
    let mut person_times = Samples::with_capacity(people.len());
    let mut journal_times = Samples::with_capacity(people.len());
    let mut stored = StoredStats::default();
    let expected_journal_events = (params.days * VISITS_PER_DAY * EVENTS_PER_VISIT) as usize;
    let expected_doses = (params.days * workload::ORDERS * 2) as usize;
    let mut store = SqliteStore::open(&path)?;
    for person in &people {
        let mut repo = Repo::new(store);
        let started = Instant::now();
        for id in person.documents() {
            let t = Instant::now();
            repo.get(id).with_context(|| format!("loading {id}"))?;
            if *id == person.journal {
                journal_times.push(t.elapsed());
            }
        }
        person_times.push(started.elapsed());
        let journal_events = repo.get(&person.journal)?.events().len();
        let doses = repo.get(&person.administrations)?.events().len();
        ensure!(
            journal_events == expected_journal_events && doses == expected_doses,
            "{}: {journal_events} journal events and {doses} administrations, expected \
             {expected_journal_events} and {expected_doses}",
            person.id
        );
        store = repo.into_store();
        for id in person.documents() {
            stored.add(store.load(id)?);
        }
    }
    drop(store);

    // 4. Local durable writes: one note into an already loaded journal per `Repo::change`.
    // The same writes run first against a MemoryStore copy of those people's documents, to
    // show what the model costs without SQLite.
    let write_people = &people[..people.len().min(MAX_WRITE_PEOPLE)];
    let max_loaded = DEFAULT_MAX_LOADED.max(write_people.len() * 5);
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    rng.set_stream(u64::MAX);
    let notes: Vec<String> = (0..params.writes)
        .map(|_| workload::note(&mut rng))
        .collect();
    let base = workload::at(params.days, 22 * 60);
    let mut memory = MemoryStore::new();
    {
        let sqlite = SqliteStore::open(&path)?;
        for person in write_people {
            for id in person.documents() {
                copy_document(&sqlite, &mut memory, id)?;
            }
        }
    }
    let repo = Repo::new(memory).with_max_loaded(max_loaded);
    let mut in_memory = timed_writes(repo, write_people, &staff, &notes, base)?;
    let mut fsync_times = fsync_probe(dir.path(), 50)?;
    let repo = Repo::new(SqliteStore::open(&path)?).with_max_loaded(max_loaded);
    let mut durable = timed_writes(repo, write_people, &staff, &notes, base)?;
    let db_bytes_after_writes = file_size(&path)? + file_size(&wal_path(&path))?;
    let mut write_times = durable.all;

    // 5. What compaction buys: compact every monthly document (the built ones have fewer
    // change rows than `DEFAULT_COMPACT_AFTER`, so the repo never did), then load each journal
    // again from its snapshot.
    let mut compact_times = Samples::with_capacity(people.len() * 2);
    let mut compacted_journal_times = Samples::with_capacity(people.len());
    let mut compacted = StoredStats::default();
    let mut store = SqliteStore::open(&path)?;
    for person in &people {
        let mut repo = Repo::new(store);
        for id in [&person.journal, &person.administrations] {
            repo.get(id)?;
            let started = Instant::now();
            repo.compact(id)
                .with_context(|| format!("compacting {id}"))?;
            compact_times.push(started.elapsed());
        }
        store = repo.into_store();
        let mut repo = Repo::new(store);
        let started = Instant::now();
        repo.get(&person.journal)?;
        compacted_journal_times.push(started.elapsed());
        store = repo.into_store();
        for id in person.documents() {
            compacted.add(store.load(id)?);
        }
    }
    drop(store);

    let open_ms = open_times.median();
    let write_p99 = write_times.percentile(0.99);
    Ok(json!({
        "bench": "store",
        "params": {
            "people": params.people,
            "days": params.days,
            "writes": params.writes,
            "seed": params.seed,
            "month": workload::MONTH,
            "visits_per_day": VISITS_PER_DAY,
            "events_per_visit": EVENTS_PER_VISIT,
            "doses_per_day": workload::ORDERS * 2,
            "compact_after": DEFAULT_COMPACT_AFTER,
        },
        "docs_total": docs_total,
        "changes_total": written.commits,
        "events_total": written.events,
        "revisions_total": written.revisions,
        "build_s": round3(build.as_secs_f64()),
        "build_commit_ms_p50": commit_times.median(),
        "build_commit_ms_p99": commit_times.percentile(0.99),
        "build_commit_ms_max": commit_times.max(),
        "db_bytes": db_main_bytes + db_wal_bytes,
        "db_main_bytes": db_main_bytes,
        "db_wal_bytes": db_wal_bytes,
        "db_bytes_after_writes": db_bytes_after_writes,
        "stored": {
            "snapshots": stored.snapshots,
            "snapshot_bytes": stored.snapshot_bytes,
            "change_rows": stored.change_rows,
            "change_bytes": stored.change_bytes,
        },
        "compacted": {
            "compact_ms_p50": compact_times.median(),
            "compact_ms_p99": compact_times.percentile(0.99),
            "load_journal_ms_p50": compacted_journal_times.median(),
            "load_journal_ms_p99": compacted_journal_times.percentile(0.99),
            "snapshots": compacted.snapshots,
            "snapshot_bytes": compacted.snapshot_bytes,
            "change_rows": compacted.change_rows,
            "change_bytes": compacted.change_bytes,
        },
        "open_ms": open_ms,
        "open_ms_max": open_times.max(),
        "open_repeats": open_times.len(),
        "load_person_ms_p50": person_times.median(),
        "load_person_ms_p99": person_times.percentile(0.99),
        "load_person_ms_max": person_times.max(),
        "load_journal_ms_p50": journal_times.median(),
        "load_journal_ms_p99": journal_times.percentile(0.99),
        "write_ms_p50": write_times.median(),
        "write_ms_p99": write_p99,
        "write_ms_max": write_times.max(),
        "write_ms_mean": write_times.mean(),
        "write_people": write_people.len(),
        "writes_compacting": durable.compacting.len(),
        "write_ms_p99_without_compaction": durable.plain.percentile(0.99),
        "write_ms_p50_compacting": durable.compacting.median(),
        "write_in_memory_ms_p50": in_memory.all.median(),
        "write_in_memory_ms_p99": in_memory.all.percentile(0.99),
        "write_in_memory_ms_max": in_memory.all.max(),
        "targets": {"open_ms": TARGET_OPEN_MS, "write_ms_p99": TARGET_WRITE_P99_MS},
        "open_ok": open_ms.is_some_and(|ms| ms <= TARGET_OPEN_MS),
        "write_ok": write_p99.is_some_and(|ms| ms <= TARGET_WRITE_P99_MS),
        "machine": machine(),
        "disk_fsync_ms_p50": fsync_times.median(),
        "disk_fsync_ms_p99": fsync_times.percentile(0.99),
    }))
}

/// Durations of the timed writes: all, those that compacted the journal, and the others.
#[derive(Debug)]
struct WriteRun {
    all: Samples,
    compacting: Samples,
    plain: Samples,
}

/// Loads `people`'s documents into `repo`, then writes `notes`, one `Repo::change` each,
/// round-robin into their journals, and times each call.
fn timed_writes<S: Store>(
    mut repo: Repo<S>,
    people: &[Person],
    staff: &Staff,
    notes: &[String],
    base: Timestamp,
) -> Result<WriteRun> {
    for person in people {
        for id in person.documents() {
            repo.get(id)?;
        }
    }
    let mut run = WriteRun {
        all: Samples::with_capacity(notes.len()),
        compacting: Samples::default(),
        plain: Samples::with_capacity(notes.len()),
    };
    for (k, body) in notes.iter().enumerate() {
        let person = &people[k % people.len()];
        let author = &staff.carers[k % staff.carers.len()];
        let id = workload::rid(format!("p{}-w{k}", person.index))?;
        let at = Timestamp(base.0 + k as i64 * 1000);
        let body = EventBody::Note {
            body: body.clone(),
            corrects: None,
        };
        let mut elapsed = Duration::ZERO;
        workload::timed_change(
            &mut repo,
            &person.journal,
            author,
            at,
            move |e| e.record(id, body),
            &mut |d| elapsed = d,
        )?;
        run.all.push(elapsed);
        // A write that left no change rows compacted the journal before returning.
        if stored_change_rows(repo.store(), &person.journal)? == 0 {
            run.compacting.push(elapsed);
        } else {
            run.plain.push(elapsed);
        }
    }
    ensure!(
        repo.loaded() >= people.len() * 5,
        "documents were dropped from memory during the write phase"
    );
    Ok(run)
}

/// Copies a stored document (snapshot and change rows) from one store to another.
fn copy_document(from: &impl Store, to: &mut impl Store, id: &DocumentId) -> Result<()> {
    let Some(doc) = from.load(id)? else {
        return Ok(());
    };
    if let Some(snapshot) = &doc.snapshot {
        to.compact(id, snapshot, &[])?;
    }
    let rows: Vec<_> = doc
        .changes
        .iter()
        .map(|(h, b)| (*h, b.as_slice()))
        .collect();
    to.append(id, &rows, Origin::Remote)?;
    Ok(())
}

#[derive(Debug, Default)]
struct StoredStats {
    snapshots: u64,
    snapshot_bytes: u64,
    change_rows: u64,
    change_bytes: u64,
}

impl StoredStats {
    fn add(&mut self, doc: Option<sync_core::store::StoredDocument>) {
        let Some(doc) = doc else { return };
        if let Some(s) = &doc.snapshot {
            self.snapshots += 1;
            self.snapshot_bytes += s.len() as u64;
        }
        self.change_rows += doc.changes.len() as u64;
        self.change_bytes += doc.changes.iter().map(|(_, c)| c.len() as u64).sum::<u64>();
    }
}

fn stored_change_rows(store: &impl Store, id: &DocumentId) -> Result<usize> {
    Ok(store.load(id)?.map_or(0, |d| d.changes.len()))
}

/// Times `n` small appends to a file next to the store, each followed by fdatasync: the floor
/// under a durable write on this disk, measured just before the timed writes.
fn fsync_probe(dir: &Path, n: usize) -> Result<Samples> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).context("creating the fsync probe")?;
    let mut times = Samples::with_capacity(n);
    let block = [0x5a_u8; 4096];
    for _ in 0..n {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        times.push(started.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path).context("removing the fsync probe")?;
    Ok(times)
}

fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The size of `path`, 0 if it does not exist.
fn file_size(path: &Path) -> Result<u64> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("size of {}", path.display())),
    }
}

fn machine() -> Value {
    let nproc = std::thread::available_parallelism().map(|n| n.get()).ok();
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    });
    json!({
        "nproc": nproc,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "cpu": cpu,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// A few lines for a human.
pub fn summary(v: &Value) -> String {
    let f = |k: &str| v.get(k).map(ToString::to_string).unwrap_or_default();
    format!(
        "store bench: {people} people x {days} days, {docs} documents, {changes} changes\n\
         build:  {build} s, {bytes} bytes on disk\n\
         open:   median {open} ms, max {open_max} ms (target <= {TARGET_OPEN_MS} ms: {open_ok})\n\
         load:   one person p50 {lp50} ms, p99 {lp99} ms\n\
         write:  p50 {wp50} ms, p99 {wp99} ms, max {wmax} ms (target p99 <= {TARGET_WRITE_P99_MS} ms: \
         {write_ok}); {wc} of the writes compacted\n\
         model:  the same writes on a MemoryStore p50 {mp50} ms, p99 {mp99} ms; disk fsync p50 \
         {fs50} ms\n",
        people = v
            .pointer("/params/people")
            .map(ToString::to_string)
            .unwrap_or_default(),
        days = v
            .pointer("/params/days")
            .map(ToString::to_string)
            .unwrap_or_default(),
        docs = f("docs_total"),
        changes = f("changes_total"),
        build = f("build_s"),
        bytes = f("db_bytes"),
        open = f("open_ms"),
        open_max = f("open_ms_max"),
        open_ok = f("open_ok"),
        lp50 = f("load_person_ms_p50"),
        lp99 = f("load_person_ms_p99"),
        wp50 = f("write_ms_p50"),
        wp99 = f("write_ms_p99"),
        wmax = f("write_ms_max"),
        write_ok = f("write_ok"),
        wc = f("writes_compacting"),
        mp50 = f("write_in_memory_ms_p50"),
        mp99 = f("write_in_memory_ms_p99"),
        fs50 = f("disk_fsync_ms_p50"),
    )
}
