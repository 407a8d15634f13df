//! The command line: clap definitions, settings, error classification and exit codes. The only module
//! that uses `anyhow`; one file per subcommand under `commands/`.

pub mod attach;
pub mod build_inputs;
pub mod color;
pub mod commands;
pub mod engine;
pub mod inputs;
pub mod noop;
pub mod output;
pub mod progress;
pub mod query;
pub mod settings;
pub mod stamp;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub use output::Failure;
pub use settings::GlobalArgs;

/// cbuild turns application source into OCI images the Cloud Native Buildpacks way, driven by
/// Starlark BUILD.star files and a content-addressed cache: only what changed is rebuilt.
///
/// Examples:
///   cbuild //services/api:image            build one image (shorthand for `cbuild build ...`)
///   cbuild build //...                     build every target of the workspace
///   cbuild query 'deps(//services/api:image)' --output dot | dot -Tsvg > api.svg
#[derive(Parser, Debug)]
#[command(name = "cbuild", version, verbatim_doc_comment, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build targets: `cbuild build //services/api:image`, `cbuild build //...`.
    ///
    /// Only actions whose inputs changed run; everything else comes from the cache. Each image
    /// target's OCI layout is written to cbuild-out/<package>/<name>/.
    Build(commands::build::BuildArgs),
    /// Run `image_test` targets: `cbuild test //...`. Builds what they need, runs them in
    /// parallel; an unchanged image's pass is cached (shown as cached). Exit 3 if a test failed.
    ///
    /// Examples:
    ///   cbuild test //...
    ///   cbuild test //services/... --junit report.xml
    ///   cbuild test //... --retries 2 --no-cache-results
    #[command(verbatim_doc_comment)]
    Test(commands::test::TestArgs),
    /// Query the target graph: deps(X), rdeps(U, X), somepath(S, E), allpaths(S, E), kind(RULE, X),
    /// set(...), patterns, and `+`/`-`/`^`.
    ///
    /// Examples:
    ///   cbuild query //...
    ///   cbuild query 'deps(//services/api:image)' --output dot
    ///   cbuild query 'rdeps(//..., //stacks:default)'
    ///   cbuild query 'somepath(//services/api:image, //stacks:busybox-bin)'
    ///   cbuild query 'kind(cnb_image, //...)' --output json
    #[command(verbatim_doc_comment)]
    Query(commands::query::QueryArgs),
    /// Why did this target rebuild? Lists, per action of the last build, the inputs that changed.
    Explain(commands::explain::ExplainArgs),
    /// Inspect and trim the local cache: `stats`, `gc --max-size 10GB`, `clean`; `keygen` makes a remote-cache signing key.
    Cache(commands::cache::CacheArgs),
    /// Build an image target and run it locally, like `docker run` without a daemon:
    /// `cbuild run //tools:tool -- --help`.
    Run(commands::run::RunArgs),
    /// Show an image target's digest, config and layers (size and origin of each).
    Inspect(commands::inspect::InspectArgs),
    /// Write an image's SBOMs to a directory: the buildpacks' CNB SBOM files
    /// (`DIR/layers/sbom/launch/<buildpack>/...`, as in the image's SBOM layer) and the documents
    /// attached to it (cbuild's sbom.spdx.json, sbom.cdx.json, provenance.intoto.json).
    ///
    /// Examples:
    ///   cbuild sbom //services/api:image -o sbom/
    ///   cbuild sbom registry.example.com/acme/api:1 -o sbom/
    #[command(verbatim_doc_comment)]
    Sbom(commands::sbom::SbomArgs),
    /// Write an image target as a docker-archive tar (`docker load -i`) or an OCI layout.
    Export(commands::export::ExportArgs),
    /// Build image targets and push them to their `tags` (or --tag); only missing blobs are sent.
    Push(commands::push::PushArgs),
    /// Create or refresh the lock file of `debian_image` targets (pins every package by sha256).
    Lock(commands::lock::LockArgs),
    /// Check that targets are reproducible: rebuild them from an empty temporary cache (no
    /// remote cache) and compare with the recorded build (what `cbuild build` gives: the local
    /// cache, and the remote cache if one is set). Exit 1 naming each target that differs, its
    /// first differing layer and the first action whose output differs.
    ///
    /// Examples:
    ///   cbuild verify //...
    ///   cbuild --remote-cache http://cache:8080 verify //services/...   (CI's results vs a local rebuild)
    #[command(verbatim_doc_comment)]
    Verify(commands::verify::VerifyArgs),
    /// Run remote actions for an REAPI engine's scheduler (a Remote Workers API bot, as
    /// BuildGrid's): `cbuild worker --server grpc://buildgrid:50051 --jobs 4`. Builds send actions
    /// with `--remote-executor`; results are signed with CBUILD_REMOTE_SIGNING_KEY.
    Worker(commands::worker::WorkerArgs),
    /// Rebuild on every change (file-system events, no rescan) and say how long it took; with
    /// --run, run the image and restart it when it changed: `cbuild watch --run //services/api:image`.
    Watch(commands::watch::WatchArgs),
    /// Move app images onto a new run image without rebuilding: `cbuild rebase //...` after a
    /// stack's run image changed, or `cbuild rebase REF --run-image REF` for an image in a registry.
    Rebase(commands::rebase::RebaseArgs),
    /// Build an image target and load it into the local Docker or Podman image store, tagged:
    /// `cbuild load //tools:tool`, then `docker run cbuild.local/tools/tool`.
    Load(commands::load_image::LoadArgs),
    /// List the targets whose inputs changed since a git revision (or in paths given on stdin)
    ///
    /// CI then builds and pushes only those. A target is listed when a file it reads changed
    /// (added, modified, deleted; symlinks followed), when its package's BUILD.star or a .star
    /// file the package loads changed, when a file appeared or disappeared where one of its
    /// package's glob()s looks, or when a dependency is listed. A change of cbuild.toml lists
    /// every target; a file no target reads lists none.
    ///
    /// Examples:
    ///   cbuild affected --base origin/main
    ///   cbuild affected --base HEAD~1 //services/... --output json
    ///   git diff --name-only main | cbuild affected --files
    #[command(verbatim_doc_comment)]
    Affected(commands::affected::AffectedArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    ///
    /// Examples:
    ///   cbuild completions bash > ~/.local/share/bash-completion/completions/cbuild
    ///   cbuild completions zsh > ~/.zfunc/_cbuild     (with fpath+=(~/.zfunc) in ~/.zshrc)
    ///   cbuild completions fish > ~/.config/fish/completions/cbuild.fish
    #[command(verbatim_doc_comment)]
    Completions(commands::completions::CompletionsArgs),
    /// Print the manual page (roff): `cbuild man > cbuild.1`, `cbuild man build`, or write every
    /// page with `cbuild man --dir /usr/local/share/man/man1`.
    Man(commands::man::ManArgs),
}

