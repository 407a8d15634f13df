//! Build history for `cbuild explain`: per (label, action) the latest run and the runs of a few
//! earlier, different keys, so "what changed since last time" can be answered with a diff.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use rusqlite::{params, OptionalExtension};

use super::db::{from_ms, to_ms};
use super::error::Result;
use super::key::{ComponentChange, Components};
use super::Cache;
use crate::model::digest::Blake3;

/// How many distinct keys are remembered per (label, action); one row per key (its latest run).
pub const RUN_KEYS_KEPT: usize = 4;

/// How an action's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunOutcome {
    /// The action really ran.
    Executed,
    /// Answered from the local cache.
    CachedLocal,
    /// Answered from the remote cache.
    CachedRemote,
    /// The action ran and failed.
    Failed,
}

impl RunOutcome {
    /// The stored (and `--json`) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Executed => "executed",
            RunOutcome::CachedLocal => "cached_local",
            RunOutcome::CachedRemote => "cached_remote",
            RunOutcome::Failed => "failed",
        }
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunOutcome {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "executed" => RunOutcome::Executed,
            "cached_local" => RunOutcome::CachedLocal,
            "cached_remote" => RunOutcome::CachedRemote,
            "failed" => RunOutcome::Failed,
            _ => return Err(format!("unknown run outcome `{s}`")),
        })
    }
}

/// One run of one action of a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRecord {
    /// The target's label (`//services/api:image`).
    pub label: String,
    /// Which action of the target (`detect`, `build`, `layer app`, ...).
    pub action: String,
    /// The action key of this run.
    pub key: Blake3,
    /// The readable inputs behind `key`.
    pub components: Components,
    /// How the run ended.
    pub outcome: RunOutcome,
    /// Identifies the `cbuild` invocation.
    pub build_id: String,
    /// When it ran.
    pub at: SystemTime,
}

/// The latest run of an action and the most recent earlier run with a different key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunHistory {
    /// The latest run.
    pub latest: RunRecord,
    /// The latest run whose key differs from `latest.key`, if any is remembered.
    pub previous: Option<RunRecord>,
}

impl RunHistory {
    /// What changed between `previous` and `latest` (empty without a previous run).
    pub fn changes(&self) -> Vec<ComponentChange> {
        match &self.previous {
            Some(p) => Components::diff(&p.components, &self.latest.components),
            None => Vec::new(),
        }
    }
}

type Row = (String, String, String, Vec<u8>, String, String, i64);

fn to_record(r: Row) -> Option<RunRecord> {
    let (label, action, key, components, outcome, build_id, at) = r;
    Some(RunRecord {
        label,
        action,
        key: Blake3::from_hex(&key)?,
        components: serde_json::from_slice(&components).ok()?,
        outcome: outcome.parse().ok()?,
        build_id,
        at: from_ms(at),
    })
}

const SELECT: &str = "SELECT label, action, key, components_json, outcome, build_id, at FROM runs";

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    // Components: a blob written in place (`insert_run`), or text (rows of earlier versions).
    let components = match r.get_ref(3)? {
        rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => b.to_vec(),
        _ => Vec::new(),
    };
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, components, r.get(4)?, r.get(5)?, r.get(6)?))
}

