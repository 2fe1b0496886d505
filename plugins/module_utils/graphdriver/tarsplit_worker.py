"""Writing a layer's tar-split.json.gz next to its apply, on another core.

The tar-split's CRC-64 of every payload is pure Python and costs about as
much as the apply itself, so while the driver applies a layer the
:class:`tarsplit.Disassembler` runs in a forked child: the TarReader's
observer calls (see tarstream) are framed into a pipe, the child replays
them into the Disassembler and writes the file. The parse is still the
apply's, done once. Where no core is idle, or there is no ``fork``, the same
Disassembler runs in-process.

Either way :func:`open_disassembler` returns an observer with ``close()``
(write the last records, fsync the file; raises what the Disassembler
raised, say a duplicate path) and ``abort()`` (on failure: stop, leave
cleanup of the file to the caller's rollback).
"""

import json
import os
import struct
import time

from . import tarsplit
from .errors import ArchiveError

_FRAME = struct.Struct(">cI")
_MEMBER = struct.Struct(">QQcI")
_BATCH = 256 * 1024         # small frames are written together
_PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = 1031        # fcntl.F_SETPIPE_SZ, named only from Python 3.10 on


def open_disassembler(path, engine_version=None, offload=None):
    """An observer writing ``path`` (tar-split.json.gz) as ``engine_version``
    writes it; in a child process when ``offload`` (default: when a core is
    idle, see :func:`core_idle`)."""
    if offload is None:
        offload = hasattr(os, "fork") and core_idle()
    if offload:
        return _Forwarder(path, engine_version)
    return _Local(path, engine_version)


_IDLE_SAMPLES = 10       # looks at the run queue, 5 ms apart
_IDLE_KEEP = 2.0        # an answer is reused this long (small layers come in runs)
_idle_answer = [None, 0.0]


def core_idle():
    """Is a second core free for a child or a thread beside us? Measured on a
    shared 2-core machine under load, the two processes handing the stream
    over through a pipe took longer than one doing it all (the same CPU
    time, more waiting for each other's time slices): only overlap where it
    can run beside us.

    What runs now: the tasks on the run queue (/proc/loadavg's running
    count, ourselves included) averaged over a few samples, less than one
    other on average. Neither the load average (it still counts the last
    minute, a previous import or docker load included) nor idle ticks in
    /proc/stat (a VM beside us showed a core idle there while two processes
    of ours got one core between them) told it."""
    cpus = os.cpu_count() or 1
    if cpus < 2:
        return False
    answer, when = _idle_answer
    now = time.monotonic()
    if answer is not None and now - when < _IDLE_KEEP:
        return answer
    try:
        running = 0
        for i in range(_IDLE_SAMPLES):
            if i:
                time.sleep(0.005)
            with open("/proc/loadavg") as f:
                running += int(f.read().split()[3].partition("/")[0])
        others = running / _IDLE_SAMPLES - 1
        answer = others + 1 < cpus
    except (OSError, ValueError, IndexError):
        try:
            answer = os.getloadavg()[0] <= cpus - 1
        except OSError:
            answer = False
    _idle_answer[:] = [answer, time.monotonic()]
    return answer


class _Local(tarsplit.Disassembler):
    def __init__(self, path, engine_version):
        self._writer = tarsplit.open_writer(path)
        os.fchmod(self._writer.raw.fileno(), 0o644)
        tarsplit.Disassembler.__init__(self, tarsplit.Packer(self._writer), engine_version)

    def close(self):
        try:
            tarsplit.Disassembler.close(self)
        finally:
            self._writer.close()

    def abort(self):
        self._writer.close(sync=False)


