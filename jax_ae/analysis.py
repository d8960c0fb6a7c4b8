"""The numbers of the latent-space study: the codes against the raw pixels, and what the codes
allow (2-D maps, a linear probe, retrieval, sampling).

Pure functions over numpy arrays; every metric is scikit-learn's, every random choice is seeded
with SEED and every fit runs on one thread, so two analyses of the same run give the same
numbers. check_classes() states what the metrics need of a split, so that a split that lacks it
is a DataError that says so, never a ValueError from deep inside scikit-learn.
"""
import warnings

import numpy as np
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE, trustworthiness
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_val_score
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from jax_ae.data import DataError

SEED = 0
NEIGHBORS = 5  # the k of the k-NN accuracies and of trustworthiness
FOLDS = 5  # of the k-NN accuracies, on the test split
# trustworthiness ranks all pairwise distances, O(n^2) in time and memory, and t-SNE took 25-34 s
# per space on one core for 5,000 points, 15 for 3,000: both run on the same seeded 3,000 test
# images, which keeps analyze.py on 10,000 test images to about 2 minutes on 2 cores.
MAP_SAMPLE = 3000
# The probe's training rows (and the retrieval database, and the Gaussian's codes): a seeded
# subsample of the training split keeps each fit to seconds on 60,000 images.
PROBE_TRAIN_SAMPLE = 10_000
# The inverse regularizations the probe chooses from: decades around those that won on
# Fashion-MNIST (0.01 for the pixels, 1 for the codes of a 40-step run).
PROBE_CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
PROBE_FOLDS = 3
PROBE_MAX_ITER = 2000
# The search's fits stop at a 10x looser tolerance than scikit-learn's default: on a 40-step
# Fashion-MNIST run that took 3x less time, chose the same C for both spaces, and moved the
# fold accuracies by at most 0.7 points (at C = 10; 0.03 at the chosen C). The probe that is
# scored is fit at the default tolerance.
PROBE_SEARCH_TOL = 1e-3
TSNE_PCA_DIMS = 50
TSNE_PERPLEXITY = 30.0
# The t-SNE metrics move with perplexity and seed: each space is mapped at these
# (perplexity, seed) pairs, and the figure shows the first.
TSNE_RUNS = ((TSNE_PERPLEXITY, SEED), (10.0, SEED), (50.0, SEED), (TSNE_PERPLEXITY, 1),
             (TSNE_PERPLEXITY, 2))
RETRIEVAL_KS = (1, 5, 10)
KNN_FOLD_SEEDS = (0, 1, 2, 3, 4)  # the k-NN accuracies are averaged over these fold shuffles
BASELINE_PCA_DIMS = 50  # a fixed-size PCA of the pixels, besides the one of the code's size
CONFIDENCE = 0.95  # of every interval, jointly over the comparisons of one analysis
BOOTSTRAP = 2000

