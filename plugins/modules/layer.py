#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: layer
short_description: One layer in a storage driver's home
version_added: 0.1.0
description:
  - Creates, removes, mounts and unmounts one layer in the home of a Docker storage driver (graphdriver),
    with the collection's Python implementation of that driver, writing Docker's on-disk layout.
  - O(state=present) creates the layer (read-only, or read-write for a container), optionally on a parent
    and filled from a layer tar on the host. Layers are immutable, as in Docker, so an existing layer is left
    as it is, whatever O(tar) holds.
  - O(state=mounted) makes sure the layer is mounted once (one persisted C(Get) reference), creating it
    first if needed; O(state=unmounted) releases every reference.
  - O(state=absent) removes it; a mounted layer is refused unless O(force=true).
  - Works on the driver home directly, below Docker's layer store, so it refuses while an engine runs on the
    data-root (the directory holding the home).
  - In check mode the driver is opened read-only and nothing is created, not even the driver home (Docker counts
    a non-empty home as prior state, so a dry run must not make one).
author:
  - Strata graphdriver team (@strata)
requirements:
  - Python 3.9 or newer on the managed host (the standard library only)
  - root
  - the Docker engine stopped while the module writes the driver home
  - the tools of the driver - C(btrfs) (btrfs-progs) for btrfs, C(zfs) (zfsutils-linux, or zfs-fuse) for zfs,
    C(dmsetup) (lvm2) for devicemapper, C(fuse-overlayfs) and C(fusermount3) (fuse3) for fuse-overlayfs; the
    kernel overlay module for overlay2; none for vfs
extends_documentation_fragment:
  - strata.graphdriver.attributes
  - strata.graphdriver.force
  - strata.graphdriver.attributes.CHANGES
  - strata.graphdriver.daemon
attributes:
  check_mode:
    details:
      - Driver operations are not external commands; in check mode RV(commands) lists the driver API calls
        that would be made, for example V(overlay2.create('l1', parent='base')).
options:
  id:
    description: The layer id (a directory or dataset name in the home, no C(/)).
    type: str
    required: true
    aliases: [name]
  driver:
    description: The storage driver.
    type: str
    required: true
    choices: [btrfs, devicemapper, fuse-overlayfs, overlay2, vfs, zfs]
  home:
    description:
      - The driver's home. Defaults to C(<data_root>/<driver>), O(data_root) being C(data-root) in O(daemon_json),
        else C(/var/lib/docker).
    type: path
  options:
    description: 'Driver options, as in C(storage-opts), for example C({"zfs.fsname": "tank/docker"}).'
    type: dict
    default: {}
  state:
    description: What the layer should be.
    type: str
    choices: [present, absent, mounted, unmounted]
    default: present
  parent:
    description: Parent layer id, for a new layer. Must exist.
    type: str
  read_write:
    description: Create a read-write (container) layer instead of a read-only one.
    type: bool
    default: false
  size:
    description: Size limit of a new read-write layer (for example V(50M)), where the driver supports quotas.
    type: str
  tar:
    description:
      - A layer tar (plain or gzip) on the managed host, applied to a new layer.
      - Its entries, whiteouts included, are applied the way Docker applies an image layer.
    type: path
  digest:
    description:
      - Compute RV(diff_id), the sha256 of the layer's diff tar. Reads the whole layer; turn off for big layers.
    type: bool
    default: true
  force:
    description: Allow O(state=absent) on a mounted layer (its references are released first).
seealso:
  - module: strata.graphdriver.driver_info
'''

EXAMPLES = r'''
- name: A base layer from an exported root filesystem
  strata.graphdriver.layer:
    driver: overlay2
    home: /srv/lab/overlay2
    id: base
    tar: /tmp/rootfs.tar.gz
  register: base

- name: A container layer on top, limited to 50M (btrfs quota)
  strata.graphdriver.layer:
    driver: btrfs
    home: /mnt/pool/btrfs
    id: c1
    parent: base
    read_write: true
    size: 50M

