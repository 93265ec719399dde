//! `--compare-backends` (issue 12): one workload on SQLite with one node, PostgreSQL with one
//! node, PostgreSQL with N nodes, and samod, one after another in one run, then the ratios
//! against the goals (PostgreSQL x1 at least 0.5x SQLite's morning throughput, xN at
//! least 0.8x of x1).

use anyhow::Result;

use crate::nodes::{Deployment, FreshDatabase};
use crate::spec::{LatencyResult, LatencySpec, MorningResult, MorningSpec};
use crate::{emit, latency, morning, ratio, runtime, samod_baseline};

/// Goal of issue 12: PostgreSQL with one node / SQLite with one node, morning throughput.
pub const GOAL_PG_OVER_SQLITE: f64 = 0.5;
/// Goal of issue 12: PostgreSQL with N nodes / with one node, morning throughput.
pub const GOAL_NODES_OVER_ONE: f64 = 0.8;

/// Runs `morning` on `deployment`, on a fresh database of `cluster` when it names one.
pub fn morning_on(
    spec: &MorningSpec,
    cluster: Option<&str>,
    nodes: usize,
) -> Result<MorningResult> {
    // Created and dropped outside the runtime (the blocking client runs its own).
    let db = cluster.map(FreshDatabase::create).transpose()?;
    let deployment = Deployment {
        database: db.as_ref().map(|d| d.url.clone()),
        nodes,
    };
    let result = runtime()?.block_on(morning::run(spec, &deployment));
    drop(db);
    result
}

/// Runs `latency` on `deployment`, on a fresh database of `cluster` when it names one.
pub fn latency_on(
    spec: &LatencySpec,
    cluster: Option<&str>,
    nodes: usize,
) -> Result<LatencyResult> {
    let db = cluster.map(FreshDatabase::create).transpose()?;
    let deployment = Deployment {
        database: db.as_ref().map(|d| d.url.clone()),
        nodes,
    };
    let result = runtime()?.block_on(latency::run(spec, &deployment));
    drop(db);
    result
}

/// SQLite x1, PostgreSQL x1, PostgreSQL x`nodes`, samod: each result, then the ratios.
pub fn compare_morning(spec: &MorningSpec, cluster: &str, nodes: usize, json: bool) -> Result<()> {
    let sqlite = morning_on(spec, None, 1)?;
    emit(&sqlite, json)?;
    let pg1 = morning_on(spec, Some(cluster), 1)?;
    emit(&pg1, json)?;
    let pgn = morning_on(spec, Some(cluster), nodes)?;
    emit(&pgn, json)?;
    let samod = runtime()?.block_on(samod_baseline::morning(spec))?;
    emit(&samod, json)?;
    let tp = |r: &MorningResult| r.changes_per_second;
    let pg_over_sqlite = ratio(tp(&pg1), tp(&sqlite));
    let n_over_one = ratio(tp(&pgn), tp(&pg1));
    let met = |v: &serde_json::Value, goal: f64| v.as_f64().map(|x| x >= goal);
    emit(
        &serde_json::json!({
            "workload": "morning",
            "ratio": "throughput (changes per second)",
            "nodes": nodes,
            "completed": [sqlite.completed, pg1.completed, pgn.completed, samod.completed],
            "postgresql_1_over_sqlite_1": pg_over_sqlite,
            "goal_postgresql_1_over_sqlite_1": GOAL_PG_OVER_SQLITE,
            "met_postgresql_1_over_sqlite_1": met(&pg_over_sqlite, GOAL_PG_OVER_SQLITE),
            "postgresql_n_over_postgresql_1": n_over_one,
            "goal_postgresql_n_over_postgresql_1": GOAL_NODES_OVER_ONE,
            "met_postgresql_n_over_postgresql_1": met(&n_over_one, GOAL_NODES_OVER_ONE),
            "sqlite_1_over_samod": ratio(tp(&sqlite), tp(&samod)),
            "postgresql_1_over_samod": ratio(tp(&pg1), tp(&samod)),
            "postgresql_n_over_samod": ratio(tp(&pgn), tp(&samod)),
            "load_average": load_average(),
        }),
        json,
    )
}

