import functools
import hashlib
import http.server
import importlib.resources
import importlib.util
import io
import json
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import threading

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds
from array_record.python.array_record_module import ArrayRecordWriter

import train as train_cli
from idx_files import write_idx, write_idx_dataset
from jax_ae import download
from jax_ae.data import DIGITS, FASHION_MNIST_CLASSES, DataError, load_dataset

REPO = pathlib.Path(__file__).resolve().parents[1]
HAS_TENSORFLOW = importlib.util.find_spec('tensorflow') is not None
FASHION_MNIST_IDX = pathlib.Path('/usr/share/datasets/fashion-mnist')
# The mnist5k test set as this split defines it; a change means runs stop being comparable.
MNIST5K_TEST_SHA256 = '7ffe04fd2d0a333c144cf1ab6550aadc807aab36308f0d66ca20a068f5e9ba3a'


def assert_data_error(source, match):
  with pytest.raises(DataError, match=match) as error:
    load_dataset(source)
  assert '\n' not in str(error.value)


def test_mnist5k_is_a_fixed_stratified_split():
  data = load_dataset('mnist5k')
  assert data.name == 'mnist5k' and data.class_names == DIGITS
  for split, n in ((data.train, 4000), (data.test, 1000)):
    assert split.images.shape == (n, 28, 28, 1) and split.images.dtype == np.uint8
    assert split.labels.shape == (n,) and split.labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(split.labels, minlength=10), [n // 10] * 10)
    assert split.images.max() == 255 and 0.05 < split.images.mean() / 255 < 0.3
  # The split must not leak a digit image into both sets.
  train_rows = {row.tobytes() for row in data.train.images}
  assert not any(row.tobytes() in train_rows for row in data.test.images)
  again = load_dataset('mnist5k')
  np.testing.assert_array_equal(again.test.images, data.test.images)
  np.testing.assert_array_equal(again.train.labels, data.train.labels)
  digest = hashlib.sha256(data.test.images.tobytes() + data.test.labels.tobytes()).hexdigest()
  assert digest == MNIST5K_TEST_SHA256


@pytest.mark.parametrize('suffix', ['', '.gz'])
def test_idx_round_trip(tmp_path, suffix):
  written = write_idx_dataset(tmp_path, suffix)
  data = load_dataset(f'idx:{tmp_path}')
  assert data.name == f'idx:{tmp_path}' and data.class_names == DIGITS
  for split, (images, labels) in ((data.train, written['train']), (data.test, written['test'])):
    assert split.images.dtype == np.uint8 and split.labels.dtype == np.int32
    np.testing.assert_array_equal(split.images, images[..., None])
    np.testing.assert_array_equal(split.labels, labels)


def test_idx_class_names_follow_a_fashion_folder_name(tmp_path):
  folder = tmp_path / 'Fashion-MNIST'
  folder.mkdir()
  write_idx_dataset(folder)
  assert load_dataset(f'idx:{folder}').class_names == FASHION_MNIST_CLASSES


def test_idx_missing_folder(tmp_path):
  assert_data_error(f'idx:{tmp_path / "nowhere"}', 'nowhere does not exist')


def test_idx_missing_file(tmp_path):
  write_idx_dataset(tmp_path)
  (tmp_path / 't10k-labels-idx1-ubyte').unlink()
  assert_data_error(f'idx:{tmp_path}', r'has no t10k-labels-idx1-ubyte \(or t10k-labels-idx1-ubyte.gz\)')


def test_idx_wrong_magic(tmp_path):
  write_idx_dataset(tmp_path)
  shutil.copy(tmp_path / 'train-labels-idx1-ubyte', tmp_path / 'train-images-idx3-ubyte')
  assert_data_error(f'idx:{tmp_path}', r'train-images-idx3-ubyte is not an IDX file of images '
                                       r'\(magic number 0x00000801, expected 0x00000803\)')


@pytest.mark.parametrize('keep_bytes', [10, 16 + 20 * 784 - 1])  # mid-header, last pixel
def test_idx_truncated(tmp_path, keep_bytes):
  write_idx_dataset(tmp_path)
  path = tmp_path / 'train-images-idx3-ubyte'
  path.write_bytes(path.read_bytes()[:keep_bytes])
  assert_data_error(f'idx:{tmp_path}', f'train-images-idx3-ubyte is truncated: {keep_bytes} bytes')


def test_idx_truncated_gzip(tmp_path):
  write_idx_dataset(tmp_path, '.gz')
  path = tmp_path / 'train-images-idx3-ubyte.gz'
  path.write_bytes(path.read_bytes()[:-100])
  assert_data_error(f'idx:{tmp_path}', 'train-images-idx3-ubyte.gz cannot be read')


def test_idx_wrong_dims(tmp_path):
  write_idx_dataset(tmp_path)
  write_idx(tmp_path / 'train-labels-idx1-ubyte', np.zeros((20, 1), np.uint8))
  assert_data_error(f'idx:{tmp_path}', r'train-labels-idx1-ubyte is not an IDX file of labels '
                                       r'\(magic number 0x00000802, expected 0x00000801\): it '
                                       'holds 2-D data where labels are 1-D')


@pytest.mark.parametrize('name, array, match', [
  ('train-images-idx3-ubyte', np.zeros((20, 28, 28), np.float32),
   r'holds float32 values \(IDX type code 0x0d\), where jax-ae reads unsigned bytes \(0x08\)'),
  ('t10k-labels-idx1-ubyte', np.zeros(10, np.int32), r'holds int32 values \(IDX type code 0x0c\)'),
])
def test_idx_not_unsigned_bytes(tmp_path, name, array, match):
  write_idx_dataset(tmp_path)
  write_idx(tmp_path / name, array)
  assert_data_error(f'idx:{tmp_path}', f'{name} {match}')


def test_idx_longer_than_its_header_says(tmp_path):
  write_idx_dataset(tmp_path)
  path = tmp_path / 't10k-images-idx3-ubyte'
  path.write_bytes(path.read_bytes() + bytes(784))  # one image the header does not count
  assert_data_error(f'idx:{tmp_path}', 't10k-images-idx3-ubyte has 8640 bytes where its header '
                                       'says 7856: a wrong dimension')


def test_idx_split_of_0_images(tmp_path):
  write_idx_dataset(tmp_path)
  write_idx(tmp_path / 't10k-images-idx3-ubyte', np.zeros((0, 28, 28), np.uint8))
  write_idx(tmp_path / 't10k-labels-idx1-ubyte', np.zeros(0, np.uint8))
  assert_data_error(f'idx:{tmp_path}', 't10k-images-idx3-ubyte holds 0 images: the test split '
                                       'needs at least one')


def test_idx_images_not_28x28(tmp_path):
  write_idx_dataset(tmp_path, size=32)
  assert_data_error(f'idx:{tmp_path}', r'holds images of shape \(32, 32\), not 28x28')


def test_idx_label_count_mismatch(tmp_path):
  write_idx_dataset(tmp_path)
  write_idx(tmp_path / 'train-labels-idx1-ubyte', np.zeros(19, np.uint8))
  assert_data_error(f'idx:{tmp_path}', 'has 20 images but .*train-labels-idx1-ubyte has 19 labels')


def test_idx_labels_outside_0_to_9(tmp_path):
  write_idx_dataset(tmp_path)
  write_idx(tmp_path / 't10k-labels-idx1-ubyte', np.full(10, 10, np.uint8))
  assert_data_error(f'idx:{tmp_path}', r'labels outside 0\.\.9 \(10\.\.10\)')


@pytest.mark.parametrize('source, match', [
  ('cifar10', "unknown --data 'cifar10'"),
  ('tfds:no_such_dataset', 'tfds:no_such_dataset is not a TFDS dataset'),
])
def test_unknown_source(source, match):
  assert_data_error(source, match)


@pytest.mark.parametrize('source, match', [
  ('tfds:cifar10', r'tfds:cifar10 has images of shape \(32, 32, 3\), not 28x28 grayscale'),
  ('tfds:emnist', 'tfds:emnist has 62 label classes where jax-ae handles 10'),
])
def test_tfds_dataset_unlike_mnist_fails_before_any_download(tmp_path, source, match):
  with pytest.raises(DataError, match=match) as error:
    load_dataset(source, str(tmp_path))
  assert '\n' not in str(error.value) and not any(tmp_path.iterdir())


def run_fresh(script, *args):
  """Runs `script` in a fresh interpreter: this test module itself imports tfds, for its fixture."""
  return subprocess.run([sys.executable, '-c', script, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=120)


LOAD_MNIST5K_AND_IDX = '''
from jax_ae.data import DataError, load_dataset
assert load_dataset('mnist5k').name == 'mnist5k'
assert load_dataset('idx:' + sys.argv[1]).test.images.shape == (10, 28, 28, 1)
'''


def test_mnist5k_and_idx_do_not_import_tfds(tmp_path):
  write_idx_dataset(tmp_path)
  run = run_fresh('import sys\n' + LOAD_MNIST5K_AND_IDX + '''
imported = [m for m in sys.modules if m.startswith('tensorflow')]
assert not imported, imported[:3]
''', str(tmp_path))
  assert run.returncode == 0, run.stderr


def test_runs_where_tfds_is_not_installed(tmp_path, no_mirror):
  write_idx_dataset(tmp_path)
  run = run_fresh('''
import sys
sys.modules['tensorflow_datasets'] = None  # importing it fails from here on
''' + LOAD_MNIST5K_AND_IDX + '''
from jax_ae import download
download.MIRRORS = [sys.argv[2]]
assert load_dataset('mnist').name == 'mnist5k'
try:
  load_dataset('tfds:fashion_mnist')
except DataError as e:
  print(e)
''', str(tmp_path), no_mirror)
  assert run.returncode == 0, run.stderr
  assert run.stderr.startswith('tfds:mnist needs tensorflow-datasets, which is not installed, '
                               'and downloading train-images-idx3-ubyte.gz failed ('
                               f'{no_mirror}train-images-idx3-ubyte.gz: <urlopen error'), run.stderr
  assert run.stderr.count('\n') == 1 and run.stderr.endswith(
      'training on the 5,000 bundled MNIST digits (mnist5k) instead; for all 70,000, run again '
      'online or pip install tensorflow-datasets\n'), run.stderr
  assert run.stdout == ('tfds:fashion_mnist needs tensorflow-datasets, which is not installed: '
                        'pip install tensorflow-datasets, or use --data mnist5k or --data '
                        'idx:<dir>\n')


@pytest.mark.skipif(not FASHION_MNIST_IDX.is_dir(), reason='no Fashion-MNIST IDX files here')
def test_idx_reads_fashion_mnist():
  data = load_dataset(f'idx:{FASHION_MNIST_IDX}')
  assert data.train.images.shape == (60000, 28, 28, 1)
  assert data.test.images.shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(data.test.labels), [1000] * 10)
  assert data.class_names == FASHION_MNIST_CLASSES


def write_prepared_mnist(data_dir, counts):
  """Prepares a tiny 'mnist' in `data_dir` as download_and_prepare would, but without
  TensorFlow or a network: array_record shards of PNG examples plus metadata. `counts` is
  {split: number of examples}; returns {split: (images, labels)}."""
  builder = tfds.builder('mnist', data_dir=data_dir, file_format='array_record')
  builder.data_path.mkdir(parents=True)
  rng = np.random.default_rng(1)
  written, split_infos = {}, []
  for split, n in counts.items():
    images = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    template = tfds.core.ShardedFileTemplate(
        data_dir=builder.data_path, template='{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}',
        dataset_name='mnist', split=split, filetype_suffix='array_record')
    writer = ArrayRecordWriter(str(template.sharded_filepath(shard_index=0, num_shards=1)),
                               'group_size:1')
    for image, label in zip(images, labels):
      png = io.BytesIO()
      PIL.Image.fromarray(image[..., 0]).save(png, format='PNG')
      png.seek(0)  # an encoded file object spares the Image feature from needing TF
      writer.write(builder.info.features.serialize_example({'image': png, 'label': label}))
    writer.close()
    split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=[n], num_bytes=0,
                                           filename_template=template))
    written[split] = images, labels
  builder.info.set_splits(tfds.core.SplitDict(split_infos))
  builder.info.write_to_directory(builder.data_path)
  return written


