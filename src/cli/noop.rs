//! The no-op record of `cbuild build`: a build with nothing to do answered by `stat`ing what the
//! last identical build read, as ninja answers "no work to do" from its log, without loading a
//! BUILD file, computing a key or asking the cache for one.
//!
//! After a successful `cbuild build` (no push, no remote cache or executor, no `--stamp`) cbuild
//! writes, under `<cache>/noop/`, one record per command (workspace root, working directory,
//! arguments):
//! * what it ran as: this binary's stamp, the arguments, the working directory and the whole
//!   environment (a fingerprint: any difference and the record is not used);
//! * every input, stamped *before* it was read: the workspace's `cbuild.toml`, each `BUILD.star`
//!   and `.star` file, each directory listing (package discovery and globs), the files analysis
//!   reads (builder and project TOML files, `--env-file`), every source with each directory above
//!   it (the symlink checks), through [`crate::fs::reads`] and the build's
//!   [`Sources`](crate::execution::sources::Sources);
//! * every file and directory of the requested images' layouts and referrers (`cbuild-out/`), as
//!   the build left them;
//! * the cache's instance id and [generation](crate::cache::Cache::generation): any action entry
//!   added, changed or removed, or blob removed, since (another build, `gc`, `clean`) and the
//!   record is not used;
//! * the summary: the actions' names and the images' digests.
//!
//! The next identical `cbuild build` `stat`s all of it; when every stamp, the fingerprint and the
//! cache generation are equal it prints what the build would print (every action a local cache
//! hit) and stops. Otherwise it builds as always. A record is written only when it can be
//! trusted: every action cacheable (no tag that can move), none whose key reads outside the
//! sources (a `debian_image` lock, an imported layout, `cnb_image` bindings), and no input
//! modified within [`RACY_WINDOW`](crate::cache::RACY_WINDOW) of the build's start (a change in
//! the same clock tick as the stamp would keep it: the "racy git" problem). Stamps compare
//! inode, size, mtime, ctime and mode (a ctime cannot be set back by a user), as the stat cache
//! and the source checks do.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use crate::cli::commands::session::{print_notes, print_report, Built};
use crate::cli::settings::Settings;
use crate::execution::{self, BuildReport, Event, Outcome};
use crate::fs::reads::Stamp;
use crate::fs::stat::FileStat;
use crate::model::action::ActionKind;
use crate::model::digest::Blake3;

const MAGIC: &[u8] = b"cbuild no-op record 3\n";
const DIR: &str = "noop";
/// Records kept per cache (the most recently written): one per command line and directory.
const KEEP: usize = 16;

/// One stamped path: (path, read through links?, its stamp or absent).
type Entry = (PathBuf, bool, Option<Stamp>);

/// A record's fixed part; its stamped paths follow in the file (outputs, then inputs with the
/// most recently changed first, so an edit is found after few `stat`s), checked as they are read.
struct Head {
    /// The environment variables the build read by name (beyond [`crate::env::KNOWN`] and the
    /// `CBUILD_` ones), whose values the fingerprint covers.
    env_names: Vec<String>,
    fingerprint: [u8; 32],
    instance: String,
    generation: String,
    /// Every action's (label, mnemonic), in graph order.
    actions: Vec<(String, String)>,
    /// (label, manifest digest, layout dir) of every requested image.
    images: Vec<(String, String, String)>,
    /// Analysis notes (printed as the build prints them).
    notes: Vec<String>,
    /// Every action's key (marked used in the cache by an answer, as hits are).
    keys: Vec<Blake3>,
}

/// Whether these settings allow a record at all (nothing outside the workspace and the local cache
/// decides the result).
fn allowed(s: &Settings) -> bool {
    s.remote_cache.is_none() && s.remote_executor.is_none() && s.remote_headers.0.is_empty() && !s.inputs.stamp
}

