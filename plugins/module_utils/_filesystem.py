# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An xfs or ext4 filesystem on one device, made only where the one rule allows.

xfs is made with ``ftype=1`` (d_type), which overlay2 needs; ext4 always
has it. A device that already holds the filesystem asked for is adopted as
it is; anything else on it is refused unless forced (blockdev.claim).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.strata.graphdriver.plugins.module_utils import _blockdev as blockdev
from ansible_collections.strata.graphdriver.plugins.module_utils._cmd_runner import CmdRunner, fixed, flag, option, positional
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import CommandError, GraphDriverError

# fstype -> (its mkfs, the longest label it takes). xfs: ftype=1 is d_type,
# which overlay2 needs.
MKFS = {
    "xfs": (CmdRunner("mkfs.xfs", defaults=fixed("-m", "crc=1", "-n", "ftype=1"), force=flag("-f"),
                      label=option("-L"), options=positional(), device=positional()), 12),
    "ext4": (CmdRunner("mkfs.ext4", defaults=fixed("-q"), force=flag("-F"), label=option("-L"),
                       options=positional(), device=positional()), 16),
}
FSTYPES = sorted(MKFS)


class FilesystemError(GraphDriverError):
    pass


def state_of(dev):
    info = blockdev.blkid(dev)
    return {"device": dev, "fstype": info.get("TYPE"), "label": info.get("LABEL"), "uuid": info.get("UUID")}


class FilesystemPlan(object):
    """The commands that put ``fstype`` on ``device`` (none when it is there)."""

    def __init__(self, device, fstype, label=None, force=False, mkfs_options=(), mountpoint=None):
        if fstype not in MKFS:
            raise FilesystemError("filesystem type %r is not one of %s" % (fstype, ", ".join(FSTYPES)))
        self.device = device
        self.fstype = fstype
        claim = blockdev.claim(device, force, adopt=fstype, mountpoint=mountpoint)
        self.before = state_of(device)
        self.adopted = claim.adopted
        self.commands = []
        if claim.adopted:
            return
        mkfs, label_max = MKFS[fstype]
        if label and len(label) > label_max:
            raise FilesystemError("label %r is longer than %s allows (%d characters)" % (label, fstype, label_max))
        self.commands = claim.wipe() + [mkfs("defaults force label options device", force=force,
                                             label=label or None, options=list(mkfs_options), device=device)]

    @property
    def changed(self):
        return bool(self.commands)

    def result(self, after):
        return {"adopted": self.adopted, "fstype": after["fstype"], "uuid": after["uuid"]}

    def planned(self):
        """The device as the plan leaves it (what it would be, before apply)."""
        if not self.changed:
            return dict(self.before)
        return {"device": self.device, "fstype": self.fstype, "label": None, "uuid": None}

    def apply(self):
        for cmd in self.commands:
            try:
                cmd.run(timeout=1800)
            except CommandError as e:
                raise FilesystemError("%s (device %s is as the commands before left it)" % (e, self.device))
        return state_of(self.device)
