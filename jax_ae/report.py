"""report.md: the study's numbers (metrics.json's dict) in sentences, tables and figures.

Every sentence that compares is generated from the numbers it cites, so that a re-run that
changes the numbers changes the conclusion with them.
"""
import math

from jax_ae import analysis

FIGURES = {  # file: caption, in the report's order
    'training_curves.png': 'Training: train loss and test MSE per pixel against updates',
    'pca_comparison.png': '2-D PCA of the codes and of the pixels, side by side',
    'tsne_comparison.png': '2-D t-SNE of the codes and of the pixels, side by side',
    'retrieval.png': 'One test image per class and its nearest training images, in code space '
                     'and in pixel space (a class name in red: another class than the query)',
    'samples.png': 'Decoded codes of test images beside decoded samples of the Gaussian',
    'reconstructions.png': 'Test inputs over their reconstructions',
    'latent_interpolation.png': 'Interpolating between test images of different classes',
    'latent_pca.png': '2-D PCA of the latent codes',
    'pixel_pca.png': '2-D PCA of the raw pixels',
}
MORE_FIGURES = ('reconstructions.png', 'latent_interpolation.png', 'latent_pca.png',
                'pixel_pca.png')  # after the sections, each under its caption
K = analysis.NEIGHBORS
METRIC_ROWS = (  # (keys into a space's metrics, label in the report, format)
    (('pca_2d', 'pc1_variance'), 'PC1 explained variance', '{:.1%}'),
    (('pca_2d', 'pc2_variance'), 'PC2 explained variance', '{:.1%}'),
    (('pca_2d', 'silhouette'), 'silhouette by class, 2-D PCA', '{:.3f}'),
    (('pca_2d', 'knn_accuracy'), f'{K}-NN accuracy, 2-D PCA', '{:.1%}'),
    (('pca_2d', 'trustworthiness'), 'trustworthiness, 2-D PCA', '{:.3f}'),
    (('tsne_2d', 'silhouette'), 'silhouette by class, 2-D t-SNE', '{:.3f}'),
    (('tsne_2d', 'knn_accuracy'), f'{K}-NN accuracy, 2-D t-SNE', '{:.1%}'),
    (('tsne_2d', 'trustworthiness'), 'trustworthiness, 2-D t-SNE', '{:.3f}'),
    (('knn_accuracy',), f'{K}-NN accuracy, full vectors', '{:.1%}'),
    (('probe', 'accuracy'), 'linear probe accuracy, full vectors', '{:.1%}'),
    (('probe', 'C'), "the probe's C, chosen by cross-validation", '{:g}'),
    *((('retrieval', f'precision_at_{k}'), f'retrieval precision@{k}', '{:.1%}')
      for k in analysis.RETRIEVAL_KS),
)


def figures(metrics):
  """The figures of a study: the training curves only for a run with a metrics log."""
  return [name for name in FIGURES if name != 'training_curves.png' or 'training' in metrics]


def markdown(metrics):
  """report.md of metrics.json's dict."""
  on, codes, pixels = metrics['measured_on'], metrics['codes'], metrics['pixels']
  source = (f'Run `{on["workdir"]}`, checkpoint step {on["checkpoint_step"]:,}'
            if 'workdir' in on else f'PyTorch weights `{on["torch_weights"]}`')
  lines = [
      '# Latent codes vs raw pixels', '',
      f'{source}, measured on the {on["test_size"]:,} test images of {on["dataset"]}. '
      f'Test MSE per pixel: {metrics["test_mse"]["overall"]:.5f}.', '',
  ]
  if 'training' in metrics:
    lines += ['## Training', '', _training(metrics['training'], on), '',
              *_figure('training_curves.png')]
  lines += [
      '## Do the codes separate the classes better than the pixels?', '',
      f'| metric | codes ({codes["dims"]}-d) | pixels ({pixels["dims"]}-d) |', '|---|---:|---:|',
      *(f'| {label} | {form.format(_get(codes, keys))} | {form.format(_get(pixels, keys))} |'
        for keys, label, form in METRIC_ROWS), '',
      _maps(codes, pixels, on), '', _full_vectors(codes, pixels, on), '',
      _verdict(codes, pixels, on), '',
      *_figure('pca_comparison.png'), *_figure('tsne_comparison.png'),
      '## Closer in code space', '', _retrieval(codes, pixels, on), '', *_figure('retrieval.png'),
      '## Sampling the latent space', '', _sampling(metrics['sampling']), '',
      *_figure('samples.png'),
      '## More figures', '',
      *(line for name in MORE_FIGURES for line in (f'### {FIGURES[name]}', '', *_figure(name))),
      '## Test MSE per class', '', '| class | MSE per pixel |', '|---|---:|',
      *(f'| {name} | {mse:.5f} |' for name, mse in metrics['test_mse']['per_class'].items()), '',
      '## How each number is measured', '',
      *(f'- **{name}**: {text}.' for name, text in metrics['protocol'].items()),
      '', 'metrics.json holds every number above; codes.npz the test codes, their labels and '
      'their 2-D maps (PCA of all of them, t-SNE of the rows tsne_rows), for plots of your own.',
  ]
  return '\n'.join(lines) + '\n'


