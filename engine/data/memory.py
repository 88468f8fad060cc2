"""How much memory a process may use, and the check that a dataset held in
memory fits in its share of it (`check_fits_in_memory`)."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from engine.errors import DataError, quoted

# A run may hold at most this fraction of the memory it can use in images
# (the rest: TensorFlow, the model, the pipeline's batches, and the copy
# made while the training set becomes a tensor).
MEMORY_FRACTION = 0.5


def available_memory_bytes() -> int:
  """What this process can use: MemAvailable, or a smaller cgroup limit."""
  available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          available = int(line.split()[1]) * 1024
  except OSError:
    pass
  for limit_file in ("/sys/fs/cgroup/memory.max",
                     "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    try:
      with open(limit_file) as f:
        text = f.read().strip()
      if text.isdigit():
        available = min(available, int(text))
    except OSError:
      continue
  return available


def check_fits_in_memory(source: str, count: int, shape: tuple,
                         limit_bytes: Optional[int] = None) -> None:
  """Refuses, before loading, a dataset larger than the run can hold.

  Raises:
    DataError: Giving the size and the options that make it smaller.
  """
  needed = count * int(np.prod(shape))
  limit = int((limit_bytes if limit_bytes is not None
               else available_memory_bytes()) * MEMORY_FRACTION)
  if needed > limit:
    raise DataError(
        f"--data_dir={quoted(source)}: {count} images of {'x'.join(map(str, shape))} "
        f"need {needed / 2**30:.1f} GiB in memory (uint8), more than the "
        f"{limit / 2**30:.1f} GiB this run may use; pass --image_size=H,W "
        "to shrink them or --max_train_examples=N to take fewer, or convert "
        "them to shards (vae-engine convert_dataset) to read them from disk")
