"""Just enough HTTP/2 (RFC 9113) and HPACK (RFC 7541) for gRPC calls to a
local containerd over its unix socket, one call at a time.

containerd speaks gRPC only, and the library is standard-library Python, so
the client side is here: frames, flow control in the simplest form (we
announce windows large enough that the server never waits on us; what we
send is a few kilobytes per call), and header decoding with the static
table, the dynamic table and Huffman strings, since that is what Go's
server sends. We encode our own headers as literals without indexing, which
every decoder must accept.
"""

import socket
import struct

from .errors import GraphDriverError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 0x4, 0x5
MAX_WINDOW = 2 ** 31 - 1
DEFAULT_FRAME = 16384


class HTTP2Error(GraphDriverError):
    pass


class Connection(object):
    """One HTTP/2 connection over a unix socket; ``request`` runs one stream."""

    def __init__(self, path, timeout=60):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise HTTP2Error("cannot connect to %s: %s" % (path, e))
        self._buf = b""
        self._decoder = Decoder()
        self._next_stream = 1
        self._peer_frame = DEFAULT_FRAME
        # The server may send as much as it likes: per stream and in all.
        self.sock.sendall(PREFACE + _frame(SETTINGS, 0, 0, struct.pack(
            ">HI", SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW)) +
            _frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_WINDOW - 65535)))

    def close(self):
        self.sock.close()

    def request(self, headers, body):
        """Send one request (headers, then ``body`` and END_STREAM); return
        (headers, data, trailers) of the response."""
        stream = self._next_stream
        self._next_stream += 2
        self.sock.sendall(_frame(HEADERS, END_HEADERS, stream, encode_headers(headers)))
        if len(body) > 65535:
            raise HTTP2Error("request body of %d bytes is more than the initial window" % len(body))
        frames = [body[i:i + self._peer_frame] for i in range(0, len(body), self._peer_frame)] or [b""]
        for n, chunk in enumerate(frames):
            self.sock.sendall(_frame(DATA, END_STREAM if n == len(frames) - 1 else 0, stream, chunk))
        blocks, data, pending, ended = [], [], None, False
        while not ended or pending is not None:
            ftype, flags, sid, payload = self._read_frame()
            if ftype == SETTINGS:
                if not flags & ACK:
                    self._settings(payload)
                    self.sock.sendall(_frame(SETTINGS, ACK, 0, b""))
            elif ftype == PING:
                if not flags & ACK:
                    self.sock.sendall(_frame(PING, ACK, 0, payload))
            elif ftype == GOAWAY:
                last, code = struct.unpack(">II", payload[:8])
                if (last & MAX_WINDOW) < stream:
                    raise HTTP2Error("server went away (code %d): %s"
                                     % (code, payload[8:].decode(errors="replace")))
            elif sid != stream:
                continue    # WINDOW_UPDATE and the like: our sends are small
            elif ftype == RST_STREAM:
                raise HTTP2Error("stream reset by the server (code %d)"
                                 % struct.unpack(">I", payload)[0])
            elif ftype in (HEADERS, CONTINUATION):
                if ftype == HEADERS:
                    pending = [_strip_headers_frame(flags, payload)]
                    ended = ended or bool(flags & END_STREAM)
                else:
                    pending.append(payload)
                if flags & END_HEADERS:
                    blocks.append(self._decoder.decode(b"".join(pending)))
                    pending = None
            elif ftype == DATA:
                data.append(_strip_padding(flags, payload))
                ended = ended or bool(flags & END_STREAM)
        headers = dict(blocks[0]) if blocks else {}
        trailers = dict(blocks[1]) if len(blocks) > 1 else {}
        return headers, b"".join(data), trailers

    def _settings(self, payload):
        for i in range(0, len(payload) - 5, 6):
            key, value = struct.unpack(">HI", payload[i:i + 6])
            if key == SETTINGS_MAX_FRAME_SIZE:
                self._peer_frame = value

    def _read_frame(self):
        head = self._read(9)
        length = int.from_bytes(head[:3], "big")
        ftype, flags = head[3], head[4]
        sid = struct.unpack(">I", head[5:9])[0] & MAX_WINDOW
        return ftype, flags, sid, self._read(length)

    def _read(self, n):
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise HTTP2Error("connection closed by the server")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


def _frame(ftype, flags, stream, payload):
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + struct.pack(">I", stream) + payload


def _strip_padding(flags, payload):
    if flags & PADDED:
        pad = payload[0]
        return payload[1:len(payload) - pad]
    return payload


def _strip_headers_frame(flags, payload):
    payload = _strip_padding(flags, payload)
    if flags & PRIORITY_FLAG:
        payload = payload[5:]
    return payload


# -- HPACK --

