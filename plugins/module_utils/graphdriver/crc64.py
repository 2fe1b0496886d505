"""CRC-64/ISO exactly as Go's ``hash/crc64`` with ``crc64.ISO``.

tar-split (and so Docker's ``tar-split.json.gz``) stores this checksum of
every file payload, as the 8 big-endian bytes of Go's ``Sum64()``.

A byte-at-a-time table loop in Python runs at a few MB/s, too slow for
layers. Instead the message is read as one little-endian Python big integer
V (bit i is the i-th bit on the wire: the ISO CRC is reflected, a byte's
LSB goes first) and shortened by folding, every step a handful of shifts
and XORs done in C by the big-int code:

P(x) = x^64 + Q(x), Q(x) = x^4 + x^3 + x + 1, so x^64 = Q(x) (mod P), and
since squaring is linear over GF(2), x^(64s) = Q(x^s) for any power of two
s. The first k = 60s bits of the message (V's low bits, the highest powers
of x) times x^(64s) become those bits times Q(x^s), 64s bits long, placed
at the start of the message that remains: V' = (V >> k) ^ lo * Q(x^s), a
message 60s bits shorter with the same CRC register. Q(x) = (x + 1)(x^3 + 1),
so the carry-less product is two shift-XORs. Each step removes a quarter to
a half of what is left; the last few bytes go through the table.

No byte-reversing pass and no mask or shift over the whole number beyond
the fold itself: the bytes go to ``int.from_bytes`` as they are.
"""

import struct

_MASK64 = (1 << 64) - 1
_ISO_REFLECTED = 0xD800000000000000     # Go's crc64.ISO
# Below this many bits the table finishes (a fold needs 124s bits, s >= 2:
# 60s stays a multiple of 8, so the rest is whole bytes).
_FOLD_MIN_BITS = 248


def _make_table():
    table = []
    for i in range(256):
        crc = i
        for _bit in range(8):
            crc = (crc >> 1) ^ _ISO_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _make_table()
# The fold for 124 * 2**j <= nbits < 124 * 2**(j+1): (k, s, 3s, mask of k
# bits), made on first use.
_STEPS = [None] * 64


def _step(j):
    s = 1 << j
    step = _STEPS[j] = (60 * s, s, 3 * s, (1 << (60 * s)) - 1)
    return step


def _table_update(reg, data):
    """Go's byte loop on the reflected register ``reg``."""
    table = _TABLE
    for b in data:
        reg = table[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _update(reg, data):
    """The reflected register after ``data`` (bytes-like) went through it."""
    nbits = 8 * len(data)
    if nbits < _FOLD_MIN_BITS:
        return _table_update(reg, data)
    # The register meets the first 64 message bits (x^64 times the message
    # plus the register times x^n is the register XORed into its start).
    v = int.from_bytes(data, "little") ^ reg
    steps = _STEPS
    while nbits >= _FOLD_MIN_BITS:
        j = (nbits // 124).bit_length() - 1
        k, s, s3, mask = steps[j] or _step(j)
        g = v & mask
        g ^= g << s
        v = (v >> k) ^ g ^ (g << s3)
        nbits -= k
    return _table_update(0, v.to_bytes(nbits >> 3, "little"))


class CRC64(object):
    """Incremental CRC-64/ISO, hashlib style: update(), digest(), value."""

    __slots__ = ("_reg",)

    def __init__(self, data=b""):
        # Go starts from ^0 and XORs the result with ^0; the register is in
        # Go's reflected form.
        self._reg = _MASK64
        if data:
            self.update(data)

    def update(self, data):
        if data:
            self._reg = _update(self._reg, data)

    @property
    def value(self):
        """The checksum as Go's Sum64() returns it."""
        return self._reg ^ _MASK64

    def digest(self):
        """The 8 bytes of Go's Sum(nil): big-endian Sum64()."""
        return struct.pack(">Q", self._reg ^ _MASK64)

    def hexdigest(self):
        return self.digest().hex()


def checksum(data):
    """Sum64() of ``data``."""
    return CRC64(data).value
