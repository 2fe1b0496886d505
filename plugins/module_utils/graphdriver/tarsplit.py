"""Docker's ``tar-split.json.gz``: the exact bytes of a layer tar, minus the payloads.

Docker keeps each layer's tar headers and padding next to the layer, so that
the tar it hands out later (``docker save``, ``docker push``) is byte for
byte the one it received, and the DiffID still matches. The format is
vbatts/tar-split's ``tar/storage`` JSON packer, one JSON object a line::

    {"type":2,"payload":"<base64 raw bytes>","position":0}
    {"type":1,"name":"etc/hostname","size":9,"payload":"<base64 crc64>","position":1}

Type 2 (segment) carries raw bytes: tar headers, PAX/GNU extension records
and block padding. Type 1 (file) names an entry; its payload is the 8-byte
big-endian CRC-64/ISO of the file data (``null`` when the entry has no data).
A name that is not valid UTF-8 goes in ``name_raw`` (base64) instead.

Segment boundaries follow tar-split's ``asm.NewInputTarStream`` with its raw
accounting reader: every byte read between two payloads (padding of the
previous file, extension headers and their data, the entry header) is one
segment, written just before the entry; the end-of-archive blocks are one
segment, then whatever follows them in pieces of at most 1 MiB. Then the
engines differ: tar-split v0.11.1 (vendored by Docker 20.10) records every
Read of the trailer, including the final empty one at EOF, so its files end
with ``{"type":2,"payload":"","position":N}``; v0.11.4 dropped empty
segments ("don't add a padding entry if it has no bytes"), and Engine 25+
(26.1 here) writes none. Both reassemble to the same tar; ``engine_version``
picks whose bytes we write (the newest engine's when not given).
"""

import base64
import binascii
import gzip
import json
import os
import posixpath
import re

from . import tarstream
from .crc64 import CRC64
from .errors import ArchiveError
from .tarstream import XGLOBAL

FILE_TYPE = 1
SEGMENT_TYPE = 2

_PADDING_CHUNK = 1024 * 1024       # tar-split reads trailing data this way
_CRC_FLUSH = 1024 * 1024           # feed the CRC in big pieces: it's per call
_WRITE_BATCH = 256 * 1024          # JSON lines handed to gzip together
# The first engine whose tar-split (v0.11.4+) writes no empty EOF segment.
_NO_EOF_SEGMENT_SINCE = (25, 0)


def writes_eof_segment(engine_version=None):
    """Does this engine's tar-split end every file with an empty segment?
    (Engine 20.10 does, 25+ does not; None: the newest engine.)"""
    from .priority import parse_version
    v = parse_version(engine_version)
    return v is not None and v < _NO_EOF_SEGMENT_SINCE


class TarSplitError(ArchiveError):
    """A tar-split record and the data it describes disagree; names the file."""


# --- JSON exactly as Go's encoding/json writes it --------------------------

_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               # escapeHTML is on by default in json.Encoder
               "<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
               "\u2028": "\\u2028", "\u2029": "\\u2029"}


_PLAIN_JSON = re.compile('[^\x00-\x1f"\\\\<>&\u2028\u2029]*\\Z')


def _go_json_string(s):
    if _PLAIN_JSON.match(s):
        return '"' + s + '"'    # the usual name: nothing to escape
    out = []
    for ch in s:
        esc = _GO_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch < " ":
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _b64(data):
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _clean(name):
    """Go's filepath.Clean, used by tar-split to spot duplicate paths."""
    if not name:
        return "."
    cleaned = posixpath.normpath(name)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


class Packer(object):
    """tar-split's jsonPacker: numbers entries, refuses duplicate file paths.

    Lines are written to ``fileobj`` in batches: :meth:`flush` at the end.
    """

    def __init__(self, fileobj):
        self._f = fileobj
        self._pos = 0
        self._seen = set()
        self._lines = []
        self._pending = 0

    def _add(self, line):
        self._lines.append(line)
        self._pending += len(line)
        if self._pending >= _WRITE_BATCH:
            self.flush()

    def flush(self):
        if self._lines:
            self._f.write("".join(self._lines).encode("utf-8"))
            self._lines = []
            self._pending = 0

    def add_segment(self, payload):
        self._add('{"type":2,"payload":"%s","position":%d}\n' % (_b64(payload), self._pos))
        self._pos += 1

    def add_file(self, name, size, checksum):
        """``name`` bytes as in the tar; ``checksum`` 8 bytes or None."""
        try:
            text = name.decode("utf-8")
            field = '"name":%s,' % _go_json_string(text) if name else ""
        except UnicodeDecodeError:
            text = os.fsdecode(name)    # lone surrogates: no valid name's key
            field = '"name_raw":"%s",' % _b64(name)
        key = _clean(text)
        if key in self._seen:
            # tar-split's ErrDuplicatePath: Docker refuses such layers too.
            raise ArchiveError("duplicates of file paths not supported",
                               entry=os.fsdecode(name))
        self._seen.add(key)
        payload = "null" if checksum is None else '"%s"' % _b64(checksum)
        if size:
            self._add('{"type":1,%s"size":%d,"payload":%s,"position":%d}\n'
                      % (field, size, payload, self._pos))
        else:
            self._add('{"type":1,%s"payload":%s,"position":%d}\n' % (field, payload, self._pos))
        self._pos += 1


