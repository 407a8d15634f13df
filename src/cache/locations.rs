//! Where blobs were pushed: (digest → registry, repository) rows, so a later push to another
//! repository of the same registry can mount a blob instead of uploading it.

use rusqlite::params;

use super::{Cache, Result};
use crate::model::digest::Digest;

impl Cache {
    /// Records that `digests` now exist in `registry/repository`.
    pub fn record_blob_locations(&self, registry: &str, repository: &str, digests: &[Digest]) -> Result<()> {
        self.db.write(
            || format!("recording {} blob locations in `{registry}/{repository}`", digests.len()),
            |tx| {
                let mut st = tx.prepare_cached(
                    "INSERT OR IGNORE INTO blob_locations(digest, registry, repository) VALUES (?1, ?2, ?3)",
                )?;
                for d in digests {
                    st.execute(params![d.to_string(), registry, repository])?;
                }
                Ok(())
            },
        )
    }

    /// Repositories of `registry` known to hold any of `digests` (sorted, unique).
    pub fn blob_locations(&self, registry: &str, digests: &[Digest]) -> Result<Vec<String>> {
        self.db.read(
            || format!("reading blob locations in `{registry}`"),
            |tx| {
                let mut st =
                    tx.prepare_cached("SELECT repository FROM blob_locations WHERE digest = ?1 AND registry = ?2")?;
                let mut out = std::collections::BTreeSet::new();
                for d in digests {
                    for r in st.query_map(params![d.to_string(), registry], |r| r.get::<_, String>(0))? {
                        out.insert(r?);
                    }
                }
                Ok(out.into_iter().collect())
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_finds_locations() {
        let t = tempfile::tempdir().unwrap();
        let c = Cache::open(t.path()).unwrap();
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        c.record_blob_locations("reg:5000", "team/base", &[a.clone(), b.clone()]).unwrap();
        c.record_blob_locations("reg:5000", "team/app", std::slice::from_ref(&a)).unwrap();
        c.record_blob_locations("other", "x/y", std::slice::from_ref(&b)).unwrap();
        assert_eq!(c.blob_locations("reg:5000", std::slice::from_ref(&a)).unwrap(), vec!["team/app", "team/base"]);
        assert_eq!(c.blob_locations("reg:5000", &[b]).unwrap(), vec!["team/base"]);
        assert!(c.blob_locations("nowhere", &[a]).unwrap().is_empty());
    }
}
