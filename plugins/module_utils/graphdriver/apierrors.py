"""No bare OSError escapes the driver API (DESIGN: every failure is a
GraphDriverError naming the layer and the path).

``os_errors_as_driver_errors`` is a class decorator for a driver: each API
method the class itself defines is wrapped so that an OSError becomes a
GraphDriverError that names the driver, the layer and the path.
"""

import functools

from .errors import GraphDriverError

API_METHODS = ("create", "create_read_write", "remove", "get", "put", "exists", "status",
               "metadata", "cleanup", "diff", "changes", "apply_diff", "diff_size")


def _wrap(fn):
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except OSError as e:
            layer = args[0] if args else kwargs.get("id")
            what = e.strerror or str(e)
            where = ": %s" % e.filename if e.filename else ""
            if getattr(e, "filename2", None):
                where += " -> %s" % e.filename2
            prefix = "%s: layer %s" % (self.name, layer) if layer else "%s at %s" % (
                self.name, self.home)
            raise GraphDriverError("%s: %s: %s%s" % (prefix, fn.__name__, what, where)) from e
    wrapper.__wrapped_os_errors__ = True
    return wrapper


def _wrap_init(fn):
    @functools.wraps(fn)
    def wrapper(self, home, *args, **kwargs):
        try:
            return fn(self, home, *args, **kwargs)
        except OSError as e:
            where = ": %s" % e.filename if e.filename else ""
            raise GraphDriverError("%s at %s: cannot initialise: %s%s" % (
                self.name, home, e.strerror or e, where)) from e
    wrapper.__wrapped_os_errors__ = True
    return wrapper


def os_errors_as_driver_errors(cls):
    init = cls.__dict__.get("__init__")
    if init is not None and not getattr(init, "__wrapped_os_errors__", False):
        cls.__init__ = _wrap_init(init)
    for name in API_METHODS:
        fn = cls.__dict__.get(name)
        if fn is not None and not getattr(fn, "__wrapped_os_errors__", False):
            setattr(cls, name, _wrap(fn))
    return cls
