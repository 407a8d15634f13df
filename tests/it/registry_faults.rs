//! `cbuild::registry` against the real registry (distribution 2.8, `common::registry`) behind the
//! fault-injecting proxy (`common::fault_proxy`): lost answers to the steps of a chunked upload,
//! manifests and configs cut off or bit-flipped, 5xx/429, and a hung or crawling registry, which
//! must fail within the client's deadline. Every pushed blob is checked whole by pulling it back
//! past the proxy.

use std::path::Path;
use std::time::{Duration, Instant};

use cbuild::cas::BlobDir;
use cbuild::oci::{append_layer, scratch, write_layer, Image, LayerBlob, LayerOptions, TarEntry};
use cbuild::registry::{Client, ClientOptions, Deadlines, PushOptions, Reference, RegistryError, RetryPolicy};

use crate::common::fault_proxy::{Fault, FaultProxy, Seen};
use crate::common::registry::Registry;

/// Fast retries, no ~/.docker, the default deadlines.
fn opts(config_dir: &Path) -> ClientOptions {
    ClientOptions {
        docker_config_dir: Some(config_dir.to_path_buf()),
        retry: RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        },
        ..Default::default()
    }
}

/// Chunked uploads for anything over 256 KiB, 1 MiB per PATCH.
fn chunked() -> PushOptions {
    PushOptions { monolithic_limit: 256 << 10, chunk_size: 1 << 20, ..Default::default() }
}

/// Pseudo-random bytes: the gzip layer is about as large.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// scratch + one layer holding `content`.
fn image(blobs: &BlobDir, tmp: &Path, content: &[u8]) -> (Image, LayerBlob) {
    let src = tmp.join("payload.bin");
    std::fs::write(&src, content).unwrap();
    let entries = vec![TarEntry::file("opt/payload.bin".to_string(), &src, 0o644)];
    let layer = write_layer(entries, &LayerOptions::default(), blobs, &|_, _| None).unwrap();
    let img = append_layer(&scratch("linux", "amd64").unwrap(), &layer, "payload").unwrap();
    (img, layer)
}

/// A test's scene: the registry, a proxy in front of it, a local image with a multi-MiB layer.
struct Scene {
    reg: Registry,
    proxy: FaultProxy,
    tmp: tempfile::TempDir,
    blobs: BlobDir,
    img: Image,
    layer: LayerBlob,
}

impl Scene {
    fn new(layer_bytes: usize, seed: u64) -> Scene {
        let reg = Registry::shared();
        let port = reg.host.rsplit(':').next().unwrap().parse().unwrap();
        let proxy = FaultProxy::start(port, |_| Fault::Pass);
        let tmp = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(tmp.path().join("cas")).unwrap();
        let (img, layer) = image(&blobs, tmp.path(), &noise(layer_bytes, seed));
        Scene { reg, proxy, tmp, blobs, img, layer }
    }

    fn client(&self) -> Client {
        Client::new(opts(self.tmp.path())).unwrap()
    }

    /// `name` (`app:1`) reached through the proxy.
    fn via_proxy(&self, name: &str) -> Reference {
        Reference::parse(&format!("127.0.0.1:{}/{}", self.proxy.port, self.reg.repo(name))).unwrap()
    }

    /// Requests the proxy saw with `method` whose path contains `part`.
    fn count(&self, method: &str, part: &str) -> usize {
        self.proxy.log().iter().filter(|(m, p, _)| m == method && p.contains(part)).count()
    }

    /// The pushed image, read back from the registry itself (not through the proxy): the same
    /// manifest digest and the layer whole (verified against its digest, same size).
    async fn assert_pushed_whole(&self, name: &str) {
        let direct = self.reg.reference(name);
        let c = self.client();
        let resolved = c.resolve(&direct, None).await.unwrap();
        assert_eq!(&resolved.digest, self.img.digest());
        let fresh = BlobDir::open(self.tmp.path().join(format!("fresh-{}", name.replace([':', '/'], "-")))).unwrap();
        let n = c.fetch_blob(&direct, &self.layer.digest, &fresh).await.unwrap();
        assert_eq!(n, self.layer.size);
        fresh.verify(&self.layer.digest).unwrap();
    }
}

/// A rule faulting the `k`-th (from 1) request with `method` whose path contains `part`.
fn nth(method: &'static str, part: impl Into<String>, k: usize, fault: Fault) -> impl FnMut(&Seen) -> Fault + Send {
    let (part, mut seen) = (part.into(), 0);
    move |s| {
        if s.method == method && s.path.contains(&part) {
            seen += 1;
            if seen == k {
                return fault.clone();
            }
        }
        Fault::Pass
    }
}

/// Fails the test instead of letting an unbounded wait hang it.
async fn within<T>(limit: Duration, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| panic!("still running after {limit:?}"))
}

