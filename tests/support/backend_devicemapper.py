"""devicemapper backend: loop-lvm (sparse data and metadata files on loop
devices, Docker's default) in a fresh home.

Only where the kernel has device-mapper thin pools: on this project's test
host it has not, so this backend is Unavailable here and the suite runs it
inside a qemu VM instead (tests/integration/test_devicemapper.py).
"""

import os
import shutil
import subprocess

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    devicemapper)

from .backends import Unavailable, backend

# Small, sparse pool files: nothing is written until a layer uses it. xfs
# (Docker's default dm.fs) refuses filesystems under 300 MB.
OPTIONS = {"dm.loopdatasize": "2G", "dm.loopmetadatasize": "64M", "dm.basesize": "320M"}


def unavailable_reason():
    if not shutil.which("dmsetup") and not os.path.exists("/usr/sbin/dmsetup"):
        return "dmsetup is not installed (dmsetup/lvm2)"
    return devicemapper.kernel_support_problem()


def leftover_devices(home):
    """dm devices named after ``home`` (docker-<maj>:<min>-<ino>-…)."""
    try:
        st = os.stat(home)
    except FileNotFoundError:
        return []
    prefix = "docker-%d:%d-%d-" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    out = subprocess.run(["dmsetup", "ls"], stdout=subprocess.PIPE,
                         universal_newlines=True).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.startswith(prefix)]


def teardown(home):
    """Remove whatever a failed test left: mounts, thin devices, the pool
    (autoclear then detaches its loop devices)."""
    mnt = os.path.join(home, "mnt")
    if os.path.isdir(mnt):
        for name in os.listdir(mnt):
            subprocess.run(["umount", os.path.join(mnt, name)], stderr=subprocess.DEVNULL)
    names = leftover_devices(home)
    for name in sorted(names, key=lambda n: n.endswith("-pool")):
        subprocess.run(["dmsetup", "remove", name], stderr=subprocess.DEVNULL)
    loopdir = os.path.join(home, "devicemapper")
    for f in ("data", "metadata"):
        path = os.path.join(loopdir, f)
        if os.path.exists(path):
            out = subprocess.run(["losetup", "-j", path], stdout=subprocess.PIPE,
                                 universal_newlines=True).stdout
            for line in out.splitlines():
                subprocess.run(["losetup", "-d", line.split(":")[0]])


@backend("devicemapper")
def devicemapper_backend(workdir, options=None):
    reason = unavailable_reason()
    if reason:
        raise Unavailable(reason)
    home = os.path.join(str(workdir), "devicemapper")
    try:
        yield home, dict(options or OPTIONS)
    finally:
        teardown(home)
        shutil.rmtree(home, ignore_errors=True)
