#!/usr/bin/env python3
"""apply_layer against GNU tar, side by side.

One ~300 MB layer tar (20,000 small files in 100 directories plus four
50 MB files) is generated once under /var/tmp, then extracted 5 rounds,
interleaved: ``apply_layer`` into a fresh directory, ``tar -xf`` into
another (as root both set owners). Both read the same tar from the page
cache. Prints each round (wall clock, and CPU time of the process and its
children) and the median ratios ours / GNU tar. On a busy disk the wall
clock mostly measures the filesystem; ``--dir /dev/shm`` takes the disk out
and compares the work done per entry.

    sudo PYTHONPATH=.build python3 bench/apply.py [--rounds N] [--dir D] [--profile]
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
sys.path.insert(0, os.path.join(os.path.dirname(HERE), ".build"))

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (  # noqa: E402
    archive)


def make_source(src, small=20000, dirs=100, big=4, big_mb=50):
    rnd = os.urandom(1 << 16)
    per_dir = small // dirs
    n = 0
    for d in range(dirs):
        dpath = os.path.join(src, "dir-%03d" % d)
        os.mkdir(dpath)
        for i in range(per_dir):
            size = 64 + (n * 397) % 8000
            with open(os.path.join(dpath, "file-%05d" % n), "wb") as f:
                f.write(rnd[n % 4096:n % 4096 + size])
            n += 1
    chunk = os.urandom(1 << 20)
    for b in range(big):
        with open(os.path.join(src, "big-%d" % b), "wb") as f:
            for _ in range(big_mb):
                f.write(chunk)


def timed(fn):
    """(wall seconds, CPU seconds of this process and its children)."""
    def cpu():
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + ch.ru_utime + ch.ru_stime
    c, t = cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t, cpu() - c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--dir", default="/var/tmp",
                    help="where to put the data (/dev/shm: no disk, CPU only)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="strata-bench-apply-", dir=args.dir)
    try:
        src = os.path.join(work, "src")
        os.mkdir(src)
        make_source(src)
        tar_path = os.path.join(work, "layer.tar")
        with archive.tar_tree(src) as stream, open(tar_path, "wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
        shutil.rmtree(src)
        print("layer tar: %.0f MB" % (os.path.getsize(tar_path) / 1e6))
        subprocess.run(["cat", tar_path], stdout=subprocess.DEVNULL, check=True)

        def ours(dest):
            with open(tar_path, "rb") as f:
                archive.apply_layer(dest, f)

        def gnu(dest):
            subprocess.run(["tar", "-xf", tar_path, "-C", dest], check=True)

        if args.profile:
            dest = os.path.join(work, "profile")
            os.mkdir(dest)
            prof = cProfile.Profile()
            prof.runcall(ours, dest)
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
            shutil.rmtree(dest)

        ratios, cpu_ratios = [], []
        for r in range(args.rounds):
            times = {}
            for name, fn in (("ours", ours), ("gnu", gnu)) if r % 2 == 0 else \
                    (("gnu", gnu), ("ours", ours)):
                dest = os.path.join(work, "%s-%d" % (name, r))
                os.mkdir(dest)
                subprocess.run(["sync"], check=True)
                times[name] = timed(lambda: fn(dest))
                shutil.rmtree(dest)
                subprocess.run(["sync"], check=True)
            ratio = times["ours"][0] / times["gnu"][0]
            cpu_ratio = times["ours"][1] / times["gnu"][1]
            ratios.append(ratio)
            cpu_ratios.append(cpu_ratio)
            print("round %d: apply_layer %.3fs (cpu %.3fs)  GNU tar %.3fs (cpu %.3fs)  "
                  "ratio %.2f (cpu %.2f)" % (r + 1, times["ours"][0], times["ours"][1],
                                             times["gnu"][0], times["gnu"][1], ratio,
                                             cpu_ratio))
        print("median ratio apply_layer / GNU tar: wall %.2f, cpu %.2f"
              % (statistics.median(ratios), statistics.median(cpu_ratios)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
