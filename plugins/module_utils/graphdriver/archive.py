"""Writing layer tars (moby pkg/archive's archive.go and changes.go), and the
engine rules both directions follow.

* :func:`tar_tree` — ``TarWithOptions``: a tar of a tree, optionally of some
  paths only, converting overlay whiteouts to the wire form;
* :func:`export_changes` — ``ExportChanges``: a tar of a list of changes,
  deletions as ``.wh.<name>`` entries;
* :class:`ChunkStream` — what both return, and what the layer store wraps
  around a layer rebuilt from its tar-split.

The other jobs of pkg/archive live beside this file: whiteout names in
whiteouts.py, applying a layer (``UnpackLayer``) in unpack.py, and the
journal that makes an apply all or nothing in apply_journal.py.

Engine 23.0 changed three of pkg/archive's rules, and ``engine_version``
(every writer and apply_layer take it; the newest engine's rules when not
given) says whose to follow; :func:`legacy_rules` decides. 20.10 writes the
file type bits into a header's mode (``0100755``: fillGo18FileTypeBits,
removed by moby #44083) and the owner's user and group names looked up on
the host (Go's tar.FileInfoHeader; 23+ uses FileInfoHeaderNoLookups and
writes none), so the same tree gives other tar bytes and a committed layer
another DiffID; and its UnpackLayer makes the missing parents of an entry
0600 (moby #44196 made them 0755, as Unpack always did). Each is compared
with both engines in tests/integration/test_archive_docker.py.

Streams returned here are readable binary file objects produced lazily:
nothing is read from disk before the consumer reads, and ``close()`` stops
production and then calls ``on_close`` (drivers unmount there: "diff() keeps
the layer mounted until its stream is closed").
"""

import io
import os
import posixpath
import re
import stat
import time

from .errors import GraphDriverError
from .priority import parse_version
from .tarstream import (BLOCK, CHAR, BLOCKDEV, DIR, FIFO, LINK, REG, SYMLINK,
                        MODE_TYPE_BITS, END_OF_ARCHIVE, encode_header)
from .whiteouts import AUFS, OVERLAY, OPAQUE_XATTR, WHITEOUT_OPAQUE_B, WHITEOUT_PREFIX_B

# The first engine with today's pkg/archive rules (see the module doc).
ARCHIVE_RULES_SINCE = (23, 0)

CAPABILITY_XATTR = "security.capability"

_CHUNK = 1 << 20
_SMALL = 1 << 16    # files up to this size are read in one go


def legacy_rules(engine_version=None):
    """Does Docker Engine ``engine_version`` follow 20.10's pkg/archive rules
    (type bits and owner names in headers, 0600 implied parents)? None: the
    newest engine, which does not."""
    v = parse_version(engine_version)
    return v is not None and v < ARCHIVE_RULES_SINCE


# ---------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------


class ChunkStream(io.RawIOBase):
    """A readable binary file object over a generator of bytes chunks.

    ``close()`` closes the generator (which releases its open files) and
    then calls ``on_close`` once. An error raised while producing is raised
    from ``read()`` as a GraphDriverError. There is no descriptor: a
    consumer that needs one (a subprocess's stdin) copies from ``read()``.
    """

    # ``if self.closed`` carries a pylint disable: ``closed`` is io.IOBase's
    # flag, a C getset descriptor that astroid models as a class, so pylint
    # takes it for a constant (using-constant-test); at run time it is a bool.

    # The directory the payloads are read from, when each is the file there
    # that its entry names (a layer rebuilt from its tar-split): an applier
    # may then clone those files (FICLONE) instead of writing their bytes.
    files_root = None

    def __init__(self, chunks, on_close=None):
        super().__init__()
        self._gen = chunks
        self._on_close = on_close
        self._pending = memoryview(b"")

    def readable(self):
        return True

    def _next(self):
        while not self._pending:
            try:
                chunk = next(self._gen)
            except StopIteration:
                return False
            except OSError as e:
                where = os.fsdecode(e.filename) + ": " if e.filename else ""
                raise GraphDriverError("producing a layer tar: %s%s"
                                       % (where, e.strerror or e)) from e
            self._pending = memoryview(chunk)
        return True

    def readinto(self, b):
        if self.closed:  # pylint: disable=using-constant-test
            raise ValueError("read from a closed layer stream")
        view = memoryview(b).cast("B")
        n = 0
        while n < len(view) and self._next():
            k = min(len(view) - n, len(self._pending))
            view[n:n + k] = self._pending[:k]
            self._pending = self._pending[k:]
            n += k
        return n

    def read(self, size=-1):
        if self.closed:  # pylint: disable=using-constant-test
            raise ValueError("read from a closed layer stream")
        if size is None or size < 0:
            return self.readall()
        buf = bytearray(size)
        n = self.readinto(buf)
        del buf[n:]
        return bytes(buf)

    def readall(self):
        if self.closed:  # pylint: disable=using-constant-test
            raise ValueError("read from a closed layer stream")
        parts = []
        while self._next():
            parts.append(bytes(self._pending))
            self._pending = memoryview(b"")
        return b"".join(parts)

    def close(self):
        if self.closed:  # pylint: disable=using-constant-test
            return
        try:
            self._gen.close()
        finally:
            super().close()
            cb, self._on_close = self._on_close, None
            if cb is not None:
                cb()


