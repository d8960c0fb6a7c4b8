"""Tables across analyses, from their metrics.json files, for results/ and the README.

python tools/summarize.py seeds OUT.md ANALYSIS [ANALYSIS ...]
  one dataset's runs at several training seeds: each number's mean and spread (sample std,
  min..max) over seeds, and how many seeds' paired intervals call the codes better, unclear or
  worse than each control.
python tools/summarize.py bottleneck OUT.md ANALYSIS [ANALYSIS ...]
  runs at several code sizes: the autoencoder's test MSE against PCA's of the same size, and
  the codes' probe and 5-NN accuracy.
Each writes OUT.md and, beside it, OUT.json with the same numbers.
"""
import argparse
import json
import statistics
from pathlib import Path

ROWS = (  # (label, path into metrics.json, percent?)
    ('test MSE per pixel', ('test_mse', 'overall'), False),
    ('PCA of the same size, test MSE', ('compression', 'pca_test_mse'), False),
    ('autoencoder / PCA', ('compression', 'ratio'), False),
    ('probe: codes', ('codes', 'probe', 'accuracy'), True),
    ('probe: untrained network', ('untrained', 'probe', 'accuracy'), True),
    ('probe: pixels', ('pixels', 'probe', 'accuracy'), True),
    ('5-NN: codes', ('codes', 'knn_accuracy'), True),
    ('5-NN: untrained network', ('untrained', 'knn_accuracy'), True),
    ('5-NN: pixels', ('pixels', 'knn_accuracy'), True),
    ('5-NN in 2-D PCA: codes', ('codes', 'pca_2d', 'knn_accuracy'), True),
    ('5-NN in 2-D PCA: pixels', ('pixels', 'pca_2d', 'knn_accuracy'), True),
    ('silhouette, 2-D PCA: codes', ('codes', 'pca_2d', 'silhouette'), False),
    ('silhouette, 2-D PCA: pixels', ('pixels', 'pca_2d', 'silhouette'), False),
    ('silhouette, t-SNE (mean of maps): codes', ('codes', 'tsne_2d', 'runs_mean', 'silhouette'),
     False),
    ('silhouette, t-SNE (mean of maps): pixels', ('pixels', 'tsne_2d', 'runs_mean', 'silhouette'),
     False),
    ('retrieval precision@10: codes', ('codes', 'retrieval', 'precision_at_10'), True),
    ('retrieval precision@10: pixels', ('pixels', 'retrieval', 'precision_at_10'), True),
)
MEASURES = {'probe': 'probe', 'knn': '5-NN', 'knn_pca_2d': '5-NN in 2-D PCA',
            'retrieval': 'retrieval@10'}


def get(tree, path):
  for key in path:
    if not isinstance(tree, dict) or key not in tree:
      return None
    tree = tree[key]
  return tree


def spread(values, percent):
  """'mean ± std (min..max)': accuracies in points to 0.1, other numbers to 3 significant
  digits."""
  form = (lambda x: f'{100 * x:.1f}') if percent else (lambda x: f'{x:.3g}')
  if len(values) == 1:
    return form(values[0])
  return (f'{form(statistics.mean(values))} ± {form(statistics.stdev(values))} '
          f'({form(min(values))}..{form(max(values))})')


def seeds(analyses):
  metrics = [json.loads((Path(a) / 'metrics.json').read_text()) for a in analyses]
  seeds_of = [json.loads((Path(a) / 'config.json').read_text())['seed'] for a in analyses]
  numbers, lines = {}, []
  lines += [f'Over {len(metrics)} training seeds ({", ".join(map(str, seeds_of))}) of '
            f'{metrics[0]["measured_on"]["dataset"]}, code of '
            f'{metrics[0]["measured_on"]["latent_dim"]}: mean ± sample std (min..max); '
            'accuracies in %.', '', '| metric | over seeds |', '|---|---:|']
  for label, path, percent in ROWS:
    values = [get(m, path) for m in metrics]
    if None in values:
      continue
    numbers[label] = values
    lines.append(f'| {label} | {spread(values, percent)} |')
  lines += ['', 'Codes minus each control, in points: the mean difference over seeds ± its '
            'std, and how many seeds\' paired intervals (95% jointly over the comparisons of '
            'their analysis) say better / no clear difference / worse.', '',
            '| codes minus | ' + ' | '.join(MEASURES.values()) + ' |',
            '|---|' + '---:|' * len(MEASURES)]
  for baseline in metrics[0]['comparisons']:
    cells = []
    for measure in MEASURES:
      found = [m['comparisons'][baseline][measure] for m in metrics]
      differences = [f['difference'] for f in found]
      numbers[f'{baseline} {measure}'] = differences
      count = {v: sum(f['verdict'] == v for f in found)
               for v in ('better', 'no clear difference', 'worse')}
      cells.append(f'{spread(differences, True)}; {count["better"]}/'
                   f'{count["no clear difference"]}/{count["worse"]}')
    lines.append(f'| {baseline} | ' + ' | '.join(cells) + ' |')
  return lines, numbers


def bottleneck(analyses):
  lines = ['| data | code size | autoencoder test MSE | PCA test MSE, same size | ratio | '
           'probe | 5-NN | silhouette, 2-D PCA | 5-NN, 2-D PCA |',
           '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
  numbers = []
  for analysis in analyses:
    m = json.loads((Path(analysis) / 'metrics.json').read_text())
    c = m['compression']
    row = {'analysis': str(analysis), 'dataset': m['measured_on']['dataset'],
           'latent_dim': c['latent_dim'], 'autoencoder_test_mse': c['autoencoder_test_mse'],
           'pca_test_mse': c.get('pca_test_mse'), 'ratio': c.get('ratio'),
           'probe': m['codes']['probe']['accuracy'], 'knn': m['codes']['knn_accuracy'],
           'silhouette_pca_2d': m['codes']['pca_2d']['silhouette'],
           'knn_pca_2d': m['codes']['pca_2d']['knn_accuracy']}
    numbers.append(row)
    lines.append(f'| {row["dataset"]} | {row["latent_dim"]} | {row["autoencoder_test_mse"]:.4f} '
                 f'| {row["pca_test_mse"]:.3g} | {row["ratio"]:.3g} | {row["probe"]:.1%} | '
                 f'{row["knn"]:.1%} | {row["silhouette_pca_2d"]:.3f} | {row["knn_pca_2d"]:.1%} |')
  return lines, numbers


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('table', choices=('seeds', 'bottleneck'))
  parser.add_argument('out', type=Path)
  parser.add_argument('analyses', nargs='+', type=Path)
  args = parser.parse_args()
  lines, numbers = (seeds if args.table == 'seeds' else bottleneck)(args.analyses)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text('\n'.join(lines) + '\n')
  args.out.with_suffix('.json').write_text(json.dumps(numbers, indent=2) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
