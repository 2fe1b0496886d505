# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read, merge and atomically write Docker's ``daemon.json``.

Only the keys this collection manages change; every other key the file
holds, and their order, is kept, so that an operator's ``log-driver`` or
``registry-mirrors`` survive a storage change.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import collections
import json
import os

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import dataroot, engine
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import GraphDriverError
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.fileutil import atomic_write, makedirs

DEFAULT_PATH = engine.DEFAULT_CONFIG


class DaemonJsonError(GraphDriverError):
    pass


def read(path):
    """The file as an ordered dict; {} when it does not exist or is empty."""
    try:
        with open(path, "r") as f:
            text = f.read()
    except FileNotFoundError:
        return collections.OrderedDict()
    except OSError as e:
        raise DaemonJsonError("cannot read %s: %s" % (path, e.strerror))
    if not text.strip():
        return collections.OrderedDict()
    try:
        data = json.loads(text, object_pairs_hook=collections.OrderedDict)
    except ValueError as e:
        raise DaemonJsonError("%s is not valid JSON (%s); dockerd would refuse to start with it: "
                              "fix the file by hand first" % (path, e))
    if not isinstance(data, dict):
        raise DaemonJsonError("%s must hold a JSON object, not %s" % (path, type(data).__name__))
    return data


def render(data):
    """The text we write: two-space indent like Docker's documentation, final newline."""
    if not data:
        return "{}\n"
    return json.dumps(data, indent=2) + "\n"


def storage_settings(data):
    """(driver or None, list of storage-opts) as the file configures them."""
    return data.get("storage-driver") or None, list(data.get("storage-opts") or [])


def storage_opts_dict(opts):
    """daemon.json's ["overlay2.size=10G"] -> {"overlay2.size": "10G"}."""
    result = {}
    for item in opts or []:
        key, dummy, value = str(item).partition("=")
        result[key.strip()] = value.strip()
    return result


def data_root(data, default=dataroot.DEFAULT):
    # "graph" is the pre-17.05 spelling of data-root; dockerd still reads it.
    return data.get("data-root") or data.get("graph") or default


def with_storage(data, driver, storage_opts=None):
    """A copy of ``data`` declaring ``driver`` and, unless None, ``storage_opts``.

    An empty ``storage_opts`` list removes the key: dockerd rejects nothing
    there, but an empty list is noise in a file people read.
    """
    new = collections.OrderedDict(data)
    new["storage-driver"] = driver
    if storage_opts is not None:
        if storage_opts:
            new["storage-opts"] = list(storage_opts)
        else:
            new.pop("storage-opts", None)
    return new


FEATURE = "containerd-snapshotter"


def containerd_store(data):
    """Whether the file turns on Docker's containerd image store."""
    return bool((data.get("features") or {}).get(FEATURE))


def with_containerd_store(data, on, snapshotter=None):
    """A copy of ``data`` with the containerd image store on (and
    ``storage-driver`` the snapshotter, or left out for Docker's default)
    or off (the feature key removed)."""
    new = collections.OrderedDict(data)
    features = collections.OrderedDict(new.get("features") or {})
    if on:
        features[FEATURE] = True
        if snapshotter:
            new["storage-driver"] = snapshotter
        else:
            new.pop("storage-driver", None)
    else:
        features.pop(FEATURE, None)
    if features:
        new["features"] = features
    else:
        new.pop("features", None)
    return new


def write(path, data):
    """Replace the file atomically, keeping the mode of an existing file."""
    mode = 0o644
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        makedirs(os.path.dirname(path) or ".", 0o755)
    try:
        atomic_write(path, render(data), mode)
    except OSError as e:
        raise DaemonJsonError("cannot write %s: %s" % (path, e.strerror or e))