def _figure(name):
  return [f'![{FIGURES[name]}]({name})', '']


def _get(space, keys):
  for key in keys:
    space = space[key]
  return space


def _noise(size):
  """The largest standard error of an accuracy measured on size images, sqrt(1/4 / size):
  a difference of accuracies below it is reported as none."""
  return math.sqrt(0.25 / size)


def _compare(codes, pixels, size, words):
  """words[0] if codes' accuracy is higher than pixels' by more than the noise, words[1] if
  lower, words[2] if neither."""
  difference = codes - pixels
  return words[2] if abs(difference) <= _noise(size) else words[0 if difference > 0 else 1]


SEPARATES = ('better than', 'worse than', 'about as well as')


def _training(training, on):
  best = (' (the best, the checkpoint analysed)' if training['best_step'] ==
          on.get('checkpoint_step') else '')
  return (f'{training["updates"]:,} updates ({training["epochs"]:g} epochs), '
          f'{training["evaluations"]} evaluation{"s" * (training["evaluations"] != 1)}. '
          'Test MSE per pixel '
          f'{training["first_test_mse"]:.5f} at the first evaluation (step '
          f'{training["first_eval_step"]:,}), {training["best_test_mse"]:.5f} at step '
          f'{training["best_step"]:,}{best}; the last train loss (MSE per pixel of a batch, '
          f'averaged) {training["final_train_loss"]:.5f}.')


def _maps(codes, pixels, on):
  pca = (codes['pca_2d'], pixels['pca_2d'])
  tsne = (codes['tsne_2d'], pixels['tsne_2d'])
  return (
      f'In two dimensions, PCA gives the codes a {K}-NN accuracy of '
      f'{pca[0]["knn_accuracy"]:.1%} against {pca[1]["knn_accuracy"]:.1%} for the pixels '
      f'(silhouette {pca[0]["silhouette"]:.3f} vs {pca[1]["silhouette"]:.3f}): there the codes '
      f'separate the classes '
      f'{_compare(pca[0]["knn_accuracy"], pca[1]["knn_accuracy"], on["test_size"], SEPARATES)} '
      f'the pixels. t-SNE of {on["map_sample"]:,} of the test images gives '
      f'{tsne[0]["knn_accuracy"]:.1%} against {tsne[1]["knn_accuracy"]:.1%} (silhouette '
      f'{tsne[0]["silhouette"]:.3f} vs {tsne[1]["silhouette"]:.3f}): there the codes separate '
      'the classes '
      f'{_compare(tsne[0]["knn_accuracy"], tsne[1]["knn_accuracy"], on["map_sample"], SEPARATES)}'
      ' the pixels.')


def _full_vectors(codes, pixels, on):
  probes = (codes['probe'], pixels['probe'])
  difference = 100 * (probes[0]['accuracy'] - probes[1]['accuracy'])
  separable = _compare(probes[0]['accuracy'], probes[1]['accuracy'], on['test_size'],
                       ('more linearly separable in the codes than in the pixels',
                        'less linearly separable in the codes than in the pixels',
                        'about as linearly separable in the codes as in the pixels'))
  text = (
      f'On the full vectors, a linear probe whose C is chosen by {analysis.PROBE_FOLDS}-fold '
      f'cross-validation on the {on["training_rows"]:,} training rows (C = '
      f'{probes[0]["C"]:g} for the codes, {probes[1]["C"]:g} for the pixels) scores '
      f'{probes[0]["accuracy"]:.1%} on the codes against {probes[1]["accuracy"]:.1%} on the '
      f'pixels ({difference:+.1f} points): the classes are {separable}. {K}-NN on the full '
      f'vectors: {codes["knn_accuracy"]:.1%} against {pixels["knn_accuracy"]:.1%}.')
  for space, found in zip(('codes', 'pixels'), probes):
    if found['C_at_grid_edge']:
      end = 'smallest' if found['C'] == analysis.PROBE_CS[0] else 'largest'
      text += (f" The {space}' C is the {end} of the grid searched "
               f'({", ".join(f"{c:g}" for c in analysis.PROBE_CS)}): one beyond it might score '
               'higher.')
    if not found['converged']:
      text += (f' A probe fit on the {space} stopped at {analysis.PROBE_MAX_ITER} iterations '
               'before converging.')
  return text


