# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Everything "choose and check" needs about one host, in one dict.

The driver choice itself is the library's (``graphdriver.selection``); this
adds what the host and its engine say around it: kernel filesystems, xfs
``ftype``, what ``daemon.json`` configures, what the running engine uses,
and the warnings an operator must see (the "several valid graphdrivers"
trap, images hidden by a switch, a configured driver this host cannot run).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.strata.graphdriver.plugins.module_utils import _all_drivers  # noqa: F401 pylint: disable=unused-import
from ansible_collections.strata.graphdriver.plugins.module_utils import _daemon_json as daemon_json, _thin_pool as thinpool
from ansible_collections.strata.graphdriver.plugins.module_utils._cmd_runner import CmdRunner, positional
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import engine, selection
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.backingfs import nearest_existing
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.dataroot import DataRoot
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import GraphDriverError
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.mount import mount_of
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.overlayutils import native_diff_problem
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.priority import parse_version, removed_in

XFS_INFO = CmdRunner("xfs_info", mountpoint=positional())


def kernel_filesystems(path="/proc/filesystems"):
    """Filesystem types the running kernel knows (modules already loaded)."""
    try:
        with open(path) as f:
            return sorted(line.split()[-1] for line in f if line.strip())
    except OSError:
        return []


def xfs_ftype(mountpoint):
    """1 or 0 from ``xfs_info``; None when it cannot be told."""
    try:
        out = XFS_INFO("mountpoint", mountpoint=mountpoint).run(timeout=30)
    except GraphDriverError:
        return None
    for token in out.replace(",", " ").split():
        if token.startswith("ftype="):
            try:
                return int(token.split("=", 1)[1])
            except ValueError:
                return None
    return None


def overlay_native_diff(root):
    """(usable, reason): Docker's probe, run where overlay2's home is (or would be)."""
    home = DataRoot(root).home("overlay2")
    where = home if os.path.isdir(home) else nearest_existing(root)
    try:
        problem = native_diff_problem(where)
    except (OSError, GraphDriverError) as e:
        problem = "probe failed: %s" % e
    return problem is None, problem or ""


def thin_pool_device(configured, opts, running):
    """The thin pool a devicemapper host uses: daemon.json's dm.thinpooldev,
    else the running engine's Pool Name (loop-lvm); None elsewhere."""
    if opts.get("dm.thinpooldev"):
        return opts["dm.thinpooldev"]
    # only devicemapper's status has a Pool Name
    return ((running or {}).get("driver_status") or {}).get("Pool Name")


def gather(data_root=None, daemon_json_path=daemon_json.DEFAULT_PATH,
           docker_host=engine.DEFAULT_HOST, engine_version=None, storage_opts=None,
           thin_pool_threshold=90):
    config = daemon_json.read(daemon_json_path)
    configured, configured_opts = daemon_json.storage_settings(config)
    root = data_root or daemon_json.data_root(config)
    running = engine.running_engine(docker_host)
    installed = engine.installed_version()
    version = engine_version or (running or {}).get("version") or installed
    opts = daemon_json.storage_opts_dict(configured_opts if storage_opts is None else storage_opts)

    report = selection.driver_report(root, engine_version=version, configured=configured, options=opts)

    where = nearest_existing(root)
    entry = mount_of(where)
    ftype = None
    if report.get("backing_fs") == "xfs" and entry is not None:
        ftype = xfs_ftype(entry.mountpoint)

    facts = {
        "data_root": root,
        "data_root_exists": os.path.isdir(root),
        "mountpoint": entry.mountpoint if entry else None,
        "mount_source": entry.source if entry else None,
        "kernel_filesystems": kernel_filesystems(),
        "backing_fs": report.get("backing_fs"),
        "d_type": report.get("d_type"),
        "xfs_ftype": ftype,
        "engine_version": version,
        "installed_engine_version": installed,
        "priority": report.get("priority"),
        "drivers": report.get("drivers") or {},
        "supported": sorted(n for n, d in (report.get("drivers") or {}).items() if d.get("supported")),
        "prior_state": list(report.get("prior_state") or []),
        "pick": report.get("pick"),
        "pick_reason": report.get("pick_reason"),
        "error": report.get("error"),
        "daemon_json": {
            "path": daemon_json_path,
            "exists": os.path.exists(daemon_json_path),
            "storage_driver": configured,
            "storage_opts": configured_opts,
            "data_root": config.get("data-root"),
            "containerd_snapshotter": (config.get("features") or {}).get("containerd-snapshotter"),
        },
        "running": running,
    }
    pool = thin_pool_device(configured, opts, running)
    facts["thin_pool"] = thinpool.facts_for_device(pool, thin_pool_threshold) if pool else None
    if facts["drivers"].get("overlay2", {}).get("supported"):
        facts["overlay_native_diff"], facts["overlay_native_diff_reason"] = overlay_native_diff(root)
    facts["containerd_image_store_default"] = _containerd_default(version)
    facts["storage_warnings"] = warnings(facts)
    return facts


