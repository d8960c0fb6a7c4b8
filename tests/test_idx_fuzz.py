"""Damaged IDX files, as a cut download, a bad disk or the wrong file make them.

Each must end in one DataError that names the file: never another exception, never a hang,
and never an allocation of what a damaged header declares (up to 2**32 - 1 images).
"""
import faulthandler
import gzip
import sys
import tracemalloc
import zlib

import numpy as np
import pytest

from idx_files import write_idx_dataset
from jax_ae.data import DataError, load_dataset

# Far above what a load of these small files allocates (under 0.2 MiB), far below what a reader
# that trusted the huge headers would (4 GiB and more).
PEAK_LIMIT = 8 * 2**20
HANG_LIMIT_S = 60  # the whole of one test; each load takes milliseconds


def flip(data, i, bits):
  return data[:i] + bytes([data[i] ^ bits]) + data[i + 1:]


def damaged_idx(valid, other, rng):
  """{what was done: the bytes} for the IDX file `valid`; `other` is the other kind's file."""
  header = 4 + 4 * valid[3]
  item = (len(valid) - header) // int.from_bytes(valid[4:8], 'big')  # bytes per image or label

  def with_dim(i, n):
    return valid[:4 + 4 * i] + n.to_bytes(4, 'big') + valid[8 + 4 * i:]

  cuts = [*range(header + 1), header + 1, header + item, len(valid) // 2, len(valid) - 1,
          *rng.integers(header, len(valid), 3)]
  cases = {f'cut to {cut} bytes': valid[:cut] for cut in cuts}
  for i in range(header):  # the magic (0..3), then each dimension
    for bits in (0x01, 0x02, 0x80, 0xff):
      cases[f'byte {i} ^ {bits:#04x}'] = flip(valid, i, bits)
  for code in (0x00, 0x07, 0x09, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0xff):
    cases[f'type code {code:#04x}'] = valid[:2] + bytes([code]) + valid[3:]
  cases['0 items'] = with_dim(0, 0)[:header]
  cases['0 items, data left'] = with_dim(0, 0)
  for n in (2**31, 2**32 - 1):
    cases[f'{n} items'] = with_dim(0, n)
  if valid[3] == 3:
    cases['2**32 - 1 rows'] = with_dim(1, 2**32 - 1)
    cases['every dimension 2**32 - 1'] = valid[:4] + b'\xff' * (header - 4) + valid[header:]
  cases['one byte more'] = valid + b'\0'
  cases['one item more'] = valid + valid[-item:]
  cases['the other file'] = other
  return cases


def damaged_gzip(valid, other, rng):
  """{what was done: the bytes} for a .gz of the IDX file `valid`."""
  gz = gzip.compress(valid, mtime=0)
  deflate = range(10, len(gz) - 9)  # between the 10-byte header and the CRC32, ISIZE trailer
  cases = {f'gzipped, {name}': gzip.compress(data, mtime=0)
           for name, data in damaged_idx(valid, other, rng).items()}
  for cut in [*range(11), 11, len(gz) // 2, *range(len(gz) - 8, len(gz))]:
    cases[f'gzip cut to {cut} bytes'] = gz[:cut]
  for i in [*rng.choice(deflate, 8, replace=False), *range(len(gz) - 8, len(gz))]:
    cases[f'gzip byte {i} ^ 0xff'] = flip(gz, i, 0xff)
  cases['not gzipped'] = valid
  cases['zlib, not gzip'] = zlib.compress(valid)
  cases['random bytes'] = rng.bytes(200)
  cases['gzip header, then random bytes'] = gz[:10] + rng.bytes(200)
  cases['gzip, then garbage'] = gz + b'garbage'
  cases['gzip twice'] = gz + gz
  return cases


@pytest.mark.parametrize('suffix', ['', '.gz'])
@pytest.mark.parametrize('kind', ['images', 'labels'])
@pytest.mark.parametrize('prefix', ['train', 't10k'])
def test_damaged_idx_file_raises_data_error_naming_it(tmp_path, prefix, kind, suffix):
  write_idx_dataset(tmp_path)
  images = tmp_path / f'{prefix}-images-idx3-ubyte'
  labels = tmp_path / f'{prefix}-labels-idx1-ubyte'
  target, other = (images, labels) if kind == 'images' else (labels, images)
  valid = target.read_bytes()
  cases = (damaged_gzip if suffix else damaged_idx)(valid, other.read_bytes(),
                                                    np.random.default_rng(0))
  target.unlink()
  path = target.with_name(target.name + suffix)
  path.write_bytes(gzip.compress(valid) if suffix else valid)
  load_dataset(f'idx:{tmp_path}')  # loads undamaged: each error below comes from the damage
  failures = []
  faulthandler.dump_traceback_later(HANG_LIMIT_S, exit=True, file=sys.__stderr__)
  tracemalloc.start()
  try:
    for what, data in cases.items():
      path.write_bytes(data)
      tracemalloc.reset_peak()
      before = tracemalloc.get_traced_memory()[0]
      try:
        load_dataset(f'idx:{tmp_path}')
        failures.append(f'{what}: loaded')
      except DataError as e:
        if str(path) not in str(e) or '\n' in str(e):
          failures.append(f'{what}: {e}')
      except Exception as e:
        failures.append(f'{what}: {type(e).__name__}: {e}')
      peak = tracemalloc.get_traced_memory()[1] - before
      if peak > PEAK_LIMIT:
        failures.append(f'{what}: allocated {peak} bytes')
  finally:
    tracemalloc.stop()
    faulthandler.cancel_dump_traceback_later()
  assert not failures, '\n'.join(failures)
