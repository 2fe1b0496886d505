# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bring one layer of a driver's home to a state: present, absent, mounted, unmounted.

Layers are immutable once made, as in Docker: an existing layer is never
rewritten, so "present" only creates. "mounted" holds exactly one Get
reference however often it is asked (the count is persisted by the
library), so that playbook runs are idempotent.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import gzip
import hashlib

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import GraphDriverError


class LayerRefused(GraphDriverError):
    pass


def _call(drv, method, *args, **kwargs):
    """How an API call is shown in a plan: overlay2.create('l1', parent='base')."""
    shown = [repr(a) for a in args] + ["%s=%r" % (k, v) for k, v in sorted(kwargs.items()) if v is not None]
    return "%s.%s(%s)" % (drv.name, method, ", ".join(shown))


def open_tar(path):
    """A layer tar on the host, plain or gzip-compressed (Docker accepts both)."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise LayerRefused("cannot read layer tar %s: %s" % (path, e.strerror))
    magic = f.read(2)
    f.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=f, mode="rb")
    return f


def is_mounted(drv, layer_id):
    """Whether a Get reference holds the layer mounted. A layer whose Get
    mounts nothing (a plain directory) is never "mounted"."""
    return drv.exists(layer_id) and drv.references(layer_id) > 0


def describe(drv, layer_id, parent, digest):
    """size, diff_id (sha256 of the diff tar, the way Docker computes DiffIDs)."""
    info = {"size": drv.diff_size(layer_id, parent), "diff_id": None}
    if digest:
        h = hashlib.sha256()
        stream = drv.diff(layer_id, parent)
        try:
            while True:
                chunk = stream.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
        finally:
            stream.close()
        info["diff_id"] = "sha256:" + h.hexdigest()
    return info


class LayerState(object):
    def __init__(self, drv, layer_id, parent=None, read_write=False, size=None, tar=None, force=False):
        self.drv = drv
        self.id = layer_id
        self.parent = parent
        self.read_write = read_write
        self.size = size
        self.tar = tar
        self.force = force
        self.commands = []
        self.path = None

    def _plan(self, method, *args, **kwargs):
        self.commands.append(_call(self.drv, method, *args, **kwargs))

    def present(self, check_mode):
        drv = self.drv
        if drv.exists(self.id):
            return False
        if self.parent and not drv.exists(self.parent):
            raise LayerRefused("parent layer %s does not exist in %s: create it first" % (self.parent, drv.home))
        opts = {"size": self.size} if self.size else None
        method = "create_read_write" if self.read_write else "create"
        self._plan(method, self.id, parent=self.parent, opts=opts)
        if self.tar:
            self._plan("apply_diff", self.id, self.parent, self.tar)
        if check_mode:
            return True
        getattr(drv, method)(self.id, parent=self.parent, opts=opts)
        if self.tar:
            try:
                stream = open_tar(self.tar)
                try:
                    drv.apply_diff(self.id, self.parent, stream)
                finally:
                    stream.close()
            except BaseException:
                # All or nothing: a layer whose content failed is not left behind.
                drv.remove(self.id)
                raise
        return True

    def absent(self, check_mode):
        drv = self.drv
        if not drv.exists(self.id):
            return False
        count = drv.references(self.id)
        if count and not self.force:
            raise LayerRefused("layer %s in %s is mounted (%d reference%s): unmount it first "
                               "(state: unmounted) or set force: true"
                               % (self.id, drv.home, count, "" if count == 1 else "s"))
        for dummy in range(count):
            self._plan("put", self.id)
        self._plan("remove", self.id)
        if check_mode:
            return True
        for dummy in range(count):
            drv.put(self.id)
        drv.remove(self.id)
        return True

    def mounted(self, check_mode):
        changed = self.present(check_mode)
        if not self.drv.get_mounts(self.id, self.parent):
            if not (check_mode and changed):
                self.path = self.drv.get(self.id)
            return changed
        if not changed and self.drv.references(self.id) > 0:
            self.path = self.current_path()
            return False
        self._plan("get", self.id)
        if not check_mode:
            self.path = self.drv.get(self.id)
        return True

    def current_path(self):
        """The root of a layer that is already mounted, without changing its count.

        Get/Put around an existing reference never unmounts: the count goes
        n -> n+1 -> n.
        """
        path = self.drv.get(self.id)
        self.drv.put(self.id)
        return path

    def unmounted(self, check_mode):
        drv = self.drv
        if not drv.exists(self.id):
            raise LayerRefused("layer %s does not exist in %s: nothing to unmount" % (self.id, drv.home))
        count = drv.references(self.id)
        if count == 0:
            return False
        for dummy in range(count):
            self._plan("put", self.id)
        if not check_mode:
            for dummy in range(count):
                drv.put(self.id)
        return True


def observe(drv, layer_id):
    return {"exists": drv.exists(layer_id), "mounted": is_mounted(drv, layer_id)}


class LayerPlan(object):
    """The plan shape (_common.run_plan) over LayerState: the state's
    method run in check mode gives the commands, run for real it applies."""

    def __init__(self, drv, layer_id, state, digest=True, **options):
        self.drv, self.id, self.state, self.digest, self.options = drv, layer_id, state, digest, options
        self.before = observe(drv, layer_id)
        probe = LayerState(drv, layer_id, **options)
        self.changed = getattr(probe, state)(True)
        self.commands = probe.commands
        self.path = probe.path
        self.measured = {}

    def planned(self):
        if not self.changed:
            return observe(self.drv, self.id)
        return {"exists": self.state in ("present", "mounted"),
                "mounted": self.state == "mounted" and self.drv.get_mounts(self.id, self.options.get("parent"))}

    def apply(self):
        run = LayerState(self.drv, self.id, **self.options)
        getattr(run, self.state)(False)
        self.path = run.path
        # Measuring may mount the layer (a naive diff): never in check mode.
        if self.drv.exists(self.id):
            self.measured = describe(self.drv, self.id, self.options.get("parent"), self.digest)
        return observe(self.drv, self.id)

    def result(self, after):
        return dict(after, id=self.id, home=self.drv.home, layer_path=self.path, **self.measured)