@pytest.fixture(scope='module')
def prepared_mnist(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('tfds')
  return data_dir, write_prepared_mnist(data_dir, {'train': 12, 'test': 6})


def test_tfds_reads_a_prepared_dataset(prepared_mnist):
  data_dir, written = prepared_mnist
  data = load_dataset('tfds:mnist', str(data_dir))
  assert data.name == 'tfds:mnist' and data.class_names == DIGITS
  for split, (images, labels) in ((data.train, written['train']), (data.test, written['test'])):
    assert split.images.dtype == np.uint8 and split.labels.dtype == np.int32
    np.testing.assert_array_equal(split.images, images)
    np.testing.assert_array_equal(split.labels, labels)


def test_default_mnist_prefers_prepared_tfds(prepared_mnist):
  data_dir, _ = prepared_mnist
  assert load_dataset('mnist', str(data_dir)).name == 'tfds:mnist'


def test_tfds_prepared_as_tfrecord_says_to_reprepare(prepared_mnist, tmp_path):
  # tfds.load prepares tfrecord by default, which data_source cannot read.
  data_dir, _ = prepared_mnist
  shutil.copytree(data_dir, tmp_path, dirs_exist_ok=True)
  info_path = next(tmp_path.glob('mnist/*/dataset_info.json'))
  info_path.write_text(json.dumps({**json.loads(info_path.read_text()), 'fileFormat': 'tfrecord'}))
  with pytest.raises(DataError, match='stored as tfrecord.*prepare it as array_record') as error:
    load_dataset('tfds:mnist', str(tmp_path))
  assert '\n' not in str(error.value)


@pytest.mark.parametrize('counts, match', [
  ({'train': 3, 'test': 0}, 'holds 0 test images: the test split needs at least one'),
  ({'train': 3}, r'has no test split \(it has train\)'),
])
def test_tfds_test_split_empty_or_missing(tmp_path, counts, match):
  write_prepared_mnist(tmp_path, counts)
  with pytest.raises(DataError, match=match) as error:
    load_dataset('tfds:mnist', str(tmp_path))
  assert str(tmp_path) in str(error.value) and '\n' not in str(error.value)


@pytest.mark.skipif(HAS_TENSORFLOW, reason='premise: TensorFlow is not installed')
def test_tfds_unprepared_without_tensorflow(tmp_path):
  with pytest.raises(DataError, match=f'tfds:mnist in {tmp_path} is not prepared and preparing '
                                      'it needs TensorFlow') as error:
    load_dataset('tfds:mnist', str(tmp_path))
  assert '\n' not in str(error.value) and 'mnist5k' in str(error.value)


@pytest.mark.skipif(HAS_TENSORFLOW, reason='premise: TensorFlow is not installed')
def test_default_mnist_falls_back_to_mnist5k(tmp_path, capsys, no_mirror):
  assert load_dataset('mnist', str(tmp_path)).name == 'mnist5k'
  assert 'training on the 5,000 bundled MNIST digits (mnist5k) instead' in capsys.readouterr().err


# --data mnist without TFDS: MNIST downloaded, checked and cached. The tests serve tiny
# MNIST-format files over HTTP on 127.0.0.1 (no internet) as the published files.

@pytest.fixture
def no_mirror(tmp_path, monkeypatch):
  """download.MIRRORS is one mirror that refuses connections, the cache is in tmp_path:
  --data mnist without TFDS falls back to mnist5k at once. Returns the mirror's URL."""
  with socket.socket() as s:  # a port nothing listens on once this socket closes
    s.bind(('127.0.0.1', 0))
    url = f'http://127.0.0.1:{s.getsockname()[1]}/'
  monkeypatch.setattr(download, 'MIRRORS', [url])
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
  return url


class QuietHandler(http.server.SimpleHTTPRequestHandler):
  def log_message(self, *args):
    pass


@pytest.fixture
def mnist_mirror(tmp_path, monkeypatch):
  """Serves tiny MNIST-format .gz files, under MNIST's names, as download.MIRRORS' one mirror,
  their sizes and sums the published ones; TFDS cannot be imported and the cache is in
  tmp_path. Yields (served folder, {split: (images, labels)}, the server)."""
  served = tmp_path / 'mirror'
  served.mkdir()
  written = write_idx_dataset(served, '.gz')
  files = {name: (served / name).read_bytes() for name in download.MNIST_FILES}
  monkeypatch.setattr(download, 'MNIST_FILES', {
      name: (len(data), hashlib.sha256(data).hexdigest()) for name, data in files.items()})
  server = http.server.ThreadingHTTPServer(
      ('127.0.0.1', 0), functools.partial(QuietHandler, directory=served))
  threading.Thread(target=server.serve_forever, daemon=True).start()
  monkeypatch.setattr(download, 'MIRRORS', [f'http://127.0.0.1:{server.server_port}/'])
  monkeypatch.setenv('no_proxy', '127.0.0.1')
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)  # TFDS cannot give MNIST
  yield served, written, server
  server.shutdown()
  server.server_close()


