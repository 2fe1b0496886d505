"""Where each driver can run in the tests: one backend per driver name.

A backend is a context manager factory ``factory(workdir) -> (home, options)``
that makes the real backing storage (a loop-file btrfs, a zfs-fuse pool …),
yields the driver home inside it, and destroys everything on exit. When the
machine cannot provide it, the factory raises ``Unavailable(reason)``, which
the conformance suite turns into a skip with that reason.

Each driver's backend lives in its own module ``backend_<driver>.py`` in this
package and registers itself with ``@backend("<driver>")``; add its import to
the list at the bottom.
"""

import contextlib

BACKENDS = {}
# driver name -> callable: None when its backend must enforce a ``size``
# quota here (the quota tests then fail rather than skip), else why it cannot
QUOTA = {}


class Unavailable(Exception):
    """This machine cannot provide the backend; the message says why."""


def backend(name, quota=None):
    def deco(fn):
        BACKENDS[name] = contextlib.contextmanager(fn)
        if quota is not None:
            QUOTA[name] = quota
        return fn
    return deco


def quota_missing(name):
    """None when driver ``name``'s backend must enforce a size quota here;
    else why not (also for a backend that promises none)."""
    if name not in QUOTA:
        return "the %s test backend promises no quota" % name
    return QUOTA[name]()


@contextlib.contextmanager
def backend_home(name, workdir):
    """``(home, options)`` on driver ``name``'s backend, torn down on exit; a
    pytest skip naming the reason when this machine cannot provide it."""
    import pytest
    with contextlib.ExitStack() as stack:
        try:
            home, options = stack.enter_context(BACKENDS[name](workdir))
        except Unavailable as e:
            pytest.skip("%s backend unavailable: %s" % (name, e))
        yield home, options


def _load():
    import importlib
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(here)):
        if name.startswith("backend_") and name.endswith(".py"):
            importlib.import_module("." + name[:-3], __package__)


_load()
