//! Evaluates `BUILD.star` files and the `.star` files they load with the `starlark` crate, with the
//! embedded prelude, `glob()` and the rule machinery. Produces [`TargetNode`]s; knows nothing of actions.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use starlark::any::ProvidesStaticType;
use starlark::codemap::FileSpanRef;
use starlark::environment::{FrozenModule, Globals, GlobalsBuilder, LibraryExtension, Module};
use starlark::eval::{BeforeStmtFunc, BeforeStmtFuncDyn, Evaluator, FileLoader};
use starlark::starlark_module;
use starlark::syntax::{AstModule, Dialect};
use starlark::values::dict::DictRef;
use starlark::values::list::ListRef;
use starlark::values::none::NoneType;
use starlark::values::{FrozenHeapName, Heap, Value};

use super::attrs::{convert, AttrType, AttrValue, ConvertCtx};
use super::diagnostics::{LoadError, Site};
use super::glob;
use super::workspace::BUILD_FILE;
use crate::model::label::{Label, PackagePath};

/// The prelude, embedded in the binary: (load path, source).
pub const PRELUDE_FILES: &[(&str, &str)] = &[
    ("@prelude//attrs.star", include_str!("../../prelude/attrs.star")),
    ("@prelude//rules.star", include_str!("../../prelude/rules.star")),
    ("@prelude//prelude.star", include_str!("../../prelude/prelude.star")),
];

/// Environment variable: the step limit of [`EvalLimits`].
pub const MAX_STEPS_ENV: &str = "CBUILD_STARLARK_MAX_STEPS";
/// Environment variable: the heap limit of [`EvalLimits`] (a size: `2GiB`, `500MB`, bytes).
pub const MAX_HEAP_ENV: &str = "CBUILD_STARLARK_MAX_HEAP";
/// Environment variable: the call depth limit of [`EvalLimits`].
pub const MAX_DEPTH_ENV: &str = "CBUILD_STARLARK_MAX_DEPTH";
/// The highest call depth that may be configured: each Starlark frame costs native stack (about
/// 1 KiB, more with loops), and BUILD files are evaluated on the main thread.
pub const MAX_CALL_DEPTH_CEILING: usize = 1000;

/// Limits on evaluating one BUILD or `.star` file, so a mistaken or hostile file fails with a
/// located error instead of running forever or exhausting memory. Each file evaluation (a BUILD
/// file, or the top level of a loaded `.star` file) gets the whole budget.
///
/// * steps: function calls plus loop iterations (starlark's "ticks"; a comprehension's
///   iterations count too), checked every 1,000 steps;
/// * heap: bytes on the Starlark heap (strings, lists, ...), checked before every statement
///   (statements of loaded functions included) and every 1,000 steps. A single operation is not
///   interrupted: one `"a" * n` or `list(range(n))` allocates before the next check (Starlark
///   limits `*` to a 32-bit count), and a comprehension, being one statement, is checked every
///   1,000 iterations only;
/// * call depth: nested calls, endless recursion included (the extended dialect allows
///   recursion), at most [`MAX_CALL_DEPTH_CEILING`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalLimits {
    pub max_steps: u64,
    pub max_heap_bytes: u64,
    pub max_call_depth: usize,
}

impl Default for EvalLimits {
    /// 10 million steps (a fraction of a second of evaluation), 2 GiB of heap, depth 50
    /// (starlark's own default). The example monorepo loads with 1 % of the steps and heap.
    fn default() -> Self {
        EvalLimits { max_steps: 10_000_000, max_heap_bytes: 2 << 30, max_call_depth: 50 }
    }
}

impl EvalLimits {
    /// Checks configured values (each `None` keeps the default): zero is refused, as is a depth
    /// above [`MAX_CALL_DEPTH_CEILING`]. The error names the setting.
    pub fn new(steps: Option<u64>, heap_bytes: Option<u64>, depth: Option<usize>) -> Result<EvalLimits, String> {
        let d = EvalLimits::default();
        let l = EvalLimits {
            max_steps: steps.unwrap_or(d.max_steps),
            max_heap_bytes: heap_bytes.unwrap_or(d.max_heap_bytes),
            max_call_depth: depth.unwrap_or(d.max_call_depth),
        };
        if l.max_steps == 0 {
            return Err(format!("the Starlark step limit ({MAX_STEPS_ENV}) must be at least 1"));
        }
        if l.max_heap_bytes == 0 {
            return Err(format!("the Starlark heap limit ({MAX_HEAP_ENV}) must be at least 1 byte"));
        }
        if l.max_call_depth == 0 || l.max_call_depth > MAX_CALL_DEPTH_CEILING {
            return Err(format!(
                "the Starlark call depth limit ({MAX_DEPTH_ENV}) must be between 1 and {MAX_CALL_DEPTH_CEILING}"
            ));
        }
        Ok(l)
    }

