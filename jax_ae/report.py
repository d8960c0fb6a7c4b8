"""report.md: the study's numbers (metrics.json's dict) in sentences, tables and figures.

Every sentence that compares is generated from the numbers it cites, and its words (better,
worse, no clear difference) from the paired intervals, so that a re-run that changes the
numbers changes the conclusion with them.
"""
from jax_ae import analysis

FIGURES = {  # file: caption, in the report's order
    'training_curves.png': 'Training: train loss and test MSE per pixel against updates',
    'compression.png': "The autoencoder against PCA of the pixels: test MSE per pixel by the "
                       "code's size",
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
    (('knn_accuracy',), f'{K}-NN accuracy, full vectors', '{:.1%}'),
    (('probe', 'accuracy'), 'linear probe accuracy, full vectors', '{:.1%}'),
    (('probe', 'C'), "the probe's C, chosen by cross-validation", '{:g}'),
    (('probe', 'standardized'), 'the probe standardizes, chosen by cross-validation', '{}'),
    *((('retrieval', f'precision_at_{k}'), f'retrieval precision@{k}', '{:.1%}')
      for k in analysis.RETRIEVAL_KS),
)


MEASURES = {  # per-image measure: the name in the report
    'probe': 'the linear probe', 'knn': f'{K}-NN on the full vectors',
    'knn_pca_2d': f'{K}-NN in the 2-D PCA',
    'retrieval': f'retrieval precision@{max(analysis.RETRIEVAL_KS)}',
}


def space_names(metrics):
  """{metrics.json key: column title} of the spaces an analysis measured, codes first."""
  names = {'codes': 'codes', 'untrained': 'untrained network', 'pixels': 'pixels'}
  names.update({key: f'pixel PCA-{key.rsplit("_", 1)[1]}' for key in metrics
                if key.startswith('pixel_pca_')})
  return names


