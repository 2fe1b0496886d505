#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: thin_pool
short_description: An LVM thin pool for Docker's devicemapper driver (direct-lvm)
version_added: 0.1.0
description:
  - Docker's direct-lvm recipe, declared and idempotent. Physical volumes on the listed devices
    (C(pvcreate)), a volume group over them (C(vgcreate)), a data LV and a metadata LV
    (C(lvcreate --wipesignatures y)) converted into a thin pool (C(lvconvert --thinpool --zero n -c)).
  - Writes an LVM profile with C(thin_pool_autoextend_threshold) and C(thin_pool_autoextend_percent),
    attaches it to the pool (C(lvchange --metadataprofile)) and turns dmeventd monitoring on
    (C(lvchange --monitor y)), so that the pool grows before it fills up.
  - On an existing volume group, adds the listed devices that are not in it (C(vgextend)) and grows the
    pool to O(size) (C(lvextend)). A thin pool never shrinks; a pool that auto-extension already grew past
    O(size) is left as it is.
  - A physical volume of the group that O(devices) does not list is B(never) removed unless
    O(remove_unlisted=true); it is reported in RV(unlisted_devices).
  - A device holding any signature (a filesystem, a partition table, an LVM, RAID, ZFS or swap label) is
    refused unless O(force=true); a device in use (mounted, held by device-mapper or md, swap) is refused
    even then. This is the collection's one rule for writing to a device, the one
    M(strata.graphdriver.btrfs_filesystem) and M(strata.graphdriver.zfs_pool) apply.
  - RV(pool.thinpooldev) is what Docker's C(dm.thinpooldev) storage option takes.
author:
  - Strata graphdriver team (@strata)
requirements:
  - Python 3.9 or newer on the managed host (the standard library only)
  - root
  - lvm2 (C(pvcreate), C(vgcreate), C(lvcreate), C(lvconvert), C(lvchange), C(lvmconfig)), and dmeventd for auto-extension
  - thin-provisioning-tools (C(thin_check), which LVM runs when it activates a thin pool)
  - a kernel with device-mapper thin provisioning (C(dm_thin_pool))
  - util-linux (C(blkid), C(wipefs))
extends_documentation_fragment:
  - strata.graphdriver.attributes
  - strata.graphdriver.force
  - strata.graphdriver.attributes.CHANGES