/// As [`compare_morning`] for `latency` (ratios of p50 and p99; lower is better, no goals).
pub fn compare_latency(spec: &LatencySpec, cluster: &str, nodes: usize, json: bool) -> Result<()> {
    let sqlite = latency_on(spec, None, 1)?;
    emit(&sqlite, json)?;
    let pg1 = latency_on(spec, Some(cluster), 1)?;
    emit(&pg1, json)?;
    let pgn = latency_on(spec, Some(cluster), nodes)?;
    emit(&pgn, json)?;
    let samod = runtime()?.block_on(samod_baseline::latency(spec))?;
    emit(&samod, json)?;
    emit(
        &serde_json::json!({
            "workload": "latency",
            "ratio": "p50 and p99 (lower is better)",
            "nodes": nodes,
            "completed": [sqlite.completed, pg1.completed, pgn.completed, samod.completed],
            "p50_postgresql_1_over_sqlite_1": ratio(pg1.p50_ms, sqlite.p50_ms),
            "p50_postgresql_n_over_postgresql_1": ratio(pgn.p50_ms, pg1.p50_ms),
            "p50_sqlite_1_over_samod": ratio(sqlite.p50_ms, samod.p50_ms),
            "p99_postgresql_1_over_sqlite_1": ratio(pg1.p99_ms, sqlite.p99_ms),
            "p99_postgresql_n_over_postgresql_1": ratio(pgn.p99_ms, pg1.p99_ms),
            "load_average": load_average(),
        }),
        json,
    )
}

/// `/proc/loadavg`'s first three figures (the machine is shared: say how loaded it was).
pub fn load_average() -> Option<String> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    //! Small runs on the PostgreSQL test server (`NARA_TEST_DATABASE_URL`, as
    //! `scripts/pg-test-server.sh start` prints; `scripts/test` starts one). They fail without
    //! it: never skip.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn cluster() -> String {
        std::env::var("NARA_TEST_DATABASE_URL").expect(
            "NARA_TEST_DATABASE_URL is not set: start a test server with \
             `eval \"$(scripts/pg-test-server.sh start)\"`",
        )
    }

    /// Databases named `name` on the cluster.
    fn databases_named(cluster: &str, name: &str) -> i64 {
        let mut c = cluster
            .parse::<postgres::Config>()
            .unwrap()
            .connect(postgres::NoTls)
            .unwrap();
        c.query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .unwrap()
        .get(0)
    }

    #[test]
    fn morning_converges_on_two_nodes_of_one_database_and_drops_it() {
        let cluster = cluster();
        let spec = MorningSpec {
            devices: 4,
            people: 4,
            visited: 2,
            visits_per_person: 1,
            events_per_visit: 2,
            doses_per_visit: 1,
            seed: 1,
            timeout_secs: 300,
        };
        let db = FreshDatabase::create(&cluster).unwrap();
        let name = db.name.clone();
        assert_eq!(databases_named(&cluster, &name), 1);
        let deployment = Deployment {
            database: Some(db.url.clone()),
            nodes: 2,
        };
        let r = runtime()
            .unwrap()
            .block_on(morning::run(&spec, &deployment))
            .unwrap();
        drop(db);
        assert_eq!((r.backend.as_str(), r.nodes), ("postgresql", 2));
        // Devices 0 and 2 sync through node 0, 1 and 3 through node 1: each got the others'.
        assert!(r.completed, "{r:?}");
        assert_eq!(r.devices_in_sync, 4);
        assert_eq!(databases_named(&cluster, &name), 0);
    }

    #[test]
    fn latency_crosses_nodes_on_postgresql() {
        let cluster = cluster();
        let spec = LatencySpec {
            edits: 5,
            seed: 1,
            timeout_secs: 300,
        };
        let r = latency_on(&spec, Some(&cluster), 2).unwrap();
        assert_eq!((r.backend.as_str(), r.nodes), ("postgresql", 2));
        assert!(r.completed, "{r:?}");
    }
}
