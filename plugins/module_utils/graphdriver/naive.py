"""NaiveDiffDriver: the diff half of a driver, built on its get/put alone.

Docker's daemon/graphdriver/fsdiff.go. A driver that has no cheaper way to
tell what a layer changed (vfs, btrfs, zfs, devicemapper, overlay2 when the
kernel fails its probes) subclasses this and gets diff, changes, apply_diff
and diff_size by mounting the layer and its parent and comparing the trees.
"""

import time

from .archive import export_changes, tar_tree
from .changes import changes_dirs, changes_size
from .driver import Driver
from .unpack import apply_layer


def _sleep_to_next_second(start):
    # fsdiff.go: parents are extracted from tars with whole-second mtimes,
    # and changes compare mtimes at second granularity; so a diff must not
    # be followed within the same second by a write that the next diff
    # would then miss. Docker sleeps until the next whole second after the
    # diff started.
    delay = (int(start) + 1) - time.time()
    if delay > 0:
        time.sleep(delay)


class NaiveDiffDriver(Driver):
    """Driver base implementing the DiffDriver half with get/put."""

    def diff(self, id, parent=None):
        """Tar of the layer (whole tree) or of its changes against ``parent``.

        The layer stays mounted until the returned stream is closed.
        """
        start = time.time()
        layer_fs = self.get(id, "")
        try:
            if not parent:
                return tar_tree(layer_fs, on_close=lambda: self.put(id),
                                engine_version=self.engine_version)
            parent_fs = self.get(parent, "")
            try:
                changes = changes_dirs(layer_fs, parent_fs)
            finally:
                self.put(parent)

            def close():
                try:
                    self.put(id)
                finally:
                    _sleep_to_next_second(start)

            return export_changes(layer_fs, changes, on_close=close,
                                  engine_version=self.engine_version)
        except BaseException:
            self.put(id)
            raise

    def changes(self, id, parent=None):
        layer_fs = self.get(id, "")
        try:
            parent_fs = None
            if parent:
                parent_fs = self.get(parent, "")
            try:
                return changes_dirs(layer_fs, parent_fs)
            finally:
                if parent:
                    self.put(parent)
        finally:
            self.put(id)

    def apply_diff(self, id, parent, stream):
        """Apply a layer tar onto the layer; the sum of its header sizes."""
        layer_fs = self.get(id, "")
        try:
            return apply_layer(layer_fs, stream, layer_id=id, engine_version=self.engine_version)
        finally:
            self.put(id)

    def diff_size(self, id, parent=None):
        changes = self.changes(id, parent)
        layer_fs = self.get(id, "")
        try:
            return changes_size(layer_fs, changes)
        finally:
            self.put(id)
