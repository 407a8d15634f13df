//! Action results (`actions` + `action_blobs`), blob last-use (`blobs`) and the diff_id →
//! compressed-layer mapping (`layer_compression`). Result JSON is opaque here; only the blob
//! digests it references are known, so a hit is never returned with a blob missing.

use std::time::SystemTime;

use rusqlite::{params, OptionalExtension};

use super::db::{from_ms, now_ms};
use super::error::{CacheError, Result};
use super::Cache;
use crate::cas::CasError;
use crate::model::digest::{Blake3, Digest};

/// `get_action` refreshes `last_used_at` only when it is older than this, so a no-op build of a
/// thousand actions does not write a thousand rows every time.
const TOUCH_INTERVAL_MS: i64 = 60_000;

/// A stored action result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionEntry {
    /// The action key.
    pub key: Blake3,
    /// The action kind (`layer`, `cnb_build`, ...).
    pub kind: String,
    /// The label of the target the action belongs to.
    pub label: String,
    /// The runner's result, opaque to the cache.
    pub result_json: String,
    /// Blobs the result references; all existed in the CAS when the entry was returned.
    pub blobs: Vec<Digest>,
    /// When the entry was (last) written.
    pub created_at: SystemTime,
    /// When the entry was last read or written (to within a minute).
    pub last_used_at: SystemTime,
}

/// How an uncompressed layer (its diff_id) was compressed once already.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressedLayer {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// The compression (`gzip`, `zstd`; the caller's vocabulary).
    pub compression: String,
    /// sha256 of the compressed blob, stored in the CAS.
    pub digest: Digest,
    /// Size of the compressed blob.
    pub size: u64,
    /// OCI media type of the compressed layer.
    pub media_type: String,
}

fn parse_digests(rows: Vec<String>) -> Option<Vec<Digest>> {
    rows.iter().map(|s| Digest::parse(s).ok()).collect()
}

impl Cache {
    /// Looks up an action result. A hit requires the entry to parse and every blob it references
    /// to exist in the CAS (existence only, cheap); anything else is a miss (`Ok(None)`).
    ///
    /// Blob *contents* are not re-hashed here: the caller verifies a blob as it reads it
    /// ([`crate::cas::BlobDir::read_verified`] / [`crate::cas::BlobDir::verify`]) and on
    /// failure calls [`Cache::remove_action`], or calls [`Cache::verify_action_blobs`] first.
    pub fn get_action(&self, key: &Blake3) -> Result<Option<ActionEntry>> {
        let hex = key.to_hex();
        let row = self.db.read(
            || format!("reading action `{hex}`"),
            |tx| {
                let row = tx
                    .prepare_cached(
                        "SELECT kind, label, result_json, created_at, last_used_at FROM actions WHERE key = ?1",
                    )?
                    .query_row([&hex], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    })
                    .optional()?;
                let Some(row) = row else { return Ok(None) };
                let blobs = tx
                    .prepare_cached("SELECT digest FROM action_blobs WHERE key = ?1")?
                    .query_map([&hex], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?;
                Ok(Some((row, blobs)))
            },
        )?;
        let Some(((kind, label, result_json, created, used), blobs)) = row else {
            return Ok(None);
        };
        // The stored components (what `explain` and a remote upload show) are not read on a hit:
        // nothing on that path uses them, and at 100,000 files their JSON and parsed maps were
        // ≈ 20 MB of a no-op build's peak (issue 23).
        let Some(blobs) = parse_digests(blobs) else {
            // Unreadable entries cannot come from this schema version; drop rather than misread.
            self.remove_action(key)?;
            return Ok(None);
        };
        if blobs.iter().any(|d| !self.cas.contains(d)) {
            return Ok(None);
        }
        let now = now_ms();
        if now - used > TOUCH_INTERVAL_MS {
            self.db.write(
                || format!("touching action `{hex}`"),
                |tx| {
                    tx.prepare_cached("UPDATE actions SET last_used_at = ?2 WHERE key = ?1")?.execute(params![hex, now])
                },
            )?;
        }
        Ok(Some(ActionEntry {
            key: *key,
            kind,
            label,
            result_json,
            blobs,
            created_at: from_ms(created),
            last_used_at: from_ms(used.max(now)),
        }))
    }

