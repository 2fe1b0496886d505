#!/usr/bin/env python3
"""`make demo`: the library's main job on localhost, on a loop-file disk.

Makes an xfs (ftype=1) filesystem on a loop file as the data-root, asks which
driver Docker would pick here and why not the others, then builds a few
layers with that driver: a base from a tar, a container layer changed on its
mount, the diff exported and applied onto a fresh layer. Prints a short
report and tears down everything it made, whatever happens.
"""

import io
import os
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), ".build"))
sys.path.insert(0, os.path.dirname(HERE))

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import new  # noqa: E402
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import selection  # noqa: E402
from tests.support.loop import loop_filesystem  # noqa: E402


def base_tar():
    """A tiny root filesystem as a layer tar, made in memory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("etc", "bin", "var", "var/log"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, time.time()
            tar.addfile(info)
        for name, data in (("etc/hostname", b"demo\n"), ("etc/motd", b"hello from layer 1\n"),
                           ("var/log/old.log", b"x" * 4096)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, time.time()
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def section(title):
    print("\n== %s" % title)


def main():
    with loop_filesystem("xfs", size_mb=512) as data_root:
        section("backing disk")
        print("xfs (ftype=1) on a loop file, mounted at %s" % data_root)

        section("which driver, and why")
        report = selection.driver_report(data_root)
        print("backing filesystem: %s, d_type: %s" % (report["backing_fs"], report["d_type"]))
        for name in report["priority"]:
            info = report["drivers"].get(name)
            if info is None:
                continue
            mark = "yes" if info["supported"] else "no "
            print("  %-15s %s  %s" % (name, mark, info["reason"]))
        pick = report["pick"]
        print("Docker would pick: %s (%s)" % (pick, report["pick_reason"]))
        if not pick:
            return 1

        drv = new(pick, os.path.join(data_root, pick))
        try:
            section("layers with %s" % pick)
            drv.create("base")
            size = drv.apply_diff("base", None, base_tar())
            print("base: applied a %d-byte layer tar" % size)

            drv.create_read_write("container", "base")
            root = drv.get("container")
            with open(os.path.join(root, "etc/motd"), "w") as f:
                f.write("hello from the container\n")
            os.unlink(os.path.join(root, "var/log/old.log"))
            with open(os.path.join(root, "etc/added"), "w") as f:
                f.write("new\n")
            print("container: mounted at %s and changed" % root)
            drv.put("container")

            for change in drv.changes("container", "base"):
                print("  %s" % (change,))
            print("diff size: %d bytes" % drv.diff_size("container", "base"))

            stream = drv.diff("container", "base")
            try:
                drv.create("copy", "base")
                applied = drv.apply_diff("copy", "base", stream)
            finally:
                stream.close()
            print("copy: applied the container's diff (%d bytes) onto a fresh child of base"
                  % applied)
            copy_root = drv.get("copy")
            try:
                print("copy/etc/motd: %s" % open(os.path.join(copy_root, "etc/motd")).read().strip())
                print("copy/var/log/old.log exists: %s"
                      % os.path.exists(os.path.join(copy_root, "var/log/old.log")))
            finally:
                drv.put("copy")

            section("status")
            for key, value in drv.status():
                print("  %s: %s" % (key, value))
        finally:
            for layer in ("copy", "container", "base"):
                drv.remove(layer)
            drv.cleanup()
    section("torn down: nothing left mounted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
