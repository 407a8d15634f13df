//! The REAPI server of the tests: BuildGrid (`../shared/harness/buildgrid.sh`: CAS, ActionCache,
//! ByteStream, Capabilities on loopback, instance `""`), one per test binary. Tests keep apart by
//! what they build (keys are content hashes), not by namespace: BuildGrid serves one instance.

use std::path::PathBuf;
use std::sync::OnceLock;

use super::daemon::Daemon;

pub struct BuildGrid {
    /// `grpc://127.0.0.1:PORT`
    pub url: String,
    daemon: &'static Daemon,
}

impl BuildGrid {
    /// The server this test binary shares, started on first use (~15 s; the first start on a
    /// machine also installs BuildGrid into the harness's venv).
    pub fn shared() -> BuildGrid {
        static SHARED: OnceLock<Daemon> = OnceLock::new();
        let d = Daemon::shared(&SHARED, "buildgrid.sh");
        BuildGrid { url: d.url.clone(), daemon: d }
    }

    /// The signing key every test writing to the shared server uses: the stack's actions are the
    /// same in several tests, and a reader trusting one writer's key would refuse another's
    /// entries (and rightly rebuild), which would make "runner B executes nothing" a race.
    pub fn keys() -> &'static super::Keys {
        static KEYS: OnceLock<super::Keys> = OnceLock::new();
        KEYS.get_or_init(super::keygen)
    }

    /// The file in which the server's disk storage keeps blob `hex` (sha256).
    pub fn cas_file(&self, hex: &str) -> PathBuf {
        self.daemon.dir().join("cas/cas/objects").join(&hex[..2]).join(&hex[2..])
    }
}
