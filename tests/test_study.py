"""The whole study end to end on a tiny real run, its report's sentences, and analyze.py."""
import copy
import json
import math
import re

import jax
import numpy as np
import PIL.Image
import pytest
from idx_files import write_idx

import analyze
import jax_ae
from jax_ae import analysis, data, inference, loop, plots, report, rundir, study
from jax_ae.config import Config
from jax_ae.model import init_params

# The tests' own encodes in full float32, as the study's: GPUs default to TF32 matmuls.
pytestmark = pytest.mark.usefixtures('float32_matmuls')

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
TEST_PER_CLASS = 6
TEST_SIZE, TRAIN_SIZE = 10 * TEST_PER_CLASS, 40


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A 2-step run on random IDX images: (workdir, its data source)."""
  folder = tmp_path_factory.mktemp('idx')
  rng = np.random.default_rng(0)
  for prefix, n in (('train', TRAIN_SIZE), ('t10k', TEST_SIZE)):
    write_idx(folder / f'{prefix}-images-idx3-ubyte',
              rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    write_idx(folder / f'{prefix}-labels-idx1-ubyte', (np.arange(n) % 10).astype(np.uint8))
  workdir = tmp_path_factory.mktemp('run')
  loop.train(Config(data=f'idx:{folder}', steps=2, eval_every=2, batch_size=8), workdir)
  return workdir, f'idx:{folder}'


def analyse(workdir, out):
  """What analyze.py --workdir does, through the public API; returns the params analysed."""
  jax_ae.analyze(workdir, out, progress=None)
  return jax_ae.load_model(workdir)


@pytest.fixture(scope='module')
def analysed(run, tmp_path_factory):
  """(the analysis folder, the params it analysed): a whole study, so its tests are slow."""
  out = tmp_path_factory.mktemp('analysis')
  return out, analyse(run[0], out)


def png_size(path):
  assert path.read_bytes()[:8] == PNG_SIGNATURE
  with PIL.Image.open(path) as image:
    return image.size


def expected_size(inches):
  return tuple(round(side * plots.DPI) for side in inches)


@pytest.mark.slow
def test_every_figure_at_its_size(analysed):
  out, _ = analysed
  sizes = {
      'training_curves.png': plots.curves_size(),
      'compression.png': plots.curves_size(),
      'reconstructions.png': plots.reconstruction_size(10 * study.PER_CLASS),
      'latent_pca.png': plots.scatter_size(1),
      'pixel_pca.png': plots.scatter_size(1),
      'pca_comparison.png': plots.scatter_size(2),
      'tsne_comparison.png': plots.scatter_size(2),
      'retrieval.png': plots.retrieval_size(10, study.RETRIEVED),
      'samples.png': plots.samples_size(*study.SAMPLE_GRID),
      'latent_interpolation.png': plots.interpolation_size(study.PAIRS, study.STEPS),
  }
  assert sizes.keys() == report.FIGURES.keys()
  for name, inches in sizes.items():
    assert png_size(out / name) == expected_size(inches), name
  assert sorted(path.name for path in out.iterdir()) == sorted(
      [*sizes, 'metrics.json', 'codes.npz', 'report.md'])


def numbers(tree):
  """Every number in a JSON tree, bools excluded."""
  if isinstance(tree, dict):
    return [x for value in tree.values() for x in numbers(value)]
  return [tree] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


@pytest.mark.slow
def test_metrics_json_holds_every_number(analysed, run):
  metrics = json.loads((analysed[0] / 'metrics.json').read_text())
  on = metrics['measured_on']
  assert on == {'workdir': str(run[0]), 'checkpoint_step': 2, 'dataset': run[1],
                'test_size': TEST_SIZE, 'training_rows': TRAIN_SIZE, 'map_sample': TEST_SIZE,
                'latent_dim': 576, 'untrained_init': {'seed': 0, 'init': 'torch'},
                'seed': analysis.SEED}
  assert metrics['protocol'] == analysis.PROTOCOL
  assert metrics['training'] == {
      'updates': 2, 'epochs': 0.4, 'evaluations': 1, 'first_eval_step': 2,
      'first_test_mse': metrics['training']['final_test_mse'],
      'final_test_mse': metrics['training']['final_test_mse'],
      'final_train_loss': metrics['training']['final_train_loss']}
  assert list(metrics['test_mse']['per_class']) == list('0123456789')
  spaces = {'codes': 576, 'untrained': 576, 'pixels': 784, 'pixel_pca_40': 40}
  for space, dims in spaces.items():  # PCA-576 and PCA-50 capped at the 40 training rows
    numbers_of = metrics[space]
    assert numbers_of['dims'] == dims
    assert set(numbers_of) == {'dims', 'pca_2d', 'knn_accuracy', 'probe', 'retrieval',
                               *(('tsne_2d',) if space in study.SPACES else ())}
    assert len(numbers_of['probe']['cv_accuracy']) == 2 * len(analysis.PROBE_CS)
    assert numbers_of['probe']['C'] in analysis.PROBE_CS
    assert set(numbers_of['retrieval']) == {f'precision_at_{k}' for k in analysis.RETRIEVAL_KS}
  assert not any(key.startswith('pixel_pca_') and key not in spaces for key in metrics)
  assert list(metrics['comparisons']) == [space for space in spaces if space != 'codes']
  for found in metrics['comparisons'].values():
    assert list(found) == list(report.MEASURES)
    for interval in found.values():
      assert interval['low'] <= interval['difference'] <= interval['high']
  assert set(metrics['untrained_seeds']) == {'1', '2'}
  # The control is the run's own initial network: its codes are those of init_params(seed 0).
  test = data.load_dataset(run[1]).test
  untrained = inference.encode(init_params(jax.random.key(0)), test.images)
  assert metrics['untrained']['knn_accuracy'] == analysis.knn_accuracy(untrained, test.labels)
  compression = metrics['compression']
  assert compression['latent_dim'] == 576 and 'pca_test_mse' not in compression  # 576 > 40 rows
  assert len(compression['pca_test_mse_by_components']) == TRAIN_SIZE
  assert compression['autoencoder_test_mse'] == metrics['test_mse']['overall']
  assert set(metrics['sampling']) == {
      'samples', 'test_images', 'sample_nearest_code_distance', 'test_nearest_code_distance',
      'sample_nearest_train_mse', 'decoded_test_nearest_train_mse', 'test_nearest_train_mse'}
  found = numbers({key: value for key, value in metrics.items() if key != 'measured_on'})
  assert len(found) >= 70 and all(math.isfinite(x) for x in found)
  # The overall MSE is the mean over balanced classes, so the mean of the per-class ones.
  assert metrics['test_mse']['overall'] == pytest.approx(
      np.mean(list(metrics['test_mse']['per_class'].values())))
  # The training loop's evaluation of the same checkpoint (on a GPU at its default precision:
  # observed 1e-6 apart on an H200).
  assert metrics['test_mse']['overall'] == pytest.approx(metrics['training']['final_test_mse'],
                                                         rel=1e-5)


@pytest.mark.slow
def test_codes_npz_holds_the_codes_and_their_maps(analysed, run):
  out, params = analysed
  test = data.load_dataset(run[1]).test
  with np.load(out / 'codes.npz') as saved:
    assert set(saved.files) == {'codes', 'labels', 'class_names', 'pca_codes', 'pca_pixels',
                                'tsne_codes', 'tsne_pixels', 'tsne_rows'}
    np.testing.assert_allclose(saved['codes'], inference.encode(params, test.images), rtol=1e-6)
    np.testing.assert_array_equal(saved['labels'], test.labels)
    assert list(saved['class_names']) == list(data.DIGITS)
    for name in ('pca_codes', 'pca_pixels', 'tsne_codes', 'tsne_pixels'):
      assert saved[name].shape == (TEST_SIZE, 2), name
    np.testing.assert_array_equal(saved['tsne_rows'], np.arange(TEST_SIZE))


@pytest.mark.slow
def test_the_report_links_every_figure_and_shows_every_metric(analysed):
  text = (analysed[0] / 'report.md').read_text()
  assert re.findall(r'!\[[^]]*\]\(([^)]+)\)', text) == list(report.FIGURES)
  for _, label, _ in report.METRIC_ROWS:
    assert f'| {label} |' in text
  assert 'Run `' in text and 'checkpoint step 2' in text


@pytest.mark.slow
def test_two_analyses_of_a_run_are_identical(analysed, run, tmp_path):
  out, _ = analysed
  analyse(run[0], tmp_path)
  assert (tmp_path / 'metrics.json').read_text() == (out / 'metrics.json').read_text()
  assert (tmp_path / 'report.md').read_text() == (out / 'report.md').read_text()
  with np.load(out / 'codes.npz') as first, np.load(tmp_path / 'codes.npz') as second:
    for name in first.files:
      np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def random_dataset(test_labels, train_labels=np.arange(40) % 10):
  rng = np.random.default_rng(0)
  split = lambda labels: data.Split(  # noqa: E731
      rng.integers(0, 256, (len(labels), 28, 28, 1), dtype=np.uint8), np.asarray(labels, np.int32))
  return data.Dataset('random', split(train_labels), split(test_labels), data.DIGITS)


@pytest.mark.parametrize('test_labels,train_labels,message', [
    (np.zeros(30), np.arange(40) % 10, r"the test split holds a single class \('0'\)"),
    (np.arange(40) % 10, np.arange(40) % 10,
     r"the test split holds 4 image\(s\) of class '0', fewer than the 5 cross-validation folds"),
    (np.arange(60) % 10, np.arange(20) % 10,
     r"the training split holds 2 image\(s\) of class '0', fewer than the 3 cross-validation"),
])
def test_data_the_study_cannot_measure_is_one_data_error(test_labels, train_labels, message):
  dataset = random_dataset(test_labels, train_labels)
  with pytest.raises(data.DataError, match=message) as error:
    study.measure(init_params(jax.random.key(0)), dataset, {'torch_weights': 'lab.pt'})
  assert '\n' not in str(error.value)


def edited(metrics, **changes):
  """A deep copy of metrics with changes {'space.key.key': value} applied."""
  metrics = copy.deepcopy(metrics)
  for path, value in changes.items():
    *parents, last = path.split('.')
    tree = metrics
    for key in parents:
      tree = tree[key]
    tree[last] = value
  return metrics


@pytest.mark.slow
def test_the_conclusion_follows_the_intervals(analysed):
  metrics = json.loads((analysed[0] / 'metrics.json').read_text())
  better = {'difference': 0.1, 'low': 0.05, 'high': 0.15, 'verdict': 'better'}
  worse = {'difference': -0.1, 'low': -0.15, 'high': -0.05, 'verdict': 'worse'}
  unclear = {'difference': 0.01, 'low': -0.02, 'high': 0.04, 'verdict': 'no clear difference'}
  text = report.markdown(edited(metrics, **{
      'comparisons.untrained.probe': unclear, 'comparisons.untrained.knn': better,
      'comparisons.untrained.knn_pca_2d': unclear, 'comparisons.untrained.retrieval': unclear,
      'comparisons.pixels.probe': better, 'comparisons.pixels.knn': better,
      'comparisons.pixels.knn_pca_2d': worse, 'comparisons.pixels.retrieval': better}))
  assert ('Against the untrained network, the codes show no clear difference on the linear probe '
          'and 5-NN in the 2-D PCA and retrieval precision@10; score higher on 5-NN on the full '
          'vectors.') in text
  assert ('Against the pixels, the codes score higher on the linear probe and 5-NN on the full '
          'vectors and retrieval precision@10; score lower on 5-NN in the 2-D PCA.') in text
  assert '| the linear probe | +1.0 [-2.0, +4.0] no clear difference | +10.0 [+5.0, +15.0] ' \
         '**better** |' in text
  compressed = report.markdown(edited(metrics, **{
      'compression.latent_dim': 30, 'compression.autoencoder_test_mse': 0.01,
      'compression.pca_test_mse': 0.04, 'compression.ratio': 0.25}))
  assert 'a ratio of 0.25, the autoencoder reconstructs better than PCA of the same size' \
      in compressed
  far = report.markdown(edited(metrics, **{'sampling.sample_nearest_code_distance': 30.0,
                                           'sampling.test_nearest_code_distance': 10.0}))
  assert '3.00 times as far' in far and "Part of the Gaussian's mass lies away" in far
  near = report.markdown(edited(metrics, **{'sampling.sample_nearest_code_distance': 10.0,
                                            'sampling.test_nearest_code_distance': 10.0}))
  assert 'The samples stay as close to the training codes as real codes do' in near


@pytest.mark.slow
def test_a_pytorch_model_is_studied_without_training_curves(run, tmp_path):
  torch = pytest.importorskip('torch')
  from jax_ae import torch_port
  torch.manual_seed(0)
  weights = tmp_path / 'lab.pt'
  torch.save({'epoch': 1, 'model_state_dict': torch_port.torch_autoencoder().state_dict()},
             weights)
  out = tmp_path / 'torch-analysis'
  assert analyze.main(['--torch-weights', str(weights), '--data', run[1], '--out', str(out)]) == 0
  metrics = json.loads((out / 'metrics.json').read_text())
  assert metrics['measured_on']['torch_weights'] == str(weights) and 'training' not in metrics
  assert all((out / name).exists() for name in report.FIGURES if name != 'training_curves.png')
  assert not (out / 'training_curves.png').exists()
  text = (out / 'report.md').read_text()
  assert f'PyTorch weights `{weights}`' in text and '## Training' not in text


# analyze.py, the command line

def test_analyze_writes_into_out_when_given(run, tmp_path, monkeypatch):
  written = []
  monkeypatch.setattr(study, 'analyze',
                      lambda params, data, source, out, records=None, **controls: written.append(
                          (out, source['checkpoint_step'], len(records))))
  assert analyze.main(['--workdir', str(run[0]), '--out', str(tmp_path / 'elsewhere')]) == 0
  assert analyze.main(['--workdir', str(run[0])]) == 0
  opened = rundir.open_for_reading(run[0])
  records = len(opened.records())
  opened.close()
  assert written == [(tmp_path / 'elsewhere', 2, records), (run[0] / 'analysis', 2, records)]


@pytest.mark.parametrize('argv', [['--workdir', 'missing'], ['--workdir', '.'], [],
                                  ['--torch-weights', 'lab.pt']])
def test_analyze_without_a_run_exits_2_with_one_line(tmp_path, monkeypatch, capsys, argv):
  monkeypatch.chdir(tmp_path)  # an empty folder: no runs/ either
  assert analyze.main(argv) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1
  assert not (tmp_path / 'analysis').exists()
