"""The study's metrics on cases with known answers."""
import numpy as np
import pytest

from jax_ae import analysis, data

CLASSES = 3
NAMES = ('a', 'b', 'c')


def blobs(n_per_class, seed, spread=50.0, dims=20):
  """(points, labels): unit Gaussians around CLASSES fixed random centres, noise from seed."""
  centres = np.random.default_rng(0).normal(scale=spread, size=(CLASSES, dims))
  labels = np.repeat(np.arange(CLASSES), n_per_class)
  return centres[labels] + np.random.default_rng(seed).normal(size=(len(labels), dims)), labels


@pytest.fixture(scope='module')
def separated():
  (train, train_labels), (test, test_labels) = blobs(100, 1), blobs(100, 2)
  return analysis.space_metrics(train, train_labels, test, test_labels)


def test_separated_blobs_score_perfectly(separated):
  metrics, maps, per_image = separated
  assert maps['pca'].shape == (300, 2)
  np.testing.assert_array_equal(maps['tsne_rows'], np.arange(300))
  assert metrics['pca_2d']['silhouette'] > 0.7 and metrics['pca_2d']['knn_accuracy'] == 1.0
  assert metrics['knn_accuracy'] == 1.0
  for measure in ('probe', 'knn', 'knn_pca_2d', 'retrieval'):
    np.testing.assert_array_equal(per_image[measure], 1.0)
  assert metrics['probe']['accuracy'] == 1.0 and metrics['probe']['converged']
  assert metrics['retrieval'] == {'precision_at_1': 1.0, 'precision_at_5': 1.0,
                                  'precision_at_10': 1.0}
  # Three centres span a plane: the two PCs hold nearly all the variance.
  assert metrics['pca_2d']['pc1_variance'] + metrics['pca_2d']['pc2_variance'] > 0.95
  assert metrics['dims'] == 20


def test_shuffled_labels_score_at_chance():
  points, labels = blobs(200, 1)
  shuffled = np.random.default_rng(3).permutation(labels)
  train, test = slice(0, None, 2), slice(1, None, 2)
  metrics, _, _ = analysis.space_metrics(points[train], shuffled[train], points[test],
                                         shuffled[test])
  tsne, _ = analysis.tsne_metrics(points[test], shuffled[test])
  chance = 1 / CLASSES
  accuracies = {
      'pca knn': metrics['pca_2d']['knn_accuracy'], 'tsne knn': tsne['knn_accuracy'],
      'knn': metrics['knn_accuracy'], 'probe': metrics['probe']['accuracy'],
      **metrics['retrieval'],
  }
  for name, accuracy in accuracies.items():
    assert abs(accuracy - chance) < 0.12, (name, accuracy)
  assert abs(metrics['pca_2d']['silhouette']) < 0.1


def test_retrieval_precision_counts_the_neighbours_of_the_querys_class():
  database = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
  labels = np.array([0, 0, 0, 1, 1, 1])
  queries, query_labels = np.array([[0.4], [11.4]]), np.array([0, 0])
  # Query 0.4 is among class 0, query 11.4 among class 1 but labelled 0.
  precision = analysis.retrieval_precision(database, labels, queries, query_labels, ks=(1, 3, 5))
  assert precision == {1: 0.5, 3: 0.5, 5: pytest.approx((3 / 5 + 2 / 5) / 2)}
  np.testing.assert_array_equal(analysis.nearest(database, queries, 2), [[0, 1], [4, 5]])


