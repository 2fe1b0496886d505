"""A container as a migration sees it: ``containers/<id>/config.v2.json``,
which tells Docker whose container it is, and what carrying its layers
writes."""

import json
import os

from .dataroot import DataRoot
from .errors import GraphDriverError
from .fileutil import atomic_write


class ContainerConfigError(GraphDriverError):
    pass


def read_config(data_root, container):
    """(path, config.v2.json as a dict); the dict is None when there is none
    (a layer store mount without a container: nothing to tell Docker)."""
    path = DataRoot(data_root).container_config(container)
    try:
        with open(path) as f:
            return path, json.load(f)
    except FileNotFoundError:
        return path, None
    except ValueError as e:
        raise ContainerConfigError("container %s: %s is not JSON: %s" % (container, path, e))


def write_config(path, config):
    """Replace config.v2.json atomically, as compact as Docker writes it."""
    atomic_write(path, json.dumps(config, separators=(",", ":"), ensure_ascii=False),
                 mode=os.stat(path).st_mode & 0o777)


def layer_bytes(store, mount):
    """What carrying a container writes: its init and RW layers' changes."""
    below = store.get(mount.parent).cache_id if mount.parent else None
    size = 0
    for layer_id in ([mount.init_id] if mount.init_id else []) + [mount.mount_id]:
        size += store.driver.diff_size(layer_id, below)
        below = layer_id
    return size
