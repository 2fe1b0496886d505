"""Docker's data-root in one place: where everything lives under it, which
drivers hold state there, and whether an engine runs on it.

::

    <data-root>/                      dockerd --data-root (/var/lib/docker)
      <driver>/                       a driver's home: overlay2/ vfs/ btrfs/ zfs/ ...
      image/<driver>/                 the driver's image and layer stores,
        layerdb/                        hidden with its home by a driver switch
          sha256/<chain-id>/          one layer (diff, size, cache-id, tar-split.json.gz)
          mounts/<container>/         a container's init and RW layers
          tmp/                        write sets of registrations in progress
        imagedb/{content,metadata}/   image configs and their metadata
        distribution/                 registry digests of pulled layers
        repositories.json             tags
      containers/<id>/config.v2.json  whose container it is (Driver)
      containerd/daemon/              the containerd dockerd starts itself
      tmp/                            dockerd's temporary files (DOCKER_TMPDIR)

moby daemon/daemon.go (NewDaemon: ``image/<driver>``, ``layerdb``,
``imagedb``) and daemon/graphdriver/driver.go (scanPriorDrivers).
"""

import os

from . import engine
from .driver import new

DEFAULT = engine.DEFAULT_DATA_ROOT

# Docker's prior-state scan skips vfs (driver.go scanPriorDrivers): a vfs
# home alone never decides the pick.
_NOT_PRIOR_STATE = ("vfs",)


def _non_empty(path):
    """Docker's "not isEmptyDir": anything Readdirnames cannot read as an
    empty directory counts (an unreadable directory, a file)."""
    try:
        with os.scandir(path) as it:
            for dummy in it:
                return True
        return False
    except FileNotFoundError:
        return False
    except OSError:
        return True


class DataRoot(object):
    """``DataRoot(path)``: the paths and state of one data-root."""

    def __init__(self, path=None):
        self.path = os.path.abspath(path or DEFAULT)

    def __str__(self):
        return self.path

    def __repr__(self):
        return "DataRoot(%r)" % self.path

    # where things are
    def home(self, driver):
        return os.path.join(self.path, driver)

    def image_root(self, driver):
        return os.path.join(self.path, "image", driver)

    def layerdb(self, driver):
        return os.path.join(self.image_root(driver), "layerdb")

    def imagedb(self, driver):
        return os.path.join(self.image_root(driver), "imagedb")

    def container_config(self, container):
        return os.path.join(self.path, "containers", container, "config.v2.json")

    @property
    def containers(self):
        return os.path.join(self.path, "containers")

    @property
    def tmp(self):
        """Docker's own temporary directory (DOCKER_TMPDIR)."""
        return os.path.join(self.path, "tmp")

    @property
    def containerd(self):
        """Where dockerd keeps the containerd it starts itself."""
        return os.path.join(self.path, "containerd", "daemon")

    def driver(self, name, options=None, read_only=False, engine_version=None):
        """Driver ``name`` opened over its home here (driver.new)."""
        return new(name, self.home(name), options, read_only=read_only, engine_version=engine_version)

    # what holds state
    def has_layer_store(self, driver):
        return os.path.isdir(self.layerdb(driver))

    def layer_stores(self):
        """Drivers with a layer store (``image/<driver>/layerdb``), sorted."""
        try:
            names = sorted(os.listdir(os.path.join(self.path, "image")))
        except OSError:
            return []
        return [n for n in names if self.has_layer_store(n)]

    def prior_state(self, order):
        """Drivers of ``order`` with a non-empty home, in that order, as
        Docker's scanPriorDrivers finds them (vfs left out)."""
        return [d for d in order if d not in _NOT_PRIOR_STATE and _non_empty(self.home(d))]

    def drivers_with_state(self, names):
        """Drivers of ``names`` with a non-empty home or image store. Unlike
        Docker's scan this counts vfs: a common source of a migration (the
        fallback where overlay2 was refused)."""
        return [d for d in names if _non_empty(self.home(d)) or _non_empty(self.image_root(d))]

    # whether an engine uses it
    def engine_evidence(self, exec_root=None, pidfile=None, sockets=None):
        """Why we think an engine runs on this data-root (empty: none)."""
        return engine.running_evidence(self.path, exec_root, pidfile, sockets)

    def ensure_stopped(self, exec_root=None, pidfile=None, sockets=None):
        """Raise engine.EngineRunning if an engine runs on this data-root."""
        engine.ensure_stopped(self.path, exec_root, pidfile, sockets)