def _containerd_default(version):
    v = parse_version(version)
    return bool(v and v >= engine.CONTAINERD_STORE_DEFAULT_SINCE)


def warnings(facts):
    """What an operator must act on, one sentence each."""
    out = []
    configured = facts["daemon_json"]["storage_driver"]
    running = facts["running"]
    prior = facts["prior_state"]
    drivers = facts["drivers"]
    version = parse_version(facts["engine_version"])
    if len(prior) > 1 and not configured:
        out.append("%s contains several valid graphdrivers (%s): dockerd refuses to start until "
                   "storage-driver is set in daemon.json or the unused directories are removed"
                   % (facts["data_root"], ", ".join(prior)))
    if configured and configured in drivers and not drivers[configured].get("supported"):
        out.append("daemon.json configures %s, which this host cannot run (%s): dockerd will fail to start"
                   % (configured, drivers[configured].get("reason")))
    # with the containerd image store, storage-driver names a snapshotter and
    # the graphdriver stores are what a migration left for its rollback
    if configured and prior and configured not in prior and not facts["daemon_json"]["containerd_snapshotter"]:
        out.append("daemon.json configures %s but the images are in %s: they are hidden until switched back "
                   "or migrated" % (configured, ", ".join(prior)))
    removed = removed_in(configured) if configured else None
    if removed and version and version >= removed:
        out.append("daemon.json configures %s, which Docker Engine %d.%d no longer has"
                   % (configured, version[0], version[1]))
    if running and configured and running.get("driver") and running["driver"] != configured:
        out.append("the running engine uses %s but daemon.json configures %s: restart the engine"
                   % (running["driver"], configured))
    if running and running.get("containerd_store"):
        out.append("the running engine keeps images in the containerd image store (snapshotter %s), "
                   "not in a graphdriver" % running.get("driver"))
    elif facts["containerd_image_store_default"] and facts["daemon_json"]["containerd_snapshotter"] is not False:
        out.append("Docker Engine %s defaults fresh installs to the containerd image store; set "
                   "features.containerd-snapshotter=false in daemon.json to keep a graphdriver"
                   % facts["engine_version"])
    if facts["d_type"] is False:
        out.append("the backing filesystem of %s lacks d_type support (xfs ftype=0?): overlay2 refuses it"
                   % facts["data_root"])
    if facts.get("error"):
        out.append(facts["error"])
    out += _thin_pool_warnings(facts["thin_pool"])
    return out


def _thin_pool_warnings(pool):
    if not pool:
        return []
    if pool.get("error"):
        return ["devicemapper's %s" % pool["error"]]
    where = "%s/%s" % (pool["vg"], pool["name"]) if pool["vg"] else pool["name"]
    out = []
    if pool["over_threshold"]:
        data = pool["data_percent_of_available"]
        out.append("thin pool %s is over %g%%: data %s%%%s, metadata %s%%; extend the volume group or remove "
                   "images before it fills (a full pool stops every container)"
                   % (where, pool["threshold"], pool["data_percent"],
                      " (%s%% counting the volume group's free space)" % data if data is not None else "",
                      pool["metadata_percent"]))
    if pool["vg"] and not pool["monitored"]:
        out.append("thin pool %s is not monitored by dmeventd: it will not auto-extend (lvchange --monitor y %s)"
                   % (where, where))
    return out
