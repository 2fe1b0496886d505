#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: driver_migration
short_description: Carry a stopped Docker engine's images from one storage driver to another
version_added: 0.1.0
description:
  - Docker hides every image when C(storage-driver) changes. This module copies them over first, layer by
    layer, from the source driver's layer store into the target's, so that an engine started on the target
    driver lists and runs the same images with the same image IDs.
  - Each layer's exact tar (the bytes Docker hashed) is rebuilt from the source and registered in the target
    with its DiffID checked; the image configs and tags are copied last, so the target never shows an image
    whose layers are not all there. A failure part-way removes the target layers this run added.
  - The source driver's layers stay as they were, unless O(remove_source=true) with O(force=true); switching
    C(storage-driver) back is the rollback.
  - Stopped containers are carried too, so that C(docker start) works on the target and sees the files the
    container wrote. Carried are their init and read-write layers (same ids), C(layerdb/mounts/<id>), and
    C(Driver) in C(containers/<id>/config.v2.json), which decides which driver's engine loads them. Volumes live outside
    the drivers and are left where they are.
  - Rolling back is migrating back (every layer is already there, so only the containers' C(Driver) is set
    again), then switching C(storage-driver) back; the C(strata.graphdriver.driver_migration) role does both.
  - Refuses to run while a Docker engine uses the data-root. Stop the engine first; the
    C(strata.graphdriver.driver_migration) role stops and restarts it around the migration.
  - Does not change C(daemon.json); declare the target with M(strata.graphdriver.storage_driver) afterwards.
author:
  - Strata graphdriver team (@strata)
requirements:
  - Python 3.9 or newer on the managed host (the standard library only)
  - root
  - the Docker engine stopped while the module runs
  - the tools of the source and target drivers - C(btrfs) (btrfs-progs) for btrfs, C(zfs) (zfsutils-linux, or
    zfs-fuse) for zfs, C(dmsetup) (lvm2) for devicemapper, C(fuse-overlayfs) for fuse-overlayfs; none for vfs,
    overlay2 and overlay
extends_documentation_fragment:
  - strata.graphdriver.attributes
  - strata.graphdriver.force
  - strata.graphdriver.daemon
  - strata.graphdriver.attributes.CHANGES
