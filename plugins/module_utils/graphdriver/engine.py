"""The Docker engine of this host: is one running on a data-root, what does
the running one report, which version is installed.

Writers must ask before touching a data-root.

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

The Engine API is spoken over its unix socket with the standard library
only, so that a managed host needs neither the docker CLI nor the Docker SDK.
"""

import http.client
import json
import os
import re
import socket

from .command import Command
from .errors import GraphDriverError

DEFAULT_DATA_ROOT = "/var/lib/docker"
DEFAULT_EXEC_ROOT = "/var/run/docker"
DEFAULT_PIDFILE = "/var/run/docker.pid"
DEFAULT_SOCKET = "/var/run/docker.sock"
DEFAULT_CONFIG = "/etc/docker/daemon.json"
DEFAULT_HOST = "unix://" + DEFAULT_SOCKET

# Engine 29 makes the containerd image store the default on fresh installs:
# layers then live in containerd snapshotters, not in a graphdriver home.
CONTAINERD_STORE_DEFAULT_SINCE = (29, 0)


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
    try:
        return Engine(path, timeout).info().get("DockerRootDir")
    except EngineAPIError:
        return None


class EngineAPIError(GraphDriverError):
    pass


def socket_path(docker_host):
    """'unix:///run/x.sock' or '/run/x.sock' -> '/run/x.sock'."""
    if docker_host.startswith("unix://"):
        return docker_host[len("unix://"):]
    if docker_host.startswith("/"):
        return docker_host
    raise EngineAPIError("docker_host %r: only unix:// sockets are supported "
                         "(the engine of the managed host itself)" % docker_host)


class Engine(object):
    """The Engine API on ``docker_host`` (``unix://`` or a socket path)."""

    def __init__(self, docker_host=DEFAULT_HOST, timeout=10):
        self.docker_host = docker_host
        self.path = socket_path(docker_host)
        self.timeout = timeout

    def get(self, endpoint):
        """GET ``endpoint`` and decode its JSON; EngineAPIError when unreachable."""
        conn = UnixHTTPConnection(self.path, self.timeout)
        try:
            conn.request("GET", endpoint, headers={"Host": "docker"})
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise EngineAPIError("no Docker engine answers on %s (%s)" % (self.docker_host, e))
        finally:
            conn.close()
        if resp.status != 200:
            raise EngineAPIError("GET %s on %s: HTTP %s %s" % (
                endpoint, self.docker_host, resp.status, body[:200].decode("utf-8", "replace")))
        try:
            return json.loads(body.decode("utf-8"))
        except ValueError as e:
            raise EngineAPIError("GET %s on %s: invalid JSON (%s)" % (endpoint, self.docker_host, e))

    def info(self):
        return self.get("/info")

    def version(self):
        return self.get("/version")


def running_engine(docker_host=DEFAULT_HOST):
    """What the running engine reports, or None when no engine answers.

    Keys: docker_host, version, api_version, driver, driver_status (dict),
    data_root, containerd_store (bool: the engine keeps images in containerd).
    """
    api = Engine(docker_host)
    try:
        info = api.info()
        version = api.version()
    except EngineAPIError:
        return None
    status = dict((k, v) for k, v in (info.get("DriverStatus") or []))
    return {
        "docker_host": docker_host,
        "version": version.get("Version"),
        "api_version": version.get("ApiVersion"),
        "driver": info.get("Driver"),
        "driver_status": status,
        "data_root": info.get("DockerRootDir"),
        # The containerd store reports driver-type io.containerd.snapshotter.v1.
        "containerd_store": status.get("driver-type", "").startswith("io.containerd.snapshotter"),
    }


_VERSION_RE = re.compile(r"version\s+v?([0-9]+\.[0-9]+[0-9A-Za-z.+~-]*)")


def installed_version(dockerd="dockerd"):
    """'20.10.24+dfsg1' from ``dockerd --version``, or None when not installed."""
    try:
        out = Command(dockerd, "--version").run(timeout=30)
    except GraphDriverError:
        return None
    m = _VERSION_RE.search(out)
    return m.group(1).rstrip(",") if m else None


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
