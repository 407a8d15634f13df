//! Build plans and detection (buildpack.md › Phase #1): the plan TOML written by `bin/detect`, the
//! order/group resolution with its plan trials (a port of the lifecycle's detector and resolver,
//! without running anything: detection is an injected oracle), plan.toml, group.toml and the
//! Buildpack Plan each buildpack gets at build time (including `[[unmet]]` hand-over).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::buildpack_toml::{same_id, BuildpackDescriptor, BuildpackRef, OrderGroup};
use super::{CnbError, Phase};

/// `[[provides]] name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provide {
    pub name: String,
}

/// `[[requires]] name` + `[requires.metadata]`; also a Buildpack Plan entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Require {
    pub name: String,
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub metadata: toml::Table,
}

impl Require {
    /// A requirement without metadata.
    pub fn new(name: &str) -> Self {
        Require { name: name.to_string(), metadata: toml::Table::new() }
    }
}

/// One alternative of a detect plan: what a buildpack provides and requires.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanSections {
    pub provides: Vec<Provide>,
    pub requires: Vec<Require>,
}

/// The plan a buildpack wrote during detect: top-level sections and `[[or]]` alternatives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectPlan {
    pub main: PlanSections,
    pub or: Vec<PlanSections>,
}

impl DetectPlan {
    /// A plan with one section and no alternatives.
    pub fn simple(provides: &[&str], requires: &[&str]) -> Self {
        DetectPlan {
            main: PlanSections {
                provides: provides.iter().map(|n| Provide { name: n.to_string() }).collect(),
                requires: requires.iter().map(|n| Require::new(n)).collect(),
            },
            or: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
struct RawSections {
    #[serde(default)]
    provides: Vec<RawProvide>,
    #[serde(default)]
    requires: Vec<RawRequire>,
}

#[derive(Deserialize)]
struct RawPlan {
    #[serde(default)]
    provides: Vec<RawProvide>,
    #[serde(default)]
    requires: Vec<RawRequire>,
    #[serde(default)]
    or: Vec<RawSections>,
}

#[derive(Deserialize)]
struct RawProvide {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct RawRequire {
    #[serde(default)]
    name: String,
    version: Option<toml::Value>,
    #[serde(default)]
    metadata: toml::Table,
}

/// Parses the plan file `bin/detect` appended to. An empty file is a plan with nothing in it.
/// A top-level `requires.version` is an error [L][!] (the 0.2 shim is gone from the lifecycle).
pub fn parse_detect_plan(text: &str, buildpack: &str, file: &Path) -> Result<DetectPlan, CnbError> {
    let raw: RawPlan = toml::from_str(text).map_err(|e| CnbError::toml(Phase::Detect, buildpack, file, e))?;
    let err = |r: String| CnbError::invalid(Phase::Detect, buildpack, file, r);
    let sections = |provides: Vec<RawProvide>, requires: Vec<RawRequire>| {
        let mut out = PlanSections::default();
        for p in provides {
            if p.name.is_empty() {
                return Err(err("a `[[provides]]` entry has no `name`".into()));
            }
            out.provides.push(Provide { name: p.name });
        }
        for r in requires {
            if r.name.is_empty() {
                return Err(err("a `[[requires]]` entry has no `name`".into()));
            }
            if r.version.is_some() {
                return Err(err(format!(
                    "`[[requires]]` `{}` has a top-level `version`, which is no longer supported; \
                     use `[requires.metadata] version = ...`",
                    r.name
                )));
            }
            out.requires.push(Require { name: r.name, metadata: r.metadata });
        }
        Ok(out)
    };
    let main = sections(raw.provides, raw.requires)?;
    let or = raw.or.into_iter().map(|s| sections(s.provides, s.requires)).collect::<Result<Vec<_>, _>>()?;
    Ok(DetectPlan { main, or })
}

/// What running `bin/detect` of one buildpack gave.
#[derive(Debug, Clone, PartialEq)]
pub enum DetectOutcome {
    /// Exit 0 with the plan it wrote.
    Pass(DetectPlan),
    /// Exit 100.
    Fail,
    /// Any other exit code (or -1 when it could not run, e.g. target mismatch).
    Error(i32),
}

/// A buildpack of the chosen group, as written to group.toml (`optional` is dropped, like the
/// lifecycle's `NoOpt`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMember {
    pub id: String,
    pub version: String,
    pub api: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
}

impl GroupMember {
    /// `id@version`.
    pub fn key(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }
}

/// group.toml: `[[group]] id, version, api, homepage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub group: Vec<GroupMember>,
}

impl Group {
    /// group.toml text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("group.toml serializes")
    }
}

/// `[[entries.providers]]` of plan.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provider {
    pub id: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub extension: bool,
}

