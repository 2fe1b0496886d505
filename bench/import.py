#!/usr/bin/env python3
"""Offline import (``imagestore.import_archive``) vs ``docker load``, side by side.

    sudo python3 bench/import.py [--rounds 3] [--driver overlay2] [--ours BUILD] [--previous BUILD]
                                 [--only real,gzip,synthetic] [--workdir /dev/shm]

Three ``docker save`` archives, built once per run:

* real: three layers made by GNU tar from this machine's ``/usr`` (sbin and
  the Python library; share without package-lists; libexec), about 870 MB:
  many small files, symlinks, PAX headers where a name, an xattr or a
  fractional mtime needs one (atime/ctime records dropped, as Docker's own
  tar writer, which makes the layers of ``docker build``, writes none);
* gzip: the same layers gzip-compressed (``gzip -1``), as registries ship them;
* synthetic: bench/store.py's busybox + small files + big random files.

Each round imports each archive into a fresh data-root on the work directory
(tmpfs by default) by our code, in a child Python (``--previous`` adds a
second tree, a ``.build``-style directory holding
``ansible_collections/strata/graphdriver``, timed the same way: before/after),
and by ``docker load`` into a private Engine 20.10 dockerd on another fresh
data-root (its start excluded). Who goes first alternates. Printed per
archive: the median wall time of each, CPU time (ours with its tar-split
child; docker: dockerd plus the CLI), the median ratio ours/docker and the
1-minute load average when the archive's rounds ended.
The machine may be shared: only ratios measured in the same run mean much.
"""

import argparse
import os
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
if "--ours" in sys.argv:    # the tree timed as ours is also the one imported here
    BUILD = os.path.abspath(sys.argv[sys.argv.index("--ours") + 1])
sys.path.insert(0, BUILD)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from tests.support.dockerd import dockerd  # noqa: E402
import store  # noqa: E402  (bench/store.py: the synthetic archive)

TAG = "strata/bench:1"
REAL_LAYERS = [
    (["usr/sbin", "usr/lib/python3", "usr/lib/python3.%d" % sys.version_info[1]], []),
    (["usr/share"], ["usr/share/package-lists"]),
    (["usr/libexec"], []),
]

# Runs in a child: one import_archive from the collection under sys.argv[1];
# prints wall and CPU seconds (the tar-split processes included).
CHILD = r"""
import os, resource, sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import imagestore, new
data_root, driver, archive = sys.argv[2:5]
drv = new(driver, os.path.join(data_root, driver))
w, c = time.perf_counter(), time.process_time()
images = imagestore.import_archive(data_root, drv, archive)
w = time.perf_counter() - w
c = time.process_time() - c
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
drv.cleanup()
print(w, c + kids.ru_utime + kids.ru_stime, images[0].id)
"""


def build_real(workdir, gzip_too):
    """The real image, and (when asked) the same with gzip layers: (path, id) each."""
    stage = os.path.join(workdir, "stage-real")
    os.makedirs(stage)
    names, diff_ids = [], []
    for i, (paths, excludes) in enumerate(REAL_LAYERS):
        paths = [p for p in paths if os.path.isdir("/" + p)]
        name = "layer%d.tar" % i
        argv = ["tar", "--format=pax", "--pax-option=delete=atime,delete=ctime",
                "--xattrs", "--xattrs-include=*", "--sort=name",
                "-cf", os.path.join(stage, name), "-C", "/"]
        argv += ["--exclude=%s" % e for e in excludes] + paths
        subprocess.run(argv, check=True)
        names.append(name)
        diff_ids.append(store.sha256_file(os.path.join(stage, name)))
    out = [store.save_archive(os.path.join(workdir, "real-image.tar"), stage, names, diff_ids)]
    if gzip_too:
        gz = []
        for name in names:
            subprocess.run(["gzip", "-1", "-k", os.path.join(stage, name)], check=True)
            gz.append(name + ".gz")
        out.append(store.save_archive(os.path.join(workdir, "gzip-image.tar"), stage, gz, diff_ids))
    shutil.rmtree(stage)
    return out


def ours(build, work, driver, archive):
    data_root = os.path.join(work, "ours")
    out = subprocess.run([sys.executable, "-c", CHILD, build, data_root, driver, archive],
                         check=True, stdout=subprocess.PIPE).stdout.decode().split()
    shutil.rmtree(data_root, ignore_errors=True)
    return float(out[0]), float(out[1]), out[2]


def _proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def docker_load(work, driver, archive):
    data_root = os.path.join(work, "docker")
    with dockerd(os.path.join(work, "d"), storage_driver=driver, data_root=data_root) as d:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = _proc_cpu(d.proc.pid)
        t = time.perf_counter()
        d.docker("load", "-q", "-i", archive)
        elapsed = time.perf_counter() - t
        cpu = _proc_cpu(d.proc.pid) - cpu
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu += (after.ru_utime + after.ru_stime) - (kids.ru_utime + kids.ru_stime)
        image_id = d.docker("inspect", "-f", "{{.Id}}", TAG).strip()
    shutil.rmtree(data_root, ignore_errors=True)
    return elapsed, cpu, image_id


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--driver", default="overlay2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="real,gzip,synthetic")
    ap.add_argument("--ours", default=BUILD, help="the .build-style tree timed as ours")
    ap.add_argument("--previous", help="a .build-style tree of the previous version")
    ap.add_argument("--workdir", default="/dev/shm")
    args = ap.parse_args()
    only = args.only.split(",")
    top = tempfile.mkdtemp(prefix="strata-bench-import-", dir=args.workdir)
    try:
        archives = []
        if "real" in only or "gzip" in only:
            built = build_real(top, "gzip" in only)
            archives += [(label, a) for label, a in zip(("real", "gzip"), built)
                         if label in only]
        if "synthetic" in only:
            archives.append(("synthetic", store.build_archive(top, 64, 3000)))
        trees = [("ours", args.ours)] + ([("previous", args.previous)] if args.previous else [])
        print("driver %s on %s, %d rounds, Engine 20.10 docker load; shared machine"
              % (args.driver, args.workdir, args.rounds))
        for label, (archive, image_id) in archives:
            size = os.path.getsize(archive) / 1e6
            times = {name: [] for name, _ in trees + [("docker", None)]}
            cpus = {name: [] for name in times}
            for r in range(args.rounds):
                work = os.path.join(top, "r%d" % r)
                os.makedirs(work)
                runs = [(name, lambda b=build: ours(b, work, args.driver, archive))
                        for name, build in trees]
                runs.append(("docker", lambda: docker_load(work, args.driver, archive)))
                if r % 2:
                    runs.reverse()      # page cache and a busy host favour the later
                for name, run in runs:
                    wall, cpu, got = run()
                    assert got == image_id, (name, got, image_id)
                    times[name].append(wall)
                    cpus[name].append(cpu)
                shutil.rmtree(work, ignore_errors=True)
            med = {n: statistics.median(v) for n, v in times.items()}
            ratios = {n: statistics.median(a / d for a, d in zip(times[n], times["docker"]))
                      for n, _ in trees}
            print("%-9s %7.0f MB  " % (label, size) + "  ".join(
                "%s %.2fs (cpu %.2fs)" % (n, med[n], statistics.median(cpus[n]))
                for n in times) + "  " + "  ".join(
                "%s/docker %.2fx" % (n, ratios[n]) for n, _ in trees)
                + "  load %.2f" % os.getloadavg()[0])
            sys.stdout.flush()
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
