//! Whether this machine can run another architecture's programs: a foreign platform's processes
//! (buildpacks of a `cnb_image` built for linux/arm64 on amd64, `cbuild run --platform`) run under
//! user-mode emulation, through a binfmt_misc handler (qemu-user-static's `qemu-<machine>`) that
//! must carry the fix-binary flag `F`: the kernel opens the interpreter when it is registered, so
//! it works inside the sandbox, where the host's /usr is not mounted.

use std::path::Path;

use crate::model::platform::Platform;

const BINFMT: &str = "/proc/sys/fs/binfmt_misc";

/// `Ok` when `platform`'s programs run here: it is the host's, or its emulation is registered
/// with `F`. The error says what is missing and how to fix it.
pub fn check(platform: &Platform) -> Result<(), String> {
    check_in(Path::new(BINFMT), platform)
}

/// Whether programs of `(os, architecture)` run here (see [`check`]).
pub fn check_arch(os: &str, architecture: &str) -> Result<(), String> {
    check(&Platform { os: os.to_string(), architecture: architecture.to_string(), variant: None })
}

fn check_in(dir: &Path, platform: &Platform) -> Result<(), String> {
    let host = Platform::host();
    if platform.os == host.os && platform.architecture == host.architecture {
        return Ok(());
    }
    // 32-bit x86 runs natively on amd64.
    if host.architecture == "amd64" && platform.architecture == "386" {
        return Ok(());
    }
    let fix = "install and register user-mode emulation: scripts/install-deps.sh (Debian's \
               qemu-user-static and binfmt-support, then `update-binfmts --enable qemu-MACHINE`)";
    let fix = fix.replace("MACHINE", platform.machine());
    let entry = dir.join(format!("qemu-{}", platform.machine()));
    let text = match std::fs::read_to_string(&entry) {
        Ok(t) => t,
        Err(_) if !dir.join("register").exists() => {
            return Err(format!(
                "{platform} programs cannot run on this {host} machine: binfmt_misc is not mounted \
                 (mount -t binfmt_misc binfmt_misc {BINFMT}), then {fix}"
            ))
        }
        Err(_) => {
            return Err(format!(
                "{platform} programs cannot run on this {host} machine: no emulator is registered for {} ({fix})",
                platform.machine()
            ))
        }
    };
    if text.lines().next().map(str::trim) != Some("enabled") {
        return Err(format!(
            "{platform} programs cannot run on this {host} machine: the {} emulator is registered but disabled ({fix})",
            platform.machine()
        ));
    }
    let flags = text.lines().find_map(|l| l.strip_prefix("flags:")).unwrap_or("").trim().to_string();
    if !flags.contains('F') {
        return Err(format!(
            "{platform} programs cannot run in the sandbox: the {} emulator is registered without the \
             fix-binary flag `F` (flags: `{flags}`), so its interpreter is not found inside it; \
             re-register it with `F` (qemu-user-static's binfmt-support entries have it)",
            platform.machine()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn says_what_is_missing() {
        let d = tempfile::tempdir().unwrap();
        let foreign = if Platform::host().architecture == "arm64" { "linux/amd64" } else { "linux/arm64" };
        let m = p(foreign).machine().to_string();
        assert!(check_in(d.path(), &Platform::host()).is_ok());
        let e = check_in(d.path(), &p(foreign)).unwrap_err();
        assert!(e.contains("binfmt_misc is not mounted") && e.contains(foreign), "{e}");
        std::fs::write(d.path().join("register"), "").unwrap();
        let e = check_in(d.path(), &p(foreign)).unwrap_err();
        assert!(e.contains("no emulator is registered") && e.contains("install-deps.sh"), "{e}");
        std::fs::write(d.path().join(format!("qemu-{m}")), "disabled\ninterpreter /x\nflags: F\n").unwrap();
        assert!(check_in(d.path(), &p(foreign)).unwrap_err().contains("disabled"));
        std::fs::write(d.path().join(format!("qemu-{m}")), "enabled\ninterpreter /x\nflags: P\n").unwrap();
        assert!(check_in(d.path(), &p(foreign)).unwrap_err().contains("fix-binary flag"));
        std::fs::write(d.path().join(format!("qemu-{m}")), "enabled\ninterpreter /x\nflags: PF\n").unwrap();
        assert!(check_in(d.path(), &p(foreign)).is_ok());
    }
}