/// One `[[entries]]` of plan.toml: who provides a dependency and every requirement of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEntry {
    pub providers: Vec<Provider>,
    pub requires: Vec<Require>,
}

/// plan.toml, the resolved build plan of the whole group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    #[serde(default)]
    pub entries: Vec<PlanEntry>,
}

/// The Buildpack Plan given to one buildpack's `bin/build`: `[[entries]] name, metadata`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildpackPlan {
    #[serde(default)]
    pub entries: Vec<Require>,
}

impl BuildpackPlan {
    /// The file `bin/build` reads from `CNB_BP_PLAN_PATH`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("buildpack plan serializes")
    }
}

impl Plan {
    /// plan.toml text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("plan.toml serializes")
    }

    /// Every requirement of the entries `id` is a provider of (lifecycle `BuildPlan.Find`).
    pub fn buildpack_plan(&self, id: &str) -> BuildpackPlan {
        let mut entries = Vec::new();
        for e in &self.entries {
            if e.providers.iter().any(|p| p.id == id) {
                entries.extend(e.requires.iter().cloned());
            }
        }
        BuildpackPlan { entries }
    }

    /// The plan left for later buildpacks after `buildpack` built with `bp_plan` and declared
    /// `unmet` in build.toml: entries whose names it met are dropped; an unmet name that is not
    /// in its Buildpack Plan is an error (lifecycle `validateUnmet`).
    pub fn after_build(
        &self,
        bp_plan: &BuildpackPlan,
        unmet: &[String],
        buildpack: &str,
        build_toml: &Path,
    ) -> Result<Plan, CnbError> {
        for u in unmet {
            if u.is_empty() {
                return Err(CnbError::invalid(Phase::Build, buildpack, build_toml, "`unmet.name` is required"));
            }
            if !bp_plan.entries.iter().any(|e| &e.name == u) {
                return Err(CnbError::invalid(
                    Phase::Build,
                    buildpack,
                    build_toml,
                    format!("`unmet.name` `{u}` must match a requested dependency of the Buildpack Plan"),
                ));
            }
        }
        let met: Vec<&str> =
            bp_plan.entries.iter().map(|e| e.name.as_str()).filter(|n| !unmet.iter().any(|u| u == n)).collect();
        let entries = self
            .entries
            .iter()
            .filter(|e| !e.requires.iter().any(|r| met.contains(&r.name.as_str())))
            .cloned()
            .collect();
        Ok(Plan { entries })
    }
}

/// The outcome of a successful detection: the group to build and its plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub group: Vec<GroupMember>,
    pub plan: Plan,
}

/// How one member of a tried group did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberOutcome {
    Pass,
    Fail,
    Error(i32),
}

/// One member of a tried group in a [`DetectFailure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberReport {
    pub id: String,
    pub version: String,
    pub optional: bool,
    pub outcome: MemberOutcome,
}

/// One group that was tried and did not resolve, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReport {
    pub members: Vec<MemberReport>,
    pub reason: String,
}

/// Why detection failed: every group tried, and whether a buildpack erred (exit 21) or all
/// merely failed (exit 20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectFailure {
    pub errored: bool,
    pub groups: Vec<GroupReport>,
}

impl DetectFailure {
    /// 21 when a buildpack errored, else 20 (lifecycle `FailedDetectWithErrors`/`FailedDetect`).
    pub fn exit_code(&self) -> i32 {
        if self.errored {
            21
        } else {
            20
        }
    }
}

impl fmt::Display for DetectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.groups.iter().enumerate() {
            write!(f, "  group {}:", i + 1)?;
            for m in &g.members {
                let opt = if m.optional { " (optional)" } else { "" };
                match m.outcome {
                    MemberOutcome::Pass => write!(f, " pass `{}@{}`{opt};", m.id, m.version)?,
                    MemberOutcome::Fail => write!(f, " fail `{}@{}`{opt};", m.id, m.version)?,
                    MemberOutcome::Error(c) => write!(f, " error `{}@{}`{opt} (exit {c});", m.id, m.version)?,
                }
            }
            writeln!(f, " {}", g.reason)?;
        }
        Ok(())
    }
}

