//! `cbuild watch` through the CLI: 20 scripted edits, each turned into a new image by one rebuild
//! (the last equal to a clean build's), the edit-to-image latency reported; `--run` restarts the
//! image with the new contents; a broken BUILD file is reported and the loop goes on.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common;
use common::TestContext;

struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn start(cx: &TestContext, args: &[&str]) -> Watch {
        let mut child =
            cx.cmd().args(args).stdout(Stdio::piped()).stderr(Stdio::null()).process_group(0).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Watch { child, lines }
    }

    /// The next JSON line of `type` (others skipped), within 60 s.
    fn next(&self, ty: &str) -> serde_json::Value {
        loop {
            let l = self.lines.recv_timeout(Duration::from_secs(60)).expect("cbuild watch said nothing for 60 s");
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) {
                if v["type"] == ty {
                    return v;
                }
            }
        }
    }

    /// The next plain line containing `needle`, within 60 s.
    fn until(&self, needle: &str) -> String {
        loop {
            let l =
                self.lines.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("no `{needle}` in 60 s"));
            if l.contains(needle) {
                return l;
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // The watcher and the `cbuild run` it started share the process group.
        // SAFETY: kill(2) of the process group this test created.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn every_edit_becomes_an_image_and_the_latency_is_reported() {
    let cx = TestContext::from_examples();
    let w = Watch::start(&cx, &["--json", "watch", "--debounce", "20", "//tools:tool-versioned"]);
    let first = w.next("summary");
    assert_eq!(first["failed"], 0, "{first}");
    w.next("watch");
    let mut ready = Vec::new();
    let mut last = first["targets"][0]["image_digest"].as_str().unwrap().to_string();
    for i in 0..20 {
        cx.write("tools/hello.sh", &format!("#!/bin/sh\necho edit {i}\n"));
        let s = w.next("summary");
        let ev = w.next("watch");
        assert!(ev["changed"].as_array().unwrap().iter().any(|c| c == "tools/hello.sh"), "{ev}");
        assert!(s["executed"].as_u64().unwrap() >= 1, "edit {i}: {s}");
        let d = s["targets"][0]["image_digest"].as_str().unwrap().to_string();
        assert_ne!(d, last, "edit {i} made a new image");
        last = d;
        ready.push(ev["ready_ms"].as_u64().unwrap());
    }
    eprintln!(
        "watch: edit-to-image median {} ms over {} edits (max {} ms)",
        median(ready.clone()),
        ready.len(),
        ready.iter().max().unwrap()
    );
    // The last image equals a clean build of the same sources.
    let clean = TestContext::new();
    common::copy_tree(cx.root(), clean.root());
    let _ = std::fs::remove_dir_all(clean.root().join("cbuild-out"));
    let r = clean.run(&["build", "--json", "//tools:tool-versioned"]);
    let s: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(s["targets"][0]["image_digest"].as_str().unwrap(), last);

    // A broken BUILD file is reported; fixing it builds again.
    let good = std::fs::read_to_string(cx.root().join("tools/BUILD.star")).unwrap();
    cx.write("tools/BUILD.star", "layer(name = \n");
    w.next("watch");
    cx.write("tools/BUILD.star", &good);
    let s = w.next("summary");
    assert_eq!(s["failed"], 0, "{s}");
}

#[test]
fn run_restarts_the_image_when_it_changed() {
    let cx = TestContext::from_examples();
    let w = Watch::start(&cx, &["--quiet", "watch", "--run", "--debounce", "20", "//tools:tool"]);
    w.until("hello from cbuild");
    cx.write("tools/hello.sh", "#!/bin/sh\necho hello after the edit\n");
    w.until("hello after the edit");
    // An edit that does not change the image (a file no target reads) restarts nothing.
    cx.write("tools/NOTES.txt", "notes\n");
    cx.write("tools/hello.sh", "#!/bin/sh\necho third\n");
    let l = w.until("third");
    assert!(!l.contains("after the edit"));
}