def sparse_noise(n, seed, informative=50, noise=200, signal=0.15, rate=0.02):
  """Two classes apart by a little in each of `informative` Gaussian features, and `noise`
  features that are 1 in a random 2% of rows, 0 else: standardized, those spikes are large, and
  an unregularized probe fits them."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, n)
  shift = signal * (2 * labels[:, None] - 1)
  return np.concatenate([rng.normal(size=(n, informative)) + shift,
                         (rng.random((n, noise)) < rate).astype(float)], axis=1), labels


def test_the_probe_chooses_a_small_C_where_a_small_C_is_best():
  (train, train_labels), (test, test_labels) = sparse_noise(300, 1), sparse_noise(4000, 2)
  found, correct = analysis.probe(train, train_labels, test, test_labels)
  standardize = found['standardized']
  on_test = {C: analysis.linear_probe(C, standardize=standardize).fit(train, train_labels)
             .score(test, test_labels) for C in analysis.PROBE_CS}
  best = max(on_test, key=on_test.get)
  assert best <= 0.01  # the known answer, on 4,000 test rows
  assert found['C'] <= 0.01 and not found['C_at_grid_edge']
  assert found['accuracy'] == pytest.approx(on_test[found['C']]) == pytest.approx(correct.mean())
  old_protocol = analysis.linear_probe(1.0).fit(train, train_labels).score(test, test_labels)
  assert found['accuracy'] > old_protocol + 0.02  # standardized, C = 1
  assert len(found['cv_accuracy']) == 2 * len(analysis.PROBE_CS)  # both preprocessings
  assert found['converged']


def test_the_probe_chooses_not_to_standardize_where_scaling_harms():
  # Feature 0 carries the class at a large scale; 40 noise features at a tiny one, which
  # standardizing blows up to the same weight as the signal.
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 400)
  features = np.concatenate([(2 * labels[:, None] - 1) + rng.normal(scale=1.5, size=(400, 1)),
                             rng.normal(scale=1e-3, size=(400, 40))], axis=1)
  found, _ = analysis.probe(features[:100], labels[:100], features[100:], labels[100:])
  assert found['standardized'] is False
  best = max(found['cv_accuracy'].values())
  assert max(v for k, v in found['cv_accuracy'].items() if k.startswith('standardized')) < best


def test_identical_predictions_make_no_difference():
  scores = np.random.default_rng(0).random(500) < 0.8
  found = analysis.paired_difference(scores, scores, comparisons=10)
  assert found == {'difference': 0.0, 'low': 0.0, 'high': 0.0, 'verdict': 'no clear difference'}


def test_a_clearly_better_space_is_found_with_an_interval_that_excludes_zero():
  (train, train_labels), (test, test_labels) = blobs(100, 1, spread=3.0), blobs(100, 2, spread=3.0)
  rng = np.random.default_rng(5)
  noisy = lambda points: points + rng.normal(scale=6.0, size=points.shape)  # a worse space
  _, _, good = analysis.space_metrics(train, train_labels, test, test_labels, maps=False)
  _, _, bad = analysis.space_metrics(noisy(train), train_labels, noisy(test), test_labels,
                                     maps=False)
  found = analysis.paired_difference(good['knn'], bad['knn'], comparisons=4)
  assert found['verdict'] == 'better' and 0 < found['low'] < found['difference'] < found['high']
  assert analysis.paired_difference(bad['knn'], good['knn'], comparisons=4)['verdict'] == 'worse'
  # The interval widens with the number of comparisons it must hold jointly over.
  alone = analysis.paired_difference(good['knn'], bad['knn'])
  assert found['low'] < alone['low'] and found['high'] > alone['high']


def test_a_bootstrap_interval_covers_the_normal_one():
  # 0/1 differences with p = 0.3 of +1: the bootstrap's interval is the normal one's, to
  # within the bootstrap's own noise.
  rng = np.random.default_rng(1)
  a, b = rng.random(4000) < 0.6, rng.random(4000) < 0.3
  found = analysis.paired_difference(a, b)
  d = a.astype(float) - b
  half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
  assert found['low'] == pytest.approx(d.mean() - half, abs=0.006)
  assert found['high'] == pytest.approx(d.mean() + half, abs=0.006)


def test_pca_test_mse_is_the_residual_of_sklearns_pca():
  from sklearn.decomposition import PCA
  rng = np.random.default_rng(0)
  train, test = rng.random((200, 12)), rng.random((50, 12))
  curve = analysis.pca_test_mse(train, test)
  assert curve.shape == (12,) and np.all(np.diff(curve) <= 1e-12)
  for k in (1, 5, 12):
    pca = PCA(k).fit(train)
    expected = np.mean((pca.inverse_transform(pca.transform(test)) - test) ** 2)
    assert curve[k - 1] == pytest.approx(expected, abs=1e-12)


def test_a_plane_in_high_dimensions_is_projected_faithfully():
  rng = np.random.default_rng(0)
  plane = rng.normal(size=(400, 2)) * [3.0, 1.0]  # variances 9 : 1
  basis = np.linalg.qr(rng.normal(size=(30, 2)))[0].T  # (2, 30), orthonormal rows
  points, labels = plane @ basis, np.arange(400) % CLASSES
  metrics, maps, _ = analysis.space_metrics(points, labels, points, labels)
  pca = metrics['pca_2d']
  np.testing.assert_allclose([pca['pc1_variance'], pca['pc2_variance']], [0.9, 0.1], atol=0.03)
  assert pca['trustworthiness'] == pytest.approx(1.0)
  # The projection is the plane itself, up to a rotation: distances are kept.
  np.testing.assert_allclose(np.linalg.norm(maps['pca'][1:] - maps['pca'][:-1], axis=1),
                             np.linalg.norm(plane[1:] - plane[:-1], axis=1), rtol=1e-6)


def test_metrics_are_deterministic():
  points, labels = blobs(100, 1, spread=1.5)  # overlapping: the numbers depend on the folds
  first = analysis.space_metrics(points[::2], labels[::2], points[1::2], labels[1::2])
  second = analysis.space_metrics(points[::2], labels[::2], points[1::2], labels[1::2])
  assert first[0] == second[0]
  for name in ('pca', 'tsne_rows'):
    np.testing.assert_array_equal(first[1][name], second[1][name])
  assert analysis.tsne_metrics(points, labels)[0] == analysis.tsne_metrics(points, labels)[0]


def test_the_maps_run_on_one_seeded_subsample(monkeypatch):
  monkeypatch.setattr(analysis, 'MAP_SAMPLE', 50)
  seen = []
  monkeypatch.setattr(analysis, 'trustworthiness',
                      lambda high, low, n_neighbors: seen.append((len(high), len(low))) or 1.0)
  points, labels = blobs(40, 1)
  metrics, maps, _ = analysis.space_metrics(points, labels, points, labels)
  assert seen == [(50, 50)]  # PCA's
  assert maps['pca'].shape == (120, 2)
  np.testing.assert_array_equal(maps['tsne_rows'], analysis.subsample(120, 50))
  np.testing.assert_array_equal(analysis.subsample(120, 50), analysis.subsample(120, 50))
  assert len(set(analysis.subsample(120, 50))) == 50


def test_tsne_fits_a_split_smaller_than_its_perplexity():
  points, labels = blobs(4, 1)
  projection, perplexity = analysis.tsne_2d(points)
  assert projection.shape == (12, 2) and perplexity == pytest.approx(11 / 3)


def test_samples_have_the_fitted_mean_and_covariance():
  rng = np.random.default_rng(0)
  codes = rng.normal(size=(500, 4)) @ rng.normal(size=(4, 4)) + [1.0, -2.0, 3.0, 0.5]
  mean, covariance = analysis.fit_gaussian(codes)
  np.testing.assert_allclose(mean, codes.mean(axis=0))
  samples = analysis.sample_gaussian(mean, covariance, 200_000)
  scale = np.sqrt(np.diag(covariance))
  # Sampling error of 200,000 draws: ~0.002 standard deviations.
  np.testing.assert_allclose((samples.mean(axis=0) - mean) / scale, 0, atol=0.01)
  np.testing.assert_allclose(np.cov(samples, rowvar=False) / np.outer(scale, scale),
                             covariance / np.outer(scale, scale), atol=0.01)
  np.testing.assert_array_equal(samples[:5], analysis.sample_gaussian(mean, covariance, 5))


def test_samples_of_fewer_codes_than_dimensions_stay_in_their_span():
  codes = np.random.default_rng(0).normal(size=(3, 10))  # a 2-D affine plane in 10-D
  samples = analysis.sample_gaussian(*analysis.fit_gaussian(codes), 100)
  basis = np.linalg.svd(codes[1:] - codes[0])[2][:2]  # the plane's directions
  offsets = samples - codes[0]
  # Off the plane: only the rounding of the zero eigenvalues, ~1e-8 of unit spreads.
  np.testing.assert_allclose(offsets - offsets @ basis.T @ basis, 0, atol=1e-6)


def test_nearest_mse_is_the_mse_to_the_closest_image():
  database = np.stack([np.zeros((2, 2, 1)), np.ones((2, 2, 1))])
  images = np.full((1, 2, 2, 1), 0.25)
  np.testing.assert_allclose(analysis.nearest_mse(images, database), [0.0625])
  np.testing.assert_allclose(analysis.nearest_distance(np.array([[3.0, 4.0]]),
                                                       np.array([[0.0, 0.0], [6.0, 8.0]])), [5.0])


@pytest.mark.parametrize('labels,message', [
    (np.zeros(30, int), r"the test split holds a single class \('a'\): the analysis compares "
                        'classes, use data with two or more'),
    (np.array([0] * 20 + [2] * 4), r"the test split holds 4 image\(s\) of class 'c', fewer than "
                                   r'the 5 cross-validation folds: use data with at least 5'),
    (np.array([0] * 5 + [1] * 5), 'the test split holds 10 images: the analysis needs at least 11'),
])
def test_a_split_the_metrics_cannot_measure_is_a_data_error(labels, message):
  with pytest.raises(data.DataError, match=message) as error:
    analysis.check_classes(labels, NAMES, 'test split', analysis.FOLDS, 11)
  assert '\n' not in str(error.value)


def test_interpolating_in_a_single_class_is_a_data_error():
  with pytest.raises(data.DataError, match='single class'):
    analysis.interpolation_pairs(np.zeros(5, int), 2)


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


def test_steps_per_epoch_from_the_log():
  start = {'event': 'start', 'step': 0, 'steps_per_epoch': 937}
  assert analysis.steps_per_epoch([start, {'event': 'eval', 'step': 937}]) == 937
  # A log of an older jax-ae: rounded epochs in the 'eval' records.
  evals = [{'event': 'eval', 'step': 40, 'epoch': 0.043},
           {'event': 'eval', 'step': 1874, 'epoch': 2.0},
           {'event': 'eval', 'step': 937, 'epoch': 1.0}]
  assert analysis.steps_per_epoch([{'event': 'start', 'step': 0}, *evals]) == 937
  assert analysis.steps_per_epoch([]) is None
