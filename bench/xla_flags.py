"""The XLA:CPU flags that jax_ae sets on import, each measured against XLA's defaults.

python bench/xla_flags.py [--rounds R] [--out results/bench/xla_flags.json]

XLA reads XLA_FLAGS once, when JAX starts its CPU backend, so each setting runs in its own
process; the settings alternate, round after round, so machine noise hits all of them.
Each process times train.py's step (training.train_steps, 4 steps per call, batch 64).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import report as report_lib

YNN_DOTS_ONLY = '--xla_cpu_experimental_ynn_fusion_type=individual_dot'
MULTI_OUTPUT = '--xla_backend_extra_options=xla_cpu_use_multi_output_fusion'
SETTINGS = {
    'xla defaults': '',
    'convolutions on eigen': YNN_DOTS_ONLY,
    'multi-output fusion': MULTI_OUTPUT,
    'both (what jax_ae sets)': f'{YNN_DOTS_ONLY} {MULTI_OUTPUT}',
}
BATCH, STEPS_PER_CALL, CALLS = 64, 4, 6


def child(flags):
  """Milliseconds per training step with XLA_FLAGS exactly `flags`."""
  import jax_ae  # noqa: F401  (sets its flags: replaced below, before JAX starts)
  os.environ['XLA_FLAGS'] = flags
  import jax
  import numpy as np
  from jax_ae import training
  images = jax.device_put(np.random.default_rng(0).integers(0, 256, (60_000, 28, 28, 1),
                                                            np.uint8))
  hyper = dict(lr=1e-4, weight_decay=1e-6)
  state = training.init_state(0, training.make_optimizer(**hyper))
  seconds = []
  for call in range(CALLS + 2):  # two calls to compile and warm up
    indices = training.batch_schedule(0, len(images), BATCH, call * STEPS_PER_CALL,
                                      STEPS_PER_CALL)
    start = time.perf_counter()
    state, losses = training.train_steps(state, images, indices, **hyper)
    np.asarray(losses)
    seconds.append(time.perf_counter() - start)
  return 1e3 * statistics.median(seconds[2:]) / STEPS_PER_CALL


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--out', type=Path)
  parser.add_argument('--child', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child is not None:
    print(json.dumps(child(args.child)))
    return 0
  ms = {name: [] for name in SETTINGS}
  for round_ in range(args.rounds):
    for name, flags in SETTINGS.items():
      out = subprocess.run([sys.executable, __file__, f'--child={flags}'], check=True,
                           capture_output=True, text=True).stdout
      ms[name].append(json.loads(out.splitlines()[-1]))
      print(f'round {round_ + 1}/{args.rounds}: {name}: {ms[name][-1]:.1f} ms/step',
            file=sys.stderr)
  default = statistics.median(ms['xla defaults'])
  report = {
      'batch_size': BATCH, 'steps_per_call': STEPS_PER_CALL, 'calls_timed': CALLS,
      'rounds': args.rounds, 'load_average_at_start': os.getloadavg(),
      'settings': SETTINGS,
      'ms_per_step': ms,
      'speedup_over_xla_defaults': {name: default / statistics.median(times)
                                    for name, times in ms.items()},
  }
  report_lib.emit(report, args.out)
  return 0


if __name__ == '__main__':
  sys.exit(main())