PROTOCOL = {
    'training': 'runs only, from the run\'s metrics log: updates and epochs at its last '
                'evaluation, the test MSE per pixel at its first and at its last evaluation, '
                'and the last train loss (the mean over the last logged updates)',
    'training_rows': f'a seeded subsample of {PROBE_TRAIN_SAMPLE:,} images of the training '
                     'split (all of a smaller one): the probe trains on them, they are the '
                     'retrieval database, and the Gaussian is fit to their codes',
    'pca_2d': 'PCA(n_components=2) fit on the test split; pc1/pc2_variance are its explained '
              'variance ratios, silhouette the silhouette score of the test labels in it, '
              f'knn_accuracy the {NEIGHBORS}-NN accuracy in it ({FOLDS}-fold stratified '
              f'cross-validation on the test split), trustworthiness sklearn\'s '
              f'(n_neighbors={NEIGHBORS}) on a seeded subsample of {MAP_SAMPLE:,} test images '
              '(all of a smaller split)',
    'tsne_2d': 'sklearn TSNE (2-D, init pca, learning rate auto) of the subsample that '
               f'trustworthiness uses, after a seeded PCA to {TSNE_PCA_DIMS} dimensions, at each '
               f'(perplexity, seed) of {[list(run) for run in TSNE_RUNS]} (perplexity at most a '
               'third of a small split); silhouette, knn_accuracy and trustworthiness (against '
               'the full vectors) as for pca_2d, on that subsample, for the first (the figure\'s), '
               'and their mean and std over all in runs_mean and runs_std',
    'knn_accuracy': f'{NEIGHBORS}-NN accuracy on the full vectors, {FOLDS}-fold stratified '
                    'cross-validation on the test split, averaged over the fold shuffles '
                    f'{list(KNN_FOLD_SEEDS)} (knn_accuracy_by_fold_seed holds each); pca_2d\'s '
                    'knn_accuracy alike',
    'probe': 'logistic regression (lbfgs, L2) trained on the training rows and scored on the '
             'whole test split; its preprocessing (standardized or as is) and its C (one of '
             f'{list(PROBE_CS)}) are the pair with the best mean accuracy in {PROBE_FOLDS}-fold '
             'stratified cross-validation on the training rows, the same search for every '
             f'space (scaler fit inside each fold, search fits at tol {PROBE_SEARCH_TOL:g}, '
             'ties to the earlier pair); cv_accuracy holds each pair\'s mean fold accuracy, '
             'C_at_grid_edge says whether a C outside the grid might score higher, converged '
             'whether every fit converged',
    'spaces': 'codes: the trained encoder\'s; untrained: the same network at the run\'s own '
              'initial weights (its seed and initialization), never trained; pixels: the raw '
              'pixels in [0, 1]; pixel_pca_D: the pixels projected on their first D principal '
              'components (PCA fit on the training rows), D = the code\'s size and a fixed '
              f'{BASELINE_PCA_DIMS}; untrained_seeds: the probe and full-vector k-NN of the '
              'untrained network at further initialization seeds',
    'comparisons': 'codes minus each baseline, per test image (the probe: correct or not; k-NN: '
                   'the fraction of fold shuffles in which it is classified correctly; '
                   'retrieval: the fraction of its nearest training rows of its class), as a '
                   f'paired bootstrap over the test images ({BOOTSTRAP} resamples, seeded); '
                   f'the intervals hold {CONFIDENCE:.0%} jointly over all comparisons of the '
                   'analysis (Bonferroni: each is a 1 - 0.05 / m percentile interval); better or '
                   'worse when the interval excludes 0, else no clear difference',
    'compression': 'test MSE per pixel of PCA of the pixels with k components (fit on the '
                   'training rows, k = 1 .. 784), beside the autoencoder\'s with a code of '
                   'latent_dim; ratio = autoencoder / PCA at k = latent_dim',
    'retrieval': 'for each test image, its k nearest training rows by Euclidean distance (codes '
                 'as they are, pixels in [0, 1]); precision_at_k is the fraction of them with '
                 'the query\'s label, averaged over the test split',
    'sampling': 'a Gaussian (mean and full covariance) fit to the codes of the training rows, '
                'and seeded samples of it; *_nearest_code_distance: the mean Euclidean distance '
                'of the samples, and of the codes of a seeded subsample of the test split, to '
                'their nearest training code; *_nearest_train_mse: the mean MSE per pixel to '
                'the nearest training image of the decoded samples, of the decoded codes of '
                'those test images (their reconstructions), and of those test images themselves',
}


def pixels(images):
  """uint8 (N, 28, 28, 1) -> (N, 784) float32 in [0, 1], the pixel space the codes face."""
  return images.reshape(len(images), -1).astype(np.float32) / 255.0


def subsample(num_rows, size, seed=SEED):
  """Sorted indices of a seeded random subset of size rows (all rows when there are fewer)."""
  if num_rows <= size:
    return np.arange(num_rows)
  return np.sort(np.random.default_rng(seed).choice(num_rows, size, replace=False))


def check_classes(labels, class_names, split, per_class, at_least):
  """Raises DataError unless labels hold two classes or more, each per_class times or more,
  and at_least rows: what the cross-validated metrics and the neighbour counts need."""
  present, counts = np.unique(labels, return_counts=True)
  if len(present) < 2:
    raise DataError(f'the {split} holds a single class ({class_names[present[0]]!r}): the '
                    'analysis compares classes, use data with two or more')
  if counts.min() < per_class:
    rare = present[np.argmin(counts)]
    raise DataError(f'the {split} holds {counts.min()} image(s) of class '
                    f'{class_names[rare]!r}, fewer than the {per_class} cross-validation folds: '
                    f'use data with at least {per_class} images of each class')
  if len(labels) < at_least:
    raise DataError(f'the {split} holds {len(labels)} images: the analysis needs at least '
                    f'{at_least}')


