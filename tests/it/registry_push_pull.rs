//! Integration tests of `cbuild::registry` against a real registry (distribution 2.8 via
//! `shared/harness/registry.sh`: `common::registry`), checked with skopeo. Tests with basic auth
//! or damaged storage start their own registry; the others use namespaces of the shared one.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cbuild::cas::BlobDir;
use cbuild::model::digest::Digest;
use cbuild::oci::{append_layer, scratch, write_layer, Image, LayerBlob, LayerOptions, TarEntry};
use cbuild::registry::{Client, ClientOptions, Credential, PushOptions, Reference, RegistryError, RetryPolicy, Secret};

use crate::common;
use crate::common::registry::{skopeo_digest, Registry};

const USER: &str = "builder";
/// Planted: must never show up in an error or a Debug output.
const PASSWORD: &str = "pl4nted-S3cret-pw";

/// Options that never read the machine's ~/.docker (an empty config dir), with fast retries.
fn opts(config_dir: &Path) -> ClientOptions {
    ClientOptions {
        docker_config_dir: Some(config_dir.to_path_buf()),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: std::time::Duration::from_millis(20),
            max_delay: std::time::Duration::from_millis(200),
        },
        ..Default::default()
    }
}

fn layer(blobs: &BlobDir, tmp: &Path, name: &str, content: &[u8]) -> LayerBlob {
    let src = tmp.join(name);
    fs::write(&src, content).unwrap();
    let entries = vec![TarEntry::file(format!("opt/{name}"), &src, 0o644)];
    write_layer(entries, &LayerOptions::default(), blobs, &|_, _| None).unwrap()
}

/// scratch + one layer per `(name, content)`.
fn image(blobs: &BlobDir, tmp: &Path, files: &[(&str, &[u8])]) -> (Image, Vec<LayerBlob>) {
    let mut img = scratch("linux", "amd64").unwrap();
    let mut layers = vec![];
    for (name, content) in files {
        let l = layer(blobs, tmp, name, content);
        img = append_layer(&img, &l, name).unwrap();
        layers.push(l);
    }
    (img, layers)
}

/// Pseudo-random bytes (incompressible enough that the layer blob is large).
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

