"""How to run K training steps per call on XLA:CPU: a lax.scan loop, or the same steps
unrolled in straight-line code (what training.train_steps does on CPU).

python bench/dispatch.py [--steps K] [--rounds R] [--out results/bench/scan.json]
"""
import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

import report as report_lib
from jax_ae import training

BATCH, LR, WEIGHT_DECAY = 64, 1e-4, 1e-6


def step(state, images, indices):
  return training.train_steps(state, images, indices[None], lr=LR, weight_decay=WEIGHT_DECAY)


@functools.partial(jax.jit, donate_argnums=0)
def scanned(state, images, batch_indices):
  def body(state, indices):
    state, losses = step(state, images, indices)  # one unrolled step inside the loop body
    return state, losses[0]
  return jax.lax.scan(body, state, batch_indices)


def unrolled(state, images, batch_indices):
  return training.train_steps(state, images, batch_indices, lr=LR, weight_decay=WEIGHT_DECAY)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=4)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--out', type=Path)
  args = parser.parse_args(argv)
  images = jax.numpy.asarray(np.random.default_rng(0).integers(0, 256, (60_000, 28, 28, 1),
                                                               np.uint8))
  variants = {'lax.scan': scanned, 'unrolled (train.py on CPU)': unrolled}
  states = {name: training.init_state(0, training.make_optimizer(LR, WEIGHT_DECAY))
            for name in variants}
  seconds = {name: [] for name in variants}
  for round_ in range(args.rounds + 1):  # round 0 compiles
    indices = training.batch_schedule(0, len(images), BATCH, round_ * args.steps, args.steps)
    for name, run in variants.items():
      start = time.perf_counter()
      states[name], losses = run(states[name], images, indices)
      np.asarray(losses)
      if round_:
        seconds[name].append(time.perf_counter() - start)
  report = {
      'batch_size': BATCH, 'steps_per_call': args.steps, 'rounds': args.rounds,
      'jax': jax.__version__, 'device': str(jax.devices()[0]),
      'images_per_s': {name: BATCH * args.steps / statistics.median(times)
                       for name, times in seconds.items()},
  }
  report['unrolled_over_scan'] = (report['images_per_s']['unrolled (train.py on CPU)'] /
                                  report['images_per_s']['lax.scan'])
  report_lib.emit(report, args.out)
  return 0


if __name__ == '__main__':
  sys.exit(main())
