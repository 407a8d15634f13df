//! `cbuild cache stats | gc [--max-size SIZE] [--older-than DURATION] | clean | keygen [FILE]`.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::cache::{parse_duration, parse_size, Cache};
use crate::cli::output::Failure;
use crate::cli::settings::{GlobalArgs, Settings};

#[derive(Args, Debug)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub cmd: CacheCmd,
}

#[derive(Subcommand, Debug)]
pub enum CacheCmd {
    /// Entries, blobs and bytes in the local cache.
    Stats,
    /// Delete least-recently-used entries and unreferenced blobs.
    Gc {
        /// Shrink the cache below this size, e.g. 10GB, 500MiB.
        #[arg(long)]
        max_size: Option<String>,
        /// Delete entries not used for this long, e.g. 7d, 12h.
        #[arg(long)]
        older_than: Option<String>,
    },
    /// Delete the whole local cache.
    Clean,
    /// Create a key pair for signing remote-cache entries; prints the public key
    ///
    /// Give the private key file to trusted writers only (CBUILD_REMOTE_SIGNING_KEY=FILE, e.g. CI
    /// on the main branch) and the public key to every reader (CBUILD_REMOTE_TRUSTED_KEYS or
    /// `remote_trusted_keys` in the `[cache]` table of cbuild.toml). Never overwrites a file.
    #[command(verbatim_doc_comment)]
    Keygen {
        /// Where to write the private key (PKCS#8 PEM, mode 0600); the public key goes to FILE.pub.
        #[arg(value_name = "FILE", default_value = "cbuild-remote-signing.pem")]
        file: std::path::PathBuf,
    },
}

fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

pub fn run(g: &GlobalArgs, a: CacheArgs) -> Result<ExitCode, Failure> {
    if let CacheCmd::Keygen { file } = &a.cmd {
        // Needs no workspace: keys are made once, anywhere, and handed to the runners.
        let file = match &g.directory {
            Some(d) if file.is_relative() => d.join(file),
            _ => file.clone(),
        };
        let k = crate::remote::signing::write_new_key_pair(&file).map_err(Failure::user)?;
        if g.json {
            println!(
                "{}",
                serde_json::json!({"private_key": k.private, "public_key_file": k.public_file, "public_key": k.public.to_base64()})
            );
        } else {
            println!("{}", k.public);
            if !g.quiet {
                eprintln!(
                    "wrote the private key to {} and the public key to {}\n\
                     writers (trusted runners only): {}={}\n\
                     readers: {}={} (or `remote_trusted_keys` in the [cache] table of cbuild.toml)",
                    k.private.display(),
                    k.public_file.display(),
                    crate::remote::SIGNING_KEY_ENV,
                    k.private.display(),
                    crate::remote::TRUSTED_KEYS_ENV,
                    k.public,
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let s = Settings::resolve(g)?;
    match a.cmd {
        CacheCmd::Stats => {
            let c = Cache::open(&s.cache_dir).map_err(Failure::env)?;
            let st = c.stats().map_err(Failure::env)?;
            if s.json {
                println!(
                    "{}",
                    serde_json::json!({"dir": s.cache_dir, "actions": st.actions, "blobs": st.blobs, "blob_bytes": st.blob_bytes, "db_bytes": st.db_bytes})
                );
            } else {
                println!("cache:   {}", s.cache_dir.display());
                println!("actions: {}", st.actions);
                println!("blobs:   {} ({})", st.blobs, human(st.blob_bytes));
                println!("db:      {}", human(st.db_bytes));
            }
        }
        CacheCmd::Gc { max_size, older_than } => {
            let max = max_size.as_deref().map(parse_size).transpose().map_err(|e| Failure::user(e.to_string()))?;
            let older =
                older_than.as_deref().map(parse_duration).transpose().map_err(|e| Failure::user(e.to_string()))?;
            if max.is_none() && older.is_none() {
                return Err(Failure::user_hint(
                    "`cache gc` needs --max-size or --older-than",
                    "e.g. cbuild cache gc --max-size 10GB",
                ));
            }
            let c = Cache::open(&s.cache_dir).map_err(Failure::env)?;
            let r = c.gc(max, older).map_err(Failure::env)?;
            println!("removed {} actions and {} blobs ({})", r.actions_removed, r.blobs_removed, human(r.bytes_freed));
            // The build images' root file systems extracted for sandboxes, by the same rules.
            let sr = crate::execution::scratch_gc::gc(max, older).map_err(Failure::env)?;
            println!(
                "removed {} extracted build-image root file systems ({}); kept {} ({}, or used within {} h)",
                sr.removed,
                human(sr.bytes_freed),
                sr.kept,
                human(sr.bytes_kept),
                crate::execution::scratch_gc::IN_USE.as_secs() / 3600
            );
        }
        CacheCmd::Clean => {
            Cache::clean(&s.cache_dir).map_err(Failure::env)?;
            println!("removed {}", s.cache_dir.display());
        }
        CacheCmd::Keygen { .. } => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}