#[tokio::test]
async fn lost_answer_to_the_second_patch_restarts_the_blob_and_the_push_is_whole() {
    let s = Scene::new(3 << 20, 11);
    assert!(s.layer.size > 3 << 20, "a multi-MiB layer: {}", s.layer.size);
    s.proxy.set(nth("PATCH", "/blobs/uploads/", 2, Fault::LoseAnswer));
    let target = s.via_proxy("lost-patch/app:1");
    let r =
        within(Duration::from_secs(60), s.client().push_image(&s.img, &s.blobs, &target, &chunked())).await.unwrap();
    assert_eq!(r.uploaded, 2, "{r:?}");
    // The registry applied the lost chunk, so the location we hold is stale: distribution 2.8
    // cannot say where the session stands (404 BLOB_UPLOAD_INVALID to the GET), so the blob
    // starts over in a new session; the stale Content-Range is never sent again.
    assert!(s.count("GET", "/blobs/uploads/") >= 1, "asked the registry: {:#?}", s.proxy.log());
    let session = |p: &str| p.split("/blobs/uploads/").nth(1).unwrap_or("").split('?').next().unwrap().to_string();
    let patches: Vec<String> =
        s.proxy.log().into_iter().filter(|(m, _, _)| m == "PATCH").map(|(_, p, _)| session(&p)).collect();
    assert_ne!(patches[2], patches[1], "the lost chunk is not sent again to the old session: {patches:?}");
    assert_eq!(s.count("POST", "/blobs/uploads/"), 3, "layer twice, config once: {:#?}", s.proxy.log());
    s.assert_pushed_whole("lost-patch/app:1").await;
}

#[tokio::test]
async fn lost_answers_to_closing_puts_are_found_by_head_without_uploading_again() {
    let s = Scene::new(3 << 20, 12);
    // The first closing PUT is the layer's (after its PATCHes), the second the config's (one
    // monolithic PUT with the bytes): both stored by the registry, both answers lost.
    let mut puts = 0;
    s.proxy.set(move |seen: &Seen| {
        if seen.method == "PUT" && seen.path.contains("/blobs/uploads/") {
            puts += 1;
            if puts <= 2 {
                return Fault::LoseAnswer;
            }
        }
        Fault::Pass
    });
    let target = s.via_proxy("lost-put/app:1");
    let r =
        within(Duration::from_secs(60), s.client().push_image(&s.img, &s.blobs, &target, &chunked())).await.unwrap();
    assert_eq!(r.uploaded, 2, "{r:?}");
    let chunks = s.layer.size.div_ceil(1 << 20) as usize;
    assert_eq!(s.count("PATCH", "/blobs/uploads/"), chunks, "nothing sent twice: {:#?}", s.proxy.log());
    assert_eq!(s.count("PUT", "/blobs/uploads/"), 2, "no closing PUT sent again");
    assert_eq!(s.count("POST", "/blobs/uploads/"), 2, "no new session");
    assert!(s.count("HEAD", &format!("/blobs/{}", s.layer.digest)) >= 2, "HEAD before and after");
    s.assert_pushed_whole("lost-put/app:1").await;
}

#[tokio::test]
async fn dropped_and_refused_patches_resume_where_the_registry_stands() {
    let s = Scene::new(3 << 20, 13);
    // 2nd PATCH: the connection drops before the registry sees it; 3rd (counting the resent
    // 2nd): 503 from in front of the registry. The location's state is still current, so the
    // registry says where the session stands and the upload goes on from there.
    let mut patches = 0;
    s.proxy.set(move |seen: &Seen| {
        if seen.method == "PATCH" {
            patches += 1;
            return match patches {
                2 => Fault::Drop,
                4 => Fault::Status(503),
                _ => Fault::Pass,
            };
        }
        Fault::Pass
    });
    let target = s.via_proxy("resume/app:1");
    within(Duration::from_secs(60), s.client().push_image(&s.img, &s.blobs, &target, &chunked())).await.unwrap();
    let chunks = s.layer.size.div_ceil(1 << 20) as usize;
    assert_eq!(s.count("GET", "/blobs/uploads/"), 2, "asked twice: {:#?}", s.proxy.log());
    assert_eq!(s.count("PATCH", "/blobs/uploads/"), chunks + 2, "two chunks sent again, no more");
    assert_eq!(s.count("POST", "/blobs/uploads/"), 2, "no restart");
    s.assert_pushed_whole("resume/app:1").await;
}