def _verdict(codes, pixels, on):
  """Which space wins each accuracy-like measure, beyond the noise of its sample."""
  last = f'precision_at_{max(analysis.RETRIEVAL_KS)}'
  measures = (
      (f'{K}-NN in the 2-D PCA', ('pca_2d', 'knn_accuracy'), on['test_size']),
      (f'{K}-NN in the 2-D t-SNE', ('tsne_2d', 'knn_accuracy'), on['map_sample']),
      (f'{K}-NN on the full vectors', ('knn_accuracy',), on['test_size']),
      ('the linear probe', ('probe', 'accuracy'), on['test_size']),
      (f'retrieval precision@{max(analysis.RETRIEVAL_KS)}', ('retrieval', last), on['test_size']),
  )
  verdicts = {'higher': [], 'lower': [], 'same': []}
  for name, keys, size in measures:
    verdicts[_compare(_get(codes, keys), _get(pixels, keys), size,
                      ('higher', 'lower', 'same'))].append(name)
  phrases = {'higher': 'higher', 'lower': 'lower',
             'same': 'the same, within one standard error of an accuracy on the images measured,'}
  groups = [f'{phrases[verdict]} on {", ".join(names)}' for verdict, names in verdicts.items()
            if names]
  return (f'Of these {len(measures)} measures of class separation, the codes score '
          f'{"; ".join(groups)}.')


def _retrieval(codes, pixels, on):
  ks = analysis.RETRIEVAL_KS
  first, last = f'precision_at_{ks[0]}', f'precision_at_{ks[-1]}'
  found = (codes['retrieval'], pixels['retrieval'])
  same = _compare(found[0][last], found[1][last], on['test_size'],
                  ('more often than', 'less often than', 'about as often as'))
  return (f'Of the {ks[-1]} nearest of the {on["training_rows"]:,} training rows to a test '
          f'image (Euclidean distance), {found[0][last]:.1%} share its class in code space and '
          f'{found[1][last]:.1%} in pixel space; of the nearest one, {found[0][first]:.1%} and '
          f'{found[1][first]:.1%}. A near neighbour in code space shares the query\'s class {same} '
          'one in pixel space.')


def _sampling(sampling):
  codes = sampling['sample_nearest_code_distance'] / sampling['test_nearest_code_distance']
  images = sampling['sample_nearest_train_mse'] / sampling['decoded_test_nearest_train_mse']
  text = (
      f'{sampling["samples"]:,} samples of a Gaussian fit to the codes of the training rows '
      '(mean and full covariance) lie at a mean Euclidean distance of '
      f'{sampling["sample_nearest_code_distance"]:.3g} from their nearest training code, the '
      f'codes of {sampling["test_images"]:,} test images at '
      f'{sampling["test_nearest_code_distance"]:.3g}: {codes:.2f} times as far. ')
  if codes > 1:
    text += ('Part of the Gaussian\'s mass lies away from the codes the decoder was trained '
             'on. ')
  else:
    text += 'The samples stay as close to the training codes as real codes do. '
  text += (
      f'Decoded, the samples lie at an MSE per pixel of {sampling["sample_nearest_train_mse"]:.4f} '
      'from their nearest training image, the decoded codes of those test images at '
      f'{sampling["decoded_test_nearest_train_mse"]:.4f} and the test images themselves at '
      f'{sampling["test_nearest_train_mse"]:.4f}: the decoded samples are {images:.2f} times as '
      'far from the training images as reconstructions are (an MSE favours blurred images; '
      'the figure shows how they look).')
  return text
