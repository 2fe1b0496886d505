#!/usr/bin/env python3
"""Applying a layer: ours against GNU tar (and our previous version), side by side.

Two layer tars, both written by our ``tar_tree`` (Docker's wire format):

* real: this machine's ``/usr`` (share, include, sbin and the Python
  library: ~70,000 entries, ~950 MB, with symlinks and PAX headers);
* synthetic: 20,000 small files in 100 directories plus four 50 MB files.

Each is extracted onto tmpfs (``/dev/shm``) and onto disk (``/var/tmp``),
``--rounds`` rounds, the contenders interleaved and their order rotated
each round: ``apply_layer`` of this tree, GNU tar (``tar -xpf --xattrs
--xattrs-include='*' --same-owner``, what Docker's own extraction does) and,
with ``--previous REV``, ``apply_layer`` of that git revision. Each runs in
a fresh process into a fresh directory, timed around the extraction alone
(ours from inside the process, so Python's start-up is not counted; GNU
tar's exec is). Both read the same tar from the page cache. Wall clock and
CPU (user + system) per run; the table shows medians and the ratios to GNU
tar. On a disk the wall clock mostly measures the filesystem; tmpfs
compares the work done per entry.

    sudo python3 bench/apply.py [--rounds N] [--previous REV] [--only real|synthetic]
                                [--media tmpfs,disk] [--profile] [--keep-tars DIR]

Run on a shared machine: read the ratios, not the absolute times.
"""

import argparse
import cProfile
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(ROOT, ".build")
sys.path.insert(0, BUILD)

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (  # noqa: E402
    archive)

REAL_PATHS = ["usr/share", "usr/include", "usr/sbin", "usr/lib/python3",
              "usr/lib/python3.%d" % sys.version_info[1]]
MEDIA = {"tmpfs": "/dev/shm", "disk": "/var/tmp"}
GNU_TAR = ["tar", "-xpf", None, "--xattrs", "--xattrs-include=*", "--same-owner", "-C", None]

# Runs in a child: one apply_layer from the collection under sys.argv[1].
CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
try:
    from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.unpack import apply_layer
except ImportError:  # before archive.py was split
    from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.archive import apply_layer
with open(sys.argv[2], "rb") as f:
    w, c = time.perf_counter(), time.process_time()
    apply_layer(sys.argv[3], f)
    print(time.perf_counter() - w, time.process_time() - c)
