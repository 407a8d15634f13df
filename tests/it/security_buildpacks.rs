//! Hostile buildpacks against what cbuild does, as root, with what a sandbox left in `/layers`
//! (RELIABILITY.md › Threat model). Each test is named after a hole an outside audit found: a
//! buildpack leaves symlinks (or files where directories belong) pointing at a canary tree on the
//! host; the canary is checksummed before and after (content, mode, owner, mtime of every entry)
//! and its secret must appear in no output, no image blob, no cache file and no message.
//!
//! The rule under test lives in one place, `crate::fs::confined` (openat2 with RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS): every read, write, chown and listing of `/layers` goes through it.

use crate::common;
use crate::common::support;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::cache_server::CacheServer;
use support::Ws;

/// A host tree the buildpacks aim at: a root-only secret, a file to overwrite, a directory to
/// chown, a set of entries to compare.
struct Canary {
    dir: tempfile::TempDir,
    secret: String,
}

type Snapshot = BTreeMap<PathBuf, (u32, u32, u32, i64, Vec<u8>)>;

impl Canary {
    fn new() -> Canary {
        // Not under /dev/shm with the workspaces: a separate tree, as a host directory would be.
        let dir = tempfile::Builder::new().prefix("cbuild-canary-").tempdir_in("/tmp").unwrap();
        let secret = format!("CANARY-SECRET-{}", std::process::id());
        std::fs::write(dir.path().join("secret"), format!("{secret}\nsecond line\n")).unwrap();
        std::fs::set_permissions(dir.path().join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(dir.path().join("victim"), "original\n").unwrap();
        std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
        std::fs::write(dir.path().join("sub/deeper/f"), format!("{secret} in a tree\n")).unwrap();
        std::fs::set_permissions(dir.path().join("sub"), std::fs::Permissions::from_mode(0o700)).unwrap();
        Canary { dir, secret }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn snapshot(&self) -> Snapshot {
        let mut m = BTreeMap::new();
        for e in walkdir::WalkDir::new(self.path()).into_iter().filter_map(|e| e.ok()) {
            let md = e.path().symlink_metadata().unwrap();
            let body = if md.is_file() { std::fs::read(e.path()).unwrap() } else { Vec::new() };
            m.insert(e.path().to_path_buf(), (md.mode(), md.uid(), md.gid(), md.mtime(), body));
        }
        m
    }
    /// The canary is unchanged and its secret is nowhere in the build's outputs, cache or messages.
    fn assert_untouched(&self, before: &Snapshot, ws: &Ws, out: &support::Out) {
        assert_eq!(&self.snapshot(), before, "the host canary tree changed");
        let needle = self.secret.as_bytes();
        assert!(!out.all().contains(&self.secret), "the secret reached the output:\n{}", out.all());
        for d in [ws.path("cbuild-out"), ws.cache.clone()] {
            let hits = support::files_containing(&d, needle);
            assert!(hits.is_empty(), "the secret was copied into {hits:?}");
        }
        // Image layers are gzip: check the decompressed blobs too.
        for blob in
            walkdir::WalkDir::new(&ws.cache).into_iter().filter_map(|e| e.ok()).filter(|e| e.file_type().is_file())
        {
            let Ok(f) = std::fs::File::open(blob.path()) else { continue };
            let mut gz = flate2::read::GzDecoder::new(f);
            let mut v = Vec::new();
            if std::io::Read::read_to_end(&mut gz, &mut v).is_ok() {
                assert!(
                    !v.windows(needle.len()).any(|w| w == needle),
                    "the secret is inside {}",
                    blob.path().display()
                );
            }
        }
    }
}

/// An examples copy with buildpacks `//bps:b1` (and `//bps:b2` when given) run in that order for
/// `//app:img`; each `bin/build` is the given script, with `$CANARY` naming the canary dir.
fn hostile_ws(canary: &Canary, b1: &str, b2: Option<&str>) -> Ws {
    let ws = support::examples();
    let mut order = vec!["\"//bps:b1\""];
    let mut bps = vec![("b1", b1)];
    if let Some(b2) = b2 {
        order.push("\"//bps:b2\"");
        bps.push(("b2", b2));
    }
    let mut build_star = String::new();
    for (name, script) in &bps {
        ws.write(
            &format!("bps/{name}/buildpack.toml"),
            format!(
                "api = \"0.10\"\n[buildpack]\nid = \"sec/{name}\"\nversion = \"1.0.0\"\n[[targets]]\nos = \"linux\"\n"
            ),
        );
        ws.write(&format!("bps/{name}/bin/detect"), "#!/bin/sh\nexit 0\n");
        ws.write(&format!("bps/{name}/bin/build"), format!("#!/bin/sh\nset -e\nL=\"$1\"\n{script}\n"));
        for f in ["bin/detect", "bin/build"] {
            std::fs::set_permissions(ws.path(&format!("bps/{name}/{f}")), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        build_star.push_str(&format!("buildpack(name = \"{name}\", srcs = glob([\"{name}/**\"]))\n"));
    }
    ws.write("bps/BUILD.star", build_star);
    ws.write(
        "bld/BUILD.star",
        format!("builder(name = \"b\", stack = \"//stacks:default\", order = [[{}]])\n", order.join(", ")),
    );
    ws.write(
        "app/BUILD.star",
        format!(
            "cnb_image(name = \"img\", srcs = [\"x.txt\"], builder = \"//bld:b\", env = {{\"CANARY\": \"{}\"}})\n",
            canary.path().display()
        ),
    );
    ws.write("app/x.txt", "x");
    ws
}

const PROCESS: &str =
    "printf '[[processes]]\\ntype = \"web\"\\ncommand = [\"true\"]\\ndefault = true\\n' > \"$L/launch.toml\"";

/// Builds, expects failure with `expect` in the error, and checks the canary.
fn refused(canary: &Canary, ws: &Ws, expect: &str) -> support::Out {
    let before = canary.snapshot();
    let out = ws.build(&["//app:img"]);
    assert_ne!(out.code, 0, "a hostile buildpack's build succeeded:\n{}", out.all());
    let f = out.failures();
    assert!(f.contains(expect), "error should mention `{expect}`:\n{f}\n{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    canary.assert_untouched(&before, ws, &out);
    out
}

#[test]
fn launch_layer_symlink_to_host_dir_is_refused() {
    let c = Canary::new();
    let ws = hostile_ws(
        &c,
        &format!("ln -s \"$CANARY\" \"$L/evil\"\nprintf '[types]\\nlaunch = true\\n' > \"$L/evil.toml\"\n{PROCESS}"),
        None,
    );
    refused(&c, &ws, "/layers/sec_b1/evil");
}

#[test]
fn cache_layer_symlink_to_host_dir_is_refused() {
    let c = Canary::new();
    let ws = hostile_ws(
        &c,
        &format!(
            "ln -s \"$CANARY/sub\" \"$L/cached\"\nprintf '[types]\\ncache = true\\n' > \"$L/cached.toml\"\n{PROCESS}"
        ),
        None,
    );
    refused(&c, &ws, "/layers/sec_b1/cached");
}

#[test]
fn build_layer_symlink_to_host_dir_is_refused() {
    let c = Canary::new();
    let ws = hostile_ws(
        &c,
        &format!(
            "ln -s \"$CANARY/sub\" \"$L/tools\"\nprintf '[types]\\nbuild = true\\n' > \"$L/tools.toml\"\n{PROCESS}"
        ),
        Some(PROCESS),
    );
    refused(&c, &ws, "/layers/sec_b1/tools");
}

/// `<layer>.toml`, `launch.toml`, `build.toml` and `store.toml` as symlinks to the root-only secret:
/// an error naming the file, and not one byte of the secret in the message or the log.
#[test]
fn metadata_toml_symlinks_leak_nothing() {
    let c = Canary::new();
    for (file, extra) in
        [("layer.toml", PROCESS), ("launch.toml", ""), ("build.toml", PROCESS), ("store.toml", PROCESS)]
    {
        let ws = hostile_ws(&c, &format!("{extra}\nln -sf \"$CANARY/secret\" \"$L/{file}\""), None);
        refused(&c, &ws, &format!("/layers/sec_b1/{file}"));
    }
}

#[test]
fn env_file_symlink_hands_no_host_file_to_the_next_buildpack() {
    let c = Canary::new();
    let b1 = format!(
        "mkdir -p \"$L/tools/env\"\nprintf '[types]\\nbuild = true\\n' > \"$L/tools.toml\"\nln -s \"$CANARY/secret\" \"$L/tools/env/LEAK\"\n{PROCESS}"
    );
    let ws = hostile_ws(&c, &b1, Some(&format!("echo \"LEAK=$LEAK\"\n{PROCESS}")));
    refused(&c, &ws, "/layers/sec_b1/tools/env/LEAK");
}

/// The first buildpack plants links where cbuild writes the second one's plan and reads its
/// layers: cbuild must neither truncate nor overwrite the host file, nor chown the host directory.
#[test]
fn two_buildpacks_cannot_overwrite_or_chown_host_files() {
    let c = Canary::new();
    let plant_plan = "mkdir -p /layers/.cbuild/sec_b2 && ln -sf \"$CANARY/victim\" /layers/.cbuild/sec_b2/plan.toml";
    let ws = hostile_ws(&c, &format!("{plant_plan}\n{PROCESS}"), Some(PROCESS));
    // The planted plan link is replaced by cbuild's own file: the build may succeed; the host file
    // must be untouched either way.
    let before = c.snapshot();
    let out = ws.build(&["//app:img"]);
    c.assert_untouched(&before, &ws, &out);

    // The plan directory itself as a link to a host directory: refused.
    let plant_dir = "rm -rf /layers/.cbuild/sec_b2 && ln -s \"$CANARY/sub\" /layers/.cbuild/sec_b2";
    let ws = hostile_ws(&c, &format!("{plant_dir}\n{PROCESS}"), Some(PROCESS));
    refused(&c, &ws, "sec_b2");

    // The second buildpack's layers dir replaced by a link to a host directory: refused.
    let plant_layers = "rm -rf /layers/sec_b2 && ln -s \"$CANARY/sub\" /layers/sec_b2";
    let ws = hostile_ws(&c, &format!("{plant_layers}\n{PROCESS}"), Some("true"));
    refused(&c, &ws, "sec_b2");
}

/// A cache layer whose contents hold symlinks to the host comes back on the next build as
/// symlinks inside `/layers` (restored by the confined extractor), never as host contents.
#[test]
fn cache_layer_contents_with_host_links_come_back_as_links_only() {
    let c = Canary::new();
    let b1 = format!(
        "if [ -L \"$L/cache/host\" ]; then echo \"RESTORED-LINK $(readlink \"$L/cache/host\")\"; fi\n\
         mkdir -p \"$L/cache\"\nln -sfn \"$CANARY/sub\" \"$L/cache/host\"\n\
         printf '[types]\\ncache = true\\n' > \"$L/cache.toml\"\n{PROCESS}"
    );
    let ws = hostile_ws(&c, &b1, None);
    let before = c.snapshot();
    let first = ws.build(&["//app:img"]);
    assert_eq!(first.code, 0, "{}", first.all());
    std::fs::write(ws.path("app/x.txt"), "y").unwrap();
    let second = ws.build(&["//app:img"]);
    assert_eq!(second.code, 0, "{}", second.all());
    assert!(second.all().contains("RESTORED-LINK"), "the cache layer was restored: {}", second.all());
    c.assert_untouched(&before, &ws, &second);
}

/// A `cnb_image(env = {...})` value (a token) is never stored or printed: not in the cache
/// database (key components, run history), not under cbuild-out (layouts, logs), not in any
/// command's output (`--json build`, `explain`, `query --output json`). A changed value still
/// invalidates the build, and `explain` names the variable.
#[test]
fn env_secret_values_are_never_stored_or_printed() {
    let token = format!("npm-token-{}-c0ffee", std::process::id());
    let ws = support::examples();
    ws.write(
        "app/BUILD.star",
        format!(
            "cnb_image(name = \"img\", srcs = [\"index.html\"], builder = \"//builders:default\", env = {{\"NPM_TOKEN\": \"{token}\"}})\n"
        ),
    );
    ws.write("app/index.html", "<p>hi</p>\n");
    // With a real remote cache server (a signing runner uploads every entry): its stored objects
    // are searched too.
    // Its own server: every file it wrote is searched.
    let server = CacheServer::start(None);
    let keys = common::keygen();
    let b = support::out_of(ws.cmd().envs(keys.writer()).args([
        "--remote-cache",
        &server.url,
        "build",
        "--json",
        "//app:img",
    ]));
    assert_eq!(b.code, 0, "{}", b.all());
    let mut outputs = b.all();
    for args in [
        &["explain", "//app:img"][..],
        &["query", "--output", "json", "//app:img"][..],
        &["--json", "explain", "//app:img"][..],
    ] {
        outputs.push_str(&ws.run(args).all());
    }
    assert!(!outputs.contains(&token), "the token was printed:\n{outputs}");
    let stored = walkdir::WalkDir::new(server.dir())
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .count();
    assert!(stored > 5, "the remote cache server stored only {stored} objects");
    for d in [ws.path("cbuild-out"), ws.cache.clone(), server.dir().to_path_buf()] {
        let hits = support::files_containing(&d, token.as_bytes());
        assert!(hits.is_empty(), "the token is stored in {hits:?}");
    }
    // Still keyed: a new value rebuilds, and explain says which variable changed.
    ws.write("app/BUILD.star", ws.read("app/BUILD.star").replace(&token, "another-value"));
    let b = ws.build(&["//app:img"]);
    assert_eq!(b.code, 0, "{}", b.all());
    assert!(b.summary()["executed"].as_u64().unwrap() > 0, "a changed env value must rebuild");
    let e = ws.run(&["explain", "//app:img"]);
    assert!(e.stdout.contains("NPM_TOKEN"), "{}", e.all());
}

/// Set-id files of a build image stayed set-id in the extracted root shared by every sandbox
/// (under the sandbox scratch root, reachable by other local users: `nobody` got euid 0). The shared
/// root is extracted sanitized: no set-id bit, nothing writable by group or other.
#[test]
fn build_image_setid_files_are_not_setid_in_the_shared_root() {
    let marker = format!("suid-probe-{}", std::process::id());
    let c = Canary::new();
    let ws = hostile_ws(&c, PROCESS, None);
    ws.write(&format!("stacks/suid/{marker}"), "#!/bin/sh\nid\n");
    let stacks = ws.read("stacks/BUILD.star");
    let stacks = stacks.replace(
        "oci_image(\n    name = \"build-image\",\n    base = \":run-image\",",
        &format!(
            "layer(name = \"suid\", srcs = [\"suid/{marker}\"], strip_prefix = \"suid\", prefix = \"/opt\", mode = \"6777\")\n\n\
             oci_image(\n    name = \"build-image\",\n    base = \":run-image\",\n    layers = [\":suid\"],"
        ),
    );
    assert!(stacks.contains("\":suid\""), "the stack fixture changed; update this test");
    ws.write("stacks/BUILD.star", stacks);
    let out = ws.build(&["//app:img"]);
    assert_eq!(out.code, 0, "{}", out.all());
    // The image itself keeps the mode (an image's bytes are the publisher's); the shared root not.
    let root = std::env::temp_dir().join(format!("cbuild-sandbox-{}", unsafe { libc::geteuid() })).join("rootfs");
    let found: Vec<_> = walkdir::WalkDir::new(&root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy() == marker)
        .collect();
    assert!(!found.is_empty(), "no extracted build image root holds {marker} under {}", root.display());
    for f in found {
        let mode = f.path().symlink_metadata().unwrap().mode() & 0o7777;
        assert_eq!(mode & 0o6022, 0, "{} has mode {mode:o}", f.path().display());
    }
}

/// A local user with the stack's uid (1000: the first login user on most hosts) could write into
/// the shared build-image root used by later builds and into a running build's `/layers`. Sandbox
/// ids are shifted on the host (`sandbox::ID_SHIFT`): nothing in an extracted root, and nothing
/// a buildpack writes, belongs to a login uid.
#[test]
fn no_login_uid_owns_sandbox_files() {
    let c = Canary::new();
    // The buildpack reports the host-visible owner of what it writes via its layer's contents.
    let ws = hostile_ws(&c, &format!("mkdir -p \"$L/l\" && echo x > \"$L/l/f\" && printf '[types]\\nlaunch = true\\n' > \"$L/l.toml\"\n{PROCESS}"), None);
    let out = ws.build(&["//app:img"]);
    assert_eq!(out.code, 0, "{}", out.all());
    if unsafe { libc::geteuid() } != 0 {
        return; // Not root: the sandbox runs as the caller, by design.
    }
    let shift = cbuild::execution::sandbox::ID_SHIFT;
    let root = std::env::temp_dir().join(format!("cbuild-sandbox-{}", unsafe { libc::geteuid() }));
    let mut checked = 0;
    for e in walkdir::WalkDir::new(&root).into_iter().filter_map(|e| e.ok()) {
        let rel = e.path().strip_prefix(&root).unwrap().to_string_lossy().into_owned();
        // Only trees made by this version of cbuild: the shared roots (`-s2`).
        if !(rel.starts_with("rootfs/") && rel.split('/').nth(1).is_some_and(|d| d.ends_with("-s2"))) {
            continue;
        }
        let md = e.path().symlink_metadata().unwrap();
        assert!(md.uid() == 0 || md.uid() >= shift, "{} is owned by uid {}", e.path().display(), md.uid());
        assert!(md.gid() == 0 || md.gid() >= shift, "{} has gid {}", e.path().display(), md.gid());
        checked += 1;
    }
    assert!(checked > 10, "no shared root was checked under {}", root.display());
}
