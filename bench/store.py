#!/usr/bin/env python3
"""Offline import by our layer store vs ``docker load``, same archive, same driver.

    python3 bench/store.py [--driver overlay2] [--rounds 3] [--mb 64] [--files 3000]

The archive (built once, in Python, no registry): a busybox base layer
(runnable), a layer of many small files, and a layer with a few big random
files. Each round imports it into a fresh data-root twice: by
``imagestore.import_archive`` (timed in-process) and by ``docker load`` into a
private dockerd on another fresh data-root (dockerd start excluded from the
time). Prints both times and the ratio ours/docker per round and the median.
"""

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import statistics
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, ".build"))
sys.path.insert(0, ROOT)

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (  # noqa: E402
    imagestore, new)
from tests.support import images  # noqa: E402
from tests.support.dockerd import dockerd  # noqa: E402

TAG = "strata/bench:1"


def _layer_tar(path, entries):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime, ti.mode = 1700000000, 0o644
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                t.addfile(ti)
            else:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    return sha256_file(path)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def save_archive(path, stage, layer_files, diff_ids):
    """A ``docker save`` archive at ``path`` of the layer tars in ``stage``
    (their DiffIDs given), with a config and manifest.json tagged TAG;
    returns (path, image id)."""
    config = {
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "bench layer %d" % i}
                    for i in range(len(diff_ids))],
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    with open(os.path.join(stage, config_name), "wb") as f:
        f.write(config_bytes)
    with open(os.path.join(stage, "manifest.json"), "w") as f:
        json.dump([{"Config": config_name, "RepoTags": [TAG], "Layers": layer_files}], f)
    with tarfile.open(path, "w") as t:
        for name in ["manifest.json", config_name] + layer_files:
            t.add(os.path.join(stage, name), arcname=name)
    return path, "sha256:" + config_name[:-5]


def build_archive(workdir, big_mb, nfiles):
    rnd = random.Random(1)
    stage = os.path.join(workdir, "stage")
    os.makedirs(stage)
    layers = []
    base = os.path.join(stage, "l0.tar")
    images.rootfs_tar(base)
    h = hashlib.sha256(open(base, "rb").read()).hexdigest()
    layers.append(("l0.tar", "sha256:" + h))
    small = [("data/", None)] + [
        ("data/d%03d/" % (i // 100), None) if i % 100 == 0 else None for i in range(nfiles)]
    small = [e for e in small if e]
    small += [("data/d%03d/f%05d" % (i // 100, i), rnd.randbytes(rnd.randrange(64, 4096)))
              for i in range(nfiles)]
    small.sort(key=lambda e: e[0])
    layers.append(("l1.tar", _layer_tar(os.path.join(stage, "l1.tar"), small)))
    big = [("blobs/", None)] + [("blobs/b%d" % i, rnd.randbytes(big_mb * 1024 * 1024 // 4))
                                for i in range(4)]
    layers.append(("l2.tar", _layer_tar(os.path.join(stage, "l2.tar"), big)))
    out = save_archive(os.path.join(workdir, "bench-image.tar"), stage,
                       [name for name, _ in layers], [d for _, d in layers])
    shutil.rmtree(stage)
    return out


def ours(workdir, driver, archive):
    data_root = os.path.join(workdir, "ours")
    drv = new(driver, os.path.join(data_root, driver))
    t = time.perf_counter()
    result = imagestore.import_archive(data_root, drv, archive)
    elapsed = time.perf_counter() - t
    drv.cleanup()
    return elapsed, result[0].id, data_root


def docker_load(workdir, driver, archive):
    data_root = os.path.join(workdir, "docker")
    with dockerd(os.path.join(workdir, "d"), storage_driver=driver, data_root=data_root) as d:
        t = time.perf_counter()
        d.docker("load", "-q", "-i", archive)
        elapsed = time.perf_counter() - t
        image_id = d.docker("inspect", "-f", "{{.Id}}", TAG).strip()
    return elapsed, image_id, data_root


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--driver", default="overlay2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mb", type=int, default=64, help="size of the big-file layer")
    ap.add_argument("--files", type=int, default=3000, help="files in the small-file layer")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    top = tempfile.mkdtemp(prefix="strata-bench-store-", dir=args.workdir)
    try:
        archive, image_id = build_archive(top, args.mb, args.files)
        size = os.path.getsize(archive) / 1e6
        print("archive %.1f MB: busybox base + %d small files + %d MB of big files; driver %s"
              % (size, args.files, args.mb, args.driver))
        print("%-6s %10s %12s %8s" % ("round", "ours (s)", "docker (s)", "ratio"))
        ratios, times_ours, times_docker = [], [], []
        for r in range(args.rounds):
            work = os.path.join(top, "r%d" % r)
            os.makedirs(work)
            # alternate who goes first: page cache and a busy host favour the second
            if r % 2 == 0:
                t_ours, id_ours, _ = ours(work, args.driver, archive)
                t_docker, id_docker, _ = docker_load(work, args.driver, archive)
            else:
                t_docker, id_docker, _ = docker_load(work, args.driver, archive)
                t_ours, id_ours, _ = ours(work, args.driver, archive)
            times_ours.append(t_ours)
            times_docker.append(t_docker)
            assert id_ours == id_docker == image_id, (id_ours, id_docker, image_id)
            ratios.append(t_ours / t_docker)
            print("%-6d %10.2f %12.2f %7.2fx" % (r + 1, t_ours, t_docker, ratios[-1]))
            shutil.rmtree(work, ignore_errors=True)
        print("median: ours %.2fs (%.0f MB/s), docker load %.2fs (%.0f MB/s), ratio %.2fx"
              % (statistics.median(times_ours), size / statistics.median(times_ours),
                 statistics.median(times_docker), size / statistics.median(times_docker),
                 statistics.median(ratios)))
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
