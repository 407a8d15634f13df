//! `cbuild affected --base REV [PATTERNS]` (or `--files`, paths on stdin): the targets whose inputs
//! changed, i.e. `rdeps(PATTERNS, set(changed files))` with the file index of [`crate::cli::inputs`],
//! so CI builds and pushes only those. Errs on the side of listing: a target is never missed.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use clap::{ArgGroup, Args, ValueEnum};

use crate::cli::inputs::Change;
use crate::cli::output::Failure;
use crate::cli::settings::{GlobalArgs, Settings};

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("changes").required(true).args(["base", "files"])))]
pub struct AffectedArgs {
    /// Only list targets matching these patterns [default: //...].
    #[arg(value_name = "PATTERNS")]
    pub patterns: Vec<String>,
    /// Compare the working tree (committed, staged and unstaged changes, untracked files) with
    /// this git revision, e.g. `origin/main` or `HEAD~1`.
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,
    /// Read the changed paths from standard input, one per line, relative to the workspace root
    /// (`git diff --name-only` or `--name-status` output).
    #[arg(long)]
    pub files: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "label")]
    pub output: AffectedOutput,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AffectedOutput {
    /// One label per line.
    Label,
    /// A JSON array of {label, kind}.
    Json,
}

pub fn run(g: &GlobalArgs, a: AffectedArgs) -> Result<ExitCode, Failure> {
    let s = Settings::resolve(g)?;
    let changes = match &a.base {
        Some(base) => git_changes(s.root(), base)?,
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(Failure::env)?;
            parse_file_list(&text, s.root())
        }
    };
    let raw = if a.patterns.is_empty() { vec!["//...".to_string()] } else { a.patterns.clone() };
    let pats = super::parse_patterns(&s, &raw)?;
    let (loaded, index) = super::load_indexed(&s, &pats)?;
    let mut direct = BTreeSet::new();
    for (path, change) in &changes {
        direct.extend(index.readers(path, *change));
    }
    let affected: BTreeSet<_> =
        loaded.graph.rdeps(&loaded.requested, &direct).into_iter().filter(|l| loaded.requested.contains(l)).collect();
    if !s.quiet {
        eprintln!(
            "{} of {} targets affected by {} changed path(s)",
            affected.len(),
            loaded.requested.len(),
            changes.len()
        );
    }
    let text = if a.output == AffectedOutput::Json || s.json {
        let v: Vec<serde_json::Value> = affected
            .iter()
            .map(|l| serde_json::json!({"label": l.to_string(), "kind": loaded.graph.nodes[l].kind}))
            .collect();
        serde_json::to_string_pretty(&v).map_err(Failure::env)? + "\n"
    } else {
        affected.iter().map(|l| format!("{l}\n")).collect()
    };
    crate::out!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// Paths changed between `base` and the working tree, workspace-relative, with how they changed.