/// The record file of this command (one per root, working directory and arguments: a later
/// build with another environment replaces it).
fn file_of(s: &Settings) -> PathBuf {
    let mut h = blake3::Hasher::new();
    h.update(MAGIC);
    hash_bytes(&mut h, s.root().as_os_str().as_encoded_bytes());
    hash_bytes(&mut h, s.cwd.as_os_str().as_encoded_bytes());
    for a in std::env::args_os() {
        hash_bytes(&mut h, a.as_encoded_bytes());
    }
    s.cache_dir.join(DIR).join(&h.finalize().to_hex()[..32])
}

fn hash_bytes(h: &mut blake3::Hasher, b: &[u8]) {
    h.update(&(b.len() as u64).to_le_bytes());
    h.update(b);
}

/// What this process runs as: the binary (its stamp), the arguments, the working directory and
/// the environment variables that decide a build ([`crate::env::deciding`]: those cbuild reads by
/// a fixed name, every `CBUILD_` one, and `env_names`, read by the build: `--env K`). Any other
/// variable changes nothing (hyperfine, for one, sets a random one per run); a credential counts
/// by its presence only (a record is never written with a remote cache, the only reader of one,
/// and a stored hash of a password could be guessed offline). `None` if the binary cannot be
/// stamped.
fn fingerprint(s: &Settings, env_names: &[String]) -> Option<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    h.update(MAGIC);
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    let exe = std::env::current_exe().ok()?;
    let mut st = Vec::new();
    encode_stamp(&mut st, &Some(Stamp::take(&exe, false).ok()??));
    h.update(&st);
    hash_bytes(&mut h, s.root().as_os_str().as_encoded_bytes());
    hash_bytes(&mut h, s.cwd.as_os_str().as_encoded_bytes());
    for a in std::env::args_os() {
        hash_bytes(&mut h, a.as_encoded_bytes());
    }
    // Names read but unset are part of it too (set later: another build).
    for n in env_names {
        hash_bytes(&mut h, n.as_bytes());
    }
    for (k, v) in crate::env::deciding(env_names) {
        hash_bytes(&mut h, k.as_encoded_bytes());
        hash_bytes(&mut h, v.as_encoded_bytes());
    }
    Some(*h.finalize().as_bytes())
}

/// Answers the build from its record, if every input and output is as the record says: prints
/// the summary and returns the exit code. `None`: build as usual (no record, or anything differs).
pub fn replay(s: &Settings, patterns: &[String]) -> Option<ExitCode> {
    if !allowed(s) {
        return None;
    }
    let file = file_of(s);
    let bytes = std::fs::read(&file).ok()?;
    let (head, mut rest) = decode_head(&bytes)?;
    if Some(head.fingerprint) != fingerprint(s, &head.env_names) {
        return None;
    }
    // The cache is opened (a quick check of its database) while the stamps are compared; on a
    // difference the thread is left to finish on its own.
    let dir = s.cache_dir.clone();
    let opening = std::thread::Builder::new()
        .name("cbuild-noop".into())
        .spawn(move || -> Option<(crate::cache::Cache, String, String)> {
            let c = crate::cache::Cache::open(&dir).ok()?;
            let g = c.generation().ok()?;
            let i = c.instance().ok()?.to_string();
            Some((c, g, i))
        })
        .ok()?;
    let root = s.root();
    for _ in 0..2 {
        let n = rest.count(7)?;
        for _ in 0..n {
            let (p, link, st) = rest.entry(root)?;
            if !Stamp::holds(&st, &p, link) {
                return None;
            }
        }
    }
    if !rest.0.is_empty() {
        return None;
    }
    let (cache, generation, instance) = opening.join().ok()??;
    if generation != head.generation || instance != head.instance {
        return None;
    }
    let pats = super::commands::parse_patterns(s, patterns).ok()?;
    let images: Vec<_> =
        head.images.iter().map(|(l, d, p)| Some((l.clone(), d.parse().ok()?, p.clone()))).collect::<Option<_>>()?;
    print_notes(s, &pats, &head.notes);
    let reporter: Box<dyn execution::Reporter> =
        super::progress::Tee::wrap(super::progress::reporter(s.json, s.quiet), &root.join("cbuild-out/logs/build.log"));
    for w in cache.warnings() {
        reporter.event(&Event::Warning { message: w.clone() });
    }
    reporter.event(&Event::Plan { actions: head.actions.len() });
    for (label, action) in &head.actions {
        reporter.event(&Event::Finished {
            label: label.clone(),
            action: action.clone(),
            outcome: Outcome::CachedLocal,
            duration: std::time::Duration::ZERO,
        });
    }
    drop(reporter);
    let report = BuildReport { cached_local: head.actions.len(), ..Default::default() };
    print_report(s, &report, head.actions.len(), &|_| String::new(), &images, &[], 0, true);
    // The entries answered are used, as hits are (at most once a minute: the record's mtime says
    // when they were last marked).
    let stale = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|e| e > std::time::Duration::from_secs(60)));
    if stale && cache.touch_actions(&head.keys).is_ok() {
        let _ = std::fs::File::options().write(true).open(&file).and_then(|f| f.set_modified(SystemTime::now()));
    }
    Some(super::output::report_exit_code(&report))
}

