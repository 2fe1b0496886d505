#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: btrfs_filesystem
short_description: One btrfs filesystem over one or more devices, for Docker's btrfs driver
version_added: 0.1.0
description:
  - Makes one btrfs filesystem over the listed devices (C(mkfs.btrfs -L -d -m)) when none of them holds one.
  - When some listed devices already belong to a btrfs filesystem, that filesystem grows by the other listed
    devices (C(btrfs device add)); it is found through the devices' btrfs UUID, not by its label.
  - A member device you did not list is never removed unless O(remove_unlisted=true); it is reported in
    RV(unlisted_devices).
  - A device holding another signature (a filesystem, a partition table, an LVM or ZFS label) is refused
    unless O(force=true). A device in use (mounted, held by device-mapper or md, an LVM physical volume,
    swap) is refused even with O(force=true).
  - Adding or removing devices needs the filesystem mounted; when it is not, it is mounted for the operation
    under C(/run/strata-graphdriver) and unmounted afterwards.
  - Does not mount the filesystem for Docker; see the C(strata.graphdriver.backing_store) role.
author:
  - Strata graphdriver team (@strata)
requirements:
  - Python 3.9 or newer on the managed host (the standard library only)
  - root
  - btrfs-progs (C(mkfs.btrfs), C(btrfs))
  - util-linux (C(blkid), C(wipefs), C(mount), C(umount))
extends_documentation_fragment:
  - strata.graphdriver.attributes
  - strata.graphdriver.force
  - strata.graphdriver.attributes.CHANGES
options:
  devices:
    description: Block devices of the filesystem, for example C(/dev/sdb) or a loop device.
    type: list
    elements: path
    required: true
  label:
    description: Filesystem label; set at creation, changed on an existing filesystem when different.
    type: str
  data_profile:
    description: Data profile at creation (C(mkfs.btrfs -d)). Not converted on an existing filesystem.
    type: str
    choices: [single, dup, raid0, raid1, raid1c3, raid1c4, raid5, raid6, raid10]
  metadata_profile:
    description: Metadata profile at creation (C(mkfs.btrfs -m)). Not converted on an existing filesystem.
    type: str
    choices: [single, dup, raid0, raid1, raid1c3, raid1c4, raid5, raid6, raid10]
  remove_unlisted:
    description: Remove member devices that O(devices) does not list (C(btrfs device remove)).
    type: bool
    default: false
  force:
    description:
      - Write over devices holding another signature (C(mkfs.btrfs -f), C(btrfs device add -f)),
        destroying what they hold. Devices in use are still refused.
seealso:
  - module: strata.graphdriver.zfs_pool
  - name: btrfs driver
    description: Docker's guide to the btrfs storage driver.
    link: https://docs.docker.com/engine/storage/drivers/btrfs-driver/
'''

EXAMPLES = r'''
- name: A btrfs filesystem for /var/lib/docker over two disks, metadata mirrored
  strata.graphdriver.btrfs_filesystem:
    devices: [/dev/sdb, /dev/sdc]
    label: docker
    data_profile: single
    metadata_profile: raid1

- name: Grow it by a third disk (the first two stay)
  strata.graphdriver.btrfs_filesystem:
    devices: [/dev/sdb, /dev/sdc, /dev/sdd]
    label: docker

- name: Show what would run
  strata.graphdriver.btrfs_filesystem:
    devices: [/dev/sdb, /dev/sdc, /dev/sdd]
  check_mode: true
  register: plan
'''

RETURN = r'''
uuid:
  description: UUID of the filesystem (V(null) in check mode before creation).
  returned: success
  type: str
  sample: d72fc19a-4fe1-49a2-ae2b-f9fcfa5b5489
label:
  description: Its label.
  returned: success
  type: str
  sample: docker
devices:
  description: Its member devices after the run.
  returned: success
  type: list
  elements: str
  sample: [/dev/sdb, /dev/sdc]
created:
  description: Whether the filesystem was (or in check mode would be) created.
  returned: success
  type: bool
added:
  description: Devices added (or that would be).
  returned: success
  type: list
  elements: str
  sample: [/dev/sdd]
removed:
  description: Devices removed (or that would be).
  returned: success
  type: list
  elements: str
  sample: []
unlisted_devices:
  description: Members that O(devices) does not list and that were kept.
  returned: success
  type: list
  elements: str
  sample: []
commands:
  description: The commands run, in order (in check mode, the commands that would run).
  returned: always
  type: list
  elements: str
  sample: ["mkfs.btrfs -L docker -d single -m raid1 /dev/sdb /dev/sdc"]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.graphdriver.plugins.module_utils._btrfs_filesystem import BtrfsPlan
from ansible_collections.strata.graphdriver.plugins.module_utils._common import FORCE_ARGS, argument_spec, run_plan

PROFILES = ['single', 'dup', 'raid0', 'raid1', 'raid1c3', 'raid1c4', 'raid5', 'raid6', 'raid10']


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            FORCE_ARGS,
            devices=dict(type='list', elements='path', required=True),
            label=dict(type='str'),
            data_profile=dict(type='str', choices=PROFILES),
            metadata_profile=dict(type='str', choices=PROFILES),
            remove_unlisted=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    module.exit_json(**run_plan(module, lambda: BtrfsPlan(
        p['devices'], label=p['label'], data_profile=p['data_profile'], metadata_profile=p['metadata_profile'],
        force=p['force'], remove_unlisted=p['remove_unlisted'])))


if __name__ == '__main__':
    main()
