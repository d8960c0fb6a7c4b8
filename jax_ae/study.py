"""The latent-space study of one model, as analyze.py writes it.

analyze() encodes a dataset's test split and a seeded subsample of its training split (the
"training rows"), measures the codes against the raw pixels (jax_ae/analysis.py), and writes
into one folder: the figures of report.FIGURES, metrics.json (every number, and how each was
measured), codes.npz (the test codes, labels and 2-D maps, for one's own plots) and report.md.
"""
import json
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

from jax_ae import analysis, data, inference, plots, report, rundir
from jax_ae.model import init_params, model_of

PER_CLASS = 2  # reconstructions shown per class
PAIRS, STEPS = 4, 8  # interpolations: pairs of test images, images per line
RETRIEVED = 5  # neighbours shown per query (one query per class)
SAMPLE_GRID = (4, 8)  # samples.png: rows and columns of each side
SAMPLES = 1000  # Gaussian samples, and test images, that the sampling numbers average over
# The two spaces are measured side by side, one single-threaded process each: on 2 cores this
# halves the longest part of the analysis (the probe's search and t-SNE), and the numbers do
# not depend on it.
WORKERS = 2
SPACES = {'codes': 'latent codes', 'pixels': 'raw pixels'}  # mapped and drawn: the figures' name
UNTRAINED_SEEDS = 2  # initialization seeds of the untrained control beyond the run's own


class Measured(NamedTuple):
  """What measure() found: metrics.json's dict, and the arrays the figures and codes.npz show."""
  metrics: dict
  train_rows: np.ndarray  # (R,) indices into the training split
  features: dict  # {space: (training rows' features (R, D), test features (N, D))}
  errors: np.ndarray  # (N,) MSE per pixel of each test image
  maps: dict  # {space: {'pca': (N, 2), 'tsne': (M, 2), 'tsne_rows': (M,)}}
  samples: np.ndarray  # (SAMPLES, D) draws of the Gaussian fit to the training rows' codes


def analyze_run(workdir, out=None, step=None, compare=(), progress=None):
  """The study of a train.py run: restores its final checkpoint (or that of `step`) and
  writes every file into out (default: workdir/analysis); compare: other runs' workdirs, drawn
  beside this one in compression.png; progress: as analyze()'s. Returns the folder written."""
  run = rundir.open_for_reading(workdir)
  try:
    params, step = run.load_params(step)
    config, records = run.config, run.records()
  finally:
    run.close()
  out = Path(out) if out is not None else Path(workdir) / 'analysis'
  analyze(params, config.data, {'workdir': str(workdir), 'checkpoint_step': step}, out, records,
          untrained=(config.seed, config.init), compare=[run_point(other) for other in compare],
          progress=progress)
  return out


def run_point(workdir):
  """(label, latent_dim, test MSE at its last evaluation) of a run, for compression.png."""
  run = rundir.open_for_reading(workdir)
  evals = records_of(run.records(), 'eval')
  if not evals:
    raise rundir.RunDirError(f'--compare {workdir} has no evaluation yet: let it train to one')
  return Path(workdir).name, run.config.latent_dim, evals[-1]['test_mse']


def analyze(params, data_source, source, out, records=None, untrained=(0, 'torch'), compare=(),
            progress=None):
  """Measures params on data_source and writes every file of the study into out.

  source: where params come from, for the report: {'workdir', 'checkpoint_step'} of a run, or
  {'torch_weights'}; records: the run's metrics log (Run.records()), for the training curves,
  or None (PyTorch weights); untrained: (seed, init) of the network's untrained control;
  compare: run_point()s of other runs for compression.png; progress: called with a line as each
  stage starts (e.g. print). Raises data.DataError for data the study cannot measure.
  """
  out, say = Path(out), progress or (lambda line: None)
  dataset = data.load_dataset(data_source)
  say(f'measuring the codes of {len(dataset.test.labels):,} {dataset.name} test images against '
      'the pixels and the controls (the longest stage)')
  # The analysis measures: full float32 matmuls on every backend (GPUs default to TF32 and
  # TPUs to bf16 passes), so that a PyTorch model's test MSE is PyTorch's float32 one.
  with jax.default_matmul_precision('highest'):
    measured = measure(params, dataset, source, records, untrained)
    say(f'drawing the figures into {out}')
    out.mkdir(parents=True, exist_ok=True)
    draw(out, params, dataset, measured, records, compare)
  test_codes = measured.features['codes'][1]
  np.savez(out / 'codes.npz', codes=test_codes, labels=dataset.test.labels,
           class_names=np.array(dataset.class_names),
           **{f'{kind}_{space}': measured.maps[space][kind] for space in SPACES
              for kind in ('pca', 'tsne')},
           tsne_rows=measured.maps['codes']['tsne_rows'])
  (out / 'metrics.json').write_text(json.dumps(measured.metrics, indent=2, ensure_ascii=False)
                                    + '\n')
  (out / 'report.md').write_text(report.markdown(measured.metrics))