    fn heap_limit(&self) -> usize {
        usize::try_from(self.max_heap_bytes).unwrap_or(usize::MAX)
    }

    /// Sets the limits on a fresh evaluator; the returned cell follows the statement being run
    /// (the location of a limit error).
    fn install(&self, eval: &mut Evaluator<'_, '_, '_>) -> Result<LastStmt, LoadError> {
        let internal = |e: anyhow::Error| LoadError::new(format!("internal: cannot set Starlark limits: {e}"));
        eval.set_max_tick_count(self.max_steps).map_err(internal)?;
        eval.set_max_heap_size(self.heap_limit()).map_err(internal)?;
        eval.set_max_callstack_size(self.max_call_depth).map_err(internal)?;
        // The built-in heap check runs every 1,000 steps; a loop that doubles a list needs only a
        // few dozen steps to exhaust memory, so check before every statement too.
        let last = LastStmt::default();
        eval.before_stmt_for_dap(BeforeStmtFunc::from_dyn(Box::new(HeapCheck {
            limit: self.heap_limit(),
            last: last.clone(),
        })));
        Ok(last)
    }

    /// If evaluation stopped because of a limit, the user error saying which and how to raise it.
    fn exceeded(
        &self,
        eval: &Evaluator<'_, '_, '_>,
        e: &starlark::Error,
        file: &str,
        last: &LastStmt,
    ) -> Option<LoadError> {
        let site = e.span().or(last.borrow().as_ref()).map(Site::from_file_span);
        let (message, help) = if eval.get_total_tick_count() > self.max_steps {
            (
                format!("{file}: evaluation exceeded {} steps (function calls and loop iterations)", self.max_steps),
                format!(
                    "look for an endless or very long loop; if the file really needs more, raise {MAX_STEPS_ENV} \
                     or `starlark_max_steps` in the `[build]` table of cbuild.toml"
                ),
            )
        } else if heap_used(eval) > self.heap_limit() {
            (
                format!("{file}: evaluation exceeded the Starlark heap limit of {}", human_bytes(self.max_heap_bytes)),
                format!(
                    "look for a value that grows without bound; if the file really needs more, raise \
                     {MAX_HEAP_ENV} (e.g. 4GiB) or `starlark_max_heap` in the `[build]` table of cbuild.toml"
                ),
            )
        } else if matches!(e.kind(), starlark::ErrorKind::StackOverflow(_)) {
            (
                format!("{file}: evaluation exceeded the call depth of {}", self.max_call_depth),
                format!(
                    "calls nest too deeply; raise {MAX_DEPTH_ENV} (at most {MAX_CALL_DEPTH_CEILING}) or \
                     `starlark_max_depth` in the `[build]` table of cbuild.toml"
                ),
            )
        } else {
            return None;
        };
        Some(LoadError::new(message).at(site).label("evaluation was stopped here").help(help))
    }
}

/// Bytes the evaluation holds on its heaps (what starlark's own heap limit compares).
fn heap_used(eval: &Evaluator<'_, '_, '_>) -> usize {
    eval.heap().peak_allocated_bytes() + eval.frozen_heap().allocated_bytes()
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n => format!("{n} bytes"),
    }
}

/// The statement being evaluated (set before each one).
type LastStmt = std::rc::Rc<RefCell<Option<starlark::codemap::FileSpan>>>;

/// The per-statement heap check (see [`EvalLimits::install`]).
struct HeapCheck {
    limit: usize,
    last: LastStmt,
}

impl<'e> BeforeStmtFuncDyn<'e> for HeapCheck {
    fn call<'v>(
        &mut self,
        span: FileSpanRef,
        _continued: bool,
        eval: &mut Evaluator<'v, '_, 'e>,
    ) -> starlark::Result<()> {
        *self.last.borrow_mut() = Some(span.to_file_span());
        if heap_used(eval) > self.limit {
            return Err(starlark::Error::new_other(anyhow::anyhow!("Starlark heap limit exceeded")));
        }
        Ok(())
    }
}

