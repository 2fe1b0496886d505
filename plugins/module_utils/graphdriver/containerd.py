"""containerd, as Docker's containerd image store uses it: a gRPC client for
the calls we need, a private containerd on a data-root, and ``ctr import``.

Docker Engine 24+ with ``features.containerd-snapshotter`` keeps images in
containerd (namespace ``moby``): content blobs, image records named by full
reference (``docker.io/library/busybox:latest``) and layers unpacked into a
snapshotter. A container's filesystem is two snapshots under a lease named
after the container (moby daemon/containerd/image_snapshot.go):

    <id>-init   committed, parent the image's top ChainID: the init files
    <id>        active, parent <id>-init: the container's changes

Its containerd runs on ``<data-root>/containerd/daemon`` when dockerd starts
it, or is the host's own at /run/containerd/containerd.sock when one runs.
We never write containerd's metadata ourselves: every change goes through
containerd's API, so its bbolt database stays containerd's.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse

from . import refcount
from .command import run
from .dataroot import DataRoot
from .errors import GraphDriverError
from .http2 import Connection, HTTP2Error
from .mount import mount, unmount
from .protobuf import Message, encode

NAMESPACE = "moby"
SYSTEM_SOCKET = "/run/containerd/containerd.sock"

# gRPC status codes we act on
NOT_FOUND, ALREADY_EXISTS = 5, 6


class ContainerdError(GraphDriverError):
    def __init__(self, message, code=None):
        GraphDriverError.__init__(self, message)
        self.code = code


class Descriptor(object):
    """An OCI content descriptor (containerd.types.Descriptor)."""

    def __init__(self, media_type, digest, size, annotations=None):
        self.media_type, self.digest, self.size = media_type, digest, size
        self.annotations = dict(annotations or {})

    @classmethod
    def decode(cls, msg):
        return cls(msg.string(1), msg.string(2), msg.int(3), msg.map(5))

    def encode(self):
        return [(1, self.media_type), (2, self.digest), (3, self.size), (5, self.annotations)]

    def as_json(self):
        """As Docker writes it (ocispec.Descriptor, empty fields left out)."""
        out = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = self.annotations
        return out


class Image(object):
    def __init__(self, name, target, labels=None):
        self.name, self.target, self.labels = name, target, dict(labels or {})


class Snapshot(object):
    KINDS = {1: "view", 2: "active", 3: "committed"}

    def __init__(self, msg):
        self.name, self.parent = msg.string(1), msg.string(2)
        self.kind = self.KINDS.get(msg.int(3), "unknown")
        self.labels = msg.map(6)


class Client(object):
    """Unary gRPC calls to containerd in one namespace, one at a time."""

    def __init__(self, address, namespace=NAMESPACE, timeout=120):
        self.address, self.namespace = address, namespace
        self._conn = Connection(address, timeout)

    def close(self):
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, service, method, fields, lease=None):
        """All the response messages of one call (one for unary calls)."""
        body = encode(fields)
        headers = [(":method", "POST"), (":scheme", "http"),
                   (":path", "/containerd.services.%s/%s" % (service, method)),
                   (":authority", "localhost"), ("content-type", "application/grpc"),
                   ("te", "trailers"), ("containerd-namespace", self.namespace)]
        if lease:
            headers.append(("containerd-lease", lease))
        try:
            head, data, trailers = self._conn.request(
                headers, b"\x00" + len(body).to_bytes(4, "big") + body)
        except (HTTP2Error, OSError) as e:
            raise ContainerdError("containerd at %s: %s.%s: %s" % (self.address, service, method, e))
        status = trailers.get("grpc-status", head.get("grpc-status"))
        if status != "0":
            message = urllib.parse.unquote(trailers.get("grpc-message", head.get("grpc-message", "")))
            raise ContainerdError("containerd: %s.%s: %s" % (service, method, message or "status %s" % status),
                                  int(status) if status and status.isdigit() else None)
        return _grpc_messages(data)

    def _one(self, service, method, fields, lease=None):
        messages = self.call(service, method, fields, lease)
        return messages[0] if messages else Message(b"")

    # -- leases --
    def create_lease(self, lease_id):
        """A lease that never expires (as Docker makes one per container)."""
        self._one("leases.v1.Leases", "Create", [(1, lease_id)])

    def leases(self):
        return [m.string(1) for m in self._one("leases.v1.Leases", "List", []).messages(1)]

    def delete_lease(self, lease_id):
        self._one("leases.v1.Leases", "Delete", [(1, lease_id), (2, True)])

    # -- snapshots --
    def prepare(self, snapshotter, key, parent, lease=None):
        msg = self._one("snapshots.v1.Snapshots", "Prepare",
                        [(1, snapshotter), (2, key), (3, parent)], lease)
        return [_mount(m) for m in msg.messages(1)]

    def mounts(self, snapshotter, key):
        msg = self._one("snapshots.v1.Snapshots", "Mounts", [(1, snapshotter), (2, key)])
        return [_mount(m) for m in msg.messages(1)]

    def commit(self, snapshotter, name, key, lease=None):
        self._one("snapshots.v1.Snapshots", "Commit", [(1, snapshotter), (2, name), (3, key)], lease)

    def remove_snapshot(self, snapshotter, key):
        self._one("snapshots.v1.Snapshots", "Remove", [(1, snapshotter), (2, key)])

    def snapshot(self, snapshotter, key):
        """The Snapshot named ``key``, or None."""
        try:
            msg = self._one("snapshots.v1.Snapshots", "Stat", [(1, snapshotter), (2, key)])
        except ContainerdError as e:
            if e.code == NOT_FOUND:
                return None
            raise
        return Snapshot(msg.message(1))

    # -- images --
    def images(self):
        return [_image(m) for m in self._one("images.v1.Images", "List", []).messages(1)]

    def image(self, name):
        try:
            return _image(self._one("images.v1.Images", "Get", [(1, name)]).message(1))
        except ContainerdError as e:
            if e.code == NOT_FOUND:
                return None
            raise

    def create_image(self, image):
        self._one("images.v1.Images", "Create", [(1, [
            (1, image.name), (2, image.labels), (3, image.target.encode())])])

    def delete_image(self, name):
        self._one("images.v1.Images", "Delete", [(1, name), (2, True)])

    # -- content --
    def read_content(self, digest):
        msgs = self.call("content.v1.Content", "Read", [(1, digest)])
        return b"".join(m.fields.get(2, [b""])[-1] for m in msgs)


def _grpc_messages(data):
    out, pos = [], 0
    while pos + 5 <= len(data):
        if data[pos]:
            raise ContainerdError("containerd sent a compressed message; we asked for none")
        length = int.from_bytes(data[pos + 1:pos + 5], "big")
        out.append(Message(data[pos + 5:pos + 5 + length]))
        pos += 5 + length
    return out


def _mount(msg):
    return Mount(msg.string(1), msg.string(2), msg.strings(4))


def _image(msg):
    return Image(msg.string(1), Descriptor.decode(msg.message(3)), msg.map(2))


class Mount(object):
    """containerd.types.Mount: how to mount a snapshot."""

    def __init__(self, fstype, source, options):
        self.type, self.source, self.options = fstype, source, list(options)

    def argv(self, target):
        argv = ["mount", "-t", self.type]
        if self.options:
            argv += ["-o", ",".join(self.options)]
        return argv + [self.source, target]


class TempMount(object):
    """Mount a snapshot's mounts on a temporary directory (as containerd's
    mount.WithTempMount does); unmounted and removed on exit."""

    def __init__(self, mounts, parent_dir):
        self.mounts, self.parent_dir = mounts, parent_dir
        self.path = None
        self._mounted = []

    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="strata-mount-", dir=self.parent_dir)
        try:
            for m in self.mounts:
                run(m.argv(self.path))
                self._mounted.append(self.path)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.path

    def __exit__(self, *exc):
        for path in reversed(self._mounted):
            unmount(path, 0)
        self._mounted = []
        os.rmdir(self.path)


def root_of(data_root):
    """Where dockerd keeps the containerd it starts itself."""
    return DataRoot(data_root).containerd


class Daemon(object):
    """A private containerd on ``root`` (a data-root's ``containerd/daemon``)
    as dockerd would start it (its config, less the runtime's state), with
    its sockets in a short private directory. Stopped by pid on exit.

    ``read_only``: containerd runs on an overlay of ``root`` whose upper
    directory is temporary, so what it writes (its database opened for
    writing, a GC) never reaches ``root``: for check mode."""

    def __init__(self, root, binary="containerd", timeout=60, read_only=False):
        self.root = root
        self.read_only = read_only
        self._overlay = None
        self.binary = binary
        self.timeout = timeout
        self.dir = None
        self._made_run_dir = False
        self.proc = None
        self.address = None

    def __enter__(self):
        binary = shutil.which(self.binary)
        if binary is None:
            raise ContainerdError("containerd is not installed (%s not found in PATH)" % self.binary)
        # unix socket paths are short: keep ours under /run, not the data-root
        self._made_run_dir = not os.path.isdir(refcount.RUN_DIR)   # put back as found (check mode)
        os.makedirs(refcount.RUN_DIR, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="containerd-", dir=refcount.RUN_DIR)
        self.address = os.path.join(self.dir, "containerd.sock")
        config = os.path.join(self.dir, "containerd.toml")
        root = self.root
        if self.read_only:
            try:
                root = self._overlay_of(self.root)
            except BaseException:
                self.__exit__(None, None, None)
                raise
        with open(config, "w") as f:
            f.write('version = 2\nroot = "%s"\nstate = "%s"\n'
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    '[grpc]\n  address = "%s"\n[ttrpc]\n  address = "%s"\n'
                    '[debug]\n  address = "%s"\n'
                    % (root, os.path.join(self.dir, "state"), self.address,
                       self.address + ".ttrpc", os.path.join(self.dir, "debug.sock")))
        log = open(os.path.join(self.dir, "containerd.log"), "ab")
        try:
            self.proc = subprocess.Popen([binary, "--config", config], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        finally:
            log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _overlay_of(self, root):
        view = os.path.join(self.dir, "view")
        for d in ("view", "upper", "work"):
            os.mkdir(os.path.join(self.dir, d))
        mount("overlay", view, "overlay", 0, "lowerdir=%s,upperdir=%s,workdir=%s"
              % (root, os.path.join(self.dir, "upper"), os.path.join(self.dir, "work")))
        self._overlay = view
        return view

    def _wait_ready(self):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ContainerdError("containerd exited with %s: %s"
                                      % (self.proc.returncode, self.log_tail()))
            if os.path.exists(self.address):
                try:
                    with Client(self.address, timeout=5) as c:
                        c.leases()
                    return
                except (ContainerdError, HTTP2Error):
                    # the socket is bound before containerd listens on it:
                    # refused until then (seen on a loaded host)
                    pass
            time.sleep(0.1)
        raise ContainerdError("containerd did not answer on %s within %ss: %s"
                              % (self.address, self.timeout, self.log_tail()))

    def log_tail(self, lines=8):
        try:
            with open(os.path.join(self.dir, "containerd.log"), errors="replace") as f:
                return "".join(f.readlines()[-lines:]).strip()
        except OSError:
            return ""

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        if self._overlay:
            unmount(self._overlay, 0)
            self._overlay = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
            if self._made_run_dir:
                try:
                    os.rmdir(refcount.RUN_DIR)
                except OSError:
                    pass    # in use by now


def import_archive(address, chunks, snapshotter, ctr="ctr", namespace=NAMESPACE):
    """``ctr images import`` of a ``docker save`` tar given as an iterable of
    bytes chunks: containerd writes the content, names the images from
    RepoTags and unpacks them into ``snapshotter``, as ``docker load`` on the
    containerd store does (both use containerd's client Import)."""
    binary = shutil.which(ctr)
    if binary is None:
        raise ContainerdError("ctr is not installed (%s not found in PATH)" % ctr)
    argv = [binary, "--address", address, "--namespace", namespace, "images", "import",
            "--snapshotter", snapshotter, "-"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, bufsize=0)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                n = proc.stdin.write(view)
                view = view[n:]
        proc.stdin.close()
    except BrokenPipeError:
        pass    # ctr stopped reading: its error below says why
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    err = proc.stderr.read()
    if proc.wait() != 0:
        raise ContainerdError("ctr images import failed (%d): %s"
                              % (proc.returncode, err.decode(errors="replace").strip()))