def pca_2d(features):
  """(projection (N, 2), explained variance ratio (2,)) of the 2-D PCA of features."""
  pca = PCA(n_components=2, svd_solver='randomized', random_state=SEED)
  projection = pca.fit_transform(np.asarray(features, np.float64))
  return projection, pca.explained_variance_ratio_


def pixel_pca(train_pixels, test_pixels, dims):
  """(training rows, test split) projected on the first dims principal components of the
  training rows."""
  pca = PCA(n_components=dims, random_state=SEED).fit(np.asarray(train_pixels, np.float64))
  return pca.transform(train_pixels), pca.transform(test_pixels)


def pca_test_mse(train_pixels, test_pixels):
  """(K,) the test MSE per pixel of PCA with k = 1 .. K components fit on the training rows.

  One SVD: a test image's squared residual with k components is its centred squared norm
  minus its first k squared coordinates.
  """
  train = np.asarray(train_pixels, np.float64)
  mean = train.mean(axis=0)
  components = np.linalg.svd(train - mean, full_matrices=False)[2]  # (K, 784), by variance
  centred = np.asarray(test_pixels, np.float64) - mean
  explained = np.cumsum(np.mean((centred @ components.T) ** 2, axis=0))  # (K,)
  return (np.mean(np.sum(centred ** 2, axis=1)) - explained) / train.shape[1]


def tsne_2d(features, perplexity=TSNE_PERPLEXITY, seed=SEED):
  """(projection (N, 2), perplexity used): seeded t-SNE after a seeded PCA to TSNE_PCA_DIMS."""
  reduced = PCA(min(TSNE_PCA_DIMS, *features.shape), random_state=SEED).fit_transform(
      np.asarray(features, np.float64))
  # t-SNE needs perplexity < N; at a third of N its 3 * perplexity neighbours still fit.
  perplexity = min(perplexity, (len(features) - 1) / 3)
  tsne = TSNE(2, perplexity=perplexity, init='pca', learning_rate='auto', random_state=seed)
  return tsne.fit_transform(reduced), perplexity


def knn_correct(features, labels):
  """(N,) for each row, the fraction of the fold shuffles KNN_FOLD_SEEDS in which a k-NN
  classifier fit on the other folds classifies it correctly."""
  correct = [cross_val_predict(KNeighborsClassifier(NEIGHBORS), features, labels,
                               cv=StratifiedKFold(FOLDS, shuffle=True, random_state=seed)) == labels
             for seed in KNN_FOLD_SEEDS]
  return np.mean(correct, axis=0)


def knn_accuracy(features, labels):
  """Mean k-NN accuracy over stratified folds and the fold shuffles KNN_FOLD_SEEDS."""
  return float(np.mean(knn_correct(features, labels)))


def map_metrics(features, projection, labels, sample):
  """How a 2-D map of features shows the classes: silhouette and k-NN accuracy of all its
  points, trustworthiness (against features) on the rows `sample`."""
  return {
      'silhouette': float(silhouette_score(projection, labels)),
      'knn_accuracy': knn_accuracy(projection, labels),
      'trustworthiness': float(trustworthiness(features[sample], projection[sample],
                                               n_neighbors=NEIGHBORS)),
  }


def linear_probe(C, tol=1e-4, standardize=True):
  """Logistic regression, on standardized features or as they are, unfitted; tol 1e-4 is
  scikit-learn's."""
  return make_pipeline(StandardScaler() if standardize else 'passthrough',
                       LogisticRegression(C=C, tol=tol, max_iter=PROBE_MAX_ITER))


