#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: zfs_pool
short_description: A ZFS pool over declared vdevs, and a dataset for Docker's zfs driver
version_added: 0.1.0
description:
  - Creates a ZFS pool over the declared vdevs (disks or files; stripe, mirror, raidz1-3) when it does not exist.
  - On an existing pool, adds the declared vdevs that are not in it (C(zpool add)) and attaches new members
    to a declared mirror (C(zpool attach)).
  - A vdev, or a mirror member, that is in the pool but not declared is B(never) removed unless
    O(remove_unlisted=true); it is reported in RV(unlisted_vdevs).
  - Creates the dataset Docker's zfs driver uses, with its mountpoint and properties, and sets properties
    that differ on an existing dataset.
  - A device holding another signature is refused unless O(force=true); a device in use (mounted, held by
    device-mapper or md, an LVM physical volume, swap, a vdev of an imported pool) is refused even then.
  - Works with kernel ZFS and with C(zfs-fuse).
author:
  - Strata graphdriver team (@strata)
requirements:
  - Python 3.9 or newer on the managed host (the standard library only)
  - root
  - OpenZFS (C(zpool), C(zfs) from zfsutils-linux), or zfs-fuse with its daemon running
  - util-linux (C(blkid), C(wipefs))
extends_documentation_fragment:
  - strata.graphdriver.attributes
  - strata.graphdriver.force
  - strata.graphdriver.attributes.CHANGES
options:
  name:
    description: The pool name.
    type: str
    required: true
  state:
    description:
      - V(present) creates or grows the pool. V(absent) destroys it with everything on it, and needs O(force=true).
    type: str
    choices: [present, absent]
    default: present
  vdevs:
    description: The pool's data vdevs. Required with O(state=present).
    type: list
    elements: dict
    suboptions:
      type:
        description: Vdev type. V(stripe) makes each device its own top-level vdev.
        type: str
        choices: [stripe, mirror, raidz, raidz1, raidz2, raidz3]
        default: stripe
      devices:
        description: Disks (C(/dev/sdb)) or absolute paths of files.
        type: list
        elements: path
        required: true
  file_size:
    description:
      - Create the file vdevs that do not exist yet as sparse files of this size (for example V(512M)), for labs.
      - Without it a missing vdev path is an error.
    type: str
  root_mountpoint:
    description: Mountpoint of the pool's root dataset at creation (C(zpool create -m)).
    type: str
    default: none
  pool_properties:
    description: 'Pool properties at creation (C(zpool create -o)), for example C({"ashift": 12}).'
    type: dict
    default: {}
  dataset:
    description: A dataset to create in the pool (relative to the pool, or the full name), for example V(docker).
    type: str
  mountpoint:
    description: The dataset's mountpoint, for example V(/var/lib/docker).
    type: path
  properties:
    description: Properties of the dataset, set at creation and corrected when they differ.
    type: dict
    default: {}
  remove_unlisted:
    description:
      - Remove vdevs (C(zpool remove)) and mirror members (C(zpool detach)) that O(vdevs) does not declare.
      - Old ZFS versions (zfs-fuse among them) cannot remove a data vdev; the command then fails with ZFS's reason.
    type: bool
    default: false
  force:
    description:
      - Use devices holding another signature (C(zpool create -f)), destroying what they hold; confirm
        O(state=absent). Devices in use are still refused.
seealso:
  - module: strata.graphdriver.btrfs_filesystem
  - name: ZFS storage driver
    description: Docker's guide to the zfs storage driver.
    link: https://docs.docker.com/engine/storage/drivers/zfs-driver/
'''

EXAMPLES = r'''
- name: A mirrored pool with a dataset at Docker's data-root
  strata.graphdriver.zfs_pool:
    name: zpool-docker
    vdevs:
      - type: mirror
        devices: [/dev/sdb, /dev/sdc]
    dataset: docker
    mountpoint: /var/lib/docker
    properties:
      compression: lz4
      atime: "off"