def _int(value, prefix_bits, first):
    """Integer with an N-bit prefix; ``first`` holds the bits above it."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(s):
    raw = s.encode() if isinstance(s, str) else s
    return _int(len(raw), 7, 0) + raw


def encode_headers(headers):
    """Every field a literal without indexing, with a literal name."""
    return b"".join(b"\x00" + _string(name) + _string(value) for name, value in headers)


STATIC_TABLE = [
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
    (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"), (":status", "200"),
    (":status", "204"), (":status", "206"), (":status", "304"), (":status", "400"),
    (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""),
    ("accept", ""), ("access-control-allow-origin", ""), ("age", ""), ("allow", ""),
    ("authorization", ""), ("cache-control", ""), ("content-disposition", ""),
    ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
    ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""),
    ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""),
    ("max-forwards", ""), ("proxy-authenticate", ""), ("proxy-authorization", ""),
    ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""), ("server", ""),
    ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
    ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
]

# RFC 7541 Appendix B is a canonical Huffman code: each symbol's code length
# (bytes 0..255) is enough to rebuild every code.
_HUFFMAN_LENGTHS = (
    "13,23,28,28,28,28,28,28,28,24,30,28,28,30,28,28,28,28,28,28,28,28,30,28,28,28,28,28,28,"
    "28,28,28,6,10,10,12,13,6,8,11,10,10,8,11,8,6,6,6,5,5,5,6,6,6,6,6,6,6,7,8,15,6,12,10,13,"
    "6,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,8,7,8,13,19,13,14,6,15,5,6,5,6,5,6,6,6,5,"
    "7,7,6,6,6,5,6,7,6,5,5,6,7,7,7,7,7,15,11,14,13,28,20,22,20,20,22,22,22,23,22,23,23,23,23,"
    "23,24,23,24,24,22,23,24,23,23,23,23,21,22,23,22,23,23,24,22,21,20,22,22,23,23,21,23,22,"
    "22,24,21,22,23,23,21,21,22,21,23,22,23,23,20,22,22,22,23,22,22,23,26,26,20,19,22,23,22,"
    "25,26,26,26,27,27,26,24,25,19,21,26,27,27,26,27,24,21,21,26,26,28,27,27,27,20,24,20,21,"
    "22,21,21,23,22,22,25,25,24,24,26,23,26,27,26,26,27,27,27,27,27,28,27,27,27,27,27,26")


def _huffman_codes():
    lengths = [int(n) for n in _HUFFMAN_LENGTHS.split(",")]
    codes, code, prev = {}, 0, None
    for sym in sorted(range(256), key=lambda s: (lengths[s], s)):
        if prev is not None:
            code = (code + 1) << (lengths[sym] - prev)
        prev = lengths[sym]
        codes[(lengths[sym], code)] = sym
    return codes


_HUFFMAN = None


def huffman_decode(data):
    global _HUFFMAN
    if _HUFFMAN is None:
        _HUFFMAN = _huffman_codes()
    out = bytearray()
    code = length = 0
    for byte in data:
        for shift in range(7, -1, -1):
            code = (code << 1) | ((byte >> shift) & 1)
            length += 1
            sym = _HUFFMAN.get((length, code))
            if sym is not None:
                out.append(sym)
                code = length = 0
    # what is left is padding: at most 7 bits, all ones
    if length > 7 or code != (1 << length) - 1:
        raise HTTP2Error("bad Huffman padding in a header")
    return bytes(out)


class Decoder(object):
    """HPACK decoder with its dynamic table (size 4096, as we announce)."""

    def __init__(self, max_size=4096):
        self.table = []     # newest first
        self.max_size = max_size

    def _entry(self, index):
        if index == 0:
            raise HTTP2Error("header index 0")
        if index <= len(STATIC_TABLE):
            return STATIC_TABLE[index - 1]
        try:
            return self.table[index - len(STATIC_TABLE) - 1]
        except IndexError:
            raise HTTP2Error("header index %d is beyond the table" % index)

    def _add(self, name, value):
        self.table.insert(0, (name, value))
        self._evict()

    def _evict(self):
        while self.table and sum(32 + len(n) + len(v) for n, v in self.table) > self.max_size:
            self.table.pop()

    def decode(self, block):
        fields, pos = [], 0
        while pos < len(block):
            b = block[pos]
            if b & 0x80:                       # indexed field
                index, pos = _read_int(block, pos, 7)
                fields.append(self._entry(index))
            elif b & 0x40:                     # literal, incremental indexing
                field, pos = self._literal(block, pos, 6)
                self._add(*field)
                fields.append(field)
            elif b & 0x20:                     # dynamic table size update
                self.max_size, pos = _read_int(block, pos, 5)
                self._evict()
            else:                              # literal, not indexed / never indexed
                field, pos = self._literal(block, pos, 4)
                fields.append(field)
        return fields

    def _literal(self, block, pos, prefix):
        index, pos = _read_int(block, pos, prefix)
        if index:
            name = self._entry(index)[0]
        else:
            name, pos = _read_string(block, pos)
        value, pos = _read_string(block, pos)
        return (name, value), pos


def _read_int(block, pos, prefix_bits):
    limit = (1 << prefix_bits) - 1
    value = block[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        b = block[pos]
        pos += 1
        value += (b & 127) << shift
        shift += 7
        if not b & 128:
            return value, pos


def _read_string(block, pos):
    huffman = block[pos] & 0x80
    length, pos = _read_int(block, pos, 7)
    raw = block[pos:pos + length]
    if len(raw) != length:
        raise HTTP2Error("header string runs past the block")
    if huffman:
        raw = huffman_decode(raw)
    return raw.decode("utf-8", "replace"), pos + length
