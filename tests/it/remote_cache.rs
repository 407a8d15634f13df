//! Integration tests of `cbuild::remote` against a real Bazel-HTTP-protocol server (nginx WebDAV via
//! `shared/harness/http-cache.sh`: `common::cache_server`). Tests with basic auth or that stop the
//! server start their own; the others use a path prefix of the shared one. Writers sign with a
//! key pair generated per test (without a signing key a client never writes).

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use cbuild::cas::{BlobDir, CasError};
use cbuild::model::digest::{Blake3, Digest};
use cbuild::remote::reapi::ActionResult;
use cbuild::remote::signing::generate_pem;
use cbuild::remote::{entry, RemoteAuth, RemoteCache, RemoteError, RemoteHealth, RemoteMode, SigningKey, Timeouts};
use prost::Message as _;

use crate::common::cache_server::CacheServer;

const USER: &str = "ci-user";
/// Planted: must never show up in an error or a Debug output.
const PASSWORD: &str = "pl4nted-Passw0rd";
/// Planted: must never show up in an error or a Debug output.
const TOKEN: &str = "pl4nted-T0ken-9f8e7d";

/// A fresh Ed25519 key pair.
fn new_key() -> SigningKey {
    SigningKey::from_pkcs8(generate_pem().unwrap().as_bytes()).unwrap()
}

/// A client with a signing key of its own (so read-write clients write).
fn client(url: &str, mode: RemoteMode, auth: RemoteAuth) -> RemoteCache {
    RemoteCache::new(url, mode, auth, Timeouts::default()).unwrap().with_signing_key(new_key())
}

fn rw(url: &str) -> RemoteCache {
    client(url, RemoteMode::ReadWrite, RemoteAuth::None)
}

fn blob_dir() -> (tempfile::TempDir, BlobDir) {
    let t = tempfile::tempdir().unwrap();
    let b = BlobDir::open(t.path()).unwrap();
    (t, b)
}