#[tokio::test]
async fn manifests_and_configs_cut_off_or_dropped_once_are_fetched_again() {
    let s = Scene::new(1 << 10, 14);
    let name = "cut/app:1";
    s.client().push_image(&s.img, &s.blobs, &s.reg.reference(name), &PushOptions::default()).await.unwrap();
    let config = format!("/blobs/{}", s.img.config_digest());
    for fault in [Fault::Truncate, Fault::Drop] {
        let (mut m, mut c) = (0, 0);
        let (f, config) = (fault.clone(), config.clone());
        s.proxy.set(move |seen: &Seen| {
            if seen.method == "GET" && seen.path.contains("/manifests/") {
                m += 1;
                if m == 1 {
                    return f.clone();
                }
            }
            if seen.method == "GET" && seen.path.contains(&config) {
                c += 1;
                if c == 1 {
                    return f.clone();
                }
            }
            Fault::Pass
        });
        let got = within(Duration::from_secs(30), s.client().resolve(&s.via_proxy(name), None)).await;
        let got = got.unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        assert_eq!(&got.digest, s.img.digest(), "{fault:?}");
        assert_eq!(got.image, s.img, "{fault:?}");
        let faulted = s.proxy.log().iter().filter(|(_, _, f)| *f == fault).count();
        assert_eq!(faulted, 2, "{fault:?}: the manifest and the config were faulted once each");
    }
}

#[tokio::test]
async fn bit_flips_in_manifests_and_configs_are_never_accepted() {
    let s = Scene::new(1 << 10, 15);
    let name = "flip/app:1";
    s.client().push_image(&s.img, &s.blobs, &s.reg.reference(name), &PushOptions::default()).await.unwrap();
    let by_digest = format!("{}@{}", name.split(':').next().unwrap(), s.img.digest());
    let config = format!("/blobs/{}", s.img.config_digest());

    // Once each (by tag: against Docker-Content-Digest; by digest: against the pin): fetched
    // again, and the right bytes are used.
    for r in [name, by_digest.as_str()] {
        s.proxy.set(nth("GET", "/manifests/", 1, Fault::FlipBit));
        let got = s.client().resolve(&s.via_proxy(r), None).await.unwrap_or_else(|e| panic!("{r}: {e}"));
        assert_eq!(&got.digest, s.img.digest());
        assert_eq!(got.image, s.img);
    }
    s.proxy.set(nth("GET", config.clone(), 1, Fault::FlipBit));
    let got = s.client().resolve(&s.via_proxy(name), None).await.unwrap();
    assert_eq!(got.image, s.img);
    assert_eq!(s.proxy.log().iter().filter(|(_, _, f)| *f == Fault::FlipBit).count(), 3, "2 manifests, 1 config");

    // Every time: refused as a digest mismatch, never accepted.
    s.proxy.set(|seen: &Seen| if seen.path.contains("/manifests/") { Fault::FlipBit } else { Fault::Pass });
    for r in [name, by_digest.as_str()] {
        let e = s.client().resolve(&s.via_proxy(r), None).await.unwrap_err();
        assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{r}: {e:?}");
    }
    s.proxy.set(move |seen: &Seen| if seen.path.contains(&config) { Fault::FlipBit } else { Fault::Pass });
    let e = s.client().resolve(&s.via_proxy(name), None).await.unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e:?}");
    assert!(e.to_string().contains(&s.img.config_digest().to_string()), "{e}");
}

#[tokio::test]
async fn server_errors_and_429_are_retried_and_the_push_and_pull_succeed() {
    let s = Scene::new(2 << 20, 16);
    let mut n: std::collections::HashMap<String, usize> = Default::default();
    s.proxy.set(move |seen: &Seen| {
        let kind = match (seen.method.as_str(), seen.path.as_str()) {
            ("HEAD", _) => "head",
            ("POST", _) => "post",
            ("PATCH", _) => "patch",
            ("PUT", p) if p.contains("/blobs/uploads/") => "close",
            ("PUT", _) => "manifest-put",
            ("GET", p) if p.contains("/manifests/") => "manifest-get",
            ("GET", p) if p.contains("/blobs/uploads/") => "status",
            ("GET", _) => "blob-get",
            _ => "other",
        };
        let k = n.entry(kind.to_string()).or_default();
        *k += 1;
        match (kind, *k) {
            ("head", 1) | ("manifest-put", 1) | ("manifest-get", 1) => Fault::Status(503),
            ("head", 2) | ("post", 1) | ("patch", 1) | ("blob-get", 1) => Fault::TooMany(0),
            ("patch", 3) | ("close", 1) => Fault::Status(500),
            ("manifest-get", 2) | ("blob-get", 2) => Fault::Status(502),
            _ => Fault::Pass,
        }
    });
    let target = s.via_proxy("flaky/app:1");
    let c = s.client();
    within(Duration::from_secs(60), c.push_image(&s.img, &s.blobs, &target, &chunked())).await.unwrap();
    // A 429 on a PATCH is sent again as is (the registry did not act); a 500 is not: the
    // registry is asked where the session stands, and the upload resumes there.
    assert_eq!(s.count("POST", "/blobs/uploads/"), 3, "one extra POST for the 429 only: {:#?}", s.proxy.log());
    assert_eq!(s.count("GET", "/blobs/uploads/"), 2, "asked after the 500s: {:#?}", s.proxy.log());
    let got = within(Duration::from_secs(30), c.resolve(&target, None)).await.unwrap();
    assert_eq!(&got.digest, s.img.digest());
    let fresh = BlobDir::open(s.tmp.path().join("fresh")).unwrap();
    within(Duration::from_secs(30), c.fetch_blob(&target, &s.layer.digest, &fresh)).await.unwrap();
    s.assert_pushed_whole("flaky/app:1").await;
}

