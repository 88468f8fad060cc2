"""IDX reader: real files, and every way a file can be wrong."""

import gzip
import os
import struct

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from engine.data import idx
from engine.errors import DataError
from tests.helpers import write_idx


def test_reads_real_mnist(mnist_dir):
  images = idx.read_idx(os.path.join(mnist_dir, "t10k-images-idx3-ubyte.gz"),
                        expected_ndim=3)
  labels = idx.read_idx(os.path.join(mnist_dir, "t10k-labels-idx1-ubyte.gz"),
                        expected_ndim=1)
  assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
  assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
  assert images.max() == 255 and images.min() == 0


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip_raw_and_gzip(tmp_path, suffix):
  array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  path = write_idx(str(tmp_path / f"x{suffix}"), array)
  np.testing.assert_array_equal(idx.read_idx(path, 3), array)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_truncated_file_names_the_file(tmp_path, suffix):
  path = write_idx(str(tmp_path / f"short{suffix}"),
                   np.zeros((10, 28, 28), np.uint8))
  raw = (gzip.open if suffix else open)(path, "rb").read()
  with (gzip.open if suffix else open)(path, "wb") as f:
    f.write(raw[:-100])
  with pytest.raises(DataError, match=r"short.*(truncated|holds)"):
    idx.read_idx(path, 3)


def test_wrong_magic(tmp_path):
  path = write_idx(str(tmp_path / "bad"), np.zeros((2, 2, 2), np.uint8),
                   magic=0x12345678)
  with pytest.raises(DataError, match=r"bad: not an IDX file.*0x12345678"):
    idx.read_idx(path)


def test_labels_where_images_expected(tmp_path):
  path = write_idx(str(tmp_path / "labels"), np.zeros((5,), np.uint8))
  with pytest.raises(DataError, match="labels: has 1 dimension"):
    idx.read_idx(path, expected_ndim=3)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_huge_header_is_rejected_without_allocating(tmp_path, suffix):
  path = str(tmp_path / f"huge{suffix}")
  header = struct.pack(">IIII", 0x803, 10**9, 28, 28)
  with (gzip.open if suffix else open)(path, "wb") as f:
    f.write(header + b"\0" * 1000)
  with pytest.raises(DataError, match="huge.*784000000000 bytes"):
    idx.read_idx(path, 3)


def test_trailing_garbage(tmp_path):
  path = str(tmp_path / "long.gz")
  with gzip.open(path, "wb") as f:
    f.write(struct.pack(">II", 0x801, 3) + b"\1\2\3\4")
  with pytest.raises(DataError, match="long.gz: has data past"):
    idx.read_idx(path, 1)


def test_missing_file(tmp_path):
  with pytest.raises(DataError, match="nope: no such file"):
    idx.read_idx(str(tmp_path / "nope"))


def test_not_gzip(tmp_path):
  path = tmp_path / "fake.gz"
  path.write_bytes(b"this is not gzip at all")
  with pytest.raises(DataError, match="fake.gz: cannot read it"):
    idx.read_idx(str(path))


# The first case CI ever found: a 3-D header whose dimensions (16, 168624128,
# 3418619904) overflow an int64 product; gzipped, it escaped as a ValueError.
_OVERFLOWING_HEADER = struct.pack(">I3I", 0x803, 16, 0x0A0D0000, 0xCBC40000)


@hypothesis.settings(deadline=None)
@hypothesis.example(payload=b"", header=_OVERFLOWING_HEADER, compressed=True)
@hypothesis.given(payload=st.binary(max_size=64),
                  header=st.one_of(
                      st.binary(max_size=16),
                      st.tuples(st.sampled_from([0x801, 0x803]),
                                st.lists(st.integers(0, 2**32 - 1),
                                         min_size=1, max_size=3)).map(
                                    lambda t: struct.pack(
                                        f">I{len(t[1])}I", t[0], *t[1]))),
                  compressed=st.booleans())
def test_fuzz_returns_arrays_or_data_errors(tmp_path_factory, payload, header,
                                            compressed):
  path = str(tmp_path_factory.mktemp("fuzz") /
             ("f.gz" if compressed else "f"))
  with (gzip.open if compressed else open)(path, "wb") as f:
    f.write(header + payload)
  try:
    array = idx.read_idx(path)
  except DataError:
    return
  assert array.dtype == np.uint8 and array.size == len(payload)


def test_dimensions_whose_product_overflows_int64_are_refused(tmp_path):
  path = str(tmp_path / "overflow.gz")
  with gzip.open(path, "wb") as f:
    f.write(_OVERFLOWING_HEADER + b"\0" * 16)
  with pytest.raises(DataError, match="overflow.gz: header promises "
                     "9223388804407099392 bytes"):
    idx.read_idx(path, 3)
