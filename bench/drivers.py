#!/usr/bin/env python3
"""Docker's graphdriver benchmarks (graphtest/graphbench_unix.go), every
driver this machine can run, side by side in one table.

    .venv/bin/python bench/drivers.py [--drivers btrfs,zfs] [--min-time 1.0] [--quick]

Each benchmark gets a fresh backend (tests/support/backends.BACKENDS: a loop
file, a zfs-fuse pool …) and a fresh driver, sets up as Docker's does, then
times only what Docker times, repeating until ``--min-time`` has passed.
Cells are time per operation; the figure in brackets is the ratio to the
fastest driver on that row. Timings, not assertions: this prints, it never
fails on a number.
"""

import argparse
import io
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BUILD = os.path.join(ROOT, ".build")
for _p in (_BUILD, ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)
_link = os.path.join(_BUILD, "ansible_collections", "strata", "graphdriver")
if not os.path.lexists(_link):
    os.makedirs(os.path.dirname(_link), exist_ok=True)
    os.symlink(ROOT, _link)

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (  # noqa: E402
    NotSupported, new)
from tests.integration import graphtest as gt  # noqa: E402
from tests.support.backends import BACKENDS, Unavailable  # noqa: E402


def _drain(stream):
    try:
        while stream.read(1 << 20):
            pass
    finally:
        stream.close()


# Each benchmark: setup(drv) -> state; op(drv, state) -> seconds timed (the
# op times itself, so that untimed per-iteration work stays out, as Docker's
# b.StopTimer/b.StartTimer do).

