#!/usr/bin/env python3
"""report.py RESULTS_DIR [OUT.md] - regenerate BENCHMARKS.md from one bench/run.sh run (stdlib only).

Reads RESULTS_DIR/{meta.env, hf-NAME.json (hyperfine --export-json), rss-NAME.txt (GNU time %M, KiB,
one line per run), out-NAME.jsonl (cbuild --json events), load-NAME.txt, err-NAME.txt (BuildKit's
--progress=plain output: the context each build sent), engine-NAME.txt (the Docker engine's CPU seconds and
peak RSS before / after a BuildKit scenario)} and the commands in
RESULTS_DIR/../bin/NAME.{sh,prepare}; the hand-written analysis comes from bench/notes/*.md.
"""
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def read(p, default=""):
    try:
        with open(p) as f:
            return f.read()
    except OSError:
        return default


def meta(rdir):
    m = {}
    for line in read(os.path.join(rdir, "meta.env")).splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            m[k] = v
    return m


def load_results(rdir):
    res = {}
    for p in sorted(glob.glob(os.path.join(rdir, "hf-*.json"))):
        name = os.path.basename(p)[3:-5]
        try:
            r = json.load(open(p))["results"][0]
        except (ValueError, KeyError, IndexError):
            continue
        rss = [int(x) for x in read(os.path.join(rdir, "rss-%s.txt" % name)).split() if x.isdigit()]
        sums = []
        for line in read(os.path.join(rdir, "out-%s.jsonl" % name)).splitlines():
            if '"summary"' in line:
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                if e.get("type") == "summary":
                    sums.append(e)
        # actions executed in the last run of the scenario: {mnemonic: [count, total ms]}
        kinds, cur = {}, {}
        for line in read(os.path.join(rdir, "out-%s.jsonl" % name)).splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if not isinstance(e, dict):
                continue
            if e.get("type") == "finished" and e.get("outcome") == "executed":
                k = cur.setdefault(e.get("action", "?"), [0, 0])
                k[0] += 1
                k[1] += int(e.get("duration", 0))
            elif e.get("type") == "summary":
                kinds, cur = cur, {}
        load = read(os.path.join(rdir, "load-%s.txt" % name)).split("\n")
        res[name] = {
            "median": r["median"], "min": r["min"], "max": r["max"], "mean": r["mean"],
            "cpu": (r.get("user") or 0) + (r.get("system") or 0),
            "runs": len(r.get("times", [])), "rss": rss, "summaries": sums, "kinds": kinds,
            "load": [l.strip() for l in load if l.strip()],
            "cmd": read(os.path.join(rdir, "..", "bin", name + ".sh")).strip().splitlines()[-1:] or [""],
            "prepare": read(os.path.join(rdir, "..", "bin", name + ".prepare")).strip(),
        }
    return res


UNITS = {"B": 1, "kB": 1e3, "KB": 1e3, "KiB": 1024, "MB": 1e6, "MiB": 1 << 20, "GB": 1e9, "GiB": 1 << 30}
CTX_RE = re.compile(r"transferring context: ([0-9.]+)([kKMG]?i?B)\b.*\bdone")


def context_sent(rdir, name):
    """Bytes BuildKit's builds received as context per run of build.sh (its --progress=plain output in
    err-NAME.txt: one "== build.sh" line per run, then "#N transferring context: 7.59MB 0.5s done" for
    each build's Dockerfile and context). Returns (median bytes per run, [per-run bytes])."""
    runs = []
    for line in read(os.path.join(rdir, "err-%s.txt" % name)).splitlines():
        if line.startswith("== build.sh"):
            runs.append(0.0)
            continue
        mo = CTX_RE.search(line)
        if mo and runs:
            runs[-1] += float(mo.group(1)) * UNITS.get(mo.group(2), 1)
    return (statistics.median(runs) if runs else None), runs


def warmups(rdir):
    """Uncounted warm-up runs before each scenario's timed runs (their output is in the files too)."""
    try:
        return int(meta(rdir).get("WARMUP", "0"))
    except ValueError:
        return 0


def engine_cpu(rdir, name, runs):
    """The Docker engine's CPU seconds per run (dockerd + children, prepare included; the warm-up
    runs were measured too) and its peak RSS."""
    rows = [l.split() for l in read(os.path.join(rdir, "engine-%s.txt" % name)).splitlines() if l.strip()]
    if len(rows) < 2 or not runs:
        return None, None
    try:
        return (float(rows[-1][0]) - float(rows[0][0])) / (runs + warmups(rdir)), int(rows[-1][1])
    except (ValueError, IndexError):
        return None, None


def from_record(rdir, name):
    """(runs answered from the no-op record, runs) of a cbuild scenario (its `summary` events)."""
    n = k = 0
    for line in read(os.path.join(rdir, "out-%s.jsonl" % name)).splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and e.get("type") == "summary":
            n += 1
            k += 1 if e.get("from_record") else 0
    return k, n


