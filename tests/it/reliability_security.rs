//! Sandbox and secrets through the CLI. Sandbox: a buildpack reaches the host network only when
//! its target says `network = True`; a genrule never does; 50 background processes left by a
//! buildpack or a genrule do not survive the build. Secrets: a planted registry password (basic
//! auth via DOCKER_CONFIG) and a planted remote-cache token never appear in stdout/stderr/--json,
//! in any image blob under cbuild-out, or anywhere in the cache dir — also when the server answers
//! errors that echo the request's Authorization header back.
//!
//! Covered elsewhere, not repeated: reading host files, writing outside mounts, becoming root,
//! network without `network`, leftover sleeps, timeouts and dropped futures through the sandbox API
//! (`sandbox_escape.rs`); a hostile buildpack through the platform
//! (`cnb_platform.rs::hostile_buildpack_is_contained_and_never_root`); the remote token on a
//! healthy server (`remote_cli.rs::remote_cache_credentials_are_never_printed`) and in
//! errors/Debug (`remote_cache.rs::planted_token_never_appears_in_errors_or_debug`).

use crate::common;
use crate::common::support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cache_server::CacheServer;
use common::http::{FakeServer, Response};
use common::registry::Registry;
use support::Ws;

/// A server on 127.0.0.1 that answers HTTP 200 "host-says-hi" (and counts connections).
fn host_listener() -> FakeServer {
    FakeServer::start(|_| Response::new(200, "host-says-hi"))
}