def cached(tmp_path):
  folder = tmp_path / 'cache' / 'jax-ae' / 'mnist'
  return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def assert_is_written(dataset, written):
  for split, (images, labels) in ((dataset.train, written['train']),
                                  (dataset.test, written['test'])):
    np.testing.assert_array_equal(split.images, images[..., None])
    np.testing.assert_array_equal(split.labels, labels)


def test_mnist_sums_are_the_published_ones():
  # TFDS's checksums of MNIST's files, shipped with tensorflow-datasets: a typo here would
  # make every download fail its check.
  table = importlib.resources.files('tensorflow_datasets') / 'url_checksums/mnist.txt'
  published = {}
  for line in table.read_text().splitlines():
    url, size, sha256, name = line.split('\t')
    published[name] = (int(size), sha256)
    assert url.removesuffix(name) in download.MIRRORS  # TFDS's own mirror is one
  assert download.MNIST_FILES == published


def test_mnist_without_tfds_downloads_checks_caches_and_trains(mnist_mirror, tmp_path, capsys):
  _, written, server = mnist_mirror
  workdir = tmp_path / 'run'
  assert train_cli.main(['--steps', '2', '--batch-size', '8', '--eval-every', '2',
                         '--steps-per-dispatch', '2', '--workdir', str(workdir)]) == 0
  err = capsys.readouterr().err
  folder = tmp_path / 'cache' / 'jax-ae' / 'mnist'
  assert f'downloaded MNIST (0.0 MB, SHA-256 checked) into {folder}\n' in err
  assert 'mnist5k' not in err
  assert cached(tmp_path) == sorted(download.MNIST_FILES)
  # The run records the files it read, so that a resume and analyze.py read them again.
  recorded = json.loads((workdir / 'config.json').read_text())['data']
  assert recorded == f'idx:{folder}'
  assert_is_written(load_dataset(recorded), written)
  server.shutdown()
  server.server_close()
  assert train_cli.main(['--resume', '--steps', '4', '--workdir', str(workdir)]) == 0
  assert 'downloaded' not in capsys.readouterr().err