# ---------------------------------------------------------------------------
# Writing: addTarFile, TarWithOptions, ExportChanges
# ---------------------------------------------------------------------------

def _lgetxattr(path, name):
    # listxattr first: most files have none, and a failing getxattr costs
    # an exception each.
    try:
        if name not in os.listxattr(path, follow_symlinks=False):
            return None
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


_NO_TYPE_BITS = dict.fromkeys(MODE_TYPE_BITS, 0)


class _TarAppender(object):
    """pkg/archive's tarAppender: one entry per path, hard links by inode."""

    def __init__(self, whiteout_format=None, engine_version=None):
        self.seen = {}
        self.overlay = whiteout_format == OVERLAY
        legacy = legacy_rules(engine_version)
        self.names = {} if legacy else None
        self.type_bits = MODE_TYPE_BITS if legacy else _NO_TYPE_BITS

    def _names(self, uid, gid):
        """Docker 20.10's writer (Go's tar.FileInfoHeader) looks the owner's
        user and group names up on the host; Docker 23+ writes none."""
        if self.names is None:
            return b"", b""
        key = (uid, gid)
        got = self.names.get(key)
        if got is None:
            import grp
            import pwd
            try:
                uname = os.fsencode(pwd.getpwuid(uid).pw_name)
            except KeyError:
                uname = b""
            try:
                gname = os.fsencode(grp.getgrgid(gid).gr_name)
            except KeyError:
                gname = b""
            got = self.names[key] = (uname, gname)
        return got

    def entry(self, path, name):
        """Yield the chunks of the entry for ``path`` named ``name`` (bytes)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return      # vanished since it was listed: Docker logs and goes on
        fmt = stat.S_IFMT(st.st_mode)
        if fmt == stat.S_IFSOCK:
            return      # Docker skips sockets
        isdir = fmt == stat.S_IFDIR
        if isdir and not name.endswith(b"/"):
            name += b"/"
        mode = (st.st_mode & 0o7777) | self.type_bits[fmt]
        size = 0
        linkname = b""
        devmajor = devminor = 0
        typeflag = REG
        if fmt == stat.S_IFREG:
            size = st.st_size
        elif isdir:
            typeflag = DIR
        elif fmt == stat.S_IFLNK:
            typeflag = SYMLINK
            linkname = os.readlink(path)
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
            typeflag = CHAR if fmt == stat.S_IFCHR else BLOCKDEV
            devmajor, devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif fmt == stat.S_IFIFO:
            typeflag = FIFO
        whiteout = self.overlay and typeflag == CHAR and st.st_rdev == 0
        if not isdir and st.st_nlink > 1 and not whiteout:
            # Docker keys hard links by inode number alone.
            first = self.seen.get(st.st_ino)
            if first is not None:
                typeflag, linkname, size = LINK, first, 0
            else:
                self.seen[st.st_ino] = name
        xattrs = None
        cap = _lgetxattr(path, CAPABILITY_XATTR)
        if cap is not None:
            xattrs = {CAPABILITY_XATTR: cap}
        mtime = st.st_mtime_ns // 1000000000      # Docker truncates to seconds
        opaque_wo = None
        if whiteout:
            # overlayWhiteoutConverter.ConvertWrite: a 0/0 char device is
            # the whiteout .wh.<name>, an empty 0600 regular file.
            d, sep, b = name.rpartition(b"/")
            name = (d + b"/" if d else b"") + WHITEOUT_PREFIX_B + b
            typeflag, mode, size, devmajor, devminor = REG, 0o600, 0, 0, 0
        elif self.overlay and isdir:
            if _lgetxattr(path, OPAQUE_XATTR) == b"y":
                # The opaque marker: a regular file inheriting the directory's
                # owner and permission bits, mtime zero (Go writes the epoch).
                opaque_wo = encode_header(name + WHITEOUT_OPAQUE_B, mode & 0o777, st.st_uid,
                                          st.st_gid, 0, 0, REG)
        fd = None
        if typeflag == REG and size:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                return
        uname, gname = self._names(st.st_uid, st.st_gid)
        try:
            header = encode_header(name, mode, st.st_uid, st.st_gid, size, mtime, typeflag,
                                   linkname, devmajor, devminor, xattrs, uname, gname)
            if fd is not None and size <= _SMALL:
                # A small file goes out as one chunk: header, data, padding.
                data = os.read(fd, size)
                while len(data) < size:
                    more = os.read(fd, size - len(data))
                    if not more:
                        raise GraphDriverError(
                            "%s shrank while it was being archived (tar entry %r)"
                            % (os.fsdecode(path), os.fsdecode(name)))
                    data += more
                yield header + data + b"\0" * (-size & (BLOCK - 1))
                return
            yield header
            if opaque_wo is not None:
                yield opaque_wo
            if fd is not None:
                left = size
                while left:
                    data = os.read(fd, min(left, _CHUNK))
                    if not data:
                        raise GraphDriverError(
                            "%s shrank while it was being archived (tar entry %r)"
                            % (os.fsdecode(path), os.fsdecode(name)))
                    left -= len(data)
                    yield data
                pad = -size & (BLOCK - 1)
                if pad:
                    yield b"\0" * pad
        finally:
            if fd is not None:
                os.close(fd)


def _walk(root, rel):
    """Go's filepath.Walk below root/rel: depth first, names sorted bytewise."""
    path = root + b"/" + rel if rel else root
    try:
        with os.scandir(path) as it:
            children = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)
    except (NotADirectoryError, FileNotFoundError):
        return
    for n, isdir in children:
        child = rel + b"/" + n if rel else n
        yield child
        if isdir:
            yield from _walk(root, child)


