import json
import math
import re

import numpy as np
import PIL.Image
import pytest
from idx_files import write_idx

import analyze
from jax_ae import analysis, loop, plots
from jax_ae.config import Config

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
CLASSES = 3
SPACE_KEYS = {'dims', 'pc1_variance', 'pc2_variance', 'silhouette_2d', 'knn_accuracy_2d',
              'trustworthiness_2d', 'knn_accuracy', 'probe_accuracy', 'probe_converged'}


def blobs(n_per_class, seed, spread=50.0, dims=20):
  """(points, labels): unit Gaussians around CLASSES fixed random centres, noise from seed."""
  centres = np.random.default_rng(0).normal(scale=spread, size=(CLASSES, dims))
  labels = np.repeat(np.arange(CLASSES), n_per_class)
  return centres[labels] + np.random.default_rng(seed).normal(size=(len(labels), dims)), labels


def test_separated_blobs_score_perfectly():
  (train, train_labels), (test, test_labels) = blobs(100, 1), blobs(100, 2)
  metrics, projection = analysis.space_metrics(train, train_labels, test, test_labels)
  assert projection.shape == (len(test), 2)
  assert metrics['silhouette_2d'] > 0.9
  assert metrics['knn_accuracy_2d'] == metrics['knn_accuracy'] == 1.0
  assert metrics['probe_accuracy'] == 1.0 and metrics['probe_converged']
  # Three centres span a plane: the two PCs hold nearly all the variance.
  assert metrics['pc1_variance'] + metrics['pc2_variance'] > 0.95
  assert metrics['dims'] == 20


def test_shuffled_labels_score_at_chance():
  points, labels = blobs(200, 1)
  shuffled = np.random.default_rng(3).permutation(labels)
  train, test = slice(0, None, 2), slice(1, None, 2)
  metrics, _ = analysis.space_metrics(points[train], shuffled[train], points[test], shuffled[test])
  chance = 1 / CLASSES
  for name in ('knn_accuracy_2d', 'knn_accuracy', 'probe_accuracy'):
    assert abs(metrics[name] - chance) < 0.12, (name, metrics[name])
  assert abs(metrics['silhouette_2d']) < 0.1


def test_a_plane_in_high_dimensions_is_projected_faithfully():
  rng = np.random.default_rng(0)
  plane = rng.normal(size=(400, 2)) * [3.0, 1.0]  # variances 9 : 1
  basis = np.linalg.qr(rng.normal(size=(30, 2)))[0].T  # (2, 30), orthonormal rows
  points, labels = plane @ basis, np.arange(400) % CLASSES
  metrics, projection = analysis.space_metrics(points, labels, points, labels)
  np.testing.assert_allclose([metrics['pc1_variance'], metrics['pc2_variance']], [0.9, 0.1],
                             atol=0.03)
  assert metrics['trustworthiness_2d'] == pytest.approx(1.0)
  # The projection is the plane itself, up to a rotation: distances are kept.
  np.testing.assert_allclose(np.linalg.norm(projection[1:] - projection[:-1], axis=1),
                             np.linalg.norm(plane[1:] - plane[:-1], axis=1), rtol=1e-6)


def test_metrics_are_deterministic():
  points, labels = blobs(300, 1, spread=1.5)  # overlapping: the numbers depend on the folds
  first = analysis.space_metrics(points[::2], labels[::2], points[1::2], labels[1::2])
  second = analysis.space_metrics(points[::2], labels[::2], points[1::2], labels[1::2])
  assert first[0] == second[0]
  np.testing.assert_array_equal(first[1], second[1])


def test_trustworthiness_runs_on_a_seeded_subsample(monkeypatch):
  monkeypatch.setattr(analysis, 'TRUSTWORTHINESS_SAMPLE', 50)
  seen = []
  monkeypatch.setattr(analysis, 'trustworthiness',
                      lambda high, low, n_neighbors: seen.append(len(high)) or 1.0)
  points, labels = blobs(40, 1)
  analysis.space_metrics(points, labels, points, labels)
  assert seen == [50]
  np.testing.assert_array_equal(analysis.subsample(120, 50), analysis.subsample(120, 50))
  assert len(set(analysis.subsample(120, 50))) == 50


def test_mse_by_class_averages_within_each_class():
  errors, labels = np.array([1.0, 3.0, 10.0, 0.5]), np.array([0, 0, 2, 2])
  assert analysis.mse_by_class(errors, labels) == {0: 2.0, 2: 5.25}


def test_example_and_pair_choices():
  labels = np.array([2, 0, 2, 1, 0, 2, 1])
  np.testing.assert_array_equal(analysis.examples_per_class(labels, 2), [1, 4, 3, 6, 0, 2])
  pairs = analysis.interpolation_pairs(labels, 4)
  assert pairs.shape == (4, 2) and np.all(labels[pairs[:, 0]] != labels[pairs[:, 1]])
  np.testing.assert_array_equal(pairs, analysis.interpolation_pairs(labels, 4))
  line = analysis.interpolate(np.zeros(3), np.full(3, 4.0), 5)
  np.testing.assert_allclose(line[:, 0], [0, 1, 2, 3, 4])


