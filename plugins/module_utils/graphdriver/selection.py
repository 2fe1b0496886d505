"""Which storage driver Docker would use on a data-root, and why.

moby daemon/graphdriver/driver.go New(), the same steps at v20.10.24 and
v26.1.5 (only the words of the refusals changed, at 23.0), checked against
both engines started without a driver (tests/integration/
test_selection_engine.py):

1. a driver named in the configuration is used, or the daemon fails;
2. otherwise prior state: every driver but vfs whose ``<root>/<name>`` exists
   and is not empty; the first of those in priority order must initialise,
   and state for two drivers is an error ("contains several valid
   graphdrivers");
3. otherwise the first driver in priority order that initialises; a
   not-supported error skips a driver, any other error is fatal.

Every check runs the real driver's Init checks, as dockerd does, but reads
the host's storage only (``driver.check_support``): no home, pool, dataset
or device is made to find out.
"""

import os

from .backingfs import fs_name, nearest_existing
from .dataroot import DataRoot
from .driver import check_support, driver_class, registered
from .errors import GraphDriverError, NotSupported
from .overlayutils import supports_d_type as _supports_d_type
from .priority import parse_version, priority


def _refusal_texts(engine_version):
    """Docker's own words for its two refusals, which changed at 23.0
    (driver.go New(): v20.10.24 "Please cleanup ...", "No supported storage
    backend found"; v23.0.0 on "cleanup ...", "no supported storage driver
    found")."""
    v = parse_version(engine_version)
    if v is not None and v < (23, 0):
        return "Please cleanup", "No supported storage backend found"
    return "cleanup", "no supported storage driver found"


def backing_fs(path):
    """Docker's name for the filesystem holding ``path`` (or its nearest
    existing ancestor): 'extfs', 'xfs', 'btrfs' ..."""
    return fs_name(nearest_existing(path))


def supports_d_type(path):
    """moby fsutils.SupportsDType on ``path`` (or its nearest existing
    ancestor): a temp dir with a file, read back with its d_type."""
    return _supports_d_type(nearest_existing(path))


def _d_type_or_none(path):
    # None when it cannot be probed (a read-only or full filesystem)
    try:
        return supports_d_type(path)
    except OSError:
        return None


def prior_drivers(data_root, order):
    """Drivers of ``order`` (but vfs) with a non-empty ``<data_root>/<name>``,
    in ``order``'s order (Docker's scanPriorDrivers)."""
    return DataRoot(data_root).prior_state(order)


def _try_driver(name, home, options=None):
    """Docker's Init checks for ``name`` at ``home``, writing nothing:
    (supported, reason, fatal).

    ``fatal`` is True for errors that are not "not supported": Docker stops
    on those instead of trying the next driver. A driver only this library
    can run (zfs on zfs-fuse) is not offered as Docker's pick.
    """
    try:
        problem = check_support(name, os.path.abspath(home), options).engine_refusal()
        return problem is None, problem or "", False
    except NotSupported as e:
        return False, e.reason, False
    except GraphDriverError as e:
        return False, str(e), True
    except OSError as e:
        return False, "%s: %s" % (name, e), True


def check_driver(name, home, options=None):
    """Can driver ``name`` run at ``home``? -> (supported, reason)."""
    supported, reason, fatal = _try_driver(name, home, options)
    return supported, reason


def options_for(name, options, configured=None):
    """The storage-opts driver ``name`` is checked with. Docker gives every
    opt to the driver it starts: to each candidate when none is configured,
    to that one when it is. Another driver than the configured one is asked
    about as a switch would run it, with only its own opts: the configured
    driver's (dm.thinpooldev) would make overlay2 refuse an unknown option."""
    if not configured or name == configured or not options:
        return options
    prefix = driver_class(name).option_prefix()
    return {k: v for k, v in options.items() if k.lower().startswith(prefix)}


def driver_report(data_root, engine_version=None, configured=None, options=None):
    """Everything Docker's selection looks at, and what it would pick.

    Returns a dict with the keys ``backing_fs``, ``d_type``,
    ``engine_version``, ``priority``, ``drivers`` ({name: {"supported",
    "reason"}} for every registered driver), ``prior_state``, ``pick``,
    ``pick_reason`` and ``error``.
    """
    root = DataRoot(data_root)
    data_root = root.path
    order = priority(engine_version)
    results = {}
    for name in registered():
        supported, reason, fatal = _try_driver(name, root.home(name), options_for(name, options, configured))
        results[name] = {"supported": supported, "reason": reason, "fatal": fatal}
    prior = root.prior_state(order)
    # Docker lists every registered driver with state in the error, but only
    # the ones it was built with: those are exactly its priority list.
    report = {
        "backing_fs": backing_fs(data_root),
        "d_type": _d_type_or_none(data_root),
        "engine_version": engine_version,
        "priority": order,
        "drivers": {n: {"supported": r["supported"], "reason": r["reason"]}
                    for n, r in results.items()},
        "prior_state": prior,
        "pick": None,
        "pick_reason": "",
        "error": None,
    }

    report["pick"], report["pick_reason"], report["error"] = pick(
        data_root, order, results, prior, configured, engine_version)
    return report


def pick(data_root, order, results, prior, configured=None, engine_version=None):
    """Docker's decision from what was found: (pick, pick_reason, error).

    ``results``: {name: {"supported": bool, "reason": str, "fatal": bool}}
    for the drivers this library has; ``prior``: drivers with state, in
    priority order; ``engine_version`` words the errors as that engine does
    (the newest when not given).
    """
    cleanup, none_found = _refusal_texts(engine_version)
    if configured:
        result = results.get(configured)
        if result is None:
            return None, "", "unknown storage driver %r (known: %s)" % (
                configured, ", ".join(sorted(results)))
        if not result["supported"]:
            return None, "", "configured storage driver %s failed: %s" % (
                configured, result["reason"])
        return configured, "configured (storage-driver)", None

    for name in order:
        if name not in prior:
            continue
        result = results.get(name)
        if result is None or not result["supported"]:
            return None, "", "prior storage driver %s failed: %s" % (
                name, result["reason"] if result else "not available in this library")
        if len(prior) > 1:
            return None, "", ("%s contains several valid graphdrivers: %s; %s or "
                              "explicitly choose storage driver (-s <DRIVER>)"
                              % (data_root, ", ".join(prior), cleanup))
        return name, "prior state in %s" % DataRoot(data_root).home(name), None

    skipped = []
    for name in order:
        result = results.get(name)
        if result is None:
            skipped.append("%s: not available in this library" % name)
            continue
        if result["supported"]:
            return name, "first supported driver in priority order" + (
                " (skipped: %s)" % "; ".join(skipped) if skipped else ""), None
        if result.get("fatal"):
            return None, "", "%s failed: %s" % (name, result["reason"])
        skipped.append("%s: %s" % (name, result["reason"]))
    return None, "", "%s (%s)" % (none_found, "; ".join(skipped))
