//! Where blobs were pushed: (digest → registry, repository) rows, so a later push to another
//! repository of the same registry can mount a blob instead of uploading it.

use rusqlite::params;

use super::{Cache, Result};
use crate::model::digest::{Blake3, Digest};

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

    /// Whether this cache uploaded (or found) the entry of `key` on the remote cache `remote`.
    pub fn remote_has(&self, key: &Blake3, remote: &str) -> Result<bool> {
        self.db.read(
            || format!("reading remote entry `{key}`"),
            |tx| {
                let mut st = tx.prepare_cached("SELECT 1 FROM remote_entries WHERE key = ?1 AND remote = ?2")?;
                st.exists(params![key.to_hex(), remote])
            },
        )
    }

    /// Records that the remote cache `remote` has the entry of `key`.
    pub fn mark_remote_has(&self, key: &Blake3, remote: &str) -> Result<()> {
        self.db.write(
            || format!("recording remote entry `{key}`"),
            |tx| {
                tx.prepare_cached("INSERT OR IGNORE INTO remote_entries(key, remote) VALUES (?1, ?2)")?
                    .execute(params![key.to_hex(), remote])?;
                Ok(())
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

    #[test]
    fn remembers_remote_entries_per_remote() {
        let t = tempfile::tempdir().unwrap();
        let c = Cache::open(t.path()).unwrap();
        let k = Blake3::of_bytes(b"k");
        assert!(!c.remote_has(&k, "http://a").unwrap());
        c.mark_remote_has(&k, "http://a").unwrap();
        c.mark_remote_has(&k, "http://a").unwrap();
        assert!(c.remote_has(&k, "http://a").unwrap());
        assert!(!c.remote_has(&k, "http://b").unwrap());
    }
}