def probe(train_features, train_labels, test_features, test_labels):
  """The linear probe, its preprocessing and C chosen by cross-validation on the training rows;
  see PROTOCOL. Returns (numbers, (N,) whether each test image is classified correctly)."""
  folds = StratifiedKFold(PROBE_FOLDS, shuffle=True, random_state=SEED)
  grid = [(standardize, C) for standardize in (True, False) for C in PROBE_CS]
  with warnings.catch_warnings(record=True) as caught:  # recorded, not printed: converged says
    warnings.simplefilter('always', ConvergenceWarning)
    scores = [cross_val_score(linear_probe(C, PROBE_SEARCH_TOL, standardize), train_features,
                              train_labels, cv=folds, error_score='raise').mean()
              for standardize, C in grid]
    standardize, C = grid[int(np.argmax(scores))]
    fitted = linear_probe(C, standardize=standardize).fit(train_features, train_labels)
  correct = fitted.predict(test_features) == test_labels
  return {
      'accuracy': float(np.mean(correct)),
      'C': C,
      'standardized': standardize,
      'cv_accuracy': {f'{"standardized" if s else "as is"}, C={c:g}': float(a)
                      for (s, c), a in zip(grid, scores)},
      'C_at_grid_edge': C in (PROBE_CS[0], PROBE_CS[-1]),
      'converged': not any(issubclass(w.category, ConvergenceWarning) for w in caught),
  }, correct


def nearest(database, queries, k):
  """(len(queries), k) indices of each query's k nearest database rows (Euclidean), nearest
  first."""
  neighbours = NearestNeighbors(n_neighbors=k, algorithm='brute').fit(database)
  return neighbours.kneighbors(queries, return_distance=False)


def retrieval_hits(database, database_labels, queries, query_labels, k=max(RETRIEVAL_KS)):
  """(len(queries), k) whether each query's i-th nearest database row has its label."""
  return database_labels[nearest(database, queries, k)] == query_labels[:, None]


def retrieval_precision(database, database_labels, queries, query_labels, ks=RETRIEVAL_KS):
  """{k: the fraction of each query's k nearest database rows with its label, averaged}."""
  hits = retrieval_hits(database, database_labels, queries, query_labels, max(ks))
  return {k: float(hits[:, :k].mean()) for k in ks}