/// An examples copy with buildpack `//bps:probe` (detect passes, build runs `build_sh`) and
/// `//app:img` built with it, with `network` and platform env `HOST_PORT`.
fn probe_ws(build_sh: &str, network: bool, port: u16) -> Ws {
    let ws = support::examples();
    ws.write(
        "bps/probe/buildpack.toml",
        "api = \"0.10\"\n[buildpack]\nid = \"rel/probe\"\nversion = \"1.0.0\"\n[[targets]]\nos = \"linux\"\n",
    );
    ws.write("bps/probe/bin/detect", "#!/bin/sh\nexit 0\n");
    ws.write("bps/probe/bin/build", build_sh);
    for f in ["bin/detect", "bin/build"] {
        std::fs::set_permissions(ws.path(&format!("bps/probe/{f}")), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    ws.write("bps/BUILD.star", "buildpack(name = \"probe\", srcs = glob([\"probe/**\"]))\n");
    ws.write("bld/BUILD.star", "builder(name = \"b\", stack = \"//stacks:default\", order = [[\"//bps:probe\"]])\n");
    ws.write(
        "app/BUILD.star",
        format!(
            "cnb_image(name = \"img\", srcs = glob([\"**\"], exclude = [\"BUILD.star\"]), builder = \"//bld:b\", network = {}, env = {{\"HOST_PORT\": \"{port}\"}})\n",
            if network { "True" } else { "False" }
        ),
    );
    ws.write("app/x.txt", "x");
    ws
}

// nc, not wget: the stack's static busybox wget segfaults (NSS) whatever the network, so a wget
// probe cannot tell blocked from reachable.
const NET_PROBE: &str = "#!/bin/sh\nif printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 127.0.0.1 \"$(cat \"$2/env/HOST_PORT\")\"; then echo; echo NET-REACHED; else echo NET-BLOCKED; fi\nprintf '[[processes]]\\ntype = \"web\"\\ncommand = [\"true\"]\\ndefault = true\\n' > \"$1/launch.toml\"\n";

fn output_lines(o: &support::Out) -> String {
    o.events()
        .iter()
        .filter(|e| e["type"] == "output")
        .map(|e| format!("{}\n", e["line"].as_str().unwrap_or("")))
        .collect()
}

#[test]
fn buildpack_network_only_with_network_true() {
    let host = host_listener();
    let port = host.port();
    let ws = probe_ws(NET_PROBE, false, port);
    let o = ws.build(&["//app:img"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let out = output_lines(&o);
    assert!(out.contains("NET-BLOCKED") && !out.contains("host-says-hi"), "network = False must block: {out}");
    assert_eq!(host.connections(), 0, "a connection reached the host with network = False");

    let ws = probe_ws(NET_PROBE, true, port);
    let o = ws.build(&["//app:img"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let out = output_lines(&o);
    assert!(out.contains("host-says-hi") && out.contains("NET-REACHED"), "network = True must reach the host: {out}");
    assert!(host.connections() >= 1);
}

#[test]
fn genrule_never_reaches_the_network() {
    let host = host_listener();
    let port = host.port();
    let probe = format!("printf 'GET / HTTP/1.0\\\\r\\\\n\\\\r\\\\n' | /bin/busybox nc -w 3 127.0.0.1 {port}");
    // Positive control: the same probe on the host reaches the listener.
    let on_host = Command::new("sh").arg("-c").arg(probe.replace("\\\\", "\\")).output().unwrap();
    assert!(String::from_utf8_lossy(&on_host.stdout).contains("host-says-hi"), "probe broken on the host: {on_host:?}");
    assert_eq!(host.connections(), 1);
    let ws = support::examples();
    ws.write(
        "net/BUILD.star",
        format!("genrule(name = \"g\", outs = [\"o.txt\"], cmd = \"if {probe}; then echo reached > $OUTS; else echo blocked > $OUTS; fi\")\n"),
    );
    let o = ws.build(&["//net:g"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(host.connections(), 1, "a genrule reached the host network");
    let produced: Vec<_> = walkdir::WalkDir::new(ws.path("cbuild-out"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() == "o.txt")
        .collect();
    if let Some(f) = produced.first() {
        assert_eq!(std::fs::read_to_string(f.path()).unwrap().trim(), "blocked");
    }
}

/// Processes whose command line is exactly `sleep <marker>`.
fn survivors(marker: &str) -> usize {
    let out = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.trim() == format!("sleep {marker}")).count()
}

#[test]
fn fifty_background_processes_of_a_buildpack_do_not_survive() {
    let marker = "7771";
    let build = format!(
        "#!/bin/sh\ni=0\nwhile [ $i -lt 25 ]; do sleep {marker} & i=$((i+1)); done\ni=0\nwhile [ $i -lt 25 ]; do ( sleep {marker} & ) ; i=$((i+1)); done\n(trap '' HUP TERM; sleep {marker}) &\necho spawned\nprintf '[[processes]]\\ntype = \"web\"\\ncommand = [\"true\"]\\ndefault = true\\n' > \"$1/launch.toml\"\n"
    );
    let ws = probe_ws(&build, false, 1);
    let o = ws.build(&["//app:img"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(output_lines(&o).contains("spawned"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(survivors(marker), 0, "background processes of the buildpack survived the build");
}

#[test]
fn fifty_background_processes_of_a_genrule_do_not_survive() {
    let marker = "7772";
    let ws = support::examples();
    ws.write(
        "bg/BUILD.star",
        format!("genrule(name = \"g\", outs = [\"o.txt\"], cmd = \"i=0; while [ $i -lt 50 ]; do sleep {marker} & i=$((i+1)); done; echo ok > $OUTS\")\n"),
    );
    let o = ws.build(&["//bg:g"]);
    assert_eq!(o.code, 0, "{}", o.all());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(survivors(marker), 0, "background processes of the genrule survived the build");
}

// ---- secrets ----------------------------------------------------------------------------------------

const PASS: &str = "PLANTED-REG-PASS-9f3kq";
const TOKEN: &str = "PLANTED-CACHE-TOKEN-x81v";

/// Asserts no planted secret (or its base64 form) is in `text` or in any file under `dirs`.
fn assert_no_secret(what: &str, text: &str, dirs: &[&std::path::Path]) {
    for s in [PASS.to_string(), TOKEN.to_string(), common::b64(&format!("rel:{PASS}")), common::b64(TOKEN)] {
        assert!(!text.contains(&s), "{what}: secret `{s}` in the output:\n{text}");
        for d in dirs {
            let hits = support::files_containing(d, s.as_bytes());
            assert!(hits.is_empty(), "{what}: secret `{s}` in {hits:?}");
        }
    }
}

#[test]
fn registry_password_never_leaks() {
    let reg = Registry::start(Some(&format!("rel:{PASS}")));
    let ws = support::examples();
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(
        cfg.path().join("config.json"),
        format!("{{\"auths\":{{\"{}\":{{\"auth\":\"{}\"}}}}}}", reg.host, common::b64(&format!("rel:{PASS}"))),
    )
    .unwrap();
    let mut all = String::new();
    // `build --push` pushes to the target's `tags`.
    let tools = ws.read("tools/BUILD.star");
    ws.write(
        "tools/BUILD.star",
        tools.replacen(
            "exposed_ports = [\"8080/tcp\"],",
            &format!("exposed_ports = [\"8080/tcp\"],\n    tags = [\"{}/rel/web:1\"],", reg.host),
            1,
        ),
    );
    // A push, a push with --json, a build --push with --json, then an oci_pull of the pushed image.
    for args in [
        vec!["push".to_string(), "//tools:tool".into(), "--tag".into(), reg.tag("rel/img:0")],
        vec!["--json".into(), "push".into(), "//tools:tool-versioned".into(), "--tag".into(), reg.tag("rel/img:1")],
        vec!["build".into(), "--json".into(), "--push".into(), "//tools:web".into()],
    ] {
        let o = support::out_of(ws.cmd().env("DOCKER_CONFIG", cfg.path()).args(&args));
        assert_eq!(o.code, 0, "{args:?}: {}", o.all());
        all.push_str(&o.all());
    }
    assert!(all.matches("rel/").count() >= 3, "three pushes reported: {all}");
    ws.write(
        "pull/BUILD.star",
        format!(
            "oci_pull(name = \"b\", image = \"{}/rel/img:0\")\noci_image(name = \"img\", base = \":b\")\n",
            reg.host
        ),
    );
    let o = support::out_of(ws.cmd().env("DOCKER_CONFIG", cfg.path()).args(["build", "--json", "//pull:img"]));
    assert_eq!(o.code, 0, "{}", o.all());
    all.push_str(&o.all());
    // Wrong password: the error must not print the one that was tried.
    std::fs::write(
        cfg.path().join("config.json"),
        format!("{{\"auths\":{{\"{}\":{{\"auth\":\"{}\"}}}}}}", reg.host, common::b64(&format!("rel:{PASS}-wrong"))),
    )
    .unwrap();
    let o = support::out_of(ws.cmd().env("DOCKER_CONFIG", cfg.path()).args([
        "push",
        "//tools:tool",
        "--tag",
        &reg.tag("rel/other:1"),
    ]));
    assert_eq!(o.code, 2, "credentials refused: the user's to fix: {}", o.all());
    all.push_str(&o.all());
    assert_no_secret("registry", &all, &[&ws.path("cbuild-out"), &ws.cache]);
}

/// A server answering every request with `status` and a body that echoes the request headers
/// (a misbehaving registry or cache that reflects `Authorization`); asks for credentials first,
/// as a registry does. Counts the requests that had credentials.
fn echo_server(status: u16) -> (FakeServer, Arc<AtomicUsize>) {
    let authed = Arc::new(AtomicUsize::new(0));
    let counter = authed.clone();
    let srv = FakeServer::start(move |req| {
        if req.header("authorization").is_none() {
            return Response::new(401, "{}").header("WWW-Authenticate", "Basic realm=\"echo\"");
        }
        counter.fetch_add(1, Ordering::SeqCst);
        let echoed = req.head.trim_end().replace("\r\n", " | ").replace('"', "'");
        let body = format!("{{\"errors\":[{{\"code\":\"DENIED\",\"message\":\"you sent: {echoed}\"}}]}}");
        Response::new(status, body).header("Content-Type", "application/json").header("Retry-After", "0")
    });
    (srv, authed)
}

#[test]
fn registry_error_bodies_reflecting_authorization_are_not_printed() {
    for status in [401u16, 403, 500] {
        let (srv, authed) = echo_server(status);
        let host = srv.host();
        let ws = support::examples();
        let cfg = tempfile::tempdir().unwrap();
        std::fs::write(
            cfg.path().join("config.json"),
            format!("{{\"auths\":{{\"{host}\":{{\"auth\":\"{}\"}}}}}}", common::b64(&format!("rel:{PASS}"))),
        )
        .unwrap();
        ws.write(
            "pull/BUILD.star",
            format!("oci_pull(name = \"b\", image = \"{host}/rel/img:1\")\noci_image(name = \"img\", base = \":b\")\n"),
        );
        let o = support::out_of(ws.cmd().env("DOCKER_CONFIG", cfg.path()).args(["build", "--json", "//pull:img"]));
        // Credentials refused: the user's to fix (2); a failing registry: the environment (36).
        assert_eq!(o.code, if status >= 500 { 36 } else { 2 }, "{}", o.all());
        assert!(authed.load(Ordering::SeqCst) > 0, "the client never sent credentials: {}", o.all());
        assert_no_secret(&format!("registry answering {status}"), &o.all(), &[&ws.cache]);
    }
}

#[test]
fn remote_cache_token_never_leaks_even_when_the_server_reflects_it() {
    let mut all = String::new();
    for status in [401u16, 500] {
        let (srv, authed) = echo_server(status);
        let host = srv.host();
        let ws = support::examples();
        let o = support::out_of(ws.cmd().env("CBUILD_REMOTE_CACHE_TOKEN", TOKEN).args([
            "--remote-cache",
            &format!("http://{host}"),
            "build",
            "--json",
            "//tools:tool",
        ]));
        assert_eq!(o.code, 0, "a failing remote cache is a warning, the build goes on: {}", o.all());
        all.push_str(&o.all());
        assert!(authed.load(Ordering::SeqCst) > 0, "the client never sent the token: {}", o.all());
        assert_no_secret(&format!("remote cache answering {status}"), &all, &[&ws.cache, &ws.path("cbuild-out")]);
    }
}

#[test]
fn remote_cache_token_never_leaks_on_a_real_server() {
    // Its own server: every file the server wrote (logs included) is searched.
    let srv = CacheServer::start(None);
    let a = support::examples();
    let b = support::examples();
    // Runner A writes (it holds a signing key; without one the remote cache is read-only), runner
    // B reads what A signed: the token travels in both directions.
    let keys = common::keygen();
    let mut all = String::new();
    for (i, ws) in [&a, &b].into_iter().enumerate() {
        let mut c = ws.cmd();
        c.env("CBUILD_REMOTE_CACHE_TOKEN", TOKEN).envs(keys.reader());
        if i == 0 {
            c.envs(keys.writer());
        }
        let o = support::out_of(c.args(["--remote-cache", &srv.url, "build", "--json"]).args(support::TARGETS));
        assert_eq!(o.code, 0, "{}", o.all());
        if i == 1 {
            assert!(
                o.summary()["cached_remote"].as_u64().unwrap_or(0) > 0,
                "runner B got nothing from A: {}",
                o.stdout
            );
        }
        all.push_str(&o.all());
    }
    assert_no_secret(
        "remote cache",
        &all,
        &[&a.cache, &b.cache, &a.path("cbuild-out"), &b.path("cbuild-out"), srv.dir()],
    );
}