/// The id and key of the latest recorded run of `run`'s (label, action).
fn latest_run(tx: &rusqlite::Transaction<'_>, run: &RunRecord) -> rusqlite::Result<Option<(i64, String)>> {
    tx.prepare_cached("SELECT id, key FROM runs WHERE label = ?1 AND action = ?2 ORDER BY id DESC LIMIT 1")?
        .query_row(params![run.label, run.action], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// Sets the outcome, build id and time of the latest run of `run`'s (label, action) if its key is
/// `run`'s; false (nothing written) otherwise.
fn touch_latest(tx: &rusqlite::Transaction<'_>, run: &RunRecord) -> rusqlite::Result<bool> {
    match latest_run(tx, run)? {
        Some((id, k)) if k == run.key.to_hex() => {
            tx.prepare_cached("UPDATE runs SET outcome = ?2, build_id = ?3, at = ?4 WHERE id = ?1")?
                .execute(params![id, run.outcome.as_str(), run.build_id, to_ms(run.at)])?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Counts the bytes written to it: the length of a value's JSON without holding the JSON.
struct ByteCount(i64);

impl std::io::Write for ByteCount {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as i64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A JSON encoding error as a SQLite one (the SQLite error itself when writing the blob failed,
/// so a full disk is still reported as one).
fn json_error(e: serde_json::Error) -> rusqlite::Error {
    if !e.is_io() {
        return rusqlite::Error::ToSqlConversionFailure(Box::new(e));
    }
    let e = std::io::Error::from(e);
    if !e.get_ref().is_some_and(|inner| inner.is::<rusqlite::Error>()) {
        return rusqlite::Error::ToSqlConversionFailure(Box::new(e));
    }
    match e.into_inner().map(|i| i.downcast::<rusqlite::Error>()) {
        Some(Ok(inner)) => *inner,
        Some(Err(other)) => rusqlite::Error::ToSqlConversionFailure(other),
        None => rusqlite::Error::ToSqlConversionFailure("writing the run's components failed".into()),
    }
}

/// Inserts `run` with its components, keeping only the latest row of each distinct key of
/// its (label, action), at most [`RUN_KEYS_KEPT`] of them.
///
/// The components' JSON goes into the row as it is encoded: its length is counted first, the row
/// inserted with that many zero bytes (`zeroblob`), which are then overwritten through SQLite's
/// incremental blob I/O. A 100,000-file layer's components are ≈ 10 MB of JSON; encoded into a
/// string and bound as a parameter they were held three times over (the string, SQLite's copy
/// of the parameter, the record being built) at the end of a cold build (issue 23, peak RSS).
/// The column is read back as text or blob ([`read_row`]).
fn insert_run(tx: &rusqlite::Transaction<'_>, run: &RunRecord) -> rusqlite::Result<()> {
    let key = run.key.to_hex();
    let mut len = ByteCount(0);
    serde_json::to_writer(&mut len, &run.components).map_err(json_error)?;
    tx.prepare_cached(
        "INSERT INTO runs(label, action, key, components_json, outcome, build_id, at) \
         VALUES (?1, ?2, ?3, zeroblob(?4), ?5, ?6, ?7)",
    )?
    .execute(params![run.label, run.action, key, len.0, run.outcome.as_str(), run.build_id, to_ms(run.at)])?;
    let id = tx.last_insert_rowid();
    {
        let mut blob = tx.blob_open(rusqlite::MAIN_DB, "runs", "components_json", id, false)?;
        let mut w = std::io::BufWriter::with_capacity(64 << 10, &mut blob);
        serde_json::to_writer(&mut w, &run.components).map_err(json_error)?;
        std::io::Write::flush(&mut w).map_err(|e| json_error(serde_json::Error::io(e)))?;
    }
    tx.prepare_cached("DELETE FROM runs WHERE label = ?1 AND action = ?2 AND key = ?3 AND id < ?4")?
        .execute(params![run.label, run.action, key, id])?;
    tx.prepare_cached(
        "DELETE FROM runs WHERE label = ?1 AND action = ?2 AND id NOT IN \
         (SELECT id FROM runs WHERE label = ?1 AND action = ?2 ORDER BY id DESC LIMIT ?3)",
    )?
    .execute(params![run.label, run.action, RUN_KEYS_KEPT as i64])?;
    Ok(())
}

impl Cache {
    /// Records one run; see [`Cache::record_runs`].
    pub fn record_run(&self, run: &RunRecord) -> Result<()> {
        self.record_runs(std::slice::from_ref(run))
    }

    /// Records runs in one transaction. Per (label, action) only the latest run of each of the
    /// last [`RUN_KEYS_KEPT`] distinct keys is kept, so history stays small however often a
    /// target is built, and the previous *different* key survives any number of cached runs.
    ///
    /// A run whose key is already the latest of its (label, action) — every action of a no-op
    /// build — only updates that row's outcome, build id and time: the same key means the same
    /// components, so the components are neither encoded nor written again (issue 23: a no-op
    /// rewrote ≈ 3 MB of components JSON of a 10,000-file monorepo). A new key's components are
    /// streamed into the row ([`insert_run`]), never held as one string.
    pub fn record_runs(&self, runs: &[RunRecord]) -> Result<()> {
        self.db.write(
            || format!("recording {} runs", runs.len()),
            |tx| {
                for run in runs {
                    if !touch_latest(tx, run)? {
                        insert_run(tx, run)?;
                    }
                }
                Ok(())
            },
        )
    }

    /// The latest run of `action` of `label` and the previous run with a different key.
    pub fn last_two_runs(&self, label: &str, action: &str) -> Result<Option<RunHistory>> {
        let rows = self.db.read(
            || format!("reading runs of `{label}` `{action}`"),
            |tx| {
                tx.prepare_cached(&format!("{SELECT} WHERE label = ?1 AND action = ?2 ORDER BY id DESC LIMIT 2"))?
                    .query_map(params![label, action], read_row)?
                    .collect::<rusqlite::Result<Vec<Row>>>()
            },
        )?;
        let mut it = rows.into_iter().filter_map(to_record);
        Ok(it.next().map(|latest| RunHistory { latest, previous: it.next() }))
    }

    /// [`Cache::last_two_runs`] for every action of `label`, sorted by action name.
    pub fn runs_for_label(&self, label: &str) -> Result<Vec<RunHistory>> {
        let rows = self.db.read(
            || format!("reading runs of `{label}`"),
            |tx| {
                tx.prepare_cached(&format!("{SELECT} WHERE label = ?1 ORDER BY action, id DESC"))?
                    .query_map([label], read_row)?
                    .collect::<rusqlite::Result<Vec<Row>>>()
            },
        )?;
        let mut by_action: BTreeMap<String, Vec<RunRecord>> = BTreeMap::new();
        for r in rows.into_iter().filter_map(to_record) {
            let v = by_action.entry(r.action.clone()).or_default();
            if v.len() < 2 {
                v.push(r);
            }
        }
        Ok(by_action
            .into_values()
            .filter_map(|v| {
                let mut it = v.into_iter();
                it.next().map(|latest| RunHistory { latest, previous: it.next() })
            })
            .collect())
    }
}
