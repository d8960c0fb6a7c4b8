"""Writes MNIST-format IDX files for the tests."""
import gzip

import numpy as np


def write_idx(path, array):
  magic = 0x0800 + array.ndim  # unsigned bytes, ndim dims
  data = b''.join(n.to_bytes(4, 'big') for n in (magic, *array.shape)) + array.tobytes()
  path.write_bytes(gzip.compress(data) if path.suffix == '.gz' else data)


def write_idx_dataset(folder, suffix='', n_train=20, n_test=10, size=28):
  """Writes random IDX train/test files into `folder`; returns {split: (images, labels)}."""
  rng = np.random.default_rng(0)
  written = {}
  for split, prefix, n in (('train', 'train', n_train), ('test', 't10k', n_test)):
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    write_idx(folder / f'{prefix}-images-idx3-ubyte{suffix}', images)
    write_idx(folder / f'{prefix}-labels-idx1-ubyte{suffix}', labels)
    written[split] = images, labels
  return written
