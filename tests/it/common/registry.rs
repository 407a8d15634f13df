//! The registry of the tests: distribution 2.8 via `../shared/harness/registry.sh`, plain HTTP on
//! 127.0.0.1. A test either starts its own (`Registry::start`: with basic auth, or when it
//! damages the storage, which is shared by all repositories) or takes a namespace of the one
//! registry the test binary shares (`Registry::shared`): repositories under `tN/`, the log
//! narrowed to the lines about them.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::daemon::{unique_namespace, Daemon};

pub struct Registry {
    /// `127.0.0.1:PORT`
    pub host: String,
    daemon: Server,
    /// `""` (own registry) or `"tN/"` (a namespace of the shared one).
    ns: String,
}

enum Server {
    Own(Daemon),
    Shared(&'static Daemon),
}

impl Registry {
    /// A registry of the test's own (`auth`: `USER:PASS` for basic auth), stopped on drop.
    pub fn start(auth: Option<&str>) -> Registry {
        let d = Daemon::start("registry.sh", auth.as_slice(), &[("REGISTRY_AUTH", None)]);
        Registry { host: d.url.trim_start_matches("http://").to_string(), daemon: Server::Own(d), ns: String::new() }
    }

    /// A namespace of its own in the registry the test binary shares (no auth).
    pub fn shared() -> Registry {
        static SHARED: OnceLock<Daemon> = OnceLock::new();
        let d = Daemon::shared(&SHARED, "registry.sh");
        Registry {
            host: d.url.trim_start_matches("http://").to_string(),
            daemon: Server::Shared(d),
            ns: format!("{}/", unique_namespace()),
        }
    }

    fn daemon(&self) -> &Daemon {
        match &self.daemon {
            Server::Own(d) => d,
            Server::Shared(d) => d,
        }
    }

    /// The repository `name` of this test (`base/run` → `tN/base/run` in the shared registry).
    pub fn repo(&self, name: &str) -> String {
        format!("{}{name}", self.ns)
    }

    /// `HOST/REPO[:TAG|@DIGEST]` of `name` (`base/run:1`) in this test's repositories.
    pub fn tag(&self, name: &str) -> String {
        format!("{}/{}", self.host, self.repo(name))
    }

    /// [`Registry::tag`] as a `cbuild::registry::Reference`.
    pub fn reference(&self, name: &str) -> cbuild::registry::Reference {
        cbuild::registry::Reference::parse(&self.tag(name)).unwrap()
    }

    /// The registry's log (requests with their status); in the shared registry only the lines
    /// about this test's repositories.
    pub fn log(&self) -> String {
        let all = std::fs::read_to_string(self.daemon().dir().join("registry.log")).unwrap_or_default();
        if self.ns.is_empty() {
            return all;
        }
        let mine = format!("/v2/{}", self.ns);
        all.lines().filter(|l| l.contains(&mine)).map(|l| format!("{l}\n")).collect()
    }

    /// The registry's own file of a blob (for tests that damage it: own registry only).
    pub fn blob_file(&self, d: &cbuild::model::digest::Digest) -> PathBuf {
        assert!(self.ns.is_empty(), "blobs of the shared registry belong to every test");
        self.daemon().dir().join("data/docker/registry/v2/blobs/sha256").join(&d.hex()[..2]).join(d.hex()).join("data")
    }
}

/// The manifest digest skopeo sees for `reference` (`HOST/REPO:TAG`), with `USER:PASS` if given.
pub fn skopeo_digest(reference: &str, creds: Option<&str>) -> String {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--no-tags", "--tls-verify=false"]);
    if let Some(c) = creds {
        cmd.args(["--creds", c]);
    }
    let out = cmd.arg(format!("docker://{reference}")).output().expect("run skopeo");
    assert!(out.status.success(), "skopeo inspect {reference}: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["Digest"].as_str().unwrap().to_string()
}