def markdown(metrics):
  """report.md of metrics.json's dict."""
  on, names = metrics['measured_on'], space_names(metrics)
  source = (f'Run `{on["workdir"]}`, checkpoint step {on["checkpoint_step"]:,} (its last)'
            if 'workdir' in on else f'PyTorch weights `{on["torch_weights"]}`')
  lines = [
      '# Latent codes vs raw pixels', '',
      f'{source}, a code of {on["latent_dim"]} dimensions, measured on the '
      f'{on["test_size"]:,} test images of {on["dataset"]}. Test MSE per pixel: '
      f'{metrics["test_mse"]["overall"]:.5f}.', '',
  ]
  if 'training' in metrics:
    lines += ['## Training', '', _training(metrics['training']), '',
              *_figure('training_curves.png')]
  lines += [
      '## Compression: the autoencoder against PCA of the same size', '',
      _compression(metrics['compression']), '', *_figure('compression.png'),
      '## Do the codes separate the classes better than the pixels?', '',
      'Beside the codes, the controls: the same network never trained (at the run\'s own '
      'initial weights), the raw pixels, and the pixels projected on their principal '
      'components. Every space goes through the same probe (its C and its standardization '
      'chosen by the same cross-validation), the same k-NN and the same retrieval.', '',
      '| metric | ' + ' | '.join(f'{title} ({metrics[key]["dims"]}-d)'
                                  for key, title in names.items()) + ' |',
      '|---|' + '---:|' * len(names),
      *(f'| {label} | ' + ' | '.join(form.format(_get(metrics[key], keys)) for key in names)
        + ' |' for keys, label, form in METRIC_ROWS), '',
      _untrained_seeds(metrics), '',
      '### Paired comparisons: codes minus each control', '',
      _comparisons(metrics, names), '', _conclusion(metrics), '',
      *_figure('pca_comparison.png'),
      '### t-SNE', '', _tsne(metrics), '', *_figure('tsne_comparison.png'),
      '## Closer in code space', '', _retrieval(metrics['codes'], metrics['pixels'], on), '',
      *_figure('retrieval.png'),
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


def _training(training):
  return (f'{training["updates"]:,} updates ({training["epochs"]:g} epochs), '
          f'{training["evaluations"]} evaluation{"s" * (training["evaluations"] != 1)}. '
          'Test MSE per pixel '
          f'{training["first_test_mse"]:.5f} at the first evaluation (step '
          f'{training["first_eval_step"]:,}), {training["final_test_mse"]:.5f} at the last (the '
          'checkpoint analysed: choosing the best by test MSE would be a choice made on the '
          'test split); the last train loss (MSE per pixel of a batch, averaged) '
          f'{training["final_train_loss"]:.5f}.')


def _compression(compression):
  d, ae = compression['latent_dim'], compression['autoencoder_test_mse']
  if 'pca_test_mse' not in compression:
    return (f'The code has {d} dimensions, more than PCA can have here: the autoencoder\'s '
            f'test MSE per pixel is {ae:.5f}.')
  pca, ratio = compression['pca_test_mse'], compression['ratio']
  verdict = ('reconstructs better than' if ratio < 1 else 'reconstructs worse than')
  return (f'With a code of {d} dimensions the autoencoder\'s test MSE per pixel is {ae:.5f}; '
          f'PCA of the pixels with {d} components (fit on the training rows) reaches '
          f'{pca:.5f}: a ratio of {ratio:.2f}, the autoencoder {verdict} PCA of the same size. '
          '(Hinton & Salakhutdinov, Science 2006, Fig. 2B, found 0.22 for 30 dimensions on '
          'MNIST.)')


def _untrained_seeds(metrics):
  seeds = metrics['untrained_seeds']
  if not seeds:
    return ''
  probes = [metrics['untrained']['probe']['accuracy'], *(s['probe_accuracy'] for s in seeds.values())]
  knns = [metrics['untrained']['knn_accuracy'], *(s['knn_accuracy'] for s in seeds.values())]
  return (f'The untrained network at {len(probes)} initialization seeds: probe '
          f'{min(probes):.1%} to {max(probes):.1%}, {K}-NN on the full vectors {min(knns):.1%} to '
          f'{max(knns):.1%} (the trained codes: {metrics["codes"]["probe"]["accuracy"]:.1%} and '
          f'{metrics["codes"]["knn_accuracy"]:.1%}).')


def _comparisons(metrics, names):
  comparisons = metrics['comparisons']
  count = sum(len(found) for found in comparisons.values())
  lines = [f'Differences in points (codes minus the control), with intervals that hold '
           f'{analysis.CONFIDENCE:.0%} jointly over these {count} comparisons (paired bootstrap '
           'over the test images).', '',
           '| measure | ' + ' | '.join(names[b] for b in comparisons) + ' |',
           '|---|' + '---:|' * len(comparisons)]
  for measure, label in MEASURES.items():
    cells = []
    for baseline in comparisons:
      found = comparisons[baseline][measure]
      cells.append(f'{100 * found["difference"]:+.1f} [{100 * found["low"]:+.1f}, '
                   f'{100 * found["high"]:+.1f}] {_WORD[found["verdict"]]}')
    lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


_WORD = {'better': '**better**', 'worse': '**worse**', 'no clear difference': 'no clear difference'}


def _conclusion(metrics):
  """The conclusion, one sentence per control, from the verdicts of the paired intervals."""
  comparisons, names = metrics['comparisons'], space_names(metrics)
  phrases = {'better': 'score higher on', 'worse': 'score lower on',
             'no clear difference': 'show no clear difference on'}
  sentences = []
  for baseline in comparisons:
    verdicts = {}
    for measure, label in MEASURES.items():
      verdicts.setdefault(comparisons[baseline][measure]['verdict'], []).append(label)
    parts = [f'{phrases[verdict]} {" and ".join(labels)}' for verdict, labels in verdicts.items()]
    sentences.append(f'Against {_THE.get(baseline, "")}{names[baseline]}, the codes '
                     f'{"; ".join(parts)}.')
  return '**Conclusion.** ' + ' '.join(sentences)


_THE = {'untrained': 'the ', 'pixels': 'the '}


def _tsne(metrics):
  parts = []
  for space in ('codes', 'pixels'):
    tsne = metrics[space]['tsne_2d']
    mean, std = tsne['runs_mean'], tsne['runs_std']
    parts.append(f'{space}: silhouette {mean["silhouette"]:.3f} ± {std["silhouette"]:.3f}, '
                 f'2-D {K}-NN {mean["knn_accuracy"]:.1%} ± {std["knn_accuracy"]:.1%}, '
                 f'trustworthiness {mean["trustworthiness"]:.3f} ± {std["trustworthiness"]:.3f}')
  runs = len(metrics['codes']['tsne_2d']['runs'])
  return (f't-SNE of {metrics["measured_on"]["map_sample"]:,} test images, mean ± std over '
          f'{runs} maps (perplexities and seeds in the protocol): ' + '; '.join(parts) + '. The '
          'figure shows the first map; t-SNE\'s numbers depend on its settings, which is why '
          'the comparisons above use the full vectors and PCA.')


def _retrieval(codes, pixels, on):
  ks = analysis.RETRIEVAL_KS
  first, last = f'precision_at_{ks[0]}', f'precision_at_{ks[-1]}'
  found = (codes['retrieval'], pixels['retrieval'])
  return (f'Of the {ks[-1]} nearest of the {on["training_rows"]:,} training rows to a test '
          f'image (Euclidean distance), {found[0][last]:.1%} share its class in code space and '
          f'{found[1][last]:.1%} in pixel space; of the nearest one, {found[0][first]:.1%} and '
          f'{found[1][first]:.1%}.')


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