- name: A lab pool on two sparse files (striped)
  strata.graphdriver.zfs_pool:
    name: lab
    vdevs:
      - devices: [/srv/lab/vdev0.img, /srv/lab/vdev1.img]
    file_size: 512M
    dataset: docker
    mountpoint: /srv/lab/docker

- name: Destroy the lab pool
  strata.graphdriver.zfs_pool:
    name: lab
    state: absent
    force: true
'''

RETURN = r'''
name:
  description: The pool.
  returned: always
  type: str
  sample: zpool-docker
vdevs:
  description: The pool's data vdevs after the run (in check mode, as planned).
  returned: success
  type: list
  elements: dict
  sample: [{"type": "mirror", "devices": ["/dev/sdb", "/dev/sdc"]}]
dataset:
  description: The dataset and its mountpoint after the run, V(null) when none was asked for.
  returned: success
  type: dict
  sample: {"name": "zpool-docker/docker", "mountpoint": "/var/lib/docker"}
created:
  description: Whether the pool was (or would be) created.
  returned: success
  type: bool
destroyed:
  description: Whether the pool was (or would be) destroyed.
  returned: success
  type: bool
added:
  description: Vdevs added, or members attached (or that would be).
  returned: success
  type: list
  elements: dict
  sample: [{"type": "mirror", "devices": ["/dev/sdd", "/dev/sde"]}]
removed:
  description: Vdevs removed or members detached (or that would be).
  returned: success
  type: list
  elements: dict
  sample: []
unlisted_vdevs:
  description: Vdevs or mirror members in the pool that O(vdevs) does not declare (kept unless O(remove_unlisted=true)).
  returned: success
  type: list
  elements: dict
  sample: [{"type": "stripe", "devices": ["/dev/sdf"], "vdev": "sdf"}]
files_created:
  description: Sparse vdev files created (or that would be) because of O(file_size).
  returned: success
  type: list
  elements: str
commands:
  description: The commands run, in order (in check mode, the commands that would run).
  returned: always
  type: list
  elements: str
  sample: ["zpool create -m none zpool-docker mirror /dev/sdb /dev/sdc", "zfs create -p -o mountpoint=/var/lib/docker zpool-docker/docker"]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.formatters import human_to_bytes

from ansible_collections.strata.graphdriver.plugins.module_utils._common import FORCE_ARGS, argument_spec, run_plan
from ansible_collections.strata.graphdriver.plugins.module_utils._zfs_pool import ZpoolPlan


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            FORCE_ARGS,
            name=dict(type='str', required=True),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            vdevs=dict(type='list', elements='dict', options=dict(
                type=dict(type='str', default='stripe',
                          choices=['stripe', 'mirror', 'raidz', 'raidz1', 'raidz2', 'raidz3']),
                devices=dict(type='list', elements='path', required=True),
            )),
            file_size=dict(type='str'),
            root_mountpoint=dict(type='str', default='none'),
            pool_properties=dict(type='dict', default={}),
            dataset=dict(type='str'),
            mountpoint=dict(type='path'),
            properties=dict(type='dict', default={}),
            remove_unlisted=dict(type='bool', default=False),
        ),
        required_if=[('state', 'present', ['vdevs'])],
        supports_check_mode=True,
    )
    p = module.params
    file_size = None
    if p['file_size']:
        try:
            file_size = human_to_bytes(p['file_size'])
        except ValueError as e:
            module.fail_json(msg='file_size %r: %s' % (p['file_size'], e), changed=False, name=p['name'], commands=[])
    module.exit_json(**run_plan(module, lambda: ZpoolPlan(
        p['name'], p['vdevs'], state=p['state'], dataset=p['dataset'], mountpoint=p['mountpoint'],
        properties=p['properties'], root_mountpoint=p['root_mountpoint'], pool_properties=p['pool_properties'],
        file_size=file_size, remove_unlisted=p['remove_unlisted'], force=p['force']), result={'name': p['name']}))


if __name__ == '__main__':
    main()
