# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one rule that decides whether anything may write to a device.

Every path that writes to a block device or a vdev file asks ``claim``
first: the ``filesystem`` module (and so the backing_store role's mkfs),
``btrfs_filesystem``, ``zfs_pool``. Two kinds of finding refuse:

- **in use** (refused even with ``force``: writing over it destroys live
  data, and the tools would fail half-way): mounted (the device or one of
  its partitions), held by device-mapper/md/bcache, active swap, open
  exclusively by another program, a vdev of an imported zpool;
- **holds something** (refused unless ``force: true``): any filesystem, a
  partition table of any kind, partitions the kernel knows, an LVM physical
  volume, a RAID, ZFS or swap signature, or any other signature wipefs
  finds.

The filesystem the caller asks for is adopted, never written over: a device
that already holds exactly it (and nothing else) is reported as such.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import json
import os
import stat

from ansible_collections.strata.graphdriver.plugins.module_utils._cmd_runner import CmdRunner, fixed, positional
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import CommandError, GraphDriverError
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.mount import mounts


class DeviceError(GraphDriverError):
    pass


# blkid -p: the low-level probe, which bypasses blkid's cache.
BLKID = CmdRunner("blkid", probe=fixed("-p", "-o", "export"), device=positional())
# without --all wipefs only lists
WIPEFS = CmdRunner("wipefs", list_json=fixed("--no-act", "--json"), all=fixed("--all"), device=positional())
PVS = CmdRunner("pvs", pv_vg=fixed("--noheadings", "-o", "pv_name,vg_name"))


def is_block_device(path):
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def blkid(dev):
    """blkid's low-level probe of ``dev`` (bypasses its cache): {} when blank."""
    try:
        out = BLKID("probe device", device=dev).run(timeout=60)
    except CommandError as e:
        # Exit 2: nothing found. That is the answer, not a failure.
        if e.returncode == 2:
            return {}
        raise DeviceError("cannot probe %s: %s" % (dev, e))
    info = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            info[key] = value
    return info


def signatures(dev):
    """Every signature wipefs finds on ``dev`` (it lists, it does not erase,
    without -a), as [{"type", "offset", "uuid", "label"}]."""
    try:
        out = WIPEFS("list_json device", device=dev).run(timeout=60)
    except CommandError as e:
        raise DeviceError("cannot list signatures on %s: %s" % (dev, e))
    if not out.strip():
        return []
    try:
        return json.loads(out).get("signatures", [])
    except ValueError:
        raise DeviceError("wipefs %s: unexpected output %r" % (dev, out[:200]))


def _sys_name(dev):
    return os.path.basename(os.path.realpath(dev))


def partitions(dev):
    """Partitions of the device the kernel knows (sysfs children: sdb1, loop0p1)."""
    name = _sys_name(dev)
    base = "/sys/class/block/%s" % name
    try:
        return sorted(n for n in os.listdir(base)
                      if n.startswith(name) and os.path.isfile(os.path.join(base, n, "partition")))
    except OSError:
        return []


def holders(dev):
    """Kernel holders of the device or its partitions (device-mapper, md, bcache)."""
    name = _sys_name(dev)
    found = []
    for n in [name] + partitions(dev):
        try:
            found += os.listdir("/sys/class/block/%s/holders" % n)
        except OSError:
            pass
    return sorted(found)


def mounted_at(dev):
    """Mount points whose source is the device or one of its partitions."""
    names = [os.path.realpath(dev)] + ["/dev/" + p for p in partitions(dev)]
    return sorted(set(m.mountpoint for m in mounts() if os.path.realpath(m.source) in names))


def swap_devices():
    try:
        with open("/proc/swaps") as f:
            return [os.path.realpath(line.split()[0]) for line in f.readlines()[1:] if line.strip()]
    except OSError:
        return []


def lvm_physical_volume(dev):
    """The VG of ``dev`` when it is an LVM physical volume ('' for an orphan PV), else None."""
    try:
        out = PVS("pv_vg").run(timeout=60)
    except GraphDriverError:
        return None
    real = os.path.realpath(dev)
    for line in out.splitlines():
        fields = line.split()
        if fields and os.path.realpath(fields[0]) == real:
            return fields[1] if len(fields) > 1 else ""
    return None


def opened_exclusively(dev):
    """True when another program holds the block device open with O_EXCL
    (mkfs, a filesystem, a pool): the kernel answers EBUSY to ours."""
    try:
        fd = os.open(dev, os.O_RDONLY | os.O_EXCL | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        return e.errno == errno.EBUSY
    os.close(fd)
    return False


def in_use(dev, zpool_members=(), mountpoint=None):
    """Why ``dev`` must not be written over even with force; [] when free.
    ``mountpoint``: a mount there is not counted (the caller's own)."""
    real = os.path.realpath(dev)
    reasons = []
    mps = [m for m in mounted_at(dev) if not (mountpoint and os.path.realpath(m) == os.path.realpath(mountpoint))]
    if mps:
        reasons.append("mounted at %s" % ", ".join(mps))
    if is_block_device(dev):
        held = holders(dev)
        if held:
            reasons.append("held by %s" % ", ".join(held))
        if real in swap_devices():
            reasons.append("in use as swap")
        if not reasons and not mountpoint and opened_exclusively(dev):
            reasons.append("open exclusively by another program")
    if real in [os.path.realpath(m) for m in zpool_members]:
        reasons.append("a vdev of an imported zpool")
    return reasons


def contents(dev):
    """What ``dev`` holds, as a list of findings ['ext4 filesystem (label x)',
    'dos partition table', 'partitions loop0p1', ...]; [] when blank."""
    found = []
    info = blkid(dev)
    if info.get("TYPE"):
        extra = ["%s %s" % (k.lower(), info[k]) for k in ("LABEL", "UUID") if info.get(k)]
        kind = "filesystem" if info.get("USAGE") == "filesystem" else "signature"
        found.append("%s %s%s" % (info["TYPE"], kind, " (%s)" % ", ".join(extra) if extra else ""))
    if info.get("PTTYPE"):
        found.append("%s partition table" % info["PTTYPE"])
    if is_block_device(dev):
        parts = partitions(dev)
        if parts:
            found.append("partitions %s" % ", ".join(parts))
        vg = lvm_physical_volume(dev)
        if vg:
            found.append("a physical volume of LVM volume group %s" % vg)
    if not found:
        # wipefs knows signatures blkid's probe may not report alone.
        found += ["%s signature" % s.get("type", "unknown") for s in signatures(dev)]
    return found


class Claim(object):
    """What ``claim`` decided for one device."""

    def __init__(self, dev, found, adopted):
        self.dev = dev
        self.found = found        # what force overrides ([] when blank)
        self.adopted = adopted    # it already holds exactly the filesystem asked for

    def wipe(self):
        """The command that clears what was found before a forced write: a
        tool's -f alone leaves a GPT backup header or a PV label behind, and
        the next run would find two signatures where it made one."""
        return [WIPEFS("all device", device=self.dev)] if self.found and not self.adopted else []


def claim(dev, force=False, adopt=None, zpool_members=(), mountpoint=None):
    """The one rule: may ``dev`` be written over? Raise DeviceError if not.

    ``adopt``: the filesystem type asked for; a device that holds exactly it
    is adopted (``Claim.adopted``), never written over; with ``mountpoint``
    (where the caller will mount it) it must not be in use anywhere else.
    ``zpool_members``: vdev paths of the imported pools (_zfs_pool.py knows them).
    """
    if not os.path.exists(dev):
        raise DeviceError("device %s does not exist: attach it (or losetup the lab file) first" % dev)
    found = contents(dev) if (is_block_device(dev) or os.path.isfile(dev)) else []
    if adopt and len(found) == 1 and found[0].startswith(adopt + " filesystem"):
        reasons = in_use(dev, zpool_members, mountpoint) if mountpoint else []
        if reasons:
            raise DeviceError("device %s holds the %s asked for, but is in use (%s): refusing to take it "
                              "for %s; free it first" % (dev, adopt, "; ".join(reasons), mountpoint))
        return Claim(dev, found, True)
    reasons = in_use(dev, zpool_members)
    if reasons:
        raise DeviceError("device %s is in use (%s): refusing to write over it, even with force; "
                          "free it first" % (dev, "; ".join(reasons)))
    if found and not force:
        raise DeviceError("device %s holds %s: refusing to overwrite it; wipe it (wipefs -a %s) or set "
                          "force: true to destroy it" % (dev, "; ".join(found), dev))
    return Claim(dev, found, False)
