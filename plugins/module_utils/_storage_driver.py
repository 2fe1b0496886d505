# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Declare the storage driver in ``daemon.json``, safely.

The plan is computed first and applied second, so that check mode shows
exactly what a real run does. Two refusals protect the host: a driver this
host cannot run (dockerd would not start), and a switch that would hide the
images kept under another driver's home (Docker's own trap: it starts
"empty" and the images look lost) unless the caller says ``force``.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.strata.graphdriver.plugins.module_utils import _all_drivers  # noqa: F401 pylint: disable=unused-import
from ansible_collections.strata.graphdriver.plugins.module_utils import _daemon_json as daemon_json
from ansible_collections.strata.graphdriver.plugins.module_utils._daemon_json import storage_opts_dict
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import engine, registered, selection, to_containerd
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.dataroot import DataRoot
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import GraphDriverError


class Refused(GraphDriverError):
    """The change asked for would break the engine or hide data."""


class Plan(object):
    """What ``storage_driver`` will do: the file before and after, and why
    (the plan shape of _common.run_plan; it runs no command)."""

    commands = ()

    def __init__(self, path, before, after, driver, report, running):
        self.path = path
        self.before = before
        self.after = after
        self.driver = driver
        self.report = report
        self.running = running

    @property
    def changed(self):
        return daemon_json.render(self.before) != daemon_json.render(self.after)

    @property
    def running_driver(self):
        return (self.running or {}).get("driver")

    @property
    def restart_required(self):
        # dockerd reads daemon.json only at start. A running engine that
        # already uses the declared driver needs no restart unless the
        # storage-opts changed (it does not report them); with no engine
        # answering, a changed file needs a (re)start to take effect.
        if self.running is None:
            return self.changed
        if self.running_driver != self.driver:
            return True
        return self.before.get("storage-opts") != self.after.get("storage-opts")

    def planned(self):
        return self.after

    def apply(self):
        if self.changed:
            daemon_json.write(self.path, self.after)
        return self.after

    def diff(self, after):
        return {"before": daemon_json.render(self.before) if os.path.exists(self.path) else "",
                "after": daemon_json.render(after),
                "before_header": self.path, "after_header": self.path}

    def result(self, after):
        report = self.report
        return {
            "driver": self.driver,
            "image_store": "containerd" if daemon_json.containerd_store(after) else "graphdriver",
            "storage_opts": list(after.get("storage-opts") or []),
            "path": self.path,
            "restart_required": self.restart_required,
            "running_driver": self.running_driver,
            "pick": report.get("pick"),
            "pick_reason": report.get("pick_reason"),
            "prior_state": list(report.get("prior_state") or []),
            "supported": sorted(n for n, d in (report.get("drivers") or {}).items() if d.get("supported")),
        }


def plan(name, storage_opts=None, data_root=None, path=daemon_json.DEFAULT_PATH,
         docker_host=engine.DEFAULT_HOST, engine_version=None, force=False, image_store=None):
    """The Plan for declaring ``name`` ('auto' = Docker's pick); Refused when unsafe.

    ``image_store``: 'graphdriver', 'containerd' (Docker's containerd image
    store, ``name`` then a snapshotter), or None to keep the file's."""
    before = daemon_json.read(path)
    root = data_root or daemon_json.data_root(before)
    running = engine.running_engine(docker_host)
    version = engine_version or (running or {}).get("version") or engine.installed_version()
    current_opts = daemon_json.storage_settings(before)[1]
    opts = storage_opts_dict(current_opts if storage_opts is None else storage_opts)
    was_containerd = daemon_json.containerd_store(before)
    if image_store is None:
        image_store = "containerd" if was_containerd else "graphdriver"
    if image_store == "containerd":
        return _containerd_plan(name, opts, root, path, before, running, version, force, was_containerd)
    if was_containerd and not force and _containerd_holds_images(root):
        raise Refused("turning the containerd image store off would hide the images it keeps under %s: "
                      "set force: true to switch anyway (a rollback of strata.graphdriver.driver_migration "
                      "to containerd does so)" % DataRoot(root).containerd)
    if name in SNAPSHOTTER_ONLY:
        raise Refused("%s is a containerd snapshotter: declare it with image_store: containerd" % name)
    # configured=None: what Docker would do on its own is what 'auto' means.
    report = selection.driver_report(root, engine_version=version, configured=None, options=opts)

    driver = name
    if name == "auto":
        driver = report.get("pick")
        if not driver:
            raise Refused("Docker could not pick a storage driver for %s: %s"
                          % (root, report.get("error") or report.get("pick_reason")))
    status = (report.get("drivers") or {}).get(driver)
    if status is None:
        raise Refused("unknown storage driver %r; known: %s"
                      % (driver, ", ".join(sorted(report.get("drivers") or {}))))
    if not status.get("supported"):
        raise Refused("storage driver %s cannot run on this host with data-root %s (backing filesystem %s): %s"
                      % (driver, root, report.get("backing_fs"), status.get("reason")))

    prior = list(report.get("prior_state") or [])
    hidden = [d for d in prior if d != driver]
    if hidden and not force:
        raise Refused("declaring %s would hide the images kept by %s under %s: migrate them first "
                      "(strata.graphdriver.driver_migration), remove those directories, or set force: true "
                      "to switch anyway" % (driver, ", ".join(hidden),
                                            ", ".join(DataRoot(root).home(d) for d in hidden)))

    after = daemon_json.with_storage(before, driver, storage_opts)
    if was_containerd:
        after = daemon_json.with_containerd_store(after, False)
    return Plan(path, before, after, driver, report, running)


