"""How a call runs K training steps on XLA:CPU: a lax.scan loop (the plan on GPUs and
TPUs), the same steps unrolled in straight-line code (the plan on CPU), or one step a call.

python bench/dispatch.py [--steps K] [--rounds R] [--out results/bench/scan.json]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import output
from jax_ae import dispatch, parallel, update
from jax_ae.config import Config

BATCH = 64


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=update.CPU_STEPS_PER_CALL)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--out', type=Path)
  args = parser.parse_args(argv)
  images = np.random.default_rng(0).integers(0, 256, (60_000, 28, 28, 1), np.uint8)
  config = Config(batch_size=BATCH)  # the lab's recipe
  mesh = parallel.make_mesh(config.devices, BATCH)
  variants = {  # name: (plan, steps per call)
      'lax.scan': (update.StepPlan(args.steps, unroll=False), args.steps),
      'unrolled (train.py on CPU)': (update.StepPlan(args.steps, unroll=True), args.steps),
      'one step a call': (update.StepPlan(1, unroll=True), 1),
  }
  runs = {}
  for name, (plan, length) in variants.items():
    state, _, calls = dispatch.build(config, mesh, plan, images)
    calls.compile(state, length)
    runs[name] = [calls, state, length]
  seconds = {name: [] for name in variants}
  for round_ in range(args.rounds + 1):  # round 0 warms up
    for name, entry in runs.items():
      calls, state, length = entry
      start = time.perf_counter()
      for first in range(round_ * args.steps, (round_ + 1) * args.steps, length):
        state, losses = calls(state, first, length)
        np.asarray(losses)
      entry[1] = state
      if round_:
        seconds[name].append(time.perf_counter() - start)
  report = {
      'batch_size': BATCH, 'steps_per_round': args.steps, 'rounds': args.rounds,
      'machine': output.machine(),
      'images_per_s': {name: BATCH * args.steps / statistics.median(times)
                       for name, times in seconds.items()},
  }
  speed = report['images_per_s']
  report['unrolled_over_scan'] = speed['unrolled (train.py on CPU)'] / speed['lax.scan']
  report['unrolled_over_one_step'] = (speed['unrolled (train.py on CPU)'] /
                                      speed['one step a call'])
  output.emit(report, args.out)
  return 0


if __name__ == '__main__':
  from jax_ae import runtime
  runtime.set_cpu_xla_flags()  # as train.py, before JAX starts
  sys.exit(main())
