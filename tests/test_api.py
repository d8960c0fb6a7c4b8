"""The public API, `import jax_ae`: what a notebook does with a run, through those functions only.

One tiny run is trained by jax_ae.train; the tests load it, apply it to arrays of every accepted
kind, refuse every kind of bad array in one line, and move it to PyTorch and back.
"""
import logging
import struct
import sys

import jax
import numpy as np
import pytest
from idx_files import write_idx_dataset

import jax_ae
from jax_ae import data, images, runtime

# Float32 parity on every backend: GPUs default to TF32 matmuls and TPUs to bf16 passes.
pytestmark = pytest.mark.usefixtures('float32_matmuls')


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A finished 2-step run trained through the API: (workdir, its data source, the params
  jax_ae.train returned)."""
  folder = tmp_path_factory.mktemp('idx')
  write_idx_dataset(folder, n_train=40, n_test=30)
  workdir = tmp_path_factory.mktemp('run') / 'run'
  config = jax_ae.Config(data=f'idx:{folder}', steps=2, batch_size=8, eval_every=2,
                         steps_per_dispatch=2)
  return workdir, config.data, jax_ae.train(config, workdir)


@pytest.fixture(scope='module')
def params(run):
  return jax_ae.load_model(run[0])


@pytest.fixture(scope='module')
def digits(run):
  return data.load_dataset(run[1]).test.images  # uint8 (N, 28, 28, 1)


def test_train_returns_the_params_of_its_final_checkpoint(run, params):
  for got, saved in zip(jax.tree.leaves(run[2]), jax.tree.leaves(params)):
    np.testing.assert_array_equal(got, saved)


def test_train_turns_the_compilation_cache_on(run, monkeypatch):
  """Library callers get the command line's cache (here: a resume of the finished run, which
  trains nothing)."""
  calls = []
  monkeypatch.setattr(runtime, 'enable_compilation_cache', lambda: calls.append(1))
  workdir, source, _ = run
  jax_ae.train(jax_ae.Config(data=source, steps=2, batch_size=8, eval_every=2,
                             steps_per_dispatch=2), workdir, resume=True)
  assert calls


def test_load_model_is_quiet(run, caplog):
  """Orbax warns 'Metadata file does not exist' on every restore of our checkpoints (through
  absl, printed as WARNING:absl:...); load_model keeps that off the user's terminal."""
  from jax_ae import rundir
  caplog.set_level(logging.WARNING, logger='absl')  # as in a fresh notebook
  reader = rundir.open_for_reading(run[0])
  reader.load_params()  # the control: what load_model would show without its care
  if not any('Metadata file' in r.getMessage() for r in caplog.records):
    pytest.skip('this Orbax does not warn on restore')
  caplog.clear()
  jax_ae.load_model(run[0])
  assert [r.getMessage() for r in caplog.records] == []
  assert logging.getLogger('absl').level == logging.WARNING  # the setting as it was


def test_uint8_and_float_images_of_every_shape_give_the_same_codes(params, digits):
  torch = pytest.importorskip('torch')
  levels = digits[:, :, :, 0]  # (N, 28, 28) uint8
  floats = levels / 255.0  # float64 in [0, 1], what torchvision and PIL users hold
  expected = jax_ae.encode(params, levels)
  for same in (digits, levels.reshape(len(levels), -1), levels.astype(np.int64),
               floats, floats.astype(np.float32)[..., None], floats.reshape(len(floats), -1),
               jax.numpy.asarray(floats), torch.from_numpy(floats)):
    # Dividing by 255 on the host (float64) or in the program (float32) rounds the inputs
    # differently by at most half an ulp of float32; the codes agree to that rounding.
    # Divided twice, they would differ by up to about 8 (the bug this guards against).
    np.testing.assert_allclose(jax_ae.encode(params, same), expected, rtol=1e-5, atol=1e-5)