# --- the disassembler: an observer of the TarReader's parse ------------------

class Disassembler(object):
    """tar-split's disassembly of a layer tar, fed by the TarReader parsing it.

    An observer in the sense of tarstream's module doc: the raw header and
    padding bytes become segments, each entry a file record with the CRC-64
    of the payload bytes that pass. Nothing is buffered beyond one segment.
    """

    def __init__(self, packer, engine_version=None):
        self.packer = packer
        self._eof_segment = writes_eof_segment(engine_version)
        self._raw = []              # pieces of the coming segment
        self._file = None           # (name, size) whose payload is passing
        self._global = None         # ... or a global header's data, from _raw[this]
        self._left = 0              # payload bytes still to come
        self._crc = None
        self._pending = []          # small pieces, fed to the CRC together
        self._pending_len = 0
        self._trail = None          # after the end blocks: the trailing data
        self.entries = 0
        self.finished = False

    def member(self, raw, name, size, data_size, typeflag):
        self._raw.append(raw)
        if typeflag == XGLOBAL:
            # Go reads a global header's data with the header and returns it
            # as an entry of size 0: the data is in the segment, the padding
            # in the next one.
            self._global = len(self._raw)
            self._file = (name, 0)
            self._left = data_size
            if not data_size:
                self._end_global()
            return
        self._flush_segment()
        self._file = (name, size)
        self._left = data_size
        self._crc = CRC64()
        if not data_size:
            self._end_file()

    def payload(self, view):
        n = len(view)
        self._left -= n
        if self._global is not None:
            self._raw.append(bytes(view))
            if not self._left:
                self._end_global()
            return
        if not self._pending and (n >= _CRC_FLUSH or not self._left):
            self._crc.update(view)      # a big piece, or a whole payload: no copy
        else:
            # the CRC costs per call: gather small pieces first
            self._pending.append(bytes(view))
            self._pending_len += n
            if self._pending_len >= _CRC_FLUSH:
                self._crc.update(b"".join(self._pending))
                self._pending = []
                self._pending_len = 0
        if not self._left:
            self._end_file()

    def padding(self, data):
        self._raw.append(data)

    def end(self, data):
        self._raw.append(data)
        self._flush_segment()
        self._trail = bytearray()

    def trailing(self, view):
        # tar-split reads what follows the archive 1 MiB at a time
        trail = self._trail
        trail += view
        while len(trail) >= _PADDING_CHUNK:
            self.packer.add_segment(bytes(trail[:_PADDING_CHUNK]))
            del trail[:_PADDING_CHUNK]

    def close(self):
        """After the reader's end: the last segments."""
        if self.finished:
            return
        if self._trail is None:
            raise ArchiveError("tar-split: the tar stream was not read to its end")
        if self._trail:
            self.packer.add_segment(bytes(self._trail))
        if self._eof_segment:
            # v0.11.1 (Docker 20.10) records the last, empty read at EOF too
            self.packer.add_segment(b"")
        self.packer.flush()
        self.finished = True

    def _end_file(self):
        name, size = self._file
        if self._pending:
            self._crc.update(b"".join(self._pending))
            self._pending = []
            self._pending_len = 0
        # tar-split: a checksum only for entries with a size (hdr.Size > 0)
        self.packer.add_file(name, size, self._crc.digest() if size > 0 else None)
        self.entries += 1
        self._file = None
        self._crc = None

    def _end_global(self):
        name = self._file[0]
        data = b"".join(self._raw[self._global:])
        try:
            name = tarstream.parse_pax_records(data).get("path", name)
        except ValueError as e:
            raise ArchiveError("tar: bad PAX global header: %s" % e, entry=os.fsdecode(name))
        self._flush_segment()
        self.packer.add_file(name, 0, None)
        self.entries += 1
        self._global = None
        self._file = None

    def _flush_segment(self):
        raw = self._raw
        if raw:
            data = raw[0] if len(raw) == 1 else b"".join(raw)
            self._raw = []
            if data:
                self.packer.add_segment(data)


# --- writing and reading tar-split.json.gz ---------------------------------

def open_writer(path):
    """A gzip writer for tar-split.json.gz, header as Go's gzip writes it.

    Fastest compression: the deflate bytes are never Go's anyway (only the
    JSON inside is compared), and level 6 costs several times more here.
    """
    raw = open(path, "wb")
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0)
    return _GzipPair(gz, raw)