@pytest.mark.parametrize('damage, match', [
  pytest.param(lambda data: data[:-1], r'\d+ bytes, where the published file has \d+',
               id='truncated'),
  pytest.param(lambda data: data + b'\0', r"more bytes than the published file's \d+",
               id='too-long'),
  pytest.param(lambda data: data[:-1] + bytes([data[-1] ^ 1]),
               'SHA-256 [0-9a-f]{64}, not the published [0-9a-f]{64}', id='wrong-sum'),
  pytest.param(None, 'HTTP Error 404: File not found', id='missing'),
])
def test_mnist_bad_download_falls_back_in_one_line(mnist_mirror, tmp_path, capsys, damage, match):
  served, _, _ = mnist_mirror
  last = served / 't10k-labels-idx1-ubyte.gz'  # the last downloaded: the others land
  if damage:
    last.write_bytes(damage(last.read_bytes()))
  else:
    last.unlink()
  assert load_dataset('mnist').name == 'mnist5k'
  err = capsys.readouterr().err
  assert err.count('\n') == 1, err
  assert re.search(f'downloading t10k-labels-idx1-ubyte.gz failed \\(http://127.0.0.1:\\d+/'
                   f't10k-labels-idx1-ubyte.gz: {match}\\): training on the 5,000 bundled '
                   'MNIST digits \\(mnist5k\\) instead', err), err
  # Only whole, checked files land, and no temporary file is left behind.
  assert cached(tmp_path) == sorted(list(download.MNIST_FILES)[:3])