/// One target as declared in a BUILD file: plain data, no Starlark values.
#[derive(Clone, Debug)]
pub struct TargetNode {
    pub label: Label,
    /// The rule kind (`layer`, `cnb_image`, ...).
    pub kind: String,
    pub attrs: BTreeMap<String, AttrValue>,
    /// Every label the attributes mention, sorted and unique.
    pub deps: Vec<Label>,
    /// Where the rule was called (the innermost call outside the prelude).
    pub site: Option<Site>,
}

impl TargetNode {
    pub fn attr(&self, name: &str) -> &AttrValue {
        self.attrs.get(name).unwrap_or(&AttrValue::None)
    }
}

/// One `glob()` call as evaluated: its result depends on which files exist in `package`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GlobCall {
    /// The package whose directory was matched.
    pub package: PackagePath,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

/// The workspace files a package's evaluation read, besides the sources its targets name: its
/// BUILD file, every `.star` file it loads (transitively), and the `glob()` calls whose results
/// depend on which files exist (those of loaded files' top levels included). What `cbuild affected`
/// needs to tell which targets a changed, added or deleted file can affect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackageInputs {
    /// Workspace-relative paths: the BUILD file and every loaded `.star` file.
    pub files: BTreeSet<String>,
    pub globs: BTreeSet<GlobCall>,
}

/// What one loaded `.star` module read: the workspace modules it loads and its top level's globs.
#[derive(Clone, Debug, Default)]
struct ModuleInputs {
    loads: Vec<String>,
    globs: Vec<GlobCall>,
}

/// Per-evaluation state reachable from native functions through `eval.extra`.
#[derive(ProvidesStaticType)]
struct EvalCtx {
    package: PackagePath,
    package_dir: PathBuf,
    /// True while evaluating a BUILD file (rules may be called), false for a `.star` library's top level.
    is_build: bool,
    targets: RefCell<Vec<TargetNode>>,
    /// A structured error raised by a native function; preferred over starlark's own rendering.
    error: RefCell<Option<LoadError>>,
    glob_limit: usize,
    /// Every `glob()` evaluated in this file (or in macros it called).
    globs: RefCell<Vec<GlobCall>>,
    /// The package-relative paths `glob()` returned in this evaluation: entries its directory walk
    /// saw as non-directories, so a rule attribute listing them need not `lstat` each again (a
    /// 10,000-file monorepo's srcs are listed by two or three rules each).
    globbed: RefCell<std::collections::HashSet<String>>,
    /// The package directory's files as [`glob::package_files`] lists them, walked on the first
    /// `glob()` of this evaluation and shared by the others (a BUILD file globbing `**` for two
    /// rules walked 2,000 files twice).
    listing: RefCell<Option<std::rc::Rc<[String]>>>,
}

fn ctx<'a>(eval: &'a Evaluator) -> anyhow::Result<&'a EvalCtx> {
    eval.extra
        .and_then(|e| e.downcast_ref::<EvalCtx>())
        .ok_or_else(|| anyhow::anyhow!("internal: no evaluation context"))
}

/// The innermost call site that is not in the prelude: where the user called a rule or glob().
fn user_site(eval: &Evaluator) -> Option<Site> {
    let stack = eval.call_stack();
    stack
        .frames
        .iter()
        .rev()
        .filter_map(|f| f.location.as_ref())
        .find(|l| !l.file.filename().starts_with("@prelude//"))
        .map(Site::from_file_span)
}

fn raise(eval: &Evaluator, e: LoadError) -> anyhow::Error {
    let e = e.at(user_site(eval));
    let msg = e.message.clone();
    if let Ok(c) = ctx(eval) {
        c.error.borrow_mut().get_or_insert(e);
    }
    anyhow::anyhow!(msg)
}

