#!/usr/bin/env python3
"""gen.py - generate a deterministic cbuild benchmark workspace (Python 3 stdlib only).

Usage:
  bench/gen.py mono DIR [--services N] [--files F] [--size-mb S] [--lib-frac X] [--seed K]
      A monorepo: N services (default 5), F files in total (default 10000), ~S MB of source
      (default 100), LIB_FRAC of it (default 0.2) in one shared library package that every
      service depends on.  Copies stacks/, builders/, buildpacks/ from examples/ (so cbuild runs
      the real example buildpacks) with one change: the run image is `run-base` + a small
      `run-layer` (stacks/run-layer/**), and the build image sits on `run-base`, so editing
      stacks/run-layer/etc/patch-level changes the run image only (the rebase path).
      Per service:  cnb_image  :image  (srcs = the service's files + //lib:bundle, a tar of lib/src)
                    layer      :app-layer + oci_image :plain (base //stacks:run-image,
                               layers //lib:layer + :app-layer)   -- the plain path
      Also writes DIR/peer/<svc>.Dockerfile (the buildah equivalent), DIR/.dockerignore, and
      DIR/peer/<svc>.bk.Dockerfile (the BuildKit equivalent: `FROM ${BASE}`, an image in the engine)
      with DIR/peer/<svc>.bk.Dockerfile.dockerignore (its context: lib/src + the service only).
  bench/gen.py big DIR [--files F] [--size-mb S] [--seed K]
      A one-package workspace with one `layer` target //big:layer over F files / S MB
      (default 20000 / 200): the layer-creation and RSS-vs-layer-size benchmark.

Env equivalents: SERVICES, FILES, SIZE_MB, LIB_FRAC, SEED (flags win).  Content is seeded
pseudo-random text (words, identifiers, numbers; a 16 MiB pool sliced per file) so gzip has real
work (~3:1) and every run generates the same bytes.  DIR is wiped first.
"""
import argparse
import os
import random
import re
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")

WORDS = (
    "const let var function return if else for while switch case break continue import export "
    "from default class extends new this super async await yield try catch finally throw typeof "
    "instanceof null undefined true false module require exports request response handler config "
    "service client server router middleware logger cache buffer stream encode decode parse "
    "format value result error status header body query params user account session token "
    "create update delete fetch store load save index count total offset limit page items "
    "map filter reduce push pop slice splice join split trim length keys values entries"
).split()
POOL_SIZE = 16 << 20
PER_DIR = 50


def make_pool(rng):
    """~16 MiB of code-like text: lines of words, identifiers and numbers."""
    out = []
    n = 0
    choice, rand = rng.choice, rng.random
    while n < POOL_SIZE:
        k = rng.randint(3, 12)
        parts = []
        for _ in range(k):
            r = rand()
            if r < 0.70:
                parts.append(choice(WORDS))
            elif r < 0.85:
                parts.append(choice(WORDS) + choice(WORDS).capitalize() + str(rng.randint(0, 99)))
            else:
                parts.append(str(rng.randint(0, 1 << 20)))
        line = "  " * rng.randint(0, 4) + " ".join(parts) + (";" if rand() < 0.6 else " {") + "\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:POOL_SIZE]


def sizes(rng, count, total):
    """`count` sizes summing to ~`total` bytes, spread 0.25x..1.75x of the mean (min 64 B)."""
    if count <= 0:
        return []
    raw = [0.25 + 1.5 * rng.random() for _ in range(count)]
    scale = total / sum(raw)
    return [max(64, int(r * scale)) for r in raw]