- name: Mount it and use the path
  strata.graphdriver.layer:
    driver: overlay2
    home: /srv/lab/overlay2
    id: base
    state: mounted
  register: mounted

- name: Unmount and remove
  strata.graphdriver.layer:
    driver: overlay2
    home: /srv/lab/overlay2
    id: base
    state: absent
'''

RETURN = r'''
id:
  description: The layer id.
  returned: always
  type: str
  sample: base
home:
  description: The driver home.
  returned: always
  type: str
  sample: /var/lib/docker/overlay2
exists:
  description: Whether the layer exists after the run (in check mode, would exist).
  returned: always
  type: bool
mounted:
  description:
    - Whether a C(Get) reference holds the layer mounted after the run.
    - Always V(false) for a layer whose C(Get) mounts nothing (vfs and btrfs layers, an overlay2 base layer);
      its root is a plain directory, given in RV(layer_path) for O(state=mounted).
  returned: always
  type: bool
layer_path:
  description:
    - The layer's root as mounted; V(null) unless O(state=mounted) (and in check mode for a new layer).
    - Not named C(path) because Ansible would then overwrite RV(size) with the size of the directory itself.
  returned: always
  type: str
  sample: /var/lib/docker/overlay2/0f3c.../merged
size:
  description:
    - Size in bytes of the layer's changes against O(parent) (Docker's C(DiffSize)); the whole layer when no parent is given.
  returned: when the layer exists and not in check mode for a new layer
  type: int
  sample: 16448
diff_id:
  description:
    - C(sha256:) digest of the layer's diff tar against O(parent), Docker's DiffID. V(null) when O(digest=false).
  returned: when the layer exists and not in check mode for a new layer
  type: str
  sample: sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef
commands:
  description: The driver API calls made (in check mode, that would be made), in order.
  returned: always
  type: list
  elements: str
  sample: ["overlay2.create('c1', parent='base')", "overlay2.get('c1')"]
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.graphdriver.plugins.module_utils import _all_drivers  # noqa: F401 pylint: disable=unused-import
from ansible_collections.strata.graphdriver.plugins.module_utils._common import (
    DATA_ROOT_ARGS, FORCE_ARGS, argument_spec, data_root_of, run_plan)
from ansible_collections.strata.graphdriver.plugins.module_utils._layer import LayerPlan
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import new, registered
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.dataroot import DataRoot


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            DATA_ROOT_ARGS, FORCE_ARGS,
            id=dict(type='str', required=True, aliases=['name']),
            driver=dict(type='str', required=True, choices=registered()),
            home=dict(type='path'),
            options=dict(type='dict', default={}),
            state=dict(type='str', default='present', choices=['present', 'absent', 'mounted', 'unmounted']),
            parent=dict(type='str'),
            read_write=dict(type='bool', default=False),
            size=dict(type='str'),
            tar=dict(type='path'),
            digest=dict(type='bool', default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    result = dict(id=p['id'], home=p['home'], layer_path=None)
    if p['tar'] and not os.path.isfile(p['tar']):
        module.fail_json(msg='layer tar %s does not exist on the host: copy it there first' % p['tar'],
                         changed=False, commands=[], **result)

    def make_plan():
        home = p['home'] or data_root_of(p)[0].home(p['driver'])
        # the home's parent is the data-root a running engine would use
        DataRoot(os.path.dirname(home)).ensure_stopped()
        drv = new(p['driver'], home, dict((k, str(v)) for k, v in p['options'].items()),
                  read_only=module.check_mode)
        return LayerPlan(drv, p['id'], p['state'], digest=p['digest'], parent=p['parent'],
                         read_write=p['read_write'], size=p['size'], tar=p['tar'], force=p['force'])

    module.exit_json(**run_plan(module, make_plan, result=result))


if __name__ == '__main__':
    main()
