"""Reads Google's TensorFlow checkpoints (tensor bundles) with numpy only — no TensorFlow.

A TF checkpoint with prefix `bert_model.ckpt` is two kinds of file:
  * `bert_model.ckpt.index` — an SSTable (the LevelDB table format): sorted
    key → value pairs where the key is a variable name and the value is a
    `BundleEntryProto` protobuf (dtype, shape, shard, offset, size, crc32c).
    The entry with the EMPTY key is the `BundleHeaderProto` (num_shards, endianness).
  * `bert_model.ckpt.data-00000-of-00001` (one file per shard) — the raw tensor
    bytes, back to back; an entry's (offset, size) says where its tensor lives.

SSTable layout (LevelDB table_format.md), what this file parses:
  [data block]* [meta index block] [index block] [footer: 48 bytes]
  footer = index/metaindex block handles (varints, padded to 40 bytes) + magic 0xdb4775248b80fb57
  block  = entries, then restart offsets (uint32 each), then their count (uint32),
           followed by a 5-byte trailer: compression type (0 none, 1 snappy) + masked crc32c.
  entry  = varint shared_key_len, varint unshared_key_len, varint value_len,
           key bytes after the shared prefix (keys are prefix-compressed), value bytes.
  The index block maps the last key of each data block to that block's handle.

Every crc32c in these files is "masked" (rotated and offset) because a CRC of data
that itself contains CRCs is weak; `_unmask` undoes it. Each tensor's bytes are
checked against its crc32c on read, so a corrupt or truncated download is caught.
"""

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np

from .errors import CheckpointError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48
BLOCK_TRAILER_BYTES = 5  # 1 byte compression type + 4 bytes masked crc32c
CRC_MASK_DELTA = 0xA282EAD8

# tensorflow/core/framework/types.proto DataType enum → numpy dtype.
# bfloat16 has no numpy dtype: it is read as uint16 bits and widened to float32.
TF_DTYPES = {
    1: ("float32", np.float32), 2: ("float64", np.float64), 3: ("int32", np.int32),
    4: ("uint8", np.uint8), 5: ("int16", np.int16), 6: ("int8", np.int8),
    7: ("string", None), 9: ("int64", np.int64), 10: ("bool", np.bool_),
    14: ("bfloat16", np.uint16), 17: ("uint16", np.uint16), 19: ("float16", np.float16),
    20: ("resource", None), 21: ("variant", None), 22: ("uint32", np.uint32), 23: ("uint64", np.uint64),
}
NUMPY_DTYPE_BY_NAME = {name: np_dtype for name, np_dtype in TF_DTYPES.values()}


def _unmask(masked_crc: int) -> int:
    """Inverse of TF/LevelDB crc32c::Mask: ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2**32)."""
    rotated = (masked_crc - CRC_MASK_DELTA) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


def _crc32c(data: bytes) -> int:
    """crc32c of `data`. google-crc32c is imported here, not at the top: only reading a TF bundle needs it, so
    training and conversion of other formats work on machines without it (e.g. a GPU box with a preinstalled torch)."""
    import google_crc32c

    return google_crc32c.value(data)


def _read_varint(buf: bytes, pos: int) -> Tuple[int, int]:
    """Decodes one base-128 varint (7 bits per byte, high bit = more follows); returns (value, new pos)."""
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint in TF checkpoint index")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _parse_proto(buf: bytes) -> Dict[int, List]:
    """A tiny protobuf decoder: field number → list of raw values.

    Varints come back as int, length-delimited fields (strings, sub-messages,
    packed repeats) as bytes, fixed32/fixed64 as int. That is all the wire types
    the bundle protos use; decoding the meaning of each field is left to the caller.
    """
    fields: Dict[int, List] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        field, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, pos = _read_varint(buf, pos)
        elif wire_type == 2:
            length, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire_type == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        elif wire_type == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire_type} in TF checkpoint index")
        fields.setdefault(field, []).append(value)
    return fields


@dataclass(frozen=True)
class TensorInfo:
    """One `BundleEntryProto`: where a variable's bytes live and how to read them."""
    name: str
    dtype: str               # numpy-style name, e.g. "float32"
    shape: Tuple[int, ...]
    shard_id: int
    offset: int
    size: int                # bytes
    crc32c: int              # UNMASKED crc32c of the tensor bytes
    sliced: bool             # True for partitioned variables (stored as slices): not supported


def _parse_entry(name: str, value: bytes) -> TensorInfo:
    fields = _parse_proto(value)
    dtype_id = fields.get(1, [0])[0]
    dtype_name = TF_DTYPES.get(dtype_id, (f"dtype_enum_{dtype_id}", None))[0]
    shape: Tuple[int, ...] = ()
    if 2 in fields:  # TensorShapeProto: repeated Dim dim = 2; Dim: int64 size = 1
        shape = tuple(_parse_proto(dim).get(1, [0])[0] for dim in _parse_proto(fields[2][0]).get(2, []))
    return TensorInfo(
        name=name, dtype=dtype_name, shape=shape,
        shard_id=fields.get(3, [0])[0], offset=fields.get(4, [0])[0], size=fields.get(5, [0])[0],
        crc32c=_unmask(fields.get(6, [CRC_MASK_DELTA])[0]), sliced=7 in fields,
    )


