//! `cbuild cache stats | gc [--max-size SIZE] [--older-than DURATION] | clean`.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::cache::{parse_duration, parse_size, Cache};
use crate::cli::settings::Settings;
use crate::cli::{Failure, GlobalArgs};

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
        }
        CacheCmd::Clean => {
            Cache::clean(&s.cache_dir).map_err(Failure::env)?;
            println!("removed {}", s.cache_dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