#[starlark_module]
fn cbuild_builtins(builder: &mut GlobalsBuilder) {
    /// Validates a rule call against its attribute spec and (for built-in kinds) records the target.
    fn __cbuild_instantiate<'v>(
        kind: &str,
        spec: Value<'v>,
        name: Value<'v>,
        kwargs: Value<'v>,
        record: bool,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        let heap = eval.heap();
        let out = instantiate(kind, spec, name, kwargs, record, eval)?;
        // A recorded (built-in) rule's values are not read back: the prelude passes them only to
        // a checked macro's `impl`, and a service's 2,000 srcs would be copied onto the heap again.
        if record {
            return Ok(Value::new_none());
        }
        // Return the checked values as a dict for checked macros (`impl`).
        let mut pairs = Vec::new();
        for (k, v) in out {
            pairs.push((k, attr_to_value(&v, heap)));
        }
        Ok(heap.alloc(starlark::values::dict::AllocDict(pairs)))
    }

    /// Files of the current package matching `include` and not `exclude`, sorted. Patterns use `*`
    /// (within a directory) and `**` (any depth); they cannot leave the package and do not descend
    /// into sub-packages (directories with their own BUILD.star).
    fn glob<'v>(
        include: Value<'v>,
        #[starlark(default = NoneType)] exclude: Value<'v>,
        #[starlark(require = named, default = true)] allow_empty: bool,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Vec<String>> {
        let inc = string_list(include).map_err(|m| raise(eval, LoadError::new(format!("glob(): `include` {m}"))))?;
        let exc = if exclude.is_none() {
            Vec::new()
        } else {
            string_list(exclude).map_err(|m| raise(eval, LoadError::new(format!("glob(): `exclude` {m}"))))?
        };
        let c = ctx(eval)?;
        let (dir, limit) = (c.package_dir.clone(), c.glob_limit);
        c.globs.borrow_mut().push(GlobCall { package: c.package.clone(), include: inc.clone(), exclude: exc.clone() });
        let listing = || -> Result<std::rc::Rc<[String]>, LoadError> {
            if let Some(l) = c.listing.borrow().as_ref() {
                return Ok(l.clone());
            }
            let l: std::rc::Rc<[String]> = glob::package_files(&dir)?.into();
            *c.listing.borrow_mut() = Some(l.clone());
            Ok(l)
        };
        match glob::glob_listed(&inc, &exc, limit, listing) {
            Ok(v) if v.is_empty() && !allow_empty => Err(raise(
                eval,
                LoadError::new(format!("glob({inc:?}) matched no files"))
                    .help("pass allow_empty = True if that is expected"),
            )),
            Ok(v) => {
                c.globbed.borrow_mut().extend(v.iter().cloned());
                Ok(v)
            }
            Err(e) => Err(raise(eval, e)),
        }
    }

    /// The current package path, `services/api` (empty for the root package).
    fn package_name(eval: &mut Evaluator) -> anyhow::Result<String> {
        Ok(ctx(eval)?.package.to_string())
    }
}

fn string_list(v: Value) -> Result<Vec<String>, String> {
    if let Some(s) = v.unpack_str() {
        return Ok(vec![s.to_string()]);
    }
    let l = ListRef::from_value(v).ok_or_else(|| format!("must be a list of strings, got {}", v.get_type()))?;
    l.iter()
        .map(|x| {
            x.unpack_str()
                .map(String::from)
                .ok_or_else(|| format!("must be a list of strings, got an element of type {}", x.get_type()))
        })
        .collect()
}

fn attr_to_value<'v>(v: &AttrValue, heap: Heap<'v>) -> Value<'v> {
    match v {
        AttrValue::None => Value::new_none(),
        AttrValue::Bool(b) => Value::new_bool(*b),
        AttrValue::Int(i) => heap.alloc(*i),
        AttrValue::String(s) => heap.alloc(s.as_str()),
        AttrValue::Label(l) | AttrValue::Optional(l) => heap.alloc(l.to_string()),
        AttrValue::File(f) => heap.alloc(f.file.as_str()),
        AttrValue::List(xs) => heap.alloc(xs.iter().map(|x| attr_to_value(x, heap)).collect::<Vec<_>>()),
        AttrValue::Dict(d) => heap.alloc(starlark::values::dict::AllocDict(
            d.iter().map(|(k, x)| (k.as_str(), attr_to_value(x, heap))).collect::<Vec<_>>(),
        )),
    }
}