/// Writes the record of `built` (see the module docs for when), or removes a stale one.
/// `started`: a time before the first input was stamped; `reads`: [`crate::fs::reads::take`];
/// `env_names`: [`crate::env::read_names`].
pub fn record(built: &Built, started: SystemTime, reads: Option<Vec<Entry>>, env_names: Vec<String>) {
    if !allowed(&built.settings) {
        return;
    }
    let file = file_of(&built.settings);
    if !eligible(built) {
        let _ = std::fs::remove_file(&file);
        return;
    }
    // Streamed to a temp file in 64 KiB pieces (a 100,000-file build's record is ≈ 10 MB, never
    // in memory whole). Not fsynced: a record lost or torn by a crash is only a slower next build
    // (its checksum refuses a torn one).
    let written = (|| -> io::Result<bool> {
        let dir = file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
        let mut sink = Sink { file: io::BufWriter::new(tmp.as_file_mut()), hasher: blake3::Hasher::new(), error: None };
        if encode_record(built, started, reads, env_names, &mut sink).is_none() {
            return Ok(false);
        }
        let sum = sink.hasher.finalize();
        if let Some(e) = sink.error.take() {
            return Err(e);
        }
        io::Write::write_all(&mut sink.file, sum.as_bytes())?;
        io::Write::flush(&mut sink.file)?;
        drop(sink);
        tmp.persist(&file).map_err(|e| e.error)?;
        prune(dir);
        Ok(true)
    })();
    if !matches!(written, Ok(true)) {
        let _ = std::fs::remove_file(&file);
    }
}

/// Where a record is written: the file and the checksum of everything written so far.
struct Sink<'a> {
    file: io::BufWriter<&'a mut std::fs::File>,
    hasher: blake3::Hasher,
    error: Option<io::Error>,
}

impl Sink<'_> {
    /// Writes out `buf` (and empties it) once it holds 64 KiB, or always with `all`.
    fn drain(&mut self, buf: &mut Vec<u8>, all: bool) {
        if !all && buf.len() < 64 << 10 {
            return;
        }
        self.hasher.update(buf);
        if self.error.is_none() {
            if let Err(e) = io::Write::write_all(&mut self.file, buf) {
                self.error = Some(e);
            }
        }
        buf.clear();
    }
}

/// Removes all but the [`KEEP`] most recently written records (and temp files left by a kill).
fn prune(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut files: Vec<(SystemTime, PathBuf)> =
        rd.flatten().filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path()))).collect();
    if files.len() <= KEEP {
        return;
    }
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (_, p) in &files[KEEP..] {
        let _ = std::fs::remove_file(p);
    }
}

