"""A private, real ``dockerd`` for tests: its own data-root, exec-root and socket.

    with dockerd(workdir, storage_driver="overlay2") as d:
        d.docker("images")                 # the docker CLI with -H <our socket>
        d.api("GET", "/info")              # HTTP over the unix socket

    with dockerd(workdir, engine="26.1",
                 config={"features": {"containerd-snapshotter": True}}) as d:
        ...                                # Engine 26 on the containerd store

Two engines: Debian 12's docker.io 20.10 (installed system-wide) and Debian
13's docker.io 26.1 with its containerd 1.7, unpacked into a private prefix
by scripts/setup-engine26.sh (never installed: it would pull a newer libc).
Engine 26 finds its containerd through PATH and Debian 12's runc beside it.

The daemon starts its own managed containerd under our exec-root. On exit
(also on failure) dockerd is stopped by pid (TERM, then KILL), then every
process that still runs from our exec-root (containerd, shims) is killed by
pid, and anything left mounted under our directories is unmounted.

What ``docker run`` needs here: nothing beyond the flags below on this host
(cgroup v1, seccomp and apparmor are present and work); ``--privileged``
fails because a capability is missing in the sandbox, so tests don't use it.
``--bridge=none --iptables=false --ip-masq=false`` keep the host's network
untouched; containers run with ``--network none``.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import engine

SHORT_BASE = "/run/strata-dockerd"
ENGINE26_PREFIX = os.environ.get("STRATA_ENGINE26_PREFIX",
                                 "/var/cache/strata-graphdriver/engine-26")


class Engine(object):
    """One Docker Engine build: its dockerd, its CLI, the PATH it runs with."""

    def __init__(self, version, prefix):
        self.version = version
        self.prefix = prefix
        self.dockerd = os.path.join(prefix, "usr/sbin/dockerd")
        self.docker = os.path.join(prefix, "usr/bin/docker")
        # dockerd execs containerd, its shim and runc from PATH: the prefix's
        # first, then the host's (Debian 12's runc)
        dirs = [os.path.join(prefix, "usr/bin"), os.path.join(prefix, "usr/sbin")]
        self.path = ":".join(dirs + ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin",
                                     "/usr/bin", "/sbin", "/bin"])

    def missing(self):
        """None if this engine is installed, else what is missing."""
        for path in (self.dockerd, self.docker):
            if not os.access(path, os.X_OK):
                return "Engine %s: %s is not installed (%s)" % (
                    self.version, path, "Debian package docker.io" if self.prefix == "/"
                    else "make setup unpacks it: scripts/setup-engine26.sh")
        return None


ENGINES = {
    "20.10": Engine("20.10", "/"),
    "26.1": Engine("26.1", ENGINE26_PREFIX),
}
# what interop tests parametrize over, oldest first
ENGINE_VERSIONS = ["20.10", "26.1"]


class DockerdUnavailable(Exception):
    """No dockerd here, or it does not start; the message says why."""


class Dockerd(object):
    def __init__(self, workdir, storage_driver, data_root, storage_opts=(),
                 engine="20.10", config=None):
        self.workdir = workdir
        self.engine = ENGINES[engine]
        self.storage_driver = storage_driver
        self.config = dict(config or {})
        self.data_root = data_root or os.path.join(workdir, "data")
        # unix socket paths are limited to ~104 bytes (containerd's debug
        # socket lives under the exec-root): keep these short, outside workdir
        os.makedirs(SHORT_BASE, exist_ok=True)
        self.short_dir = tempfile.mkdtemp(prefix="d", dir=SHORT_BASE)
        self.exec_root = os.path.join(self.short_dir, "x")
        self.socket = os.path.join(self.short_dir, "docker.sock")
        self.pidfile = os.path.join(workdir, "docker.pid")
        self.log_path = os.path.join(workdir, "dockerd.log")
        self.config_dir = os.path.join(workdir, "cli-config")
        self.storage_opts = list(storage_opts)
        self.proc = None

    # -- clients --
    def docker(self, *args, check=True, input=None, timeout=300):
        """Run the docker CLI against this daemon; returns stdout (text)."""
        argv = [self.engine.docker, "--config", self.config_dir, "-H", "unix://" + self.socket] + [
            str(a) for a in args]
        proc = subprocess.run(argv, input=input, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout, env=self.env())
        if check and proc.returncode != 0:
            raise AssertionError("%s failed (%d): %s\n--- dockerd log tail:\n%s" % (
                " ".join(argv), proc.returncode, proc.stderr.decode(errors="replace"),
                self.log_tail()))
        return proc.stdout.decode(errors="replace")

    def api(self, method, path, timeout=30):
        conn = engine.UnixHTTPConnection(self.socket, timeout)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            body = resp.read()
            try:
                return resp.status, json.loads(body.decode())
            except ValueError:
                return resp.status, body  # /_ping says "OK"
        finally:
            conn.close()

    def env(self):
        return dict(os.environ, PATH=self.engine.path)

    def log_tail(self, lines=12):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    # -- lifecycle --
    def start(self, timeout=60):
        for d in (self.workdir, self.exec_root, self.config_dir):
            os.makedirs(d, exist_ok=True)
        argv = [self.engine.dockerd,
                "--data-root", self.data_root,
                "--exec-root", self.exec_root,
                "-H", "unix://" + self.socket,
                "--pidfile", self.pidfile,
                "--bridge=none", "--iptables=false", "--ip-masq=false",
                # keep the host's /etc/docker/daemon.json out of it
                "--config-file", os.path.join(self.workdir, "daemon.json")]
        if self.storage_driver:  # None: the engine picks, as it would on a host
            argv += ["--storage-driver", self.storage_driver]
        for opt in self.storage_opts:
            argv += ["--storage-opt", opt]
        with open(os.path.join(self.workdir, "daemon.json"), "w") as f:
            json.dump(self.config, f)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         env=self.env())
        finally:
            log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise DockerdUnavailable("dockerd exited with %s:\n%s"
                                         % (self.proc.returncode, self.log_tail()))
            if os.path.exists(self.socket):
                try:
                    status, _ = self.api("GET", "/_ping", timeout=5)
                    if status == 200:
                        return self
                except OSError:
                    pass
            time.sleep(0.2)
        raise DockerdUnavailable("dockerd did not answer on %s within %ss:\n%s"
                                 % (self.socket, timeout, self.log_tail()))

    def _our_pids(self):
        """Processes started from our exec-root (containerd, shims): ours by path."""
        pids = []
        needle = self.exec_root.encode()
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            try:
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if needle in cmd:
                pids.append(int(name))
        return pids

    def stop(self, timeout=30):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        # containerd normally exits with dockerd; shims may outlive it
        deadline = time.time() + 10
        while time.time() < deadline:
            left = self._our_pids()
            if not left:
                break
            time.sleep(0.3)
        for pid in self._our_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._unmount_ours()
        shutil.rmtree(self.short_dir, ignore_errors=True)

    def _unmount_ours(self):
        # dockerd bind-mounts the data-root onto itself (to make its mount
        # propagation private); a daemon killed or failed at start leaves it
        dirs = [p.rstrip("/") for p in (self.data_root, self.short_dir, self.workdir)]
        roots = tuple(p + "/" for p in dirs)
        with open("/proc/self/mounts") as f:
            points = [line.split()[1].encode().decode("unicode_escape") for line in f]
        for mp in reversed(points):
            if mp.startswith(roots) or mp in dirs:
                subprocess.run(["umount", "-l", mp], check=False,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def available(engine="20.10"):
    """None if a private dockerd of this engine can run here, else why not."""
    if os.geteuid() != 0:
        return "dockerd needs root"
    return ENGINES[engine].missing()


@contextlib.contextmanager
def dockerd(workdir, storage_driver="vfs", data_root=None, storage_opts=(), timeout=60,
            engine="20.10", config=None):
    """Start a private dockerd; yield a Dockerd; always stop it and its children."""
    reason = available(engine)
    if reason:
        raise DockerdUnavailable(reason)
    d = Dockerd(workdir, storage_driver, data_root, storage_opts, engine, config)
    try:
        d.start(timeout)
        yield d
    finally:
        d.stop()
