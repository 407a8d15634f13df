//! Builds the static CNB launcher (`launcher/`) and runs it against a fake `<layers>` and app dir
//! whose metadata.toml is written by `cbuild::cnb::launch`: process selection, launch env files,
//! exec.d over fd 3, args replacement/appending, working dir, env stripping and exit codes.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use cbuild::cnb::buildpack_toml::BuildpackApi;
use cbuild::cnb::launch::{merge_launch, parse_launch_toml};
use cbuild::cnb::plan::GroupMember;

/// The exact build command of launcher/README.md, in its own target dir to avoid lock fights.
fn launcher() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let status = Command::new(env!("CARGO"))
            .current_dir(root)
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env("RUSTFLAGS", "-C target-feature=+crt-static -C strip=symbols")
            .args([
                "build",
                "-p",
                "cnb-launcher",
                "--release",
                "--target",
                "x86_64-unknown-linux-gnu",
                "--target-dir",
                "target/launcher",
            ])
            .status()
            .expect("run cargo");
        assert!(status.success(), "building the launcher failed");
        root.join("target/launcher/x86_64-unknown-linux-gnu/release/launcher")
    })
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn write_exe(path: &Path, content: &str) {
    write(path, content);
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    layers: PathBuf,
    app: PathBuf,
}

fn member(id: &str, api: &str) -> GroupMember {
    GroupMember { id: id.into(), version: "1.0".into(), api: api.into(), homepage: None }
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let layers = root.join("layers");
    let app = root.join("app");
    fs::create_dir_all(app.join("sub")).unwrap();

    let web = parse_launch_toml(
        r#"
[[processes]]
type = "web"
command = ["/bin/sh", "-c", "echo \"ARGS=$*\"; echo \"PWD=$(pwd)\"; env | sort", "sh"]
args = ["default1", "default2"]
default = true

[[processes]]
type = "wd"
command = ["/bin/sh", "-c", "echo \"PWD=$(pwd)\""]
working-dir = "WORKDIR"
"#
        .replace("WORKDIR", &app.join("sub").to_string_lossy())
        .as_str(),
        BuildpackApi::new(0, 10),
        "acme/web@1.0",
        Path::new("launch.toml"),
    )
    .unwrap();
    let old = parse_launch_toml(
        "[[processes]]\ntype = \"worker\"\ncommand = \"echo\"\nargs = [\"worker:$NODE_ENV:$FROM_PROFILE:$FROM_APP_PROFILE\"]\n",
        BuildpackApi::new(0, 8),
        "acme/old@1.0",
        Path::new("launch.toml"),
    )
    .unwrap();
    let md = merge_launch(&[member("acme/web", "0.10"), member("acme/old", "0.8")], &[web, old], None);
    write(&layers.join("config/metadata.toml"), &md.to_toml());

    // acme/web: one launch layer with env files, a bin dir and exec.d programs.
    let node = layers.join("acme_web/node");
    fs::create_dir_all(node.join("bin")).unwrap();
    write(&node.join("env.launch/NODE_ENV.default"), "production");
    write(&node.join("env.launch/APPENDED.append"), "-a");
    write(&node.join("env.launch/APPENDED.delim"), ",");
    write(&node.join("env/PREPENDED.prepend"), "p");
    write(&node.join("env/OVERRIDDEN.override"), "new");
    write(&node.join("env.launch/DEFAULTED.default"), "not-used");
    write(&node.join("env.launch/web/ONLY_WEB"), "yes");
    write(&node.join("env.build/BUILD_ONLY"), "no");
    write_exe(
        &node.join("exec.d/10-set"),
        "#!/bin/sh\necho 'FROM_EXECD = \"fd3 works\"' >&3\necho \"EXECD_SAW_NODE_ENV = \\\"$NODE_ENV\\\"\" >&3\necho \"EXECD_PWD = \\\"$(pwd)\\\"\" >&3\n",
    );
    write_exe(&node.join("exec.d/web/20-web"), "#!/bin/sh\necho 'EXECD_WEB = \"web only\"' >&3\n");
    // acme/old: a profile.d script for the shell process.
    write(&layers.join("acme_old/tools/profile.d/p.sh"), "export FROM_PROFILE=prof\n");
    write(&app.join(".profile"), "export FROM_APP_PROFILE=app\n");

    for t in ["web", "wd", "worker"] {
        let link = root.join("cnb/process").join(t);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        symlink(launcher(), &link).unwrap();
    }
    Fixture { _tmp: tmp, root, layers, app }
}

