#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: filesystem
short_description: An xfs (ftype=1) or ext4 filesystem on one device, fit for overlay2
version_added: 0.2.0
description:
  - Makes an xfs filesystem with C(ftype=1) (d_type, which overlay2 needs) or an ext4 filesystem on one device.
  - A device that already holds the filesystem asked for is adopted as it is, never formatted again.
  - A device holding anything else (any filesystem, a partition table, partitions, an LVM physical volume,
    a RAID, ZFS or swap signature) is refused unless O(force=true); then its signatures are wiped
    (C(wipefs --all)) and it is formatted.
  - A device in use (mounted, held by device-mapper or md, active swap, open exclusively, a vdev of an
    imported pool) is refused even with O(force=true).
  - Does not mount the filesystem; see the C(strata.graphdriver.backing_store) role.
author:
  - Strata graphdriver team (@strata)
requirements:
  - Python 3.9 or newer on the managed host (the standard library only)
  - root
  - xfsprogs (C(mkfs.xfs)) for xfs, e2fsprogs (C(mkfs.ext4)) for ext4
  - util-linux (C(blkid), C(wipefs))
extends_documentation_fragment:
  - strata.graphdriver.attributes
  - strata.graphdriver.force
  - strata.graphdriver.attributes.CHANGES
options:
  device:
    description: The block device (or a loop device of a lab file).
    type: path
    required: true
  fstype:
    description: The filesystem to make.
    type: str
    choices: [ext4, xfs]
    required: true
  label:
    description: Label given at creation (xfs takes 12 characters, ext4 16). An adopted filesystem keeps its own.
    type: str
  mkfs_options:
    description: Further arguments for C(mkfs.xfs) or C(mkfs.ext4), placed before the device.
    type: list
    elements: str
    default: []
  mountpoint:
    description:
      - Where the filesystem is to be mounted (the module does not mount it). An existing filesystem mounted
        anywhere else, or otherwise in use, is then refused instead of adopted.
    type: path
  force:
    description:
      - Wipe and format a device that holds something else, destroying it. Devices in use are still refused.
seealso:
  - module: strata.graphdriver.btrfs_filesystem
  - module: strata.graphdriver.zfs_pool
'''

EXAMPLES = r'''
- name: xfs for overlay2 on a new disk
  strata.graphdriver.filesystem:
    device: /dev/sdb
    fstype: xfs
    label: docker

- name: Reformat a disk that held an old partition table, knowingly
  strata.graphdriver.filesystem:
    device: /dev/sdc
    fstype: ext4
    force: true
'''

RETURN = r'''
adopted:
  description: Whether the device already held the filesystem asked for (nothing was written).
  returned: success
  type: bool
fstype:
  description: The filesystem on the device after the run.
  returned: success
  type: str
  sample: xfs
uuid:
  description: Its UUID (V(null) in check mode before creation).
  returned: success
  type: str
  sample: 5b1b1f1e-4c55-4d2e-a9d7-1a3c7d1f7b7e
commands:
  description: The commands run, in order (in check mode, the commands that would run).
  returned: always
  type: list
  elements: str
  sample: ["mkfs.xfs -m crc=1 -n ftype=1 -L docker /dev/sdb"]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.graphdriver.plugins.module_utils._common import FORCE_ARGS, argument_spec, run_plan
from ansible_collections.strata.graphdriver.plugins.module_utils._filesystem import FSTYPES, FilesystemPlan


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            FORCE_ARGS,
            device=dict(type='path', required=True),
            fstype=dict(type='str', required=True, choices=FSTYPES),
            label=dict(type='str'),
            mkfs_options=dict(type='list', elements='str', default=[]),
            mountpoint=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    p = module.params
    module.exit_json(**run_plan(module, lambda: FilesystemPlan(
        p['device'], p['fstype'], label=p['label'], force=p['force'], mkfs_options=p['mkfs_options'],
        mountpoint=p['mountpoint'])))


if __name__ == '__main__':
    main()
