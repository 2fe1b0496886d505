#!/usr/bin/env python3
"""A data-root migration by us vs what users do by hand, on real content.

    python3 bench/migrate.py [--rounds 3] [--pairs vfs:overlay2,overlay2:vfs,overlay2:btrfs]
                             [--dir /var/tmp] [--sync]

A private dockerd on the source driver imports two images made from this
host's own trees (/usr/include with /usr/lib/python3.11, and /usr/share/doc:
many small files, symlinks, long names). Each round starts from a copy of
that data-root and times, side by side:

- ours: ``migrate.migrate(data_root, source, target)`` (in-process);
- Docker's way: ``docker save`` of every image from a dockerd on the
  source, then ``docker load`` into a dockerd on the target (daemon starts
  and stops not counted);
  target ``containerd`` is Docker's containerd image store: ours is
  ``to_containerd.migrate``, Docker's way is 20.10's ``docker save`` then
  Engine 26.1's ``docker load`` with ``features.containerd-snapshotter``;
- GNU tar: ``tar -xpf`` of the same layer tars into an empty directory,
  the floor for writing those files at all.

``--dir`` is where the data-roots live (/dev/shm: tmpfs; /var/tmp: the
disk). A pair with btrfs runs on a btrfs made on a loop file in that
directory. ``--sync`` ends each timed step with sync(2), so that what is
timed is on the disk. Prints each round and the median ratios (lower is
better for us).
"""

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, ".build"))
sys.path.insert(0, ROOT)

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (  # noqa: E402
    migrate, to_containerd)
from tests.support.dockerd import ENGINES, dockerd  # noqa: E402
from tests.support.loop import loop_filesystem  # noqa: E402

TREES = {"strata/bench-dev:1": ["/usr/include", "/usr/lib/python3.11"], "strata/bench-doc:1": ["/usr/share/doc"]}


def sh(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def build_template(work, source):
    """A data-root the source driver's dockerd wrote, and the layer tars."""
    data_root = os.path.join(work, "template")
    tars = []
    with dockerd(os.path.join(work, "d-build"), source, data_root) as d:
        for tag, trees in sorted(TREES.items()):
            tar = os.path.join(work, tag.split("/")[1].replace(":", "-") + ".tar")
            sh("tar", "-C", "/", "-cf", tar, *[t.lstrip("/") for t in trees])
            d.docker("import", tar, tag)
            tars.append(tar)
    return data_root, tars


SYNC = False


def timed(fn):
    if SYNC:
        os.sync()   # what earlier steps left dirty (the data-root copy) is not this step's
    start = time.monotonic()
    fn()
    if SYNC:
        os.sync()
    return time.monotonic() - start


def round_once(work, template, tars, source, target, n):
    ours_root = os.path.join(work, "ours-%d" % n)
    sh("cp", "-a", template, ours_root)
    if target == "containerd":
        ours = timed(lambda: to_containerd.migrate(ours_root, source))
    else:
        ours = timed(lambda: migrate.migrate(ours_root, source, target))

    theirs_root = os.path.join(work, "theirs-%d" % n)
    sh("cp", "-a", template, theirs_root)
    saved = os.path.join(work, "saved-%d.tar" % n)
    with dockerd(os.path.join(work, "d-save-%d" % n), source, theirs_root) as d:
        save = timed(lambda: d.docker("save", "-o", saved, *sorted(TREES)))
    fresh = os.path.join(work, "loaded-%d" % n)
    if target == "containerd":
        loader = dockerd(os.path.join(work, "d-load-%d" % n), None, fresh, engine="26.1",
                         config={"features": {"containerd-snapshotter": True}})
    else:
        loader = dockerd(os.path.join(work, "d-load-%d" % n), target, fresh)
    with loader as d:
        load = timed(lambda: d.docker("load", "-i", saved))

    out = os.path.join(work, "tar-%d" % n)
    os.mkdir(out)
    gnu = timed(lambda: [sh("tar", "-C", out, "-xpf", t) for t in tars])
    for path in (ours_root, theirs_root, fresh, out, saved):
        subprocess.run(["rm", "-rf", path], check=False)
    return ours, save, load, gnu


@contextlib.contextmanager
def workspace(where, pair):
    """A work directory in ``where``; on a loop-file btrfs there for a pair
    with btrfs (Docker's btrfs driver needs its data-root on one)."""
    work = tempfile.mkdtemp(prefix="strata-bench-migrate-", dir=where)
    try:
        if "btrfs" not in pair:
            yield work
            return
        with loop_filesystem("btrfs", size_mb=8192, directory=work) as mnt:
            yield mnt
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_pair(where, source, target, rounds):
    with workspace(where, (source, target)) as work:
        template, tars = build_template(work, source)
        print("\n%s -> %s in %s%s, %d images from %s, %.0f MB of layer tars"
              % (source, target, where, " (btrfs on a loop file)" if "btrfs" in (source, target) else "",
                 len(TREES), ", ".join(t for ts in TREES.values() for t in ts),
                 sum(os.path.getsize(t) for t in tars) / 1e6))
        print("%-6s %10s %10s %10s %10s %16s %12s" % ("round", "ours s", "save s", "load s", "tar s",
                                                      "ours/(save+load)", "ours/tar"))
        vs_docker, vs_tar = [], []
        for n in range(rounds):
            ours, save, load, gnu = round_once(work, template, tars, source, target, n)
            vs_docker.append(ours / (save + load))
            vs_tar.append(ours / gnu)
            print("%-6d %10.2f %10.2f %10.2f %10.2f %15.2fx %11.2fx" % (n + 1, ours, save, load, gnu,
                                                                       vs_docker[-1], vs_tar[-1]))
        print("median %49s %15.2fx %11.2fx" % ("", statistics.median(vs_docker), statistics.median(vs_tar)))


def main():
    global SYNC
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pairs", default="vfs:overlay2",
                    help="source:target,... (default vfs:overlay2)")
    ap.add_argument("--dir", default=None, help="where the data-roots live (default: the temp dir)")
    ap.add_argument("--sync", action="store_true", help="end each timed step with sync(2)")
    args = ap.parse_args()
    SYNC = args.sync
    # a containerd target runs Engine 26.1's containerd and ctr, as its host would
    os.environ["PATH"] = ENGINES["26.1"].path
    print("timed steps end with sync(2)" if SYNC else "timed steps do not sync")
    for pair in args.pairs.split(","):
        source, target = pair.split(":")
        bench_pair(args.dir, source, target, args.rounds)


if __name__ == "__main__":
    main()