#[tokio::test]
async fn push_is_seen_by_skopeo_second_push_uploads_nothing_and_pulls_round_trip() {
    let reg = Registry::shared();
    let tmp = tempfile::tempdir().unwrap();
    let blobs = BlobDir::open(tmp.path().join("cas")).unwrap();
    let (img, layers) = image(&blobs, tmp.path(), &[("hello.txt", b"hello registry\n")]);
    let client = Client::new(opts(tmp.path())).unwrap();
    let target = reg.reference("team/app:v1");

    let r = client.push_image(&img, &blobs, &target, &PushOptions::default()).await.unwrap();
    assert_eq!((r.uploaded, r.mounted, r.skipped_existing), (2, 0, 0), "{r:?}");
    assert_eq!(&r.manifest_digest, img.digest());
    assert!(r.bytes_uploaded >= layers[0].size);
    assert_eq!(skopeo_digest(&target.to_string(), None), img.digest().to_string());

    let again = client.push_image(&img, &blobs, &target, &PushOptions::default()).await.unwrap();
    assert_eq!((again.uploaded, again.mounted, again.skipped_existing, again.bytes_uploaded), (0, 0, 2, 0));

    // pull by tag and by digest: the same manifest digest, the same image value
    let by_tag = client.resolve(&target, None).await.unwrap();
    assert_eq!(&by_tag.digest, img.digest());
    assert_eq!(by_tag.image, img);
    assert_eq!(by_tag.reference.digest(), Some(img.digest()));
    let by_digest = client.resolve(&reg.reference(&format!("team/app@{}", img.digest())), None).await.unwrap();
    assert_eq!(by_digest.digest, by_tag.digest);
    let explicit = client.resolve(&target, Some(("linux".into(), "amd64".into()))).await.unwrap();
    assert_eq!(explicit.digest, by_tag.digest);
    let e = client.resolve(&target, Some(("linux".into(), "s390x".into()))).await.unwrap_err();
    assert!(matches!(e, RegistryError::PlatformNotFound { .. }), "{e}");

    // layers only on request, verified
    let fresh = BlobDir::open(tmp.path().join("fresh")).unwrap();
    let n = client.fetch_blob(&target, &layers[0].digest, &fresh).await.unwrap();
    assert_eq!(n, layers[0].size);
    fresh.verify(&layers[0].digest).unwrap();

    // unknown tag: 404 naming the reference
    let missing = reg.reference("team/app:nope");
    let e = client.resolve(&missing, None).await.unwrap_err();
    assert!(matches!(e, RegistryError::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains(&format!("`{missing}`")), "{e}");
    let e = client.resolve(&reg.reference("team/never:1"), None).await.unwrap_err();
    assert!(e.to_string().contains("team/never:1"), "{e}");

    // extra tags point at the same manifest
    let o = PushOptions { extra_tags: vec!["latest".into(), "v1.0".into()], ..Default::default() };
    client.push_image(&img, &blobs, &target, &o).await.unwrap();
    assert_eq!(skopeo_digest(&reg.reference("team/app:v1.0").to_string(), None), img.digest().to_string());
}

#[tokio::test]
async fn large_layer_goes_up_in_chunks_and_comes_back_intact() {
    let reg = Registry::shared();
    let tmp = tempfile::tempdir().unwrap();
    let blobs = BlobDir::open(tmp.path().join("cas")).unwrap();
    let big = noise(300_000, 7);
    let (img, layers) = image(&blobs, tmp.path(), &[("big.bin", &big)]);
    assert!(layers[0].size > 100_000, "layer should be large: {}", layers[0].size);
    let client = Client::new(opts(tmp.path())).unwrap();
    let target = reg.reference("chunks/app:1");
    let o = PushOptions { monolithic_limit: 64 << 10, chunk_size: 40 << 10, ..Default::default() };
    let r = client.push_image(&img, &blobs, &target, &o).await.unwrap();
    assert_eq!(r.uploaded, 2);
    let patches = reg.log().matches(&format!("\"PATCH /v2/{}/blobs/uploads/", reg.repo("chunks/app"))).count();
    assert!(patches >= 7, "expected several PATCH chunks, saw {patches}");
    assert_eq!(skopeo_digest(&target.to_string(), None), img.digest().to_string());
    let fresh = BlobDir::open(tmp.path().join("fresh")).unwrap();
    client.fetch_blob(&target, &layers[0].digest, &fresh).await.unwrap();
    fresh.verify(&layers[0].digest).unwrap();
}

#[tokio::test]
async fn image_sharing_a_base_layer_in_another_repository_mounts_it() {
    let reg = Registry::shared();
    let tmp = tempfile::tempdir().unwrap();
    let blobs = BlobDir::open(tmp.path().join("cas")).unwrap();
    let (base, base_layers) = image(&blobs, tmp.path(), &[("base.txt", b"the base layer\n")]);
    let client = Client::new(opts(tmp.path())).unwrap();
    let base_ref = reg.reference("base/run:1");
    client.push_image(&base, &blobs, &base_ref, &PushOptions::default()).await.unwrap();

    let app_layer = layer(&blobs, tmp.path(), "app.txt", b"the app\n");
    let app = append_layer(&base, &app_layer, "app").unwrap();
    let hint = PushOptions { source_repos: vec![base_ref.clone()], ..Default::default() };
    let r = client.push_image(&app, &blobs, &reg.reference("team/app:1"), &hint).await.unwrap();
    assert_eq!((r.uploaded, r.mounted, r.skipped_existing), (2, 1, 0), "{r:?}");
    let base_digest = base_layers[0].digest.to_string().replace(':', "%3A");
    let mounted_line = reg
        .log()
        .lines()
        .find(|l| {
            l.contains(&format!("POST /v2/{}/blobs/uploads/?", reg.repo("team/app")))
                && l.contains(&format!("mount={base_digest}"))
                && l.contains(&format!("from={}", reg.repo("base/run").replace('/', "%2F")))
        })
        .map(str::to_string);
    let line = mounted_line.unwrap_or_else(|| panic!("no mount POST in the registry log:\n{}", reg.log()));
    assert!(line.contains("\" 201 "), "the mount was not a 201: {line}");
    assert_eq!(skopeo_digest(&reg.reference("team/app:1").to_string(), None), app.digest().to_string());

    // A shallow base: this store never held the base layer. Pushing mounts (other repository) or
    // skips (same repository) it and never downloads it.
    let shallow = BlobDir::open(tmp.path().join("shallow")).unwrap();
    let app_layer2 = layer(&shallow, tmp.path(), "app2.txt", b"another app\n");
    let app2 = append_layer(&base, &app_layer2, "app2").unwrap();
    let r = client.push_image(&app2, &shallow, &reg.reference("team/other:1"), &hint).await.unwrap();
    assert_eq!((r.uploaded, r.mounted), (2, 1), "{r:?}");
    let r = client.push_image(&app2, &shallow, &reg.reference("base/run:2"), &hint).await.unwrap();
    assert_eq!((r.uploaded, r.mounted, r.skipped_existing), (2, 0, 1), "{r:?}");
    assert!(!shallow.contains(&base_layers[0].digest), "the base layer was downloaded");
    let get = format!("GET /v2/{}/blobs/{}", reg.repo("base/run"), base_layers[0].digest);
    assert!(!reg.log().contains(&get), "base layer GET");

    // no hint and no bytes: a clear refusal, not an upload of nothing
    let e =
        client.push_image(&app2, &shallow, &reg.reference("lonely/app:1"), &PushOptions::default()).await.unwrap_err();
    assert!(matches!(e, RegistryError::BlobUnavailable { .. }), "{e}");
    assert!(e.to_string().contains(&base_layers[0].digest.to_string()), "{e}");
}

fn config_json(dir: &Path, host: &str, entry: serde_json::Value) {
    let v = serde_json::json!({ "auths": { host: entry } });
    fs::write(dir.join("config.json"), serde_json::to_vec(&v).unwrap()).unwrap();
}

#[tokio::test]
async fn basic_auth_registry_needs_credentials_from_config_json() {
    let reg = Registry::start(Some(&format!("{USER}:{PASSWORD}")));
    let tmp = tempfile::tempdir().unwrap();
    let blobs = BlobDir::open(tmp.path().join("cas")).unwrap();
    let (img, _) = image(&blobs, tmp.path(), &[("secret-app.txt", b"auth\n")]);
    let target = reg.reference("team/app:v1");
    let mut errors_and_debug = vec![];

    // no credentials: refused, naming the registry and repository, with a hint
    let empty = tempfile::tempdir().unwrap();
    let anon = Client::new(opts(empty.path())).unwrap();
    let e = anon.push_image(&img, &blobs, &target, &PushOptions::default()).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::Unauthorized { had_credentials: false, .. }), "{msg}");
    assert!(msg.contains(&format!("`{}`", reg.host)) && msg.contains("`team/app`"), "{msg}");
    assert!(msg.contains("hint:") && msg.contains("docker login") && msg.contains("config.json"), "{msg}");
    errors_and_debug.push(msg);
    errors_and_debug.push(format!("{e:?}"));

    // wrong password: refused, saying credentials were used, without echoing them
    let wrong = tempfile::tempdir().unwrap();
    config_json(
        wrong.path(),
        &reg.host,
        serde_json::json!({"username": USER, "password": format!("{PASSWORD}-wrong")}),
    );
    let bad = Client::new(opts(wrong.path())).unwrap();
    let e = bad.resolve(&target, None).await.unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { had_credentials: true, .. }), "{e}");
    errors_and_debug.push(e.to_string());
    errors_and_debug.push(format!("{e:?}"));
    errors_and_debug.push(format!("{bad:?}"));

    // `auth` (base64 user:password) in config.json: works
    let good = tempfile::tempdir().unwrap();
    config_json(
        good.path(),
        &format!("http://{}", reg.host),
        serde_json::json!({"auth": common::b64(&format!("{USER}:{PASSWORD}"))}),
    );
    let client = Client::new(opts(good.path())).unwrap();
    let r = client.push_image(&img, &blobs, &target, &PushOptions::default()).await.unwrap();
    assert_eq!(r.uploaded, 2);
    assert_eq!(skopeo_digest(&target.to_string(), Some(&format!("{USER}:{PASSWORD}"))), img.digest().to_string());
    let pulled = client.resolve(&target, None).await.unwrap();
    assert_eq!(&pulled.digest, img.digest());
    errors_and_debug.push(format!("{client:?}"));

    // credentials given directly win, and their Debug is redacted
    let o = ClientOptions {
        credentials: vec![(
            reg.host.clone(),
            Credential::Basic { username: USER.into(), password: Secret::new(PASSWORD) },
        )],
        ..opts(empty.path())
    };
    errors_and_debug.push(format!("{o:?}"));
    let direct = Client::new(o).unwrap();
    let again = direct.push_image(&img, &blobs, &target, &PushOptions::default()).await.unwrap();
    assert_eq!(again.uploaded, 0);
    errors_and_debug.push(format!("{direct:?}"));

    // nothing the user can see holds the password (plain or base64)
    for s in &errors_and_debug {
        assert!(!s.contains(PASSWORD) && !s.contains(&common::b64(&format!("{USER}:{PASSWORD}"))), "leaked: {s}");
    }
    assert!(!reg.log().contains(PASSWORD));
}