fn git_changes(root: &Path, base: &str) -> Result<Vec<(String, Change)>, Failure> {
    let inside = git(root, &["rev-parse", "--is-inside-work-tree"])?;
    if !inside.status.success() || String::from_utf8_lossy(&inside.stdout).trim() != "true" {
        return Err(Failure::user_hint(
            format!("`{}` is not inside a git checkout, so `--base {base}` has nothing to compare", root.display()),
            "pass the changed paths on standard input instead: ... | cbuild affected --files",
        ));
    }
    let rev = git(root, &["rev-parse", "--verify", "--quiet", "--end-of-options", &format!("{base}^{{commit}}")])?;
    let commit = String::from_utf8_lossy(&rev.stdout).trim().to_string();
    if !rev.status.success() || commit.is_empty() {
        return Err(Failure::user_hint(
            format!("unknown git revision `{base}`"),
            "name a commit, branch or tag of this checkout; in a shallow CI clone fetch it first (git fetch origin main)",
        ));
    }
    // Paths relative to the workspace root (--relative: only below it), renames as a deletion
    // and an addition: both matter.
    let diff = git(root, &["diff", "--name-status", "-z", "--no-renames", "--relative", &commit, "--"])?;
    if !diff.status.success() {
        return Err(Failure::env(anyhow::anyhow!(
            "git diff {commit} failed: {}",
            String::from_utf8_lossy(&diff.stderr).trim()
        )));
    }
    let mut out = Vec::new();
    let text = String::from_utf8_lossy(&diff.stdout);
    let mut fields = text.split('\0').filter(|f| !f.is_empty());
    while let (Some(status), Some(path)) = (fields.next(), fields.next()) {
        out.push((path.to_string(), change_of(status)));
    }
    let untracked = git(root, &["ls-files", "-z", "--others", "--exclude-standard"])?;
    if !untracked.status.success() {
        return Err(Failure::env(anyhow::anyhow!(
            "git ls-files failed: {}",
            String::from_utf8_lossy(&untracked.stderr).trim()
        )));
    }
    for p in String::from_utf8_lossy(&untracked.stdout).split('\0').filter(|p| !p.is_empty()) {
        out.push((p.to_string(), Change::Added));
    }
    Ok(out)
}

fn git(root: &Path, args: &[&str]) -> Result<std::process::Output, Failure> {
    std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Failure::Environment {
            error: anyhow::anyhow!("cannot run `git`: {e}"),
            hints: vec!["install git (apt-get install git), or pass the changed paths with --files".into()],
        })
}

fn change_of(status: &str) -> Change {
    match status.chars().next() {
        Some('M') => Change::Modified,
        Some('A') => Change::Added,
        Some('D') => Change::Deleted,
        _ => Change::Unknown,
    }
}

/// `--files` input: plain paths (how each changed is unknown) or `git diff --name-status` lines
/// (`M\tpath`, `R100\told\tnew`). Absolute paths inside the workspace are made relative; paths
/// outside it affect nothing.
fn parse_file_list(text: &str, root: &Path) -> Vec<(String, Change)> {
    let canon = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let rel = |p: &str| -> Option<String> {
        let path = Path::new(p);
        let r = if path.is_absolute() {
            path.strip_prefix(&canon).or_else(|_| path.strip_prefix(root)).ok()?.to_path_buf()
        } else {
            path.to_path_buf()
        };
        crate::fs::normalize_relative(&r).and_then(|p| p.to_str().map(String::from))
    };
    let mut out = Vec::new();
    for line in text.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let status_line = fields.len() >= 2
            && fields[0].chars().next().is_some_and(|c| "ACDMRTUX".contains(c))
            && fields[0][1..].chars().all(|c| c.is_ascii_digit());
        let entries: Vec<(&str, Change)> = if !status_line {
            vec![(line, Change::Unknown)]
        } else if fields[0].starts_with('R') && fields.len() >= 3 {
            vec![(fields[1], Change::Deleted), (fields[2], Change::Added)]
        } else if fields[0].starts_with('C') && fields.len() >= 3 {
            vec![(fields[2], Change::Added)]
        } else {
            vec![(fields[1], change_of(fields[0]))]
        };
        for (p, c) in entries {
            if let Some(r) = rel(p) {
                out.push((r, c));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_lists() {
        let root = Path::new("/nonexistent/ws");
        let got = parse_file_list(
            "a/b.txt\n./c\r\nM\tm.txt\nD\tgone\nR087\told\tnew\n/nonexistent/ws/abs\n/elsewhere/x\n../up\n\n",
            root,
        );
        assert_eq!(
            got,
            vec![
                ("a/b.txt".into(), Change::Unknown),
                ("c".into(), Change::Unknown),
                ("m.txt".into(), Change::Modified),
                ("gone".into(), Change::Deleted),
                ("old".into(), Change::Deleted),
                ("new".into(), Change::Added),
                ("abs".into(), Change::Unknown),
            ]
        );
    }
}
