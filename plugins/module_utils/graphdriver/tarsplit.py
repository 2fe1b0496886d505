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
import gzip
import json
import os
import posixpath

from .crc64 import CRC64
from .errors import ArchiveError

FILE_TYPE = 1
SEGMENT_TYPE = 2

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_PADDING_CHUNK = 1024 * 1024       # tar-split reads trailing data this way
_CRC_FLUSH = 1024 * 1024           # feed the CRC in big pieces: it's per call
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


def _go_json_string(s):
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
    return base64.b64encode(data).decode("ascii")


def _clean(name):
    """Go's filepath.Clean, used by tar-split to spot duplicate paths."""
    if not name:
        return "."
    cleaned = posixpath.normpath(name)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


class Packer(object):
    """tar-split's jsonPacker: numbers entries, refuses duplicate file paths."""

    def __init__(self, fileobj):
        self._f = fileobj
        self._pos = 0
        self._seen = set()

    def add_segment(self, payload):
        self._f.write(('{"type":2,"payload":"%s","position":%d}\n'
                       % (_b64(payload), self._pos)).encode("ascii"))
        self._pos += 1

    def add_file(self, name, size, checksum):
        """``name`` bytes as in the tar; ``checksum`` 8 bytes or None."""
        key = _clean(os.fsdecode(name))
        if key in self._seen:
            # tar-split's ErrDuplicatePath: Docker refuses such layers too.
            raise ArchiveError("duplicates of file paths not supported",
                               entry=os.fsdecode(name))
        self._seen.add(key)
        try:
            text = name.decode("utf-8")
            field = '"name":' + _go_json_string(text) + ","
        except UnicodeDecodeError:
            field = '"name_raw":"%s",' % _b64(name)
        if not name:
            field = ""
        parts = ['{"type":1,', field]
        if size:
            parts.append('"size":%d,' % size)
        parts.append('"payload":%s,' % ('"%s"' % _b64(checksum) if checksum is not None
                                        else "null"))
        parts.append('"position":%d}\n' % self._pos)
        self._f.write("".join(parts).encode("utf-8"))
        self._pos += 1


# --- tar headers: only what tar-split needs --------------------------------

def _parse_string(field):
    return field.split(b"\0", 1)[0]


def _parse_numeric(field, what, entry):
    if field and field[0] & 0x80:
        # GNU base-256: big-endian two's complement after the marker bit
        value = int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
        if field[0] & 0x40:
            value -= 1 << (8 * len(field) - 1)
        return value
    text = field.replace(b"\0", b" ").strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ArchiveError("invalid %s field %r in tar header" % (what, field), entry=entry)


def _check_header(block):
    name = os.fsdecode(_parse_string(block[0:100]))
    want = _parse_numeric(block[148:156], "checksum", name)
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if want == unsigned:
        return
    # Go accepts the historic signed-char sum too
    high = sum(1 for b in block[:148] + block[156:] if b > 127)
    if want != unsigned - 256 * high:
        raise ArchiveError("invalid tar header checksum", entry=name)


def _header_name(block):
    magic = block[257:265]
    name = _parse_string(block[0:100])
    if magic[:6] == b"ustar\0":
        prefix = _parse_string(block[345:500])
        if prefix:
            name = prefix + b"/" + name
    return name


def _parse_pax(data, entry):
    records = {}
    while data:
        sp = data.find(b" ")
        try:
            length = int(data[:sp])
        except ValueError:
            raise ArchiveError("invalid PAX record", entry=entry)
        if sp < 0 or length <= sp or length > len(data) or data[length - 1:length] != b"\n":
            raise ArchiveError("invalid PAX record", entry=entry)
        record = data[sp + 1:length - 1]
        data = data[length:]
        key, eq, value = record.partition(b"=")
        if not eq:
            raise ArchiveError("invalid PAX record", entry=entry)
        records[key] = value
    return records


def _padding(size):
    return -size % BLOCK


