"""Binary encoding of changelog records (format 2), and decoding of the JSON checkpoints of format 1.

A record is a small fixed header that the restore reads without decompressing (so that superseded and stale
records cost a CRC and a struct unpack), then a zlib-compressed body: a JSON document (orjson) whose numpy arrays
point into a block of raw bytes after it. Raw bytes instead of format 1's base64 strings, and compression on top,
is what brings a delta below the bytes of the input records it carries (docs/reliability.md, "State checkpoints").
No pickle: a changelog is shared data and must never execute code on load.

    b"\\x00sd2" | crc32 of the rest (u32) | kind (u8: S or D) | seq (u64) | chain id (u32) | delta index (u32) | body
    body = zlib(json length (u32) | JSON | array bytes)

The leading NUL makes a format-2 record impossible to mistake for a format-1 JSON checkpoint. How state values become
JSON plus raw arrays (and back) is packing.py.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import orjson

from ..errors import StreamdetError
from .packing import Packer, unpack

MAGIC = b"\x00sd2"
HEADER = struct.Struct("<IBQII")  # crc32, kind, seq, chain id, delta index
SNAPSHOT, DELTA = ord("S"), ord("D")
LEGACY_VERSION = 1
ZLIB_LEVEL = 6  # measured with tools/bench_pipeline.py: level 1 left deltas 15 % larger for a similar cost
# a whole window (9 KB before compression) took 142 us at level 6 and 49 us at level 1 for 3 % more bytes
SNAPSHOT_ZLIB_LEVEL = 1
# A delta this large (before compression) is compressed like a snapshot: at saturation an entity receives more than a
# window's worth of points between two commits, so its delta is a whole window, and level 6 cost it about three times
# the CPU of level 1 for 3 % fewer bytes (1,000 such entities per commit ran on the daemon's loop thread)
LARGE_BODY = 4096


class StateError(StreamdetError):
    """A checkpoint cannot be decoded or does not fit the running model."""


@dataclass(frozen=True)
class Head:
    """The fixed header of a format-2 record."""

    kind: int  # SNAPSHOT or DELTA
    seq: int  # the snapshot generation the record belongs to
    chain: int  # random id of that snapshot (two writers of one generation never mix)
    index: int  # 0 for a snapshot, 1.. for the deltas after it


def encode_record(head: Head, message: dict) -> bytes:
    packer = Packer()
    document = orjson.dumps(packer.pack(message))
    plain = b"".join([struct.pack("<I", len(document)), document, *packer.blobs])
    level = SNAPSHOT_ZLIB_LEVEL if head.kind == SNAPSHOT or len(plain) >= LARGE_BODY else ZLIB_LEVEL
    body = zlib.compress(plain, level)
    rest = struct.pack("<BQII", head.kind, head.seq, head.chain, head.index) + body
    return MAGIC + struct.pack("<I", zlib.crc32(rest)) + rest


def read_head(raw: bytes) -> Head:
    """The header of a format-2 record, after checking its CRC (StateError when corrupt or truncated)."""
    if len(raw) < len(MAGIC) + HEADER.size or raw[:len(MAGIC)] != MAGIC:
        raise StateError("not a format-2 changelog record (bad magic or too short)")
    crc, kind, seq, chain, index = HEADER.unpack_from(raw, len(MAGIC))
    if zlib.crc32(memoryview(raw)[len(MAGIC) + 4:]) != crc:
        raise StateError("CRC mismatch: the record is corrupt or truncated")
    if kind not in (SNAPSHOT, DELTA) or (kind == SNAPSHOT) != (index == 0):
        raise StateError(f"bad record kind {kind} with delta index {index}")
    return Head(kind, seq, chain, index)


def decode_record(raw: bytes) -> tuple[Head, dict]:
    """The header and message of a format-2 record; StateError for any body that does not unpack (a CRC only
    proves the bytes are as written: a foreign or newer writer's document can fail in any way unpacking it)."""
    head = read_head(raw)
    try:
        body = zlib.decompress(memoryview(raw)[len(MAGIC) + HEADER.size:])
        (size,) = struct.unpack_from("<I", body)
        document = orjson.loads(body[4:4 + size])
        return head, unpack(document, memoryview(body)[4 + size:])
    except Exception as exc:
        raise StateError(f"undecodable record body ({exc.__class__.__name__}: {exc})") from None


def decode_legacy(raw: bytes) -> dict:
    """A format-1 (JSON, base64 arrays) full checkpoint, as written before deltas existed."""
    try:
        message = orjson.loads(raw)
        if not isinstance(message, dict) or message.get("version") != LEGACY_VERSION:
            version = message.get("version") if isinstance(message, dict) else None
            raise StateError(f"checkpoint format {version!r} is neither 2 nor {LEGACY_VERSION}")
        message["last_source"] = unpack(message["last_source"], None)
        message["state"] = unpack(message["state"], None)
        return message
    except StateError:
        raise
    except Exception as exc:  # no CRC here: any JSON with "version": 1 reaches unpack, which may fail in any way
        raise StateError(f"undecodable checkpoint ({exc.__class__.__name__}: {exc})") from None