/// Entry point of the binary. Never panics on user input; the exit code is the failure's
/// [`ErrorKind`](crate::model::error::ErrorKind) code (README › Exit codes).
pub fn main() -> ExitCode {
    // Files cbuild creates (scratch trees the sandbox user must read, layouts, the cache) and what
    // sandboxes write must not depend on the caller's umask: 077 made /workspace unreadable to
    // buildpacks, 002 made layer files group-writable. Like a container engine, cbuild uses 022.
    // SAFETY: umask(2) has no preconditions and cannot fail.
    unsafe { libc::umask(0o022) };
    let args = shorthand(std::env::args_os().collect());
    // Decided before parsing, so that help and usage errors follow `--color` and NO_COLOR too.
    let color = color::init(color::from_args(&args));
    let parsed = Cli::command().color(color).try_get_matches_from(args).and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(f) => {
            eprint!("{}", f.render());
            ExitCode::from(f.exit_code())
        }
    }
}

/// `cbuild //x:y` means `cbuild build //x:y`: insert `build` when the first positional looks like a label.
fn shorthand(mut args: Vec<OsString>) -> Vec<OsString> {
    let first_pos = args.iter().skip(1).position(|a| !a.to_string_lossy().starts_with('-')).map(|i| i + 1);
    if let Some(i) = first_pos {
        let a = args[i].to_string_lossy();
        if a.starts_with("//") || a.starts_with(':') {
            args.insert(i, "build".into());
        }
    }
    args
}

pub fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Build(a) => commands::build::run(&cli.global, a),
        Command::Test(a) => commands::test::run(&cli.global, a),
        Command::Query(a) => commands::query::run(&cli.global, a),
        Command::Explain(a) => commands::explain::run(&cli.global, a),
        Command::Cache(a) => commands::cache::run(&cli.global, a),
        Command::Run(a) => commands::run::run(&cli.global, a),
        Command::Inspect(a) => commands::inspect::run(&cli.global, a),
        Command::Sbom(a) => commands::sbom::run(&cli.global, a),
        Command::Export(a) => commands::export::run(&cli.global, a),
        Command::Push(a) => commands::push::run(&cli.global, a),
        Command::Lock(a) => commands::lock::run(&cli.global, a),
        Command::Watch(a) => commands::watch::run(&cli.global, a),
        Command::Verify(a) => commands::verify::run(&cli.global, a),
        Command::Worker(a) => commands::worker::run(&cli.global, a),
        Command::Rebase(a) => commands::rebase::run(&cli.global, a),
        Command::Load(a) => commands::load_image::run(&cli.global, a),
        Command::Affected(a) => commands::affected::run(&cli.global, a),
        Command::Completions(a) => commands::completions::run(a, Cli::command()),
        Command::Man(a) => commands::man::run(a, Cli::command()),
    }
}
