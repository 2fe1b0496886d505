"""Loop devices that each hold one kind of thing the refusal rule must see.

    with signature_templates(workdir) as templates:       # built once (session)
        with signed_devices(templates, workdir) as devs:   # fresh copies per test
            devs["gpt"].device        # /dev/loopN holding a GPT partition table
            devs.detach()             # flush and let go, then compare:
            devs["gpt"].unchanged()   # the image's bytes are what they were

Every kind is made by the real tool (sfdisk, mkfs.*, mkswap, pvcreate,
zpool under zfs-fuse); "mounted" is an ext4 that is mounted, "partitions"
a dos disk whose partition the kernel knows, "open" a blank device another
program holds open with O_EXCL. Where the kernel has md (the VM),
``raid_devices`` gives md RAID1 members (mdadm). On exit everything is
unmounted, closed, stopped, detached and deleted, even after a failure.
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
# Only where the kernel has md (this host's has not: the VM's Debian kernel
# has), from raid_devices(): a member of an md RAID1 whose array is stopped
# (force may override it), and a member of an assembled array (md holds it).
RAID_HOLDS = ("raid-member",)
RAID_IN_USE = ("raid-held",)
RAID_MB = 96


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


def raid_unavailable():
    """None where md RAID1 arrays can be made, else why not."""
    if not shutil.which("mdadm"):
        return "mdadm is not installed (scripts/setup-host.sh installs it)"
    if subprocess.run(["modprobe", "raid1"], stderr=subprocess.DEVNULL).returncode != 0:
        return "the kernel has no md raid1 (modprobe raid1 failed)"
    return None


class RaidMember(object):
    """The first member of a two-loop-file md RAID1 (metadata 1.2, as mdadm
    makes it by default); ``held``: its array assembled read-only, so md
    holds the member and writes nothing to it meanwhile."""

    def __init__(self, kind, where, held):
        self.kind = kind
        self.array = "/dev/md/strata-%d-%s" % (os.getpid(), kind)
        self.images = [os.path.join(where, "%s-%d.img" % (kind, i)) for i in range(2)]
        self.loops = []
        self.running = False
        try:
            self._make(held)
        except BaseException:
            self.detach()
            raise

    def _make(self, held):
        for image in self.images:
            with open(image, "wb") as f:
                f.truncate(RAID_MB << 20)
            self.loops.append(sh("losetup", "--find", "--show", image).strip())
        self.device, self.image = self.loops[0], self.images[0]
        # --assume-clean: no resync writing the members while they are compared
        sh("mdadm", "--create", self.array, "--level=1", "--raid-devices=2", "--metadata=1.2",
           "--assume-clean", "--run", "--quiet", *self.loops)
        self.running = True
        self._stop()
        self.before = fingerprint(self.image)
        if held:
            sh("mdadm", "--assemble", "--readonly", "--quiet", self.array, *self.loops)
            self.running = True

    def _stop(self):
        if self.running:
            subprocess.run(["mdadm", "--stop", "--quiet", self.array], check=False)
            self.running = False

    def detach(self):
        self._stop()
        for loop in self.loops:
            subprocess.run(["losetup", "-d", loop], check=False)
        self.loops = []
        self.device = None

    def unchanged(self):
        return fingerprint(self.image) == self.before


@contextlib.contextmanager
def raid_devices(directory):
    """{kind: RaidMember} for RAID_HOLDS + RAID_IN_USE; on exit every array
    is stopped and every loop detached, even after a failure."""
    where = tempfile.mkdtemp(prefix="strata-raid-", dir=directory)
    devs = SignedDevices()
    try:
        for kind in RAID_HOLDS + RAID_IN_USE:
            devs[kind] = RaidMember(kind, where, held=kind in RAID_IN_USE)
        yield devs
    finally:
        devs.detach()
        shutil.rmtree(where, ignore_errors=True)
