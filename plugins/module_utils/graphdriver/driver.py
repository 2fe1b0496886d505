"""The graphdriver contract (Docker's ProtoDriver/Driver) and the registry.

Each driver is one module next to this one that subclasses ``Driver`` and
calls ``register``. ``new`` imports the module on first use, so that the
registry knows every name without importing every driver.
"""

import collections
import importlib
import os

from .errors import GraphDriverError, NotSupported

Change = collections.namedtuple("Change", "path kind")
Change.__doc__ = """One change of a layer: ``path`` absolute within the layer
(Docker style, '/etc/hostname'), ``kind`` 'A' (added), 'C' (changed) or
'D' (deleted)."""
Change.__str__ = lambda self: "%s %s" % (self.kind, self.path)

ADD, CHANGE, DELETE = "A", "C", "D"

# name -> module, in alphabetical order: every driver the library knows.
_MODULES = {
    "aufs": "aufs",
    "btrfs": "btrfs",
    "devicemapper": "devicemapper",
    "fuse-overlayfs": "fuse_overlayfs",
    "overlay2": "overlay2",
    "vfs": "vfs",
    "zfs": "zfs",
}
_CLASSES = {}


def register(cls):
    """Class decorator: make ``cls`` the driver for ``cls.name``."""
    _CLASSES[cls.name] = cls
    return cls


def registered():
    """Every driver name the library knows, usable on this host or not."""
    return sorted(_MODULES)


def driver_class(name):
    if name not in _MODULES:
        raise GraphDriverError("unknown storage driver %r (known: %s)"
                               % (name, ", ".join(registered())))
    if name not in _CLASSES:
        try:
            importlib.import_module("." + _MODULES[name], __package__)
        except ImportError as e:
            raise NotSupported(name, "driver not available in this version (%s)" % e)
    return _CLASSES[name]


def new(name, home, options=None):
    """Initialise driver ``name`` over ``home``; NotSupported if impossible here."""
    return driver_class(name)(home, dict(options or {}))


def check_id(layer_id):
    """Layer ids become path components: refuse anything that is not one."""
    if (not isinstance(layer_id, str) or not layer_id or "/" in layer_id
            or layer_id in (".", "..") or "\0" in layer_id):
        raise GraphDriverError("invalid layer id %r" % (layer_id,))
    return layer_id


class Driver(object):
    """Base of every driver. Subclasses set ``name`` and implement the API.

    The constructor raises NotSupported when the driver cannot run here;
    subclasses check their prerequisites before touching ``home``.
    """

    name = None

    def __init__(self, home, options=None):
        self.home = os.path.abspath(home)
        self.options = dict(options or {})

    def __str__(self):
        return self.name or self.__class__.__name__

    def __repr__(self):
        return "<%s driver at %s>" % (self.name, self.home)

    # ProtoDriver
    def create(self, id, parent=None, opts=None):
        raise NotImplementedError

    def create_read_write(self, id, parent=None, opts=None):
        raise NotImplementedError

    def remove(self, id):
        raise NotImplementedError

    def get(self, id, mount_label=""):
        raise NotImplementedError

    def put(self, id):
        raise NotImplementedError

    def exists(self, id):
        raise NotImplementedError

    def status(self):
        return []

    def metadata(self, id):
        return {}

    def cleanup(self):
        pass

    # DiffDriver
    def diff(self, id, parent=None):
        raise NotImplementedError

    def changes(self, id, parent=None):
        raise NotImplementedError

    def apply_diff(self, id, parent, stream):
        raise NotImplementedError

    def diff_size(self, id, parent=None):
        raise NotImplementedError
