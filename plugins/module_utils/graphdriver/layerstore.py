"""Docker's layer store (``image/<driver>/layerdb``) over any of our drivers.

Reads and writes exactly what moby's ``layer`` package does, so that a
dockerd started on the data-root sees the layers we registered and we can
verify the ones it wrote:

- ``sha256/<chain hex>/`` holds ``diff`` (the DiffID: sha256 of the
  uncompressed tar), ``size`` (what ApplyDiff returned), ``cache-id`` (the
  driver's layer id), ``parent`` (the parent's ChainID, absent for a base),
  ``tar-split.json.gz`` and, when known, ``descriptor.json``;
- ChainID(base) = DiffID; ChainID(n) = sha256("<ChainID(n-1)> <DiffID(n)>");
- a layer is written into ``tmp/write-set-*`` and renamed into place, so it
  appears whole or not at all; removal first renames it to
  ``<hex>-<random>-removing`` so that a crash leaves a marked orphan;
- ``mounts/<container>/{mount-id,init-id,parent}`` for read-write layers;
- at most 125 layers deep (Docker: 127 lowers minus the init and rw layers).

Docker never cleans ``tmp/`` nor driver layers that no metadata references;
we record the cache-id in the write set *before* creating the driver layer,
so that opening the store can tell a crashed registration's layer from
anything else and remove exactly it.
"""

import collections
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading

from . import engine, refcount, tarsplit, tarsplit_worker
from .dataroot import DataRoot
from .archive import ChunkStream
from .errors import ArchiveError, GraphDriverError, LayerNotFound
from .fileutil import fsync_dir, locked, makedirs, remove_tree

MAX_DEPTH = 125
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
_MOUNT_ID_RE = re.compile(r"^[0-9a-f]{64}(-init)?$")


class LayerStoreError(GraphDriverError):
    pass


class LayerInUse(LayerStoreError):
    def __init__(self, chain_id, users):
        super().__init__("layer %s is in use by %s" % (chain_id, ", ".join(users)))
        self.chain_id = chain_id
        self.users = users


class LayerCorrupt(LayerStoreError):
    """A layer's files no longer give its DiffID; ``path`` names the first bad file."""

    def __init__(self, chain_id, cache_id, detail, path=None):
        msg = "layer %s (cache-id %s) is corrupt: %s" % (chain_id, cache_id, detail)
        super().__init__(msg)
        self.chain_id = chain_id
        self.cache_id = cache_id
        self.path = path


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_id(parent_chain_id, diff_id):
    """Docker's createChainIDFromParent for one step."""
    if not parent_chain_id:
        return diff_id
    return digest_of(("%s %s" % (parent_chain_id, diff_id)).encode("ascii"))


def chain_ids(diff_ids):
    """ChainIDs of a whole rootfs, base first."""
    out, parent = [], None
    for d in diff_ids:
        parent = chain_id(parent, d)
        out.append(parent)
    return out


def random_id():
    """stringid.GenerateRandomID: 64 hex whose short form is not all digits."""
    while True:
        value = os.urandom(32).hex()
        if not value[:12].isdigit():
            return value


def _hex(digest):
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise LayerStoreError("invalid layer digest %r (want sha256:<64 hex>)" % (digest,))
    return digest[len("sha256:"):]


class Layer(object):
    """One read-only layer as the layerdb records it."""

    __slots__ = ("chain_id", "diff_id", "cache_id", "parent", "size", "descriptor", "path")

    def __init__(self, chain_id, diff_id, cache_id, parent, size, descriptor, path):
        self.chain_id, self.diff_id, self.cache_id = chain_id, diff_id, cache_id
        self.parent, self.size, self.descriptor, self.path = parent, size, descriptor, path

    def __repr__(self):
        return "<Layer %s diff %s cache %s>" % (self.chain_id, self.diff_id, self.cache_id)

    def __eq__(self, other):
        return isinstance(other, Layer) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __hash__(self):
        return hash(self.chain_id)