/// Composite buildpacks nested deeper than this are taken for a cycle.
const MAX_DEPTH: usize = 32;

enum Failed {
    Detection,
    Buildpack,
    Fatal(CnbError),
}

#[derive(Clone)]
struct Member {
    r: BuildpackRef,
    api: String,
    homepage: Option<String>,
}

#[derive(Clone, Copy)]
struct TrialOption<'a> {
    idx: usize,
    optional: bool,
    sections: &'a PlanSections,
}

struct Resolver<L, D> {
    lookup: L,
    oracle: D,
    runs: HashMap<String, DetectOutcome>,
    reports: Vec<GroupReport>,
}

/// Resolves `order` like the lifecycle detector: groups in turn, composites expanded depth-first
/// (each of their groups followed by the rest of the enclosing group; an optional composite also
/// without it), ids already in the group skipped, `oracle` called once per `id@version`, then the
/// plan trials. `lookup` gives the descriptor of a reference (to expand composites and to learn
/// api/homepage). Errors: [`CnbError::NoGroupPassed`] (exit 20/21) or whatever `lookup` returns.
pub fn resolve_order<L, D>(order: &[OrderGroup], lookup: L, oracle: D) -> Result<Resolution, CnbError>
where
    L: FnMut(&BuildpackRef) -> Result<BuildpackDescriptor, CnbError>,
    D: FnMut(&BuildpackRef) -> DetectOutcome,
{
    let mut r = Resolver { lookup, oracle, runs: HashMap::new(), reports: Vec::new() };
    match r.detect_order(order, &[], &[], false, 0) {
        Ok(res) => Ok(res),
        Err(Failed::Fatal(e)) => Err(e),
        Err(f) => Err(CnbError::NoGroupPassed {
            failure: Box::new(DetectFailure {
                errored: matches!(f, Failed::Buildpack),
                groups: std::mem::take(&mut r.reports),
            }),
        }),
    }
}

impl<L, D> Resolver<L, D>
where
    L: FnMut(&BuildpackRef) -> Result<BuildpackDescriptor, CnbError>,
    D: FnMut(&BuildpackRef) -> DetectOutcome,
{
    fn detect_order(
        &mut self,
        order: &[OrderGroup],
        done: &[Member],
        next: &[BuildpackRef],
        optional: bool,
        depth: usize,
    ) -> Result<Resolution, Failed> {
        if depth > MAX_DEPTH {
            let at = next.first().map(|r| r.key()).unwrap_or_default();
            return Err(Failed::Fatal(CnbError::invalid(
                Phase::Detect,
                at,
                "buildpack.toml",
                "composite buildpacks nest too deeply (an order that contains itself?)",
            )));
        }
        let mut buildpack_err = false;
        for g in order {
            let mut group = g.group.clone();
            group.extend_from_slice(next);
            match self.detect_group(&group, done.to_vec(), depth) {
                Ok(r) => return Ok(r),
                Err(Failed::Buildpack) => buildpack_err = true,
                Err(Failed::Detection) => {}
                Err(f) => return Err(f),
            }
        }
        if optional {
            return self.detect_group(next, done.to_vec(), depth);
        }
        Err(if buildpack_err { Failed::Buildpack } else { Failed::Detection })
    }

    fn detect_group(
        &mut self,
        group: &[BuildpackRef],
        mut done: Vec<Member>,
        depth: usize,
    ) -> Result<Resolution, Failed> {
        for (i, r) in group.iter().enumerate() {
            if done.iter().any(|m| same_id(&m.r.id, &r.id)) {
                continue;
            }
            let desc = (self.lookup)(r).map_err(Failed::Fatal)?;
            if desc.is_composite() {
                return self.detect_order(&desc.order, &done, &group[i + 1..], r.optional, depth + 1);
            }
            done.push(Member { r: r.clone(), api: desc.api.to_string(), homepage: desc.info.homepage.clone() });
            let key = r.key();
            if !self.runs.contains_key(&key) {
                let outcome = (self.oracle)(r);
                self.runs.insert(key, outcome);
            }
        }
        self.resolve(&done)
    }

    fn resolve(&mut self, done: &[Member]) -> Result<Resolution, Failed> {
        let mut passed: Vec<(usize, &DetectPlan)> = Vec::new();
        let mut detected = true;
        let mut buildpack_err = false;
        let mut members = Vec::new();
        for (i, m) in done.iter().enumerate() {
            let outcome = &self.runs[&m.r.key()];
            let o = match outcome {
                DetectOutcome::Pass(plan) => {
                    passed.push((i, plan));
                    MemberOutcome::Pass
                }
                DetectOutcome::Fail => {
                    detected &= m.r.optional;
                    MemberOutcome::Fail
                }
                DetectOutcome::Error(c) => {
                    buildpack_err = true;
                    detected &= m.r.optional;
                    MemberOutcome::Error(*c)
                }
            };
            members.push(MemberReport {
                id: m.r.id.clone(),
                version: m.r.version.clone(),
                optional: m.r.optional,
                outcome: o,
            });
        }
        if !detected {
            self.reports.push(GroupReport { members, reason: "a required buildpack did not pass".into() });
            return Err(if buildpack_err { Failed::Buildpack } else { Failed::Detection });
        }
        let mut prefix = Vec::new();
        match run_trials(&passed, &mut prefix, done) {
            Ok((trial, deps)) => {
                let group = trial
                    .iter()
                    .map(|o| {
                        let m = &done[o.idx];
                        GroupMember {
                            id: m.r.id.clone(),
                            version: m.r.version.clone(),
                            api: m.api.clone(),
                            homepage: m.homepage.clone(),
                        }
                    })
                    .collect();
                let entries = deps
                    .entries
                    .into_iter()
                    .map(|e| PlanEntry {
                        providers: e
                            .providers
                            .iter()
                            .map(|&i| Provider {
                                id: done[i].r.id.clone(),
                                version: done[i].r.version.clone(),
                                extension: false,
                            })
                            .collect(),
                        requires: e.requires,
                    })
                    .collect();
                Ok(Resolution { group, plan: Plan { entries } })
            }
            Err(reason) => {
                self.reports.push(GroupReport { members, reason });
                Err(Failed::Detection)
            }
        }
    }
}