fn instantiate<'v>(
    kind: &str,
    spec: Value<'v>,
    name: Value<'v>,
    kwargs: Value<'v>,
    record: bool,
    eval: &mut Evaluator<'v, '_, '_>,
) -> anyhow::Result<Vec<(String, AttrValue)>> {
    let c = ctx(eval)?;
    if !c.is_build {
        return Err(raise(
            eval,
            LoadError::new(format!("rule `{kind}` called while loading a .star file"))
                .help("rules may only be called from BUILD.star files (directly or through macros they call)"),
        ));
    }
    let package = c.package.clone();
    let package_dir = c.package_dir.clone();
    let name = match name.unpack_str() {
        Some(n) => n.to_string(),
        None => {
            return Err(raise(
                eval,
                LoadError::new(format!("`name` of a `{kind}` must be a string, got {}", name.get_type())),
            ))
        }
    };
    let label = Label::parse(&format!("//{package}:{name}"), None)
        .map_err(|e| raise(eval, LoadError::new(format!("invalid target name `{name}`: {}", e.reason))))?;
    let spec = DictRef::from_value(spec)
        .ok_or_else(|| raise(eval, LoadError::new(format!("internal: attrs of `{kind}` are not a dict"))))?;
    let kwargs =
        DictRef::from_value(kwargs).ok_or_else(|| raise(eval, LoadError::new("internal: kwargs are not a dict")))?;
    let globbed = c.globbed.borrow();
    let cx = ConvertCtx { package: &package, package_dir: &package_dir, globbed: Some(&globbed) };
    let known: Vec<String> = spec.keys().filter_map(|k| k.unpack_str().map(String::from)).collect();
    for k in kwargs.keys() {
        let k = k.unpack_str().unwrap_or("?");
        if !known.iter().any(|x| x == k) {
            let mut e = LoadError::new(format!("unknown attribute `{k}` for rule `{kind}`"))
                .label("not an attribute of this rule");
            e = match closest(k, &known) {
                Some(s) => e.help(format!("did you mean `{s}`? attributes of `{kind}`: {}", known.join(", "))),
                None => e.help(format!("attributes of `{kind}`: {}", known.join(", "))),
            };
            return Err(raise(eval, e));
        }
    }
    let mut out = Vec::new();
    for (k, s) in spec.iter() {
        let k = k.unpack_str().unwrap_or("?").to_string();
        let s = DictRef::from_value(s)
            .ok_or_else(|| raise(eval, LoadError::new(format!("attribute spec of `{k}` must come from attr.*()"))))?;
        let get = |f: &str| s.get_str(f);
        let ty_name = get("type").and_then(|v| v.unpack_str().map(String::from)).unwrap_or_default();
        let ty = AttrType::parse(&ty_name)
            .ok_or_else(|| raise(eval, LoadError::new(format!("attribute `{k}` has unknown type `{ty_name}`"))))?;
        let mandatory = get("mandatory").and_then(|v| v.unpack_bool()).unwrap_or(false);
        let value = match kwargs.get_str(&k) {
            Some(v) if !v.is_none() => v,
            _ => {
                if mandatory {
                    return Err(raise(
                        eval,
                        LoadError::new(format!("missing required attribute `{k}` of `{kind}` target `{name}`"))
                            .label(format!("`{k}` is required"))
                            .help(format!("`{k}` takes {}", ty.describe())),
                    ));
                }
                match get("default") {
                    Some(d) if !d.is_none() => d,
                    _ => {
                        out.push((k, AttrValue::None));
                        continue;
                    }
                }
            }
        };
        let v = convert(ty, value, &cx).map_err(|m| {
            raise(
                eval,
                LoadError::new(format!("attribute `{k}` of `{kind}` target `{name}`: {m}")).label(format!("bad `{k}`")),
            )
        })?;
        if let (Some(allowed), AttrValue::String(sv)) = (get("values").filter(|v| !v.is_none()), &v) {
            let allowed = string_list(allowed).unwrap_or_default();
            if !allowed.iter().any(|a| a == sv) {
                return Err(raise(
                    eval,
                    LoadError::new(format!(
                        "attribute `{k}` of `{kind}` target `{name}` is `{sv}`; allowed: {}",
                        allowed.join(", ")
                    )),
                ));
            }
        }
        out.push((k, v));
    }
    if record {
        let site = user_site(eval);
        let c = ctx(eval)?;
        if c.targets.borrow().iter().any(|t| t.label.name == name) {
            return Err(raise(
                eval,
                LoadError::new(format!("duplicate target name `{name}` in package `//{package}`"))
                    .label("a target of this name was already declared")
                    .help("target names must be unique within a package"),
            ));
        }
        let attrs: BTreeMap<String, AttrValue> = out.iter().cloned().collect();
        let mut deps = Vec::new();
        attrs.values().for_each(|v| v.labels(&mut deps));
        deps.sort();
        deps.dedup();
        c.targets.borrow_mut().push(TargetNode { label, kind: kind.to_string(), attrs, deps, site });
    }
    Ok(out)
}