class Mount(object):
    __slots__ = ("name", "mount_id", "init_id", "parent")

    def __init__(self, name, mount_id, init_id, parent):
        self.name, self.mount_id, self.init_id, self.parent = name, mount_id, init_id, parent

    def __repr__(self):
        return "<Mount %s id %s parent %s>" % (self.name, self.mount_id, self.parent)


def _read(path, default=None):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8").strip()
    except FileNotFoundError:
        return default


def _write_synced(path, data, mode=0o644):
    # moby AtomicWriteSet.WriteFile: create, write, fsync, close
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data.encode("utf-8") if isinstance(data, str) else data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


class _Tee(object):
    """The tar stream as the driver reads it, hashed on the way.

    ``tar_observer`` (the tar-split disassembler) is picked up by the
    TarReader the driver's apply parses the stream with (see tarstream).
    With ``read_ahead`` the stream is read, decompressed when it is, and
    hashed by a thread a few MiB ahead of the apply: zlib and hashlib let go
    of the GIL, so that work runs on another core beside the apply's Python.
    :meth:`stop` ends the thread; its errors are raised in the reader, in
    stream order (what it read before the error comes first).
    """

    def __init__(self, stream, tar_observer=None, read_ahead=False):
        self._stream = stream
        self._sha = hashlib.sha256()
        self.tar_observer = tar_observer
        self.bytes = 0
        self._ahead = _ReadAhead(stream, self._sha) if read_ahead else None

    def read(self, n=-1):
        if self._ahead is not None:
            data = self._ahead.read(n)
            self.bytes += len(data)
            return data
        data = self._stream.read(n) if n is not None else self._stream.read()
        if data:
            self._sha.update(data)
            self.bytes += len(data)
        return data

    def readinto(self, buf):
        if self._ahead is not None:
            n = self._ahead.readinto(buf)
            self.bytes += n
            return n
        readinto = getattr(self._stream, "readinto", None)
        if readinto is None:
            data = self.read(len(buf))
            buf[:len(data)] = data
            return len(data)
        n = readinto(buf)
        if n:
            self._sha.update(memoryview(buf)[:n])
            self.bytes += n
        return n

    def readable(self):
        return True

    @property
    def files_root(self):
        return getattr(self._stream, "files_root", None)

    def close(self):
        pass    # the driver's; the layer store calls stop()

    def stop(self):
        """Stop and join the read-ahead thread (after the apply, or on failure)."""
        if self._ahead is not None:
            self._ahead.close()

    def drain(self):
        # moby: "discard trailing data but ensure metadata is picked up"
        # (the TarReader did, when it had an observer)
        while self.read(1024 * 1024):
            pass

    @property
    def diff_id(self):
        return "sha256:" + self._sha.hexdigest()


class _ReadAhead(object):
    """``stream`` read in chunks by a thread and hashed there, at most
    ``_AHEAD_CHUNKS`` chunks ahead of :meth:`readinto`."""

    _CHUNK = 1024 * 1024
    _AHEAD_CHUNKS = 8

    def __init__(self, stream, sha):
        self._stream, self._sha = stream, sha
        self._chunks = collections.deque()
        self._cond = threading.Condition()
        self._done = False      # the thread has put its last chunk
        self._error = None      # ... and what stopped it, if not EOF
        self._stop = False
        self._cur = memoryview(b"")
        self._thread = None

    def _start(self):
        # On the driver's first read, not before: what it does first (say,
        # overlay2's probe mount) happens before any byte is read, as without
        # a thread.
        self._thread = threading.Thread(target=self._run, name="layer-read-ahead")
        self._thread.daemon = True
        self._thread.start()

    def _run(self):
        error = None
        try:
            read, update, cond, chunks = self._stream.read, self._sha.update, self._cond, self._chunks
            while True:
                data = read(self._CHUNK)
                if not data:
                    break
                update(data)
                with cond:
                    while len(chunks) >= self._AHEAD_CHUNKS and not self._stop:
                        cond.wait()
                    if self._stop:
                        break
                    chunks.append(data)
                    cond.notify()
        except BaseException as e:      # handed to the reader
            error = e
        with self._cond:
            self._done, self._error = True, error
            self._cond.notify()

    def _next(self):
        if self._thread is None:
            self._start()
        with self._cond:
            while not self._chunks and not self._done:
                self._cond.wait()
            if self._chunks:
                data = self._chunks.popleft()
                self._cond.notify()
                return memoryview(data)
            if self._error is not None:
                raise self._error
            return None

    def readinto(self, buf):
        cur = self._cur
        if not cur:
            cur = self._next()
            if cur is None:
                return 0
        n = min(len(buf), len(cur))
        buf[:n] = cur[:n]
        self._cur = cur[n:]
        return n

    def read(self, n=-1):
        if n is None or n < 0:
            parts = []
            while True:
                cur = self._cur if self._cur else self._next()
                if cur is None:
                    return b"".join(parts)
                parts.append(bytes(cur))
                self._cur = memoryview(b"")
        cur = self._cur if self._cur else self._next()
        if cur is None:
            return b""
        self._cur = cur[n:]
        return bytes(cur[:n])

    def close(self):
        with self._cond:
            self._stop = True
            self._chunks.clear()
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()


