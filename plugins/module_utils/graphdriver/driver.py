"""The graphdriver contract (Docker's ProtoDriver/Driver) and the registry.

Each driver is one module next to this one that subclasses ``Driver`` and
calls ``register``. ``new`` imports the module on first use, so that the
registry knows every name without importing every driver.
"""

import collections
import functools
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
    "overlay": "overlay",
    "overlay2": "overlay2",
    "vfs": "vfs",
    "zfs": "zfs",
}
_CLASSES = {}


def register(cls):
    """Class decorator: make ``cls`` the driver for ``cls.name``."""
    _CLASSES[cls.name] = cls
    return cls


# Kept for reading old stores (a migration's source), never a host's choice:
# Docker 24 dropped both, and no kernel this library meets has aufs.
SOURCES_ONLY = ("aufs", "overlay")


def registered(sources=False):
    """Every driver name the library offers, usable on this host or not;
    with ``sources`` also the SOURCES_ONLY ones (``new`` opens them too).
    The one list of driver names: selection, the modules' choices and the
    data-root's state scans all ask here."""
    return sorted(n for n in _MODULES if sources or n not in SOURCES_ONLY)


def driver_class(name):
    if name not in _MODULES:
        raise GraphDriverError("unknown storage driver %r (known: %s)"
                               % (name, ", ".join(sorted(_MODULES))))
    if name not in _CLASSES:
        try:
            importlib.import_module("." + _MODULES[name], __package__)
        except ImportError as e:
            raise NotSupported(name, "driver not available in this version (%s)" % e)
    return _CLASSES[name]


def new(name, home, options=None, read_only=False, engine_version=None):
    """Initialise driver ``name`` over ``home``; NotSupported if impossible here.

    ``read_only``: Docker's checks only, nothing written to the host's
    storage (no home, no pool, no device); the layers that exist can be
    read, and create/remove/apply_diff refuse. ``engine_version``: the
    Docker Engine whose tar rules the layers' diffs and applies follow
    where engines differ (archive.py); the newest engine's when not given.
    """
    drv = driver_class(name)(home, dict(options or {}), read_only=read_only)
    drv.engine_version = engine_version
    return drv


def check_support(name, home, options=None):
    """Can driver ``name`` run at ``home``? Raises NotSupported (Docker skips
    the driver) or GraphDriverError (Docker stops); returns the driver opened
    read-only. Decided from what exists: overlay's test mount in a private
    temporary directory is the one probe that writes, and removes itself."""
    return new(name, home, options, read_only=True)


def check_id(layer_id):
    """Layer ids become path components: refuse anything that is not one."""
    if (not isinstance(layer_id, str) or not layer_id or "/" in layer_id
            or layer_id in (".", "..") or "\0" in layer_id):
        raise GraphDriverError("invalid layer id %r" % (layer_id,))
    return layer_id


def _os_errors_as_driver_errors(fn, call):
    """No bare OSError escapes the API (DESIGN): it becomes a GraphDriverError
    naming the driver, the call, the layer and the path."""
    if getattr(fn, "__wraps_os_errors__", False):
        return fn

    @functools.wraps(fn)
    def wrapped(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except OSError as e:
            where = ": %s" % e.filename if e.filename else ""
            if getattr(e, "filename2", None):
                where += " -> %s" % e.filename2
            if call == "__init__":
                raise GraphDriverError("%s at %s: cannot initialise: %s%s" % (
                    self.name, os.path.abspath(args[0] if args else kwargs["home"]),
                    e.strerror or e, where)) from e
            layer = args[0] if args else kwargs.get("id")
            prefix = "%s: layer %s" % (self.name, layer) if layer else "%s at %s" % (self.name, self.home)
            raise GraphDriverError("%s: %s: %s%s" % (prefix, call, e.strerror or e, where)) from e
    wrapped.__wraps_os_errors__ = True
    return wrapped


def _contract_methods():
    """The API every driver implements: Driver's own public methods."""
    return tuple(name for name, value in vars(Driver).items()
                 if callable(value) and not name.startswith("_"))


def _refused_when_read_only(fn):
    @functools.wraps(fn)
    def guarded(self, *args, **kwargs):
        if self.read_only:
            raise GraphDriverError("%s at %s is opened read-only: %s refused"
                                   % (self.name, self.home, fn.__name__))
        return fn(self, *args, **kwargs)
    return guarded


class Driver(object):
    """Base of every driver. Subclasses set ``name`` and implement the API.

    The constructor raises NotSupported when the driver cannot run here;
    subclasses check their prerequisites before touching ``home``.
    """

    name = None
    # whose tar rules diff() and apply_diff() follow (archive.py); see new()
    engine_version = None
    # What a driver opened read-only refuses.
    WRITES = ("create", "create_read_write", "remove", "apply_diff")

    def __init__(self, home, options=None, read_only=False):
        self.home = os.path.abspath(home)
        self.options = dict(options or {})
        self.read_only = read_only

    def __init_subclass__(cls, **kwargs):
        # Every driver gets the same guards, derived from the contract: no
        # driver lists them, and a method added to Driver is covered too.
        super().__init_subclass__(**kwargs)
        for name in cls.WRITES:
            fn = cls.__dict__.get(name)
            if fn is not None:
                setattr(cls, name, _refused_when_read_only(fn))
        for name in _contract_methods() + ("__init__",):
            fn = cls.__dict__.get(name)
            if fn is not None:
                setattr(cls, name, _os_errors_as_driver_errors(fn, name))

    @classmethod
    def option_prefix(cls):
        """What this driver's storage-opts start with ("overlay2.size")."""
        return cls.name + "."

    def engine_refusal(self):
        """Why Docker Engine would not run this driver here although this
        library can (None when it would): selection must not offer it."""
        return None

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

    def diff_dir(self, id):
        """Where the files of the layer's own tar are read (Docker's
        DiffGetter): (path, release). By default the mounted layer."""
        path = self.get(id)
        return path, lambda: self.put(id)

    def layer_ids(self):
        """The ids of every layer in the home, as the driver keeps them
        (Docker has no such call; orphan checks need it)."""
        raise NotImplementedError

    def layer_path(self, id):
        """Where the layer is kept, for reports (a directory, a ZFS dataset,
        a device's metadata file). By default ``<home>/<id>``."""
        return os.path.join(self.home, check_id(id))

    def get_mounts(self, id, parent=None):
        """Whether Get of this layer mounts something, counted per Get/Put.
        Not for a plain directory (vfs, btrfs: Get is the path, Put nothing).
        ``parent`` tells for a layer not made yet."""
        return False

    def references(self, id):
        """How many Get references hold the layer (0 where Get mounts nothing)."""
        return 0

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