/// The closest known name by edit distance, if close enough to be a likely typo.
fn closest<'a>(k: &str, known: &'a [String]) -> Option<&'a str> {
    fn dist(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                cur.push((prev[j] + (ca != *cb) as usize).min(prev[j + 1] + 1).min(cur[j] + 1));
            }
            prev = cur;
        }
        prev[b.len()]
    }
    known.iter().map(|x| (dist(k, x), x)).filter(|(d, _)| *d <= 2).min().map(|(_, x)| x.as_str())
}

/// Loads and caches `.star` modules (prelude and workspace files) and evaluates BUILD files.
pub struct Evaluation {
    root: PathBuf,
    globals: Globals,
    modules: RefCell<HashMap<String, FrozenModule>>,
    /// What each loaded workspace module read (for [`PackageInputs`]).
    module_inputs: RefCell<HashMap<String, ModuleInputs>>,
    prelude: FrozenModule,
    pub glob_limit: usize,
    /// Limits on each file's evaluation (the prelude is evaluated before they are set, unlimited).
    pub limits: EvalLimits,
}

struct Loader<'a> {
    ev: &'a Evaluation,
    /// Module ids being loaded (outermost first), for cycle detection.
    stack: RefCell<Vec<String>>,
    current: PackagePath,
}

impl Evaluation {
    pub fn new(root: &Path) -> Result<Evaluation, LoadError> {
        let globals = GlobalsBuilder::extended_by(&[
            LibraryExtension::StructType,
            LibraryExtension::Print,
            LibraryExtension::Json,
            LibraryExtension::Map,
            LibraryExtension::Filter,
            LibraryExtension::Partial,
        ])
        .with(cbuild_builtins)
        .build();
        let mut ev = Evaluation {
            root: root.to_path_buf(),
            globals,
            modules: RefCell::new(HashMap::new()),
            module_inputs: RefCell::new(HashMap::new()),
            prelude: placeholder_module(),
            glob_limit: 100_000,
            limits: EvalLimits::default(),
        };
        let loader = Loader { ev: &ev, stack: RefCell::new(Vec::new()), current: PackagePath::root() };
        ev.prelude = loader.load_module("@prelude//prelude.star", None)?;
        Ok(ev)
    }

    /// Evaluates `<root>/<package>/BUILD.star` and returns its targets in declaration order.
    pub fn eval_package(&self, package: &PackagePath) -> Result<Vec<TargetNode>, LoadError> {
        self.eval_package_inputs(package).map(|(t, _)| t)
    }

    /// [`eval_package`](Self::eval_package), with the files and globs the evaluation read.
    pub fn eval_package_inputs(&self, package: &PackagePath) -> Result<(Vec<TargetNode>, PackageInputs), LoadError> {
        let dir = self.root.join(package.as_str());
        let file = dir.join(BUILD_FILE);
        let display = display_name(package, BUILD_FILE);
        crate::fs::reads::note(&file, false);
        let src =
            std::fs::read_to_string(&file).map_err(|e| LoadError::new(format!("cannot read `{display}`: {e}")))?;
        let ast = AstModule::parse(&display, src, &Dialect::Extended).map_err(|e| LoadError::from_starlark(&e))?;
        let loader = Loader { ev: self, stack: RefCell::new(vec![display.clone()]), current: package.clone() };
        loader.preload(&ast, &display)?;
        let cx = EvalCtx {
            package: package.clone(),
            package_dir: dir,
            is_build: true,
            targets: RefCell::new(Vec::new()),
            error: RefCell::new(None),
            glob_limit: self.glob_limit,
            globs: RefCell::new(Vec::new()),
            globbed: RefCell::new(Default::default()),
            listing: RefCell::new(None),
        };
        let direct_loads = self.workspace_loads(&loader, &ast);
        let file_label = format!("//{package}:{BUILD_FILE}");
        let res = Module::with_temp_heap(|module| {
            module.import_public_symbols(&self.prelude);
            let mut eval = Evaluator::new(&module);
            let last = self.limits.install(&mut eval).map_err(Ok)?;
            eval.set_loader(&loader);
            eval.extra = Some(&cx);
            eval.eval_module(ast, &self.globals)
                .map(|_| ())
                .map_err(|e| self.limits.exceeded(&eval, &e, &file_label, &last).ok_or(e))
        });
        match res {
            Ok(()) => {
                let mut inputs = PackageInputs { files: BTreeSet::from([display]), globs: BTreeSet::new() };
                inputs.globs.extend(cx.globs.into_inner());
                self.add_module_inputs(direct_loads, &mut inputs);
                Ok((cx.targets.into_inner(), inputs))
            }
            Err(Ok(limit)) => Err(limit),
            Err(Err(e)) => Err(cx.error.borrow_mut().take().unwrap_or_else(|| LoadError::from_starlark(&e))),
        }
    }
}

