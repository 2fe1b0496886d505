"""Get/Put reference counts that survive the process.

Docker keeps them in memory; every Ansible task is a new process, so ours
live in small files under /run/strata-graphdriver (cleared at boot, like the
mounts they count), outside the driver home so that the home stays exactly
Docker's layout. Each count is changed under an flock.
"""

import contextlib
import hashlib
import os

from .fileutil import atomic_write, locked, makedirs

# The library's one run directory (reference counts, layer store locks,
# transient mount points and sockets): tmpfs, cleared at boot.
RUN_DIR = os.environ.get("STRATA_GRAPHDRIVER_RUN_DIR", "/run/strata-graphdriver")


class _Count(object):
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


class RefCounter(object):
    def __init__(self, driver_name, home):
        key = hashlib.sha256(os.path.abspath(home).encode()).hexdigest()[:16]
        self.dir = os.path.join(RUN_DIR, "%s-%s" % (driver_name, key))

    def _path(self, layer_id):
        return os.path.join(self.dir, layer_id + ".count")

    def count(self, layer_id):
        try:
            with open(self._path(layer_id)) as f:
                return int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    @contextlib.contextmanager
    def transaction(self, layer_id):
        """Lock the layer's count; yield it (``.value``); save it on success.

        If the block raises, the count is left as it was: a failed mount
        must not be counted.
        """
        makedirs(self.dir, 0o700)
        with locked(os.path.join(self.dir, layer_id + ".lock")):
            c = _Count(self.count(layer_id))
            yield c
            if c.value <= 0:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(layer_id))
            else:
                atomic_write(self._path(layer_id), str(c.value), 0o600)

    def put(self, layer_id, release):
        """Driver.put's count-down: one user fewer; the last one calls
        ``release()`` (unmount, deactivate) under the layer's lock.

        If ``release`` raises, the count stays as it was, so a later put
        tries again. Returns True when ``release`` ran.
        """
        with self.transaction(layer_id) as count:
            if count.value > 1:
                count.value -= 1
                return False
            count.value = 0
            release()
            return True

    def active(self):
        """Layer ids with a count above zero."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(n[:-6] for n in names
                      if n.endswith(".count") and self.count(n[:-6]) > 0)

    def forget(self, layer_id):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(layer_id))