def action_sums(rdir, name, action):
    """Per run of a cbuild scenario: (count, total seconds) of the `finished` events with this action
    mnemonic and outcome executed (a run ends at its `summary` event)."""
    out, cur = [], [0, 0.0]
    for line in read(os.path.join(rdir, "out-%s.jsonl" % name)).splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if not isinstance(e, dict):
            continue
        if e.get("type") == "finished" and e.get("outcome") == "executed" and e.get("action") == action:
            cur[0] += 1
            cur[1] += int(e.get("duration", 0)) / 1000
        elif e.get("type") == "summary":
            out.append(tuple(cur))
            cur = [0, 0.0]
    # The warm-up runs come first.
    return out[warmups(rdir):]


def human_bytes(b):
    if b is None:
        return "—"
    for u, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= f:
            return "%.1f %s" % (b / f, u)
    return "%.0f B" % b


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""


def machine(m):
    cpu = ""
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = ""
    for line in read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal"):
            mem = "%.1f GiB" % (int(line.split()[1]) / 1048576)
    osr = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', read("/etc/os-release"), re.M))
    wd = m.get("WORKDIR", "/tmp")
    fs = sh("findmnt -no FSTYPE,SOURCE -T %s" % wd) or sh("df -T %s | tail -1" % wd)
    return [
        ("CPU", "%s, %s logical cores (nproc)" % (cpu or platform.processor(), os.cpu_count())),
        ("memory", mem),
        ("kernel", platform.release()),
        ("OS", osr.get("PRETTY_NAME", "?")),
        ("work dir filesystem", "%s (%s)" % (fs, wd)),
        ("load average (1/5/15 min)", "%s at start, %s at end (2 cores: the run's own builds and peers load them)" % (m.get("LOAD_START", "?"), m.get("LOAD_END", "?"))),
        ("cbuild", "%s, release build of %s, tree at commit %s%s" % (m.get("CBUILD_VERSION", "?"), m.get("CBUILD_BUILT", "?"), m.get("GIT_REV", "?"), " + uncommitted changes" if m.get("GIT_DIRTY", "0") not in ("0", "") else "")),
        ("peers", "%s; %s; zstd %s; %s" % (m.get("BUILDAH_VERSION", "?"), m.get("PIGZ_VERSION", "?"), m.get("ZSTD_VERSION", "?"), m.get("HYPERFINE_VERSION", "?"))),
        ("BuildKit", "the BuildKit built into the Docker engine: %s (%s; Debian package %s), storage driver %s; `DOCKER_BUILDKIT=1 /usr/bin/docker build --network none`" % (
            m.get("DOCKER_ENGINE", "?"), m.get("DOCKER_VERSION", "?"), m.get("DOCKER_PACKAGE", "?"), m.get("DOCKER_STORAGE", "?"))
         if m.get("SKIP_BUILDKIT_EFFECTIVE", "0") == "0" else "not measured (%s)" % m.get("SKIP_BUILDKIT_EFFECTIVE", "?")),
        ("whole run", "%s s" % m.get("ELAPSED_S", "?")),
    ]


def ms(x):
    if x is None:
        return "—"
    return "%.0f ms" % (x * 1000) if x < 10 else "%.1f s" % x


def mib(kib):
    return "%.0f MiB" % (kib / 1024) if kib else "—"


