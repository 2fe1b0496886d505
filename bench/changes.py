#!/usr/bin/env python3
"""overlay2's (and fuse-overlayfs') changes(): the naive walk, the upper-dir read, and a bare walk
of the two trees, side by side.

Two trees of about 60,000 entries each, as overlay2 (or fuse-overlayfs)
layers, a base layer and a child, on a real driver home under /var/tmp:

* real: this host's /usr, its first entries in walk order (names, modes,
  owners, mtimes, symlinks, hard links, sizes as they are; file contents
  are sparse, since changes() reads none);
* synthetic: 600 directories of 100 small files.

1% of the regular files are then changed through the child's mount, as a
container changes them (appended to: overlay copies them up), plus a few
deletions (whiteouts) and new files. Each round times, interleaved:

* naive: Docker's walk of both mounted trees (what overlay2's changes()
  does when the native diff is off);
* native: overlay2's changes() reading the child's upper dir;
* bare: os.walk plus an lstat of every entry of both trees, nothing else;

and prints wall and CPU medians and the ratios to the bare walk. The child
stays mounted (one get() held) so that no round pays for mounting. Both
answers are compared once: they must be equal. Everything is removed at
the end.

    .venv/bin/python bench/changes.py [--entries N] [--rounds N] [--only real|synthetic]
                                      [--driver overlay2|fuse-overlayfs]
"""

import argparse
import os
import shutil
import stat
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".build"))

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import new  # noqa: E402
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.naive import (  # noqa: E402
    NaiveDiffDriver)


def copy_real(src, dst, limit):
    """The first ``limit`` entries of ``src``, metadata exact, contents sparse."""
    n = 0
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        rel = os.path.relpath(dirpath, src)
        target_dir = os.path.normpath(os.path.join(dst, rel))
        for name in sorted(filenames) + dirnames:
            if n >= limit:
                dirnames[:] = []
                break
            s, d = os.path.join(dirpath, name), os.path.join(target_dir, name)
            st = os.lstat(s)
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(d)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(s), d)
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in inodes:
                    os.link(inodes[key], d)
                    n += 1
                    continue
                inodes[key] = d
                with open(d, "wb") as f:
                    f.truncate(st.st_size)
            else:
                continue
            os.chown(d, st.st_uid, st.st_gid, follow_symlinks=False)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(d, stat.S_IMODE(st.st_mode))
            os.utime(d, ns=(st.st_mtime_ns, st.st_mtime_ns), follow_symlinks=False)
            n += 1
        if n >= limit:
            dirnames[:] = []
    return n


def make_synthetic(dst, entries, per_dir=100):
    t = 10 ** 18
    dirs = max(1, entries // (per_dir + 1))
    for i in range(dirs):
        d = os.path.join(dst, "dir-%04d" % i)
        os.mkdir(d)
        for j in range(per_dir):
            p = os.path.join(d, "file-%03d" % j)
            with open(p, "wb") as f:
                f.write(b"x" * 64)
            os.utime(p, ns=(t, t))
    return dirs * (per_dir + 1)


def change_one_percent(merged):
    """Append to every 100th regular file; delete and add a few."""
    regular = []
    for dirpath, dirnames, filenames in os.walk(merged):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            if stat.S_ISREG(os.lstat(p).st_mode):
                regular.append(p)
    picked = regular[::100]
    for i, p in enumerate(picked):
        if i % 10 == 9:
            os.unlink(p)                        # a whiteout
            continue
        with open(p, "ab") as f:
            f.write(b"changed")
        if i % 10 == 8:
            with open(p + ".new", "wb") as f:   # an addition
                f.write(b"new")
    return len(picked)


def bare_walk(*roots):
    n = 0
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                os.lstat(os.path.join(dirpath, name))
                n += 1
    return n


def timed(fn, *args):
    w, c = time.perf_counter(), time.process_time()
    result = fn(*args)
    return time.perf_counter() - w, time.process_time() - c, result


def run(driver, kind, work, entries, rounds):
    home = os.path.join(work, kind, driver)
    drv = new(driver, home)
    try:
        drv.create("base")
        base = drv.get("base")
        count = copy_real("/usr", base, entries) if kind == "real" else make_synthetic(base, entries)
        drv.put("base")
        drv.create_read_write("child", "base")
        merged = drv.get("child")             # held: no round pays for a mount
        changed = change_one_percent(merged)
        reason = drv.naive_diff_reason() if driver == "overlay2" else None
        if reason is not None:
            print("%s: native diff off on this kernel (%s): native is the naive walk" % (kind, reason))
        naive = NaiveDiffDriver.changes(drv, "child", "base")
        native = drv.changes("child", "base")
        if native != naive:
            raise SystemExit("%s: native and naive changes differ (%d vs %d entries)"
                             % (kind, len(native), len(naive)))
        times = {"naive": [], "native": [], "bare": []}
        for dummy in range(rounds):
            times["naive"].append(timed(NaiveDiffDriver.changes, drv, "child", "base")[:2])
            times["native"].append(timed(drv.changes, "child", "base")[:2])
            times["bare"].append(timed(bare_walk, merged, base)[:2])
        med = {k: (statistics.median(w for w, c in v), statistics.median(c for w, c in v))
               for k, v in times.items()}
        print("%s, %s: %d entries per tree, %d files changed, %d changes reported, %d rounds"
              % (driver, kind, count, changed, len(naive), rounds))
        print("  %-8s %10s %10s %12s %12s" % ("", "wall s", "cpu s", "wall/bare", "cpu/bare"))
        for k in ("naive", "native", "bare"):
            print("  %-8s %10.4f %10.4f %12.3f %12.3f"
                  % (k, med[k][0], med[k][1], med[k][0] / med["bare"][0],
                     med[k][1] / max(med["bare"][1], 1e-9)))
        drv.put("child")
    finally:
        drv.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=60000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", choices=("real", "synthetic"))
    ap.add_argument("--driver", choices=("overlay2", "fuse-overlayfs"), default="overlay2")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="strata-bench-changes-", dir="/var/tmp")
    try:
        for kind in ("real", "synthetic"):
            if args.only in (None, kind):
                run(args.driver, kind, work, args.entries, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
