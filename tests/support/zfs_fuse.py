"""A private zfs-fuse daemon and throw-away pools on sparse files.

This machine has no kernel ZFS; Debian's ``zfs-fuse`` runs ZFS in user space
and the ``zfs``/``zpool`` tools talk to it over a unix socket whose path is
compiled in (/var/run/zfs/zfs_socket). So only one daemon can serve a host at
a time: if one is running that we did not start, we refuse (Unavailable)
rather than touch it.

    with zfs_fuse_pool(directory) as pool:
        pool.name, pool.mountpoint    # strata-test-<pid>-<n>, mounted (fuse.zfs)

On exit, even after a failure: the pool is destroyed and its file deleted;
the daemon is stopped by its pid when the process ends (or by
``stop_idle_daemon()``).
"""

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types

from .backends import Unavailable

SOCKET = "/var/run/zfs/zfs_socket"
TOOLS = ("zfs-fuse", "zfs", "zpool")
START_TIMEOUT = 15
STOP_TIMEOUT = 20  # the daemon gives its workers 10 s to finish on SIGTERM



def _shared_state():
    """One state per process, however this module was imported: the test
    tree is importable both as ``tests.support`` and through
    ``ansible_collections...tests.support``, and two copies of this module
    must still share one daemon (there can be only one on the host)."""
    key = "_strata_zfs_fuse_state"
    state = sys.modules.get(key)
    if state is None:
        state = types.ModuleType(key)
        state.lock = threading.Lock()
        state.daemon = None       # the one we started: (Popen, log path)
        state.users = 0
        state.atexit = False
        state.pool_serial = 0
        sys.modules[key] = state
    return state


_state = _shared_state()


def _which(name):
    for d in ("/sbin", "/usr/sbin", "/usr/local/sbin", "/bin", "/usr/bin"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


def _sh(*argv):
    proc = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=dict(os.environ, LC_ALL="C"))
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc.stdout


