"""MNIST's four IDX files, downloaded once into the user's cache folder and checked against
their published SHA-256 sums: --data mnist where TFDS cannot give MNIST, as torchvision and
Keras give it, without TensorFlow.

A file lands in the cache only whole and verified: it is written to a temporary file in the
same folder, checked, then renamed into place, so an interrupted or damaged download (or two
processes downloading at once) never leaves a bad file under the final name.
"""
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

# The mirrors torchvision (datasets/mnist.py) and TFDS (image_classification/mnist.py)
# download from, the one torchvision tries first last: LeCun's site often refuses downloads.
MIRRORS = [
    'https://ossci-datasets.s3.amazonaws.com/mnist/',
    'https://storage.googleapis.com/cvdf-datasets/mnist/',
    'http://yann.lecun.com/exdb/mnist/',
]
# name -> (bytes, SHA-256), as TFDS publishes them (tensorflow_datasets/url_checksums/
# mnist.txt); torchvision publishes MD5s of the same files. SHA-256, not MD5: a sum anyone
# can forge a match for checks against damage, not against a mirror serving other bytes.
MNIST_FILES = {
    'train-images-idx3-ubyte.gz':
        (9912422, '440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609'),
    'train-labels-idx1-ubyte.gz':
        (28881, '3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c'),
    't10k-images-idx3-ubyte.gz':
        (1648877, '8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6'),
    't10k-labels-idx1-ubyte.gz':
        (4542, 'f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6'),
}
TIMEOUT_S = 30  # per connection attempt and per read
CHUNK = 1 << 20


class DownloadFailed(Exception):
  """No mirror gave a file with the published size and sum; str() is one line."""


def cache_folder():
  """jax-ae's folder in the user's cache: $XDG_CACHE_HOME/jax-ae, else ~/.cache/jax-ae."""
  return Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'jax-ae'


def mnist_folder():
  """The folder holding MNIST's four verified .gz files, downloading the ones it lacks.

  A cached file is checked again on each call (11.6 MB of SHA-256: about 0.01 s), so a file
  damaged in the cache is downloaded anew rather than read.

  Says so in one line on stderr when it downloaded; a failure is for the caller to tell.

  Raises:
    DownloadFailed: the cache folder cannot be made, or a file could be downloaded from no
      mirror.
  """
  folder = cache_folder() / 'mnist'
  missing = [name for name, (size, sha256) in MNIST_FILES.items()
             if not _verified(folder / name, size, sha256)]
  if missing:
    try:
      folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise DownloadFailed(f'the cache folder {folder} cannot be made ({e.strerror}): set '
                           'XDG_CACHE_HOME to a writable folder') from None
    for name in missing:
      _download(name, *MNIST_FILES[name], folder)
    megabytes = sum(MNIST_FILES[name][0] for name in missing) / 1e6
    print(f'downloaded MNIST ({megabytes:.1f} MB, SHA-256 checked) into {folder}',
          file=sys.stderr)
  return folder


def _verified(path, size, sha256):
  try:
    return path.stat().st_size == size and _sha256(path) == sha256
  except OSError:  # missing, or unreadable: not a verified file
    return False


def _sha256(path):
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def _download(name, size, sha256, folder):
  failures = []
  for mirror in MIRRORS:
    url = mirror + name
    try:
      _fetch(url, size, sha256, folder / name)
      return
    except (OSError, http.client.HTTPException, ValueError) as e:  # URLError is an OSError
      failures.append(f'{url}: {e}')
  others = f'; {len(failures) - 1} other mirror(s) failed too' if len(failures) > 1 else ''
  raise DownloadFailed(f'downloading {name} failed ({failures[0]}{others})')


def _fetch(url, size, sha256, path):
  """Downloads url into path if what it serves has `size` bytes and `sha256`; else raises
  (ValueError: other bytes; OSError, HTTPException: no whole answer), leaving path as it was."""
  temp = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f'.{path.name}.', suffix='.part',
                                     delete=False)
  try:
    digest, received = hashlib.sha256(), 0
    with temp, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
      while chunk := response.read(min(CHUNK, size + 1 - received)):  # a byte more tells long
        digest.update(chunk)
        temp.write(chunk)
        received += len(chunk)
    if received < size:
      raise ValueError(f'{received} bytes, where the published file has {size}')
    if received > size:
      raise ValueError(f"more bytes than the published file's {size}")
    if digest.hexdigest() != sha256:
      raise ValueError(f'SHA-256 {digest.hexdigest()}, not the published {sha256}')
    os.replace(temp.name, path)
  finally:
    if os.path.exists(temp.name):
      os.unlink(temp.name)