# The containerd snapshotters that are no graphdriver's name.
SNAPSHOTTER_ONLY = tuple(sorted(set(to_containerd.SNAPSHOTTERS) - set(registered())))
# What O(name) takes.
NAMES = sorted(["auto"] + registered() + list(SNAPSHOTTER_ONLY))
CONTAINERD_STORE_SINCE = 24     # features.containerd-snapshotter came with Engine 24.0


def _containerd_plan(name, opts, root, path, before, running, version, force, was_containerd):
    snapshotter = to_containerd.DEFAULT_SNAPSHOTTER if name == "auto" else name
    if snapshotter not in to_containerd.SNAPSHOTTERS:
        raise Refused("with the containerd image store, name is a snapshotter (%s) or auto, not the "
                      "graphdriver %s" % (", ".join(sorted(to_containerd.SNAPSHOTTERS)), name))
    major = _major(version)
    if major is not None and major < CONTAINERD_STORE_SINCE:
        raise Refused("Engine %s has no containerd image store (features.containerd-snapshotter came with "
                      "Engine 24.0)" % version)
    report = selection.driver_report(root, engine_version=version, configured=None, options=opts)
    status = (report.get("drivers") or {}).get(to_containerd.SNAPSHOTTERS[snapshotter]) or {}
    if not status.get("supported"):
        raise Refused("snapshotter %s cannot run on this host with data-root %s (backing filesystem %s): %s"
                      % (snapshotter, root, report.get("backing_fs"), status.get("reason")))
    if not was_containerd and not force:
        hidden = _hidden_by_containerd(root)
        if hidden:
            raise Refused("turning the containerd image store on would hide %s: migrate them first "
                          "(strata.graphdriver.driver_migration with target: containerd), or set force: true "
                          "to switch anyway" % "; ".join(hidden))
    after = daemon_json.with_containerd_store(before, True, None if name == "auto" else snapshotter)
    return Plan(path, before, after, snapshotter, report, running)


def _major(version):
    try:
        return int(str(version).split(".", maxsplit=1)[0])
    except (TypeError, ValueError):
        return None


def _hidden_by_containerd(root):
    """What of each graphdriver store under ``root`` (vfs included, which
    Docker's prior-state scan leaves out) the containerd store lacks, in words."""
    out = []
    for driver in DataRoot(root).layer_stores():
        try:
            p = to_containerd.plan(root, driver)
        except engine.EngineRunning:
            raise Refused("the engine is running on %s: stop it so that its %s store can be compared with the "
                          "containerd store, or set force: true" % (root, driver))
        if p.images_to_copy or p.containers_to_copy:
            out.append("%d images and %d containers of the %s store" % (
                len(p.images_to_copy), len(p.containers_to_copy), driver))
    return out


def _containerd_holds_images(root):
    """Content blobs in the data-root's containerd: only its image store
    writes them (Engine 20.10-23 use containerd for containers alone)."""
    blobs = os.path.join(DataRoot(root).containerd, "io.containerd.content.v1.content", "blobs", "sha256")
    try:
        return bool(os.listdir(blobs))
    except OSError:
        return False
