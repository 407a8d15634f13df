//! `cbuild lock PATTERNS`: creates or refreshes the lock file of each `debian_image` target from the
//! archive's current Packages index (dependencies resolved), printing what changed. Builds use only
//! the lock; this is the one command that reads the live index. A lock holds one section per
//! architecture: the target's `architecture`, its `platforms`, `--platform` and those it had.

use std::process::ExitCode;

use clap::Args;

use crate::cli::output::Failure;
use crate::cli::settings::{GlobalArgs, Settings};
use crate::debian::{self, Lock, LockRequest};

#[derive(Args, Debug)]
pub struct LockArgs {
    /// `debian_image` targets (or patterns such as //stacks/...).
    #[arg(required = true)]
    pub patterns: Vec<String>,
}

pub fn run(g: &GlobalArgs, a: LockArgs) -> Result<ExitCode, Failure> {
    let s = Settings::resolve(g)?;
    let pats = super::parse_patterns(&s, &a.patterns)?;
    let loaded = super::load(&s, &pats)?;
    let targets: Vec<_> =
        loaded.requested.iter().filter(|l| loaded.graph.nodes[*l].kind == "debian_image").cloned().collect();
    if targets.is_empty() {
        return Err(Failure::user(format!("no `debian_image` target matches {}", a.patterns.join(" "))));
    }
    let url = debian::find_archive(s.workspace.config.debian.archive.as_deref()).map_err(|e| Failure::Environment {
        error: e.into(),
        hints: vec!["set `[debian] archive = \"...\"` in cbuild.toml or CBUILD_DEBIAN_ARCHIVE".into()],
    })?;
    let archive = debian::Archive::new(url).map_err(Failure::env)?;
    for l in targets {
        let n = &loaded.graph.nodes[&l];
        let lock_rel = n.attr("lock").as_str().unwrap_or_default();
        let path = s.root().join(l.package.as_str()).join(lock_rel);
        let mut packages: Vec<String> =
            n.attr("packages").as_list().iter().filter_map(|v| v.as_str().map(String::from)).collect();
        packages.sort();
        packages.dedup();
        // One section per architecture of `platforms` (the `architecture` attribute's first when
        // listed, so a single-platform lock keeps its form), else just `architecture`.
        let own_arch = n.attr("architecture").as_str().unwrap_or("amd64").to_string();
        let plats: Vec<String> =
            n.attr("platforms").as_list().iter().filter_map(|v| v.as_str().map(String::from)).collect();
        let mut arches: Vec<String> = crate::model::platform::parse_list(&plats)
            .map_err(|e| Failure::user(format!("`{l}`: `platforms`: {e}")))?
            .iter()
            .map(|p| p.debian_arch().to_string())
            .collect();
        let old = Lock::read(&path).ok();
        // Also `--platform` (to build a target without `platforms` for another architecture) and
        // the architectures the lock has already (a refresh keeps them).
        for a in s
            .inputs
            .platforms
            .iter()
            .map(|p| p.debian_arch().to_string())
            .chain(old.iter().flat_map(|o| o.architectures()))
        {
            if !arches.contains(&a) {
                arches.push(a);
            }
        }
        if arches.is_empty() {
            arches.push(own_arch.clone());
        } else if let Some(i) = arches.iter().position(|a| *a == own_arch) {
            let a = arches.remove(i);
            arches.insert(0, a);
        }
        let mut locks = Vec::new();
        let mut notes = Vec::new();
        for arch in &arches {
            let req = LockRequest {
                suite: n.attr("suite").as_str().unwrap_or("bookworm").to_string(),
                architecture: arch.clone(),
                components: vec!["main".into()],
                packages: packages.clone(),
            };
            let (one, more) = debian::create_lock(&archive, &req)
                .map_err(|e| Failure::of_in(format_args!("locking `{l}` for {arch}"), &e))?;
            locks.push(one);
            notes.extend(more);
        }
        let new = Lock::combine(locks);
        let changes: Vec<String> = match &old {
            Some(o) => arches
                .iter()
                .flat_map(|arch| {
                    let prefix = if arches.len() > 1 { format!("[{arch}] ") } else { String::new() };
                    let empty = Lock { packages: Vec::new(), others: Vec::new(), ..new.clone() };
                    let before = o.for_architecture(arch).unwrap_or(empty);
                    let after = new.for_architecture(arch).expect("locked above");
                    debian::lock::diff(&before, &after).into_iter().map(move |c| format!("{prefix}{c}"))
                })
                .collect(),
            None => Vec::new(),
        };
        notes.sort();
        notes.dedup();
        new.write(&path).map_err(Failure::env)?;
        let shown = path.strip_prefix(s.root()).unwrap_or(&path).display().to_string();
        match old {
            None => eprintln!("{l}: wrote {shown} ({} packages)", new.packages.len()),
            Some(o) if changes.is_empty() && o.architectures() != new.architectures() => {
                eprintln!("{l}: updated {shown}: architectures {}", new.architectures().join(", "))
            }
            Some(_) if changes.is_empty() => eprintln!("{l}: {shown} is up to date ({} packages)", new.packages.len()),
            Some(_) => {
                eprintln!("{l}: updated {shown}:");
                for c in &changes {
                    eprintln!("  {c}");
                }
            }
        }
        for note in notes {
            eprintln!("  note: {note}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