def _compile_patterns(patterns):
    """Docker's exclude patterns ('!' negates, last match wins; '*' stays in a
    component), each matching a path or any of its parents."""
    out = []
    for p in patterns or ():
        neg = p.startswith("!")
        if neg:
            p = p[1:]
        p = posixpath.normpath(p).lstrip("/")
        rx = ""
        for c in p:
            rx += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
        out.append((neg, re.compile(os.fsencode("(?:%s)(?:/.*)?\\Z" % rx), re.S)))
    return out


def _excluded(rel, patterns):
    hit = False
    for neg, rx in patterns:
        if rx.match(rel):
            hit = not neg
    return hit


def _tree_chunks(root, include, whiteout_format, exclude, engine_version):
    appender = _TarAppender(whiteout_format, engine_version)
    patterns = _compile_patterns(exclude)
    if include is None:
        include = [b"."]
    seen = set()
    for inc in include:
        inc = posixpath.normpath(os.fsencode(inc)).lstrip(b"/")
        if inc in (b"", b"."):
            inc = b""
        elif inc == b".." or inc.startswith(b"../"):
            raise GraphDriverError("include path %r is outside %s" % (inc, os.fsdecode(root)))
        names = []
        if inc:
            names.append(inc)
            try:
                if stat.S_ISDIR(os.lstat(root + b"/" + inc).st_mode):
                    names = None
            except FileNotFoundError:
                continue
        if names is None:
            names = [inc]
            names.extend(_walk(root, inc))
        elif not inc:
            names = _walk(root, b"")
        for rel in names:
            if rel in seen or not rel:
                continue
            if patterns and _excluded(rel, patterns):
                continue
            seen.add(rel)
            yield from appender.entry(root + b"/" + rel, rel)
    yield END_OF_ARCHIVE


def tar_tree(root, include=None, whiteout_format=AUFS, on_close=None, exclude=None,
             engine_version=None):
    """Docker's TarWithOptions: a readable stream of the tree at ``root``.

    ``include``: paths relative to root to archive (each walked in Docker's
    order), default the whole tree (the root itself is not an entry).
    ``whiteout_format=OVERLAY`` converts on-disk overlay whiteouts and opaque
    directories to the wire form. ``exclude``: Docker exclude patterns
    (aufs passes ``['.wh..wh.*', '!.wh..wh..opq']``). ``engine_version``:
    whose header rules (module doc): 20.10's type bits and owner names
    looked up on this host, or, by default, the newest engine's: neither.
    """
    root = os.fsencode(os.path.abspath(root))
    if not os.path.isdir(root):
        raise GraphDriverError("cannot archive %s: not a directory" % os.fsdecode(root))
    return ChunkStream(_tree_chunks(root, include, whiteout_format, exclude, engine_version),
                       on_close)


def _changes_chunks(root, changes, engine_version):
    appender = _TarAppender(None, engine_version)
    items = sorted(changes, key=lambda c: os.fsencode(c.path))   # Go sorts by path
    for change in items:
        p = os.fsencode(change.path)
        if change.kind == "D":
            d, sep, base = p.rpartition(b"/")
            name = (d + b"/" + WHITEOUT_PREFIX_B + base).lstrip(b"/")
            # Go rounds a header of unset format to the nearest second.
            now = int(time.time() + 0.5)
            yield encode_header(name, 0, 0, 0, 0, now, REG)
        else:
            rel = p.lstrip(b"/")
            if not rel:
                continue
            path = root(change.path) if callable(root) else root + b"/" + rel
            if path is not None:    # None: not there, which Docker logs and skips
                yield from appender.entry(os.fsencode(path), rel)
    yield END_OF_ARCHIVE


def export_changes(root, changes, on_close=None, engine_version=None):
    """Docker's ExportChanges: a readable tar stream of ``changes`` under ``root``.

    Deletions become empty ``.wh.<name>`` entries stamped now; the rest are
    written from ``root`` in path order, hard links kept. ``engine_version``
    as for :func:`tar_tree`. ``root`` may instead be a function of a change's
    path ('/etc/hosts') giving the file to write, None when there is none:
    a tree read from several directories (changes.Union.path).
    """
    if not callable(root):
        root = os.fsencode(os.path.abspath(root))
    return ChunkStream(_changes_chunks(root, list(changes), engine_version), on_close)
