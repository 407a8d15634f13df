//! The remote cache server of the tests: nginx WebDAV speaking the Bazel HTTP cache protocol
//! (`/ac/<hex>`, `/cas/<hex>`) via `../shared/harness/http-cache.sh`. A test either starts its own
//! (`CacheServer::start`: with basic auth, to stop it, or to look at all it stores) or takes a
//! path prefix of the one server the test binary shares (`CacheServer::shared`): a namespace of
//! its own (`URL/tN/ac/…`, stored under `data/tN/`), the access log narrowed to its requests.

use std::path::PathBuf;
use std::sync::OnceLock;

use super::daemon::{unique_namespace, Daemon};

pub struct CacheServer {
    /// The URL to give cbuild: `http://127.0.0.1:PORT`, or `…/tN` on the shared server.
    pub url: String,
    daemon: Server,
    /// `""` (own server) or `"tN"` (a prefix of the shared one).
    ns: String,
}

enum Server {
    Own(Daemon),
    Shared(&'static Daemon),
}

impl CacheServer {
    /// A server of the test's own (`auth`: `USER:PASS` for basic auth), stopped on drop.
    pub fn start(auth: Option<&str>) -> CacheServer {
        let d = Daemon::start("http-cache.sh", &[], &[("CACHE_AUTH", auth)]);
        CacheServer { url: d.url.clone(), daemon: Server::Own(d), ns: String::new() }
    }

    /// A path prefix of its own on the server the test binary shares (no auth).
    pub fn shared() -> CacheServer {
        static SHARED: OnceLock<Daemon> = OnceLock::new();
        let d = Daemon::shared(&SHARED, "http-cache.sh");
        let ns = unique_namespace();
        CacheServer { url: format!("{}/{ns}", d.url), daemon: Server::Shared(d), ns }
    }

    fn daemon(&self) -> &Daemon {
        match &self.daemon {
            Server::Own(d) => d,
            Server::Shared(d) => d,
        }
    }

    /// Stops the server (own server only).
    pub fn stop(&self) {
        match &self.daemon {
            Server::Own(d) => d.stop(),
            Server::Shared(_) => panic!("the shared cache server cannot be stopped by one test"),
        }
    }

    /// The server's dir (configuration, logs, `data/`).
    pub fn dir(&self) -> &std::path::Path {
        self.daemon().dir()
    }

    /// Where the server keeps what this test stored: `ac/<hex>` and `cas/<hex>` below it.
    pub fn data(&self) -> PathBuf {
        self.daemon().dir().join("data").join(&self.ns)
    }

    /// The server's file of CAS blob `d`.
    pub fn cas_file(&self, d: &cbuild::model::digest::Digest) -> PathBuf {
        self.data().join("cas").join(d.hex())
    }

    /// The server's file of action-cache entry `key`.
    pub fn ac_file(&self, key: &cbuild::model::digest::Blake3) -> PathBuf {
        self.data().join("ac").join(key.to_hex())
    }

    /// nginx's access log (`"GET /ac/… HTTP/1.1" 404 …`); on the shared server only this test's
    /// requests, with the prefix removed (`GET /ac/…` as on an own server).
    pub fn access_log(&self) -> String {
        let all = std::fs::read_to_string(self.daemon().dir().join("access.log")).unwrap_or_default();
        if self.ns.is_empty() {
            return all;
        }
        let mine = format!(" /{}/", self.ns);
        all.lines().filter(|l| l.contains(&mine)).map(|l| format!("{}\n", l.replacen(&mine, " /", 1))).collect()
    }

    /// `PUT URL/path` with `body`, like any client of the protocol (`path`: `ac/<hex>`, `cas/<hex>`).
    pub fn put(&self, path: &str, body: Vec<u8>) {
        let r = reqwest::blocking::Client::new().put(format!("{}/{path}", self.url)).body(body).send().unwrap();
        assert!(r.status().is_success(), "PUT {path}: {}", r.status());
    }
}
