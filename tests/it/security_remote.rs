//! Remote-cache trust through the CLI against a real server (nginx WebDAV via http-cache.sh, a path
//! prefix of the shared one), with entries planted by plain HTTP PUTs under the real action keys
//! of `//tools:tool` (what anyone who can write to the server can do):
//! * a forged result signed by an attacker, or unsigned, is a miss with a warning naming the
//!   action key for a reader that trusts the writer's key: the image is the clean build's;
//! * a reader that trusts no keys cannot tell (the documented risk of that mode): it is warned,
//!   once, that entries are unauthenticated;
//! * malformed entries (bad JSON, wrong schema, missing or corrupt blobs, oversized, inconsistent)
//!   are misses with a warning, even when signed by the trusted key, and never reach the local
//!   cache: an offline rebuild afterwards is all local hits with the clean digest.

use crate::common;
use common::cache_server::CacheServer;
use common::TestContext;

use std::collections::BTreeMap;

use cbuild::model::action::{ActionOutput, OutFile};
use cbuild::model::digest::{Blake3, Digest};
use cbuild::remote::signing::generate_pem;
use cbuild::remote::{entry, SigningKey};

const TARGET: &str = "//tools:tool";

/// An entry as stored on the server.
struct Stored {
    key: Blake3,
    result: String,
    components: String,
    /// The referenced blobs with their sizes, in the record's order.
    blobs: Vec<(Digest, u64)>,
}

/// Every entry on the server by the role of its action in `//tools:tool`'s graph.
fn stored(srv: &CacheServer) -> BTreeMap<&'static str, Stored> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(srv.data().join("ac")).unwrap() {
        let p = e.unwrap().path();
        let key = Blake3::from_hex(p.file_name().unwrap().to_str().unwrap()).unwrap();
        let decoded = entry::decode(&std::fs::read(&p).unwrap()).unwrap();
        let rf = std::fs::read(srv.data().join("cas").join(decoded.result_file.0.hex())).unwrap();
        let record: serde_json::Value = serde_json::from_slice(&entry::open(&rf).unwrap().record).unwrap();
        let result = record["result"].as_str().unwrap().to_string();
        let components = record["components"].as_str().unwrap().to_string();
        let blobs = record["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let d = Digest::parse(d.as_str().unwrap()).unwrap();
                let n = decoded.blobs[&d];
                (d, n)
            })
            .collect();
        let kind =
            serde_json::from_str::<serde_json::Value>(&components).unwrap()["kind"].as_str().unwrap().to_string();
        let role = match kind.as_str() {
            "genrule" => "busybox-bin",
            "layer" if components.contains("usr/local/bin/hello.sh") => "tool-layer",
            "layer" if components.contains("bin/busybox") => "busybox",
            "layer" => "rootfs",
            "image" if components.contains("hello.sh") => "tool",
            "image" => "run-image",
            k => panic!("unexpected action kind {k}"),
        };
        assert!(out.insert(role, Stored { key, result, components, blobs }).is_none(), "two {role} entries");
    }
    assert_eq!(out.len(), 6, "entries: {:?}", out.keys().collect::<Vec<_>>());
    out
}

/// Puts a `cbuild-result.json` (any bytes) and an `/ac/` value listing `blobs` under `key`.
fn plant_raw(srv: &CacheServer, key: &Blake3, result_file: &[u8], blobs: &[(Digest, u64)]) {
    let d = Digest::of_bytes(result_file);
    srv.put(&format!("cas/{}", d.hex()), result_file.to_vec());
    srv.put(&format!("ac/{}", key.to_hex()), entry::encode((&d, result_file.len() as u64), blobs));
}

/// Puts a well-formed entry with `result` under `key`, signed by `signer` (if any).
fn plant(
    srv: &CacheServer,
    key: &Blake3,
    result: &str,
    components: &str,
    blobs: &[(Digest, u64)],
    signer: Option<&SigningKey>,
) {
    let digests: Vec<Digest> = blobs.iter().map(|(d, _)| d.clone()).collect();
    let record = entry::result_file(key, result, components, &digests);
    plant_raw(srv, key, &entry::seal(key, &record, signer), blobs);
}

fn cmd(cx: &TestContext, env: &[(&str, &str)]) -> std::process::Command {
    let mut c = cx.cmd();
    c.env_remove("CBUILD_REMOTE_SIGNING_KEY").env_remove("CBUILD_REMOTE_TRUSTED_KEYS").envs(env.iter().copied());
    c
}

