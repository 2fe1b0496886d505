#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: storage_driver
short_description: Declare Docker's storage driver in daemon.json, safely
version_added: 0.1.0
description:
  - Sets C(storage-driver) and C(storage-opts) in the engine's C(daemon.json), keeping every other key of
    the file and their order. The file is replaced atomically, and created (with its directory) when missing.
  - O(name=auto) declares the driver Docker itself would pick on this host for the installed engine version
    (prior state first, then the first supported driver in Docker's priority order).
  - Refuses a driver this host cannot run and says why (missing tool, wrong backing filesystem, no d_type).
  - Refuses a switch that would hide the images kept under another driver's home unless O(force=true).
  - Does not restart the engine; it returns RV(restart_required) so that a handler can.
author:
  - Strata graphdriver team (@strata)
requirements:
  - Python 3.9 or newer on the managed host (the standard library only)
  - root, to write O(daemon_json)
  - the tools of the driver declared, for its support to be checked (see M(strata.graphdriver.driver_info))
extends_documentation_fragment:
  - strata.graphdriver.attributes
  - strata.graphdriver.force
  - strata.graphdriver.daemon
  - strata.graphdriver.daemon.DOCKER_HOST
  - strata.graphdriver.attributes.CHANGES
options:
  name:
    description:
      - The storage driver, or V(auto) for Docker's pick on this host.
      - With O(image_store=containerd), the containerd snapshotter (V(overlayfs), V(native), V(btrfs), V(zfs),
        V(fuse-overlayfs)), or V(auto) for Docker's default (overlayfs, C(storage-driver) left out).
    type: str
    required: true
    choices: [auto, btrfs, devicemapper, fuse-overlayfs, native, overlay2, overlayfs, vfs, zfs]
  image_store:
    description:
      - V(containerd) turns on Docker's containerd image store (C(features.containerd-snapshotter), Engine 24+);
        V(graphdriver) turns it off. Unset, the file's setting is kept.
      - Turning it on is refused, unless O(force=true), while a graphdriver store under the data-root holds images
        or containers the containerd store lacks (carry them first with M(strata.graphdriver.driver_migration)
        and O(strata.graphdriver.driver_migration#module:target=containerd)); turning it off is refused, unless
        O(force=true), while the containerd store holds images.
    type: str
    choices: [containerd, graphdriver]
  storage_opts:
    description:
      - Driver options, each C(key=value), for example V(overlay2.size=10G) or V(zfs.fsname=tank/docker).
      - They are checked together with the driver on this host.
      - When not given, the file's C(storage-opts) are kept. An empty list removes them.
    type: list
    elements: str
  engine_version:
    description:
      - Engine version whose priority rules apply to O(name=auto).
      - Defaults to the running engine's version, else C(dockerd --version).
    type: str
  force:
    description:
      - Declare the driver even when that hides the images kept by another driver under the data-root.
      - Never makes an unsupported driver acceptable.
  check_running:
    description:
      - Fail unless an engine answers on O(docker_host) and really uses the declared driver.
      - Use it after restarting the engine to verify the change took effect.
    type: bool
    default: false
notes:
  - Runs no command; in check mode RV(commands) is empty and the diff shows the file that would be written.
seealso:
  - module: strata.graphdriver.driver_info
  - name: Docker daemon configuration file
    description: Keys of daemon.json.
    link: https://docs.docker.com/reference/cli/dockerd/#daemon-configuration-file
'''

EXAMPLES = r'''
- name: Use the driver Docker would pick on this host
  strata.graphdriver.storage_driver:
    name: auto
  register: driver
  notify: Restart docker

- name: overlay2 with a per-container size limit (xfs with pquota)
  strata.graphdriver.storage_driver:
    name: overlay2
    storage_opts:
      - overlay2.size=20G

- name: ZFS on a given dataset
  strata.graphdriver.storage_driver:
    name: zfs
    storage_opts:
      - zfs.fsname=tank/docker

- name: After the restart, verify the engine runs it
  strata.graphdriver.storage_driver:
    name: "{{ driver.driver }}"
    check_running: true
'''

RETURN = r'''
image_store:
  description: Where the engine keeps images once it reads the file - V(graphdriver) or V(containerd).
  returned: success
  type: str
  sample: containerd
driver:
  description: The driver declared (the resolved pick for O(name=auto)).
  returned: success
  type: str
  sample: overlay2
storage_opts:
  description: The C(storage-opts) the file declares after the run.
  returned: success
  type: list
  elements: str
  sample: [overlay2.size=20G]
path:
  description: The configuration file.
  returned: success
  type: str
  sample: /etc/docker/daemon.json
restart_required:
  description:
    - Whether the engine must (re)start to use what the file declares.
    - With an engine answering on O(docker_host) - when it runs another driver, or the storage-opts changed.
    - With none answering - when the file changed.
  returned: success
  type: bool
running_driver:
  description: The driver the running engine reports, V(null) when no engine answers.
  returned: success
  type: str
  sample: vfs
pick:
  description: The driver Docker would pick on its own on this host.
  returned: success
  type: str
  sample: overlay2
pick_reason:
  description: Why.
  returned: success
  type: str
prior_state:
  description: Drivers whose home under the data-root holds state.
  returned: success
  type: list
  elements: str
  sample: [overlay2]
supported:
  description: Every driver supported on this host.
  returned: success
  type: list
  elements: str
  sample: [overlay2, vfs]
commands:
  description: The commands run (or, in check mode, that would run); this module runs none.
  returned: success
  type: list
  elements: str
  sample: []
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.graphdriver.plugins.module_utils import _storage_driver
from ansible_collections.strata.graphdriver.plugins.module_utils._common import (
    DATA_ROOT_ARGS, DOCKER_HOST_ARGS, FORCE_ARGS, argument_spec, run_plan)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            DATA_ROOT_ARGS, DOCKER_HOST_ARGS, FORCE_ARGS,
            name=dict(type='str', required=True, choices=_storage_driver.NAMES),
            storage_opts=dict(type='list', elements='str'),
            engine_version=dict(type='str'),
            check_running=dict(type='bool', default=False),
            image_store=dict(type='str', choices=['containerd', 'graphdriver']),
        ),
        supports_check_mode=True,
    )
    p = module.params

    def verify_running(plan):
        if not p['check_running']:
            return None
        if plan.running is None:
            return 'check_running: no Docker engine answers on %s; start it, then run again' % p['docker_host']
        if plan.running_driver != plan.driver:
            return ('check_running: the engine on %s runs the %s driver but %s declares %s: restart the engine'
                    % (p['docker_host'], plan.running_driver, p['daemon_json'], plan.driver))
        return None

    module.exit_json(**run_plan(module, lambda: _storage_driver.plan(
        p['name'], storage_opts=p['storage_opts'], data_root=p['data_root'], path=p['daemon_json'],
        docker_host=p['docker_host'], engine_version=p['engine_version'], force=p['force'],
        image_store=p['image_store']), verify=verify_running))


if __name__ == '__main__':
    main()