# End to end, on a tiny real run: one training run shared by the tests below.

TEST_PER_CLASS = 6


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  folder = tmp_path_factory.mktemp('idx')
  rng = np.random.default_rng(0)
  for prefix, n in (('train', 40), ('t10k', 10 * TEST_PER_CLASS)):
    write_idx(folder / f'{prefix}-images-idx3-ubyte',
              rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    write_idx(folder / f'{prefix}-labels-idx1-ubyte', (np.arange(n) % 10).astype(np.uint8))
  workdir = tmp_path_factory.mktemp('run')
  loop.train(Config(data=f'idx:{folder}', steps=2, eval_every=2, batch_size=8), workdir)
  return workdir


@pytest.fixture(scope='module')
def analysed(run):
  assert analyze.main(['--workdir', str(run)]) == 0
  return run / 'analysis'


def png_size(path):
  assert path.read_bytes()[:8] == PNG_SIGNATURE
  with PIL.Image.open(path) as image:
    return image.size


def expected_size(inches):
  return tuple(round(side * plots.DPI) for side in inches)


def test_analyze_writes_every_figure_at_its_size(analysed):
  sizes = {
      'reconstructions.png': plots.reconstruction_size(10 * analyze.PER_CLASS),
      'latent_pca.png': plots.pca_size(1),
      'pixel_pca.png': plots.pca_size(1),
      'pca_comparison.png': plots.pca_size(2),
      'latent_interpolation.png': plots.interpolation_size(analyze.PAIRS, analyze.STEPS),
  }
  assert sizes.keys() == analyze.FIGURES.keys()
  for name, inches in sizes.items():
    assert png_size(analysed / name) == expected_size(inches), name


def test_metrics_json_holds_every_number(analysed, run):
  metrics = json.loads((analysed / 'metrics.json').read_text())
  on = metrics['measured_on']
  assert on['test_size'] == 10 * TEST_PER_CLASS and on['checkpoint_step'] == 2
  assert on['probe_train_size'] == 40 and on['trustworthiness_sample'] == 10 * TEST_PER_CLASS
  assert on['dataset'].startswith('idx:') and on['workdir'] == str(run)
  assert list(metrics['test_mse']['per_class']) == list('0123456789')
  numbers = [metrics['test_mse']['overall'], *metrics['test_mse']['per_class'].values()]
  for space, dims in (('codes', 576), ('pixels', 784)):
    assert metrics[space].keys() == SPACE_KEYS and metrics[space]['dims'] == dims
    numbers += [value for name, value in metrics[space].items()
                if name not in ('dims', 'probe_converged')]
  assert all(isinstance(x, float) and math.isfinite(x) for x in numbers)
  # The overall MSE is the mean over balanced classes, so the mean of the per-class ones.
  assert metrics['test_mse']['overall'] == pytest.approx(
      np.mean(list(metrics['test_mse']['per_class'].values())))


def test_report_links_every_figure(analysed):
  report = (analysed / 'report.md').read_text()
  assert set(re.findall(r'!\[[^]]*\]\(([^)]+)\)', report)) == set(analyze.FIGURES)
  for _, label, _ in analyze.METRIC_ROWS:
    assert f'| {label} |' in report


def test_analyze_writes_into_out_when_given(run, tmp_path, monkeypatch):
  written = []
  monkeypatch.setattr(analyze, 'analyze', lambda params, data, source, out: written.append(out))
  assert analyze.main(['--workdir', str(run), '--out', str(tmp_path / 'elsewhere')]) == 0
  assert analyze.main(['--workdir', str(run)]) == 0
  assert written == [tmp_path / 'elsewhere', run / 'analysis']


@pytest.mark.parametrize('argv', [['--workdir', 'missing'], ['--workdir', '.'], []])
def test_analyze_without_a_run_exits_2_with_one_line(tmp_path, monkeypatch, capsys, argv):
  monkeypatch.chdir(tmp_path)  # an empty folder: no runs/ either
  assert analyze.main(argv) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1
  assert not (tmp_path / 'analysis').exists()


def test_analyze_pytorch_weights(run, tmp_path):
  torch = pytest.importorskip('torch')
  from jax_ae import torch_port
  weights = tmp_path / 'lab.pt'
  torch.save(torch_port.torch_autoencoder().state_dict(), weights)
  data = json.loads((run / 'config.json').read_text())['data']
  out = tmp_path / 'torch-analysis'
  assert analyze.main(['--torch-weights', str(weights), '--data', data, '--out', str(out)]) == 0
  metrics = json.loads((out / 'metrics.json').read_text())
  assert metrics['measured_on']['torch_weights'] == str(weights)
  assert all((out / name).exists() for name in analyze.FIGURES)
  assert f'PyTorch weights `{weights}`' in (out / 'report.md').read_text()
