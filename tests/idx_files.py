"""Writes MNIST-format IDX files for the tests."""
import gzip

import numpy as np

IDX_TYPE_CODES = {'u1': 0x08, 'i1': 0x09, 'i2': 0x0b, 'i4': 0x0c, 'f4': 0x0d, 'f8': 0x0e}


def write_idx(path, array):
  """Writes `array` as an IDX file with its dtype's type code (MNIST's files: unsigned bytes)."""
  magic = IDX_TYPE_CODES[array.dtype.str[1:]] << 8 | array.ndim
  big_endian = array.astype(array.dtype.newbyteorder('>'))  # IDX's byte order
  data = b''.join(n.to_bytes(4, 'big') for n in (magic, *array.shape)) + big_endian.tobytes()
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
