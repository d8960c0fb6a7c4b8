"""Latent codes against raw pixels: the numbers behind the lab's two PCA scatter plots.

Pure functions over numpy arrays; every metric is scikit-learn's, every random choice seeded
with SEED, so two analyses of the same run give the same numbers.
"""
import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import trustworthiness
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

SEED = 0
NEIGHBORS = 5
FOLDS = 5
# trustworthiness ranks all pairwise distances, O(n^2) in time and memory: on a whole MNIST
# test set (10,000) it took 15-35 s and 3 GB per space, on a seeded 5,000 a quarter of that.
TRUSTWORTHINESS_SAMPLE = 5000
# The probe's training rows: a seeded subsample of the training split keeps the fit to
# seconds on 60,000 MNIST images.
PROBE_TRAIN_SAMPLE = 10_000
PROBE_MAX_ITER = 2000

PROTOCOL = {
    'pca': 'PCA(n_components=2) fit on the test split; pc1/pc2_variance are its explained '
           'variance ratios',
    'silhouette_2d': 'silhouette score of the test labels in the 2-D PCA projection',
    'knn_accuracy_2d': f'{NEIGHBORS}-NN accuracy in the 2-D projection, {FOLDS}-fold stratified '
                       'cross-validation on the test split',
    'trustworthiness_2d': f'sklearn trustworthiness (n_neighbors={NEIGHBORS}) of the 2-D '
                          'projection, on a seeded subsample of the test split',
    'knn_accuracy': f'{NEIGHBORS}-NN accuracy on the full vectors, {FOLDS}-fold stratified '
                    'cross-validation on the test split',
    'probe_accuracy': 'logistic regression (lbfgs, C=1) on standardized features, trained on '
                      '(a seeded subsample of) the training split, accuracy on the whole test '
                      'split',
}


def pixels(images):
  """uint8 (N, 28, 28, 1) -> (N, 784) float32 in [0, 1], the pixel space the codes face."""
  return images.reshape(len(images), -1).astype(np.float32) / 255.0


def subsample(num_rows, size, seed=SEED):
  """Sorted indices of a seeded random subset of size rows (all rows when there are fewer)."""
  if num_rows <= size:
    return np.arange(num_rows)
  return np.sort(np.random.default_rng(seed).choice(num_rows, size, replace=False))


def pca_2d(features):
  """(projection (N, 2), explained variance ratio (2,)) of the 2-D PCA of features."""
  pca = PCA(n_components=2, svd_solver='randomized', random_state=SEED)
  projection = pca.fit_transform(np.asarray(features, np.float64))
  return projection, pca.explained_variance_ratio_


def knn_accuracy(features, labels):
  """Mean accuracy of a k-NN classifier over stratified folds."""
  folds = StratifiedKFold(FOLDS, shuffle=True, random_state=SEED)
  return cross_val_score(KNeighborsClassifier(NEIGHBORS), features, labels, cv=folds).mean()


def probe_accuracy(train_features, train_labels, test_features, test_labels):
  """(test accuracy, converged) of a linear probe: logistic regression on standardized features."""
  probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=PROBE_MAX_ITER))
  probe.fit(train_features, train_labels)
  converged = bool(probe[-1].n_iter_.max() < PROBE_MAX_ITER)
  return probe.score(test_features, test_labels), converged


def space_metrics(train_features, train_labels, test_features, test_labels):
  """Every metric of one feature space (codes or pixels); see PROTOCOL for what each means.

  Returns (metrics, projection): a dict of numbers (and probe_converged), and the test
  split's 2-D PCA projection.
  """
  # One BLAS/OpenMP thread: the sums, hence the numbers, do not depend on the core count, and
  # on a busy 2-core machine spinning OpenMP threads made the probe 15x slower.
  with threadpool_limits(1):
    return _space_metrics(train_features, train_labels, test_features, test_labels)


def _space_metrics(train_features, train_labels, test_features, test_labels):
  projection, variance = pca_2d(test_features)
  sample = subsample(len(test_features), TRUSTWORTHINESS_SAMPLE)
  accuracy, converged = probe_accuracy(train_features, train_labels, test_features, test_labels)
  return {
      'dims': test_features.shape[1],
      'pc1_variance': float(variance[0]),
      'pc2_variance': float(variance[1]),
      'silhouette_2d': float(silhouette_score(projection, test_labels)),
      'knn_accuracy_2d': float(knn_accuracy(projection, test_labels)),
      'trustworthiness_2d': float(trustworthiness(test_features[sample], projection[sample],
                                                  n_neighbors=NEIGHBORS)),
      'knn_accuracy': float(knn_accuracy(test_features, test_labels)),
      'probe_accuracy': float(accuracy),
      'probe_converged': converged,
  }, projection


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
    raise ValueError('the test split holds a single class: interpolation needs two')
  starts = rng.choice(len(labels), num_pairs, replace=len(labels) < num_pairs)
  return np.array([(i, rng.choice(np.flatnonzero(labels != labels[i]))) for i in starts])


def interpolate(start, end, steps):
  """(steps, *start.shape) points on the straight line from start to end, both included."""
  t = np.linspace(0.0, 1.0, steps).reshape(-1, *[1] * np.ndim(start))
  return (1 - t) * start + t * end
