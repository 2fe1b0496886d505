#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: driver_info
short_description: Facts for choosing and checking Docker's storage driver
version_added: 0.1.0
description:
  - Reports what a host can run and what it runs, the facts needed to choose a Docker storage driver
    (graphdriver) and to check the choice.
  - The kernel's filesystems, the backing filesystem of the data-root (C(statfs), the way Docker asks),
    whether it supports C(d_type), the C(ftype) of an xfs backing filesystem.
  - For every driver the collection knows, whether it is supported here and, if not, why.
  - The driver Docker would pick for the engine version installed (or given). The priority order
    changed in Engine 23 (overlay2 first), aufs was removed in 24 and devicemapper in 25, and
    Engine 29 makes the containerd image store the default on fresh installs.
  - What C(daemon.json) configures, and what the running engine reports (the equivalent of
    C(docker info), asked over the engine's unix socket, when one answers).
  - Which driver homes under the data-root hold prior state, and Docker's
    "contains several valid graphdrivers" trap.
  - On a devicemapper host, the thin pool (C(dm.thinpooldev), or the running engine's pool), its data and
    metadata use, the free space in its volume group that auto-extension can take, whether dmeventd
    monitors it and its LVM profile, and a warning when it is over O(thin_pool_threshold).
author:
  - Strata graphdriver team (@strata)
requirements:
  - Python 3.9 or newer on the managed host (the standard library only)
  - root, to read the driver homes and run C(xfs_info)
  - the tools of the drivers it checks, for their support to be reported (C(btrfs) from btrfs-progs, C(zfs) from
    zfsutils-linux or zfs-fuse, C(fuse-overlayfs), C(dmsetup) from lvm2); a missing tool is reported as the reason
    a driver is not supported, not as an error
extends_documentation_fragment:
  - strata.graphdriver.attributes
  - strata.graphdriver.daemon
  - strata.graphdriver.daemon.DOCKER_HOST
  - strata.graphdriver.attributes.INFO_MODULE
options:
  engine_version:
    description:
      - Engine version whose priority rules to apply, for example V(24.0.7).
      - Defaults to the running engine's version, else C(dockerd --version).
    type: str
  thin_pool_threshold:
    description:
      - Use, in percent, from which a devicemapper host's thin pool is reported over threshold (data counting
        the volume group's free space, or metadata). openshift-ansible's docker_storage check used V(90).
    type: float
    default: 90
notes:
  - Needs root to read the driver homes and run C(xfs_info).
seealso:
  - module: strata.graphdriver.storage_driver
  - name: Docker storage drivers
    description: Docker's guide to choosing a storage driver.
    link: https://docs.docker.com/engine/storage/drivers/select-storage-driver/
'''

EXAMPLES = r'''
- name: What can this host run, and what does it run?
  strata.graphdriver.driver_info:
  register: storage

- name: Show why overlay2 is not supported here
  ansible.builtin.debug:
    msg: "{{ storage.drivers.overlay2.reason }}"
  when: not storage.drivers.overlay2.supported

- name: Fail when the running engine does not use the driver Docker would pick
  ansible.builtin.assert:
    that: storage.running.driver == storage.pick
  when: storage.running is not none

- name: Ask about an engine upgrade before doing it
  strata.graphdriver.driver_info:
    data_root: /srv/docker
    engine_version: "25.0"
  register: after_upgrade
'''

RETURN = r'''
data_root:
  description: The data-root examined.
  returned: always
  type: str
  sample: /var/lib/docker
data_root_exists:
  description: Whether the data-root directory exists.
  returned: always
  type: bool
mountpoint:
  description: Mount point of the filesystem holding the data-root (or its nearest existing parent).
  returned: always
  type: str
  sample: /var/lib/docker
mount_source:
  description: Device or source of that filesystem.
  returned: always
  type: str
  sample: /dev/sdb1
kernel_filesystems:
  description: Filesystem types the running kernel knows (C(/proc/filesystems)).
  returned: always
  type: list
  elements: str
  sample: [btrfs, ext4, fuse, overlay, xfs]
backing_fs:
  description: Docker's name for the backing filesystem of the data-root.
  returned: always
  type: str
  sample: xfs
d_type:
  description: Whether the backing filesystem returns file types in directory entries (overlay2 needs it).
  returned: always
  type: bool
xfs_ftype:
  description: C(ftype) of an xfs backing filesystem (overlay2 needs V(1)); V(null) on other filesystems.
  returned: always
  type: int
  sample: 1
overlay_native_diff:
  description:
    - Whether overlay2 can tar its upper directories directly on this kernel (Docker's native-diff probe);
      otherwise it falls back to the slower naive diff.
  returned: when overlay2 is supported
  type: bool
overlay_native_diff_reason:
  description: Why native diff is off (for example V(kernel has CONFIG_OVERLAY_FS_REDIRECT_DIR enabled)); empty when on.
  returned: when overlay2 is supported
  type: str
engine_version:
  description: The engine version whose rules were applied.
  returned: always
  type: str
  sample: 20.10.24+dfsg1
installed_engine_version:
  description: Version of the installed C(dockerd), V(null) when none is installed.
  returned: always
  type: str
  sample: 20.10.24+dfsg1
priority:
  description: Docker's driver order for that engine version.
  returned: always
  type: list
  elements: str
  sample: [btrfs, zfs, overlay2, fuse-overlayfs, aufs, overlay, devicemapper, vfs]
drivers:
  description: For every driver the collection knows, whether it is supported on this host and why not.
  returned: always
  type: dict
  sample: {"overlay2": {"supported": true, "reason": ""}, "btrfs": {"supported": false, "reason": "backing filesystem is xfs, not btrfs"}}
supported:
  description: Names of the supported drivers.
  returned: always
  type: list
  elements: str
  sample: [fuse-overlayfs, overlay2, vfs]
prior_state:
  description: Drivers whose home under the data-root holds state, in priority order.
  returned: always
  type: list
  elements: str
  sample: [overlay2]
pick:
  description: The driver Docker would use when C(daemon.json) names none; V(null) when it would fail to start.
  returned: always
  type: str
  sample: overlay2
pick_reason:
  description: Why Docker would pick it.
  returned: always
  type: str
  sample: first supported driver in priority order
error:
  description: Why Docker would fail to choose a driver, else V(null).
  returned: always
  type: str
daemon_json:
  description: What the engine's configuration file declares.
  returned: always
  type: dict
  contains:
    path:
      description: The file.
      type: str
      returned: always
    exists:
      description: Whether it exists.
      type: bool
      returned: always
    storage_driver:
      description: Its C(storage-driver), V(null) when unset.
      type: str
      returned: always
    storage_opts:
      description: Its C(storage-opts).
      type: list
      elements: str
      returned: always
    data_root:
      description: Its C(data-root).
      type: str
      returned: always
    containerd_snapshotter:
      description: Its C(features.containerd-snapshotter), V(null) when unset.
      type: bool
      returned: always
running:
  description: What the running engine reports, V(null) when no engine answers on O(docker_host).
  returned: always
  type: dict
  contains:
    docker_host:
      description: The socket asked.
      type: str
      returned: success
    version:
      description: Engine version.
      type: str
      returned: success
    api_version:
      description: Engine API version.
      type: str
      returned: success
    driver:
      description: The storage driver it uses.
      type: str
      returned: success
    driver_status:
      description: Its C(DriverStatus) pairs.
      type: dict
      returned: success
    data_root:
      description: Its C(DockerRootDir).
      type: str
      returned: success
    containerd_store:
      description: Whether it keeps images in the containerd image store.
      type: bool
      returned: success
thin_pool:
  description:
    - The thin pool of a devicemapper host (C(dm.thinpooldev) in C(daemon.json), else the running engine's
      C(Pool Name)); V(null) on other hosts. Keys as M(strata.graphdriver.thin_pool) returns in RV(strata.graphdriver.thin_pool#module:pool), and
      the ones below. A pool LVM does not know (loop-lvm) has V(null) for the LVM ones.
  returned: always
  type: dict
  sample: {"vg": "docker", "name": "thinpool", "data_percent": 12.5, "metadata_percent": 3.1,
           "data_percent_of_available": 10.2, "vg_free": 2147483648, "monitored": true,
           "profile": "docker-thinpool", "thinpooldev": "/dev/mapper/docker-thinpool",
           "threshold": 90, "over_threshold": false}
  contains:
    threshold:
      description: O(thin_pool_threshold).
      type: float
      returned: success
    over_threshold:
      description: Whether data (counting the volume group's free space) or metadata use is at the threshold or above.
      type: bool
      returned: success
    error:
      description: Why the pool could not be read (it is missing, or not a thin pool); only then.
      type: str
      returned: when the pool cannot be read
containerd_image_store_default:
  description: Whether that engine version defaults fresh installs to the containerd image store (Engine 29 and later).
  returned: always
  type: bool
storage_warnings:
  description: What an operator must act on, one sentence each (also emitted as Ansible warnings).
  returned: always
  type: list
  elements: str
  sample: ["the running engine uses vfs but daemon.json configures overlay2: restart the engine"]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.graphdriver.plugins.module_utils import _driver_info
from ansible_collections.strata.graphdriver.plugins.module_utils._common import DATA_ROOT_ARGS, DOCKER_HOST_ARGS, argument_spec
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import GraphDriverError


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            DATA_ROOT_ARGS, DOCKER_HOST_ARGS,
            engine_version=dict(type='str'),
            thin_pool_threshold=dict(type='float', default=90),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        facts = _driver_info.gather(data_root=p['data_root'], daemon_json_path=p['daemon_json'],
                                    docker_host=p['docker_host'], engine_version=p['engine_version'],
                                    thin_pool_threshold=p['thin_pool_threshold'])
    except GraphDriverError as e:
        module.fail_json(msg=str(e))
    for w in facts['storage_warnings']:
        module.warn(w)
    module.exit_json(changed=False, **facts)


if __name__ == '__main__':
    main()