def other_daemons(exclude=None):
    """Pids of zfs-fuse processes on the host (but ``exclude``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == exclude:
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ...": a zombie (Z) serves nothing.
        comm = stat[stat.find("(") + 1:stat.rfind(")")]
        state = stat[stat.rfind(")") + 2:][:1]
        if comm == "zfs-fuse" and state not in ("Z", "X"):
            found.append(int(entry))
    return found


def _ensure_prerequisites():
    missing = [t for t in TOOLS if not _which(t)]
    if missing:
        raise Unavailable("zfs-fuse not installed (missing %s; Debian package zfs-fuse)"
                          % ", ".join(missing))
    if not os.path.exists("/dev/fuse"):
        raise Unavailable("/dev/fuse is missing: zfs-fuse needs the fuse kernel module")
    if os.geteuid() != 0:
        raise Unavailable("zfs-fuse needs root")


def _die_with_parent():
    # In the child, before exec: SIGTERM when the test process dies, even
    # by SIGKILL, so that no daemon outlives its tests (PR_SET_PDEATHSIG).
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def _wait_ready(proc, log_path):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable("zfs-fuse exited with %s at start: %s"
                              % (proc.returncode, _tail(log_path)))
        if os.path.exists(SOCKET):
            try:
                _sh("zpool", "list", "-H")
                return
            except subprocess.CalledProcessError:
                pass
        time.sleep(0.05)
    raise Unavailable("zfs-fuse did not open %s within %ss: %s"
                      % (SOCKET, START_TIMEOUT, _tail(log_path)))


def _tail(path):
    try:
        with open(path) as f:
            return f.read()[-400:].strip() or "no output"
    except OSError:
        return "no log"


def _start():
    _ensure_prerequisites()
    others = other_daemons()
    if others:
        raise Unavailable(
            "another zfs-fuse daemon is running (pid %s), not started by the tests; "
            "its socket %s is fixed, so a private one cannot run beside it"
            % (", ".join(map(str, others)), SOCKET))
    fd, log_path = tempfile.mkstemp(prefix="strata-zfs-fuse-", suffix=".log")
    # --no-daemon keeps it our child, so its pid is Popen's (--pidfile is
    # ignored in that mode); --no-kstat-mount: no /zfs-kstat mount to leak.
    proc = subprocess.Popen(
        [_which("zfs-fuse"), "--no-daemon", "--no-kstat-mount"],
        stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, cwd="/",
        start_new_session=True, preexec_fn=_die_with_parent)
    os.close(fd)
    try:
        _wait_ready(proc, log_path)
    except BaseException:
        _stop(proc, log_path)
        raise
    return proc, log_path


def _stop(proc, log_path):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    # A killed daemon leaves dead fuse mounts ("transport endpoint is not
    # connected"): detach any fuse.zfs mount that is left.
    for mp in _zfs_fuse_mounts():
        subprocess.run(["umount", "-l", mp], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with contextlib.suppress(OSError):
        os.unlink(log_path)


def _zfs_fuse_mounts():
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split(" ")[0] == "fuse.zfs":
                out.append(left.split(" ")[4])
    return sorted(out, key=lambda p: -p.count("/"))


@contextlib.contextmanager
def zfs_fuse_daemon():
    """A running zfs-fuse that this process started, shared by every user in
    the process. Yields its pid.

    When the last user leaves the daemon lingers, idle (no pool), until the
    next user or the end of the process (atexit), where it is stopped by its
    pid: a SIGTERM'd zfs-fuse takes ~3 s to exit, which per test would be
    most of a zfs test run. ``stop_idle_daemon()`` stops it at once."""
    with _state.lock:
        if _state.daemon is None or _state.daemon[0].poll() is not None:
            _state.daemon = _start()
            if not _state.atexit:
                atexit.register(stop_idle_daemon)
                _state.atexit = True
        _state.users += 1
        proc = _state.daemon[0]
    try:
        yield proc.pid
    finally:
        with _state.lock:
            _state.users -= 1


def stop_idle_daemon():
    """Stop our daemon now if nobody uses it; True if one was stopped."""
    with _state.lock:
        if _state.users or _state.daemon is None:
            return False
        d, _state.daemon = _state.daemon, None
    _stop(*d)
    return True


class Pool(object):
    def __init__(self, name, mountpoint, image, daemon_pid):
        self.name = name
        self.mountpoint = mountpoint
        self.image = image
        self.daemon_pid = daemon_pid

    def __repr__(self):
        return "<zfs-fuse pool %s at %s>" % (self.name, self.mountpoint)

    def create_dataset(self, relname, mountpoint):
        """``<pool>/<relname>`` mounted at ``mountpoint``; returns its name."""
        name = "%s/%s" % (self.name, relname)
        _sh("zfs", "create", "-p", "-o", "mountpoint=%s" % mountpoint, name)
        return name


@contextlib.contextmanager
def zfs_fuse_pool(directory=None, size_mb=512, name=None):
    """A fresh pool on a sparse file, served by a private zfs-fuse daemon."""
    with zfs_fuse_daemon() as pid:
        with _state.lock:
            _state.pool_serial += 1
            serial = _state.pool_serial
        name = name or "strata-test-%d-%d" % (os.getpid(), serial)
        workdir = tempfile.mkdtemp(prefix="strata-zpool-", dir=directory)
        image = os.path.join(workdir, "vdev.img")
        mountpoint = os.path.join(workdir, "mnt")
        os.mkdir(mountpoint)
        with open(image, "wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        created = False
        try:
            try:
                # cachefile=none: the pool must not be re-imported by a later
                # daemon from /var/lib/zfs/zpool.cache.
                _sh("zpool", "create", "-o", "cachefile=none", "-m", mountpoint,
                    name, image)
            except subprocess.CalledProcessError as e:
                raise Unavailable("zpool create %s on %s failed: %s"
                                  % (name, image, (e.stderr or "").strip()))
            created = True
            yield Pool(name, mountpoint, image, pid)
        finally:
            if created:
                _destroy_pool(name)
            with contextlib.suppress(OSError):
                os.unlink(image)
            with contextlib.suppress(OSError):
                os.rmdir(mountpoint)
            with contextlib.suppress(OSError):
                os.rmdir(workdir)


def _destroy_pool(name):
    # A test may leave a dataset mounted somewhere (or busy): -f, retried.
    for attempt in range(5):
        proc = subprocess.run(["zpool", "destroy", "-f", name], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True)
        if proc.returncode == 0:
            return
        time.sleep(0.2 * (attempt + 1))
    raise RuntimeError("zpool destroy %s failed: %s" % (name, proc.stderr.strip()))