    /// Marks the entries under `keys` used now (one transaction), as [`Cache::get_action`] does
    /// for a hit: what a no-op answered from its record (`cli::noop`) used stays in `gc`'s LRU order.
    pub fn touch_actions(&self, keys: &[Blake3]) -> Result<()> {
        let now = now_ms();
        self.db.write(
            || "marking cached actions used".into(),
            |tx| {
                let mut st = tx.prepare_cached("UPDATE actions SET last_used_at = ?2 WHERE key = ?1")?;
                for k in keys {
                    st.execute(params![k.to_hex(), now])?;
                }
                Ok(())
            },
        )
    }

    /// Records an action result, replacing any entry under the same key, in one transaction.
    /// Every digest in `blobs` must already be in the CAS (checked inside the transaction, so a
    /// concurrent `gc` cannot leave the entry pointing at a deleted blob).
    ///
    /// The key's readable components are not stored here: nothing reads them from an action
    /// entry (a hit needs its result and blobs); the run history keeps them for `explain`, and a
    /// remote upload takes them from the build. Their JSON is ≈ 10 MB for a 100,000-file layer
    /// (issue 23, peak RSS). The column stays (the schema is unchanged) and holds `{}`.
    pub fn put_action(&self, key: &Blake3, kind: &str, label: &str, result_json: &str, blobs: &[Digest]) -> Result<()> {
        let hex = key.to_hex();
        let components_json = "{}";
        let mut missing = None;
        let now = now_ms();
        self.db.write(
            || format!("storing action `{hex}`"),
            |tx| {
                let mut sizes = Vec::with_capacity(blobs.len());
                for d in blobs {
                    match self.cas.size(d) {
                        Ok(n) => sizes.push(n),
                        Err(_) => {
                            missing = Some(d.clone());
                            return Ok(());
                        }
                    }
                }
                tx.prepare_cached(
                    "INSERT INTO actions(key, kind, label, result_json, components_json, \
                     created_at, last_used_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) \
                     ON CONFLICT(key) DO UPDATE SET kind = excluded.kind, label = excluded.label, \
                     result_json = excluded.result_json, components_json = \
                     excluded.components_json, created_at = excluded.created_at, last_used_at = \
                     excluded.last_used_at",
                )?
                .execute(params![hex, kind, label, result_json, components_json, now])?;
                tx.prepare_cached("DELETE FROM action_blobs WHERE key = ?1")?.execute([&hex])?;
                let mut link = tx.prepare_cached("INSERT OR IGNORE INTO action_blobs(key, digest) VALUES (?1, ?2)")?;
                let mut blob = tx.prepare_cached(
                    "INSERT INTO blobs(digest, size, last_used_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(digest) DO UPDATE SET size = excluded.size, \
                     last_used_at = excluded.last_used_at",
                )?;
                for (d, size) in blobs.iter().zip(sizes) {
                    let ds = d.to_string();
                    link.execute(params![hex, ds])?;
                    blob.execute(params![ds, size as i64, now])?;
                }
                Ok(())
            },
        )?;
        match missing {
            Some(digest) => Err(CacheError::MissingBlob { key: hex, digest, dir: self.cas.root().to_path_buf() }),
            None => Ok(()),
        }
    }

    /// Deletes an action entry (e.g. after one of its blobs failed verification). Returns whether
    /// there was one.
    pub fn remove_action(&self, key: &Blake3) -> Result<bool> {
        let hex = key.to_hex();
        self.db.write(
            || format!("removing action `{hex}`"),
            |tx| {
                tx.prepare_cached("DELETE FROM action_blobs WHERE key = ?1")?.execute([&hex])?;
                Ok(tx.prepare_cached("DELETE FROM actions WHERE key = ?1")?.execute([&hex])? > 0)
            },
        )
    }