"""


def make_synthetic(src, small=20000, dirs=100, big=4, big_mb=50):
    rnd = os.urandom(1 << 16)
    per_dir = small // dirs
    n = 0
    for d in range(dirs):
        dpath = os.path.join(src, "dir-%03d" % d)
        os.mkdir(dpath)
        for _ in range(per_dir):
            size = 64 + (n * 397) % 8000
            with open(os.path.join(dpath, "file-%05d" % n), "wb") as f:
                f.write(rnd[n % 4096:n % 4096 + size])
            n += 1
    chunk = os.urandom(1 << 20)
    for b in range(big):
        with open(os.path.join(src, "big-%d" % b), "wb") as f:
            for _ in range(big_mb):
                f.write(chunk)


def write_tar(root, path, include=None):
    with archive.tar_tree(root, include=include) as stream, open(path, "wb") as out:
        shutil.copyfileobj(stream, out, 1 << 20)


def layer_tars(work, only, keep=None):
    """The layer tars, written in ``work``, or in ``keep`` if not there yet
    (to compare runs on the very same tars)."""
    where = keep or work
    tars = {}
    if only in (None, "real"):
        path = os.path.join(where, "real.tar")
        if not os.path.exists(path):
            write_tar("/", path, [p for p in REAL_PATHS if os.path.isdir("/" + p)])
        tars["real /usr"] = path
    if only in (None, "synthetic"):
        path = os.path.join(where, "synthetic.tar")
        if not os.path.exists(path):
            src = os.path.join(work, "src")
            os.mkdir(src)
            make_synthetic(src)
            write_tar(src, path)
            shutil.rmtree(src)
        tars["synthetic"] = path
    return tars


def count_entries(tar):
    from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import tarstream
    with open(tar, "rb") as f:
        return sum(1 for _ in tarstream.iter_entries(f))


def previous_tree(work, rev):
    """The collection as of git revision ``rev``, importable from the returned path."""
    dest = os.path.join(work, "previous")
    coll = os.path.join(dest, "ansible_collections", "strata", "graphdriver")
    os.makedirs(coll)
    git = subprocess.run(["git", "-C", ROOT, "archive", rev, "plugins"],
                         stdout=subprocess.PIPE, check=True)
    subprocess.run(["tar", "-xf", "-", "-C", coll], input=git.stdout, check=True)
    return dest


def children_cpu():
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ch.ru_utime + ch.ru_stime


def run_python(child, path, tar, dest):
    out = subprocess.run([sys.executable, "-c", child, path, tar, dest],
                         stdout=subprocess.PIPE, check=True).stdout.split()
    return float(out[0]), float(out[1])


def run_gnu(tar, dest):
    argv = list(GNU_TAR)
    argv[2], argv[-1] = tar, dest
    c, w = children_cpu(), time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - w, children_cpu() - c


def profile(tar, dest):
    from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import unpack
    os.mkdir(dest)
    prof = cProfile.Profile()
    with open(tar, "rb") as f:
        prof.runcall(unpack.apply_layer, dest, f)
    pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    shutil.rmtree(dest)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--previous", metavar="REV",
                    help="also time apply_layer of this git revision")
    ap.add_argument("--only", choices=("real", "synthetic"))
    ap.add_argument("--media", default="tmpfs,disk")
    ap.add_argument("--keep-tars", metavar="DIR",
                    help="write the layer tars in DIR, or use those already there")
    ap.add_argument("--profile", action="store_true",
                    help="print a cProfile of one apply of each tar on tmpfs first")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="strata-bench-apply-", dir="/var/tmp")
    try:
        tars = layer_tars(work, args.only, args.keep_tars)
        for label, tar in tars.items():
            mb = os.path.getsize(tar) / 1e6
            print("%s: %d entries, %.0f MB" % (label, count_entries(tar), mb))
            subprocess.run(["cat", tar], stdout=subprocess.DEVNULL, check=True)
        contenders = [("ours", lambda t, d: run_python(CHILD, BUILD, t, d)),
                      ("gnu", run_gnu)]
        if args.previous:
            prev = previous_tree(work, args.previous)
            contenders.append(("previous", lambda t, d: run_python(CHILD, prev, t, d)))
        rows = []
        for medium in args.media.split(","):
            base = tempfile.mkdtemp(prefix="strata-bench-apply-", dir=MEDIA[medium])
            try:
                for label, tar in tars.items():
                    if args.profile and medium == "tmpfs":
                        profile(tar, os.path.join(base, "profile"))
                    times = {name: [] for name, _ in contenders}
                    for r in range(args.rounds):
                        k = r % len(contenders)
                        for name, fn in contenders[k:] + contenders[:k]:
                            dest = os.path.join(base, name)
                            os.mkdir(dest)
                            subprocess.run(["sync"], check=True)
                            times[name].append(fn(tar, dest))
                            shutil.rmtree(dest)
                        print("  %s, %s, round %d: %s" % (label, medium, r + 1, "  ".join(
                            "%s %.2fs (cpu %.2fs)" % (n, t[-1][0], t[-1][1])
                            for n, t in times.items())), flush=True)
                    rows.append((label, medium, times))
            finally:
                shutil.rmtree(base, ignore_errors=True)
        print()
        print("medians of %d rounds; ratio = contender / GNU tar" % args.rounds)
        head = "%-10s %-6s %-9s %8s %8s %8s %8s" % ("content", "medium", "who", "wall s",
                                                    "cpu s", "wall x", "cpu x")
        print(head)
        print("-" * len(head))
        for label, medium, times in rows:
            gw = statistics.median(t[0] for t in times["gnu"])
            gc = statistics.median(t[1] for t in times["gnu"])
            for name, t in times.items():
                w = statistics.median(x[0] for x in t)
                c = statistics.median(x[1] for x in t)
                print("%-10s %-6s %-9s %8.2f %8.2f %8.2f %8.2f" % (
                    label.split()[0], medium, name, w, c, w / gw, c / gc))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