options:
  target:
    description:
      - The storage driver to carry the images to.
      - V(containerd) is Docker's containerd image store (Engine 24+ with C(features.containerd-snapshotter)) on the
        same data-root. The images go in through containerd's own import and unpack (C(ctr images import), as
        C(docker load) on that store), the stopped containers as the lease and snapshots Docker makes for one. Tags,
        configs and DiffIDs stay; the image ID that store shows is the manifest's digest; RepoDigests are not
        carried. The graphdriver store is not written.
      - With O(source=containerd) and a graphdriver O(target), the rollback of that migration - the carried
        containers point at the graphdriver again; then turn the feature off.
    type: str
    required: true
    choices: [btrfs, containerd, devicemapper, fuse-overlayfs, overlay2, vfs, zfs]
  source:
    description:
      - The storage driver whose images are carried.
      - Defaults to the C(storage-driver) that O(daemon_json) declares, unless that is O(target); else to the one
        driver other than O(target) that holds state under the data-root (its home or its C(image/<driver>) store).
      - V(aufs) and V(overlay) (Docker's legacy overlay driver, not overlay2) are sources only, read from their
        directories without mounting anything, aufs without the aufs kernel module. Docker deprecated both and
        removed them in Engine 24.
    type: str
    choices: [aufs, btrfs, containerd, devicemapper, fuse-overlayfs, overlay, overlay2, vfs, zfs]
  snapshotter:
    description: The containerd snapshotter the images are unpacked into, with O(target=containerd).
    type: str
    choices: [btrfs, fuse-overlayfs, native, overlayfs, zfs]
    default: overlayfs
  containerd_address:
    description:
      - The socket of a running containerd to use with O(target=containerd) or O(source=containerd) - the host's
        own (C(/run/containerd/containerd.sock)) when the engine uses it.
      - Unset, a private containerd runs on the data-root's C(containerd/daemon) for the time of the run, as the
        engine runs its own; in check mode it runs on an overlay of that directory, so nothing there changes.
    type: path
  source_options:
    description: The source driver's C(storage-opts), each C(key=value).
    type: list
    elements: str
    default: []
  target_options:
    description:
      - The target driver's C(storage-opts), each C(key=value), for example V(zfs.fsname=tank/docker).
      - They are checked with the target driver on this host before anything is written.
    type: list
    elements: str
    default: []
  remove_source:
    description:
      - After the migration, delete the source driver's layers, its home and C(image/<source>).
      - That removes the rollback; it needs O(force=true).
      - The carried containers' source layers go too.
    type: bool
    default: false
  force:
    description: Confirm O(remove_source=true).
  progress_file:
    description:
      - A file on the host where the migration writes how far it is, as JSON, replaced atomically as it goes
        (at each phase, after each layer and container, and at least every 64 MiB of a layer, at most
        once a second), with the keys C(phase) (V(layers), V(metadata), V(containers), V(done)), C(layers_done),
        C(layers_total), C(bytes_done), C(bytes_total), C(containers_done), C(containers_total),
        C(current) (the layer or container being copied) and C(seconds).
      - Run the module with C(async) and read the file while polling; the C(strata.graphdriver.driver_migration)
        role does that and prints the progress. Its directory is made when missing. Not written in check mode.
    type: path
notes:
  - Needs root. Runs no external command for vfs, overlay2 and fuse-overlayfs; btrfs and zfs targets call
    C(btrfs) and C(zfs) as Docker does.
  - In check mode nothing is written, not even an empty target home (Docker would count it as prior state);
    RV(commands) lists the steps a real run takes.
  - The time taken grows with the bytes to copy (RV(bytes_to_copy)); a second run copies nothing.
seealso:
  - module: strata.graphdriver.storage_driver
  - module: strata.graphdriver.driver_info
  - name: Docker storage drivers
    description: Why images disappear when the storage driver changes.
    link: https://docs.docker.com/engine/storage/drivers/select-storage-driver/
'''

EXAMPLES = r'''
- name: Stop the engine (the driver_migration role does all of this, host by host)
  ansible.builtin.systemd_service:
    name: docker
    state: stopped

- name: See what a migration to overlay2 would copy
  strata.graphdriver.driver_migration:
    target: overlay2
  check_mode: true
  register: plan

- name: Carry the images over
  strata.graphdriver.driver_migration:
    target: overlay2
  register: migration

- name: Declare overlay2 (the vfs layers stay as the rollback, hence force)
  strata.graphdriver.storage_driver:
    name: overlay2
    force: true

- name: Onto a ZFS dataset, from an explicit source
  strata.graphdriver.driver_migration:
    data_root: /srv/docker
    source: overlay2
    target: zfs
    target_options:
      - zfs.fsname=tank/docker

- name: A long migration in the background, its progress in a file (the role polls and prints it)
  strata.graphdriver.driver_migration:
    target: overlay2
    progress_file: /run/strata-graphdriver/migration.json
  async: 7200
  poll: 0
  register: migration_job

- name: Once the new driver is proven, free the old driver's space
  strata.graphdriver.driver_migration:
    source: vfs
    target: overlay2
    remove_source: true
    force: true
'''

RETURN = r'''
data_root:
  description: The data-root migrated.
  returned: success
  type: str
  sample: /var/lib/docker
source:
  description: The driver the images were carried from.
  returned: success
  type: str
  sample: vfs
target:
  description: The driver the images were carried to.
  returned: success
  type: str
  sample: overlay2
images:
  description: IDs of the images carried (every image of the source).
  returned: success
  type: list
  elements: str
  sample: [sha256:4ab1b7ef8ba1d3ce0e5e2b8a31cf5ba1cfbfd2e0a1c1d6a0f9b3ad1e44c0a2f1]
tags:
  description: The references carried, each with its image ID.
  returned: success
  type: dict
  sample: {"busybox:latest": "sha256:4ab1b7ef8ba1d3ce0e5e2b8a31cf5ba1cfbfd2e0a1c1d6a0f9b3ad1e44c0a2f1"}
layers_to_copy:
  description: ChainIDs of the layers not yet in the target, parents first (what a run copies).
  returned: success
  type: list
  elements: str
bytes_to_copy:
  description: Sum of the sizes of RV(layers_to_copy) and of the changes of the containers to carry.
  returned: success
  type: int
  sample: 1310720
layers_copied:
  description: ChainIDs of the layers this run copied; empty in check mode and on a second run.
  returned: success
  type: list
  elements: str
layers_present:
  description: ChainIDs of the source layers the target already held.
  returned: success
  type: list
  elements: str
bytes_free:
  description:
    - Bytes free on the target's filesystem before the run. A migration needing more (RV(bytes_to_copy)) than it
      holds is refused before anything is written, in check mode too.
  returned: success
  type: int
containers:
  description: IDs of the source driver's containers, carried to the target (in check mode, to be carried).
  returned: success
  type: list
  elements: str
containers_copied:
  description: IDs of the containers whose layers this run copied (the others were there already).
  returned: success
  type: list
  elements: str
source_removed:
  description: Whether the source driver's layers and image store were deleted by this run.
  returned: success
  type: bool
seconds:
  description: Time the migration took; V(0) in check mode.
  returned: success
  type: float
  sample: 1.42
commands:
  description: The steps run (or, in check mode, that would run), in order.
  returned: success
  type: list
  elements: str
  sample:
    - copy layer sha256:1d0f2c4b5e... (1310720 bytes) from vfs to overlay2
    - copy image/vfs/imagedb and image/vfs/distribution to image/overlay2
    - tag busybox:latest in image/overlay2/repositories.json
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.graphdriver.plugins.module_utils import _driver_migration
from ansible_collections.strata.graphdriver.plugins.module_utils._common import (
    DATA_ROOT_ARGS, FORCE_ARGS, argument_spec, run_plan)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            DATA_ROOT_ARGS, FORCE_ARGS,
            target=dict(type='str', required=True, choices=_driver_migration.TARGETS),
            source=dict(type='str', choices=_driver_migration.SOURCES),
            source_options=dict(type='list', elements='str', default=[]),
            target_options=dict(type='list', elements='str', default=[]),
            remove_source=dict(type='bool', default=False),
            progress_file=dict(type='path'),
            snapshotter=dict(type='str', default='overlayfs', choices=_driver_migration.SNAPSHOTTERS),
            containerd_address=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    module.exit_json(**run_plan(module, lambda: _driver_migration.plan(module.params),
                                running_hint=_driver_migration.RUNNING_HINT))


if __name__ == '__main__':
    main()