/// One option per passed element, first element outermost; an optional element counts as
/// required for all but its last option [L].
fn run_trials<'a>(
    rest: &[(usize, &'a DetectPlan)],
    prefix: &mut Vec<TrialOption<'a>>,
    done: &[Member],
) -> Result<(Vec<TrialOption<'a>>, DepMap), String> {
    let Some(&(idx, plan)) = rest.first() else {
        return run_trial(prefix.clone(), done);
    };
    let n = 1 + plan.or.len();
    let mut last_err = String::new();
    for i in 0..n {
        let sections = if i == 0 { &plan.main } else { &plan.or[i - 1] };
        prefix.push(TrialOption { idx, optional: done[idx].r.optional && i == n - 1, sections });
        let r = run_trials(&rest[1..], prefix, done);
        prefix.pop();
        match r {
            Ok(ok) => return Ok(ok),
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

/// Checks one trial: requires met by the same or an earlier element, provides required by the
/// same or a later one; optional violators are dropped and the trial re-checked.
fn run_trial<'a>(mut trial: Vec<TrialOption<'a>>, done: &[Member]) -> Result<(Vec<TrialOption<'a>>, DepMap), String> {
    loop {
        let deps = DepMap::new(&trial);
        let mut unmet: Vec<(usize, String)> = Vec::new();
        for e in &deps.entries {
            for &i in &e.early_requires {
                unmet.push((i, format!("`{}` requires `{}`", done[i].r, e.name)));
            }
        }
        for e in &deps.entries {
            for &i in &e.extra_provides {
                unmet.push((i, format!("`{}` provides unused `{}`", done[i].r, e.name)));
            }
        }
        if unmet.is_empty() {
            if trial.is_empty() {
                return Err("no viable buildpacks in group".into());
            }
            return Ok((trial, deps));
        }
        for (i, why) in &unmet {
            let required = trial.iter().any(|o| o.idx == *i && !o.optional);
            if required {
                return Err(format!("plan: {why}"));
            }
        }
        trial.retain(|o| !unmet.iter().any(|(i, _)| *i == o.idx));
    }
}

struct DepEntry {
    name: String,
    providers: Vec<usize>,
    requires: Vec<Require>,
    early_requires: Vec<usize>,
    extra_provides: Vec<usize>,
}

/// The lifecycle's `depMap`, in first-mention order so plan.toml is deterministic.
struct DepMap {
    entries: Vec<DepEntry>,
}

impl DepMap {
    fn new(trial: &[TrialOption<'_>]) -> Self {
        let mut m = DepMap { entries: Vec::new() };
        for o in trial {
            for p in &o.sections.provides {
                m.entry(&p.name).extra_provides.push(o.idx);
            }
            for r in &o.sections.requires {
                let e = m.entry(&r.name);
                let extra = std::mem::take(&mut e.extra_provides);
                e.providers.extend(extra);
                if e.providers.is_empty() {
                    e.early_requires.push(o.idx);
                } else {
                    e.requires.push(r.clone());
                }
            }
        }
        m
    }

    fn entry(&mut self, name: &str) -> &mut DepEntry {
        let pos = match self.entries.iter().position(|e| e.name == name) {
            Some(p) => p,
            None => {
                self.entries.push(DepEntry {
                    name: name.to_string(),
                    providers: Vec::new(),
                    requires: Vec::new(),
                    early_requires: Vec::new(),
                    extra_provides: Vec::new(),
                });
                self.entries.len() - 1
            }
        };
        &mut self.entries[pos]
    }
}

#[derive(Deserialize)]
struct RawOrderToml {
    #[serde(default)]
    order: Vec<OrderGroup>,
}

/// Parses order.toml (`[[order]] [[order.group]] id, version, optional`).
pub fn parse_order_toml(text: &str, file: &Path) -> Result<Vec<OrderGroup>, CnbError> {
    let raw: RawOrderToml = toml::from_str(text).map_err(|e| CnbError::toml(Phase::Detect, "order", file, e))?;
    // Ids and versions become path components (`/cnb/buildpacks/<id>/<version>`).
    for r in raw.order.iter().flat_map(|g| g.group.iter()) {
        crate::cnb::buildpack_toml::validate_ref(r)
            .map_err(|reason| CnbError::invalid(Phase::Detect, "order", file, reason))?;
    }
    Ok(raw.order)
}

/// Platform 0.15 system buildpacks: `pre` are prepended and `post` appended to every group,
/// unless the group already has that id.
pub fn with_system_buildpacks(order: &[OrderGroup], pre: &[BuildpackRef], post: &[BuildpackRef]) -> Vec<OrderGroup> {
    order
        .iter()
        .map(|g| {
            let has = |r: &BuildpackRef| g.group.iter().any(|m| same_id(&m.id, &r.id));
            let mut group: Vec<BuildpackRef> = pre.iter().filter(|r| !has(r)).cloned().collect();
            group.extend(g.group.iter().cloned());
            group.extend(post.iter().filter(|r| !has(r)).cloned());
            OrderGroup { group }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cnb::buildpack_toml::BuildpackDescriptor;
    use std::cell::RefCell;
    use std::collections::HashMap;

    fn desc(id: &str, version: &str, order: Option<&str>) -> BuildpackDescriptor {
        let mut t = format!(
            "api = \"0.10\"\n[buildpack]\nid = \"{id}\"\nversion = \"{version}\"\nhomepage = \"https://{id}\"\n"
        );
        if let Some(o) = order {
            t.push_str(o);
        }
        BuildpackDescriptor::parse(&t, Path::new("buildpack.toml")).unwrap()
    }

    fn r(id: &str) -> BuildpackRef {
        BuildpackRef::new(id, "1")
    }

    fn group(refs: &[BuildpackRef]) -> OrderGroup {
        OrderGroup { group: refs.to_vec() }
    }

    /// Runs resolution with a table of outcomes and optional composites; returns the result and
    /// the ids the oracle saw, in order.
    fn run(
        order: &[OrderGroup],
        outcomes: &[(&str, DetectOutcome)],
        composites: &[(&str, &str)],
    ) -> (Result<Resolution, CnbError>, Vec<String>) {
        let outcomes: HashMap<String, DetectOutcome> =
            outcomes.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let composites: HashMap<String, String> =
            composites.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let seen = RefCell::new(Vec::new());
        let res = resolve_order(
            order,
            |r| Ok(desc(&r.id, &r.version, composites.get(&r.id).map(|s| s.as_str()))),
            |r| {
                seen.borrow_mut().push(r.id.clone());
                outcomes.get(&r.id).cloned().unwrap_or(DetectOutcome::Pass(DetectPlan::default()))
            },
        );
        (res, seen.into_inner())
    }

    fn ids(res: &Resolution) -> Vec<&str> {
        res.group.iter().map(|m| m.id.as_str()).collect()
    }

    fn pass(provides: &[&str], requires: &[&str]) -> DetectOutcome {
        DetectOutcome::Pass(DetectPlan::simple(provides, requires))
    }

    #[test]
    fn parses_plan_with_or_and_metadata() {
        let t = r#"
[[provides]]
name = "node"
[[requires]]
name = "node"
[requires.metadata]
version = "18"
[[or]]
[[or.provides]]
name = "yarn"
[[or.requires]]
name = "yarn"
"#;
        let p = parse_detect_plan(t, "a@1", Path::new("plan.toml")).unwrap();
        assert_eq!(p.main.provides[0].name, "node");
        assert_eq!(p.main.requires[0].metadata["version"].as_str(), Some("18"));
        assert_eq!(p.or.len(), 1);
        assert_eq!(p.or[0].requires[0].name, "yarn");
        assert_eq!(parse_detect_plan("", "a@1", Path::new("p")).unwrap(), DetectPlan::default());
    }

    #[test]
    fn top_level_requires_version_is_an_error() {
        let t = "[[requires]]\nname = \"node\"\nversion = \"18\"\n";
        let e = parse_detect_plan(t, "acme/node@1", Path::new("/tmp/plan.toml")).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("acme/node@1") && s.contains("version") && s.contains("detect"), "{s}");
        let t = "[[or]]\n[[or.requires]]\nname = \"node\"\nversion = \"18\"\n";
        assert!(parse_detect_plan(t, "a@1", Path::new("p")).is_err());
        assert!(parse_detect_plan("[[requires]]\n", "a@1", Path::new("p")).is_err());
        assert!(parse_detect_plan("requires = 3", "a@1", Path::new("p")).is_err());
    }

    #[test]
    fn first_passing_group_wins_and_order_is_preserved() {
        let order = [group(&[r("a"), r("b")]), group(&[r("c")])];
        let (res, seen) = run(&order, &[("b", DetectOutcome::Fail)], &[]);
        let res = res.unwrap();
        assert_eq!(ids(&res), ["c"]);
        assert_eq!(seen, ["a", "b", "c"]);
        assert_eq!(res.group[0].api, "0.10");
        assert_eq!(res.group[0].homepage.as_deref(), Some("https://c"));
    }

    #[test]
    fn optional_failures_are_skipped() {
        let order = [group(&[r("a").optional(), r("b"), r("c").optional()])];
        let (res, _) = run(&order, &[("a", DetectOutcome::Fail), ("c", DetectOutcome::Error(1))], &[]);
        assert_eq!(ids(&res.unwrap()), ["b"]);
    }

    #[test]
    fn all_fail_exits_20_and_error_exits_21() {
        let order = [group(&[r("a")]), group(&[r("b")])];
        let (res, _) = run(&order, &[("a", DetectOutcome::Fail), ("b", DetectOutcome::Fail)], &[]);
        let e = res.unwrap_err();
        assert_eq!(e.exit_code(), 20);
        let CnbError::NoGroupPassed { failure } = &e else { panic!() };
        assert_eq!(failure.groups.len(), 2);
        assert_eq!(failure.groups[0].members[0].outcome, MemberOutcome::Fail);
        let (res, _) = run(&order, &[("a", DetectOutcome::Error(3)), ("b", DetectOutcome::Fail)], &[]);
        let e = res.unwrap_err();
        assert_eq!(e.exit_code(), 21);
        assert!(e.to_string().contains("error `a@1` (exit 3)"), "{e}");
    }

    #[test]
    fn detect_runs_once_per_id_and_version() {
        let order = [group(&[r("a"), r("b")]), group(&[r("a"), r("c")])];
        let (res, seen) = run(&order, &[("b", DetectOutcome::Fail)], &[]);
        assert_eq!(ids(&res.unwrap()), ["a", "c"]);
        assert_eq!(seen, ["a", "b", "c"]);
    }

    #[test]
    fn requires_must_be_provided_by_same_or_earlier() {
        // b requires x, provided by a later element: fails; the order [a provides, b requires] works.
        let order = [group(&[r("b"), r("a")]), group(&[r("a"), r("b")])];
        let (res, _) = run(&order, &[("a", pass(&["x"], &[])), ("b", pass(&[], &["x"]))], &[]);
        let res = res.unwrap();
        assert_eq!(ids(&res), ["a", "b"]);
        assert_eq!(res.plan.entries.len(), 1);
        assert_eq!(res.plan.entries[0].providers[0].id, "a");
        assert_eq!(res.plan.entries[0].requires[0].name, "x");
        // Same element provides and requires.
        let order = [group(&[r("a")])];
        let (res, _) = run(&order, &[("a", pass(&["x"], &["x"]))], &[]);
        assert_eq!(res.unwrap().plan.entries.len(), 1);
    }

    #[test]
    fn provides_must_be_required_by_same_or_later() {
        let order = [group(&[r("a"), r("b")])];
        let (res, _) = run(&order, &[("a", pass(&[], &["x"])), ("b", pass(&["x"], &[]))], &[]);
        let e = res.unwrap_err();
        assert_eq!(e.exit_code(), 20);
        assert!(e.to_string().contains("requires `x`"), "{e}");
        let (res, _) = run(&order, &[("a", pass(&["y"], &[]))], &[]);
        assert!(res.unwrap_err().to_string().contains("provides unused `y`"));
    }

    #[test]
    fn optional_violators_are_dropped_and_rechecked() {
        // c (optional) provides z that nobody requires → dropped; a/b resolve.
        let order = [group(&[r("a"), r("b"), r("c").optional()])];
        let (res, _) =
            run(&order, &[("a", pass(&["x"], &[])), ("b", pass(&[], &["x"])), ("c", pass(&["z"], &[]))], &[]);
        assert_eq!(ids(&res.unwrap()), ["a", "b"]);
        // Dropping optional o (requires y unprovided) leaves p's provide of w used only by o → p
        // (optional) is dropped on the re-check.
        let order = [group(&[r("a"), r("p").optional(), r("o").optional()])];
        let (res, _) = run(&order, &[("p", pass(&["w"], &[])), ("o", pass(&[], &["w", "y"]))], &[]);
        assert_eq!(ids(&res.unwrap()), ["a"]);
    }

    #[test]
    fn or_alternatives_are_tried_in_order_first_element_outermost() {
        let a = DetectOutcome::Pass(DetectPlan {
            main: PlanSections { provides: vec![Provide { name: "x".into() }], requires: vec![] },
            or: vec![PlanSections { provides: vec![Provide { name: "y".into() }], requires: vec![Require::new("y")] }],
        });
        // b only requires y → a must use its `or` option.
        let order = [group(&[r("a"), r("b")])];
        let (res, _) = run(&order, &[("a", a.clone()), ("b", pass(&[], &["y"]))], &[]);
        let res = res.unwrap();
        assert_eq!(res.plan.entries[0].requires.len(), 2);
        assert_eq!(res.plan.entries[0].requires[0].name, "y");
    }

    #[test]
    fn optional_element_counts_as_required_for_all_but_its_last_option() {
        // Optional a: main option provides x (unused) → with a required, trial fails rather than
        // dropping a; its last option (or) requires nothing and provides nothing → kept.
        let a = DetectOutcome::Pass(DetectPlan {
            main: PlanSections { provides: vec![Provide { name: "x".into() }], requires: vec![] },
            or: vec![PlanSections::default()],
        });
        let order = [group(&[r("a").optional(), r("b")])];
        let (res, _) = run(&order, &[("a", a)], &[]);
        assert_eq!(ids(&res.unwrap()), ["a", "b"]);
    }

    #[test]
    fn composite_expansion_depth_first_with_rest_of_group() {
        let meta = "[[order]]\n[[order.group]]\nid = \"m1\"\nversion = \"1\"\n[[order]]\n[[order.group]]\nid = \"m2\"\nversion = \"1\"\n";
        let order = [group(&[r("a"), r("meta"), r("z")])];
        let (res, seen) = run(&order, &[("m1", DetectOutcome::Fail)], &[("meta", meta)]);
        assert_eq!(ids(&res.unwrap()), ["a", "m2", "z"]);
        assert_eq!(seen, ["a", "m1", "z", "m2"]);
    }

    #[test]
    fn optional_composite_also_tried_without_it() {
        let meta = "[[order]]\n[[order.group]]\nid = \"m1\"\nversion = \"1\"\n";
        let order = [group(&[r("a"), r("meta").optional(), r("z")])];
        let (res, _) = run(&order, &[("m1", DetectOutcome::Fail)], &[("meta", meta)]);
        assert_eq!(ids(&res.unwrap()), ["a", "z"]);
        let order = [group(&[r("a"), r("meta"), r("z")])];
        let (res, _) = run(&order, &[("m1", DetectOutcome::Fail)], &[("meta", meta)]);
        assert_eq!(res.unwrap_err().exit_code(), 20);
    }

    #[test]
    fn duplicate_ids_skipped_on_expansion() {
        let meta =
            "[[order]]\n[[order.group]]\nid = \"a\"\nversion = \"2\"\n[[order.group]]\nid = \"b\"\nversion = \"1\"\n";
        let order = [group(&[r("a"), r("meta")])];
        let (res, seen) = run(&order, &[], &[("meta", meta)]);
        let res = res.unwrap();
        assert_eq!(ids(&res), ["a", "b"]);
        assert_eq!(res.group[0].version, "1");
        assert_eq!(seen, ["a", "b"]);
    }

    #[test]
    fn cyclic_composite_is_an_error_not_a_hang() {
        let meta = "[[order]]\n[[order.group]]\nid = \"meta\"\nversion = \"1\"\n";
        let (res, _) = run(&[group(&[r("meta")])], &[], &[("meta", meta)]);
        assert!(res.unwrap_err().to_string().contains("nest"));
    }

    #[test]
    fn nothing_passing_in_an_all_optional_group_fails() {
        let order = [group(&[r("a").optional()])];
        let (res, _) = run(&order, &[("a", DetectOutcome::Fail)], &[]);
        assert!(res.unwrap_err().to_string().contains("no viable buildpacks"));
    }

    #[test]
    fn plan_toml_and_buildpack_plans_with_unmet() {
        let order = [group(&[r("a"), r("b"), r("c")])];
        let mut req = Require::new("x");
        req.metadata.insert("version".into(), "1".into());
        let b = DetectOutcome::Pass(DetectPlan {
            main: PlanSections { provides: vec![Provide { name: "x".into() }], requires: vec![req] },
            or: vec![],
        });
        let (res, _) = run(&order, &[("a", pass(&["x"], &[])), ("b", b), ("c", pass(&[], &["x"]))], &[]);
        let res = res.unwrap();
        let plan = &res.plan;
        assert_eq!(plan.entries[0].providers.len(), 2);
        assert_eq!(plan.entries[0].requires.len(), 2);
        let text = plan.to_toml();
        assert!(text.contains("[[entries.providers]]") && text.contains("[[entries.requires]]"), "{text}");
        let back: Plan = toml::from_str(&text).unwrap();
        assert_eq!(&back, plan);

        let a_plan = plan.buildpack_plan("a");
        assert_eq!(a_plan.entries.len(), 2);
        assert!(a_plan.to_toml().contains("[[entries]]"));
        // a declares x unmet → b still gets it.
        let after_a = plan.after_build(&a_plan, &["x".to_string()], "a@1", Path::new("build.toml")).unwrap();
        assert_eq!(after_a.buildpack_plan("b").entries.len(), 2);
        // b meets it → c (not a provider anyway) and later providers get nothing.
        let after_b = after_a.after_build(&after_a.buildpack_plan("b"), &[], "b@1", Path::new("build.toml")).unwrap();
        assert!(after_b.entries.is_empty());
        let e = plan.after_build(&a_plan, &["nope".to_string()], "a@1", Path::new("/l/build.toml")).unwrap_err();
        assert!(e.to_string().contains("`nope`") && e.to_string().contains("a@1"));
    }

    #[test]
    fn group_toml_serialization() {
        let g = Group {
            group: vec![GroupMember { id: "a".into(), version: "1".into(), api: "0.9".into(), homepage: None }],
        };
        let t = g.to_toml();
        assert!(t.contains("[[group]]") && t.contains("api = \"0.9\""), "{t}");
    }

    #[test]
    fn order_toml_and_system_buildpacks() {
        let t = "[[order]]\n[[order.group]]\nid = \"a\"\nversion = \"1\"\n[[order.group]]\nid = \"b\"\nversion = \"1\"\noptional = true\n";
        let order = parse_order_toml(t, Path::new("order.toml")).unwrap();
        assert!(order[0].group[1].optional);
        let merged = with_system_buildpacks(&order, &[r("pre"), r("a")], &[r("post")]);
        let names: Vec<_> = merged[0].group.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(names, ["pre", "a", "b", "post"]);
    }
}
