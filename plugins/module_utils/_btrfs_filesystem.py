# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One btrfs filesystem over a list of devices: create, grow, relabel.

The filesystem is found through its devices (their btrfs UUID), never by
label alone: two hosts' disks with the same label must not be confused.
Devices are only ever added; a member the caller did not list stays unless
``remove_unlisted`` says otherwise. Adding or removing needs the filesystem
mounted: a mounted one is used where it is, else it is mounted for the
operation under /run/strata-graphdriver and unmounted after.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import re

from ansible_collections.strata.graphdriver.plugins.module_utils import _blockdev as blockdev
from ansible_collections.strata.graphdriver.plugins.module_utils._cmd_runner import (
    CmdRunner, fixed, flag, option, positional)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import CommandError, GraphDriverError
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.fileutil import makedirs
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.mount import mounts
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import refcount

_HEADER = re.compile(r"^Label:\s+(?:'(?P<label>.*)'|none)\s+uuid:\s+(?P<uuid>[0-9a-f-]+)")
_DEVICE = re.compile(r"^\s*devid\s+(?P<devid>\d+)\s+size\s+\S+\s+used\s+\S+\s+path\s+(?P<path>\S+)")


class BtrfsError(GraphDriverError):
    pass


BTRFS = CmdRunner(
    "btrfs",
    show=fixed("filesystem", "show"), label_set=fixed("filesystem", "label"), scan=fixed("device", "scan"),
    add=fixed("device", "add"), remove=fixed("device", "remove"),
    force=flag("-f"), devices=positional(), target=positional(), label=positional(), uuid=positional(),
    mountpoint=positional())
MKFS_BTRFS = CmdRunner("mkfs.btrfs", force=flag("-f"), label=option("-L"), data_profile=option("-d"),
                       metadata_profile=option("-m"), devices=positional())
MOUNT = CmdRunner("mount", fstype=option("-t"), source=positional(), mountpoint=positional())
UMOUNT = CmdRunner("umount", mountpoint=positional())


def state_of(fs):
    """The filesystem as diff mode shows it."""
    if fs is None:
        return {"exists": False}
    return {"exists": True, "uuid": fs["uuid"], "label": fs["label"], "devices": list(fs["devices"])}


def show(uuid):
    """{"uuid", "label", "devices": [paths]} of the filesystem, None if unknown."""
    try:
        out = BTRFS("show uuid", uuid=uuid).run(timeout=60)
    except CommandError:
        return None
    fs = None
    for line in out.splitlines():
        m = _HEADER.match(line.strip())
        if m:
            fs = {"uuid": m.group("uuid"), "label": m.group("label"), "devices": []}
            continue
        m = _DEVICE.match(line)
        if m and fs is not None:
            fs["devices"].append(m.group("path"))
    return fs


def mountpoint_of(members):
    reals = set(os.path.realpath(d) for d in members)
    for m in mounts():
        if m.fstype == "btrfs" and os.path.realpath(m.source) in reals:
            return m.mountpoint
    return None


