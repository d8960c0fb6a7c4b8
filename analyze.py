"""Compare a run's latent codes with raw pixels: python analyze.py [--workdir RUN] [--out DIR]

Restores the run's best checkpoint, encodes its test split and writes into RUN/analysis/:
the figures below, metrics.json (every number) and report.md (the numbers and the figures).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from absl import logging as absl_logging

from jax_ae import analysis, data, inference, plots, rundir, torch_port
from jax_ae.config import ConfigError
from jax_ae.errors import UserError

PER_CLASS = 2  # reconstructions shown per class
PAIRS, STEPS = 4, 8  # interpolations: pairs of test images, images per line

FIGURES = {
    'reconstructions.png': 'Test inputs over their reconstructions',
    'pca_comparison.png': '2-D PCA of the codes and of the pixels, side by side',
    'latent_pca.png': '2-D PCA of the latent codes',
    'pixel_pca.png': '2-D PCA of the raw pixels',
    'latent_interpolation.png': 'Interpolating between test images of different classes',
}

METRIC_ROWS = (  # (key, label in the report, format)
    ('pc1_variance', 'PC1 explained variance', '{:.1%}'),
    ('pc2_variance', 'PC2 explained variance', '{:.1%}'),
    ('silhouette_2d', 'silhouette by class, 2-D PCA', '{:.3f}'),
    ('knn_accuracy_2d', '5-NN accuracy, 2-D PCA', '{:.1%}'),
    ('trustworthiness_2d', 'trustworthiness of the 2-D PCA', '{:.3f}'),
    ('knn_accuracy', '5-NN accuracy, full vectors', '{:.1%}'),
    ('probe_accuracy', 'linear probe accuracy, full vectors', '{:.1%}'),
)


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', help='the train.py run to analyse (default: the latest '
                      'under runs/)')
  parser.add_argument('--out', help='where the figures, metrics.json and report.md go '
                      '(default: WORKDIR/analysis)')
  parser.add_argument('--torch-weights', metavar='FILE',
                      help="analyse the lab's PyTorch network instead of a run: a state_dict "
                      'saved with torch.save(model.state_dict(), FILE); needs --out')
  parser.add_argument('--data', default='mnist',
                      help='with --torch-weights: the dataset whose test split to encode '
                      '(default: mnist; see train.py --help)')
  return parser.parse_args(argv)


def analyze(params, data_source, source, out):
  """Writes every figure, metrics.json and report.md of params into out.

  source: where params come from, for the report: {'workdir', 'checkpoint_step'} of a run,
  or {'torch_weights'}.
  """
  dataset = data.load_dataset(data_source)
  test = dataset.test
  probe_rows = analysis.subsample(len(dataset.train.labels), analysis.PROBE_TRAIN_SAMPLE)
  train_images, train_labels = dataset.train.images[probe_rows], dataset.train.labels[probe_rows]
  test_codes = inference.encode(params, test.images)
  spaces = {
      'codes': (inference.encode(params, train_images), test_codes),
      'pixels': (analysis.pixels(train_images), analysis.pixels(test.images)),
  }
  metrics, projections = {}, {}
  for name, (train_features, test_features) in spaces.items():
    metrics[name], projections[name] = analysis.space_metrics(
        train_features, train_labels, test_features, test.labels)
  errors = inference.image_errors(params, test.images)
  report = {
      'measured_on': {
          **source, 'dataset': dataset.name, 'test_size': len(test.labels), 'probe_train_size': len(probe_rows),
          'trustworthiness_sample': min(len(test.labels), analysis.TRUSTWORTHINESS_SAMPLE),
          'seed': analysis.SEED,
      },
      'protocol': analysis.PROTOCOL,
      'test_mse': {'overall': float(np.mean(errors)), 'per_class': {
          dataset.class_names[label]: mse for label, mse in
          analysis.mse_by_class(errors, test.labels).items()}},
      **metrics,
  }

  out.mkdir(parents=True, exist_ok=True)
  draw(out, params, dataset, test_codes, errors, metrics, projections)
  (out / 'metrics.json').write_text(json.dumps(report, indent=2, ensure_ascii=False) + '\n')
  (out / 'report.md').write_text(markdown(report))


def draw(out, params, dataset, test_codes, errors, metrics, projections):
  """Writes the FIGURES into out."""
  test, class_names = dataset.test, dataset.class_names
  shown = analysis.examples_per_class(test.labels, PER_CLASS)
  plots.reconstructions(test.images[shown] / 255, inference.reconstruct(params, test.images[shown]),
                        errors[shown], test.labels[shown], class_names, float(np.mean(errors)),
                        out / 'reconstructions.png')
  panels = {}
  for name, title in (('codes', 'latent codes'), ('pixels', 'raw pixels')):
    space = metrics[name]
    variance = (space['pc1_variance'], space['pc2_variance'])
    dims = f'{title} ({space["dims"]}-d)'
    plots.pca_scatter([(f'2-D PCA of the {dims}', projections[name], variance)], test.labels,
                      class_names, out / f'{"latent" if name == "codes" else "pixel"}_pca.png')
    panels[name] = (f'{dims}\nsilhouette {space["silhouette_2d"]:.3f}, '
                    f'2-D 5-NN accuracy {space["knn_accuracy_2d"]:.1%}',
                    projections[name], variance)
  plots.pca_scatter(list(panels.values()), test.labels, class_names, out / 'pca_comparison.png')
  pairs = analysis.interpolation_pairs(test.labels, PAIRS)
  lines = np.stack([analysis.interpolate(test_codes[a], test_codes[b], STEPS) for a, b in pairs])
  latent = inference.decode(params, lines.reshape(-1, lines.shape[-1]))
  blends = np.stack([analysis.interpolate(test.images[a] / 255, test.images[b] / 255, STEPS)
                     for a, b in pairs])
  plots.interpolations(latent.reshape(PAIRS, STEPS, *latent.shape[1:]), blends,
                       [[class_names[label] for label in test.labels[pair]] for pair in pairs],
                       out / 'latent_interpolation.png')


def markdown(report):
  """report.md: the codes-vs-pixels table, the per-class MSE and the figures."""
  on, codes, pixels = report['measured_on'], report['codes'], report['pixels']
  better = 'better' if codes['knn_accuracy_2d'] > pixels['knn_accuracy_2d'] else 'no better'
  lines = [
      '# Latent codes vs raw pixels', '',
      (f'Run `{on["workdir"]}`, checkpoint step {on["checkpoint_step"]} (the best test MSE), '
       if 'workdir' in on else f'PyTorch weights `{on["torch_weights"]}`, ') +
      f'measured on the {on["test_size"]:,} test images of {on["dataset"]}. '
      f'Test MSE per pixel: {report["test_mse"]["overall"]:.5f}.', '',
      f'| metric | codes ({codes["dims"]}-d) | pixels ({pixels["dims"]}-d) |',
      '|---|---:|---:|',
      *(f'| {label} | {form.format(codes[key])} | {form.format(pixels[key])} |'
        for key, label, form in METRIC_ROWS), '',
      f'In two dimensions the codes separate the classes {better} than the pixels '
      f'(5-NN accuracy {codes["knn_accuracy_2d"]:.1%} vs {pixels["knn_accuracy_2d"]:.1%}, '
      f'silhouette {codes["silhouette_2d"]:.3f} vs {pixels["silhouette_2d"]:.3f}). '
      f'The linear probe trains on {on["probe_train_size"]:,} training images and is scored on '
      f'the test split; trustworthiness is measured on {on["trustworthiness_sample"]:,} test '
      'images; metrics.json says how each number is measured.', '',
  ]
  unconverged = [name for name in ('codes', 'pixels') if not report[name]['probe_converged']]
  if unconverged:
    lines += [f'The probe on the {" and the ".join(unconverged)} stopped at '
              f'{analysis.PROBE_MAX_ITER} iterations before converging.', '']
  for name, caption in FIGURES.items():
    lines += [f'## {caption}', '', f'![{caption}]({name})', '']
  lines += ['## Test MSE per class', '', '| class | MSE per pixel |', '|---|---:|',
            *(f'| {name} | {mse:.5f} |' for name, mse in report['test_mse']['per_class'].items())]
  return '\n'.join(lines) + '\n'


def main(argv=None):
  args = parse_args(argv)
  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's restore warnings: nothing to act on
  start = time.perf_counter()
  try:
    if args.torch_weights:
      if not args.out:
        raise ConfigError('--torch-weights needs --out: where to write the analysis')
      out = Path(args.out)
      params = torch_port.load_torch_weights(args.torch_weights)
      analyze(params, args.data, {'torch_weights': str(args.torch_weights)}, out)
    else:
      workdir = args.workdir or rundir.latest_workdir()
      if workdir is None:
        raise ConfigError('found no run under runs/: pass the --workdir of a train.py run')
      out = Path(args.out) if args.out else Path(workdir) / 'analysis'
      run = rundir.open_for_reading(workdir)
      params, step = run.load_params()
      analyze(params, run.config.data, {'workdir': str(workdir), 'checkpoint_step': step}, out)
  except UserError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  print(f'wrote {out} in {time.perf_counter() - start:.0f} s', file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