/// The record's bytes, or `None` when the build cannot be vouched for (see the module docs).
fn encode_record(
    built: &Built,
    started: SystemTime,
    reads: Option<Vec<Entry>>,
    env_names: Vec<String>,
    sink: &mut Sink<'_>,
) -> Option<()> {
    let (g, r, s) = (&built.graph, &built.report, &built.settings);
    let reads = reads?;
    let sources = r.sources.as_ref()?;
    let root = s.root();
    // Racy: an input changed so recently that a change in the same clock tick could keep its stamp.
    let racy_after = started.checked_sub(crate::cache::RACY_WINDOW)?;
    let racy_ns = racy_after.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_nanos() as i128;
    let changed = |st: &FileStat| st.mtime_ns.max(st.ctime_ns);
    // Sources by recency (index, not a copy: a 100,000-file build's record costs no extra peak).
    let mut order: Vec<(i128, u32)> = Vec::with_capacity(sources.len());
    for (i, (_, st)) in sources.stamps().enumerate() {
        let st = st?;
        order.push((changed(&st.file_stat()), u32::try_from(i).ok()?));
    }
    order.sort_unstable_by_key(|&(t, _)| std::cmp::Reverse(t));
    if order.first().is_some_and(|&(t, _)| t >= racy_ns)
        || reads.iter().any(|(_, _, st)| st.as_ref().is_some_and(|st| changed(&st.st) >= racy_ns))
    {
        return None;
    }
    let mut outputs = Vec::new();
    for (_, _, rel) in &built.images {
        walk(&root.join(rel), &mut outputs).ok()?;
        let referrers = root.join(crate::attest::referrers_dir(rel));
        match Stamp::take(&referrers, true).ok()? {
            Some(_) => walk(&referrers, &mut outputs).ok()?,
            None => outputs.push((referrers, true, None)),
        }
        let archive = root.join(format!("{rel}.cnb"));
        outputs.push((archive.clone(), true, Stamp::take(&archive, true).ok()?));
    }
    let head = Head {
        fingerprint: fingerprint(s, &env_names)?,
        env_names,
        instance: built.cache.instance().ok()?.to_string(),
        generation: built.cache.generation().ok()?,
        actions: g.actions.iter().map(|a| (a.label.to_string(), a.kind.mnemonic().to_string())).collect(),
        images: built.images.iter().map(|(l, d, p)| (l.clone(), d.to_string(), p.clone())).collect(),
        notes: g.notes.clone(),
        keys: r.keys.clone(),
    };
    let mut out = Vec::with_capacity(128 << 10);
    encode_head(&mut out, &head);
    out.extend_from_slice(&(outputs.len() as u64).to_le_bytes());
    for (p, link, st) in &outputs {
        encode_entry(&mut out, root, p, *link, st);
        sink.drain(&mut out, false);
    }
    out.extend_from_slice(&((reads.len() + sources.len()) as u64).to_le_bytes());
    for (p, link, st) in &reads {
        encode_entry(&mut out, root, p, *link, st);
        sink.drain(&mut out, false);
    }
    let all: Vec<_> = sources.stamps().collect();
    for &(_, i) in &order {
        let (rel, st) = all[i as usize];
        let st = st?;
        let stamp =
            Stamp { link: st.is_kept_link(), st: st.file_stat(), link_target: st.link_target().map(Into::into) };
        encode_entry(&mut out, root, &root.join(rel), stamp.link, &Some(stamp));
        sink.drain(&mut out, false);
    }
    sink.drain(&mut out, true);
    Some(())
}

/// Whether the build as a whole may be recorded: it succeeded from the local cache alone, wrote
/// every layout, and each of its actions is [`recordable`].
fn eligible(built: &Built) -> bool {
    let (g, r) = (&built.graph, &built.report);
    r.ok()
        && r.cached_remote == 0
        && built.no_layout.is_empty()
        && built.pushed == 0
        && g.not_buildable.is_empty()
        && g.actions.iter().all(recordable)
}