/// `cbuild [--remote-cache URL] build //tools:tool`: (image digest, stderr). Must succeed.
fn build(cx: &TestContext, url: Option<&str>, env: &[(&str, &str)]) -> (String, String) {
    let mut c = cmd(cx, env);
    if let Some(u) = url {
        c.args(["--remote-cache", u]);
    }
    let out = c.args(["build", TARGET]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr).to_string());
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let digest = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{TARGET} ")))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in {stdout}"))
        .to_string();
    (digest, stderr)
}

/// `build --json`: (summary, warning messages). Must succeed.
fn build_json(cx: &TestContext, url: &str, env: &[(&str, &str)]) -> (serde_json::Value, Vec<String>) {
    let out = cmd(cx, env).args(["--remote-cache", url, "build", "--json", TARGET]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let ev: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let warnings =
        ev.iter().filter(|e| e["type"] == "warning").map(|e| e["message"].as_str().unwrap().to_string()).collect();
    (ev.last().unwrap().clone(), warnings)
}

fn summary_digest(s: &serde_json::Value) -> String {
    s["targets"].as_array().unwrap().iter().find(|t| t["label"] == TARGET).unwrap()["image_digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// An offline rebuild in `cx` is all local hits with `clean`: the local cache holds only good results.
fn assert_local_cache_is_sound(cx: &TestContext, clean: &str, planted: &[&str]) {
    let (digest, err) = build(cx, None, &[]);
    assert_eq!(digest, clean);
    assert!(err.contains("0 executed, 6 cached (6 local, 0 remote)"), "{err}");
    for e in walkdir::WalkDir::new(cx.cache.path()).into_iter().filter_map(Result::ok) {
        if e.file_type().is_file() && e.path().extension().is_none_or(|x| x != "tmp") {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            for p in planted {
                assert!(!bytes.windows(p.len()).any(|w| w == p.as_bytes()), "{p:?} reached {}", e.path().display());
            }
        }
    }
}

/// Runner A (a trusted writer) fills the server; returns its keys and the clean image digest.
fn writer_fills(srv: &CacheServer) -> (common::Keys, String) {
    let keys = common::keygen();
    let a = TestContext::from_examples();
    let (clean, err) = build(&a, Some(&srv.url), &[("CBUILD_REMOTE_SIGNING_KEY", keys.private.to_str().unwrap())]);
    assert!(err.contains("6 executed"), "{err}");
    assert!(!err.contains("read-only"), "a writer with a key writes: {err}");
    (keys, clean)
}

#[test]
fn forged_remote_entry_is_a_miss() {
    let srv = CacheServer::shared();
    let (keys, clean) = writer_fills(&srv);
    let s = stored(&srv);
    let reader = [("CBUILD_REMOTE_TRUSTED_KEYS", keys.public.as_str())];
    // The forgery: the tool layer's real action key answered with another real layer (the stack's
    // rootfs, whose blob is on the server), signed by an attacker's own key.
    let (target, donor) = (&s["tool-layer"], &s["rootfs"]);
    let attacker = SigningKey::from_pkcs8(generate_pem().unwrap().as_bytes()).unwrap();
    plant(&srv, &target.key, &donor.result, &target.components, &donor.blobs, Some(&attacker));
    let key_hex = target.key.to_hex();

    // A reader trusting runner A: a miss, a warning naming the action key, the clean image.
    let b = TestContext::from_examples();
    let (digest, err) = build(&b, Some(&srv.url), &reader);
    assert_eq!(digest, clean, "{err}");
    let w = err.lines().find(|l| l.contains(&key_hex)).unwrap_or_else(|| panic!("no warning naming {key_hex}:\n{err}"));
    assert!(
        w.starts_with("warning: ") && w.contains("not trusted") && w.contains(&attacker.public_key().to_base64()),
        "{w}"
    );
    assert!(err.contains("1 executed, 5 cached (0 local, 5 remote)"), "{err}");
    assert_local_cache_is_sound(&b, &clean, &[]);

    // Unsigned, it is a miss too.
    plant(&srv, &target.key, &donor.result, &target.components, &donor.blobs, None);
    let c = TestContext::from_examples();
    let (digest, err) = build(&c, Some(&srv.url), &reader);
    assert_eq!(digest, clean, "{err}");
    assert!(err.lines().any(|l| l.contains(&key_hex) && l.contains("not signed")), "{err}");

    // A reader trusting no keys cannot tell: the forged layer ends up in its image. It is told,
    // once, that entries are unauthenticated. (This is why readers should set trusted keys.)
    plant(&srv, &target.key, &donor.result, &target.components, &donor.blobs, Some(&attacker));
    let d = TestContext::from_examples();
    let (digest, err) = build(&d, Some(&srv.url), &[]);
    assert_ne!(digest, clean, "the forgery is effective against an unauthenticated reader: {err}");
    assert_eq!(err.matches("unauthenticated").count(), 1, "{err}");
    assert!(err.contains("CBUILD_REMOTE_TRUSTED_KEYS"), "{err}");
}

#[test]
fn malformed_remote_entry_is_a_miss() {
    let srv = CacheServer::shared();
    let (keys, clean) = writer_fills(&srv);
    let s = stored(&srv);
    // The trusted writer's own key signs the garbage: the checks do not rely on signatures.
    let writer = SigningKey::from_file(&keys.private).unwrap();
    let trusting = [("CBUILD_REMOTE_TRUSTED_KEYS", keys.public.as_str())];
    let layer_of = |st: &Stored| serde_json::from_str::<ActionOutput>(&st.result).unwrap();
    const ESCAPE: &str = "../../planted-escape";

    // Round 1, a reader trusting the writer, every entry signed by it.
    let (g, bb, rootfs, run, tl, tool) =
        (&s["busybox-bin"], &s["busybox"], &s["rootfs"], &s["run-image"], &s["tool-layer"], &s["tool"]);
    // The genrule's files under other names (its dependents index them by the declared names).
    let files = ActionOutput::Files {
        files: [(ESCAPE.to_string(), OutFile { digest: g.blobs[0].0.clone(), executable: true })].into(),
    };
    plant(&srv, &g.key, &files.to_json(), &g.components, &g.blobs, Some(&writer));
    // A file output where a layer belongs (wrong schema for the action).
    let files = ActionOutput::Files {
        files: [("busybox".to_string(), OutFile { digest: bb.blobs[0].0.clone(), executable: true })].into(),
    };
    plant(&srv, &bb.key, &files.to_json(), &bb.components, &bb.blobs, Some(&writer));
    // A layer blob the server does not have.
    let absent = Digest::of_bytes(b"never uploaded");
    let ActionOutput::Layer { diff_id, size, media_type, .. } = layer_of(rootfs) else { panic!() };
    let missing = ActionOutput::Layer { diff_id, digest: absent.clone(), size, media_type };
    plant(&srv, &rootfs.key, &missing.to_json(), &rootfs.components, &[(absent, size)], Some(&writer));
    // An oversized `/ac/` value.
    srv.put(&format!("ac/{}", run.key.to_hex()), vec![0x0a; 17 << 20]);
    // A result that is not JSON.
    plant(&srv, &tl.key, "{\"type\":\"layer\",", &tl.components, &tl.blobs, Some(&writer));
    // A blob whose bytes are not its digest (the image's config, rewritten on the server).
    let ActionOutput::Image { config, .. } = serde_json::from_str(&tool.result).unwrap() else { panic!() };
    std::fs::write(srv.data().join("cas").join(config.hex()), b"{\"architecture\":\"evil\"}").unwrap();

    let b = TestContext::from_examples();
    let (summary, warnings) = build_json(&b, &srv.url, &trusting);
    assert_eq!(summary_digest(&summary), clean, "{warnings:#?}");
    assert_eq!((summary["executed"].as_u64(), summary["cached_remote"].as_u64()), (Some(6), Some(0)), "{summary}");
    let expect_warning = |label: &str, why: &str| {
        assert!(
            warnings.iter().any(|w| w.contains("remote cache") && w.contains(&format!("`{label}`")) && w.contains(why)),
            "no warning about `{label}` ({why}): {warnings:#?}"
        );
    };
    expect_warning("//stacks:busybox-bin", "files differ");
    expect_warning("//stacks:busybox", "is a `files` output, this action produces `layer`");
    expect_warning("//stacks:rootfs", "is not in remote cache");
    expect_warning("//stacks:run-image", "larger than");
    expect_warning("//tools:tool-layer", "not an action output");
    expect_warning("//tools:tool", "corrupt");
    assert!(!warnings.iter().any(|w| w.contains("unauthenticated")), "{warnings:#?}");
    assert_local_cache_is_sound(&b, &clean, &[ESCAPE]);

    // Round 2, a reader trusting no keys (the structural checks are the same), unsigned entries.
    // The result file is not JSON.
    plant_raw(&srv, &g.key, b"\x00\x01 not json", &g.blobs);
    // The result file has a format this cbuild does not know.
    plant_raw(&srv, &bb.key, br#"{"format":99,"entry":""}"#, &bb.blobs);
    // A record with a field cbuild never writes.
    let record = serde_json::json!({
        "format": 1, "key": rootfs.key.to_hex(), "result": rootfs.result, "components": rootfs.components,
        "blobs": rootfs.blobs.iter().map(|(d, _)| d.to_string()).collect::<Vec<_>>(), "extra": "field",
    });
    plant_raw(&srv, &rootfs.key, &entry::seal(&rootfs.key, &serde_json::to_vec(&record).unwrap(), None), &rootfs.blobs);
    // An entry listing a blob its result does not reference.
    let mut extra = run.blobs.clone();
    extra.push(tl.blobs[0].clone());
    plant(&srv, &run.key, &run.result, &run.components, &extra, None);
    // A layer whose size disagrees with its blob.
    let ActionOutput::Layer { diff_id, digest, size, media_type } = layer_of(tl) else { panic!() };
    let wrong = ActionOutput::Layer { diff_id, digest, size: size + 1, media_type };
    plant(&srv, &tl.key, &wrong.to_json(), &tl.components, &tl.blobs, None);
    // A record written for another action, served under this key.
    let other = Blake3::of_bytes(b"another action");
    let digests: Vec<Digest> = tool.blobs.iter().map(|(d, _)| d.clone()).collect();
    let record = entry::result_file(&other, &tool.result, &tool.components, &digests);
    plant_raw(&srv, &tool.key, &entry::seal(&other, &record, None), &tool.blobs);

    let c = TestContext::from_examples();
    let (summary, warnings) = build_json(&c, &srv.url, &[]);
    assert_eq!(summary_digest(&summary), clean, "{warnings:#?}");
    assert_eq!((summary["executed"].as_u64(), summary["cached_remote"].as_u64()), (Some(6), Some(0)), "{summary}");
    let expect_warning = |label: &str, why: &str| {
        assert!(
            warnings.iter().any(|w| w.contains("remote cache") && w.contains(&format!("`{label}`")) && w.contains(why)),
            "no warning about `{label}` ({why}): {warnings:#?}"
        );
    };
    expect_warning("//stacks:busybox-bin", "cbuild-result.json");
    expect_warning("//stacks:busybox", "format 99");
    expect_warning("//stacks:rootfs", "unknown field");
    expect_warning("//stacks:run-image", "does not reference");
    expect_warning("//tools:tool-layer", "bytes in the result");
    expect_warning("//tools:tool", "written for action");
    // Nothing was accepted, so there was nothing unauthenticated to warn about.
    assert!(!warnings.iter().any(|w| w.contains("unauthenticated")), "{warnings:#?}");
    assert_local_cache_is_sound(&c, &clean, &[]);
}

#[test]
fn key_settings_are_checked_and_never_echoed() {
    // keygen needs no workspace, never overwrites, and keeps the private key private.
    let keys = common::keygen();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&keys.private).unwrap().permissions().mode() & 0o777, 0o600);
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_cbuild"))
        .arg("cache")
        .arg("keygen")
        .arg(&keys.private)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(SigningKey::from_file(&keys.private).unwrap().public_key().to_base64(), keys.public);

    // A signing key file that is not a key, and trusted keys that are not keys: user errors (exit
    // 2) naming the setting, never showing the key file's content (public keys may be shown).
    let cx = TestContext::from_examples();
    let bogus = cx.root().join("bogus.pem");
    std::fs::write(&bogus, "s3cret-not-a-key").unwrap();
    let url = "http://127.0.0.1:9"; // never contacted: the settings fail first
    for (env, what) in [
        (("CBUILD_REMOTE_SIGNING_KEY", bogus.to_str().unwrap()), "CBUILD_REMOTE_SIGNING_KEY"),
        (("CBUILD_REMOTE_SIGNING_KEY", "/nonexistent/key.pem"), "cannot read signing key"),
        (("CBUILD_REMOTE_TRUSTED_KEYS", "not a key!"), "CBUILD_REMOTE_TRUSTED_KEYS"),
    ] {
        let out = cmd(&cx, &[env]).args(["--remote-cache", url, "build", TARGET]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(what) && !err.contains("s3cret"), "{what}: {err}");
    }
    // Trusted keys from cbuild.toml (the repository may pin them); a bad one is named there.
    cx.write("cbuild.toml", "[cache]\nremote_trusted_keys = [\"AAAA\"]\n");
    let out = cmd(&cx, &[]).args(["--remote-cache", url, "build", TARGET]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("remote_trusted_keys") && err.contains("32"), "{err}");
}
