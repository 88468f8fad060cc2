"""Reader for the IDX files MNIST-like datasets ship as (raw or gzip).

The header is validated before any large allocation: magic number, number and
size of dimensions, and that the payload the header promises is what the file
holds. A header that claims 10^9 images never causes a 784 GB allocation: raw
files are checked against their size on disk, and gzip streams are read in
bounded chunks and rejected as soon as they run past or short of the promise.
Every error is a `DataError` naming the file.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib

import numpy as np

from engine.errors import DataError, quoted

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
_UBYTE_TYPE_CODE = 0x08
_CHUNK_BYTES = 1 << 22
# Deflate cannot expand data by more than ~1032x; a gzip file promising more
# than this is truncated, whatever the rest of it holds.
_MAX_DEFLATE_RATIO = 1100


def read_idx(path: str, expected_ndim: int | None = None) -> np.ndarray:
  """Reads an IDX file of unsigned bytes.

  Args:
    path: The file; names ending in `.gz` are gunzipped on the fly.
    expected_ndim: If given, the number of dimensions the file must have
      (3 for images, 1 for labels).

  Returns:
    A uint8 array with the header's shape.

  Raises:
    DataError: If the file is missing, unreadable, not IDX, or its payload
      does not match its header.
  """
  try:
    if path.endswith(".gz"):
      with gzip.open(path, "rb") as stream:
        return _read(stream, path, expected_ndim, os.path.getsize(path),
                     compressed=True)
    with open(path, "rb") as stream:
      return _read(stream, path, expected_ndim, os.path.getsize(path),
                   compressed=False)
  except FileNotFoundError:
    raise DataError(f"{quoted(path)}: no such file") from None
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"{quoted(path)}: cannot read it ({e})") from None


def _read(stream, path, expected_ndim, file_bytes, compressed):
  shape = _header(stream, path, expected_ndim, file_bytes, compressed)
  data = _read_exactly(stream, math.prod(shape), path, shape)
  return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def stream_rows(path: str, chunk_bytes: int = _CHUNK_BYTES,
                expected_ndim: int = 3):
  """(shape, iterator of uint8 arrays of about `chunk_bytes`): an IDX file
  read a chunk at a time, checked as `read_idx` checks it (a stream that
  ends early or runs on is a `DataError` when it is reached).

  Raises:
    DataError: If the file is missing or its header is wrong.
  """
  opener = gzip.open if path.endswith(".gz") else open
  try:
    stream = opener(path, "rb")
    shape = _header(stream, path, expected_ndim, os.path.getsize(path),
                    compressed=path.endswith(".gz"))
  except FileNotFoundError:
    raise DataError(f"{quoted(path)}: no such file") from None
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"{quoted(path)}: cannot read it ({e})") from None

  row_bytes = math.prod(shape[1:])
  rows = max(1, chunk_bytes // row_bytes)

  def chunks():
    try:
      with stream:
        for start in range(0, shape[0], rows):
          count = min(rows, shape[0] - start)
          data = stream.read(count * row_bytes)
          if len(data) < count * row_bytes:
            raise DataError(f"{quoted(path)}: truncated: header promises "
                            f"{shape[0]} rows (shape {shape})")
          yield np.frombuffer(data, np.uint8).reshape(count, *shape[1:])
        if stream.read(1):
          raise DataError(f"{quoted(path)}: has data past the {shape[0]} "
                          f"rows its header promises (shape {shape})")
    except (OSError, EOFError, zlib.error) as e:
      raise DataError(f"{quoted(path)}: cannot read it ({e})") from None
  return shape, chunks()


def _header(stream, path, expected_ndim, file_bytes, compressed) -> tuple:
  """The shape an IDX header promises, checked against the file's size."""
  magic_bytes = stream.read(4)
  if len(magic_bytes) < 4:
    raise DataError(f"{quoted(path)}: file is shorter than an IDX header")
  zero, type_code, ndim = struct.unpack(">HBB", magic_bytes)
  magic = struct.unpack(">I", magic_bytes)[0]
  if zero != 0 or type_code != _UBYTE_TYPE_CODE or ndim not in (1, 3):
    raise DataError(
        f"{path}: not an IDX file of unsigned bytes (magic 0x{magic:08x}; "
        f"expected 0x{IMAGES_MAGIC:08x} for images or 0x{LABELS_MAGIC:08x} "
        "for labels)")
  if expected_ndim is not None and ndim != expected_ndim:
    kind = "images" if expected_ndim == 3 else "labels"
    raise DataError(f"{quoted(path)}: has {ndim} dimension(s) (magic 0x{magic:08x}) "
                    f"but {kind} need {expected_ndim}")
  dims_bytes = stream.read(4 * ndim)
  if len(dims_bytes) < 4 * ndim:
    raise DataError(f"{quoted(path)}: truncated IDX header")
  shape = struct.unpack(f">{ndim}I", dims_bytes)
  if any(d == 0 for d in shape):
    raise DataError(f"{quoted(path)}: header has an empty dimension {shape}")
  # Python integers: numpy's int64 product of three uint32 dimensions can
  # overflow to a negative size that slips past the checks below.
  payload = math.prod(shape)
  header_bytes = 4 + 4 * ndim
  if not compressed and payload != file_bytes - header_bytes:
    raise DataError(f"{quoted(path)}: header promises {payload} bytes of data "
                    f"(shape {shape}) but the file holds "
                    f"{file_bytes - header_bytes}")
  if compressed and payload > _MAX_DEFLATE_RATIO * file_bytes:
    raise DataError(f"{quoted(path)}: header promises {payload} bytes of data "
                    f"(shape {shape}), more than a {file_bytes}-byte gzip "
                    "file can hold")
  return shape


def _read_exactly(stream, payload, path, shape):
  """Reads `payload` bytes in bounded chunks; rejects short or long streams."""
  buffer = bytearray()
  while len(buffer) < payload:
    chunk = stream.read(min(_CHUNK_BYTES, payload - len(buffer)))
    if not chunk:
      raise DataError(f"{quoted(path)}: truncated: header promises {payload} bytes of "
                      f"data (shape {shape}) but the file holds {len(buffer)}")
    buffer += chunk
  if stream.read(1):
    raise DataError(f"{quoted(path)}: has data past the {payload} bytes its header "
                    f"promises (shape {shape})")
  return buffer
