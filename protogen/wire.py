"""Protobuf wire format by hand, for the big files: caffemodel blobs and ONNX initialisers are
written from (and read into) numpy memory directly instead of through protobuf objects."""
from __future__ import annotations

VARINT, I64, LEN, I32 = 0, 1, 2, 5


class WireError(Exception):
    """Bytes that are not a well-formed protobuf message (truncated or corrupt)."""


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field_no: int, wire: int) -> bytes:
    return varint((field_no << 3) | wire)


def len_field(field_no: int, payload_len: int) -> bytes:
    """The key and length prefix of a length-delimited field whose payload follows."""
    return key(field_no, LEN) + varint(payload_len)


def read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise WireError("varint runs past the end")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint too long")


def fields(buf, pos: int, end: int):
    """Yield (field number, wire type, value start, value end, field start) of a message."""
    while pos < end:
        start = pos
        k, pos = read_varint(buf, pos, end)
        no, wire = k >> 3, k & 7
        if no == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            _, npos = read_varint(buf, pos, end)
        elif wire == I64:
            npos = pos + 8
        elif wire == I32:
            npos = pos + 4
        elif wire == LEN:
            n, pos = read_varint(buf, pos, end)
            npos = pos + n
        else:
            raise WireError(f"unsupported wire type {wire}")
        if npos > end:
            raise WireError(f"a field claims {npos - pos} bytes but only {end - pos} remain")
        yield no, wire, pos, npos, start
        pos = npos