class LayerStore(object):
    """``LayerStore(data_root, driver)``: the layerdb of ``driver`` under ``data_root``.

    ``engine_version``: the Docker Engine whose bytes a registration writes
    where engines differ (the tar-split's end, see tarsplit); the newest
    engine's when not given. Every engine reads what any of them wrote.
    """

    def __init__(self, data_root, driver, check_engine=True, recover=True, engine_version=None):
        self.data_root = os.path.abspath(data_root)
        self.driver = driver
        self.engine_version = engine_version
        self.root = DataRoot(self.data_root).layerdb(driver.name)
        self.check_engine = check_engine
        makedirs(self.root, 0o700)
        key = hashlib.sha256(self.root.encode()).hexdigest()[:16]
        self._lock_path = os.path.join(refcount.RUN_DIR, "layerstore", key + ".lock")
        # never under a running engine: its own write sets are in tmp/ too
        if recover and not (check_engine and engine.running_evidence(self.data_root)):
            with self._locked():
                self._recover()

    def _locked(self):
        return locked(self._lock_path)

    def _engine_check(self):
        if self.check_engine:
            engine.ensure_stopped(self.data_root)

    # --- paths --------------------------------------------------------------
    def _layer_dir(self, chain):
        return os.path.join(self.root, "sha256", _hex(chain))

    def _mount_dir(self, name):
        if not name or "/" in name or name in (".", ".."):
            raise LayerStoreError("invalid mount name %r" % (name,))
        return os.path.join(self.root, "mounts", name)

    # --- reading ------------------------------------------------------------
    def _load(self, chain):
        d = self._layer_dir(chain)
        if not os.path.isdir(d):
            raise LayerNotFound(chain, "no %s" % d)
        diff = _read(os.path.join(d, "diff"))
        cache = _read(os.path.join(d, "cache-id"))
        size = _read(os.path.join(d, "size"))
        if not diff or not _DIGEST_RE.match(diff) or not cache or size is None:
            raise LayerStoreError("layer %s: incomplete metadata in %s" % (chain, d))
        parent = _read(os.path.join(d, "parent")) or None
        desc = _read(os.path.join(d, "descriptor.json"))
        try:
            size = int(size)
            desc = json.loads(desc) if desc else None
        except ValueError as e:
            raise LayerStoreError("layer %s: bad metadata in %s: %s" % (chain, d, e))
        return Layer(chain, diff, cache, parent, size, desc, d)

    def get(self, chain):
        """The layer with ChainID ``chain``; LayerNotFound if absent."""
        return self._load(chain)

    def exists(self, chain):
        return os.path.isdir(self._layer_dir(chain))

    def layers(self):
        """Every layer of the layerdb, as Docker lists them (invalid names skipped)."""
        out = []
        base = os.path.join(self.root, "sha256")
        for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            if _HEX_RE.match(name) and os.path.isdir(os.path.join(base, name)):
                out.append(self._load("sha256:" + name))
        return out

    def has_mount(self, name):
        return os.path.isdir(self._mount_dir(name))

    def mounts(self):
        out = []
        base = os.path.join(self.root, "mounts")
        for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            d = os.path.join(base, name)
            if not os.path.isdir(d):
                continue
            mount_id = _read(os.path.join(d, "mount-id"))
            if not mount_id or not _MOUNT_ID_RE.match(mount_id):
                continue  # Docker skips these too ("invalid mount id value")
            out.append(Mount(name, mount_id, _read(os.path.join(d, "init-id")) or None,
                             _read(os.path.join(d, "parent")) or None))
        return out

    def depth(self, chain):
        n = 0
        while chain:
            n += 1
            chain = self._load(chain).parent
        return n

    def chain(self, chain):
        """The layers from the base up to ``chain``."""
        out = []
        while chain:
            layer = self._load(chain)
            out.append(layer)
            chain = layer.parent
        return out[::-1]

    # --- registering ----------------------------------------------------------
    def register(self, stream, parent_chain_id=None, diff_id=None, descriptor=None, tar_split=None):
        """Apply the uncompressed layer tar ``stream`` on ``parent_chain_id``.

        ``tar_split``: the path of a tar-split.json.gz known to describe the
        stream (a migration's, assembled from it): copied as it is instead of
        disassembling the stream again; ``diff_id`` must then be given, and
        the stream is still hashed and checked against it.

        Returns the Layer. Idempotent: a chain already present is returned
        as it is and leaves no new driver layer behind (when ``diff_id`` is
        given and its chain exists, the stream is not even read). On any
        failure the driver layer and the half-written metadata are removed.
        """
        self._engine_check()
        with self._locked():
            parent = self._load(parent_chain_id) if parent_chain_id else None
            if diff_id is not None:
                want = chain_id(parent_chain_id, diff_id)
                if self.exists(want):
                    return self._load(want)
            if parent is not None and self.depth(parent.chain_id) >= MAX_DEPTH:
                raise LayerStoreError("cannot register on %s: max depth of %d layers exceeded"
                                      % (parent.chain_id, MAX_DEPTH))
            if tar_split is not None and diff_id is None:
                raise LayerStoreError("register: a tar-split given needs the DiffID it describes")
            return self._register(stream, parent, diff_id, descriptor, tar_split)

    def _register(self, stream, parent, expected_diff, descriptor, tar_split=None):
        tmp = os.path.join(self.root, "tmp")
        makedirs(tmp, 0o755)
        ws = tempfile.mkdtemp(prefix="write-set-", dir=tmp)
        os.chmod(ws, 0o700)
        cache = random_id()
        parent_cache = parent.cache_id if parent else None
        created = False
        try:
            # the intent, durable before the driver layer exists (see module doc)
            _write_synced(os.path.join(ws, "cache-id"), cache)
            fsync_dir(tmp)
            self.driver.create(cache, parent_cache)
            created = True
            # A stream that says so (an image archive's layer: a file, maybe
            # gzip) is read ahead in a thread, started after the tar-split
            # child is forked and joined before this returns; both only
            # where a core is free for them (on a busy machine the hand-overs
            # cost more than the overlap brings).
            parallel = tarsplit_worker.core_idle()
            read_ahead = parallel and getattr(stream, "read_ahead", False)
            if tar_split is not None:
                shutil.copyfile(tar_split, os.path.join(ws, "tar-split.json.gz"))
                os.chmod(os.path.join(ws, "tar-split.json.gz"), 0o644)
                tee = _Tee(stream, read_ahead=read_ahead)
                try:
                    size = self.driver.apply_diff(cache, parent_cache, tee)
                    tee.drain()
                finally:
                    tee.stop()
            else:
                dis = tarsplit_worker.open_disassembler(
                    os.path.join(ws, "tar-split.json.gz"), self.engine_version,
                    offload=parallel and hasattr(os, "fork"))
                try:
                    tee = _Tee(stream, dis, read_ahead=read_ahead)
                    try:
                        size = self.driver.apply_diff(cache, parent_cache, tee)
                        tee.drain()
                    finally:
                        tee.stop()
                except BaseException:
                    dis.abort()
                    raise
                dis.close()
            diff = tee.diff_id
            if expected_diff is not None and diff != expected_diff:
                raise ArchiveError("layer tar has DiffID %s, expected %s" % (diff, expected_diff))
            chain = chain_id(parent.chain_id if parent else None, diff)
            _write_synced(os.path.join(ws, "diff"), diff)
            _write_synced(os.path.join(ws, "size"), "%d" % size)
            if descriptor:
                _write_synced(os.path.join(ws, "descriptor.json"),
                              json.dumps(descriptor, separators=(",", ":")))
            if parent is not None:
                _write_synced(os.path.join(ws, "parent"), parent.chain_id)
            fsync_dir(ws)
            if self.exists(chain):
                raise _AlreadyThere(chain)
            final = self._layer_dir(chain)
            makedirs(os.path.dirname(final), 0o755)
            os.rename(ws, final)
            fsync_dir(os.path.dirname(final))
            fsync_dir(tmp)
            return self._load(chain)
        except _AlreadyThere as e:
            self._rollback(ws, cache if created else None)
            return self._load(e.chain)
        except BaseException as e:
            self._rollback(ws, cache if created else None)
            if isinstance(e, GraphDriverError) or not isinstance(e, (OSError, ValueError)):
                raise
            raise LayerStoreError("registering a layer on %s failed: %s"
                                  % (parent.chain_id if parent else "no parent", e))

    def _rollback(self, ws, cache):
        if cache:
            try:
                self.driver.remove(cache)
            except GraphDriverError:
                pass  # the intent in ws stays: the next open removes the layer
            else:
                remove_tree(ws)
        else:
            remove_tree(ws)

    # --- read-write layers --------------------------------------------------
    def create_rw_layer(self, name, parent_chain_id=None, init=None, opts=None):
        """A container layer ``mounts/<name>``; ``init(path)`` fills an init layer."""
        self._engine_check()
        with self._locked():
            d = self._mount_dir(name)
            if os.path.exists(d):
                raise LayerStoreError("mount %s already exists" % name)
            parent = self._load(parent_chain_id) if parent_chain_id else None
            pid = parent.cache_id if parent else None
            mount_id = random_id()
            init_id = None
            if init is not None:
                init_id = mount_id + "-init"
                self.driver.create_read_write(init_id, pid, opts)
                path = self.driver.get(init_id)
                try:
                    init(path)
                finally:
                    self.driver.put(init_id)
                pid = init_id
            self.driver.create_read_write(mount_id, pid, opts)
            makedirs(d, 0o755)
            _write_synced(os.path.join(d, "mount-id"), mount_id)
            if init_id:
                _write_synced(os.path.join(d, "init-id"), init_id)
            if parent:
                _write_synced(os.path.join(d, "parent"), parent.chain_id)
            return Mount(name, mount_id, init_id, parent.chain_id if parent else None)

    def copy_rw_layer(self, source_store, mount):
        """Carry container ``mount`` of ``source_store`` (another driver's
        store on the same data-root) into this one: the init and RW layers
        with the same ids, their files applied from the source driver's
        diffs, then ``mounts/<name>``. All or nothing; the source is read.
        """
        self._engine_check()
        src = source_store.driver
        with self._locked():
            d = self._mount_dir(mount.name)
            if os.path.exists(d):
                return False
            parent = self._load(mount.parent) if mount.parent else None
            src_parent = source_store._load(mount.parent).cache_id if mount.parent else None
            made = []
            try:
                below, src_below = parent.cache_id if parent else None, src_parent
                for layer_id in ([mount.init_id] if mount.init_id else []) + [mount.mount_id]:
                    if self.driver.exists(layer_id):   # a crashed earlier run's: made again
                        self.driver.remove(layer_id)
                    self.driver.create_read_write(layer_id, below)
                    made.append(layer_id)
                    stream = src.diff(layer_id, src_below)
                    try:
                        self.driver.apply_diff(layer_id, below, stream)
                    finally:
                        stream.close()
                    below, src_below = layer_id, layer_id
                # written aside and renamed: Docker lists every directory of mounts/
                tmp = os.path.join(self.root, "tmp", "mount-" + mount.name)
                remove_tree(tmp)
                makedirs(os.path.dirname(tmp), 0o700)
                makedirs(os.path.dirname(d), 0o755)
                os.mkdir(tmp, 0o755)
                _write_synced(os.path.join(tmp, "mount-id"), mount.mount_id)
                if mount.init_id:
                    _write_synced(os.path.join(tmp, "init-id"), mount.init_id)
                if parent:
                    _write_synced(os.path.join(tmp, "parent"), parent.chain_id)
                os.rename(tmp, d)
                fsync_dir(os.path.dirname(d))
            except BaseException:
                for layer_id in reversed(made):
                    try:
                        self.driver.remove(layer_id)
                    except GraphDriverError:
                        pass  # gc finds it; the error below matters
                raise
            return True

    def remove_rw_layer(self, name):
        self._engine_check()
        with self._locked():
            d = self._mount_dir(name)
            mount_id = _read(os.path.join(d, "mount-id"))
            if mount_id is None:
                return False
            init_id = _read(os.path.join(d, "init-id"))
            self.driver.remove(mount_id)
            if init_id:
                self.driver.remove(init_id)
            remove_tree(d)
            return True

    # --- removing -----------------------------------------------------------
    def users(self, chain):
        """Who keeps ``chain`` alive: child layers and container mounts."""
        users = ["child layer %s" % l.chain_id for l in self.layers() if l.parent == chain]
        users += ["container %s" % m.name for m in self.mounts() if m.parent == chain]
        return users

    def remove(self, chain):
        """Remove one layer (not its parents); refuses while referenced."""
        self._engine_check()
        with self._locked():
            layer = self._load(chain)
            users = self.users(chain)
            if users:
                raise LayerInUse(chain, users)
            # moby deleteLayer: mark first, so a failed driver remove leaves
            # a recognisable orphan rather than a layer without files
            while True:
                marked = "%s-%s-removing" % (os.path.join(self.root, "sha256", _hex(chain)),
                                             random_id())
                if not os.path.exists(marked):
                    break
            os.rename(layer.path, marked)
            fsync_dir(os.path.dirname(marked))
            self.driver.remove(layer.cache_id)
            remove_tree(marked)
            return layer

    # --- verifying ----------------------------------------------------------
    def tar_split_path(self, chain):
        """The layer's tar-split.json.gz, or None when it has none."""
        path = os.path.join(self._load(chain).path, "tar-split.json.gz")
        return path if os.path.exists(path) else None

    def tar_stream_to(self, chain, out):
        """Write the layer's exact tar (from tar-split and the driver) to ``out``."""
        stream = self.tar_stream(chain)
        try:
            shutil.copyfileobj(stream, out, 1024 * 1024)
        finally:
            stream.close()

    def tar_stream(self, chain, check_crc=True):
        """The layer's exact tar as a readable stream; close it when done.

        ``check_crc=False``: for a reader that checks the DiffID itself
        (see tarsplit.chunks).
        """
        layer = self._load(chain)
        ts = os.path.join(layer.path, "tar-split.json.gz")
        if not os.path.exists(ts):
            # no tar-split (a driver reproducing exact diffs): ask the driver
            parent_cache = self._load(layer.parent).cache_id if layer.parent else None
            return self.driver.diff(layer.cache_id, parent_cache)
        root, release = self.driver.diff_dir(layer.cache_id)
        try:
            pieces = tarsplit.chunks(tarsplit.read_entries(ts), root, check_crc=check_crc)
            stream = ChunkStream(pieces, on_close=release)
            stream.files_root = root
            return stream
        except BaseException:
            release()
            raise

    def verify(self, chain):
        """Rebuild the layer's tar and check it against its DiffID.

        Raises LayerCorrupt naming the layer and the first file that
        differs (or the DiffID when only headers/metadata differ).
        """
        layer = self._load(chain)

        class _Hash(object):
            def __init__(self):
                self.h = hashlib.sha256()

            def write(self, data):
                self.h.update(data)

        sink = _Hash()
        try:
            self.tar_stream_to(chain, sink)
        except tarsplit.TarSplitError as e:
            raise LayerCorrupt(chain, layer.cache_id, str(e), path=e.entry)
        except (OSError, ArchiveError) as e:
            raise LayerCorrupt(chain, layer.cache_id, str(e))
        got = "sha256:" + sink.h.hexdigest()
        if got != layer.diff_id:
            raise LayerCorrupt(chain, layer.cache_id,
                               "rebuilt tar has DiffID %s, recorded %s" % (got, layer.diff_id))
        return layer

    def verify_all(self):
        """Verify every layer; returns {chain: None or the LayerCorrupt error}."""
        result = {}
        for layer in self.layers():
            try:
                self.verify(layer.chain_id)
                result[layer.chain_id] = None
            except LayerCorrupt as e:
                result[layer.chain_id] = e
        return result

    # --- orphans and recovery -------------------------------------------------
    def referenced_ids(self):
        """Driver layer ids the layerdb names: read from each entry's own
        files, so that an entry with broken metadata still keeps its layer."""
        ids = set()
        for kind, files in (("sha256", ("cache-id",)), ("mounts", ("mount-id", "init-id"))):
            base = os.path.join(self.root, kind)
            for name in os.listdir(base) if os.path.isdir(base) else []:
                if (kind == "sha256" and not _HEX_RE.match(name)) or not os.path.isdir(os.path.join(base, name)):
                    continue    # marked removals are _recover's
                ids.update(filter(None, (_read(os.path.join(base, name, f)) for f in files)))
        return ids

    def orphans(self):
        """Driver layers that no layerdb entry or container mount references."""
        return sorted(set(self.driver.layer_ids()) - self.referenced_ids())

    def gc(self):
        """Remove the orphans (and finish interrupted removals); returns their ids."""
        self._engine_check()
        with self._locked():
            removed = self._recover()
            for cache in self.orphans():
                self.driver.remove(cache)
                removed.append(cache)
            return removed

    def _recover(self):
        """Undo what a crash left: write sets, their driver layers, marked removals."""
        removed = []
        referenced = None
        tmp = os.path.join(self.root, "tmp")
        for name in sorted(os.listdir(tmp)) if os.path.isdir(tmp) else []:
            ws = os.path.join(tmp, name)
            if not name.startswith("write-set-"):
                continue
            cache = _read(os.path.join(ws, "cache-id"))
            if cache and _MOUNT_ID_RE.match(cache):
                if referenced is None:
                    referenced = self.referenced_ids()
                if cache not in referenced and self.driver.exists(cache):
                    self.driver.remove(cache)
                    removed.append(cache)
            remove_tree(ws)
        base = os.path.join(self.root, "sha256")
        for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            if not name.endswith("-removing"):
                continue
            d = os.path.join(base, name)
            cache = _read(os.path.join(d, "cache-id"))
            if cache:
                if referenced is None:
                    referenced = self.referenced_ids()
                if cache not in referenced and self.driver.exists(cache):
                    self.driver.remove(cache)
                    removed.append(cache)
            remove_tree(d)
        return removed


class _AlreadyThere(Exception):
    def __init__(self, chain):
        super().__init__(chain)
        self.chain = chain


__all__ = ["LayerStore", "Layer", "Mount", "LayerStoreError", "LayerInUse", "LayerCorrupt",
           "chain_id", "chain_ids", "digest_of", "random_id", "MAX_DEPTH"]