def test_reconstruct_keeps_the_shape_it_was_given(params, digits):
  flat = digits.reshape(len(digits), -1)
  recon = jax_ae.reconstruct(params, flat)
  assert recon.shape == flat.shape and recon.dtype == np.float32
  assert 0 <= recon.min() and recon.max() <= 1
  np.testing.assert_allclose(recon.reshape(digits.shape),
                             jax_ae.reconstruct(params, digits), atol=1e-6)
  np.testing.assert_allclose(jax_ae.decode(params, jax_ae.encode(params, digits)),
                             jax_ae.reconstruct(params, digits), atol=1e-6)


UINT8 = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize('bad,message', [
    (UINT8.astype(np.float32), 'got float32 values up to 2'),  # 0-255 levels as floats
    (UINT8 / 255.0 - 0.5, 'down to -0.5'),  # normalized
    (np.where(np.arange(784).reshape(28, 28) == 5, np.nan, UINT8 / 255.0), 'NaN'),
    (np.full((4, 28, 28), np.inf), 'NaN or infinity'),
    (UINT8.astype(np.int32) * 2, 'got int32 values from 0 to 5'),
    (UINT8.astype(np.int16) - 300, 'int16 values from -300'),
    (UINT8[0], 'got an array of shape (28, 28) (one image? add an axis: images[None])'),
    (UINT8.reshape(4, 1, 28, 28), 'got an array of shape (4, 1, 28, 28)'),  # NCHW
    (UINT8[:, :14], 'got an array of shape (4, 14, 28)'),
    (UINT8.reshape(4, -1)[:, :700], 'got an array of shape (4, 700)'),
    (UINT8[:0], 'got no images'),
    (UINT8 > 100, 'dtype bool'),
    (np.array([['a'] * 784]), 'dtype <U1'),
    ([[0] * 784, [0] * 3], 'is no array'),  # ragged
    (7, 'got an array of shape ()'),
])
def test_each_bad_input_is_one_error_that_says_what_it_got_and_what_to_pass(params, bad, message):
  for apply in (jax_ae.encode, jax_ae.reconstruct):
    with pytest.raises(jax_ae.ImageError) as error:
      apply(params, bad)
    text = str(error.value)
    assert message in text and '\n' not in text, text
    assert 'uint8' in text or 'divide by 255' in text or 'before any mean/std' in text, text
  assert issubclass(jax_ae.ImageError, jax_ae.UserError)  # the command lines' one line


@pytest.mark.parametrize('bad,message', [
    (np.zeros((3, 5), np.float32), 'got codes of shape (3, 5): pass codes of shape (N, 576)'),
    (np.zeros(576, np.float32), 'got codes of shape (576,)'),
    (np.full((2, 576), np.nan, np.float32), 'NaN or infinity'),
])
def test_bad_codes_are_one_error(params, bad, message):
  with pytest.raises(jax_ae.ImageError, match='^got') as error:
    jax_ae.decode(params, bad)
  assert message in str(error.value) and '\n' not in str(error.value)


def test_the_to_float_conversion_divides_integer_levels_only():
  levels = np.arange(256, dtype=np.uint8).repeat(4)[:784].reshape(1, 784)
  as_float = images.to_float(levels)
  assert as_float.shape == (1, 28, 28, 1) and as_float.dtype == np.float32
  np.testing.assert_array_equal(images.to_float(as_float), as_float)  # never twice
  # Compiled, XLA multiplies by 1/255: the same to an ulp.
  np.testing.assert_allclose(np.asarray(jax.jit(images.to_float)(levels)), as_float, rtol=2e-7)


