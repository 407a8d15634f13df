//! Buildpack cache layers across runners through the remote cache (nginx): runner A's build leaves
//! its CNB cache state (cache layers and metadata) on the server; runner B, with an empty cache and
//! another checkout, restores it before `bin/build` after a source edit. A damaged state is
//! discarded with a warning; image digests never depend on it.

use std::path::Path;

use crate::common;
use common::cache_server::CacheServer;
use common::TestContext;

/// A buildpack whose cache layer takes a while to fill and that says whether it was restored.
const BUILD: &str = r#"if [ -f "$1/deps/filled" ]; then echo "cache: restored"; else echo "cache: empty"; sleep 2; mkdir -p "$1/deps"; echo filled > "$1/deps/filled"; fi
printf '[types]\ncache = true\n' > "$1/deps.toml"
mkdir -p "$1/app"; cp /workspace/main.txt "$1/app/main.txt"
printf '[types]\nlaunch = true\n' > "$1/app.toml""#;

fn workspace() -> TestContext {
    use std::os::unix::fs::PermissionsExt;
    let cx = TestContext::new();
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    common::copy_tree(&ex.join("stacks"), &cx.root().join("stacks"));
    cx.write(
        "bps/deps/buildpack.toml",
        "api = \"0.10\"\n[buildpack]\nid = \"test/deps\"\nversion = \"1.0.0\"\n[[targets]]\nos = \"linux\"\n",
    );
    cx.write("bps/deps/bin/detect", "#!/bin/sh\nexit 0\n");
    cx.write("bps/deps/bin/build", &format!("#!/bin/sh\nset -e\n{BUILD}\n"));
    for f in ["bin/detect", "bin/build"] {
        std::fs::set_permissions(cx.root().join("bps/deps").join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    cx.write("bps/BUILD.star", "buildpack(name = \"deps\", srcs = glob([\"deps/**\"]))\n");
    cx.write(
        "builders/BUILD.star",
        "builder(name = \"b\", stack = \"//stacks:default\", order = [[\"//bps:deps\"]])\n",
    );
    cx.write("app/main.txt", "v1\n");
    cx.write("app/BUILD.star", "cnb_image(name = \"img\", srcs = [\"main.txt\"], builder = \"//builders:b\")\n");
    cx
}

struct Out {
    summary: serde_json::Value,
    stdout: String,
    warnings: Vec<String>,
}

fn build(cx: &TestContext, remote: Option<&str>, env: &[(&str, &str)]) -> Out {
    let mut args = Vec::new();
    if let Some(r) = remote {
        args.extend(["--remote-cache", r]);
    }
    args.extend(["build", "--json", "//app:img"]);
    let o = cx.cmd().envs(env.iter().copied()).args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    let ev: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let warnings =
        ev.iter().filter(|e| e["type"] == "warning").filter_map(|e| e["message"].as_str().map(String::from)).collect();
    Out { summary: ev.last().unwrap().clone(), stdout, warnings }
}

fn digest(o: &Out) -> String {
    o.summary["targets"][0]["image_digest"].as_str().unwrap().to_string()
}

#[test]
fn cache_layers_follow_the_target_to_a_fresh_runner() {
    let srv = CacheServer::shared();
    cache_layers_follow(&srv.url, &common::keygen(), "v1", |hex| srv.data().join("cas").join(hex));
}

/// The same over REAPI gRPC (BuildGrid).
#[test]
fn cache_layers_follow_the_target_to_a_fresh_runner_through_buildgrid() {
    use common::buildgrid::BuildGrid;
    let bg = BuildGrid::shared();
    // Sources of their own: BuildGrid is one namespace for the whole test binary.
    cache_layers_follow(&bg.url, BuildGrid::keys(), "grpc v1", |hex| bg.cas_file(hex));
}

/// Runner A fills the cache layer; runner B (empty cache, another checkout) gets every action
/// from the remote at `url` and, after an edit, its buildpack finds the cache layer; a damaged
/// state (the file `on_server(hex)` of the cache layer's blob) is discarded with a warning.
fn cache_layers_follow(url: &str, keys: &common::Keys, v1: &str, on_server: impl Fn(&str) -> std::path::PathBuf) {
    let v2 = format!("{v1} v2\n");
    let v1 = format!("{v1}\n");
    let a = workspace();
    a.write("app/main.txt", &v1);
    let first = build(&a, Some(url), &keys.writer());
    assert!(first.stdout.contains("cache: empty"), "{}", first.stdout);

    // Runner B: empty cache, another checkout. Everything comes from the remote...
    let b = workspace();
    b.write("app/main.txt", &v1);
    let hit = build(&b, Some(url), &keys.reader());
    assert_eq!(hit.summary["executed"], 0, "{:?}", hit.warnings);
    // ...and after an edit its buildpack finds the cache layer A filled.
    b.write("app/main.txt", &v2);
    let edited = build(&b, Some(url), &keys.reader());
    assert!(edited.stdout.contains("cache: restored"), "{}", edited.stdout);
    assert!(edited.stdout.contains("restoring the buildpack cache layers from remote cache"), "{}", edited.stdout);

    // The image equals a clean build of the same sources (cache layers are not in images).
    let c = workspace();
    c.write("app/main.txt", &v2);
    let clean = build(&c, None, &[]);
    assert!(clean.stdout.contains("cache: empty"));
    assert_eq!(digest(&edited), digest(&clean));

    // A damaged state on the server (its cache layer blob) is discarded: warned, built from empty.
    let state_dir = a.cache.path().join("cnb-state");
    let state = std::fs::read_dir(&state_dir).unwrap().next().unwrap().unwrap().path();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
    let blob =
        v[0]["layers"]["deps"]["cache_blob"]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let on_server = on_server(&blob);
    let mut bytes = std::fs::read(&on_server).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&on_server, bytes).unwrap();
    let d = workspace();
    d.write("app/main.txt", &v2);
    let damaged = build(&d, Some(url), &keys.reader());
    assert!(damaged.stdout.contains("cache: empty"), "{}", damaged.stdout);
    assert!(
        damaged.warnings.iter().any(|w| w.contains("cache state of `//app:img`") && w.contains("corrupt")),
        "{:?}",
        damaged.warnings
    );
    assert_eq!(digest(&damaged), digest(&clean));
}