def write_tree(root, sub, count, total, rng, pool, ext=".js", tag=""):
    """`count` files under root/sub/mNNN/fNNNNN<ext>, 50 per directory. Returns bytes written."""
    written = 0
    for i, sz in enumerate(sizes(rng, count, total)):
        d = os.path.join(root, sub, "m%03d" % (i // PER_DIR))
        if i % PER_DIR == 0:
            os.makedirs(d, exist_ok=True)
        head = ("// %s%s/f%05d seed-line %d\n" % (tag, sub, i, rng.getrandbits(48))).encode()
        off = rng.randrange(0, len(pool) - sz)
        data = head + pool[off:off + max(0, sz - len(head))]
        with open(os.path.join(d, "f%05d%s" % (i, ext)), "wb") as f:
            f.write(data)
        written += len(data)
    return written


def w(path, text, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    if mode:
        os.chmod(path, mode)


STACKS_BUILD_TAIL = '''
# --- bench: the run image is run-base + one small layer (stacks/run-layer/**); the build image sits
# on run-base, so editing stacks/run-layer/etc/patch-level changes the run image only (rebase path).
layer(name = "run-layer", srcs = glob(["run-layer/**"]), strip_prefix = "run-layer")

oci_image(
    name = "run-image",
    base = ":run-base",
    layers = [":run-layer"],
)
'''


BUILDPACKS = ("shell-web", "static", "procfile")
DEFAULT_BUILDER = '''builder(
    name = "default",
    stack = "//stacks:default",
    order = [
        ["//buildpacks:shell-web", optional("//buildpacks:procfile")],
        ["//buildpacks:procfile"],
        ["//buildpacks:static"],
    ],
)
'''


def copy_examples(ws):
    """The example busybox stack, the three shell buildpacks and the default builder, and nothing
    else of examples/ (other stacks or builders there may need the network or be in progress)."""
    os.makedirs(os.path.join(ws, "stacks"))
    shutil.copy(os.path.join(EXAMPLES, "stacks", "BUILD.star"), os.path.join(ws, "stacks", "BUILD.star"))
    shutil.copytree(os.path.join(EXAMPLES, "stacks", "rootfs"), os.path.join(ws, "stacks", "rootfs"), symlinks=True)
    os.makedirs(os.path.join(ws, "buildpacks"))
    for bp in BUILDPACKS:
        shutil.copytree(os.path.join(EXAMPLES, "buildpacks", bp), os.path.join(ws, "buildpacks", bp), symlinks=True)
    lines = [l for l in open(os.path.join(EXAMPLES, "buildpacks", "BUILD.star")).read().splitlines(True)
             if l.startswith("#") or any('name = "%s"' % bp in l for bp in BUILDPACKS)]
    w(os.path.join(ws, "buildpacks", "BUILD.star"), "".join(lines))
    # the `default` builder block of examples/builders/BUILD.star (fallback: the same text built in)
    m = re.search(r'^builder\(\n    name = "default",\n.*?^\)\n', open(os.path.join(EXAMPLES, "builders", "BUILD.star")).read(), re.S | re.M)
    w(os.path.join(ws, "builders", "BUILD.star"), "# the default builder of examples/builders/BUILD.star\n" + (m.group(0) if m else DEFAULT_BUILDER))
    p = os.path.join(ws, "stacks", "BUILD.star")
    s = open(p).read()
    a = 'oci_image(\n    name = "run-image",'
    b = 'oci_image(\n    name = "build-image",\n    base = ":run-image",'
    if a not in s or b not in s:
        sys.exit("gen.py: examples/stacks/BUILD.star changed shape; update copy_examples()")
    s = s.replace(b, 'oci_image(\n    name = "build-image",\n    base = ":run-base",')
    s = s.replace(a, 'oci_image(\n    name = "run-base",')
    w(p, s + STACKS_BUILD_TAIL)
    w(os.path.join(ws, "stacks", "run-layer", "etc", "patch-level"), "patch 0\n")


KINDS = ("shell-web", "procfile", "static")


def service_files(kind, name):
    """The marker files that make the example buildpacks detect the service."""
    if kind == "shell-web":
        return {
            "server.sh": ("#!/bin/sh\n# %s: busybox httpd on 127.0.0.1:$PORT\n"
                          "exec httpd -f -p \"127.0.0.1:${PORT:-8080}\" -h /workspace/public\n" % name, 0o755),
            "public/index.html": ("<!doctype html><title>%s</title>\n" % name, None),
        }
    if kind == "procfile":
        return {"Procfile": ("web: httpd -f -p 127.0.0.1:${PORT:-8080} -h /workspace\n"
                             "once: echo \"%s ran once\"\n" % name, None)}
    return {"index.html": ("<!doctype html><title>%s</title><h1>%s</h1>\n" % (name, name), None)}


# What each buildpack's build step does, as a Dockerfile RUN (the buildah peer's equivalent).
RUN_STEP = {
    "shell-web": "cd /workspace && mkdir -p /layers/web/share public && sha256sum server.sh | cut -c1-12 "
                 "| tee /layers/web/share/version > public/version",
    "procfile": "cd /workspace && mkdir -p /layers && grep -v '^#' Procfile > /layers/launch.txt",
    "static": "cd /workspace && echo \"static: $(find . -type f | wc -l) file(s)\" > /tmp/static.log",
}


def gen_mono(ws, n_services, n_files, size_mb, lib_frac, seed):
    rng = random.Random(seed)
    pool = make_pool(rng)
    w(os.path.join(ws, "cbuild.toml"), "# generated by bench/gen.py\n[build]\ncompression = \"gzip\"\n")
    copy_examples(ws)
    total = int(size_mb * (1 << 20))
    lib_files = max(1, int(n_files * lib_frac))
    lib_bytes = int(total * lib_frac)
    svc_files = max(n_services, n_files - lib_files)
    svc_bytes = total - lib_bytes
    written = write_tree(os.path.join(ws, "lib"), "src", lib_files, lib_bytes, rng, pool, tag="lib/")
    # The lib as one deterministic tar (the "vendored dependency" each app receives) + as a layer.
    w(os.path.join(ws, "lib", "BUILD.star"), '''# generated by bench/gen.py: the shared library every service depends on.
genrule(
    name = "bundle",
    srcs = glob(["src/**"]),
    outs = ["lib.tar"],
    cmd = "tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf lib.tar src",
)

layer(name = "layer", srcs = glob(["src/**"]), strip_prefix = "src", prefix = "/workspace/lib")
''')
    services = []
    for s in range(n_services):
        name = "svc%02d" % s
        kind = KINDS[s % len(KINDS)]
        services.append((name, kind))
        root = os.path.join(ws, "services", name)
        fixed = service_files(kind, name)
        nf = svc_files // n_services + (1 if s < svc_files % n_services else 0)
        nf = max(0, nf - len(fixed))
        written += write_tree(root, "src", nf, svc_bytes // n_services, rng, pool, tag=name + "/")
        for rel, (text, mode) in fixed.items():
            w(os.path.join(root, rel), text, mode)
        w(os.path.join(root, "BUILD.star"), '''# generated by bench/gen.py: a %(kind)s service.
cnb_image(
    name = "image",
    srcs = glob(["**"], exclude = ["BUILD.star"]) + ["//lib:bundle"],
    builder = "//builders:default",
)

# The plain path: the same files as a layer on the run image, the lib as its own layer.
layer(name = "app-layer", srcs = glob(["**"], exclude = ["BUILD.star"]), prefix = "/workspace")

oci_image(
    name = "plain",
    base = "//stacks:run-image",
    layers = ["//lib:layer", ":app-layer"],
    workdir = "/workspace",
    user = "1000:1000",
    cmd = ["/bin/sh", "-c", "ls /workspace"],
)
''' % {"kind": kind})
        # buildah peer: FROM the run image (OCI layout), COPY lib + service, a RUN like the buildpack's.
        w(os.path.join(ws, "peer", name + ".Dockerfile"), '''# generated by bench/gen.py: buildah equivalent of //services/%(name)s:image
ARG BASE
FROM oci:${BASE}
USER 0
COPY lib/src /workspace/lib
COPY services/%(name)s /workspace
RUN sh -c '%(run)s'
USER 1000:1000
WORKDIR /workspace
CMD ["/bin/sh", "-c", "ls /workspace"]
''' % {"name": name, "run": RUN_STEP[kind]})
        # BuildKit peer (docker build, DOCKER_BUILDKIT=1): the same steps, FROM an image in the engine's
        # store; its own ignore file (<Dockerfile>.dockerignore, read by BuildKit's Dockerfile frontend)
        # sends only lib/src and this service as the context.
        w(os.path.join(ws, "peer", name + ".bk.Dockerfile"), '''# generated by bench/gen.py: BuildKit equivalent of //services/%(name)s:image (same steps as %(name)s.Dockerfile)
ARG BASE
FROM ${BASE}
USER 0
COPY lib/src /workspace/lib
COPY services/%(name)s /workspace
RUN sh -c '%(run)s'
USER 1000:1000
WORKDIR /workspace
CMD ["/bin/sh", "-c", "ls /workspace"]
''' % {"name": name, "run": RUN_STEP[kind]})
        w(os.path.join(ws, "peer", name + ".bk.Dockerfile.dockerignore"),
          "# generated by bench/gen.py: the context of %s.bk.Dockerfile is lib/src and services/%s only\n"
          "*\n!lib/src\n!services/%s\n**/BUILD.star\n" % (name, name, name))
    w(os.path.join(ws, ".dockerignore"), "cbuild-out\npeer\n**/BUILD.star\n")
    w(os.path.join(ws, "peer", "services.txt"), "".join("%s %s\n" % sv for sv in services))
    return written


def gen_big(ws, n_files, size_mb, seed):
    rng = random.Random(seed)
    pool = make_pool(rng)
    w(os.path.join(ws, "cbuild.toml"), "# generated by bench/gen.py\n[build]\ncompression = \"gzip\"\n")
    written = write_tree(os.path.join(ws, "big"), "data", n_files, int(size_mb * (1 << 20)), rng, pool, tag="big/")
    w(os.path.join(ws, "big", "BUILD.star"),
      '# generated by bench/gen.py: one big layer.\nlayer(name = "layer", srcs = glob(["data/**"]))\n'
      'layer(name = "layer-zstd", srcs = glob(["data/**"]), compression = "zstd")\n')
    return written


def main():
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["mono", "big"])
    ap.add_argument("dir")
    ap.add_argument("--services", type=int, default=int(env("SERVICES", 5)))
    ap.add_argument("--files", type=int, default=None)
    ap.add_argument("--size-mb", type=float, default=None)
    ap.add_argument("--lib-frac", type=float, default=float(env("LIB_FRAC", 0.2)))
    ap.add_argument("--seed", type=int, default=int(env("SEED", 42)))
    a = ap.parse_args()
    if a.mode == "mono":
        files = a.files if a.files is not None else int(env("FILES", 10000))
        size = a.size_mb if a.size_mb is not None else float(env("SIZE_MB", 100))
    else:
        files = a.files if a.files is not None else 20000
        size = a.size_mb if a.size_mb is not None else 200
    if os.path.exists(a.dir):
        shutil.rmtree(a.dir)
    os.makedirs(a.dir)
    if a.mode == "mono":
        n = gen_mono(a.dir, a.services, files, size, a.lib_frac, a.seed)
    else:
        n = gen_big(a.dir, files, size, a.seed)
    count = sum(len(fs) for _, _, fs in os.walk(a.dir))
    print("%s: %d files, %.1f MB of generated source" % (a.dir, count, n / (1 << 20)))


if __name__ == "__main__":
    main()