impl Evaluation {
    /// The workspace modules (not the prelude) `ast` loads directly, as module ids (= paths).
    fn workspace_loads(&self, loader: &Loader, ast: &AstModule) -> Vec<String> {
        ast.loads()
            .iter()
            .filter_map(|l| loader.resolve(l.module_id).ok())
            .filter(|id| !id.starts_with("@prelude//"))
            .collect()
    }

    /// Adds `loads` and everything they load, with their top levels' globs, to `inputs`.
    fn add_module_inputs(&self, loads: Vec<String>, inputs: &mut PackageInputs) {
        let known = self.module_inputs.borrow();
        let mut work = loads;
        while let Some(id) = work.pop() {
            if !inputs.files.insert(id.clone()) {
                continue;
            }
            if let Some(m) = known.get(&id) {
                inputs.globs.extend(m.globs.iter().cloned());
                work.extend(m.loads.iter().cloned());
            }
        }
    }
}

fn placeholder_module() -> FrozenModule {
    Module::with_temp_heap(|m| m.freeze()).expect("freezing an empty module cannot fail")
}

fn display_name(package: &PackagePath, file: &str) -> String {
    if package.is_root() {
        file.to_string()
    } else {
        format!("{package}/{file}")
    }
}

impl<'a> Loader<'a> {
    /// Resolves a `load()` path to a module id: `@prelude//x.star`, or a workspace file `pkg/x.star`.
    fn resolve(&self, path: &str) -> Result<String, String> {
        if let Some(rest) = path.strip_prefix("@prelude//") {
            let id = format!("@prelude//{rest}");
            return if PRELUDE_FILES.iter().any(|(p, _)| *p == id) {
                Ok(id)
            } else {
                Err(format!(
                    "`{path}` is not a prelude file (known: {})",
                    PRELUDE_FILES.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
                ))
            };
        }
        let (pkg, file) = if let Some(rest) = path.strip_prefix("//") {
            match rest.split_once(':') {
                Some((p, f)) => (PackagePath::parse(p).map_err(|e| e.to_string())?, f.to_string()),
                None => return Err(format!("`{path}`: write load paths as `//package:file.star`")),
            }
        } else if let Some(f) = path.strip_prefix(':') {
            (self.current.clone(), f.to_string())
        } else {
            return Err(format!("`{path}`: load paths start with `//`, `:` or `@prelude//`"));
        };
        if !file.ends_with(".star") {
            return Err(format!("`{path}`: only .star files can be loaded"));
        }
        let rel =
            crate::fs::normalize_relative(Path::new(&file)).ok_or_else(|| format!("`{path}` escapes its package"))?;
        Ok(display_name(&pkg, rel.to_str().unwrap_or(&file)))
    }

    /// Loads every module `ast` loads, before evaluating it, reporting cycles with the whole path.
    fn preload(&self, ast: &AstModule, _who: &str) -> Result<(), LoadError> {
        for l in ast.loads() {
            let site = Some(Site::from_file_span(&l.span));
            let id =
                self.resolve(l.module_id).map_err(|m| LoadError::new(format!("cannot load {m}")).at(site.clone()))?;
            if self.ev.modules.borrow().contains_key(&id) {
                continue;
            }
            if let Some(pos) = self.stack.borrow().iter().position(|m| m == &id) {
                let mut cycle: Vec<String> = self.stack.borrow()[pos..].to_vec();
                cycle.push(id.clone());
                return Err(LoadError::new(format!("load cycle: {}", cycle.join(" -> ")))
                    .at(site)
                    .label("this load closes the cycle")
                    .help("break the cycle by moving the shared definitions into a file that loads neither"));
            }
            self.load_module(&id, site)?;
        }
        Ok(())
    }