impl Fixture {
    fn run(&self, program: &Path, args: &[&str]) -> Output {
        Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", "/cnb/process:/cnb/lifecycle:/usr/bin:/bin")
            .env("CNB_LAYERS_DIR", &self.layers)
            .env("CNB_APP_DIR", &self.app)
            .env("CNB_PLATFORM_API", "0.12")
            .env("CNB_DEPRECATION_MODE", "quiet")
            .env("APPENDED", "base")
            .env("PREPENDED", "q")
            .env("OVERRIDDEN", "old")
            .env("DEFAULTED", "kept")
            .current_dir("/")
            .output()
            .unwrap()
    }

    fn process(&self, t: &str) -> PathBuf {
        self.root.join("cnb/process").join(t)
    }
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn env_lines(out: &str) -> BTreeMap<String, String> {
    out.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn launcher_binary_is_static() {
    let bytes = fs::read(launcher()).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap());
        assert_ne!(p_type, 3, "the launcher has a PT_INTERP: it is dynamically linked");
    }
}

#[test]
fn web_process_gets_launch_env_exec_d_and_default_args() {
    let f = fixture();
    let out = stdout(&f.run(&f.process("web"), &[]));
    assert!(out.contains("ARGS=default1 default2\n"), "{out}");
    assert!(out.contains(&format!("PWD={}\n", f.app.display())), "{out}");
    let env = env_lines(&out);
    let bin = f.layers.join("acme_web/node/bin");
    assert_eq!(env["PATH"], format!("{}:/usr/bin:/bin", bin.display()));
    assert_eq!(env["NODE_ENV"], "production");
    assert_eq!(env["APPENDED"], "base,-a");
    assert_eq!(env["PREPENDED"], "pq");
    assert_eq!(env["OVERRIDDEN"], "new");
    assert_eq!(env["DEFAULTED"], "kept");
    assert_eq!(env["ONLY_WEB"], "yes");
    assert_eq!(env["FROM_EXECD"], "fd3 works");
    assert_eq!(env["EXECD_SAW_NODE_ENV"], "production");
    assert_eq!(env["EXECD_PWD"], f.app.display().to_string());
    assert_eq!(env["EXECD_WEB"], "web only");
    assert!(!env.contains_key("BUILD_ONLY"));
    for k in ["CNB_LAYERS_DIR", "CNB_APP_DIR", "CNB_PLATFORM_API", "CNB_DEPRECATION_MODE"] {
        assert!(!env.contains_key(k), "{k} leaked: {out}");
    }
}

#[test]
fn user_args_replace_process_args_from_api_0_9() {
    let f = fixture();
    let out = stdout(&f.run(&f.process("web"), &["u1", "u 2"]));
    assert!(out.contains("ARGS=u1 u 2\n"), "{out}");
}

#[test]
fn working_dir_of_the_process() {
    let f = fixture();
    let out = stdout(&f.run(&f.process("wd"), &[]));
    assert_eq!(out, format!("PWD={}\n", f.app.join("sub").display()));
}

#[test]
fn direct_command_after_double_dash() {
    let f = fixture();
    let out = stdout(&f.run(launcher(), &["--", "/bin/sh", "-c", "echo \"$NODE_ENV:${ONLY_WEB:-unset}:$EXECD_WEB\""]));
    assert_eq!(out, "production:unset:\n");
}

#[test]
fn legacy_shell_process_appends_args_and_sources_profiles() {
    if !Path::new("/bin/bash").exists() && !Path::new("/usr/bin/bash").exists() {
        common::skip_unless_ci("no bash on this machine");
        return;
    }
    let f = fixture();
    let out = stdout(&f.run(&f.process("worker"), &["extra"]));
    assert_eq!(out, "worker:production:prof:app extra\n");
    // A user command without `--` goes through bash too.
    let out = stdout(&f.run(launcher(), &["echo \"shell:$NODE_ENV\""]));
    assert_eq!(out, "shell:production\n");
}

#[test]
fn exit_codes() {
    let f = fixture();
    // No default process and no command: stdout and exit 82, as the lifecycle's launcher.
    let o = f.run(launcher(), &[]);
    assert_eq!(o.status.code(), Some(82));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "ERROR: failed to launch: determine start command: when there is no default process a command is required\n"
    );

    let o = f.run(launcher(), &["--", "/no/such/binary"]);
    assert_eq!(o.status.code(), Some(82));

    write_exe(&f.layers.join("acme_web/node/exec.d/30-fail"), "#!/bin/sh\nexit 3\n");
    let o = f.run(&f.process("web"), &[]);
    assert_eq!(o.status.code(), Some(82));
    assert!(String::from_utf8_lossy(&o.stderr).contains("30-fail"));

    fs::write(f.layers.join("config/metadata.toml"), "[[processes]\n").unwrap();
    assert_eq!(f.run(&f.process("web"), &[]).status.code(), Some(81));
    fs::remove_file(f.layers.join("config/metadata.toml")).unwrap();
    assert_eq!(f.run(&f.process("web"), &[]).status.code(), Some(81));
}
