"""Protocol Buffers wire format, without schemas: what containerd's API needs.

Messages are built as lists of (field number, value) and read back as
``Message`` (field number -> list of raw values); the callers in
containerd.py know which field is which, from containerd's .proto files.
"""

import struct

from .errors import GraphDriverError

VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5


class ProtobufError(GraphDriverError):
    pass


def _varint(n):
    if n < 0:
        n += 1 << 64       # int64: two's complement on ten bytes
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode(fields):
    """``fields``: (number, value) pairs; value str/bytes (length-delimited),
    bool or int (varint), dict (a map<string,string>), or a list of pairs (a
    nested message). None and empty values are left out, as proto3 does."""
    out = bytearray()
    for number, value in fields:
        if value is None or value in ("", b"", 0, {}):    # 0 is False as well
            continue
        if isinstance(value, dict):
            for k, v in sorted(value.items()):
                entry = encode([(1, k), (2, v)])
                out += _varint(number << 3 | BYTES) + _varint(len(entry)) + entry
            continue
        if isinstance(value, bool) or isinstance(value, int):
            out += _varint(number << 3 | VARINT) + _varint(int(value))
            continue
        if isinstance(value, list):
            value = encode(value)
        elif isinstance(value, str):
            value = value.encode()
        out += _varint(number << 3 | BYTES) + _varint(len(value)) + value
    return bytes(out)


class Message(object):
    """A decoded message: ``fields[number]`` is the list of its raw values."""

    def __init__(self, data):
        self.fields = {}
        pos, end = 0, len(data)
        while pos < end:
            key, pos = _read_varint(data, pos)
            number, wire = key >> 3, key & 7
            if wire == VARINT:
                value, pos = _read_varint(data, pos)
            elif wire == BYTES:
                length, pos = _read_varint(data, pos)
                value = data[pos:pos + length]
                if len(value) != length:
                    raise ProtobufError("field %d runs past the message" % number)
                pos += length
            elif wire == FIXED64:
                value, pos = struct.unpack("<Q", data[pos:pos + 8])[0], pos + 8
            elif wire == FIXED32:
                value, pos = struct.unpack("<I", data[pos:pos + 4])[0], pos + 4
            else:
                raise ProtobufError("wire type %d is not supported" % wire)
            self.fields.setdefault(number, []).append(value)

    def string(self, number):
        values = self.fields.get(number)
        return values[-1].decode() if values else ""

    def int(self, number):
        values = self.fields.get(number)
        if not values:
            return 0
        v = values[-1]
        return v - (1 << 64) if v >= 1 << 63 else v

    def message(self, number):
        values = self.fields.get(number)
        return Message(values[-1]) if values else None

    def messages(self, number):
        return [Message(v) for v in self.fields.get(number, [])]

    def strings(self, number):
        return [v.decode() for v in self.fields.get(number, [])]

    def map(self, number):
        return {e.string(1): e.string(2) for e in self.messages(number)}


def _read_varint(data, pos):
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
