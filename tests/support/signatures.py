"""Loop devices that each hold one kind of thing the refusal rule must see.

    with signature_templates(workdir) as templates:       # built once (session)
        with signed_devices(templates, workdir) as devs:   # fresh copies per test
            devs["gpt"].device        # /dev/loopN holding a GPT partition table
            devs.detach()             # flush and let go, then compare:
            devs["gpt"].unchanged()   # the image's bytes are what they were

Every kind is made by the real tool (sfdisk, mkfs.*, mkswap, pvcreate,
zpool under zfs-fuse); "mounted" is an ext4 that is mounted, "partitions"
a dos disk whose partition the kernel knows, "open" a blank device another
program holds open with O_EXCL. On exit everything is unmounted, closed,
detached and deleted, even after a failure.
"""

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile

from .loop import sh

SIZE_MB = 320   # mkfs.xfs takes no less than 300 MB
# What force may override, and what it never does.
HOLDS = ("dos", "gpt", "ext4", "xfs", "btrfs", "swap", "lvm-pv", "zfs-member", "partitions")
IN_USE = ("mounted", "open")
KINDS = HOLDS + IN_USE


def _sparse(path):
    with open(path, "wb") as f:
        f.truncate(SIZE_MB << 20)


def _on_loop(path, fn):
    dev = sh("losetup", "--find", "--show", path).strip()
    try:
        fn(dev)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def _make(kind, path, zfs_pool_name):
    _sparse(path)
    if kind in ("dos", "partitions"):
        sh("sfdisk", "-q", path, input="label: dos\n,,L\n")
    elif kind == "gpt":
        sh("sfdisk", "-q", path, input="label: gpt\n,,L\n")
    elif kind in ("ext4", "mounted"):
        sh("mkfs.ext4", "-q", "-F", "-L", "docker", path)
    elif kind == "xfs":
        sh("mkfs.xfs", "-q", "-f", "-L", "docker", path)
    elif kind == "btrfs":
        sh("mkfs.btrfs", "-q", "-f", "-L", "docker", path)
    elif kind == "swap":
        sh("mkswap", "-q", path)
    elif kind == "lvm-pv":
        _on_loop(path, lambda dev: sh("pvcreate", "-q", dev))
    elif kind == "zfs-member":
        # A pool exported, as on a disk moved from another host.
        sh("zpool", "create", "-o", "cachefile=none", "-m", "none", zfs_pool_name, path)
        sh("zpool", "export", zfs_pool_name)


@contextlib.contextmanager
def signature_templates(directory, kinds=KINDS):
    """{kind: image path}, each image made once; deleted on exit.
    "zfs-member" needs a running zfs-fuse daemon."""
    where = tempfile.mkdtemp(prefix="strata-sig-", dir=directory)
    try:
        templates = {}
        for kind in kinds:
            path = os.path.join(where, kind + ".img")
            _make(kind, path, "strata-sig-%d" % os.getpid())
            templates[kind] = path
        yield templates
    finally:
        shutil.rmtree(where, ignore_errors=True)


def fingerprint(path):
    """sha256 of the file's bytes, reading only its data extents (holes read
    as zeros, so the extents and their offsets say it all)."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size
        offset = 0
        while offset < end:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break   # ENXIO: only a hole is left
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            h.update(b"@%d:" % start)
            pos = start
            while pos < stop:
                chunk = os.pread(fd, min(1 << 20, stop - pos), pos)
                if not chunk:
                    break
                h.update(chunk)
                pos += len(chunk)
            offset = stop
        h.update(b"size %d" % end)
    finally:
        os.close(fd)
    return h.hexdigest()


class SignedDevice(object):
    def __init__(self, kind, image):
        self.kind = kind
        self.image = image
        self.before = fingerprint(image)
        self.device = None
        self.mountpoint = None
        self.fd = None

    def attach(self):
        self.device = sh("losetup", "--find", "--show", "--partscan", self.image).strip()
        if self.kind == "partitions" and not os.path.exists(
                "/sys/class/block/%s/%sp1" % ((os.path.basename(self.device),) * 2)):
            sh("partx", "--add", self.device)   # no udev here: ask the kernel directly
        if self.kind == "mounted":
            self.mountpoint = tempfile.mkdtemp(prefix="strata-sig-mnt-")
            # read-only: our own mount must not write the superblock we compare
            sh("mount", "-t", "ext4", "-o", "ro,noload", self.device, self.mountpoint)
        if self.kind == "open":
            self.fd = os.open(self.device, os.O_RDONLY | os.O_EXCL)

    def detach(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.mountpoint:
            if subprocess.run(["umount", self.mountpoint], check=False).returncode != 0:
                subprocess.run(["umount", "-l", self.mountpoint], check=False)
            os.rmdir(self.mountpoint)
            self.mountpoint = None
        if self.device:
            if self.kind == "partitions":
                subprocess.run(["partx", "--delete", self.device], check=False,
                               stderr=subprocess.DEVNULL)
            subprocess.run(["losetup", "-d", self.device], check=False)
            self.device = None

    def unchanged(self):
        return fingerprint(self.image) == self.before


class SignedDevices(dict):
    def detach(self):
        for d in self.values():
            d.detach()


@contextlib.contextmanager
def signed_devices(templates, directory, kinds=KINDS):
    """{kind: SignedDevice}, attached, each on a fresh copy of its template."""
    where = tempfile.mkdtemp(prefix="strata-sigdev-", dir=directory)
    devs = SignedDevices()
    try:
        for kind in kinds:
            image = os.path.join(where, kind + ".img")
            sh("cp", "--sparse=always", templates[kind], image)
            devs[kind] = SignedDevice(kind, image)
            devs[kind].attach()
        yield devs
    finally:
        devs.detach()
        shutil.rmtree(where, ignore_errors=True)