class TFCheckpoint:
    """A TF tensor bundle opened by its prefix, e.g. `.../bert_model.ckpt`.

    Attributes:
      prefix: the checkpoint prefix (path without `.index`).
      num_shards: number of `.data-*` files.
      big_endian: byte order of the data files (Google's are little-endian).
      tensors: variable name → TensorInfo, in the index's (sorted) order.
    """

    def __init__(self, prefix):
        prefix = str(prefix)
        if prefix.endswith(".index"):
            prefix = prefix[: -len(".index")]
        self.prefix = prefix
        self.index_path = Path(prefix + ".index")
        if not self.index_path.is_file():
            raise CheckpointError(f"TF checkpoint index {self.index_path} not found: pass the prefix, e.g. path/bert_model.ckpt")
        self.tensors: Dict[str, TensorInfo] = {}
        self.num_shards, self.big_endian = 1, False
        for key, value in self._iter_index(self.index_path.read_bytes()):
            if key == b"":  # BundleHeaderProto: int32 num_shards = 1; Endianness endianness = 2
                header = _parse_proto(value)
                self.num_shards = header.get(1, [1])[0]
                self.big_endian = header.get(2, [0])[0] == 1
            else:
                name = key.decode("utf-8")
                self.tensors[name] = _parse_entry(name, value)

    def _iter_index(self, data: bytes) -> Iterator[Tuple[bytes, bytes]]:
        """Yields every (key, value) of the SSTable, walking index block → data blocks."""
        path = self.index_path
        if len(data) < FOOTER_BYTES or struct.unpack_from("<Q", data, len(data) - 8)[0] != TABLE_MAGIC:
            raise CheckpointError(
                f"{path} is not a TF checkpoint index ({len(data)} bytes, SSTable magic number missing): "
                "the file is truncated or not a `.index` file; download it again")
        footer = data[len(data) - FOOTER_BYTES:]
        _meta_offset, pos = _read_varint(footer, 0)
        _meta_size, pos = _read_varint(footer, pos)
        index_offset, pos = _read_varint(footer, pos)
        index_size, pos = _read_varint(footer, pos)
        for _last_key, handle in self._iter_block(data, index_offset, index_size):
            block_offset, pos = _read_varint(handle, 0)
            block_size, _ = _read_varint(handle, pos)
            yield from self._iter_block(data, block_offset, block_size)

    def _iter_block(self, data: bytes, offset: int, size: int) -> Iterator[Tuple[bytes, bytes]]:
        path = self.index_path
        end = offset + size
        if end + BLOCK_TRAILER_BYTES > len(data):
            raise CheckpointError(f"{path}: block at offset {offset} runs past the end of the file: the index is truncated")
        compression = data[end]
        if compression != 0:
            raise CheckpointError(
                f"{path}: block at offset {offset} uses compression type {compression} (1 = snappy); "
                "only uncompressed indexes (TF's default) are supported: re-save the checkpoint with TF defaults")
        stored_crc = _unmask(struct.unpack_from("<I", data, end + 1)[0])
        if _crc32c(data[offset:end + 1]) != stored_crc:  # crc covers contents + type byte
            raise CheckpointError(f"{path}: crc32c mismatch in index block at offset {offset}: the index file is corrupt")
        block = data[offset:end]
        num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
        entries_end = len(block) - 4 - 4 * num_restarts
        pos, key = 0, b""
        while pos < entries_end:
            shared, pos = _read_varint(block, pos)
            unshared, pos = _read_varint(block, pos)
            value_len, pos = _read_varint(block, pos)
            key = key[:shared] + block[pos:pos + unshared]  # prefix compression: reuse `shared` bytes
            pos += unshared
            yield key, block[pos:pos + value_len]
            pos += value_len

    def data_path(self, shard_id: int) -> Path:
        """Path of one data shard, e.g. `bert_model.ckpt.data-00000-of-00001`."""
        return Path(f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}")

    def read(self, name: str) -> np.ndarray:
        """Reads one variable, verifying its crc32c.

        Returns:
          a native-endian numpy array with TF's values (bfloat16 widened exactly to float32).
        """
        if name not in self.tensors:
            raise CheckpointError(f"variable {name!r} is not in {self.index_path} ({len(self.tensors)} variables)")
        info = self.tensors[name]
        np_dtype = NUMPY_DTYPE_BY_NAME.get(info.dtype)
        if np_dtype is None or info.sliced:
            kind = "a partitioned (sliced) variable" if info.sliced else f"dtype {info.dtype}"
            raise CheckpointError(f"TF variable {name!r} has {kind}, which this reader does not support")
        path = self.data_path(info.shard_id)
        if not path.is_file():
            raise CheckpointError(f"TF data shard {path} not found: variable {name!r} lives there; download the .data-* file(s) next to the .index")
        with open(path, "rb") as f:
            f.seek(info.offset)
            raw = f.read(info.size)
        if len(raw) != info.size:
            raise CheckpointError(
                f"{path} is truncated: variable {name!r} needs bytes {info.offset}..{info.offset + info.size} "
                f"but the file has {path.stat().st_size} bytes; download it again")
        if _crc32c(raw) != info.crc32c:
            raise CheckpointError(f"crc32c mismatch for TF variable {name!r} in {path}: the data file is corrupt; download it again")
        array = np.frombuffer(raw, dtype=np.dtype(np_dtype).newbyteorder(">" if self.big_endian else "<"))
        array = array.astype(np_dtype, copy=True).reshape(info.shape)  # copy: writable, native byte order
        if info.dtype == "bfloat16":  # bfloat16 = the top 16 bits of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array