def _timed(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def exists_setup(drv):
    base = gt.random_id()
    drv.create(base, None, None)
    return base


def exists_op(drv, base):
    t = time.perf_counter()
    ok = drv.exists(base)
    elapsed = time.perf_counter() - t
    if not ok:
        raise AssertionError("newly created layer does not exist")
    return elapsed


def get_empty_op(drv, base):
    elapsed = _timed(drv.get, base, "")
    drv.put(base)
    return elapsed


def diff_base_setup(drv):
    base = exists_setup(drv)
    gt.add_files(drv, base, 3)
    return base


def diff_op(drv, layer):
    return _timed(lambda: _drain(drv.diff(layer, None)))


def diff_n_setup(bottom, top):
    def setup(drv):
        base, upper = gt.random_id(), gt.random_id()
        drv.create(base, None, None)
        gt.add_many_files(drv, base, bottom, 3)
        drv.create(upper, base, None)
        gt.add_many_files(drv, upper, top, 6)
        return upper
    return setup


def diff_apply_setup(count):
    def setup(drv):
        base, upper = gt.random_id(), gt.random_id()
        drv.create(base, None, None)
        gt.add_many_files(drv, base, count, 3)
        drv.create(upper, base, None)
        gt.add_many_files(drv, upper, count, 6)
        return base, upper, drv.diff_size(upper, None), count
    return setup


def diff_apply_op(drv, state):
    base, upper, diff_size, count = state
    layer = gt.random_id()
    drv.create(layer, base, None)
    gt.check_many_files(drv, layer, count, 3)
    t = time.perf_counter()
    arch = drv.diff(upper, None)
    try:
        # Docker reads the whole diff into the apply; so do we.
        size = drv.apply_diff(layer, None, arch)
    finally:
        arch.close()
    elapsed = time.perf_counter() - t
    gt.check_many_files(drv, layer, count, 6)
    if size != diff_size:
        # Docker only logs this ("the sizes may differ when the upper layer
        # is not a direct child"); so do we, once.
        _warn("%s: DiffApply size %d != DiffSize %d" % (drv.name, size, diff_size))
    drv.remove(layer)
    return elapsed


def deep_layer_diff_setup(count):
    def setup(drv):
        base = exists_setup(drv)
        gt.add_files(drv, base, 50)
        return gt.add_many_layers(drv, base, count)
    return setup


def deep_layer_read_setup(count):
    def setup(drv):
        base = exists_setup(drv)
        gt.add_file(drv, base, "testfile.txt", b"test content")
        top = gt.add_many_layers(drv, base, count)
        root = drv.get(top, "")
        return top, os.path.join(root, "testfile.txt")
    return setup


def deep_layer_read_op(drv, state):
    t = time.perf_counter()
    with open(state[1], "rb") as f:
        got = f.read()
    elapsed = time.perf_counter() - t
    if got != b"test content":
        raise AssertionError("read %r through %d layers" % (got, 20))
    return elapsed


def deep_layer_read_teardown(drv, state):
    drv.put(state[0])


def create_snap_setup(count):
    def setup(drv):
        base = exists_setup(drv)
        gt.add_many_files(drv, base, count, 3)
        return base
    return setup


def create_snap_op(drv, base):
    # Not one of Docker's benchmarks: creating a child of a big layer, where
    # snapshot drivers (btrfs, zfs) are O(1) and vfs copies everything.
    layer = gt.random_id()
    elapsed = _timed(drv.create, layer, base, None)
    drv.remove(layer)
    return elapsed


# get() of a layer with 128 lowers against one with 1, paired in one op so
# that the machine's drift cancels; the ratios are printed under the table.
GET_DEPTH_RATIOS = {}


def get_depth_setup(drv):
    base = exists_setup(drv)
    shallow = gt.random_id()
    drv.create(shallow, base, None)
    deep = gt.add_many_layers(drv, base, 128)
    return drv.name, shallow, deep, []


def get_depth_op(drv, state):
    name, shallow, deep, pairs = state
    one = get_empty_op(drv, shallow)
    many = get_empty_op(drv, deep)
    pairs.append(many / one)
    GET_DEPTH_RATIOS[name] = pairs
    return many


BENCHMARKS = [
    # (name, setup, op, teardown, quick)
    ("Exists", exists_setup, exists_op, None, True),
    ("GetEmpty", exists_setup, get_empty_op, None, True),
    ("DiffBase", diff_base_setup, diff_op, None, True),
    ("DiffN 10/10", diff_n_setup(10, 10), diff_op, None, True),
    ("DiffN 10/10000", diff_n_setup(10, 10000), diff_op, None, False),
    ("DiffN 10000/10", diff_n_setup(10000, 10), diff_op, None, False),
    ("DiffApplyN 100", diff_apply_setup(100), diff_apply_op, None, True),
    ("DeepLayerDiff 20", deep_layer_diff_setup(20), diff_op, None, True),
    ("DeepLayerRead 20", deep_layer_read_setup(20), deep_layer_read_op,
     deep_layer_read_teardown, True),
    ("CreateSnap 10000*", create_snap_setup(10000), create_snap_op, None, False),
    ("GetDepth 128*", get_depth_setup, get_depth_op, None, False),
]

_warned = set()


def _warn(msg):
    if msg not in _warned:
        _warned.add(msg)
        print("note: " + msg, file=sys.stderr)


def run_one(driver_name, bench, min_time, max_iters):
    """(seconds per op, iterations) or raises Unavailable/NotSupported."""
    name, setup, op, teardown, _ = bench
    with tempfile.TemporaryDirectory(prefix="strata-bench-") as work:
        with BACKENDS[driver_name](work) as (home, options):
            drv = new(driver_name, home, options)
            try:
                state = setup(drv)
                op(drv, state)  # warm-up, untimed (Go's b.N=1 probe)
                total, n = 0.0, 0
                start = time.perf_counter()
                while n < max_iters and (n < 3 or time.perf_counter() - start < min_time):
                    total += op(drv, state)
                    n += 1
                if teardown:
                    teardown(drv, state)
                return total / n, n
            finally:
                drv.cleanup()


def fmt_time(seconds):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return "%.3g %s" % (seconds / scale, unit)
    return "%.3g ns" % (seconds / 1e-9)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drivers", default=",".join(sorted(BACKENDS)),
                        help="comma-separated (default: every backend: %(default)s)")
    parser.add_argument("--min-time", type=float, default=1.0,
                        help="seconds to repeat each benchmark (default %(default)s)")
    parser.add_argument("--max-iters", type=int, default=100000)
    parser.add_argument("--quick", action="store_true",
                        help="skip the 10000-file DiffN benchmarks")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    args = parser.parse_args(argv)

    drivers = [d for d in args.drivers.split(",") if d]
    benches = [b for b in BENCHMARKS if (b[4] or not args.quick)
               and (not args.only or b[0] in args.only.split(","))]
    results = {}
    unavailable = {}
    for drv_name in drivers:
        if drv_name not in BACKENDS:
            unavailable[drv_name] = "no test backend"
            continue
        for bench in benches:
            if drv_name in unavailable:
                break
            try:
                per_op, n = run_one(drv_name, bench, args.min_time, args.max_iters)
            except (Unavailable, NotSupported) as e:
                unavailable[drv_name] = str(e)
                break
            except Exception as e:  # report and go on: one driver must not sink the table
                results[(bench[0], drv_name)] = ("error", 0)
                _warn("%s %s: %s: %s" % (drv_name, bench[0], type(e).__name__, e))
                continue
            results[(bench[0], drv_name)] = (per_op, n)
            print("%-18s %-15s %12s  (%d ops)" % (bench[0], drv_name, fmt_time(per_op), n),
                  file=sys.stderr)

    cols = [d for d in drivers if d not in unavailable]
    out = io.StringIO()
    width = max(16, max((len(b[0]) for b in benches), default=10))
    cell = 20
    out.write("%-*s" % (width, "benchmark") + "".join("%*s" % (cell, c) for c in cols) + "\n")
    for bench in benches:
        row = [results.get((bench[0], c)) for c in cols]
        times = [r[0] for r in row if r and r[0] != "error"]
        best = min(times) if times else None
        cells = []
        for r in row:
            if r is None:
                cells.append("-")
            elif r[0] == "error":
                cells.append("error")
            else:
                cells.append("%s [%.1fx]" % (fmt_time(r[0]), r[0] / best if best else 1.0))
        out.write("%-*s" % (width, bench[0]) + "".join("%*s" % (cell, c) for c in cells) + "\n")
    print("time per operation  [ratio to the fastest driver on the row]; "
          "* not a Docker benchmark")
    print(out.getvalue().rstrip())
    for d, pairs in sorted(GET_DEPTH_RATIOS.items()):
        print("%s: get() at 128 lowers / at 1 lower, paired, median of %d: %.2f"
              % (d, len(pairs), sorted(pairs)[len(pairs) // 2]))
    for d, why in sorted(unavailable.items()):
        print("%s: not benchmarked: %s" % (d, why))
    return 0


if __name__ == "__main__":
    sys.exit(main())
