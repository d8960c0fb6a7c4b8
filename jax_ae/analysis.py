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
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
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
RETRIEVAL_KS = (1, 5, 10)

PROTOCOL = {
    'training': 'runs only, from the run\'s metrics log: updates and epochs at its last '
                'evaluation, the test MSE per pixel at its first and at its best evaluation, '
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
    'tsne_2d': f'sklearn TSNE (2-D, perplexity {TSNE_PERPLEXITY:g} or less on small splits, '
               'init pca, learning rate auto, seeded) of the subsample that trustworthiness uses, '
               f'after a seeded PCA to {TSNE_PCA_DIMS} dimensions; '
               'silhouette, knn_accuracy and trustworthiness (against the full vectors) as for '
               'pca_2d, on that subsample',
    'knn_accuracy': f'{NEIGHBORS}-NN accuracy on the full vectors, {FOLDS}-fold stratified '
                    'cross-validation on the test split',
    'probe': 'logistic regression (lbfgs, L2) on standardized features, trained on the '
             'training rows and scored on the whole test split; its C is the one of '
             f'{list(PROBE_CS)} with the best mean accuracy in {PROBE_FOLDS}-fold stratified '
             'cross-validation on the training rows (scaler fit inside each fold, search fits '
             f'at tol {PROBE_SEARCH_TOL:g}, ties to the smaller C); cv_accuracy holds each C\'s '
             'mean fold accuracy, C_at_grid_edge says whether a C outside the grid might score '
             'higher, converged whether every fit converged',
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


def tsne_2d(features):
  """(projection (N, 2), perplexity used): seeded t-SNE after a seeded PCA to TSNE_PCA_DIMS."""
  reduced = PCA(min(TSNE_PCA_DIMS, *features.shape), random_state=SEED).fit_transform(
      np.asarray(features, np.float64))
  # t-SNE needs perplexity < N; at a third of N its 3 * perplexity neighbours still fit.
  perplexity = min(TSNE_PERPLEXITY, (len(features) - 1) / 3)
  tsne = TSNE(2, perplexity=perplexity, init='pca', learning_rate='auto', random_state=SEED)
  return tsne.fit_transform(reduced), perplexity


def knn_accuracy(features, labels):
  """Mean accuracy of a k-NN classifier over stratified folds."""
  folds = StratifiedKFold(FOLDS, shuffle=True, random_state=SEED)
  return cross_val_score(KNeighborsClassifier(NEIGHBORS), features, labels, cv=folds).mean()


def map_metrics(features, projection, labels, sample):
  """How a 2-D map of features shows the classes: silhouette and k-NN accuracy of all its
  points, trustworthiness (against features) on the rows `sample`."""
  return {
      'silhouette': float(silhouette_score(projection, labels)),
      'knn_accuracy': float(knn_accuracy(projection, labels)),
      'trustworthiness': float(trustworthiness(features[sample], projection[sample],
                                               n_neighbors=NEIGHBORS)),
  }


def linear_probe(C, tol=1e-4):
  """Logistic regression on standardized features, unfitted; tol 1e-4 is scikit-learn's."""
  return make_pipeline(StandardScaler(),
                       LogisticRegression(C=C, tol=tol, max_iter=PROBE_MAX_ITER))


def probe(train_features, train_labels, test_features, test_labels):
  """The linear probe, its C chosen by cross-validation on the training rows; see PROTOCOL."""
  folds = StratifiedKFold(PROBE_FOLDS, shuffle=True, random_state=SEED)
  search = GridSearchCV(linear_probe(1.0, PROBE_SEARCH_TOL),
                        {'logisticregression__C': PROBE_CS}, cv=folds, refit=False,
                        error_score='raise')
  with warnings.catch_warnings(record=True) as caught:  # recorded, not printed: converged says
    warnings.simplefilter('always', ConvergenceWarning)
    search.fit(train_features, train_labels)
    C = search.best_params_['logisticregression__C']
    fitted = linear_probe(C).fit(train_features, train_labels)
  return {
      'accuracy': float(fitted.score(test_features, test_labels)),
      'C': C,
      'cv_accuracy': {f'{c:g}': float(a) for c, a in zip(PROBE_CS,
                                                          search.cv_results_['mean_test_score'])},
      'C_at_grid_edge': C in (PROBE_CS[0], PROBE_CS[-1]),
      'converged': not any(issubclass(w.category, ConvergenceWarning) for w in caught),
  }


def nearest(database, queries, k):
  """(len(queries), k) indices of each query's k nearest database rows (Euclidean), nearest
  first."""
  neighbours = NearestNeighbors(n_neighbors=k, algorithm='brute').fit(database)
  return neighbours.kneighbors(queries, return_distance=False)


def retrieval_precision(database, database_labels, queries, query_labels, ks=RETRIEVAL_KS):
  """{k: the fraction of each query's k nearest database rows with its label, averaged}."""
  hits = database_labels[nearest(database, queries, max(ks))] == query_labels[:, None]
  return {k: float(hits[:, :k].mean()) for k in ks}


def space_metrics(train_features, train_labels, test_features, test_labels):
  """Every metric of one feature space (codes or pixels); PROTOCOL says what each means.

  The training rows train the probe and are the retrieval database. Returns (metrics, maps):
  a dict of numbers, and {'pca': (N, 2), 'tsne': (M, 2), 'tsne_rows': (M,)}, the 2-D maps of
  the test split (t-SNE's of the rows tsne_rows).
  """
  # One BLAS/OpenMP thread: the sums, hence the numbers, do not depend on the core count, and
  # on a busy 2-core machine spinning OpenMP threads made the probe 15x slower.
  with threadpool_limits(1):
    return _space_metrics(train_features, train_labels, test_features, test_labels)


def _space_metrics(train_features, train_labels, test_features, test_labels):
  sample = subsample(len(test_features), MAP_SAMPLE)
  pca, variance = pca_2d(test_features)
  tsne, perplexity = tsne_2d(test_features[sample])
  everything = np.arange(len(sample))
  precision = retrieval_precision(train_features, train_labels, test_features, test_labels)
  return {
      'dims': test_features.shape[1],
      'pca_2d': {'pc1_variance': float(variance[0]), 'pc2_variance': float(variance[1]),
                 **map_metrics(test_features, pca, test_labels, sample)},
      'tsne_2d': {**map_metrics(test_features[sample], tsne, test_labels[sample], everything),
                  'perplexity': perplexity},
      'knn_accuracy': float(knn_accuracy(test_features, test_labels)),
      'probe': probe(train_features, train_labels, test_features, test_labels),
      'retrieval': {f'precision_at_{k}': p for k, p in precision.items()},
  }, {'pca': pca, 'tsne': tsne, 'tsne_rows': sample}


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


def steps_per_epoch(eval_records):
  """Updates per epoch from the metrics log's 'eval' records (which round epochs to 3
  decimals: the one of the most epochs is the most exact), or None before a first one."""
  last = max(eval_records, key=lambda record: record['epoch'], default=None)
  return last['step'] / last['epoch'] if last and last['epoch'] > 0 else None
