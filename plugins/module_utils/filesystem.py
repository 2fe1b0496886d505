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

from ansible_collections.strata.graphdriver.plugins.module_utils import blockdev
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.command import Command
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import CommandError, GraphDriverError

# fstype -> (mkfs argv, its force flag, the longest label it takes)
MKFS = {
    "xfs": (["mkfs.xfs", "-m", "crc=1", "-n", "ftype=1"], "-f", 12),
    "ext4": (["mkfs.ext4", "-q"], "-F", 16),
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
        argv, force_flag, label_max = MKFS[fstype]
        argv = list(argv) + ([force_flag] if force else [])
        if label:
            if len(label) > label_max:
                raise FilesystemError("label %r is longer than %s allows (%d characters)"
                                      % (label, fstype, label_max))
            argv += ["-L", label]
        self.commands = claim.wipe() + [Command(*(argv + list(mkfs_options) + [device]))]

    @property
    def changed(self):
        return bool(self.commands)

    def after(self):
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
