//! `cbuild worker --server grpc://…`: a Remote Workers API bot for an existing REAPI engine
//! (BuildGrid) that runs cbuild's remote actions (see `execution::worker`). Needs no workspace.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::cli::output::Failure;
use crate::cli::settings::GlobalArgs;

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The engine's Bots and CAS endpoint: `grpc(s)://host:port[/instance]`.
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// Actions run at once (the bot's capacity) [default: number of cores].
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Where action workspaces are made [default: CACHE_DIR/worker].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// The bot's name (in the server's records and in builds' `--json` summary)
    /// [default: HOSTNAME-PID].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Print one line per action.
    #[arg(long, short)]
    pub verbose: bool,
}

pub fn run(g: &GlobalArgs, a: WorkerArgs) -> Result<ExitCode, Failure> {
    use crate::remote::{RemoteAuth, RemoteCache, RemoteMode, SigningKey, Timeouts};
    if !(a.server.starts_with("grpc://") || a.server.starts_with("grpcs://")) {
        return Err(Failure::user(format!(
            "--server `{}`: the Remote Workers API is gRPC; use grpc://host:port or grpcs://host:port",
            a.server
        )));
    }
    let env = |k: &str| crate::env::var(k).filter(|v| !v.is_empty());
    let key_file = env(crate::remote::SIGNING_KEY_ENV).ok_or_else(|| {
        Failure::user_hint(
            format!(
                "a worker stores its results in the remote cache and signs them: set {}",
                crate::remote::SIGNING_KEY_ENV
            ),
            "make a key with `cbuild cache keygen`, and give its public key to the builds (CBUILD_REMOTE_TRUSTED_KEYS)",
        )
    })?;
    let key = SigningKey::from_file(std::path::Path::new(&key_file))
        .map_err(|e| Failure::user(format!("{}: {e}", crate::remote::SIGNING_KEY_ENV)))?;
    crate::execution::sandbox::check_available().map_err(|e| Failure::Environment {
        error: e.into(),
        hints: vec!["install bubblewrap: apt-get install bubblewrap".into()],
    })?;
    let instance = g.remote_instance_name.clone().or_else(|| env("CBUILD_REMOTE_INSTANCE_NAME"));
    let mut headers =
        crate::cli::settings::parse_headers(g.remote_headers.iter().map(String::as_str), "--remote-header")?;
    if let Some(v) = env("CBUILD_REMOTE_HEADERS") {
        headers.extend(crate::cli::settings::parse_headers(v.lines(), "CBUILD_REMOTE_HEADERS")?);
    }
    let auth = RemoteAuth::from_env().map_err(|e| Failure::user(format!("worker credentials: {e}")))?;
    let mut grpc_headers = headers.clone();
    if let Some(v) = auth.header_value() {
        grpc_headers.push(("authorization".into(), v));
    }
    let timeouts = Timeouts::default();
    let grpc = crate::remote::grpc::Grpc::new(&a.server, instance.as_deref(), &grpc_headers, timeouts)
        .map_err(|e| Failure::user(format!("--server: {e}")))?;
    let (url, inst, hs) = (a.server.clone(), instance.clone(), headers.clone());
    let key = Arc::new(key);
    let remote = Box::new(move || {
        let r = RemoteCache::new(&url, RemoteMode::ReadWrite, RemoteAuth::from_env()?, timeouts)?
            .with_options(inst.as_deref(), &hs)?;
        // Workers sharing the key trust each other's entries (a target's CNB cache state written
        // by one is restored by the next), and nothing else.
        let public = key.public_key();
        Ok(r.with_shared_signing_key(key.clone()).with_trusted_keys(vec![public]))
    });
    let cache_dir = g
        .cache_dir
        .clone()
        .or_else(|| env("CBUILD_CACHE_DIR").map(PathBuf::from))
        .unwrap_or_else(crate::cli::settings::default_cache_dir);
    let cache = Arc::new(crate::cache::Cache::open(&cache_dir).map_err(|e| Failure::Environment {
        error: e.into(),
        hints: vec![format!("check that `{}` is writable, or pass --cache-dir", cache_dir.display())],
    })?);
    let jobs = a.jobs.or(g.jobs).unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    if jobs == 0 {
        return Err(Failure::user("`--jobs` must be at least 1"));
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let cfg = crate::execution::worker::WorkerConfig {
        grpc,
        remote,
        cache,
        work_dir: a.work_dir.unwrap_or_else(|| cache_dir.join("worker")),
        bot_id: a.name.unwrap_or_else(|| format!("{host}-{}", std::process::id())),
        jobs,
        verbose: a.verbose,
    };
    if !g.quiet {
        eprintln!("cbuild worker `{}`: {} action(s) at once, server `{}`", cfg.bot_id, jobs, a.server);
    }
    crate::execution::worker::run(cfg).map_err(|e| Failure::env(anyhow::anyhow!(e)))?;
    Ok(ExitCode::SUCCESS)
}