/// Files in a blob dir's `sha256/` (temp files included).
fn files_in(b: &BlobDir) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(b.root().join("sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// 3 MiB of deterministic noise (bigger than any buffer on the way) and a small blob.
fn two_blobs(b: &BlobDir) -> Vec<Digest> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let big: Vec<u8> = (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    vec![b.put_bytes(&big).unwrap(), b.put_bytes(b"small config blob").unwrap()]
}

const RESULT: &str = r#"{"Layer":{"diff_id":"x"}}"#;
const COMPONENTS: &str = r#"[{"name":"kind","value":"layer"}]"#;

/// Runner A stores an entry with two blobs; returns the key and blob digests.
fn put_sample(remote: &RemoteCache, a: &BlobDir, key_seed: &[u8]) -> (Blake3, Vec<Digest>) {
    let key = Blake3::of_bytes(key_seed);
    let blobs = two_blobs(a);
    // Duplicates (as `ActionOutput::blobs` may have) are stored once.
    let mut refs = blobs.clone();
    refs.push(blobs[1].clone());
    remote.put_action(&key, RESULT, COMPONENTS, &refs, a, None).unwrap();
    (key, blobs)
}

#[test]
fn runner_b_gets_entry_from_runner_a_and_fetches_blobs_lazily() {
    let server = CacheServer::shared();
    let remote = rw(&server.url);
    let (_ta, a) = blob_dir();
    let key = Blake3::of_bytes(b"action one");
    let blobs = two_blobs(&a);
    let stats = remote.put_action(&key, RESULT, COMPONENTS, &blobs, &a, None).unwrap();
    let sizes: Vec<u64> = blobs.iter().map(|d| a.size(d).unwrap()).collect();
    assert_eq!((stats.blobs_uploaded, stats.blobs_present), (2, 0));
    assert_eq!(stats.bytes_uploaded, sizes.iter().sum::<u64>());

    // What is on the server: CAS blobs under their sha256, an ActionResult under the key whose
    // every output file exists in the CAS with its size (bazel-remote's AC validation).
    for d in &blobs {
        assert_eq!(fs::read(server.cas_file(d)).unwrap(), fs::read(a.path(d)).unwrap());
    }
    let ar = ActionResult::decode(fs::read(server.ac_file(&key)).unwrap().as_slice()).unwrap();
    assert_eq!(ar.output_files.len(), 3);
    assert_eq!(ar.output_files[2].path, "cbuild-result.json");
    for f in &ar.output_files {
        let d = f.digest.as_ref().unwrap();
        let on_server = fs::metadata(server.data().join("cas").join(&d.hash)).unwrap();
        assert_eq!(on_server.len() as i64, d.size_bytes, "{}", f.path);
    }

    // Runner B: another, empty blob dir and another client.
    let remote_b = rw(&server.url);
    let (_tb, b) = blob_dir();
    let entry = remote_b.get_action(&key).unwrap().expect("hit");
    assert_eq!(entry.result_json, RESULT);
    assert_eq!(entry.components_json, COMPONENTS);
    assert_eq!(entry.blobs, blobs.iter().cloned().zip(sizes.iter().copied()).collect::<Vec<_>>());
    assert!(files_in(&b).is_empty(), "get_action downloads no blob");

    for (d, n) in &entry.blobs {
        assert!(remote_b.has_blob(d).unwrap());
        assert_eq!(remote_b.fetch_blob(d, &b).unwrap(), *n);
        b.verify(d).unwrap();
        assert_eq!(fs::read(b.path(d)).unwrap(), fs::read(a.path(d)).unwrap());
    }
    // A blob already present locally is not downloaded again.
    let gets = |log: &str| log.matches(&format!("GET /cas/{} ", blobs[0].hex())).count();
    let before = gets(&server.access_log());
    remote_b.fetch_blob(&blobs[0], &b).unwrap();
    assert_eq!(gets(&server.access_log()), before);
    assert_eq!(files_in(&b), {
        let mut v: Vec<String> = blobs.iter().map(|d| d.hex().to_string()).collect();
        v.sort();
        v
    });

    // Storing again uploads nothing (HEAD finds both blobs).
    let again = remote.put_action(&key, RESULT, COMPONENTS, &blobs, &a, None).unwrap();
    assert_eq!((again.blobs_uploaded, again.blobs_present), (0, 2));

    // Misses.
    assert!(remote_b.get_action(&Blake3::of_bytes(b"other")).unwrap().is_none());
    let absent = Digest::of_bytes(b"absent");
    assert!(!remote_b.has_blob(&absent).unwrap());
    let e = remote_b.fetch_blob(&absent, &b).unwrap_err();
    assert!(matches!(e, RemoteError::BlobMissing { .. }), "{e:?}");
    assert!(e.to_string().contains(&absent.to_string()), "{e}");
    assert_eq!(remote_b.health(), RemoteHealth::Healthy);

    // A path prefix is its own namespace on the same server.
    let team = rw(&format!("{}/team-a/", server.url));
    assert!(team.get_action(&key).unwrap().is_none());
    team.put_action(&key, RESULT, COMPONENTS, &blobs, &a, None).unwrap();
    assert!(server.data().join("team-a/ac").join(key.to_hex()).is_file());
    assert_eq!(team.get_action(&key).unwrap().unwrap().blobs, entry.blobs);
}

/// Damages the big blob on the server, then checks runner B refuses it and keeps nothing.
fn assert_damaged_blob_rejected(damage: impl FnOnce(&Path)) {
    let server = CacheServer::shared();
    let remote = rw(&server.url);
    let (_ta, a) = blob_dir();
    let (key, blobs) = put_sample(&remote, &a, b"damaged");
    damage(&server.cas_file(&blobs[0]));

    let (_tb, b) = blob_dir();
    let entry = remote.get_action(&key).unwrap().unwrap();
    let e = remote.fetch_blob(&entry.blobs[0].0, &b).unwrap_err();
    assert!(matches!(e, RemoteError::Corrupt { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&blobs[0].to_string()) && msg.contains("corrupt"), "{msg}");
    assert!(files_in(&b).is_empty(), "nothing stored: {:?}", files_in(&b));
    // A bad blob is about one entry, not the server: the remote stays in use.
    assert_eq!(remote.health(), RemoteHealth::Healthy);
    assert_eq!(remote.fetch_blob(&blobs[1], &b).unwrap(), 17);
}

#[test]
fn poisoned_blob_on_server_is_rejected_and_leaves_nothing() {
    assert_damaged_blob_rejected(|p| {
        let mut bytes = fs::read(p).unwrap();
        bytes[1000] ^= 0x01; // same size, one bit flipped
        fs::write(p, bytes).unwrap();
    });
}

#[test]
fn truncated_blob_on_server_is_rejected_and_leaves_nothing() {
    assert_damaged_blob_rejected(|p| {
        let f = fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(1 << 20).unwrap();
    });
}

#[test]
fn poisoned_or_foreign_entries_are_errors_not_hits() {
    let server = CacheServer::shared();
    let remote = rw(&server.url);
    let (_ta, a) = blob_dir();
    let (key, _) = put_sample(&remote, &a, b"entry");

    // The same value served under another key (copied on the server) is refused.
    let other = Blake3::of_bytes(b"another action");
    fs::copy(server.ac_file(&key), server.ac_file(&other)).unwrap();
    let e = remote.get_action(&other).unwrap_err();
    assert!(matches!(e, RemoteError::BadEntry { .. }), "{e:?}");
    assert!(e.to_string().contains("written for action"), "{e}");

    // A value that is not an ActionResult.
    let junk = Blake3::of_bytes(b"junk");
    fs::write(server.ac_file(&junk), b"\xff\xff\xff not protobuf").unwrap();
    let e = remote.get_action(&junk).unwrap_err();
    assert!(matches!(e, RemoteError::BadEntry { .. }), "{e:?}");

    // A poisoned result file.
    let ar = ActionResult::decode(fs::read(server.ac_file(&key)).unwrap().as_slice()).unwrap();
    let rf = server.data().join("cas").join(&ar.output_files[2].digest.as_ref().unwrap().hash);
    let text = fs::read_to_string(&rf).unwrap().replace("diff_id", "diff_ID");
    fs::write(&rf, text).unwrap();
    let e = remote.get_action(&key).unwrap_err();
    assert!(matches!(e, RemoteError::Corrupt { .. }), "{e:?}");

    // An evicted result file makes the entry a plain miss.
    fs::remove_file(&rf).unwrap();
    assert!(remote.get_action(&key).unwrap().is_none());
    assert_eq!(remote.health(), RemoteHealth::Healthy);
}

#[test]
fn stopped_server_costs_one_quick_error_then_the_remote_is_disabled() {
    let server = CacheServer::start(None);
    let remote = rw(&server.url);
    server.stop();
    let key = Blake3::of_bytes(b"k");
    let t = Instant::now();
    let e = remote.get_action(&key).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(matches!(e, RemoteError::Transport { .. }), "{e:?}");
    assert!(e.should_warn() && e.disables_remote());
    let msg = e.to_string();
    assert!(msg.contains(&server.url) && msg.contains("cannot connect"), "{msg}");
    assert!(matches!(remote.health(), RemoteHealth::Disabled { ref reason } if *reason == msg));

    // Every later call fails at once, and needs no second warning.
    let (_t, b) = blob_dir();
    let d = b.put_bytes(b"x").unwrap();
    let t = Instant::now();
    let later = [
        remote.get_action(&key).unwrap_err(),
        remote.fetch_blob(&d, &b).unwrap_err(),
        remote.has_blob(&d).unwrap_err(),
        remote.put_action(&key, "{}", "[]", std::slice::from_ref(&d), &b, None).unwrap_err(),
    ];
    assert!(t.elapsed() < Duration::from_millis(100), "{:?}", t.elapsed());
    for e in later {
        assert!(matches!(e, RemoteError::Disabled { .. }) && !e.should_warn(), "{e:?}");
    }
}

#[test]
fn hung_server_times_out_within_the_request_timeout() {
    // Accepts connections (the kernel does) but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let timeouts = Timeouts { connect: Duration::from_secs(1), request: Duration::from_secs(1), ..Timeouts::default() };
    let remote = RemoteCache::new(&url, RemoteMode::ReadWrite, RemoteAuth::None, timeouts).unwrap();
    let t = Instant::now();
    let e = remote.get_action(&Blake3::of_bytes(b"k")).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(e.to_string().contains("timed out"), "{e}");
    assert!(matches!(remote.health(), RemoteHealth::Disabled { .. }));
    drop(listener);
}

#[test]
fn read_only_mode_never_writes() {
    let server = CacheServer::shared();
    let (_ta, a) = blob_dir();
    let ro = client(&server.url, RemoteMode::ReadOnly, RemoteAuth::None);
    let key = Blake3::of_bytes(b"ro");
    let blobs = two_blobs(&a);
    let stats = ro.put_action(&key, RESULT, COMPONENTS, &blobs, &a, None).unwrap();
    assert!(stats.skipped_read_only && stats.blobs_uploaded == 0);
    assert!(ro.get_action(&key).unwrap().is_none());
    assert!(!ro.has_blob(&blobs[0]).unwrap());
    let log = server.access_log();
    assert!(log.contains(&format!("GET /ac/{} ", key.to_hex())), "{log}");
    assert!(!log.contains("\"PUT "), "{log}");
    assert!(!server.ac_file(&key).exists() && !server.cas_file(&blobs[0]).exists());

    // It reads what a read-write runner wrote.
    put_sample(&rw(&server.url), &a, b"ro");
    assert!(ro.get_action(&key).unwrap().is_some());
}

#[test]
fn basic_auth_works_with_credentials_and_fails_clearly_without() {
    let server = CacheServer::start(Some(&format!("{USER}:{PASSWORD}")));
    let (_ta, a) = blob_dir();
    let (_tb, b) = blob_dir();
    let authed = client(&server.url, RemoteMode::ReadWrite, RemoteAuth::Basic(USER.into(), PASSWORD.into()));
    let (key, blobs) = put_sample(&authed, &a, b"auth");
    assert_eq!(authed.get_action(&key).unwrap().unwrap().blobs.len(), 2);
    authed.fetch_blob(&blobs[1], &b).unwrap();

    // Credentials in the URL work too, and leave the URL.
    let host = server.url.strip_prefix("http://").unwrap();
    let in_url = rw(&format!("http://{USER}:{PASSWORD}@{host}"));
    assert!(in_url.get_action(&key).unwrap().is_some());
    assert_eq!(in_url.url(), server.url);
    assert!(!format!("{in_url:?}").contains(PASSWORD), "{in_url:?}");

    for (auth, what) in
        [(RemoteAuth::None, "no credentials"), (RemoteAuth::Basic(USER.into(), "wrong".into()), "wrong password")]
    {
        let r = client(&server.url, RemoteMode::ReadWrite, auth);
        let e = r.get_action(&key).unwrap_err();
        assert!(matches!(e, RemoteError::Status { status: 401, .. }), "{what}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains("HTTP 401") && msg.contains("CBUILD_REMOTE_CACHE_AUTH"), "{msg}");
        // Refused credentials will not fix themselves: one error, then disabled.
        assert!(e.disables_remote());
        assert!(matches!(r.get_action(&key), Err(RemoteError::Disabled { .. })));
    }
}

/// Everything a person could see of an error.
fn shown(e: &RemoteError) -> String {
    let mut s = format!("{e} | {e:?}");
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(&format!(" | {x} | {x:?}"));
        src = x.source();
    }
    s
}

#[test]
fn planted_token_never_appears_in_errors_or_debug() {
    let server = CacheServer::start(Some(&format!("{USER}:{PASSWORD}")));
    let key = Blake3::of_bytes(b"secret");
    let (_t, b) = blob_dir();
    let d = b.put_bytes(b"blob").unwrap();
    let bearer = client(&server.url, RemoteMode::ReadWrite, RemoteAuth::Bearer(TOKEN.into()));
    let wrong_pw = client(&server.url, RemoteMode::ReadWrite, RemoteAuth::Basic(USER.into(), format!("{PASSWORD}-x")));
    let host = server.url.strip_prefix("http://").unwrap();
    let in_url = rw(&format!("http://{USER}:{TOKEN}@{host}/p"));
    let mut seen = Vec::new();
    for r in [&bearer, &wrong_pw, &in_url] {
        seen.push(shown(&r.get_action(&key).unwrap_err())); // 401
        seen.push(shown(&r.put_action(&key, "{}", "[]", std::slice::from_ref(&d), &b, None).unwrap_err()));
        seen.push(format!("{r:?} {:?}", r.health()));
    }
    // Transport errors (server gone) with every kind of credential.
    server.stop();
    for auth in [RemoteAuth::Bearer(TOKEN.into()), RemoteAuth::Basic(USER.into(), PASSWORD.into())] {
        seen.push(format!("{auth:?}"));
        let r = client(&server.url, RemoteMode::ReadWrite, auth);
        let not_local = Digest::of_bytes(b"only remote");
        let e = r.fetch_blob(&not_local, &b).unwrap_err();
        assert!(matches!(e, RemoteError::Transport { .. }), "{e:?}");
        seen.push(shown(&e));
        seen.push(format!("{r:?}"));
    }
    let bad_url = RemoteCache::new(
        &format!("ftp://{USER}:{TOKEN}@{host}"),
        RemoteMode::ReadWrite,
        RemoteAuth::None,
        Timeouts::default(),
    )
    .unwrap_err();
    seen.push(shown(&bad_url));
    for s in &seen {
        assert!(!s.contains(TOKEN) && !s.contains(PASSWORD), "secret leaked: {s}");
    }
    assert!(seen.iter().any(|s| s.contains("HTTP 401")), "{seen:#?}");
}

#[test]
fn corrupt_local_blob_is_never_uploaded() {
    let server = CacheServer::shared();
    let remote = rw(&server.url);
    let (_ta, a) = blob_dir();
    let blobs = two_blobs(&a);
    let p = a.path(&blobs[0]);
    let mut bytes = fs::read(&p).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // only the last chunk differs: the upload is aborted at the very end
    fs::write(&p, bytes).unwrap();

    let key = Blake3::of_bytes(b"local rot");
    let e = remote.put_action(&key, RESULT, COMPONENTS, &blobs, &a, None).unwrap_err();
    assert!(
        matches!(e, RemoteError::Local { source: CasError::Corrupt { ref expected, .. } } if *expected == blobs[0]),
        "{e:?}"
    );
    assert!(!server.cas_file(&blobs[0]).exists(), "corrupt bytes reached the server");
    assert!(!server.ac_file(&key).exists());
    assert!(!a.contains(&blobs[0]), "the corrupt local blob is removed");
    assert_eq!(remote.health(), RemoteHealth::Healthy);
}

#[test]
fn without_a_signing_key_a_client_never_writes() {
    let server = CacheServer::shared();
    let (_ta, a) = blob_dir();
    let key = Blake3::of_bytes(b"unsigned writer");
    let blobs = two_blobs(&a);
    let c = RemoteCache::new(&server.url, RemoteMode::ReadWrite, RemoteAuth::None, Timeouts::default()).unwrap();
    assert_eq!(c.mode(), RemoteMode::ReadOnly);
    let why = c.read_only_reason().unwrap();
    assert!(why.contains("CBUILD_REMOTE_SIGNING_KEY") && why.contains("cbuild cache keygen"), "{why}");
    let stats = c.put_action(&key, RESULT, COMPONENTS, &blobs, &a, None).unwrap();
    assert!(stats.skipped_read_only && stats.blobs_uploaded == 0);
    assert!(!server.access_log().contains("\"PUT "), "{}", server.access_log());

    // With a key it writes (and has nothing to say); asked to be read-only it stays quiet too.
    let c = c.with_signing_key(new_key());
    assert_eq!((c.mode(), c.read_only_reason()), (RemoteMode::ReadWrite, None));
    c.put_action(&key, RESULT, COMPONENTS, &blobs, &a, None).unwrap();
    assert!(server.ac_file(&key).is_file());
    assert_eq!(client(&server.url, RemoteMode::ReadOnly, RemoteAuth::None).read_only_reason(), None);
}

#[test]
fn readers_with_trusted_keys_accept_only_entries_signed_by_them() {
    let server = CacheServer::shared();
    let pem = generate_pem().unwrap();
    let writer_key = || SigningKey::from_pkcs8(pem.as_bytes()).unwrap();
    let pk = writer_key().public_key();
    let writer = RemoteCache::new(&server.url, RemoteMode::ReadWrite, RemoteAuth::None, Timeouts::default())
        .unwrap()
        .with_signing_key(writer_key());
    let (_ta, a) = blob_dir();
    let (key, blobs) = put_sample(&writer, &a, b"signed");
    let reader = |keys| {
        RemoteCache::new(&server.url, RemoteMode::ReadOnly, RemoteAuth::None, Timeouts::default())
            .unwrap()
            .with_trusted_keys(keys)
    };

    // Signed by a trusted key (alone or among others): a hit naming the signer, no warning.
    let r = reader(vec![pk]);
    assert_eq!(r.get_action(&key).unwrap().unwrap().signer, Some(pk));
    assert_eq!(r.unauthenticated_warning(), None);
    assert_eq!(reader(vec![new_key().public_key(), pk]).get_action(&key).unwrap().unwrap().signer, Some(pk));

    // Trusting other keys only: refused, naming the action and the signer; the remote stays in use.
    let other = reader(vec![new_key().public_key()]);
    let e = other.get_action(&key).unwrap_err();
    assert!(matches!(e, RemoteError::Untrusted { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&key.to_hex()) && msg.contains(&pk.to_base64()) && msg.contains("not one of the trusted keys")
    );
    assert!(e.should_warn() && !e.disables_remote());
    assert_eq!(other.health(), RemoteHealth::Healthy);

    // Trusting nobody: accepted unauthenticated, with one warning per client.
    let open = reader(vec![]);
    assert_eq!(open.get_action(&key).unwrap().unwrap().signer, None);
    let w = open.unauthenticated_warning().expect("a warning");
    assert!(w.contains("CBUILD_REMOTE_TRUSTED_KEYS") && w.contains(&server.url), "{w}");
    assert_eq!(open.unauthenticated_warning(), None, "once");

    // Forgeries planted on the server under the same action key.
    let sizes: Vec<(Digest, u64)> = blobs.iter().map(|d| (d.clone(), a.size(d).unwrap())).collect();
    let plant = |rf: &[u8]| {
        let d = Digest::of_bytes(rf);
        fs::write(server.cas_file(&d), rf).unwrap();
        fs::write(server.ac_file(&key), entry::encode((&d, rf.len() as u64), &sizes)).unwrap();
    };
    let honest = entry::result_file(&key, RESULT, COMPONENTS, &blobs);
    let forged = entry::result_file(&key, r#"{"forged":true}"#, COMPONENTS, &blobs);
    let spliced = {
        let mut v: serde_json::Value =
            serde_json::from_slice(&entry::seal(&key, &honest, Some(&writer_key()))).unwrap();
        v["entry"] = serde_json::Value::String(String::from_utf8(forged.clone()).unwrap());
        serde_json::to_vec(&v).unwrap()
    };
    let for_other_action = entry::seal(&Blake3::of_bytes(b"another action"), &honest, Some(&writer_key()));
    let for_other_action = {
        // The signature was made for another key; the record still names this one.
        let mut v: serde_json::Value = serde_json::from_slice(&for_other_action).unwrap();
        v["entry"] = serde_json::Value::String(String::from_utf8(honest.clone()).unwrap());
        serde_json::to_vec(&v).unwrap()
    };
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("unsigned", entry::seal(&key, &forged, None), "not signed"),
        ("a bare format-1 record", forged.clone(), "not signed"),
        ("signed by an attacker's key", entry::seal(&key, &forged, Some(&new_key())), "not one of the trusted keys"),
        ("a trusted signature moved onto other bytes", spliced, "does not verify"),
        ("a trusted signature made for another action", for_other_action, "does not verify"),
    ];
    for (what, rf, why) in cases {
        plant(&rf);
        let e = r.get_action(&key).unwrap_err();
        assert!(matches!(e, RemoteError::Untrusted { .. }), "{what}: {e:?}");
        assert!(e.to_string().contains(why) && e.to_string().contains(&key.to_hex()), "{what}: {e}");
        // A reader without trusted keys cannot tell (the documented risk of that mode).
        assert!(reader(vec![]).get_action(&key).unwrap().is_some(), "{what}");
    }
    // The honest entry, planted again, is a hit again.
    plant(&entry::seal(&key, &honest, Some(&writer_key())));
    assert_eq!(r.get_action(&key).unwrap().unwrap().result_json, RESULT);
    assert_eq!(r.health(), RemoteHealth::Healthy);
}
