//! A cache hit only when a clean build would give the same bytes (issue: hermetic inputs). Each test
//! is named after an audit finding: an input that reached the output but not the key (or the other
//! way round), checked by comparing the incremental build with a clean build of the same tree.

mod common;
#[path = "fixtures/reliability/support.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;

fn site_ws() -> support::Ws {
    let ws = support::examples();
    ws.write(
        "app/BUILD.star",
        "cnb_image(name = \"img\", srcs = glob([\"**\"], exclude = [\"BUILD.star\"]), builder = \"//builders:default\")\n",
    );
    ws.write("app/index.html", "<p>hi</p>\n");
    ws.write("app/run.sh", "#!/bin/sh\necho hi\n");
    ws
}

fn chmod(ws: &support::Ws, rel: &str, mode: u32) {
    std::fs::set_permissions(ws.path(rel), std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `chmod +x` on a cnb_image source changes the image, so it must change the key; a mode change
/// git does not track (group write: umask 002 vs 022) must change neither.
#[test]
fn cnb_source_mode_is_keyed_as_git_tracks_it() {
    let ws = site_ws();
    chmod(&ws, "app/run.sh", 0o644);
    let d1 = ws.ok(&["//app:img"]);
    chmod(&ws, "app/run.sh", 0o755);
    let d2 = ws.ok(&["//app:img"]);
    assert_ne!(d1, d2, "chmod +x was a cache hit");
    assert_eq!(d2, support::clean_digests(ws.root(), &["//app:img"]), "incremental != clean after chmod +x");
    // umask 002 checkout: group-writable files, same image, no rebuild.
    chmod(&ws, "app/run.sh", 0o775);
    chmod(&ws, "app/index.html", 0o664);
    let o = ws.build(&["//app:img"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(o.digests(), d2, "group write changed the image");
    assert_eq!(o.summary()["executed"], 0, "group write rebuilt: {}", o.stdout);
    assert_eq!(o.digests(), support::clean_digests(ws.root(), &["//app:img"]), "incremental != clean (umask 002)");
}

/// SOURCE_DATE_EPOCH sets the mtimes inside the CNB build's layers: it is part of the key.
#[test]
fn source_date_epoch_is_keyed_for_cnb_builds() {
    let ws = site_ws();
    let d1 = ws.ok(&["//app:img"]);
    let o = support::out_of(ws.cmd().env("SOURCE_DATE_EPOCH", "315532900").args(["build", "--json", "//app:img"]));
    assert_eq!(o.code, 0, "{}", o.all());
    assert_ne!(o.digests(), d1, "another SOURCE_DATE_EPOCH was a cache hit");
    let clean = support::copy_of(ws.root(), None);
    let c = support::out_of(clean.cmd().env("SOURCE_DATE_EPOCH", "315532900").args(["build", "--json", "//app:img"]));
    assert_eq!(o.digests(), c.digests(), "incremental != clean for SOURCE_DATE_EPOCH=315532900");
}
