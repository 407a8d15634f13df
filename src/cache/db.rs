//! The SQLite side of the cache: opening (WAL, busy timeout, schema version, corruption check,
//! discard-and-recreate), the schema, and the read/write transaction helpers every table uses.
//! No table-specific SQL lives here except the schema.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

use super::error::{io_err, CacheError, Result};

/// The database schema version, kept in `PRAGMA user_version` and mixed into every action key.
/// Bump it whenever a table or the meaning of a column changes: older databases are then discarded.
pub const SCHEMA_VERSION: u32 = 2;

/// How long a statement waits for another process's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Databases up to this size are `PRAGMA quick_check`ed at every open (it reads every page: about
/// 2 ms per MiB here, so at most ~35 ms); larger ones are checked by `gc`, and corruption met at
/// run time marks the database for discard at the next open.
pub const QUICK_CHECK_MAX_BYTES: u64 = 16 << 20;

pub(crate) const DB_FILE: &str = "cache.sqlite";
const CORRUPT_MARKER: &str = "cache.sqlite.corrupt";
/// Held shared by every open `Cache` for its lifetime; `clean` needs it exclusively.
pub(crate) const USE_LOCK: &str = "lock";
/// Held exclusively while a process checks, discards or creates the database.
const OPEN_LOCK: &str = "open.lock";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS actions(
    key TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    label TEXT NOT NULL,
    result_json TEXT NOT NULL,
    components_json TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_lru ON actions(last_used_at);
CREATE TABLE IF NOT EXISTS action_blobs(
    key TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY(key, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS action_blobs_digest ON action_blobs(digest);
CREATE TABLE IF NOT EXISTS blobs(
    digest TEXT PRIMARY KEY NOT NULL,
    size INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    label TEXT NOT NULL,
    action TEXT NOT NULL,
    key TEXT NOT NULL,
    components_json TEXT NOT NULL,
    outcome TEXT NOT NULL,
    build_id TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_label_action ON runs(label, action, id);
CREATE TABLE IF NOT EXISTS stat_cache(
    path BLOB PRIMARY KEY NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    blake3 BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS layer_compression(
    diff_id TEXT NOT NULL,
    compression TEXT NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    PRIMARY KEY(diff_id, compression)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gzip_chunks(
    codec TEXT NOT NULL,
    raw BLOB NOT NULL,
    raw_len INTEGER NOT NULL,
    blob TEXT NOT NULL,
    offset INTEGER NOT NULL,
    len INTEGER NOT NULL,
    zhash BLOB NOT NULL,
    PRIMARY KEY(codec, raw)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS gzip_chunks_blob ON gzip_chunks(blob);
CREATE TABLE IF NOT EXISTS blob_locations(
    digest TEXT NOT NULL,
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    PRIMARY KEY(digest, registry, repository)
) WITHOUT ROWID;
"#;

/// Tables added after schema version 2 was released: created on every open if missing (they hold
/// only hints, so an older database gains them empty without a new schema version, which would
/// discard every cache).
///
/// `generation`: a random id of this database (a discarded and recreated one has another) and a
/// counter that every added, changed or removed action entry and every removed blob moves
/// (triggers: no writer can forget it). Equal generations read twice: no cached answer changed
/// in between (`cli::noop`).
const ADDITIVE: &str = r#"
CREATE TABLE IF NOT EXISTS remote_entries(
    key TEXT NOT NULL,
    remote TEXT NOT NULL,
    PRIMARY KEY(key, remote)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS generation(
    one INTEGER PRIMARY KEY CHECK (one = 1),
    db TEXT NOT NULL,
    n INTEGER NOT NULL
);
INSERT OR IGNORE INTO generation VALUES (1, lower(hex(randomblob(16))), 0);
CREATE TRIGGER IF NOT EXISTS generation_action_added AFTER INSERT ON actions
    BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS generation_action_changed AFTER UPDATE OF result_json ON actions
    BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS generation_action_removed AFTER DELETE ON actions
    BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS generation_blob_removed AFTER DELETE ON blobs
    BEGIN UPDATE generation SET n = n + 1; END;
"#;

/// One SQLite connection behind a mutex, plus the shared "in use" lock on the cache directory.
///
/// A single connection keeps this simple and correct: statements are short, hashing and blob I/O
/// happen outside the lock, and other processes are coordinated by SQLite's own WAL locking.
pub(crate) struct Db {
    conn: Mutex<Connection>,
    path: PathBuf,
    marker: PathBuf,
    // Dropped last: releases the shared lock that keeps `clean` away.
    _use_lock: File,
}

/// Why a database could not be used as it is.
enum Problem {
    /// Corrupt or of another schema: move it aside and start again.
    Discard(String),
    /// Anything else (permissions, busy past the timeout, disk full): report, never discard.
    Fatal(rusqlite::Error),
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase))
}

fn classify(e: rusqlite::Error) -> Problem {
    if is_corruption(&e) {
        Problem::Discard(format!("SQLite reports: {e}"))
    } else {
        Problem::Fatal(e)
    }
}

/// Opens (creating) `path` and takes a `flock` on it, shared or exclusive, waiting if needed.
pub(crate) fn lock_file(path: &Path, exclusive: bool) -> Result<File> {
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io_err(path))?;
    let locked = if exclusive { f.lock() } else { f.lock_shared() };
    locked.map_err(io_err(path))?;
    Ok(f)
}

/// Milliseconds since the Unix epoch, the unit of every `*_at` column.
pub(crate) fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

pub(crate) fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

impl Db {
    /// Opens `dir/cache.sqlite`, discarding it (with a warning) when it is corrupt or of another
    /// schema version. Never returns a connection to a database it could misread.
    pub(crate) fn open(dir: &Path, warnings: &mut Vec<String>) -> Result<Db> {
        // Checks, discards and temp sweeps are serialised, so two processes never discard each
        // other's fresh db.
        let _open_lock = lock_file(&dir.join(OPEN_LOCK), true)?;
        // Alone? Every process with the cache open holds the use lock shared for as long as it
        // does, so getting it exclusively means no one else can be writing a temp file: every
        // leftover is a dead writer's. Otherwise only files whose name proves their writer dead
        // go (`super::temp::sweep_temp_files`).
        let use_path = dir.join(USE_LOCK);
        let use_lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&use_path)
            .map_err(io_err(&use_path))?;
        let alone = match use_lock.try_lock() {
            Ok(()) => true,
            Err(fs::TryLockError::WouldBlock) => false,
            Err(fs::TryLockError::Error(e)) => return Err(CacheError::Io { path: use_path, source: e }),
        };
        super::temp::sweep_temp_files(dir, alone);
        // Down to shared (or wait for a running `clean`). flock does not promise an atomic
        // downgrade: a `clean` may slip in between, which is why `Cache::open` creates `cas/` and
        // `tmp/` only after this returns and the database is opened below, after the lock.
        use_lock.lock_shared().map_err(io_err(&use_path))?;
        let path = dir.join(DB_FILE);
        let marker = dir.join(CORRUPT_MARKER);

        if marker.exists() {
            warnings.push(format!(
                "discarded the cache database `{}`: an earlier cbuild found it corrupt; it is \
                 rebuilt from scratch (stored blobs are kept)",
                path.display()
            ));
            discard(dir, &path)?;
            let _ = fs::remove_file(&marker);
        }
        let conn = match try_open(&path, warnings) {
            Ok(c) => c,
            Err(Problem::Fatal(source)) => return Err(CacheError::Open { path, source }),
            Err(Problem::Discard(reason)) => {
                warnings.push(format!(
                    "discarded the cache database `{}`: {reason}; it is rebuilt from scratch \
                     (stored blobs are kept)",
                    path.display()
                ));
                discard(dir, &path)?;
                match try_open(&path, warnings) {
                    Ok(c) => c,
                    Err(Problem::Fatal(source)) => return Err(CacheError::Open { path, source }),
                    Err(Problem::Discard(reason)) => {
                        // A brand-new file cannot be corrupt; something outside keeps damaging it.
                        return Err(CacheError::Io {
                            path,
                            source: io::Error::other(format!("fresh database unusable: {reason}")),
                        });
                    }
                }
            }
        };
        Ok(Db { conn: Mutex::new(conn), path, marker, _use_lock: use_lock })
    }

    /// Path of the database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no open transaction (Transaction rolls back on
        // drop), so the connection is still usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Turns a SQLite error into a `CacheError`, marking the database for discard on corruption.
    pub(crate) fn err(&self, what: impl Into<String>, source: rusqlite::Error) -> CacheError {
        let what = what.into();
        if is_corruption(&source) {
            let _ = fs::write(&self.marker, b"");
            CacheError::Corrupt { path: self.path.clone(), what, source }
        } else {
            CacheError::Db { path: self.path.clone(), what, source }
        }
    }

    /// Runs `f` in a deferred (read) transaction: one consistent snapshot, no write lock.
    pub(crate) fn read<T>(
        &self,
        what: impl FnOnce() -> String,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut conn = self.lock();
        let run = |conn: &mut Connection| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
            let v = f(&tx)?;
            tx.commit()?;
            Ok(v)
        };
        run(&mut conn).map_err(|e| self.err(what(), e))
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction: the write lock is taken up front (waiting up to
    /// the busy timeout), so two writers never deadlock upgrading a read lock; commits at the end.
    pub(crate) fn write<T>(
        &self,
        what: impl FnOnce() -> String,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut conn = self.lock();
        let run = |conn: &mut Connection| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let v = f(&tx)?;
            tx.commit()?;
            Ok(v)
        };
        run(&mut conn).map_err(|e| self.err(what(), e))
    }

    /// Runs `f` on the bare connection (for pragmas that cannot run inside a transaction).
    pub(crate) fn with_conn<T>(
        &self,
        what: impl FnOnce() -> String,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let conn = self.lock();
        f(&conn).map_err(|e| self.err(what(), e))
    }

    /// Bytes used by the database, its WAL and its shared-memory index.
    pub(crate) fn size_on_disk(&self) -> u64 {
        db_files(&self.path).iter().filter_map(|p| fs::metadata(p).ok()).map(|m| m.len()).sum()
    }
}

/// The database file and its companions.
pub(crate) fn db_files(path: &Path) -> [PathBuf; 4] {
    let with = |s: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(s);
        PathBuf::from(p)
    };
    [path.to_path_buf(), with("-wal"), with("-shm"), with("-journal")]
}

fn try_open(path: &Path, warnings: &mut Vec<String>) -> std::result::Result<Connection, Problem> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(classify)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(classify)?;
    // The first statement reads the header: garbage fails here with SQLITE_NOTADB.
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(classify)?;
    let fresh = version == 0 && {
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0)).map_err(classify)?;
        if tables > 0 {
            return Err(Problem::Discard("it has tables but no schema version".into()));
        }
        true
    };
    if !fresh && version != i64::from(SCHEMA_VERSION) {
        return Err(Problem::Discard(format!("it has schema version {version}, this cbuild uses {SCHEMA_VERSION}")));
    }
    if fresh {
        // Must precede WAL and the first table; lets `gc` return pages with incremental_vacuum.
        conn.execute_batch("PRAGMA auto_vacuum=INCREMENTAL").map_err(classify)?;
    }
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(classify)?;
    if !mode.eq_ignore_ascii_case("wal") {
        warnings.push(format!(
            "the cache database `{}` cannot use WAL mode (journal mode is `{mode}`; a network file \
             system?); concurrent builds will be slower",
            path.display()
        ));
    }
    // In WAL mode NORMAL loses at most the last transactions on power loss, never consistency.
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(classify)?;
    // Closing does not checkpoint: the WAL is copied into the database by SQLite's automatic
    // checkpoint (every 1,000 pages written, by the writer that crosses it) instead of by every
    // cbuild process at exit, which cost 18–23 ms of each build's wall time (a one-file edit, a
    // cold build) after its summary. The WAL and its index stay beside the database (copy the
    // directory, not `cache.sqlite` alone), and are truncated to `journal_size_limit` after a
    // checkpoint. Consistency is the same: an unclean exit has always left a WAL to replay.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).map_err(classify)?;
    conn.pragma_update(None, "journal_size_limit", 32i64 << 20).map_err(classify)?;
    if fresh {
        create_schema(&conn).map_err(classify)?;
    } else if fs::metadata(path).map(|m| m.len()).unwrap_or(0) <= QUICK_CHECK_MAX_BYTES {
        quick_check(&conn).map_err(classify)?.map_or(Ok(()), |r| Err(Problem::Discard(r)))?;
    }
    conn.execute_batch(ADDITIVE).map_err(classify)?;
    Ok(conn)
}

/// `PRAGMA quick_check`: `Ok(None)` when the database is sound, `Ok(Some(reason))` when not.
pub(crate) fn quick_check(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let r: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
    Ok(if r == "ok" { None } else { Some(format!("integrity check failed: {r}")) })
}

fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let r = conn
        .execute_batch(SCHEMA)
        .and_then(|()| conn.pragma_update(None, "user_version", SCHEMA_VERSION))
        .and_then(|()| conn.execute_batch("COMMIT"));
    if r.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    r
}

/// Moves the database aside (one atomic rename, so other openers see the old file or none), drops
/// its WAL and shared-memory files, then deletes it. Blobs are untouched.
fn discard(dir: &Path, path: &Path) -> Result<()> {
    let tmp = dir.join("tmp");
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let aside = tmp.join(format!("discarded-{}-{nanos}.sqlite", std::process::id()));
    match fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(CacheError::Io { path: path.to_path_buf(), source: e }),
    }
    for p in &db_files(path)[1..] {
        match fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(CacheError::Io { path: p.clone(), source: e }),
        }
    }
    let _ = fs::remove_file(&aside);
    Ok(())
}
