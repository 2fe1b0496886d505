"""Is a Docker engine using this data-root? Writers must ask before touching it.

dockerd keeps its layer and image stores in memory and rewrites them at will;
files changed under a running engine are lost or corrupt its view. So every
offline writer (image import, layer gc, driver migration) refuses to run
while an engine is up on the data-root. Three independent signs are checked,
since any one alone can be missing or stale:

- a live ``dockerd`` process whose ``--data-root`` (or legacy ``-g/--graph``,
  or ``data-root`` in its daemon.json) is this directory;
- a pid file (``<exec-root>/docker.pid``, default ``/var/run/docker.pid``)
  naming a live dockerd;
- a socket that answers ``GET /info`` with ``DockerRootDir`` equal to it.
"""

import http.client
import json
import os
import socket

from .errors import GraphDriverError

DEFAULT_DATA_ROOT = "/var/lib/docker"
DEFAULT_EXEC_ROOT = "/var/run/docker"
DEFAULT_PIDFILE = "/var/run/docker.pid"
DEFAULT_SOCKET = "/var/run/docker.sock"
DEFAULT_CONFIG = "/etc/docker/daemon.json"


class EngineRunning(GraphDriverError):
    """A Docker engine is running on the data-root; names how it was found."""

    def __init__(self, data_root, evidence):
        self.data_root = data_root
        self.evidence = list(evidence)
        super().__init__(
            "a Docker engine is running on %s (%s); stop it first (systemctl stop docker"
            " docker.socket) — its data-root must not change under it"
            % (data_root, "; ".join(self.evidence)))


def _same(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [os.fsdecode(a) for a in f.read().split(b"\0") if a]
    except (OSError, ValueError):
        return []


def _flag(argv, names):
    """Value of the last ``--name=v`` / ``--name v`` in argv, or None."""
    value = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(name + "="):
                value = arg[len(name) + 1:]
    return value


def _is_dockerd(argv):
    return bool(argv) and os.path.basename(argv[0]) == "dockerd"


def dockerd_data_root(argv):
    """The data-root a dockerd command line uses (flags, then daemon.json)."""
    root = _flag(argv, ("--data-root", "-g", "--graph"))
    if root:
        return root
    config = _flag(argv, ("--config-file",)) or DEFAULT_CONFIG
    try:
        with open(config) as f:
            cfg = json.load(f)
        root = cfg.get("data-root") or cfg.get("graph")
    except (OSError, ValueError, AttributeError):
        root = None
    return root or DEFAULT_DATA_ROOT


def dockerd_processes():
    """(pid, argv) of every dockerd process on this host."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            argv = _cmdline(int(name))
            if _is_dockerd(argv):
                found.append((int(name), argv))
    return found


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not an engine
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP to the Engine API on its unix socket, standard library only."""

    def __init__(self, path, timeout=2.0):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def socket_root_dir(path, timeout=2.0):
    """DockerRootDir reported by the engine on socket ``path``; None if none answers."""
    conn = UnixHTTPConnection(path, timeout)
    try:
        conn.request("GET", "/info")
        resp = conn.getresponse()
        if resp.status != 200:
            return None
        return json.loads(resp.read().decode("utf-8")).get("DockerRootDir")
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def running_evidence(data_root, exec_root=None, pidfile=None, sockets=None):
    """Why we think an engine runs on ``data_root``: a list of reasons (empty: none)."""
    data_root = os.path.abspath(data_root)
    evidence = []
    for pid, argv in dockerd_processes():
        if _pid_alive(pid) and _same(dockerd_data_root(argv), data_root):
            evidence.append("dockerd pid %d uses --data-root %s" % (pid, data_root))

    pidfiles = [pidfile] if pidfile else []
    if exec_root:
        pidfiles.append(os.path.join(exec_root, "docker.pid"))
    if _same(data_root, DEFAULT_DATA_ROOT):
        pidfiles.append(DEFAULT_PIDFILE)
    for path in pidfiles:
        try:
            with open(path) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            continue
        if pid > 0 and _pid_alive(pid) and _is_dockerd(_cmdline(pid)):
            argv = _cmdline(pid)
            if _same(dockerd_data_root(argv), data_root) or path == pidfile:
                evidence.append("pid file %s names live dockerd %d" % (path, pid))

    candidates = list(sockets or [])
    if _same(data_root, DEFAULT_DATA_ROOT) and DEFAULT_SOCKET not in candidates:
        candidates.append(DEFAULT_SOCKET)
    for path in candidates:
        if os.path.exists(path):
            root = socket_root_dir(path)
            if root and _same(root, data_root):
                evidence.append("the engine on %s reports DockerRootDir %s" % (path, root))
    return evidence


def ensure_stopped(data_root, exec_root=None, pidfile=None, sockets=None):
    """Raise EngineRunning if an engine runs on ``data_root``."""
    evidence = running_evidence(data_root, exec_root, pidfile, sockets)
    if evidence:
        raise EngineRunning(os.path.abspath(data_root), evidence)