def measure(params, dataset, source, records=None, untrained=(0, 'torch')):
  """Every number of the study (metrics.json's dict) and the arrays behind them: a Measured."""
  test, class_names = dataset.test, dataset.class_names
  rows = analysis.subsample(len(dataset.train.labels), analysis.PROBE_TRAIN_SAMPLE)
  train_images, train_labels = dataset.train.images[rows], dataset.train.labels[rows]
  analysis.check_classes(test.labels, class_names, 'test split', analysis.FOLDS,
                         2 * analysis.NEIGHBORS + 1)  # trustworthiness needs k < N / 2
  analysis.check_classes(train_labels, class_names, 'training split', analysis.PROBE_FOLDS,
                         max(analysis.RETRIEVAL_KS))
  latent_dim = model_of(params).latent_dim
  init_seed, init = untrained

  def codes_of(some_params):
    return inference.encode(some_params, train_images), inference.encode(some_params, test.images)

  def untrained_params(seed):
    return init_params(jax.random.key(seed), latent_dim, init)

  train_pixels, test_pixels = analysis.pixels(train_images), analysis.pixels(test.images)
  features = {'codes': codes_of(params), 'untrained': codes_of(untrained_params(init_seed)),
              'pixels': (train_pixels, test_pixels)}
  # At most as many components as the training rows and pixels allow.
  sizes = {min(dims, *train_pixels.shape) for dims in (latent_dim, analysis.BASELINE_PCA_DIMS)}
  for dims in sorted(sizes):
    features[f'pixel_pca_{dims}'] = analysis.pixel_pca(train_pixels, test_pixels, dims)
  more_seeds = [init_seed + i for i in range(1, UNTRAINED_SEEDS + 1)]
  more_untrained = [codes_of(untrained_params(seed)) for seed in more_seeds]
  map_rows = analysis.subsample(len(test.labels), analysis.MAP_SAMPLE)

  jobs = [delayed(analysis.tsne_metrics)(features[space][1][map_rows], test.labels[map_rows])
          for space in SPACES]
  jobs += [delayed(analysis.space_metrics)(train, train_labels, test_features, test.labels)
           for train, test_features in features.values()]
  jobs += [delayed(analysis.space_metrics)(train, train_labels, test_features, test.labels, False)
           for train, test_features in more_untrained]
  found = Parallel(n_jobs=WORKERS)(jobs)
  tsne, found = found[:len(SPACES)], found[len(SPACES):]
  spaces, found = found[:len(features)], found[len(features):]
  metrics = {space: numbers for space, (numbers, _, _) in zip(features, spaces)}
  per_image = {space: scores for space, (_, _, scores) in zip(features, spaces)}
  maps = {space: space_maps for space, (_, space_maps, _) in zip(features, spaces)}
  for space, (numbers, projection) in zip(SPACES, tsne):
    metrics[space]['tsne_2d'] = numbers
    maps[space]['tsne'] = projection

  baselines = [space for space in features if space != 'codes']
  measures = list(per_image['codes'])
  comparisons = {
      baseline: {measure: analysis.paired_difference(
          per_image['codes'][measure], per_image[baseline][measure],
          len(baselines) * len(measures)) for measure in measures}
      for baseline in baselines}

  errors = inference.image_errors(params, test.images)
  pca_mse = analysis.pca_test_mse(train_pixels, test_pixels)
  with threadpool_limits(1):  # the same numbers on any core count
    samples = analysis.sample_gaussian(*analysis.fit_gaussian(features['codes'][0]), SAMPLES)
    sampling = measure_sampling(params, samples, features, test.images)
  evals = records_of(records, 'eval')
  ae_mse = float(np.mean(errors))
  metrics = {
      'measured_on': {
          **source, 'dataset': dataset.name, 'test_size': len(test.labels),
          'training_rows': len(rows), 'map_sample': len(map_rows), 'latent_dim': latent_dim,
          'untrained_init': {'seed': init_seed, 'init': init}, 'seed': analysis.SEED,
      },
      'protocol': analysis.PROTOCOL,
      **({'training': training_summary(evals, records_of(records, 'train'),
                                       analysis.steps_per_epoch(records))} if evals else {}),
      'test_mse': {'overall': ae_mse, 'per_class': {
          class_names[label]: mse for label, mse in
          analysis.mse_by_class(errors, test.labels).items()}},
      'compression': {
          'latent_dim': latent_dim, 'autoencoder_test_mse': ae_mse,
          **({'pca_test_mse': float(pca_mse[latent_dim - 1]),
              'ratio': ae_mse / float(pca_mse[latent_dim - 1])}
             if latent_dim <= len(pca_mse) else {}),
          'pca_test_mse_by_components': [float(mse) for mse in pca_mse],
      },
      **metrics,
      'untrained_seeds': {str(seed): {'knn_accuracy': numbers['knn_accuracy'],
                                      'probe_accuracy': numbers['probe']['accuracy']}
                          for seed, (numbers, _, _) in zip(more_seeds, found)},
      'comparisons': comparisons,
      'sampling': sampling,
  }
  return Measured(metrics, rows, features, errors, maps, samples)