class Disassembler(object):
    """Feed a tar stream in any pieces; writes its tar-split entries to ``packer``.

    Nothing is buffered beyond one header and one extension record: the
    payload bytes only go through the CRC.
    """

    _HEADER, _META, _DATA, _PAD, _SECOND_ZERO, _TRAILER, _DONE = range(7)

    def __init__(self, packer, engine_version=None):
        self.packer = packer
        self._eof_segment = writes_eof_segment(engine_version)
        self._state = self._HEADER
        self._raw = bytearray()          # bytes of the coming segment
        self._need = BLOCK               # bytes wanted in the current state
        self._buf = bytearray()          # header / extension record being read
        self._pax = {}
        self._long_name = None
        self._meta_type = None
        self._entry = None               # (name, size) of the file being read
        self._crc = None
        self._crc_pending = []
        self._crc_pending_len = 0
        self.entries = 0

    # The state machine consumes data in slices; each state says how many
    # bytes it needs before acting.
    def feed(self, data):
        mv = memoryview(data)
        while mv:
            state = self._state
            if state == self._DATA:
                take = min(self._need, len(mv))
                self._crc_add(mv[:take])
                self._need -= take
                mv = mv[take:]
                if not self._need:
                    self._end_file()
            elif state == self._TRAILER:
                take = min(_PADDING_CHUNK - len(self._raw), len(mv))
                self._raw += mv[:take]
                mv = mv[take:]
                if len(self._raw) >= _PADDING_CHUNK:
                    self._flush_segment()
            elif state == self._DONE:
                raise ArchiveError("data after the end of the tar stream")
            else:
                take = min(self._need, len(mv))
                self._buf += mv[:take]
                self._need -= take
                mv = mv[take:]
                if not self._need:
                    self._step()

    def close(self):
        """The stream ended: emit the last segments; error if cut mid-record."""
        if self._state == self._DONE:
            return
        if self._state == self._DATA or self._buf:
            name = self._entry[0] if self._entry else None
            raise ArchiveError("unexpected end of tar stream",
                               entry=os.fsdecode(name) if name is not None else None)
        if self._state in (self._META, self._PAD):
            raise ArchiveError("unexpected end of tar stream")
        # at a header boundary (with or without end-of-archive blocks): EOF
        if self._state != self._TRAILER:
            self._raw += self._buf
            self._flush_segment()
        # tar-split writes one segment per Read of what follows the archive;
        # v0.11.1 (Docker 20.10) the last, empty read at EOF too
        self._flush_segment()
        if self._eof_segment:
            self.packer.add_segment(b"")
        self._state = self._DONE

    # -- states --
    def _step(self):
        state = self._state
        block = bytes(self._buf)
        self._buf = bytearray()
        self._raw += block
        if state == self._HEADER:
            self._header(block)
        elif state == self._SECOND_ZERO:
            if block != _ZERO_BLOCK:
                raise ArchiveError("invalid tar header: zero block followed by data")
            self._flush_segment()
            self._state = self._TRAILER
        elif state == self._META:
            self._meta(block)
        elif state == self._PAD:
            self._state = self._HEADER
            self._need = BLOCK

    def _header(self, block):
        if block == _ZERO_BLOCK:
            self._state = self._SECOND_ZERO
            self._need = BLOCK
            return
        _check_header(block)
        typeflag = block[156:157]
        name = _header_name(block)
        size = _parse_numeric(block[124:136], "size", os.fsdecode(name))
        if size < 0:
            raise ArchiveError("negative size in tar header", entry=os.fsdecode(name))
        if typeflag in (b"x", b"g", b"L", b"K"):
            self._meta_type = typeflag
            self._meta_size = size
            self._meta_name = name
            self._state = self._META
            # a global header is returned as an entry before its padding is read
            self._need = size + (_padding(size) if typeflag != b"g" else 0)
            if not self._need:
                self._meta(b"")
            return
        if typeflag == b"S" or any(k.startswith(b"GNU.sparse.") for k in self._pax):
            raise ArchiveError("sparse tar entries are not supported", entry=os.fsdecode(name))
        # Go merges PAX records first, then lets a GNU long name win
        if self._long_name is not None:
            name = self._long_name
        elif b"path" in self._pax:
            name = self._pax[b"path"]
        if b"size" in self._pax:
            try:
                size = int(self._pax[b"size"])
            except ValueError:
                raise ArchiveError("invalid PAX size", entry=os.fsdecode(name))
        self._pax = {}
        self._long_name = None
        # Go's reader: links, devices, dirs and fifos are header-only (even
        # with a size field); a legacy '\0' entry named "x/" is a directory.
        has_data = typeflag not in (b"1", b"2", b"3", b"4", b"5", b"6") and not (
            typeflag == b"\0" and name.endswith(b"/"))
        self._begin_file(name, size, size if has_data else 0)

    def _meta(self, record):
        data = bytes(record[:self._meta_size])
        kind = self._meta_type
        if kind in (b"x", b"g"):
            records = _parse_pax(data, None)
            if kind == b"g":
                # Go returns a global header as an entry of its own (size 0).
                self._pax = {}
                self._begin_file(records.get(b"path", self._meta_name), 0, 0)
                if _padding(self._meta_size):
                    self._state = self._PAD
                    self._need = _padding(self._meta_size)
                return
            self._pax.update(records)
        elif kind == b"L":
            self._long_name = _parse_string(data)
        elif kind == b"K":
            pass  # the link name is not part of tar-split's entry
        self._state = self._HEADER
        self._need = BLOCK

    def _begin_file(self, name, size, data_size):
        self._flush_segment()
        self._entry = (name, size)
        self._data_size = data_size
        if data_size:
            self._crc = CRC64()
            self._state = self._DATA
            self._need = data_size
        else:
            self._crc = CRC64() if size else None
            self._end_file()

    def _crc_add(self, piece):
        self._crc_pending.append(bytes(piece))
        self._crc_pending_len += len(piece)
        if self._crc_pending_len >= _CRC_FLUSH:
            self._crc.update(b"".join(self._crc_pending))
            self._crc_pending = []
            self._crc_pending_len = 0

    def _end_file(self):
        if self._crc_pending:
            self._crc.update(b"".join(self._crc_pending))
            self._crc_pending = []
            self._crc_pending_len = 0
        name, size = self._entry
        # tar-split: a checksum only for entries with a size (hdr.Size > 0)
        checksum = self._crc.digest() if size > 0 else None
        self.packer.add_file(name, size, checksum)
        self.entries += 1
        self._crc = None
        pad = _padding(self._data_size)
        if pad:
            self._state = self._PAD
            self._need = pad
        else:
            self._state = self._HEADER
            self._need = BLOCK

    def _flush_segment(self):
        if self._raw:
            self.packer.add_segment(bytes(self._raw))
            self._raw = bytearray()


# --- writing and reading tar-split.json.gz ---------------------------------

def open_writer(path):
    """A gzip writer for tar-split.json.gz, header as Go's gzip writes it."""
    raw = open(path, "wb")
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0)
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


def disassemble(stream, packer_out, chunk=1024 * 1024, engine_version=None):
    """Read a whole tar from ``stream``; write its tar-split JSON to ``packer_out``,
    as Docker Engine ``engine_version`` writes it (the newest when not given).

    Returns the Disassembler (``entries`` counts the file entries).
    """
    d = Disassembler(Packer(packer_out), engine_version)
    while True:
        data = stream.read(chunk)
        if not data:
            break
        d.feed(data)
    d.close()
    return d
