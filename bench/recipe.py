"""Whole train.py runs, timed as a user sees them: a first run that compiles, then a second
that loads its programs from the persistent compilation cache.

python bench/recipe.py [--data SOURCE] [--epochs E | --steps N] [--pairs P] [--out FILE]

Each pair starts with an empty cache folder: run 1 compiles and fills it, run 2 finds it.
Reported per run: the whole command's wall seconds, the seconds from train()'s start to the
first update and to each program compiled (from the run's own metrics.jsonl), the images/s
of the training calls and the final test MSE. Without --data, it writes 60,000 training and
10,000 test images of random uint8 pixels as IDX files (speed does not depend on them), so
that the lab's full recipe (--epochs 10) runs where no dataset can be downloaded.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import output

ROOT = Path(__file__).resolve().parents[1]


def write_random_idx(folder, train=60_000, test=10_000):
  rng = np.random.default_rng(0)
  for prefix, count in (('train', train), ('t10k', test)):
    images = rng.integers(0, 256, (count, 28, 28), np.uint8)
    labels = rng.integers(0, 10, count).astype(np.uint8)
    for kind, array in (('images-idx3', images), ('labels-idx1', labels)):
      header = b''.join(n.to_bytes(4, 'big') for n in (0x0800 + array.ndim, *array.shape))
      (folder / f'{prefix}-{kind}-ubyte').write_bytes(header + array.tobytes())


def run_once(data, length_flags, cache, workdir):
  env = {**os.environ, 'JAX_AE_COMPILATION_CACHE': str(cache)}
  start = time.perf_counter()
  result = subprocess.run([sys.executable, str(ROOT / 'train.py'), '--data', data,
                           '--workdir', str(workdir), *length_flags], env=env,
                          capture_output=True, text=True)
  wall = time.perf_counter() - start
  if result.returncode:
    sys.exit(f'train.py failed:\n{result.stderr[-3000:]}')
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  by_event = lambda event: [r for r in records if r['event'] == event]
  last_eval = by_event('eval')[-1]
  return {
      'wall_seconds': wall,
      'first_update_seconds': by_event('first_update')[0]['seconds'],
      'compiles': [{key: r[key] for key in ('steps_per_call', 'seconds', 'cached')}
                   for r in by_event('compile')],
      'steps': last_eval['step'],
      'images_per_s': last_eval['images_per_s'],
      'test_mse': last_eval['test_mse'],
      'start': by_event('start')[0],
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', help='a train.py --data source (default: random IDX, 60k/10k)')
  length = parser.add_mutually_exclusive_group()
  length.add_argument('--epochs', type=int)
  length.add_argument('--steps', type=int)
  parser.add_argument('--pairs', type=int, default=1)
  parser.add_argument('--out', type=Path)
  args = parser.parse_args(argv)
  length_flags = (['--epochs', str(args.epochs)] if args.epochs else
                  ['--steps', str(args.steps)] if args.steps else [])
  with tempfile.TemporaryDirectory(prefix='jax-ae-recipe-') as scratch:
    scratch = Path(scratch)
    data = args.data
    if data is None:
      (scratch / 'idx').mkdir()
      write_random_idx(scratch / 'idx')
      data = f'idx:{scratch / "idx"}'
    runs = {'first (compiles)': [], 'second (compilation cache)': []}
    for pair in range(args.pairs):
      cache = scratch / f'cache-{pair}'
      for run, name in enumerate(runs):
        runs[name].append(run_once(data, length_flags, cache, scratch / f'run-{pair}-{run}'))
        print(f'pair {pair + 1}/{args.pairs}, {name}: {runs[name][-1]["wall_seconds"]:.1f} s '
              f'whole, {runs[name][-1]["first_update_seconds"]:.1f} s to the first update',
              file=sys.stderr)
  report = {
      'command': f'train.py --data {args.data or "idx:<random 60k/10k>"} {" ".join(length_flags)}',
      'machine': output.machine(),
      'runs': runs,
      'median': {name: {key: statistics.median(r[key] for r in rows)
                        for key in ('wall_seconds', 'first_update_seconds', 'images_per_s')}
                 for name, rows in runs.items()},
  }
  output.emit(report, args.out)
  return 0


if __name__ == '__main__':
  sys.exit(main())