def test_mnist_cache_folder_that_cannot_be_made_falls_back_in_one_line(mnist_mirror, tmp_path,
                                                                       monkeypatch, capsys):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'a-file'))
  (tmp_path / 'a-file').touch()
  assert load_dataset('mnist').name == 'mnist5k'
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and f'the cache folder {tmp_path}/a-file/jax-ae/mnist cannot be ' \
      'made (Not a directory): set XDG_CACHE_HOME to a writable folder: training on' in err, err


def test_mnist_is_read_from_the_cache_and_a_damaged_file_downloaded_again(mnist_mirror, tmp_path,
                                                                          capsys):
  _, written, server = mnist_mirror
  first = load_dataset('mnist')
  assert 'downloaded MNIST' in capsys.readouterr().err
  damaged = tmp_path / 'cache' / 'jax-ae' / 'mnist' / 'train-images-idx3-ubyte.gz'
  damaged.write_bytes(damaged.read_bytes()[:-1] + bytes([damaged.read_bytes()[-1] ^ 1]))
  assert load_dataset('mnist').name == first.name
  assert 'downloaded MNIST' in capsys.readouterr().err
  server.shutdown()  # from here on, only the cache can give MNIST
  server.server_close()
  again = load_dataset('mnist')
  assert again.name == first.name and capsys.readouterr().err == ''
  assert_is_written(again, written)
