"""The lab's recipe in plain PyTorch, beside jax-ae's runs of it: does the reimplementation
reproduce the lab within run-to-run noise?

python bench/parity.py torch --seed S [--data mnist5k] [--out results/parity] [--threads T]
  trains the lab's network in PyTorch eager on the CPU (PyTorch's own initialization from
  torch.manual_seed(S), Adam(lr, weight_decay) as the lab, MSE), on the batches jax-ae's run
  of seed S sees (update.batch_schedule), and evaluates the test MSE per pixel at the same
  steps as train.py: torch_seedS.json.
python bench/parity.py report --jax RUN [RUN ...] [--out results/parity]
  reads those files and the jax-ae runs' metrics.jsonl: curves.png and summary.json (each
  side's final test MSE per seed, mean and spread, and the gap between the means).
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import output
from jax_ae import data, rundir, torch_port, update
from jax_ae.config import Config


def train_torch(seed, source, out, threads=None):
  import torch
  if threads:
    torch.set_num_threads(threads)
  torch.manual_seed(seed)
  config = Config(data=source, seed=seed)
  dataset = data.load_dataset(source)
  num_train = len(dataset.train.images)
  total = config.total_steps(dataset.name, num_train)
  eval_every = config.eval_interval(num_train)
  model = torch_port.torch_autoencoder()
  optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                               weight_decay=config.weight_decay)
  as_float = lambda images: torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255)
  train_images, test_images = as_float(dataset.train.images), as_float(dataset.test.images)
  rows = torch.from_numpy(update.batch_schedule(seed, num_train, config.batch_size, 0, total))
  evals, losses, started = [], [], time.perf_counter()
  for step in range(total):
    batch = train_images[rows[step].long()]
    loss = torch.nn.functional.mse_loss(model(batch), batch)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
    if (step + 1) % eval_every == 0 or step + 1 == total:
      with torch.no_grad():
        test_mse = float(torch.cat([((model(chunk) - chunk) ** 2).mean(dim=(1, 2, 3))
                                    for chunk in test_images.split(500)]).mean())
      evals.append({'step': step + 1, 'train_loss': float(np.mean(losses)), 'test_mse': test_mse})
      losses = []
      print(f'seed {seed} step {step + 1}: test MSE {test_mse:.5f}', file=sys.stderr)
  output.emit({'framework': f'torch {torch.__version__} eager', 'seed': seed,
               'data': dataset.name, 'steps': total, 'batch_size': config.batch_size,
               'lr': config.lr, 'weight_decay': config.weight_decay,
               'init': "PyTorch's default (reset_parameters)",
               'seconds': round(time.perf_counter() - started, 1),
               'torch_threads': torch.get_num_threads(), 'evals': evals,
               'machine': output.machine()}, out / f'torch_seed{seed}.json')


def report(jax_runs, out):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  sides = {'jax-ae': {}, 'PyTorch': {}}
  for path in jax_runs:
    run = rundir.open_for_reading(path)
    sides['jax-ae'][run.config.seed] = [(r['step'], r['test_mse']) for r in run.records('eval')]
  for path in sorted(out.glob('torch_seed*.json')):
    saved = json.loads(path.read_text())
    sides['PyTorch'][saved['seed']] = [(r['step'], r['test_mse']) for r in saved['evals']]
  figure, axes = plt.subplots(figsize=(7, 4.5))
  summary = {}
  for (side, runs), color in zip(sides.items(), ('tab:blue', 'tab:orange')):
    for seed, curve in sorted(runs.items()):
      steps, mse = zip(*curve)
      axes.plot(steps, mse, color=color, alpha=0.8,
                label=f'{side} ({len(runs)} seeds)' if seed == min(runs) else None)
    finals = [curve[-1][1] for _, curve in sorted(runs.items())]
    summary[side] = {'final_test_mse_by_seed': {str(s): c[-1][1] for s, c in sorted(runs.items())},
                     'mean': statistics.mean(finals),
                     'std': statistics.stdev(finals) if len(finals) > 1 else None,
                     'min': min(finals), 'max': max(finals)}
  summary['gap_of_means'] = summary['jax-ae']['mean'] - summary['PyTorch']['mean']
  axes.set(xlabel='update', ylabel='test MSE per pixel', yscale='log',
           title="The lab's recipe: jax-ae against PyTorch, PyTorch's initialization")
  axes.legend()
  figure.tight_layout()
  figure.savefig(out / 'curves.png', dpi=120)
  output.emit(summary, out / 'summary.json')


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('what', choices=('torch', 'report'))
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--data', default='mnist5k')
  parser.add_argument('--jax', nargs='*', default=[])
  parser.add_argument('--out', type=Path, default=Path('results/parity'))
  parser.add_argument('--threads', type=int, help="torch's CPU threads (default: torch's own)")
  args = parser.parse_args()
  if args.what == 'torch':
    train_torch(args.seed, args.data, args.out, args.threads)
  else:
    report(args.jax, args.out)


if __name__ == '__main__':
  main()