def main():
    rdir = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(HERE), "BENCHMARKS.md")
    m = meta(rdir)
    res = load_results(rdir)
    get = lambda n, k="median": res[n][k] if n in res else None

    def ratio(a, b):
        x, y = get(a), get(b)
        return x / y if x and y else None

    def ratio_cpu(a, b):
        x, y = get(a, "cpu"), get(b, "cpu")
        return x / y if x and y else None

    def summ(n):
        s = res.get(n, {}).get("summaries", [])
        if not s:
            return "—"
        ex = sorted({x.get("executed") for x in s})
        last = s[-1]
        return "executed %s, cached %s local / %s remote%s" % (
            "/".join(str(e) for e in ex), last.get("cached_local"), last.get("cached_remote", 0),
            ", **failed %s**" % last.get("failed") if last.get("failed") else "")

    mono_mb = int(m.get("MONO_BYTES", 0)) / 1e6
    big1_mb = int(m.get("BIG1_BYTES", 0) or 0) / 1e6
    big2_mb = int(m.get("BIG2_BYTES", 0) or 0) / 1e6
    L = []
    L.append("# Benchmarks\n")
    L.append("<!-- generated by bench/report.py from one bench/run.sh run; edit bench/notes/*.md or the scripts, not this file -->\n")
    L.append("cbuild measured side by side with its peers (BuildKit: `docker build` with `DOCKER_BUILDKIT=1` on a throwaway Docker engine; "
             "buildah, daemonless, `--isolation chroot`, `--layers`) and the "
             "physical limits (a stat walk; `tar | pigz -p 2`; `tar | zstd -T2`), **in one run of `bench/run.sh` on one machine**. "
             "Absolute times drift on a shared machine, so the claims are the ratios.\n")
    L.append("## Reproduce\n")
    L.append("```sh\napt-get install -y hyperfine pigz zstd buildah jq time python3 bubblewrap docker.io nginx curl   # tools (root: buildah chroot, dockerd)\n"
             "cargo build --release\nbench/run.sh                    # default: 5 services, 10,000 files, ~100 MB; RUNS=5; ~20-40 min\n"
             "FILES=2000 SIZE_MB=20 BIG_FILES=4000 BIG_MB=40 RUNS=3 bench/run.sh   # a quick check\n"
             "SKIP_BUILDKIT=1 SKIP_BUILDAH=1 bench/run.sh   # without the peers\n"
             "bench/rss.sh target/release/cbuild [OLD_CBUILD]   # peak RSS of a 100 / 20k / 40k / 100k-file layer (also run by run.sh)\n```\n")
    L.append("Tools: hyperfine (repeated runs, `--prepare` for each state change, `--export-json`), GNU `/usr/bin/time -f %M` "
             "(peak RSS of every run; for a pipeline, its largest process), pigz, zstd, buildah, Debian's docker.io (engine "
             "started by `../shared/harness/dockerd.sh`, no network), jq, python3. "
             "Workspaces come from `bench/gen.py` (seeded, so every run measures the same bytes).\n")
    L.append("## This run\n")
    L.append("| | |\n|---|---|")
    for k, v in machine(m):
        L.append("| %s | %s |" % (k, v.replace("|", "\\|")))
    L.append("| monorepo | %s services (cnb_image + layer/oci_image each), %s files, %.1f MB (%s%% in `lib/`, used by every service) |" % (
        m.get("SERVICES"), m.get("MONO_FILES"), mono_mb, int(float(m.get("LIB_FRAC", 0)) * 100)))
    if big1_mb:
        L.append("| big layer trees | %s files / %.0f MB and %s files / %.0f MB |" % (m.get("BIG1_FILES"), big1_mb, m.get("BIG2_FILES"), big2_mb))
    L.append("| runs | %s per cbuild scenario and limit, %s per buildah and BuildKit scenario; each scenario after `sync` and %s uncounted warm-up run(s) |" % (m.get("RUNS"), m.get("PEER_RUNS"), m.get("WARMUP", "0")))
    if m.get("GZIP_LEVEL"):
        gz, pz = int(m.get("BIG1_GZ_BYTES", 0) or 0), int(m.get("PIGZ_BIG1_BYTES", 0) or 0)
        L.append("| gzip level | %s (cbuild's `oci::compress::GZIP_LEVEL`; pigz runs at the same level)%s |" % (
            m["GZIP_LEVEL"], "; the %.0f MB tree compresses to %.1f MB (cbuild) and %.1f MB (pigz)" % (big1_mb, gz / 1e6, pz / 1e6) if gz and pz else ""))
    if m.get("BIG1X2_NOTE"):
        L.append("| note | `layer-cbuild-gzip-big1x2` (%s files, %.0f MB): %s |" % (m.get("BIG1X2_FILES"), int(m.get("BIG1X2_BYTES", 0)) / 1e6, m["BIG1X2_NOTE"]))
    L.append("")

    # ---- the table
    L.append("## Results\n")
    L.append("Median, min and max wall time over the runs; peak RSS is the largest over the runs. cbuild builds `//...` "
             "(5 `cnb_image`s through the real example buildpacks + 5 plain `oci_image`s + the stack) with `--json`; "
             "buildah builds one equivalent Dockerfile per service (FROM the example run image as an OCI layout, COPY lib + "
             "service, a RUN like the buildpack's) and pushes each to an OCI layout, as `buildah-peer.sh` does. "
             "BuildKit builds the same Dockerfile steps (`FROM` the same run image loaded into the engine) for the five services in turn "
             "into the engine's image store, with `--network none`; each service's context is only `lib/src` and the service "
             "(see \"BuildKit's build context\" under Commands). For BuildKit the CPU and peak-RSS columns are the `docker` client's; "
             "the engine's CPU per run (dockerd and its children, measured from /proc around the scenario, prepare included) "
             "is in the notes.\n")
    L.append("| # | scenario | tool | median | min | max | CPU (user+sys, mean) | peak RSS | notes |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    rows = [
        ("1", "cold build", "cbuild-cold", "cbuild"),
        ("1", "cold build", "buildah-cold", "buildah --layers (bud + push)"),
        ("1", "cold build", "buildkit-cold", "BuildKit (docker build)"),
        ("2", "no-op build", "cbuild-noop", "cbuild"),
        ("2", "no-op build", "buildah-noop", "buildah --layers (bud + push)"),
        ("2", "no-op build", "buildah-noop-nopush", "buildah --layers (bud only)"),
        ("2", "no-op build", "buildkit-noop", "BuildKit (docker build)"),
        ("2", "no-op floor", "floor-stat", "`find -type f \\| xargs stat`"),
        ("2", "no-op floor", "floor-pystat", "python os.scandir + os.stat"),
        ("3", "1 file edited in 1 service", "cbuild-edit-svc", "cbuild"),
        ("3", "1 file edited in 1 service", "buildah-edit-svc", "buildah --layers (bud + push)"),
        ("3", "1 file edited in 1 service", "buildah-edit-svc-nopush", "buildah --layers (bud only)"),
        ("3", "1 file edited in 1 service", "buildkit-edit-svc", "BuildKit (docker build)"),
        ("4", "1 file edited in the shared lib", "cbuild-edit-lib", "cbuild"),
        ("4", "1 file edited in the shared lib", "buildah-edit-lib", "buildah --layers (bud + push)"),
        ("4", "1 file edited in the shared lib", "buildkit-edit-lib", "BuildKit (docker build)"),
        ("5", "run-image change (rebase)", "cbuild-run-image", "cbuild"),
        ("6", "fresh local + warm remote cache", "cbuild-remote-warm", "cbuild"),
    ]
    for b in ("big1", "big2"):
        mb = big1_mb if b == "big1" else big2_mb
        rows += [
            ("L", "layer of %.0f MB" % mb, "layer-cbuild-gzip-" + b, "cbuild `layer` (gzip), cold"),
            ("L", "layer of %.0f MB" % mb, "layer-pigz-" + b, "`tar -c \\| pigz -p 2 -%s`" % m.get("GZIP_LEVEL", "6")),
            ("L", "layer of %.0f MB" % mb, "layer-cbuild-zstd-" + b, "cbuild `layer` (zstd), cold"),
            ("L", "layer of %.0f MB" % mb, "layer-zstd-" + b, "`tar -c \\| zstd -T2`"),
            ("L", "layer of %.0f MB" % mb, "layer-tar-" + b, "`tar -c` (no compression)"),
        ]
    big1x2_mb = int(m.get("BIG1X2_BYTES", 0) or 0) / 1e6
    rows.append(("L", "layer of %.0f MB, big1's file count" % big1x2_mb, "layer-cbuild-gzip-big1x2", "cbuild `layer` (gzip), cold"))
    for num, scen, name, tool in rows:
        if name not in res:
            if name == "cbuild-remote-warm" and m.get("HAS_REMOTE") == "0":
                L.append("| %s | %s | %s | — | — | — | — | — | not available in this build (`cbuild build --help` has no `--remote-cache`) |" % (num, scen, tool))
            elif name.startswith("buildah") and m.get("SKIP_BUILDAH_EFFECTIVE", "0") != "0":
                L.append("| %s | %s | %s | — | — | — | — | — | skipped (%s) |" % (num, scen, tool, m.get("SKIP_BUILDAH_EFFECTIVE")))
            elif name.startswith("buildkit") and m.get("SKIP_BUILDKIT_EFFECTIVE", "0") != "0":
                L.append("| %s | %s | %s | — | — | — | — | — | skipped (%s) |" % (num, scen, tool, m.get("SKIP_BUILDKIT_EFFECTIVE")))
            elif os.path.exists(os.path.join(rdir, "hferr-%s.txt" % name)):  # hf ran it, hyperfine failed
                L.append("| %s | %s | %s | — | — | — | — | — | **failed** (see results/hferr-%s.txt) |" % (num, scen, tool, name))
            continue
        r = res[name]
        note = ""
        if name.startswith("cbuild"):
            note = summ(name)
        if name.startswith("buildkit"):
            ctx, _ = context_sent(rdir, name)
            ecpu, hwm = engine_cpu(rdir, name, r["runs"])
            note = "context sent per run (5 builds): %s; engine CPU %s per run%s" % (
                human_bytes(ctx), ms(ecpu), ", dockerd peak RSS so far %s" % mib(hwm) if hwm else "")
        if name.startswith("layer-"):
            mb = big1_mb if name.endswith("big1") else big1x2_mb if name.endswith("big1x2") else big2_mb
            note = "%.0f MB/s" % (mb / r["median"])
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (num, scen, tool, ms(r["median"]), ms(r["min"]), ms(r["max"]), ms(r["cpu"]), mib(max(r["rss"]) if r["rss"] else 0), note))
    L.append("")

    # ---- ratios
    L.append("## Ratios\n")
    L.append("`x` = cbuild median / peer or limit median (below 1 = cbuild faster); throughput ratios are cbuild MB/s / limit MB/s.\n")
    L.append("| comparison | ratio | meaning |")
    L.append("|---|---|---|")

    def rrow(label, a, b, meaning):
        x = ratio(a, b)
        if x is not None:
            if x > 1 and "faster" in meaning:
                meaning = "cbuild is {x:.2f}× slower"
            L.append("| %s | %.2f× | %s |" % (label, x, meaning.format(inv=1 / x if x else 0, x=x)))

    rrow("cold: cbuild / BuildKit", "cbuild-cold", "buildkit-cold", "cbuild is {inv:.1f}× faster")
    rrow("no-op: cbuild / BuildKit", "cbuild-noop", "buildkit-noop", "cbuild is {inv:.1f}× faster")
    rrow("1-file edit: cbuild / BuildKit", "cbuild-edit-svc", "buildkit-edit-svc", "cbuild is {inv:.1f}× faster")
    rrow("1-file edit in lib: cbuild / BuildKit", "cbuild-edit-lib", "buildkit-edit-lib", "cbuild is {inv:.1f}× faster")
    rrow("cold: cbuild / buildah", "cbuild-cold", "buildah-cold", "cbuild is {inv:.1f}× faster")
    rrow("no-op: cbuild / buildah (bud + push)", "cbuild-noop", "buildah-noop", "cbuild is {inv:.1f}× faster")
    rrow("no-op: cbuild / buildah (bud only)", "cbuild-noop", "buildah-noop-nopush", "cbuild is {inv:.1f}× faster")
    rrow("no-op: cbuild / stat floor (find\\|xargs stat)", "cbuild-noop", "floor-stat", "{x:.2f}× the floor")
    rrow("no-op: cbuild / python stat walk", "cbuild-noop", "floor-pystat", "{x:.2f}× the floor")
    rrow("1-file edit: cbuild / buildah (bud + push)", "cbuild-edit-svc", "buildah-edit-svc", "cbuild is {inv:.1f}× faster")
    rrow("1-file edit: cbuild / buildah (bud only)", "cbuild-edit-svc", "buildah-edit-svc-nopush", "cbuild is {inv:.1f}× faster")
    rrow("1-file edit in lib: cbuild / buildah (bud + push)", "cbuild-edit-lib", "buildah-edit-lib", "cbuild is {inv:.1f}× faster")
    rrow("1-file edit in lib / cold", "cbuild-edit-lib", "cbuild-cold", "{x:.2f} of a cold build")
    rrow("run-image change / cold", "cbuild-run-image", "cbuild-cold", "{x:.2f} of a cold build")
    rrow("warm remote / cold", "cbuild-remote-warm", "cbuild-cold", "{x:.2f} of a cold build")
    for b, mb in (("big1", big1_mb), ("big2", big2_mb)):
        for c, peer in (("gzip", "pigz"), ("zstd", "zstd")):
            x = ratio("layer-%s-%s" % (peer, b), "layer-cbuild-%s-%s" % (c, b))
            if x is not None:
                L.append("| layer %.0f MB: cbuild %s / `tar\\|%s` throughput | %.0f %% | %.0f vs %.0f MB/s (wall) |" % (
                    mb, c, peer, 100 * x, mb / get("layer-cbuild-%s-%s" % (c, b)), mb / get("layer-%s-%s" % (peer, b))))
                y = ratio_cpu("layer-%s-%s" % (peer, b), "layer-cbuild-%s-%s" % (c, b))
                if y is not None:
                    L.append("| layer %.0f MB: same, per CPU second (user+sys) | %.0f %% | %.0f vs %.0f MB per CPU-s (less sensitive to other load) |" % (
                        mb, c and 100 * y, mb / get("layer-cbuild-%s-%s" % (c, b), "cpu"), mb / get("layer-%s-%s" % (peer, b), "cpu")))
    L.append("")

    # ---- targets
    L.append("## Targets (issue 10)\n")
    L.append("| target | measured | status |")
    L.append("|---|---|---|")

    def target(name, measured, ok, by):
        L.append("| %s | %s | %s |" % (name, measured, ("**met**" if ok else "**missed**") + (" — " + by if by else "")))

    x = ratio("cbuild-noop", "floor-stat")
    if x is not None:
        y = ratio("cbuild-noop", "floor-pystat")
        target("no-op ≤ 3× the stat floor", "%.2f× `find \\| xargs stat` (%s vs %s)%s" % (x, ms(get("cbuild-noop")), ms(get("floor-stat")),
               "; %.1f× a bare python `os.stat` walk (%s), which would miss" % (y, ms(get("floor-pystat"))) if y and y > 3 else ""), x <= 3,
               "%.0f %% headroom" % (100 * (1 - x / 3)) if x <= 3 else "%.1f× over the target (%.2f× instead of 3×; %s too slow)" % (x / 3, x, ms(get("cbuild-noop") - 3 * get("floor-stat"))))
    x = ratio("buildah-edit-svc", "cbuild-edit-svc")
    if x is not None:
        y = ratio("buildah-edit-svc-nopush", "cbuild-edit-svc")
        target("one-file edit ≥ 10× faster than buildah --layers", "%.1f× faster than bud + push%s" % (x, ", %.1f× than bud alone" % y if y else ""),
               x >= 10, ("%.1f× beyond the target" % (x / 10)) if x >= 10 else "%.1f× instead of 10× (cbuild would need ≤ %s, took %s)" % (x, ms(get("buildah-edit-svc") / 10), ms(get("cbuild-edit-svc"))))
    elif "cbuild-edit-svc" in res:
        target("one-file edit ≥ 10× faster than buildah --layers", "buildah not measured", False, "no peer data")
    x = ratio("layer-pigz-big1", "layer-cbuild-gzip-big1")
    if x is not None:
        target("cold layer creation ≥ 80 % of `tar \\| pigz -p 2` throughput", "%.0f %% (%.0f vs %.0f MB/s, %.0f MB)" % (
            100 * x, big1_mb / get("layer-cbuild-gzip-big1"), big1_mb / get("layer-pigz-big1"), big1_mb),
            x >= 0.8, "%.0f points above" % (100 * x - 80) if x >= 0.8 else "%.0f points short (%.0f %% of the needed throughput)" % (80 - 100 * x, 100 * x / 0.8))
    r1 = res.get("layer-cbuild-gzip-big1", {}).get("rss")
    r2 = res.get("layer-cbuild-gzip-big2", {}).get("rss")
    r3 = res.get("layer-cbuild-gzip-big1x2", {}).get("rss")
    f1, f2 = int(m.get("BIG1_FILES", 0) or 0), int(m.get("BIG2_FILES", 0) or 0)
    if r1 and r3:
        a, c = max(r1), max(r3)
        grow = c / a
        extra = ""
        if r2 and f2 > f1:
            extra = "; with 2× the files too (%s files, %.0f MB) %s, i.e. ≈ %.1f KiB per file" % (f2, big2_mb, mib(max(r2)), (max(r2) - a) / (f2 - f1))
        target("peak RSS independent of layer size", "%s for %.0f MB → %s for %.0f MB with the same %s files (×%.2f for ×%.1f the bytes)%s" % (
            mib(a), big1_mb, mib(c), big1x2_mb, f1, grow, big1x2_mb / big1_mb if big1_mb else 0, extra),
            grow <= 1.2, ("criterion ≤ 1.2× when the bytes double; RSS grows with the file count, not the bytes" if grow <= 1.2
                          else "grows %.0f %% when the bytes double (criterion ≤ 20 %%)" % (100 * (grow - 1))))
    elif r1 and r2:
        a, b = max(r1), max(r2)
        grow = b / a
        target("peak RSS independent of layer size", "%s for %.0f MB → %s for %.0f MB (×%.2f for ×%.1f the data and the files)" % (
            mib(a), big1_mb, mib(b), big2_mb, grow, big2_mb / big1_mb if big1_mb else 0),
            grow <= 1.2, "criterion: ≤ 1.2× when the layer doubles" if grow <= 1.2 else "grows %.0f %% when the layer doubles (criterion ≤ 20 %%)" % (100 * (grow - 1)))
    L.append("")

    # ---- targets of issue 23 (BuildKit, the shared-lib edit, the no-op)
    L.append("## Targets (issue 23)\n")
    L.append("| target | measured | status |")
    L.append("|---|---|---|")

    def faster(target_x, peer, mine, what):
        x = ratio(peer, mine)
        if x is not None:
            target(what, "%.1f× faster (cbuild %s, BuildKit %s)" % (x, ms(get(mine)), ms(get(peer))), x >= target_x,
                   "%.1f× beyond the target" % (x / target_x) if x >= target_x else
                   "%.1f× instead of %g× (cbuild would need ≤ %s)" % (x, target_x, ms(get(peer) / target_x)))
        elif mine in res:
            target(what, "BuildKit not measured (%s)" % m.get("SKIP_BUILDKIT_EFFECTIVE", "?"), False, "no peer data")

    faster(10, "buildkit-edit-svc", "cbuild-edit-svc", "one-file edit ≥ 10× faster than BuildKit")
    faster(3, "buildkit-cold", "cbuild-cold", "cold build ≥ 3× faster than BuildKit")
    sums = [t for c, t in action_sums(rdir, "cbuild-edit-lib", "build") if c]
    if "cbuild-edit-lib" in res and sums:
        own = statistics.median(sums)
        counts = sorted({c for c, t in action_sums(rdir, "cbuild-edit-lib", "build") if c})
        det = [t for c, t in action_sums(rdir, "cbuild-edit-lib", "detect") if c]
        x = get("cbuild-edit-lib") / own
        target("shared-lib edit ≤ 1.2× the sum of the buildpacks' own time",
               "%s wall vs %s of `build` actions (%s per run, median over %d runs; `detect` besides: %s) = %.2f×" % (
                   ms(get("cbuild-edit-lib")), ms(own), "/".join(str(c) for c in counts), len(sums),
                   ms(statistics.median(det)) if det else "—", x),
               x <= 1.2, ("%.0f %% headroom" % (100 * (1 - x / 1.2))) if x <= 1.2 else
               "%.2f× over (%s beyond 1.2× the build actions)" % (x / 1.2, ms(get("cbuild-edit-lib") - 1.2 * own)))
    elif "cbuild-edit-lib" in res:
        target("shared-lib edit ≤ 1.2× the sum of the buildpacks' own time", "no executed `build` actions in out-cbuild-edit-lib.jsonl", False, "no data")
    x = ratio("cbuild-noop", "floor-pystat")
    if x is not None:
        n = get("cbuild-noop")
        ok = x <= 2 and n <= 0.1
        why = []
        if x > 2:
            why.append("%.1f× over the 2× (cbuild would need ≤ %s)" % (x / 2, ms(2 * get("floor-pystat"))))
        if n > 0.1:
            why.append("%s over 100 ms" % ms(n - 0.1))
        k, runs = from_record(rdir, "cbuild-noop")
        target("no-op ≤ 2× an `os.scandir` + `stat` walk and ≤ 100 ms",
               "%s = %.2f× the walk (%s over %s files; %d of %d runs answered from the no-op record)" % (
                   ms(n), x, ms(get("floor-pystat")), m.get("MONO_FILES", "?"), k, runs), ok,
               "; ".join(why) if why else "%.0f %% headroom on the ratio" % (100 * (1 - x / 2)))
    # peak RSS of a 100,000-file layer (bench/rss.sh: lines "BIN FILES cold|noop RUN KiB MS")
    cold = {}
    for line in read(os.path.join(rdir, "rss-files.txt")).splitlines():
        p = line.split()
        if len(p) == 6 and p[0] == "after" and p[2] == "cold":
            cold.setdefault(int(p[1]), []).append(int(p[4]))
    if cold:
        big = max(cold)
        v = sorted(cold[big])[len(cold[big]) // 2]
        counts = sorted(cold)
        per = ""
        if len(counts) > 2:
            lo = counts[1]
            w = sorted(cold[lo])[len(cold[lo]) // 2]
            per = "; %.0f bytes per file from %d to %d files" % ((v - w) * 1024 / (big - lo), lo, big)
        target("peak RSS ≤ 100 MiB for a layer of 100,000 files", "%s for %d files (median of %d runs, 100 MB of files)%s" % (
            mib(v), big, len(cold[big]), per), big >= 100000 and v <= 100 * 1024,
            "%.2f× the limit" % (v / (100 * 1024)) if v <= 100 * 1024 else "%.2f× the limit, %.0f MiB over" % (v / (100 * 1024), (v - 100 * 1024) / 1024))
    L.append("")
    L.append("The buildpacks' own time is read from cbuild's `--json` events of the `cbuild-edit-lib` runs "
             "(`out-cbuild-edit-lib.jsonl`): the sum of `duration` over the `finished` events with `action: build` and "
             "`outcome: executed` in each run (runs end at their `summary` event), median over the runs. A `build` action's "
             "duration covers the whole action — sandbox set-up, reconciling the app dir, restoring layers, the buildpacks' "
             "`bin/build`, writing the layers — so it bounds the buildpacks' own time from above, and the actions of two "
             "services overlap in time on 2 cores; `detect` and `export` are not counted.\n")

    # ---- per-scenario executed actions
    L.append("## What ran\n")
    L.append("From the `--json` summary of each cbuild run (all runs of a scenario; distinct `executed` values joined by `/`):\n")
    for name in ("cbuild-cold", "cbuild-noop", "cbuild-edit-svc", "cbuild-edit-lib", "cbuild-run-image", "cbuild-remote-warm"):
        if name in res:
            k = res[name]["kinds"]
            detail = ", ".join("%d× %s (%.1f s of action time)" % (c, a, t / 1000) for a, (c, t) in sorted(k.items(), key=lambda x: -x[1][1]))
            L.append("- `%s`: %s%s" % (name, summ(name), "; last run executed " + detail if detail else ""))
    extra = read(os.path.join(rdir, "executed.md")).strip()
    if extra:
        L.append("\n" + extra)
    L.append("")

    # ---- commands
    L.append("## Commands\n")
    L.append("Each row ran as `hyperfine --runs N --prepare PREPARE '/usr/bin/time -f %%M -a -o rss-NAME.txt bin/NAME.sh'`; "
             "`W` is the work dir (`%s`), `cbuild` is `%s`.\n" % (m.get("WORKDIR", "?"), m.get("CBUILD", "?")))
    L.append("| name | prepare | command |")
    L.append("|---|---|---|")
    wd = m.get("WORKDIR", "\0")
    cb = m.get("CBUILD", "\0")
    for name, r in res.items():
        c = (r["cmd"][0] if r["cmd"] else "").replace("exec ", "", 1).replace(cb, "cbuild").replace(wd, "W")
        p = r["prepare"].replace(wd, "W")
        c = c.replace("\n", " ").replace("|", "\\|")
        if len(c) > 200:
            c = c[:200] + "…"
        L.append("| %s | `%s` | `%s` |" % (name, p.replace("|", "\\|"), c))
    L.append("")
    L.append("buildah: `W/buildah/build.sh` runs, for each service, `buildah --root W/buildah/storage --runroot W/buildah/run "
             "--storage-driver overlay bud --quiet --isolation chroot --layers --build-arg BASE=W/buildah/base:latest "
             "-f W/mono/peer/SVC.Dockerfile -t localhost/SVC:latest W/mono`, then `buildah push` to `oci:W/buildah/out/SVC:latest` "
             "(skipped when NOPUSH=1). The base is `cbuild-out/stacks/run-image` copied as an OCI layout. Example Dockerfile:\n")
    df = read(os.path.join(wd, "mono", "peer", "svc00.Dockerfile"))
    if df:
        L.append("```dockerfile\n" + df.strip() + "\n```\n")
    if m.get("SKIP_BUILDKIT_EFFECTIVE", "0") == "0":
        shared = m.get("BUILDKIT_CONTEXT") == "shared"
        L.append("BuildKit: `W/docker/build.sh` runs, for each service, `DOCKER_BUILDKIT=1 /usr/bin/docker build --network none "
                 "--progress=plain --build-arg BASE=cbuild-bench/run:latest -f W/mono/peer/SVC.bk.Dockerfile "
                 "-t cbuild-bench/SVC:latest %s` against a throwaway engine (`../shared/harness/dockerd.sh start W/docker/engine`: "
                 "its own data root, no bridge network), stopped after the BuildKit scenarios. The base image is the example run image "
                 "cbuild built, written by `cbuild export //stacks:run-image --tag cbuild-bench/run:latest` (docker-archive) and "
                 "`docker load`ed. The cold scenario's prepare is `docker builder prune -af` (all build cache, the synced contexts "
                 "too) and `docker image rm` of the five service images; the base image stays. Example Dockerfile:\n" % (
                     "W/mono" if shared else "W/docker/ctx/SVC"))
        bk = read(os.path.join(wd, "mono", "peer", "svc00.bk.Dockerfile"))
        if bk:
            L.append("```dockerfile\n" + bk.strip() + "\n```\n")
        ign = read(os.path.join(wd, "mono", "peer", "svc00.bk.Dockerfile.dockerignore"))
        L.append("**BuildKit's build context.** Each Dockerfile has its own ignore file next to it (`SVC.bk.Dockerfile.dockerignore`, "
                 "which BuildKit's Dockerfile frontend reads instead of the context's `.dockerignore`), so a build sends only `lib/src` and "
                 "its service:\n")
        if ign:
            L.append("```\n" + ign.strip() + "\n```\n")
        med = {n: context_sent(rdir, n)[0] for n in ("buildkit-cold", "buildkit-noop", "buildkit-edit-svc", "buildkit-edit-lib")}
        if any(v is not None for v in med.values()):
            nsvc = max(1, int(m.get("SERVICES", 5) or 5))
            frac = float(m.get("LIB_FRAC", 0.2) or 0.2)
            L.append("Context sent per build (`transferring context` lines of `--progress=plain`, per run of the %d builds / %d, "
                     "median over runs): %s. For comparison, `lib/src` + one service is ≈ %.1f MB and the monorepo %.1f MB: a cold "
                     "build sends what its COPYs name, a rebuild only file metadata and the changed files. (BuildKit 20.10 also "
                     "restricts the context to the paths its COPY/ADD instructions name; the ignore file keeps the context "
                     "the same as buildah's, which honours the root `.dockerignore`.)\n" % (
                         nsvc, nsvc, ", ".join("%s %s" % (n.split("-", 1)[1], human_bytes(v / nsvc)) for n, v in med.items() if v is not None),
                         mono_mb * (frac + (1 - frac) / nsvc), mono_mb))
        if shared:
            L.append("The bind mounts failed in this run, so every service built from the same context path: BuildKit keeps one "
                     "synced copy per context path, and each build re-sent its service's files.\n")
        else:
            L.append("Each service builds from its own context path, `W/docker/ctx/SVC`, a bind mount of the monorepo: BuildKit keeps "
                     "one synced copy of a context per client and context path (the path is its session's shared key), so with one "
                     "shared path each build would replace the previous service's files and re-send its own (measured: a no-op "
                     "sends ≈ 35 kB of metadata per build with a path per service, the service's whole source with a shared one).\n")

    rss_table = read(os.path.join(rdir, "rss-files.md")).strip()
    if rss_table:
        L.append("## Peak RSS and the file count (bench/rss.sh)\n")
        L.append(rss_table + "\n")
    for title, f in (("Why", "why.md"), ("Profile", "profile.md"), ("Peak RSS (issue 23)", "rss.md"),
                     ("Remote cache (bench/remote.sh)", "remote.md"),
                     ("Multi-platform builds (bench/multiarch.sh)", "multiarch.md"),
                     ("Remote execution (bench/remote-exec.sh)", "remote-exec.md")):
        t = read(os.path.join(HERE, "notes", f)).strip()
        if t:
            L.append("## %s\n" % title)
            L.append(t + "\n")
    with open(out, "w") as fh:
        fh.write("\n".join(L).rstrip() + "\n")


if __name__ == "__main__":
    main()