class _Forwarder(object):
    """The observer in the parent: frames each call into the child's pipe."""

    def __init__(self, path, engine_version):
        data_r, data_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            import fcntl
            fcntl.fcntl(data_w, _F_SETPIPE_SZ, _PIPE_SIZE)
        except (ImportError, OSError):
            pass    # a smaller pipe only means more switches
        pid = os.fork()
        if pid == 0:    # pragma: no cover (the child; its work is checked by the parent)
            status = 1
            try:
                os.close(data_w)
                os.close(err_r)
                status = _child(data_r, err_w, path, engine_version)
            finally:
                os._exit(status)
        os.close(data_r)
        os.close(err_w)
        self._pid, self._fd, self._err = pid, data_w, err_r
        self._buf = bytearray()

    # -- the observer -------------------------------------------------------
    def member(self, raw, name, size, data_size, typeflag):
        body = _MEMBER.pack(size, data_size, typeflag.encode("latin-1"), len(raw))
        self._frame(b"M", len(body) + len(raw) + len(name), body, raw, name)

    def payload(self, view):
        if len(view) >= _BATCH:
            self._flush()
            self._write(_FRAME.pack(b"P", len(view)))
            self._write(view)
        else:
            self._frame(b"P", len(view), view)

    def padding(self, data):
        self._frame(b"D", len(data), data)

    def end(self, data):
        self._frame(b"E", len(data), data)

    def trailing(self, view):
        self._frame(b"T", len(view), view)

    # -- the end ------------------------------------------------------------
    def close(self):
        try:
            self._frame(b"C", 0)
            self._flush()
        except BrokenPipeError:
            pass    # the child stopped early: its report says why
        self._wait()

    def abort(self):
        try:
            self._wait()    # EOF without 'C' stops the child
        except ArchiveError:
            pass

    def _wait(self):
        if self._pid is None:
            return
        os.close(self._fd)
        chunks = []
        while True:
            data = os.read(self._err, 65536)
            if not data:
                break
            chunks.append(data)
        os.close(self._err)
        _pid, status = os.waitpid(self._pid, 0)
        self._pid = None
        if chunks:
            report = json.loads(b"".join(chunks).decode("utf-8"))
            err = ArchiveError(report["error"])
            err.entry = report.get("entry")
            raise err
        if status:
            raise ArchiveError("the tar-split process failed (wait status %d)" % status)

    def _frame(self, op, length, *parts):
        buf = self._buf
        buf += _FRAME.pack(op, length)
        for part in parts:
            buf += part
        if len(buf) >= _BATCH:
            self._flush()

    def _flush(self):
        if self._buf:
            self._write(self._buf)
            self._buf = bytearray()

    def _write(self, data):
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except BrokenPipeError:
            # The child stopped: raise what it reported.
            self._wait()
            raise ArchiveError("the tar-split process stopped early")


def _child(data_fd, err_fd, path, engine_version):
    """Replay the frames into a Disassembler writing ``path``; 0 when done."""
    try:
        dis = _Local(path, engine_version)
        try:
            with os.fdopen(data_fd, "rb", buffering=_PIPE_SIZE) as f:
                read = f.read
                calls = {b"P": dis.payload, b"D": dis.padding, b"E": dis.end,
                         b"T": dis.trailing}
                while True:
                    head = read(5)
                    if len(head) < 5:
                        dis.abort()
                        return 1    # the parent gave up: nothing to report
                    op, length = _FRAME.unpack(head)
                    body = read(length) if length else b""
                    if len(body) < length:
                        dis.abort()
                        return 1
                    if op == b"M":
                        size, data_size, tf, raw_len = _MEMBER.unpack_from(body)
                        start = _MEMBER.size
                        dis.member(body[start:start + raw_len], body[start + raw_len:],
                                   size, data_size, tf.decode("latin-1"))
                    elif op == b"C":
                        break
                    else:
                        calls[op](body)
        except BaseException:
            dis.abort()
            raise
        dis.close()
        return 0
    except BaseException as e:
        report = {"error": str(e) if isinstance(e, ArchiveError) else
                  "tar-split: %s: %s" % (type(e).__name__, e)}
        if isinstance(e, ArchiveError) and getattr(e, "entry", None) is not None:
            report["entry"] = e.entry
        os.write(err_fd, json.dumps(report).encode("utf-8"))
        return 1