class _GzipPair(object):
    def __init__(self, gz, raw):
        self.gz, self.raw = gz, raw

    def write(self, data):
        return self.gz.write(data)

    def close(self, sync=True):
        self.gz.close()
        self.raw.flush()
        if sync:
            os.fsync(self.raw.fileno())
        self.raw.close()


class Entry(object):
    __slots__ = ("type", "name", "size", "payload", "position")

    def __init__(self, type, name, size, payload, position):
        self.type, self.name, self.size = type, name, size
        self.payload, self.position = payload, position

    def __repr__(self):
        return "Entry(type=%d, name=%r, size=%d, position=%d)" % (
            self.type, self.name, self.size, self.position)


def iter_entries(fileobj):
    """Entries of an uncompressed tar-split JSON stream (binary file object)."""
    decoder = json.JSONDecoder()
    seen = set()
    for lineno, line in enumerate(fileobj, 1):
        line = line.strip()
        if not line:
            continue
        try:
            obj, end = decoder.raw_decode(line.decode("utf-8"))
            etype = int(obj["type"])
            payload = obj.get("payload")
            payload = base64.b64decode(payload) if payload else b""
            if obj.get("name_raw"):
                name = base64.b64decode(obj["name_raw"])
            else:
                name = obj.get("name", "").encode("utf-8")
            size = int(obj.get("size", 0) or 0)
            position = int(obj.get("position", 0))
        except (ValueError, KeyError, TypeError) as e:
            raise TarSplitError("malformed tar-split record on line %d: %s" % (lineno, e))
        if etype == FILE_TYPE:
            key = _clean(os.fsdecode(name))
            if key in seen:
                raise TarSplitError("duplicates of file paths not supported",
                                    entry=os.fsdecode(name))
            seen.add(key)
        elif etype != SEGMENT_TYPE:
            raise TarSplitError("unknown tar-split entry type %d on line %d" % (etype, lineno))
        yield Entry(etype, name, size, payload, position)


def read_entries(path):
    """Entries of a tar-split.json.gz file."""
    with gzip.open(path, "rb") as f:
        yield from iter_entries(f)


def assemble(entries, root, out, chunk=1024 * 1024):
    """Write the tar bytes described by ``entries`` to ``out``.

    File payloads come from ``root`` (the layer's files, joined like Go's
    filepath.Join). Each payload's CRC-64 and size is checked, and a
    mismatch raises TarSplitError naming the file, as tar-split does.
    Returns the number of bytes written.
    """
    total = 0
    for piece in chunks(entries, root, chunk=chunk):
        out.write(piece)
        total += len(piece)
    return total


def chunks(entries, root, check_crc=True, chunk=1024 * 1024):
    """The tar bytes described by ``entries``, as a generator of pieces.

    Sizes are always checked. ``check_crc=False`` skips the per-file CRC-64
    (Python's slowest step here) for a caller that hashes the whole stream
    against its DiffID anyway: a changed file fails that check too.
    """
    for e in entries:
        if e.type == SEGMENT_TYPE:
            if e.payload:
                yield e.payload
            continue
        if not e.size:
            continue
        name = os.fsdecode(e.name)
        path = os.path.join(root, posixpath.normpath("/" + name).lstrip("/"))
        crc = CRC64() if check_crc else None
        remaining = e.size
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as err:
            raise TarSplitError("cannot read layer file %s: %s" % (path, err), entry=name)
        try:
            while remaining:
                # A byte more than needed: a longer file shows without
                # another read (a regular file reads short only at its end).
                want = min(chunk, remaining + 1)
                data = os.read(fd, want)
                if not data:
                    raise TarSplitError(
                        "file integrity checksum failed: %s is %d bytes shorter than"
                        " the layer says" % (path, remaining), entry=name)
                if len(data) > remaining or (len(data) == remaining == want and os.read(fd, 1)):
                    raise TarSplitError(
                        "file integrity checksum failed: %s is longer than the %d bytes"
                        " the layer says" % (path, e.size), entry=name)
                if crc is not None:
                    crc.update(data)
                remaining -= len(data)
                yield data
        except OSError as err:
            raise TarSplitError("cannot read layer file %s: %s" % (path, err), entry=name)
        finally:
            os.close(fd)
        if crc is not None and crc.digest() != e.payload:
            raise TarSplitError("file integrity checksum failed: %s" % path, entry=name)


def disassemble(stream, packer_out, engine_version=None):
    """Read a whole tar from ``stream``; write its tar-split JSON to ``packer_out``,
    as Docker Engine ``engine_version`` writes it (the newest when not given).

    Returns the Disassembler (``entries`` counts the file entries).
    """
    d = Disassembler(Packer(packer_out), engine_version)
    for _entry in tarstream.TarReader(stream, observer=d):
        pass    # each payload is skipped: read through, past the observer
    d.close()
    return d