/// Deadlines of a couple of seconds (blob transfers get no extra time to speak of).
fn short_deadlines(tmp: &Path, request: Duration) -> ClientOptions {
    ClientOptions { deadlines: Deadlines { request, min_rate: 1 << 30, ..Deadlines::default() }, ..opts(tmp) }
}

fn assert_timeout_naming(e: &RegistryError, registry: &str) {
    assert!(matches!(e, RegistryError::Timeout { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("registry `{registry}`")) && msg.contains("\nhint: "), "{msg}");
}

#[tokio::test]
async fn a_hung_registry_fails_push_and_pull_within_the_deadline() {
    // Accepts connections, reads nothing, answers nothing.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = l.local_addr().unwrap().to_string();
    let _hold = tokio::spawn(async move {
        let mut conns = vec![];
        while let Ok((c, _)) = l.accept().await {
            conns.push(c);
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let blobs = BlobDir::open(tmp.path().join("cas")).unwrap();
    let (img, _) = image(&blobs, tmp.path(), b"hello\n");
    let deadline = Duration::from_secs(2);
    let c = Client::new(short_deadlines(tmp.path(), deadline)).unwrap();
    let r = Reference::parse(&format!("{host}/hung/app:1")).unwrap();

    let t = Instant::now();
    let e = within(Duration::from_secs(20), c.push_image(&img, &blobs, &r, &PushOptions::default())).await.unwrap_err();
    let took = t.elapsed();
    assert!(took >= deadline && took < deadline + Duration::from_secs(1), "push gave up after {took:?}");
    eprintln!("push to a hung registry gave up after {took:?}");
    assert_timeout_naming(&e, &host);

    let t = Instant::now();
    let e = within(Duration::from_secs(20), c.resolve(&r, None)).await.unwrap_err();
    let took = t.elapsed();
    assert!(took >= deadline && took < deadline + Duration::from_secs(1), "pull gave up after {took:?}");
    eprintln!("pull from a hung registry gave up after {took:?}");
    assert_timeout_naming(&e, &host);
}

#[tokio::test]
async fn a_registry_stalling_mid_upload_or_trickling_a_config_fails_within_the_deadline() {
    let s = Scene::new(3 << 20, 17);
    let deadline = Duration::from_secs(2);
    let c = Client::new(short_deadlines(s.tmp.path(), deadline)).unwrap();
    let host = format!("127.0.0.1:{}", s.proxy.port);

    // Every PATCH is held longer than the whole upload may take.
    s.proxy.set(|seen: &Seen| if seen.method == "PATCH" { Fault::Delay(Duration::from_secs(8)) } else { Fault::Pass });
    let t = Instant::now();
    let e = within(Duration::from_secs(30), c.push_image(&s.img, &s.blobs, &s.via_proxy("stall/app:1"), &chunked()))
        .await
        .unwrap_err();
    let took = t.elapsed();
    // HEAD + POST come before the upload's own deadline starts: a few ms here.
    assert!(took >= deadline && took < deadline + Duration::from_millis(1500), "gave up after {took:?}");
    assert_timeout_naming(&e, &host);
    assert!(e.to_string().contains(&format!("the upload of blob `{}`", s.layer.digest)), "{e}");
    eprintln!("a stalled upload gave up after {took:?}");

    // A config trickling one byte a second: cut at the deadline, not read for minutes.
    let name = "trickle/app:1";
    s.client().push_image(&s.img, &s.blobs, &s.reg.reference(name), &PushOptions::default()).await.unwrap();
    let config = format!("/blobs/{}", s.img.config_digest());
    s.proxy.set(
        move |seen: &Seen| {
            if seen.path.contains(&config) {
                Fault::Trickle(Duration::from_secs(1))
            } else {
                Fault::Pass
            }
        },
    );
    let t = Instant::now();
    let e = within(Duration::from_secs(30), c.resolve(&s.via_proxy(name), None)).await.unwrap_err();
    let took = t.elapsed();
    assert!(took >= deadline && took < deadline + Duration::from_secs(1), "gave up after {took:?}");
    assert_timeout_naming(&e, &host);
}