/// Whether an action's key reads nothing but its attributes, its sources and its dependencies'
/// outputs, and its result may be cached (see the module docs).
fn recordable(a: &crate::model::action::Action) -> bool {
    let reads_outside = match &a.kind {
        ActionKind::DebianImage(_) | ActionKind::ImportImage { .. } | ActionKind::ImageTest { .. } => true,
        ActionKind::CnbDetect(p) => !p.bindings.is_empty(),
        _ => false,
    };
    !reads_outside && crate::execution::runners::runner(&a.kind).cacheable(a)
}

/// Every entry under `dir` (itself included), `lstat`ed, links not followed.
fn walk(dir: &Path, out: &mut Vec<Entry>) -> io::Result<()> {
    out.push((dir.to_path_buf(), true, Stamp::take(dir, true)?));
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            walk(&e.path(), out)?;
        } else {
            out.push((e.path(), true, Stamp::take(&e.path(), true)?));
        }
    }
    Ok(())
}

// ---- encoding: MAGIC, head, outputs, inputs, blake3 of everything before it ----------------

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn encode_stamp(out: &mut Vec<u8>, s: &Option<Stamp>) {
    let Some(s) = s else {
        out.push(0);
        return;
    };
    out.push(1 + u8::from(s.link));
    let st = &s.st;
    for v in [st.size, st.ino, st.dev, u64::from(st.mode)] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&st.mtime_ns.to_le_bytes());
    out.extend_from_slice(&st.ctime_ns.to_le_bytes());
    match &s.link_target {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            put(out, t.as_os_str().as_encoded_bytes());
        }
    }
}

/// A path under `root` is stored relative to it (shorter records), others whole.
fn encode_entry(out: &mut Vec<u8>, root: &Path, p: &Path, link: bool, st: &Option<Stamp>) {
    match p.strip_prefix(root) {
        Ok(rel) => {
            out.push(1);
            put(out, rel.as_os_str().as_encoded_bytes());
        }
        Err(_) => {
            out.push(0);
            put(out, p.as_os_str().as_encoded_bytes());
        }
    }
    out.push(u8::from(link));
    encode_stamp(out, st);
}

