//! Per-invocation build inputs through the CLI: service bindings (a buildpack presents a token
//! from a binding to a server on loopback; the token is found nowhere afterwards: not in the cache
//! directory, the remote cache's stored objects, logs, `cbuild-out` or any output), and `--env` /
//! `--env-file` keyed like BUILD env.

use std::path::Path;

use crate::common;
use common::cache_server::CacheServer;
use common::http::{FakeServer, Response};
use common::TestContext;

/// A workspace with the example stacks, one buildpack with the given `bin/build`, and an app
/// `//app:img` whose `cnb_image` gets `extra` attributes.
fn workspace(build: &str, extra: &str) -> TestContext {
    use std::os::unix::fs::PermissionsExt;
    let cx = TestContext::new();
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    common::copy_tree(&ex.join("stacks"), &cx.root().join("stacks"));
    cx.write(
        "bps/user/buildpack.toml",
        "api = \"0.10\"\n[buildpack]\nid = \"test/user\"\nversion = \"1.0.0\"\n[[targets]]\nos = \"linux\"\n",
    );
    cx.write("bps/user/bin/detect", "#!/bin/sh\nexit 0\n");
    cx.write("bps/user/bin/build", &format!("#!/bin/sh\nset -e\n{build}\n"));
    for f in ["bin/detect", "bin/build"] {
        std::fs::set_permissions(cx.root().join("bps/user").join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    cx.write("bps/BUILD.star", "buildpack(name = \"user\", srcs = glob([\"user/**\"]))\n");
    cx.write(
        "builders/BUILD.star",
        "builder(name = \"b\", stack = \"//stacks:default\", order = [[\"//bps:user\"]])\n",
    );
    cx.write("app/main.txt", "app\n");
    cx.write(
        "app/BUILD.star",
        &format!("cnb_image(name = \"img\", srcs = [\"main.txt\"], builder = \"//builders:b\"{extra})\n"),
    );
    cx
}

/// Every file below `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for e in walkdir::WalkDir::new(dir).into_iter().filter_map(Result::ok) {
        if e.file_type().is_file() {
            if let Ok(b) = std::fs::read(e.path()) {
                if b.windows(needle.len()).any(|w| w == needle) {
                    hits.push(e.path().display().to_string());
                }
            }
        }
    }
    hits
}

const BUILD_WITH_TOKEN: &str = r#"tok=$(cat "$SERVICE_BINDING_ROOT/api/token")
test "$(cat "$SERVICE_BINDING_ROOT/api/type")" = "api-token"
mkdir -p "$1/answer"
printf 'GET /answer HTTP/1.0\r\nAuthorization: Bearer %s\r\n\r\n' "$tok" | nc 127.0.0.1 "$(cat /platform/env/PORT)" > "$1/answer/response"
grep -q 'the-answer-42' "$1/answer/response"
printf '[types]\nlaunch = true\n' > "$1/answer.toml"
echo "built with a binding of $(wc -c < "$SERVICE_BINDING_ROOT/api/token") bytes""#;