def measure_sampling(params, samples, features, test_images):
  """How far samples of the Gaussian, and their decodes, lie from the training rows, beside
  the codes of test images and their decodes; see analysis.PROTOCOL['sampling']."""
  (train_codes, test_codes), (train_pixels, _) = features['codes'], features['pixels']
  shown = analysis.subsample(len(test_images), SAMPLES)
  nearest = {  # to the training rows, per point
      'sample_nearest_code_distance': analysis.nearest_distance(samples, train_codes),
      'test_nearest_code_distance': analysis.nearest_distance(test_codes[shown], train_codes),
      'sample_nearest_train_mse': analysis.nearest_mse(inference.decode(params, samples),
                                                       train_pixels),
      'decoded_test_nearest_train_mse': analysis.nearest_mse(
          inference.decode(params, test_codes[shown]), train_pixels),
      'test_nearest_train_mse': analysis.nearest_mse(analysis.pixels(test_images[shown]),
                                                     train_pixels),
  }
  return {'samples': len(samples), 'test_images': len(shown),
          **{name: float(np.mean(values)) for name, values in nearest.items()}}


def records_of(records, event):
  """The records of one event in step order; none when records is None."""
  return sorted((record for record in records or () if record.get('event') == event),
                key=lambda record: record['step'])


def training_summary(evals, trains, steps_per_epoch):
  """The training numbers of metrics.json, from the run's 'eval' and 'train' records."""
  return {
      'updates': evals[-1]['step'],
      'epochs': round(evals[-1]['step'] / steps_per_epoch, 3),
      'evaluations': len(evals),
      'first_eval_step': evals[0]['step'],
      'first_test_mse': evals[0]['test_mse'],
      'final_test_mse': evals[-1]['test_mse'],
      'final_train_loss': (trains or evals)[-1]['train_loss'],
  }


