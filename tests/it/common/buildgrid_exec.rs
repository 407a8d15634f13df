//! The remote-*execution* server of the tests: BuildGrid with its SQL scheduler on a private
//! PostgreSQL cluster (`tests/harness/buildgrid-exec.sh`: CAS, ActionCache, ByteStream,
//! Capabilities, Execution, Operations and the Remote Workers API's Bots service on loopback,
//! instance `""`), one per test binary, stopped (BuildGrid and PostgreSQL) once the binary has
//! ended. Bots match on `OSFamily`, `ISA`, `cbuild-protocol` (their primary device's properties);
//! `container-image` and `cbuild-build-image` are accepted, unmatched; a bot silent for 10 s loses
//! its session and its leases are retried elsewhere. The protocol as this server implements it is
//! written down in `tests/harness/reference-bot.py`, a Python bot that [`ReferenceBot`] runs (a
//! worker for tests of the execution client that do not involve cbuild's own worker).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use super::daemon::Daemon;

pub struct BuildGridExec {
    /// `grpc://127.0.0.1:PORT`
    pub url: String,
    daemon: &'static Daemon,
}

impl BuildGridExec {
    /// The server this test binary shares, started on first use (5-16 s: a fresh PostgreSQL
    /// cluster, BuildGrid's migrations, the server; the first start on a machine also installs
    /// BuildGrid and psycopg2 into the harness's venv).
    pub fn shared() -> BuildGridExec {
        static SHARED: OnceLock<Daemon> = OnceLock::new();
        let d = Daemon::shared(&SHARED, "buildgrid-exec.sh");
        BuildGridExec { url: d.url.clone(), daemon: d }
    }

    /// Why the server cannot run here (no PostgreSQL server binaries), for `skip_unless_ci`.
    pub fn missing() -> Option<String> {
        let pg_bins = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().join("bin/pg_ctl").is_file());
        let from_env = std::env::var_os("PG_BIN").is_some_and(|d| Path::new(&d).join("pg_ctl").is_file());
        (!pg_bins && !from_env)
            .then(|| "PostgreSQL's server binaries (Debian `postgresql`, scripts/install-deps.sh)".to_string())
    }

    /// The server's dir: `buildgrid.log` (INFO: bot sessions, expiries, errors), `postgres.log`,
    /// `config.yml`, `cas/`.
    pub fn dir(&self) -> &Path {
        self.daemon.dir()
    }

    /// The last `lines` lines of BuildGrid's log, for an assertion message.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir().join("buildgrid.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Starts `tests/harness/reference-bot.py` as a bot of this server (OSFamily=linux,
    /// ISA=x86-64, cbuild-protocol=1) with `capacity` leases; killed on drop.
    pub fn reference_bot(&self, capacity: u32) -> ReferenceBot {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let id = format!("reference-bot-{}-{n}", std::process::id());
        let log = self.dir().join(format!("{id}.log"));
        ReferenceBot::spawn(&self.url, &id, capacity, &log)
    }
}

/// A running `reference-bot.py bot` (its own process group, killed with its children on drop).
pub struct ReferenceBot {
    child: Child,
    /// The bot's id (`ActionResult.execution_metadata.worker` of what it ran).
    pub id: String,
    /// Its JSON event lines (`session`, `lease`, `done`, `reported`, …).
    pub log: PathBuf,
}

impl ReferenceBot {
    fn spawn(url: &str, id: &str, capacity: u32, log: &Path) -> ReferenceBot {
        use std::os::unix::process::CommandExt;
        let script = super::harness("reference-bot.py");
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new(&script)
            .args(["bot", url, "--bot-id", id, "--capacity", &capacity.to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        let bot = ReferenceBot { child, id: id.to_string(), log: log.to_path_buf() };
        bot.wait_for("\"event\": \"session\"", std::time::Duration::from_secs(30));
        bot
    }

    /// Waits until the bot's log contains `needle` (panics after `timeout`).
    pub fn wait_for(&self, needle: &str, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains(needle) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "reference bot {}: no `{needle}` in {timeout:?}:\n{text}",
                self.id
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for ReferenceBot {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the bot's own process group (spawned with process_group(0)).
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
