#!/usr/bin/env python3
"""changes_dirs against a plain walk of both trees, side by side.

A 100,000-file tree (1,000 directories of 100 files) and a copy of it (a
real copy: no shared inodes, so nothing is pruned) with 1% of the files
modified. Times ``changes_dirs(new, old)`` and a plain ``os.walk`` +
``os.lstat`` of every entry of both trees, interleaved over a few rounds;
prints the median ratio. Data lives under /var/tmp and is deleted at the end.

    PYTHONPATH=.build python3 bench/changes.py [--files N] [--rounds N]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), ".build"))

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.changes import (  # noqa: E402,E501
    changes_dirs)


def make_tree(root, files, per_dir=100):
    data = b"x" * 64
    for i in range(files):
        d = os.path.join(root, "dir-%04d" % (i // per_dir))
        if i % per_dir == 0:
            os.mkdir(d)
        p = os.path.join(d, "file-%06d" % i)
        with open(p, "wb") as f:
            f.write(data)
        os.utime(p, ns=(10 ** 18, 10 ** 18))


def plain_walk(*roots):
    n = 0
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                os.lstat(os.path.join(dirpath, name))
                n += 1
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="strata-bench-changes-", dir="/var/tmp")
    try:
        old, new = os.path.join(work, "old"), os.path.join(work, "new")
        os.mkdir(old)
        make_tree(old, args.files)
        shutil.copytree(old, new, copy_function=shutil.copy2)
        modified = 0
        for i in range(0, args.files, 100):          # 1% of the files
            p = os.path.join(new, "dir-%04d" % (i // 100), "file-%06d" % i)
            with open(p, "ab") as f:
                f.write(b"changed")
            modified += 1
        expected = modified + args.files // 100      # each file and its directory
        ratios = []
        for r in range(args.rounds):
            t = time.perf_counter()
            changes = changes_dirs(new, old)
            ours = time.perf_counter() - t
            t = time.perf_counter()
            plain_walk(new, old)
            plain = time.perf_counter() - t
            assert len(changes) == expected, (len(changes), expected)
            ratios.append(ours / plain)
            print("round %d: changes_dirs %.3fs (%d changes)  os.walk+lstat %.3fs  ratio %.2f"
                  % (r + 1, ours, len(changes), plain, ours / plain))
        print("median ratio changes_dirs / plain walk: %.2f" % statistics.median(ratios))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
