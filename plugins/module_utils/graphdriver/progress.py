"""A migration's progress: what it has done, told to a callback, kept in a file.

The callback gets a dict (Progress.state) at each phase, after each layer
and container, and every ``Progress.EVERY`` bytes within a layer (a layer's
tar stream is read through Metered). ProgressFile is such a callback that
keeps the latest state in a file for a poller (the driver_migration role).
"""

import json
import os
import time

from .fileutil import atomic_write, makedirs


class Progress(object):
    """Counts what a migration has done and reports it to a callback."""

    EVERY = 64 * 1024 * 1024    # report within a layer this often

    def __init__(self, plan, callback, started):
        self.plan, self.callback, self.started = plan, callback, started
        self.name = "layers"
        self.layers_done = 0
        self.bytes_done = 0         # of finished layers and containers
        self.layer_bytes = 0        # of the layer being copied
        self.reported_at = 0
        self.current = None
        self.current_size = 0
        self.containers_done = 0

    def state(self):
        p = self.plan
        return {
            "phase": self.name, "source": p.source, "target": p.target,
            "layers_done": self.layers_done, "layers_total": len(p.layers_to_copy),
            "bytes_done": self.bytes_done + min(self.layer_bytes, self.current_size),
            "bytes_total": p.bytes_to_copy,
            "containers_done": self.containers_done, "containers_total": len(p.containers),
            "current": self.current,
            "seconds": round(time.monotonic() - self.started, 1),
        }

    def _report(self):
        if self.callback is not None:
            self.callback(self.state())

    def phase(self, name):
        self.name, self.current = name, None
        self._report()

    def layer_started(self, layer):
        self.current, self.current_size, self.layer_bytes, self.reported_at = layer.chain_id, layer.size, 0, 0
        self._report()

    def read(self, n):
        """``n`` more bytes of the current layer's tar were read."""
        self.layer_bytes += n
        if self.layer_bytes - self.reported_at >= self.EVERY:
            self.reported_at = self.layer_bytes
            self._report()

    def layer_done(self, layer):
        self.layers_done += 1
        self.bytes_done += layer.size
        self.current, self.current_size, self.layer_bytes = None, 0, 0
        self._report()

    def container_done(self, name, size):
        self.containers_done += 1
        self.bytes_done += size
        self.current = name
        self._report()


class ProgressFile(object):
    """A progress callback that keeps the latest state, as JSON, in a file
    (replaced atomically: a reader never sees half of one)."""

    EVERY = 1.0     # seconds between writes, but phase changes are always written

    def __init__(self, path):
        self.path = path
        self.written_at = 0.0
        self.phase = None
        makedirs(os.path.dirname(path) or ".", 0o755)

    def __call__(self, state):
        now = time.monotonic()
        if state["phase"] == self.phase and now - self.written_at < self.EVERY:
            return
        self.phase, self.written_at = state["phase"], now
        atomic_write(self.path, json.dumps(state, sort_keys=True) + "\n", mode=0o644)


class Metered(object):
    """A layer's tar stream that tells the Progress how much was read."""

    def __init__(self, stream, meter):
        self._stream, self._meter = stream, meter

    def readinto(self, buf):
        n = self._stream.readinto(buf)
        if n:
            self._meter.read(n)
        return n

    def read(self, n=-1):
        data = self._stream.read(n)
        self._meter.read(len(data))
        return data

    def readable(self):
        return True

    @property
    def files_root(self):
        return getattr(self._stream, "files_root", None)

    def close(self):
        self._stream.close()
