"""A small multi-layer test image built locally, no registry.

Layer 1: a rootfs tar made here from the static busybox (every applet a
symlink to /bin/busybox) plus ``/hello.txt`` with known content, brought in
with ``docker import``. Layer 2: ``docker run`` writes ``/second.txt`` and
``docker commit`` records it. ``docker save`` gives the archive.

``build_image_archive`` caches the archive per test session in a directory
the caller gives (the integration tests use a session fixture).
"""

import io
import os
import shutil
import subprocess
import tarfile

from .dockerd import dockerd

BUSYBOX = "/bin/busybox"
TAG = "strata/interop:2"
BASE_TAG = "strata/interop:1"
HELLO = b"hello from strata\n"
SECOND = b"second layer\n"
RUN_CMD = ["/bin/cat", "/hello.txt", "/second.txt"]
EXPECTED_OUTPUT = (HELLO + SECOND).decode()


class ImageArchive(object):
    def __init__(self, path, tag, image_id, diff_ids, engine="20.10"):
        self.path, self.tag, self.image_id, self.diff_ids = path, tag, image_id, diff_ids
        self.engine = engine

    def __repr__(self):
        return "<ImageArchive %s %s by Engine %s>" % (self.tag, self.path, self.engine)


def busybox_available():
    if not os.path.exists(BUSYBOX):
        return "%s is missing (Debian package busybox-static)" % BUSYBOX
    out = subprocess.run(["file", "-L", BUSYBOX], stdout=subprocess.PIPE,
                         universal_newlines=True).stdout if shutil.which("file") else ""
    if out and "dynamically linked" in out:
        return "%s is dynamically linked; the image needs busybox-static" % BUSYBOX
    return None


def rootfs_tar(path, extra_files=None):
    """Write a busybox rootfs tar to ``path``; deterministic (fixed mtimes)."""
    applets = subprocess.run([BUSYBOX, "--list"], stdout=subprocess.PIPE,
                             universal_newlines=True, check=True).stdout.split()
    files = {"hello.txt": HELLO}
    files.update(extra_files or {})

    def info(name, kind, mode):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime, ti.uid, ti.gid = kind, mode, 1700000000, 0, 0
        return ti

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for d in ("bin", "etc", "tmp", "proc", "sys", "dev"):
            t.addfile(info(d + "/", tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755))
        with open(BUSYBOX, "rb") as f:
            data = f.read()
        ti = info("bin/busybox", tarfile.REGTYPE, 0o755)
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
        for a in sorted(set(applets) - {"busybox"}):
            ti = info("bin/" + a, tarfile.SYMTYPE, 0o777)
            ti.linkname = "busybox"
            t.addfile(ti)
        for name, data in sorted(files.items()):
            ti = info(name, tarfile.REGTYPE, 0o644)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return path


def build_into(d, workdir):
    """Build the two-layer image in the running Dockerd ``d``; returns its id."""
    tar = rootfs_tar(os.path.join(workdir, "rootfs.tar"))
    d.docker("import", "-c", 'CMD ["/bin/sh"]', tar, BASE_TAG)
    name = "strata-build-%d" % os.getpid()
    d.docker("run", "--network", "none", "--name", name, BASE_TAG,
             "/bin/sh", "-c", "printf 'second layer\\n' > /second.txt")
    d.docker("commit", "-c", 'CMD ["/bin/sh"]', name, TAG)
    d.docker("rm", name)
    return d.docker("inspect", "-f", "{{.Id}}", TAG).strip()


def build_image_archive(cache_dir, storage_driver="vfs", engine="20.10"):
    """The test image built and saved by Engine ``engine`` (once per
    cache_dir) as an ImageArchive. The engines' archives differ: 20.10 saves
    the classic layout, 25+ an OCI layout with manifest.json beside it, and
    the committed layer's DiffID differs too (owner names, see archive.py)."""
    import json
    path = os.path.join(cache_dir, "interop.tar")
    meta = os.path.join(cache_dir, "interop.json")
    if os.path.exists(path) and os.path.exists(meta):
        with open(meta) as f:
            m = json.load(f)
        return ImageArchive(path, TAG, m["id"], m["diff_ids"], m.get("engine", "20.10"))
    os.makedirs(cache_dir, exist_ok=True)
    work = os.path.join(cache_dir, "builder")
    with dockerd(work, storage_driver=storage_driver, engine=engine) as d:
        image_id = build_into(d, cache_dir)
        d.docker("save", "-o", path, TAG)
        diff_ids = json.loads(d.docker("inspect", "-f", "{{json .RootFS.Layers}}", TAG))
    shutil.rmtree(work, ignore_errors=True)
    with open(meta, "w") as f:
        json.dump({"id": image_id, "diff_ids": diff_ids, "engine": engine}, f)
    return ImageArchive(path, TAG, image_id, diff_ids, engine)
