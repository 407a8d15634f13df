//! Temp files of interrupted writes, swept when the cache is opened (and by `cache gc`).

use std::fs;
use std::path::Path;

use crate::cas::{temp_owner, TempOwner};

/// Removes temp files of interrupted writes (`kill -9`, a crash) from the cache in `dir`: the
/// `.tmp-*` files of `cas/sha256/` and the entries of `tmp/`. `alone`: the caller holds the cache's
/// use lock exclusively (no other process has it open), so every temp file is a leftover except a
/// CAS temp file whose name says its writer process exists ([`TempOwner::Alive`]: kept, e.g. a
/// process about to open the cache). Not alone: only CAS temp files whose writer is provably gone
/// ([`TempOwner::Dead`]). Best effort (errors are ignored: a file that cannot be removed now is
/// retried by the next open); returns how many entries were removed.
pub(crate) fn sweep_temp_files(dir: &Path, alone: bool) -> u64 {
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(dir.join("cas").join("sha256")) {
        for ent in rd.flatten() {
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if !name.starts_with(".tmp-") {
                continue;
            }
            let go = match temp_owner(&name) {
                TempOwner::Dead => true,
                TempOwner::Unknown => alone,
                TempOwner::Alive => false,
            };
            if go && ent.file_type().is_ok_and(|t| !t.is_dir()) && fs::remove_file(ent.path()).is_ok() {
                n += 1;
            }
        }
    }
    if alone {
        if let Ok(rd) = fs::read_dir(dir.join("tmp")) {
            for ent in rd.flatten() {
                if temp_owner(&ent.file_name().to_string_lossy()) == TempOwner::Alive {
                    continue;
                }
                let is_dir = ent.file_type().is_ok_and(|t| t.is_dir());
                let r = if is_dir { fs::remove_dir_all(ent.path()) } else { fs::remove_file(ent.path()) };
                n += u64::from(r.is_ok());
            }
        }
    }
    n
}