def test_an_exported_run_gives_pytorchs_own_test_mse_equal_to_jax_aes(run, params, digits,
                                                                      tmp_path):
  """The run exported, loaded into the lab's PyTorch network (PyTorch's own load_state_dict,
  strict), evaluated by PyTorch: the test MSE the run logged."""
  torch = pytest.importorskip('torch')
  path = jax_ae.export_torch(run[0], tmp_path / 'sub' / 'model.pt')
  network = jax_ae.torch_autoencoder(576)
  network.load_state_dict(torch.load(path, weights_only=True))
  with torch.no_grad():
    batch = torch.from_numpy(digits.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    pytorch_mse = torch.nn.MSELoss()(network(batch), batch).item()
  logged = [r for r in _records(run[0]) if r['event'] == 'eval'][-1]['test_mse']
  # Both are float32 forward passes of the same weights (the conversion is exact: transposes
  # and permutations); they differ in summation order and convolution algorithms, which move
  # a mean of squares by a few float32 ulps of its terms: rel 1e-5 is about 100 ulps.
  assert pytorch_mse == pytest.approx(logged, rel=1e-5)
  assert float(np.mean((jax_ae.reconstruct(params, digits) - digits / 255) ** 2)) \
      == pytest.approx(logged, rel=1e-5)


def test_import_torch_returns_the_exported_params_exactly(run, params, tmp_path):
  pytest.importorskip('torch')
  path = jax_ae.export_torch(run[0], tmp_path / 'model.pt')
  for got, saved in zip(jax.tree.leaves(jax_ae.import_torch(path)), jax.tree.leaves(params)):
    np.testing.assert_array_equal(got, saved)


def test_export_to_a_path_that_cannot_be_written_is_one_error(run, tmp_path):
  pytest.importorskip('torch')
  (tmp_path / 'file').write_text('')
  with pytest.raises(jax_ae.UserError, match='cannot write .*: choose a path you can write to'):
    jax_ae.export_torch(run[0], tmp_path / 'file' / 'model.pt')


def test_a_folder_without_a_run_is_one_error(tmp_path):
  with pytest.raises(jax_ae.UserError, match='holds no run'):
    jax_ae.load_model(tmp_path)


def test_importing_the_package_loads_nothing_heavy():
  """`from jax_ae import config` in a command line, or a test, pays only for what it uses:
  the API's names load on first use, and the array functions without the study's or the
  checkpoints' libraries."""
  import subprocess
  code = ('import sys, jax_ae; print(sorted(m for m in ("jax", "sklearn", "matplotlib", "orbax") '
          'if m in sys.modules)); jax_ae.encode; print(sorted(m for m in ("sklearn", '
          '"matplotlib", "orbax") if m in sys.modules))')
  assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        check=True).stdout.split('\n')[:2] == ['[]', '[]']


def test_every_record_has_its_wall_clock_time(run):
  times = [r['time'] for r in _records(run[0])]
  assert times and times == sorted(times)
  assert all(1.6e9 < t < 1e10 for t in times)  # unix seconds


def test_tensorboard_shows_the_logs_numbers(run):
  pytest.importorskip('tensorboardX')
  scalars = tensorboard_scalars(run[0])
  evals = [r for r in _records(run[0]) if r['event'] == 'eval']
  assert [(step, value) for step, value, _ in scalars['eval/test_mse']] == [
      (r['step'], pytest.approx(r['test_mse'], rel=1e-6)) for r in evals]  # float32 in events
  assert [wall for _, _, wall in scalars['eval/test_mse']] == [
      pytest.approx(r['time']) for r in evals]


def test_without_tensorboardx_the_log_alone_is_written(tmp_path, monkeypatch):
  from jax_ae import rundir
  monkeypatch.setitem(sys.modules, 'tensorboardX', None)  # import tensorboardX fails
  run = rundir.open_for_training(tmp_path / 'run', jax_ae.Config(), resume=False)
  run.log({'event': 'eval', 'step': 1, 'test_mse': 0.5})
  run.close()
  assert [p.name for p in (tmp_path / 'run').iterdir() if 'tfevents' in p.name] == []
  assert [r['test_mse'] for r in run.records()] == [0.5]


def _records(workdir):
  from jax_ae import rundir
  return rundir.open_for_reading(workdir).records()


def tensorboard_scalars(folder):
  """{tag: [(step, value, wall time)]} of the event files in folder (TFRecord framing: length,
  its CRC, the Event proto, its CRC), in the order written."""
  from tensorboardX.proto import event_pb2
  found = {}
  for path in sorted(folder.glob('events.out.tfevents.*')):
    raw, at = path.read_bytes(), 0
    while at < len(raw):
      (length,) = struct.unpack('<Q', raw[at:at + 8])
      event = event_pb2.Event.FromString(raw[at + 12:at + 12 + length])
      at += 12 + length + 4
      for value in event.summary.value:
        found.setdefault(value.tag, []).append((event.step, value.simple_value, event.wall_time))
  return found