#[tokio::test]
async fn docker_config_env_and_credential_helper_on_path() {
    // The client reads $DOCKER_CONFIG and looks helpers up on $PATH in this process, and every
    // test shares it: the body runs in a child process of this binary that has both from its start.
    let Some(tmp) = common::child::dir() else {
        let tmp = tempfile::tempdir().unwrap();
        let path = format!("{}:{}", tmp.path().join("bin").display(), std::env::var("PATH").unwrap_or_default());
        let env = [("PATH", path.into()), ("DOCKER_CONFIG", tmp.path().join("docker-config").into())];
        common::child::run(module_path!(), "docker_config_env_and_credential_helper_on_path", tmp.path(), &env);
        return;
    };
    let reg = Registry::start(Some(&format!("{USER}:{PASSWORD}")));
    let blobs = BlobDir::open(tmp.join("cas")).unwrap();
    let (img, _) = image(&blobs, &tmp, &[("helped.txt", b"helper\n")]);

    // a docker-credential-test helper speaking the protocol: server on stdin, JSON on stdout
    let bin = tmp.join("bin");
    fs::create_dir(&bin).unwrap();
    let asked = tmp.join("asked");
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread -r server || true\necho \"$server\" >> {asked}\n\
         if [ \"$server\" = \"{host}\" ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n\
         else\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
        asked = asked.display(),
        host = reg.host
    );
    let helper = bin.join("docker-credential-test");
    fs::write(&helper, script).unwrap();
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    // $PATH starts with `bin`, $DOCKER_CONFIG is `docker-config` (see above); the other tests
    // name their config dir.
    let conf = tmp.join("docker-config");
    assert_eq!(std::env::var_os("DOCKER_CONFIG").as_deref(), Some(conf.as_os_str()));
    fs::create_dir(&conf).unwrap();
    let env_opts = ClientOptions { docker_config_dir: None, ..opts(&tmp) };

    // credHelpers, found through $DOCKER_CONFIG
    fs::write(conf.join("config.json"), format!(r#"{{"credHelpers": {{"{}": "test"}}}}"#, reg.host)).unwrap();
    let c = Client::new(env_opts.clone()).unwrap();
    let r = c.push_image(&img, &blobs, &reg.reference("helped/app:1"), &PushOptions::default()).await.unwrap();
    assert_eq!(r.uploaded, 2);
    assert_eq!(fs::read_to_string(&asked).unwrap().trim(), reg.host, "helper asked once, with the server");

    // credsStore: same helper for every registry
    fs::write(conf.join("config.json"), r#"{"credsStore": "test"}"#).unwrap();
    let c = Client::new(env_opts.clone()).unwrap();
    assert_eq!(&c.resolve(&reg.reference("helped/app:1"), None).await.unwrap().digest, img.digest());

    // a helper that is not installed: named in the error
    fs::write(conf.join("config.json"), format!(r#"{{"credHelpers": {{"{}": "nothere"}}}}"#, reg.host)).unwrap();
    let c = Client::new(env_opts.clone()).unwrap();
    let e = c.resolve(&reg.reference("helped/app:1"), None).await.unwrap_err().to_string();
    assert!(e.contains("docker-credential-nothere") && e.contains(&reg.host), "{e}");

    // auths with username/password through $DOCKER_CONFIG
    config_json(&conf, &reg.host, serde_json::json!({"username": USER, "password": PASSWORD}));
    let c = Client::new(env_opts).unwrap();
    assert_eq!(&c.resolve(&reg.reference("helped/app:1"), None).await.unwrap().digest, img.digest());
    assert!(!format!("{c:?}").contains(PASSWORD));
}

#[tokio::test]
async fn corrupt_registry_blob_is_refused_naming_the_digest() {
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let blobs = BlobDir::open(tmp.path().join("cas")).unwrap();
    let (img, layers) = image(&blobs, tmp.path(), &[("victim.txt", b"to be corrupted\n")]);
    let client = Client::new(opts(tmp.path())).unwrap();
    let target = reg.reference("corrupt/app:1");
    client.push_image(&img, &blobs, &target, &PushOptions::default()).await.unwrap();

    let d = &layers[0].digest;
    let f = reg.blob_file(d);
    let mut bytes = fs::read(&f).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // same size, different content
    fs::write(&f, &bytes).unwrap();
    let fresh = BlobDir::open(tmp.path().join("fresh")).unwrap();
    let e = client.fetch_blob(&target, d, &fresh).await.unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&d.to_string()) && msg.contains(&Digest::of_bytes(&bytes).to_string()), "{msg}");
    assert!(!fresh.contains(d) && !fresh.contains(&Digest::of_bytes(&bytes)), "nothing stored");
    let leftovers: Vec<_> = fs::read_dir(fresh.root().join("sha256")).unwrap().collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");

    // a corrupt config fails the shallow pull too
    let cf = reg.blob_file(img.config_digest());
    let mut c = fs::read(&cf).unwrap();
    c[0] ^= 0x01;
    fs::write(&cf, &c).unwrap();
    let e = client.resolve(&target, None).await.unwrap_err().to_string();
    assert!(e.contains(&img.config_digest().to_string()) && e.contains("refused"), "{e}");
}

#[tokio::test]
async fn unreachable_registry_is_a_clear_error_after_bounded_retries() {
    // a port nobody listens on (bound, then closed)
    let port = common::free_port();
    let tmp = tempfile::tempdir().unwrap();
    let client = Client::new(opts(tmp.path())).unwrap();
    let r = Reference::parse(&format!("127.0.0.1:{port}/x/y:1")).unwrap();
    let e = client.resolve(&r, None).await.unwrap_err();
    assert!(matches!(e, RegistryError::Http { .. }), "{e:?}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}

/// The same image with Docker schema 2 media types, pretty-printed (not canonical) JSON.
fn as_docker(img: &Image) -> Image {
    use cbuild::oci::{MEDIA_TYPE_DOCKER_CONFIG, MEDIA_TYPE_DOCKER_MANIFEST};
    let layers: Vec<serde_json::Value> = img
        .layers()
        .iter()
        .map(|l| {
            serde_json::json!({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                               "size": l.size, "digest": l.digest.to_string()})
        })
        .collect();
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_DOCKER_CONFIG, "size": img.config_bytes().len(),
                   "digest": img.config_digest().to_string()},
        "layers": layers,
    });
    Image::from_bytes(serde_json::to_vec_pretty(&m).unwrap(), img.config_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn docker_media_types_and_manifest_lists_resolve_to_the_platform() {
    use cbuild::oci::MEDIA_TYPE_DOCKER_MANIFEST_LIST;
    let reg = Registry::shared();
    let tmp = tempfile::tempdir().unwrap();
    let blobs = BlobDir::open(tmp.path().join("cas")).unwrap();
    let l = layer(&blobs, tmp.path(), "multi.txt", b"one layer, two platforms\n");
    let amd = as_docker(&append_layer(&scratch("linux", "amd64").unwrap(), &l, "l").unwrap());
    let arm = append_layer(&scratch("linux", "arm64").unwrap(), &l, "l").unwrap();
    assert!(amd.manifest_bytes().contains(&b'\n'), "kept as pretty-printed bytes");
    let client = Client::new(opts(tmp.path())).unwrap();
    for img in [&amd, &arm] {
        let by_digest = reg.reference(&format!("multi/app@{}", img.digest()));
        let r = client.push_image(img, &blobs, &by_digest, &PushOptions::default()).await.unwrap();
        assert_eq!(&r.manifest_digest, img.digest());
    }
    // the Docker manifest came back byte-exact
    let docker_ref = reg.reference(&format!("multi/app@{}", amd.digest()));
    let raw = client.fetch_manifest(&docker_ref).await.unwrap();
    assert_eq!(raw.bytes, amd.manifest_bytes());
    assert_eq!(raw.media_type, cbuild::oci::MEDIA_TYPE_DOCKER_MANIFEST);
    assert_eq!(client.resolve(&docker_ref, None).await.unwrap().image, amd);
    assert_eq!(skopeo_digest(&docker_ref.to_string(), None), amd.digest().to_string());

    let entry = |img: &Image, arch: &str| {
        serde_json::json!({"mediaType": img.manifest_media_type(), "size": img.manifest_bytes().len(),
                           "digest": img.digest().to_string(),
                           "platform": {"os": "linux", "architecture": arch}})
    };
    let list = serde_json::json!({"schemaVersion": 2, "mediaType": MEDIA_TYPE_DOCKER_MANIFEST_LIST,
                                  "manifests": [entry(&amd, "amd64"), entry(&arm, "arm64")]});
    let list_bytes = serde_json::to_vec(&list).unwrap();
    let tag = reg.reference("multi/app:1");
    let list_digest =
        client.push_manifest(&tag, list_bytes.clone().into(), MEDIA_TYPE_DOCKER_MANIFEST_LIST).await.unwrap();
    assert_eq!(list_digest, Digest::of_bytes(&list_bytes));

    let got = client.resolve(&tag, Some(("linux".into(), "arm64".into()))).await.unwrap();
    assert_eq!(got.digest, list_digest, "the pin is the list's digest");
    assert_eq!(got.media_type, MEDIA_TYPE_DOCKER_MANIFEST_LIST);
    assert_eq!(got.image, arm);
    let got = client.resolve(&tag, Some(("linux".into(), "amd64".into()))).await.unwrap();
    assert_eq!(got.image, amd);
    let pinned = reg.reference(&format!("multi/app@{list_digest}"));
    assert_eq!(client.resolve(&pinned, Some(("linux".into(), "arm64".into()))).await.unwrap().image, arm);
    let e = client.resolve(&tag, Some(("linux".into(), "riscv64".into()))).await.unwrap_err().to_string();
    assert!(e.contains("linux/riscv64") && e.contains("linux/amd64, linux/arm64"), "{e}");
}