#[test]
fn a_buildpack_uses_a_binding_whose_value_is_stored_nowhere() {
    let token = format!("tok-{}-pl4nted", std::process::id());
    let want = format!("Bearer {token}");
    let server = FakeServer::start(move |r| {
        if r.header("authorization") == Some(want.as_str()) {
            Response::new(200, "the-answer-42\n")
        } else {
            Response::new(403, "no\n")
        }
    });
    let secrets = tempfile::tempdir().unwrap();
    let bdir = secrets.path().join("api");
    std::fs::create_dir(&bdir).unwrap();
    std::fs::write(bdir.join("type"), "api-token").unwrap();
    std::fs::write(bdir.join("token"), &token).unwrap();
    let cx = workspace(
        BUILD_WITH_TOKEN,
        &format!(
            ", network = True, env = {{\"PORT\": \"{}\"}}, bindings = {{\"api\": \"$TEST_API_BINDING\"}}",
            server.port()
        ),
    );
    let srv = CacheServer::shared();
    let keys = common::keygen();
    let run = |extra: &[&str]| {
        let mut args = vec!["--remote-cache", srv.url.as_str(), "build", "--json", "//app:img"];
        args.extend_from_slice(extra);
        let out = cx.cmd().envs(keys.writer()).env("TEST_API_BINDING", &bdir).args(&args).output().unwrap();
        let (o, e) =
            (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        assert_eq!(out.status.code(), Some(0), "{o}\n{e}");
        (o, e)
    };
    let (out1, err1) = run(&[]);
    assert!(out1.contains("built with a binding of"), "the buildpack ran with the binding: {out1}");
    // Unchanged binding: nothing reruns.
    let (out2, err2) = run(&[]);
    let summary: serde_json::Value = serde_json::from_str(out2.lines().last().unwrap()).unwrap();
    assert_eq!(summary["executed"], 0, "{out2}");
    // The value is nowhere: output, the cache dir, the remote's files, the workspace (cbuild-out, logs).
    for (what, text) in [("stdout", &out1), ("stderr", &err1), ("stdout 2", &out2), ("stderr 2", &err2)] {
        assert!(!text.contains(&token), "the binding's value is in {what}");
    }
    for dir in [cx.cache.path(), cx.root(), &srv.data()] {
        let hits = files_containing(dir, token.as_bytes());
        assert!(hits.is_empty(), "the binding's value is stored in {hits:?}");
    }
    let q = cx.run(&["query", "//app:img", "--output", "json"]);
    assert!(!q.stdout.contains(&token));

    // A changed value reruns detect and build (keyed by an HMAC, never by the value).
    std::fs::write(bdir.join("token"), "a-wrong-token").unwrap();
    let out = cx
        .cmd()
        .envs(keys.writer())
        .env("TEST_API_BINDING", &bdir)
        .args(["build", "--json", "//app:img"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "the server refuses the wrong token, so the build fails");
}

#[test]
fn bad_bindings_are_located_errors_with_exit_2() {
    let cx = workspace("true", ", bindings = {\"api\": \"$TEST_API_BINDING\"}");
    // The variable is not set.
    let r = cx.run(&["build", "//app:img"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("TEST_API_BINDING") && r.stderr.contains("not set"), "{}", r.stderr);
    // A directory inside the workspace, one without `type`, one that does not exist.
    std::fs::create_dir_all(cx.root().join("secrets/api")).unwrap();
    std::fs::write(cx.root().join("secrets/api/type"), "x").unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir(out.path().join("untyped")).unwrap();
    for (dir, why) in [
        (cx.root().join("secrets/api"), "inside the workspace"),
        (out.path().join("untyped"), "no `type` file"),
        (out.path().join("missing"), "cannot be used"),
    ] {
        let o = cx.cmd().env("TEST_API_BINDING", &dir).args(["build", "//app:img"]).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{why}: {err}");
        assert!(err.contains(why) && err.contains("`api`"), "{why}: {err}");
        assert!(!cx.root().join("cbuild-out/app/img").exists(), "{why}: nothing written");
    }
    // On the command line too.
    let r = cx.run(&["--binding", "api", "build", "//app:img"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("NAME=DIR"), "{}", r.stderr);
}

#[test]
fn env_flags_reach_buildpacks_and_are_keyed() {
    let cx = workspace(
        r#"mkdir -p "$1/e"; cat /platform/env/GREETING > "$1/e/greeting"; printf '[types]\nlaunch = true\n' > "$1/e.toml""#,
        "",
    );
    let digest = |args: &[&str], envs: &[(&str, &str)]| {
        let mut a = args.to_vec();
        a.extend(["build", "--json", "//app:img"]);
        let o = cx.cmd().envs(envs.iter().copied()).args(&a).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(o.status.code(), Some(0), "{out}{}", String::from_utf8_lossy(&o.stderr));
        let s: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        (s["targets"][0]["image_digest"].as_str().unwrap().to_string(), s["executed"].as_u64().unwrap())
    };
    let (a, _) = digest(&["--env", "GREETING=hello"], &[]);
    let (b, executed) = digest(&["--env", "GREETING"], &[("GREETING", "hello")]);
    assert_eq!((a.as_str(), executed), (b.as_str(), 0), "the same value from the host: a cache hit");
    let f = cx.root().join("../vars.env");
    std::fs::write(&f, "# greeting\nGREETING=bonjour\n").unwrap();
    let (c, executed) = digest(&["--env-file", f.to_str().unwrap()], &[]);
    assert!(executed > 0 && c != a, "a new value rebuilds");
    // Nothing stores the value in clear in the cache's key components (digests only).
    let in_db: Vec<String> =
        files_containing(cx.cache.path(), b"bonjour").into_iter().filter(|p| p.contains(".db")).collect();
    assert!(in_db.is_empty(), "{in_db:?}");
    // `--env K` for a variable the host lacks: exit 2, naming it.
    let r = cx.run(&["--env", "NOT_SET_ANYWHERE_42", "build", "//app:img"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("NOT_SET_ANYWHERE_42"), "{}", r.stderr);
}

fn git(cx: &TestContext, args: &[&str]) -> String {
    let o = std::process::Command::new("git")
        .current_dir(cx.root())
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn skopeo_config(reference: &str) -> serde_json::Value {
    let o = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--config", &format!("docker://{reference}")])
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo {reference}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn stamped_pushes_land_under_commit_tags_and_rerun_no_action() {
    let reg = common::registry::Registry::shared();
    let cx = TestContext::from_examples();
    // Two targets with placeholder tags (one an oci_image with a stamped label, one a cnb_image).
    let tools = std::fs::read_to_string(cx.root().join("tools/BUILD.star")).unwrap().replacen(
        "    entrypoint = [\"/usr/local/bin/hello.sh\"],\n)",
        &format!(
            "    entrypoint = [\"/usr/local/bin/hello.sh\"],\n    tags = [\"{}\"],\n    labels = {{\"org.opencontainers.image.revision\": \"{{GIT_SHA}}\", \"release\": \"{{RELEASE}}-{{GIT_BRANCH}}\"}},\n)",
            reg.tag("stamp/tool:{GIT_SHORT_SHA}")
        ),
        1,
    );
    cx.write("tools/BUILD.star", &tools);
    let api = std::fs::read_to_string(cx.root().join("services/api/BUILD.star")).unwrap();
    let anchor = "    env = {\"BP_LOG_LEVEL\": \"info\"},\n";
    assert!(api.contains(anchor), "{api}");
    let api = api.replacen(anchor, &format!("{anchor}    tags = [\"{}\"],\n", reg.tag("stamp/api:{GIT_SHORT_SHA}")), 1);
    cx.write("services/api/BUILD.star", &api);
    cx.write("cbuild.toml", "[build]\nworkspace_status = \"echo RELEASE 7.1\"\n");
    git(&cx, &["init", "-q", "-b", "main"]);
    git(&cx, &["add", "-A"]);
    git(&cx, &["commit", "-qm", "one"]);
    let sha1 = git(&cx, &["rev-parse", "HEAD"]);
    let targets = ["//tools:tool", "//services/api:image"];

    // Without --stamp a placeholder tag cannot be pushed.
    let mut a = vec!["push"];
    a.extend(targets);
    let r = cx.run(&a);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--stamp"), "{}", r.stderr);

    let mut a = vec!["push", "--stamp", "--json"];
    a.extend(targets);
    let r = cx.run(&a);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let tool1 = reg.tag(&format!("stamp/tool:{}", &sha1[..12]));
    let c = skopeo_config(&tool1);
    assert_eq!(c["config"]["Labels"]["org.opencontainers.image.revision"], sha1.as_str(), "{c}");
    assert_eq!(c["config"]["Labels"]["release"], "7.1-main", "{c}");
    skopeo_config(&reg.tag(&format!("stamp/api:{}", &sha1[..12])));

    // A new commit that changes no input: the stamped push reruns no action.
    cx.write("NOTES.md", "a note\n");
    git(&cx, &["add", "-A"]);
    git(&cx, &["commit", "-qm", "two"]);
    let sha2 = git(&cx, &["rev-parse", "HEAD"]);
    let r = cx.run(&a);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let summary: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["executed"], 0, "no layer, buildpack or image action reran: {summary}");
    let c2 = skopeo_config(&reg.tag(&format!("stamp/tool:{}", &sha2[..12])));
    assert_eq!(c2["config"]["Labels"]["org.opencontainers.image.revision"], sha2.as_str());
    skopeo_config(&reg.tag(&format!("stamp/api:{}", &sha2[..12])));
    // The unstamped build keeps the placeholders (reproducible).
    let r = cx.run(&["build", "//tools:tool"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A placeholder with no value while stamping: exit 2, naming it.
    cx.write("cbuild.toml", "");
    let r = cx.run(&["build", "--stamp", "//tools:tool"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("{RELEASE}"), "{}", r.stderr);
}