    /// Re-hashes every blob the action references. A missing or corrupt blob (which
    /// [`crate::cas::BlobDir::verify`] deletes) removes the entry and returns `Ok(false)`, so the
    /// action reruns; `Ok(true)` means the entry exists and all its blobs are intact. This reads
    /// every byte: call it when a result is about to be trusted without reading its blobs (e.g.
    /// before uploading to a remote cache), not on every hit.
    pub fn verify_action_blobs(&self, key: &Blake3) -> Result<bool> {
        let hex = key.to_hex();
        let blobs = self.db.read(
            || format!("reading blobs of action `{hex}`"),
            |tx| {
                let exists = tx
                    .prepare_cached("SELECT 1 FROM actions WHERE key = ?1")?
                    .query_row([&hex], |_| Ok(()))
                    .optional()?
                    .is_some();
                let blobs = tx
                    .prepare_cached("SELECT digest FROM action_blobs WHERE key = ?1")?
                    .query_map([&hex], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?;
                Ok(exists.then_some(blobs))
            },
        )?;
        let Some(blobs) = blobs else { return Ok(false) };
        let Some(blobs) = parse_digests(blobs) else {
            self.remove_action(key)?;
            return Ok(false);
        };
        for d in &blobs {
            match self.cas.verify(d) {
                Ok(()) => {}
                Err(CasError::Missing { .. } | CasError::Corrupt { .. }) => {
                    self.remove_action(key)?;
                    return Ok(false);
                }
                Err(source) => return Err(CacheError::Cas { dir: self.cas.root().to_path_buf(), source }),
            }
        }
        Ok(true)
    }

    /// Every stored action key (for `cbuild cache` tooling and tests).
    pub fn action_keys(&self) -> Result<Vec<Blake3>> {
        let rows = self.db.read(
            || "listing actions".into(),
            |tx| {
                tx.prepare("SELECT key FROM actions ORDER BY key")?
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()
            },
        )?;
        Ok(rows.iter().filter_map(|s| Blake3::from_hex(s)).collect())
    }

    /// Marks blobs as used now (inserting them into the `blobs` table if new), so `gc` keeps
    /// recently used blobs that no action references yet (e.g. pulled base layers). Digests not
    /// in the CAS are skipped.
    pub fn touch_blobs(&self, digests: &[Digest]) -> Result<()> {
        let present: Vec<(String, u64)> =
            digests.iter().filter_map(|d| self.cas.size(d).ok().map(|n| (d.to_string(), n))).collect();
        if present.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        self.db.write(
            || format!("touching {} blobs", present.len()),
            |tx| {
                let mut st = tx.prepare_cached(
                    "INSERT INTO blobs(digest, size, last_used_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(digest) DO UPDATE SET last_used_at = excluded.last_used_at",
                )?;
                for (d, n) in &present {
                    st.execute(params![d, *n as i64, now])?;
                }
                Ok(())
            },
        )
    }

    /// The compressed form of an uncompressed layer, if it was made before and its blob is still
    /// in the CAS, intact: the blob is re-hashed (a damaged one is removed and this is a miss), as a
    /// new action result will reference it without reading it again. Still far cheaper than
    /// compressing.
    pub fn get_layer_compression(&self, diff_id: &Digest, compression: &str) -> Result<Option<CompressedLayer>> {
        let id = diff_id.to_string();
        let row = self.db.read(
            || format!("reading the compressed form of layer `{id}`"),
            |tx| {
                tx.prepare_cached(
                    "SELECT digest, size, media_type FROM layer_compression \
                     WHERE diff_id = ?1 AND compression = ?2",
                )?
                .query_row(params![id, compression], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
                })
                .optional()
            },
        )?;
        let Some((digest, size, media_type)) = row else {
            return Ok(None);
        };
        let Ok(digest) = Digest::parse(&digest) else {
            return Ok(None);
        };
        match self.cas.verify(&digest) {
            Ok(()) => {}
            Err(CasError::Missing { .. } | CasError::Corrupt { .. }) => return Ok(None),
            Err(source) => return Err(CacheError::Cas { dir: self.cas.root().to_path_buf(), source }),
        }
        Ok(Some(CompressedLayer {
            diff_id: diff_id.clone(),
            compression: compression.to_string(),
            digest,
            size: size as u64,
            media_type,
        }))
    }

    /// Records how a layer was compressed. The compressed blob must already be in the CAS.
    pub fn put_layer_compression(&self, layer: &CompressedLayer) -> Result<()> {
        let id = layer.diff_id.to_string();
        let digest = layer.digest.to_string();
        let now = now_ms();
        let mut present = true;
        self.db.write(
            || format!("storing the compressed form of layer `{id}`"),
            |tx| {
                if !self.cas.contains(&layer.digest) {
                    present = false;
                    return Ok(());
                }
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO layer_compression(diff_id, compression, digest, size, \
                     media_type) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    id,
                    layer.compression,
                    digest,
                    layer.size as i64,
                    layer.media_type
                ])?;
                tx.prepare_cached(
                    "INSERT INTO blobs(digest, size, last_used_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(digest) DO UPDATE SET last_used_at = excluded.last_used_at",
                )?
                .execute(params![digest, layer.size as i64, now])?;
                Ok(())
            },
        )?;
        if present {
            Ok(())
        } else {
            Err(CacheError::MissingBlob {
                key: format!("layer {id}"),
                digest: layer.digest.clone(),
                dir: self.cas.root().to_path_buf(),
            })
        }
    }
}
