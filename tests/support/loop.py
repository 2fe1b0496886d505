"""Loop-file backed filesystems for tests and the demo, always torn down.

    with loop_filesystem("btrfs", size_mb=300) as mnt:
        ...   # mnt is a mounted btrfs; on exit: unmount, detach, delete

Real devices, never fakes: a sparse file, `losetup`, `mkfs.<fs>`, mount(2).
"""

import contextlib
import os
import shutil
import subprocess
import tempfile

MKFS = {
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "xfs": ["mkfs.xfs", "-q", "-f", "-m", "crc=1", "-n", "ftype=1"],
    "xfs-noftype": ["mkfs.xfs", "-q", "-f", "-m", "crc=0", "-n", "ftype=0"],
    "ext4": ["mkfs.ext4", "-q", "-F"],
}


def sh(*argv, **kw):
    return subprocess.run(argv, check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, **kw).stdout


@contextlib.contextmanager
def loop_device(size_mb=256, directory=None):
    """A sparse file attached to a free loop device; yields '/dev/loopN'."""
    fd, path = tempfile.mkstemp(prefix="strata-loop-", suffix=".img", dir=directory)
    os.close(fd)
    os.truncate(path, size_mb * 1024 * 1024)
    dev = None
    try:
        dev = sh("losetup", "--find", "--show", path).strip()
        yield dev
    finally:
        if dev:
            subprocess.run(["losetup", "-d", dev], check=False)
        os.unlink(path)


@contextlib.contextmanager
def mounted(dev, fstype, target=None, options=None):
    made = target is None
    target = target or tempfile.mkdtemp(prefix="strata-mnt-")
    argv = ["mount", "-t", fstype.split("-")[0]]
    if options:
        argv += ["-o", options]
    try:
        sh(*(argv + [dev, target]))
    except BaseException:
        if made:
            os.rmdir(target)
        raise
    try:
        yield target
    finally:
        # Lazy unmount of anything a failed test left mounted beneath.
        with open("/proc/self/mounts") as f:
            below = [line.split()[1] for line in f
                     if line.split()[1].startswith(target.rstrip("/") + "/")]
        for mp in reversed(below):
            subprocess.run(["umount", "-l", mp], check=False)
        if subprocess.run(["umount", target], check=False).returncode != 0:
            subprocess.run(["umount", "-l", target], check=False)
        if made:
            shutil.rmtree(target, ignore_errors=True)


@contextlib.contextmanager
def tmpfs(size_mb=256):
    """A private tmpfs of ``size_mb``, mounted at a temporary directory that
    is yielded (no loop device: tmpfs has none)."""
    with mounted("tmpfs", "tmpfs", options="size=%dm,mode=0755" % size_mb) as mnt:
        yield mnt


@contextlib.contextmanager
def loop_filesystem(fstype, size_mb=256, options=None, directory=None):
    """A fresh ``fstype`` ('btrfs', 'xfs', 'xfs-noftype', 'ext4') on a loop file
    (in ``directory``, default the temp dir), mounted at a temporary
    directory that is yielded."""
    with loop_device(size_mb, directory) as dev:
        sh(*(MKFS[fstype] + [dev]))
        with mounted(dev, fstype, options=options) as mnt:
            yield mnt