def paired_difference(a, b, comparisons=1, seed=SEED):
  """The mean of a - b over paired per-image scores, with a bootstrap interval that holds at
  CONFIDENCE jointly over `comparisons` intervals (Bonferroni), and its verdict."""
  differences = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  rng = np.random.default_rng(seed)
  means = np.concatenate([differences[rng.integers(0, len(differences), (100, len(differences)))]
                          .mean(axis=1) for _ in range(BOOTSTRAP // 100)])
  alpha = (1 - CONFIDENCE) / comparisons
  low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
  return {'difference': float(differences.mean()), 'low': float(low), 'high': float(high),
          'verdict': 'better' if low > 0 else 'worse' if high < 0 else 'no clear difference'}


def space_metrics(train_features, train_labels, test_features, test_labels, maps=True):
  """Every metric of one feature space (codes, pixels, a control); PROTOCOL says what each
  means. maps=False: the probe and full-vector k-NN only.

  The training rows train the probe and are the retrieval database. Returns (metrics, maps,
  per_image): a dict of numbers; {'pca': (N, 2), 'tsne': (M, 2), 'tsne_rows': (M,)}, the 2-D
  maps of the test split (t-SNE's of the rows tsne_rows); and {measure: (N,) per-image
  scores} for the paired comparisons.
  """
  # One BLAS/OpenMP thread: the sums, hence the numbers, do not depend on the core count, and
  # on a busy 2-core machine spinning OpenMP threads made the probe 15x slower.
  with threadpool_limits(1):
    return _space_metrics(train_features, train_labels, test_features, test_labels, maps)


def _space_metrics(train_features, train_labels, test_features, test_labels, maps):
  probe_numbers, probe_correct = probe(train_features, train_labels, test_features, test_labels)
  knn = knn_correct(test_features, test_labels)
  metrics = {'dims': test_features.shape[1], 'knn_accuracy': float(knn.mean()),
             'probe': probe_numbers}
  per_image = {'probe': probe_correct, 'knn': knn}
  if not maps:
    return metrics, {}, per_image
  sample = subsample(len(test_features), MAP_SAMPLE)
  pca, variance = pca_2d(test_features)
  hits = retrieval_hits(train_features, train_labels, test_features, test_labels)
  per_image.update(knn_pca_2d=knn_correct(pca, test_labels),
                   retrieval=hits[:, :max(RETRIEVAL_KS)].mean(axis=1))
  metrics.update(
      pca_2d={'pc1_variance': float(variance[0]), 'pc2_variance': float(variance[1]),
              **map_metrics(test_features, pca, test_labels, sample)},
      retrieval={f'precision_at_{k}': float(hits[:, :k].mean()) for k in RETRIEVAL_KS})
  return metrics, {'pca': pca, 'tsne_rows': sample}, per_image


def tsne_metrics(features, labels):
  """(metrics, the first run's map): t-SNE of a space's rows at every TSNE_RUNS; see PROTOCOL."""
  with threadpool_limits(1):
    runs, first = [], None
    everything = np.arange(len(features))
    for perplexity, seed in TSNE_RUNS:
      projection, used = tsne_2d(features, perplexity, seed)
      first = projection if first is None else first
      runs.append({'perplexity': used, 'seed': seed,
                   **map_metrics(features, projection, labels, everything)})
  names = ('silhouette', 'knn_accuracy', 'trustworthiness')
  return {
      **{name: runs[0][name] for name in names}, 'perplexity': runs[0]['perplexity'],
      'runs': runs,
      'runs_mean': {name: float(np.mean([run[name] for run in runs])) for name in names},
      'runs_std': {name: float(np.std([run[name] for run in runs])) for name in names},
  }, first


def fit_gaussian(codes):
  """(mean (D,), covariance (D, D)) of codes (N, D), in float64."""
  codes = np.asarray(codes, np.float64)
  return codes.mean(axis=0), np.cov(codes, rowvar=False)


def sample_gaussian(mean, covariance, num_samples, seed=SEED):
  """(num_samples, D) seeded samples of N(mean, covariance).

  Through the eigendecomposition rather than Cholesky: a covariance fit to fewer codes than
  dimensions is singular, and its samples then stay in the codes' span.
  """
  eigenvalues, eigenvectors = np.linalg.eigh(covariance)
  scale = eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))  # scale @ scale.T = covariance
  normal = np.random.default_rng(seed).standard_normal((num_samples, len(mean)))
  return mean + normal @ scale.T


def nearest_distance(points, database):
  """(N,) the Euclidean distance of each point to its nearest database row."""
  neighbours = NearestNeighbors(n_neighbors=1, algorithm='brute').fit(database)
  return neighbours.kneighbors(points)[0][:, 0]


def nearest_mse(images, database):
  """(N,) the MSE per pixel of each image to its nearest database image, both in [0, 1]."""
  images, database = images.reshape(len(images), -1), database.reshape(len(database), -1)
  return nearest_distance(images, database) ** 2 / images.shape[1]


def mse_by_class(errors, labels):
  """{label: mean per-image MSE} for each label in the split."""
  return {int(label): float(np.mean(errors[labels == label])) for label in np.unique(labels)}


def examples_per_class(labels, per_class):
  """Indices of the first per_class examples of each class, in class order."""
  return np.concatenate([np.flatnonzero(labels == label)[:per_class]
                         for label in np.unique(labels)])


def interpolation_pairs(labels, num_pairs, seed=SEED):
  """(num_pairs, 2) seeded index pairs of examples with different labels."""
  rng = np.random.default_rng(seed)
  if len(np.unique(labels)) < 2:
    raise DataError('the test split holds a single class: interpolating between classes '
                    'needs two, use data with two or more')
  starts = rng.choice(len(labels), num_pairs, replace=len(labels) < num_pairs)
  return np.array([(i, rng.choice(np.flatnonzero(labels != labels[i]))) for i in starts])


def interpolate(start, end, steps):
  """(steps, *start.shape) points on the straight line from start to end, both included."""
  t = np.linspace(0.0, 1.0, steps).reshape(-1, *[1] * np.ndim(start))
  return (1 - t) * start + t * end


def steps_per_epoch(records):
  """Updates per epoch of a run, from its metrics log: the 'start' record's; for a log of a
  jax-ae that stored none there, from the epoch its 'eval' records rounded to 3 decimals
  (the one of the most epochs is the most exact); None when the log tells neither."""
  starts = [r for r in records or () if r.get('event') == 'start' and 'steps_per_epoch' in r]
  if starts:
    return starts[-1]['steps_per_epoch']
  evals = [r for r in records or () if r.get('event') == 'eval' and r.get('epoch', 0) > 0]
  last = max(evals, key=lambda record: record['epoch'], default=None)
  return last['step'] / last['epoch'] if last else None
