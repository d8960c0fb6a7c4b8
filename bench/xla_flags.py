"""The two XLA:CPU options jax_ae uses, each measured against XLA's defaults.

python bench/xla_flags.py [--rounds R] [--out results/bench/xla_flags.json]

- convolutions on Eigen: runtime.CPU_COMPILER_OPTIONS, given per compilation;
- multi-output fusion: runtime.CPU_XLA_FLAGS, which train.py puts in XLA_FLAGS.
XLA reads XLA_FLAGS once, when JAX starts its CPU backend, so each setting runs in its own
process; the settings alternate, round after round, so machine noise hits all of them.
Each process times train.py's calls (dispatch.build: 4 unrolled steps a call, batch 64).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import output

SETTINGS = {  # name: (per-compilation options, the XLA_FLAGS of train.py)
    'xla defaults': (False, False),
    'convolutions on eigen': (True, False),
    'multi-output fusion': (False, True),
    'both (what train.py uses)': (True, True),
}
BATCH, CALLS = 64, 6


def child(options, flags):
  """Milliseconds per training step with the options given or not."""
  os.environ.pop('XLA_FLAGS', None)
  from jax_ae import dispatch, parallel, runtime, update
  from jax_ae.config import Config
  if flags:
    runtime.set_cpu_xla_flags()
  import numpy as np
  config = Config(batch_size=BATCH)  # the lab's recipe
  plan = update.plan_steps('cpu')
  mesh = parallel.make_mesh(config.devices, BATCH)
  images = np.random.default_rng(0).integers(0, 256, (60_000, 28, 28, 1), np.uint8)
  state, _, calls = dispatch.build(config, mesh, plan, images, None if options else {})
  calls.compile(state, plan.steps_per_call)
  seconds = []
  for call in range(CALLS + 2):  # two calls to warm up
    start = time.perf_counter()
    state, losses = calls(state, call * plan.steps_per_call, plan.steps_per_call)
    np.asarray(losses)
    seconds.append(time.perf_counter() - start)
  return 1e3 * statistics.median(seconds[2:]) / plan.steps_per_call


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--out', type=Path)
  parser.add_argument('--child', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child is not None:
    print(json.dumps(child(*SETTINGS[args.child])))
    return 0
  ms = {name: [] for name in SETTINGS}
  for round_ in range(args.rounds):
    for name in SETTINGS:
      env = {key: value for key, value in os.environ.items()
             if key not in ('XLA_FLAGS', 'JAX_AE_XLA_OPTIONS')}
      out = subprocess.run([sys.executable, __file__, f'--child={name}'], check=True,
                           capture_output=True, text=True, env=env).stdout
      ms[name].append(json.loads(out.splitlines()[-1]))
      print(f'round {round_ + 1}/{args.rounds}: {name}: {ms[name][-1]:.1f} ms/step',
            file=sys.stderr)
  from jax_ae import runtime
  default = statistics.median(ms['xla defaults'])
  report = {
      'batch_size': BATCH, 'calls_timed': CALLS, 'rounds': args.rounds,
      'machine': output.machine(),
      'settings': {name: {'compiler_options': runtime.CPU_COMPILER_OPTIONS if options else {},
                          'XLA_FLAGS': runtime.CPU_XLA_FLAGS if flags else {}}
                   for name, (options, flags) in SETTINGS.items()},
      'ms_per_step': ms,
      'speedup_over_xla_defaults': {name: default / statistics.median(times)
                                    for name, times in ms.items()},
  }
  output.emit(report, args.out)
  return 0


if __name__ == '__main__':
  sys.exit(main())