    fn load_module(&self, id: &str, site: Option<Site>) -> Result<FrozenModule, LoadError> {
        if let Some(m) = self.ev.modules.borrow().get(id) {
            return Ok(m.clone());
        }
        let (src, pkg, dir) = if let Some((_, s)) = PRELUDE_FILES.iter().find(|(p, _)| *p == id) {
            (s.to_string(), PackagePath::root(), self.ev.root.clone())
        } else {
            let path = self.ev.root.join(id);
            crate::fs::reads::note(&path, false);
            let src = std::fs::read_to_string(&path).map_err(|e| {
                LoadError::new(format!("cannot load `//{}`: {e}", id)).at(site.clone()).label("loaded here")
            })?;
            let pkg_str = Path::new(id).parent().and_then(|p| p.to_str()).unwrap_or("");
            let pkg = PackagePath::parse(pkg_str).unwrap_or_else(|_| PackagePath::root());
            (src, pkg.clone(), self.ev.root.join(pkg.as_str()))
        };
        let ast = AstModule::parse(id, src, &Dialect::Extended).map_err(|e| LoadError::from_starlark(&e))?;
        self.stack.borrow_mut().push(id.to_string());
        let sub = Loader { ev: self.ev, stack: RefCell::new(self.stack.borrow().clone()), current: pkg.clone() };
        let r = sub.preload(&ast, id);
        self.stack.borrow_mut().pop();
        r?;
        let cx = EvalCtx {
            package: pkg,
            package_dir: dir,
            is_build: false,
            targets: RefCell::new(Vec::new()),
            error: RefCell::new(None),
            glob_limit: self.ev.glob_limit,
            globs: RefCell::new(Vec::new()),
            globbed: RefCell::new(Default::default()),
            listing: RefCell::new(None),
        };
        let loads = self.ev.workspace_loads(&sub, &ast);
        let is_prelude = id.starts_with("@prelude//");
        let file_label = match id.rsplit_once('/') {
            _ if is_prelude => id.to_string(),
            Some((pkg, file)) => format!("//{pkg}:{file}"),
            None => format!("//:{id}"),
        };
        let frozen = Module::with_temp_heap(|module| {
            if !is_prelude {
                module.import_public_symbols(&self.ev.prelude);
            }
            {
                let mut eval = Evaluator::new(&module);
                let last =
                    if is_prelude { LastStmt::default() } else { self.ev.limits.install(&mut eval).map_err(Ok)? };
                eval.set_loader(&sub);
                eval.extra = Some(&cx);
                eval.eval_module(ast, &self.ev.globals)
                    .map_err(|e| self.ev.limits.exceeded(&eval, &e, &file_label, &last).ok_or(e))?;
            }
            module
                .freeze_named(FrozenHeapName::User(Box::new(id.to_string())))
                .map_err(|e| Err(starlark::Error::from(e)))
        });
        let frozen = frozen.map_err(|e| match e {
            Ok(limit) => limit,
            Err(e) => cx.error.borrow_mut().take().unwrap_or_else(|| LoadError::from_starlark(&e)),
        })?;
        self.ev.modules.borrow_mut().insert(id.to_string(), frozen.clone());
        if !is_prelude {
            self.ev
                .module_inputs
                .borrow_mut()
                .insert(id.to_string(), ModuleInputs { loads, globs: cx.globs.into_inner() });
        }
        Ok(frozen)
    }
}

impl FileLoader for Loader<'_> {
    fn load(&self, path: &str) -> starlark::Result<FrozenModule> {
        let id = self.resolve(path).map_err(|m| starlark::Error::new_other(anyhow::anyhow!(m)))?;
        self.ev
            .modules
            .borrow()
            .get(&id)
            .cloned()
            .ok_or_else(|| starlark::Error::new_other(anyhow::anyhow!("internal: `{id}` was not preloaded")))
    }
}