def draw(out, params, dataset, measured, records=None, compare=()):
  """Writes the figures of report.FIGURES into out (the training curves only for a run with
  a metrics log)."""
  test, class_names, metrics = dataset.test, dataset.class_names, measured.metrics
  train_images = dataset.train.images[measured.train_rows]
  train_labels = dataset.train.labels[measured.train_rows]
  test_codes = measured.features['codes'][1]

  shown = analysis.examples_per_class(test.labels, PER_CLASS)
  plots.reconstructions(test.images[shown] / 255, inference.reconstruct(params, test.images[shown]),
                        measured.errors[shown], test.labels[shown], class_names,
                        metrics['test_mse']['overall'], out / 'reconstructions.png')

  pca_panels, tsne_panels = [], []
  for space, name in SPACES.items():
    numbers, maps = metrics[space], measured.maps[space]
    pca, tsne = numbers['pca_2d'], numbers['tsne_2d']
    axes = (f'PC1 ({pca["pc1_variance"]:.1%} of variance)',
            f'PC2 ({pca["pc2_variance"]:.1%} of variance)')
    title = f'{name} ({numbers["dims"]}-d)'
    plots.scatter([(f'2-D PCA of the {title}', maps['pca'], axes)], test.labels, class_names,
                  out / f'{"latent" if space == "codes" else "pixel"}_pca.png')
    pca_panels.append((f'{title}\n{_separation(pca)}', maps['pca'], axes))
    tsne_panels.append((f'{title}, {len(maps["tsne_rows"]):,} test images\n{_separation(tsne)}',
                        maps['tsne'], ('t-SNE 1', 't-SNE 2')))
  plots.scatter(pca_panels, test.labels, class_names, out / 'pca_comparison.png')
  plots.scatter(tsne_panels, test.labels[measured.maps['codes']['tsne_rows']], class_names,
                out / 'tsne_comparison.png')

  pairs = analysis.interpolation_pairs(test.labels, PAIRS)
  lines = np.stack([analysis.interpolate(test_codes[a], test_codes[b], STEPS) for a, b in pairs])
  latent = inference.decode(params, lines.reshape(-1, lines.shape[-1]))
  blends = np.stack([analysis.interpolate(test.images[a] / 255, test.images[b] / 255, STEPS)
                     for a, b in pairs])
  plots.interpolations(latent.reshape(PAIRS, STEPS, *latent.shape[1:]), blends,
                       [[class_names[label] for label in test.labels[pair]] for pair in pairs],
                       out / 'latent_interpolation.png')

  queries = analysis.examples_per_class(test.labels, 1)
  panels = []
  for space, name in SPACES.items():
    train_features, test_features = measured.features[space]
    with threadpool_limits(1):
      found = analysis.nearest(train_features, test_features[queries], RETRIEVED)
    panels.append((f'nearest training images in {name}', train_images[found] / 255,
                   train_labels[found]))
  plots.retrieval(test.images[queries] / 255, test.labels[queries], panels, class_names,
                  out / 'retrieval.png')

  rows, columns = SAMPLE_GRID
  # A seeded choice: a split may be in class order.
  some = analysis.subsample(len(test_codes), rows * columns)
  real = inference.decode(params, test_codes[some[np.arange(rows * columns) % len(some)]])
  sampled = inference.decode(params, measured.samples[:rows * columns])
  plots.samples([('decoded codes of test images', real.reshape(rows, columns, *real.shape[1:])),
                 ('decoded samples of a Gaussian fit to the codes',
                  sampled.reshape(rows, columns, *sampled.shape[1:]))], out / 'samples.png')

  compression = metrics['compression']
  plots.compression(compression['pca_test_mse_by_components'],
                    [('this run', compression['latent_dim'], compression['autoencoder_test_mse']),
                     *compare], out / 'compression.png')

  if 'training' in metrics:
    evals = records_of(records, 'eval')
    plots.training_curves(
        [(r['step'], r['train_loss']) for r in records_of(records, 'train')],
        [(r['step'], r['test_mse']) for r in evals], analysis.steps_per_epoch(records),
        metrics['measured_on'].get('checkpoint_step'), out / 'training_curves.png')


def _separation(map_metrics):
  return (f'silhouette {map_metrics["silhouette"]:.3f}, '
          f'2-D {analysis.NEIGHBORS}-NN accuracy {map_metrics["knn_accuracy"]:.1%}')