class BtrfsPlan(object):
    """The commands that bring the devices to one btrfs filesystem."""

    def __init__(self, devices, label=None, data_profile=None, metadata_profile=None,
                 force=False, remove_unlisted=False):
        if not devices:
            raise BtrfsError("btrfs_filesystem: list at least one device")
        self.devices = list(devices)
        self.label = label
        self.force = force
        self.commands = []
        self.created = False
        self.added = []
        self.removed = []
        self.unlisted = []
        self.before = None
        self._make(data_profile, metadata_profile, remove_unlisted)

    def _make(self, data_profile, metadata_profile, remove_unlisted):
        probes = dict((d, blockdev.blkid(d) if os.path.exists(d) else {}) for d in self.devices)
        uuids = sorted(set(p.get("UUID") for p in probes.values() if p.get("TYPE") == "btrfs"))
        if len(uuids) > 1 and not self.force:
            raise BtrfsError("devices %s belong to different btrfs filesystems (%s): list the devices of one "
                             "filesystem, or set force: true to recreate one over all of them"
                             % (", ".join(self.devices), ", ".join(uuids)))
        fs = show(uuids[0]) if len(uuids) == 1 else None
        self.before = fs
        if fs is None or self.force and len(uuids) > 1:
            self._create(data_profile, metadata_profile)
            return
        self.uuid = fs["uuid"]
        members = [os.path.realpath(d) for d in fs["devices"]]
        new = [d for d in self.devices if os.path.realpath(d) not in members]
        for d in new:
            self.commands += blockdev.claim(d, self.force).wipe()
        listed = set(os.path.realpath(d) for d in self.devices)
        self.unlisted = [d for d in fs["devices"] if os.path.realpath(d) not in listed]
        ops = []    # each: the mountpoint -> the command run there
        if new:
            ops.append(lambda mnt: BTRFS("add force devices mountpoint", force=self.force, devices=new,
                                         mountpoint=mnt))
            self.added = new
        if remove_unlisted and self.unlisted:
            ops.append(lambda mnt: BTRFS("remove devices mountpoint", devices=self.unlisted, mountpoint=mnt))
            self.removed = self.unlisted
        if ops:
            self._with_mount(fs, ops)
        if self.label is not None and self.label != (fs["label"] or ""):
            target = mountpoint_of(fs["devices"]) or fs["devices"][0]
            self.commands.append(BTRFS("label_set target label", target=target, label=self.label))

    def _create(self, data_profile, metadata_profile):
        for d in self.devices:
            self.commands += blockdev.claim(d, self.force).wipe()
        self.commands.append(MKFS_BTRFS("force label data_profile metadata_profile devices", force=self.force,
                                        label=self.label or None, data_profile=data_profile,
                                        metadata_profile=metadata_profile, devices=self.devices))
        self.created = True

    def _with_mount(self, fs, ops):
        mnt = mountpoint_of(fs["devices"])
        temporary = mnt is None
        if temporary:
            mnt = os.path.join(refcount.RUN_DIR, "btrfs-" + fs["uuid"])
            # The kernel must know every member before a multi-device mount.
            self.commands.append(BTRFS("scan devices", devices=fs["devices"]))
            self.commands.append(MOUNT("fstype source mountpoint", fstype="btrfs", source=fs["devices"][0],
                                       mountpoint=mnt))
        self.commands += [op(mnt) for op in ops]
        if temporary:
            self.commands.append(UMOUNT("mountpoint", mountpoint=mnt))

    @property
    def changed(self):
        return bool(self.commands)

    def apply(self):
        for cmd in self.commands:
            if cmd.argv[0] == "mount":
                makedirs(cmd.argv[-1], 0o700)
            try:
                cmd.run(timeout=600)
            except CommandError as e:
                self._unwind()
                raise BtrfsError("%s (the filesystem on %s is as the commands before left it)"
                                 % (e, ", ".join(self.devices)))
        for cmd in self.commands:
            if cmd.argv[0] == "umount":
                _rmdir(cmd.argv[-1])
        return state_of(self.current() if self.changed else self.before)

    def _unwind(self):
        # Never leave our temporary mount behind after a failure.
        for cmd in self.commands:
            if cmd.argv[0] == "umount":
                UMOUNT("mountpoint", mountpoint=cmd.argv[-1]).run(check=False)
                _rmdir(cmd.argv[-1])

    def planned(self):
        """The filesystem a run would leave (check mode), from the plan alone."""
        fs = None if self.created else self.before
        return {"exists": True, "uuid": fs["uuid"] if fs else None,
                "label": self.label if self.label is not None else (self.before or {}).get("label"),
                "devices": ([d for d in fs["devices"] if d not in self.removed] + list(self.added) if fs
                            else list(self.devices))}

    def result(self, after):
        return {"created": self.created, "added": self.added, "removed": self.removed,
                "unlisted_devices": self.unlisted, "uuid": after.get("uuid"), "label": after.get("label"),
                "devices": after.get("devices", [])}

    def diff(self, after):
        return {"before": state_of(self.before), "after": after}

    def current(self):
        """The filesystem as it is now."""
        uuid = None
        for d in self.devices:
            info = blockdev.blkid(d) if os.path.exists(d) else {}
            if info.get("TYPE") == "btrfs":
                uuid = info.get("UUID")
                break
        return show(uuid) if uuid else None


def _rmdir(path):
    try:
        os.rmdir(path)
    except OSError:
        pass
