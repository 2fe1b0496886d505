#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: data_root_check
short_description: Check Docker's data-root for what docker system prune does not see, and repair what is safe
version_added: 0.1.0
description:
  - Reads each driver's layer store under the data-root (C(image/<driver>/layerdb)) and its driver home, and
    reports every problem with its kind, the path and the reason.
  - Kinds V(orphan) (a driver layer nothing references), V(write_set) (a layer registration that never
    finished), V(removing) (a layer removal that never finished), V(broken_layer) (a layerdb entry Docker
    cannot load), V(layer_files) (its driver layer is gone), V(missing_parent), V(corrupt_layer) (its files no
    longer rebuild its DiffID), V(image_layers) (an image whose layers are not all there), V(broken_mount) and
    V(container_layer) (a container whose layers are gone), and V(stray_mount) (mounted under the driver home
    while no engine runs).
  - With O(repair=true) and O(force=true) it removes the orphans, write sets and unfinished removals, which
    nothing references. It never removes a layer an image or a container uses; those findings say what to do.
  - Checking reads only (the layers' files too, with O(verify=true)); it runs while the engine runs, but a
    registration in progress then shows as a write set. Repairing refuses while an engine uses the data-root.
author:
  - Strata graphdriver team (@strata)
requirements:
  - Python 3.9 or newer on the managed host (the standard library only)
  - root, to read every layer
  - the tools of the drivers whose stores it checks - C(btrfs) (btrfs-progs), C(zfs) (zfsutils-linux, or
    zfs-fuse), C(dmsetup) (lvm2); none for vfs, overlay2, overlay, aufs and fuse-overlayfs stores
extends_documentation_fragment:
  - strata.graphdriver.attributes
  - strata.graphdriver.force
  - strata.graphdriver.daemon
options:
  driver:
    description:
      - The driver whose store is checked.
      - Defaults to every driver with a layer store under the data-root.
    type: str
    choices: [aufs, btrfs, devicemapper, fuse-overlayfs, overlay, overlay2, vfs, zfs]
  storage_opts:
    description: The driver's C(storage-opts), each C(key=value); defaults to daemon.json's for its driver.
    type: list
    elements: str
  verify:
    description:
      - Rebuild every layer's tar from its files and hash it against its DiffID. This reads every file.
      - V(false) checks the metadata only, quickly.
    type: bool
    default: true
  repair:
    description: Remove the orphans, write sets and unfinished removals found. Needs O(force=true).
    type: bool
    default: false
  force:
    description: Confirm O(repair=true).
attributes:
  check_mode:
    support: full
    details: Nothing is removed; RV(repaired) lists what a run with O(repair=true) would remove.
  diff_mode:
    support: full
    details: The findings before and after the repair.
  idempotent:
    support: full
    details: A second repair finds nothing repairable left.
notes:
  - Needs root to read every layer.
seealso:
  - module: strata.graphdriver.layer
  - module: strata.graphdriver.driver_info
'''

EXAMPLES = r'''
- name: Check the data-root, every layer hashed
  strata.graphdriver.data_root_check:
  register: fsck

- name: Fail when something is wrong
  ansible.builtin.assert:
    that: fsck.healthy
    fail_msg: "{{ fsck.findings | map(attribute='reason') | list }}"

- name: Quick check of the overlay2 store, and remove what nothing references
  strata.graphdriver.data_root_check:
    driver: overlay2
    verify: false
    repair: true
    force: true
'''

RETURN = r'''
data_root:
  description: The data-root checked.
  returned: success
  type: str
healthy:
  description: Whether nothing was found (before any repair).
  returned: success
  type: bool
findings:
  description: Every problem found, each with C(driver), C(kind), C(item) (layer, container or image id),
    C(path), C(reason) and C(repairable).
  returned: success
  type: list
  elements: dict
counts:
  description: Findings per kind.
  returned: success
  type: dict
  sample: {"orphan": 2, "corrupt_layer": 1}
checked:
  description: Per driver checked, C(driver), C(layers), C(images), C(containers), C(verified) and
    C(engine_running).
  returned: success
  type: list
  elements: dict
repaired:
  description: The findings removed (in check mode, that would be removed).
  returned: success
  type: list
  elements: dict
commands:
  description: What the repair removes (in check mode, would remove), one line per finding; empty without O(repair).
  returned: always
  type: list
  elements: str
  sample: ["remove /var/lib/docker/overlay2/3f1c... (orphan)"]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.graphdriver.plugins.module_utils._common import (
    DATA_ROOT_ARGS, FORCE_ARGS, argument_spec, data_root_of, run_plan)
from ansible_collections.strata.graphdriver.plugins.module_utils._data_root_check import CheckPlan
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import registered


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            DATA_ROOT_ARGS, FORCE_ARGS,
            driver=dict(type='str', choices=registered(sources=True)),
            storage_opts=dict(type='list', elements='str'),
            verify=dict(type='bool', default=True),
            repair=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p['repair'] and not p['force']:
        module.fail_json(msg='repair removes driver layers and leftovers nothing references: set force: true '
                             'to confirm')
    module.exit_json(**run_plan(module, lambda: CheckPlan(
        *data_root_of(p), driver=p['driver'], storage_opts=p['storage_opts'], verify=p['verify'],
        repair=p['repair']), running_hint='checking works while it runs, repairing needs it stopped'))


if __name__ == '__main__':
    main()