fn encode_head(out: &mut Vec<u8>, h: &Head) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(h.env_names.len() as u64).to_le_bytes());
    for n in &h.env_names {
        put(out, n.as_bytes());
    }
    out.extend_from_slice(&h.fingerprint);
    put(out, h.instance.as_bytes());
    put(out, h.generation.as_bytes());
    out.extend_from_slice(&(h.actions.len() as u64).to_le_bytes());
    for (l, m) in &h.actions {
        put(out, l.as_bytes());
        put(out, m.as_bytes());
    }
    out.extend_from_slice(&(h.images.len() as u64).to_le_bytes());
    for (l, d, p) in &h.images {
        put(out, l.as_bytes());
        put(out, d.as_bytes());
        put(out, p.as_bytes());
    }
    out.extend_from_slice(&(h.notes.len() as u64).to_le_bytes());
    for n in &h.notes {
        put(out, n.as_bytes());
    }
    out.extend_from_slice(&(h.keys.len() as u64).to_le_bytes());
    for k in &h.keys {
        out.extend_from_slice(&k.0);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i128(&mut self) -> Option<i128> {
        Some(i128::from_le_bytes(self.take(16)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
    fn path(&mut self) -> Option<PathBuf> {
        use std::os::unix::ffi::OsStrExt;
        Some(PathBuf::from(std::ffi::OsStr::from_bytes(self.bytes()?)))
    }
    /// A count of items each at least `min` bytes long (a damaged count cannot allocate).
    fn count(&mut self, min: usize) -> Option<usize> {
        let n = usize::try_from(self.u64()?).ok()?;
        (n <= self.0.len() / min.max(1)).then_some(n)
    }
    fn stamp(&mut self) -> Option<Option<Stamp>> {
        let tag = self.u8()?;
        if tag == 0 {
            return Some(None);
        }
        let (size, ino, dev, mode) = (self.u64()?, self.u64()?, self.u64()?, self.u64()?);
        let (mtime_ns, ctime_ns) = (self.i128()?, self.i128()?);
        let link_target = match self.u8()? {
            0 => None,
            _ => Some(self.path()?),
        };
        let st = FileStat { size, mtime_ns, ctime_ns, ino, dev, mode: u32::try_from(mode).ok()? };
        Some(Some(Stamp { link: tag == 2, st, link_target }))
    }
    fn entry(&mut self, root: &Path) -> Option<Entry> {
        let relative = self.u8()? == 1;
        let p = self.path()?;
        let p = if relative { root.join(p) } else { p };
        Some((p, self.u8()? != 0, self.stamp()?))
    }
}

/// The head of a record whose checksum holds, and a reader at its entries.
fn decode_head(bytes: &[u8]) -> Option<(Head, Reader<'_>)> {
    let (body, sum) = bytes.split_at(bytes.len().checked_sub(32)?);
    if blake3::hash(body).as_bytes() != sum || !body.starts_with(MAGIC) {
        return None;
    }
    let mut r = Reader(&body[MAGIC.len()..]);
    let n = r.count(4)?;
    let env_names = (0..n).map(|_| r.string()).collect::<Option<_>>()?;
    let fingerprint = r.take(32)?.try_into().ok()?;
    let (instance, generation) = (r.string()?, r.string()?);
    let n = r.count(8)?;
    let actions = (0..n).map(|_| Some((r.string()?, r.string()?))).collect::<Option<_>>()?;
    let n = r.count(12)?;
    let images = (0..n).map(|_| Some((r.string()?, r.string()?, r.string()?))).collect::<Option<_>>()?;
    let n = r.count(4)?;
    let notes = (0..n).map(|_| r.string()).collect::<Option<_>>()?;
    let n = r.count(32)?;
    let keys = (0..n).map(|_| Some(Blake3(r.take(32)?.try_into().ok()?))).collect::<Option<_>>()?;
    Some((Head { env_names, fingerprint, instance, generation, actions, images, notes, keys }, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_a_damaged_one_is_refused() {
        let root = std::env::temp_dir();
        let head = Head {
            env_names: vec!["MY_VAR".into()],
            fingerprint: [7; 32],
            instance: "abc".into(),
            generation: "id:3".into(),
            actions: vec![("//a:b".into(), "layer".into())],
            images: vec![("//a:b".into(), format!("sha256:{}", "0".repeat(64)), "cbuild-out/a/b".into())],
            notes: vec!["`//a:b`: a note".into()],
            keys: vec![Blake3([9; 32])],
        };
        let link = Stamp {
            link: false,
            st: FileStat { size: 1, mtime_ns: -5, ctime_ns: 1 << 70, ino: 2, dev: 3, mode: 0o120777 },
            link_target: Some("t".into()),
        };
        let entries: Vec<Entry> = vec![
            (root.clone(), false, Stamp::take(&root, false).unwrap()),
            (root.join("no such file"), true, None),
            ("/elsewhere/l".into(), false, Some(link)),
        ];
        let mut out = Vec::new();
        encode_head(&mut out, &head);
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for (p, l, st) in &entries {
            encode_entry(&mut out, &root, p, *l, st);
        }
        out.extend_from_slice(blake3::hash(&out).as_bytes());
        let (back, mut rest) = decode_head(&out).expect("decodes");
        assert_eq!(
            (back.fingerprint, back.instance, back.generation),
            (head.fingerprint, head.instance, head.generation)
        );
        assert_eq!((back.env_names, back.keys), (head.env_names, head.keys));
        assert_eq!((back.actions, back.images, back.notes), (head.actions, head.images, head.notes));
        let n = rest.count(7).unwrap();
        let got: Vec<Entry> = (0..n).map(|_| rest.entry(&root).unwrap()).collect();
        assert_eq!(got, entries);
        assert!(rest.0.is_empty());
        // Every truncation and every flipped byte is refused, never misread.
        for n in 0..out.len() {
            assert!(decode_head(&out[..n]).is_none(), "truncated at {n}");
        }
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x20;
            assert!(decode_head(&bad).is_none(), "byte {i} flipped");
        }
    }
}