options:
  vg:
    description: The volume group, for example V(docker).
    type: str
    required: true
  name:
    description: The thin pool LV. Its metadata LV is made as C(<name>meta) and renamed by LVM.
    type: str
    default: thinpool
  devices:
    description:
      - Block devices of the volume group. Required to create it; on an existing group, the listed
        devices that are not members are added.
    type: list
    elements: path
    default: []
  state:
    description:
      - V(present) creates or grows the pool. V(absent) removes the pool with every layer in it, then the
        volume group and its physical volume labels if the group holds nothing else; it needs O(force=true).
    type: str
    choices: [present, absent]
    default: present
  size:
    description:
      - Size of the pool's data, as a share of the volume group (V(95%VG), Docker's recipe) or a size
        (V(10G)). Growing the group grows a pool declared as a share of it.
      - C(%FREE) and C(%PVS) are refused, they would mean another size on every run.
    type: str
    default: 95%VG
  metadata_size:
    description: Size of the pool's metadata at creation (V(1%VG), Docker's recipe, or a size).
    type: str
    default: 1%VG
  chunk_size:
    description: Chunk size at creation (C(lvconvert -c)); Docker uses V(512K).
    type: str
    default: 512K
  zero:
    description: Zero new blocks before use. Docker's recipe turns zeroing off.
    type: bool
    default: false
  profile:
    description: Name of the LVM profile (a file in LVM's C(profile_dir)); defaults to C(<vg>-<name>).
    type: str
  autoextend_threshold:
    description: Use in percent (data or metadata) at which dmeventd extends the pool; V(100) turns it off.
    type: int
    default: 80
  autoextend_percent:
    description: By how much, in percent of its size, dmeventd extends the pool each time.
    type: int
    default: 20
  monitor:
    description: Turn dmeventd monitoring on (auto-extension needs it).
    type: bool
    default: true
  remove_unlisted:
    description:
      - Remove physical volumes of the group that O(devices) does not list (C(vgreduce), C(pvremove)).
        LVM refuses one that holds extents of the pool.
    type: bool
    default: false
  force:
    description:
      - Write over devices holding a signature (they are wiped with C(wipefs --all) first), and confirm
        O(state=absent). Devices in use, and a pool Docker's devices still hold, are refused even then.
notes:
  - The profile file is left in place by O(state=absent).
seealso:
  - module: strata.graphdriver.btrfs_filesystem
  - module: strata.graphdriver.zfs_pool
  - module: strata.graphdriver.driver_info
  - name: Configure direct-lvm mode
    description: Docker's guide to the devicemapper driver in production.
    link: https://docs.docker.com/engine/storage/drivers/device-mapper-driver/
'''

EXAMPLES = r'''
- name: Docker's direct-lvm thin pool on a dedicated disk
  strata.graphdriver.thin_pool:
    vg: docker
    name: thinpool
    devices: [/dev/xvdf]
  register: pool

- name: Point Docker at it
  ansible.builtin.include_role:
    name: strata.graphdriver.storage_driver
  vars:
    storage_driver_name: devicemapper
    storage_driver_opts:
      - "dm.thinpooldev={{ pool.pool.thinpooldev }}"
      - dm.use_deferred_removal=true
      - dm.use_deferred_deletion=true

- name: Grow the group by a second disk (the pool, 95%VG, grows with it)
  strata.graphdriver.thin_pool:
    vg: docker
    devices: [/dev/xvdf, /dev/xvdg]

- name: Show what would run
  strata.graphdriver.thin_pool:
    vg: docker
    devices: [/dev/xvdf, /dev/xvdg, /dev/xvdh]
  check_mode: true
  register: plan

- name: Remove the pool, its group and the PV labels
  strata.graphdriver.thin_pool:
    vg: docker
    state: absent
    force: true
'''

RETURN = r'''
vg:
  description: The volume group.
  returned: always
  type: str
  sample: docker
devices:
  description: Physical volumes of the group after the run (in check mode, as planned).
  returned: success
  type: list
  elements: str
  sample: [/dev/xvdf]
pool:
  description: The thin pool after the run (in check mode, as planned; sizes LVM decides are V(null)); V(null) when absent.
  returned: success
  type: dict
  contains:
    vg:
      description: Its volume group.
      type: str
      returned: success
    name:
      description: Its LV name.
      type: str
      returned: success
    size:
      description: Data size in bytes.
      type: int
      returned: success
    metadata_size:
      description: Metadata size in bytes.
      type: int
      returned: success
    chunk_size:
      description: Chunk size in bytes.
      type: int
      returned: success
    zeroing:
      description: Whether new blocks are zeroed.
      type: bool
      returned: success
    active:
      description: Whether the pool is active.
      type: bool
      returned: success
    data_percent:
      description: Data use in percent of the pool.
      type: float
      returned: success
    metadata_percent:
      description: Metadata use in percent.
      type: float
      returned: success
    data_percent_of_available:
      description: Data use in percent of the pool plus the group's free space (what auto-extension can take).
      type: float
      returned: success
    vg_free:
      description: Free bytes in the volume group.
      type: int
      returned: success
    monitored:
      description: Whether dmeventd monitors the pool.
      type: bool
      returned: success
    profile:
      description: The LVM profile attached to the pool.
      type: str
      returned: success
    profile_settings:
      description: C(thin_pool_autoextend_threshold) and C(thin_pool_autoextend_percent) of that profile.
      type: dict
      returned: success
    thinpooldev:
      description: The pool as Docker's C(dm.thinpooldev) takes it.
      type: str
      returned: success
      sample: /dev/mapper/docker-thinpool
created:
  description: Whether the pool was (or would be) created.
  returned: success
  type: bool
grown:
  description: Whether the pool was (or would be) extended.
  returned: success
  type: bool
destroyed:
  description: Whether the pool was (or would be) removed.
  returned: success
  type: bool
added:
  description: Devices added to the group (or that would be).
  returned: success
  type: list
  elements: str
removed:
  description: Physical volumes removed (or that would be).
  returned: success
  type: list
  elements: str
unlisted_devices:
  description: Physical volumes of the group that O(devices) does not list, kept unless O(remove_unlisted=true).
  returned: success
  type: list
  elements: str
profile_file:
  description: The profile file written (or that would be), V(null) when it already said the same.
  returned: success
  type: dict
  sample: {"name": "docker-thinpool", "path": "/etc/lvm/profile/docker-thinpool.profile", "content": "..."}
commands:
  description: The commands run, in order (in check mode, the commands that would run).
  returned: always
  type: list
  elements: str
  sample: ["pvcreate /dev/xvdf", "vgcreate docker /dev/xvdf", "lvcreate --wipesignatures y -n thinpool docker -l 95%VG"]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.graphdriver.plugins.module_utils._common import FORCE_ARGS, argument_spec, run_plan
from ansible_collections.strata.graphdriver.plugins.module_utils._thin_pool import ThinPoolPlan


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            FORCE_ARGS,
            vg=dict(type='str', required=True),
            name=dict(type='str', default='thinpool'),
            devices=dict(type='list', elements='path', default=[]),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            size=dict(type='str', default='95%VG'),
            metadata_size=dict(type='str', default='1%VG'),
            chunk_size=dict(type='str', default='512K'),
            zero=dict(type='bool', default=False),
            profile=dict(type='str'),
            autoextend_threshold=dict(type='int', default=80),
            autoextend_percent=dict(type='int', default=20),
            monitor=dict(type='bool', default=True),
            remove_unlisted=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    module.exit_json(**run_plan(module, lambda: ThinPoolPlan(
        p['vg'], p['name'], p['devices'], state=p['state'], size=p['size'], metadata_size=p['metadata_size'],
        chunk_size=p['chunk_size'], zero=p['zero'], profile=p['profile'],
        autoextend_threshold=p['autoextend_threshold'], autoextend_percent=p['autoextend_percent'],
        monitor=p['monitor'], remove_unlisted=p['remove_unlisted'], force=p['force']), result={'vg': p['vg']}))


if __name__ == '__main__':
    main()
