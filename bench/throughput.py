"""Training throughput on the CPU: this project's jitted steps against a PyTorch eager loop.

python bench/throughput.py [--batch-sizes 64 256] [--steps N] [--rounds R] [--out FILE]

Both frameworks run in this one process and alternate in rounds (N steps of JAX, then N of
PyTorch), so machine noise hits both; each reports its median images/s over the rounds,
after a warm-up round. JAX runs train.py's path: training.train_steps, with train.py's
CPU default of 4 steps per call. The images are 60,000 random uint8 digits:
speed does not depend on them.
"""
import argparse
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import jax
import jaxlib
import numpy as np
import torch

import report as report_lib
from jax_ae import parallel, torch_port, training
from jax_ae.config import Config

NUM_IMAGES = 60_000  # MNIST's training split: each batch is gathered from all of it


def jax_loop(config, images):
  """run(num_steps) as trainer.train does it: a schedule per dispatch of K steps, one
  jitted scan each, then waiting on its losses. Returns (run, XLA's FLOPs of one step)."""
  mesh = parallel.make_mesh(config.devices, config.batch_size)
  state = parallel.replicate(training.init_state(
      config.seed, training.make_optimizer(config.lr, config.weight_decay)), mesh)
  train_images = parallel.replicate(images, mesh)
  hyper = dict(lr=config.lr, weight_decay=config.weight_decay)
  # FLOPs of exactly one step (a scan's body is counted once whatever its length).
  one_step = parallel.shard_batches(np.zeros((1, config.batch_size), np.int32), mesh)
  compiled = training.train_steps.lower(state, train_images, one_step, **hyper).compile()
  cost = compiled.cost_analysis()
  flops = (cost[0] if isinstance(cost, list) else cost)['flops']  # a list in older jax
  step = 0

  def run(num_steps):
    nonlocal state, step
    for first in range(step, step + num_steps, config.steps_per_dispatch):
      indices = parallel.shard_batches(training.batch_schedule(
          config.seed, len(images), config.batch_size, first, config.steps_per_dispatch), mesh)
      state, losses = training.train_steps(state, train_images, indices, **hyper)
      np.asarray(losses)
    step += num_steps

  return run, flops


def torch_loop(config, images):
  """run(num_steps): the lab's network in a plain PyTorch eager loop on the same batches.
  No DataLoader: batches are gathered from one tensor, the fastest PyTorch can be fed."""
  torch.manual_seed(config.seed)
  model = torch_port.torch_autoencoder()
  adam = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
  mse = torch.nn.MSELoss()
  data = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))  # NCHW uint8
  step = 0

  def run(num_steps):
    nonlocal step
    rows = training.batch_schedule(config.seed, len(images), config.batch_size, step,
                                   num_steps)
    for indices in torch.from_numpy(rows):
      batch = data[indices].float() / 255.0
      loss = mse(model(batch), batch)
      adam.zero_grad()
      loss.backward()
      adam.step()
    loss.item()
    step += num_steps

  return run


def bench(batch_size, steps, rounds, images, peak_flops):
  config = Config(batch_size=batch_size, steps_per_dispatch=dispatch_steps(steps))
  jax_run, flops = jax_loop(config, images)
  loops = {'jax': jax_run, 'torch': torch_loop(config, images)}
  seconds = {name: [] for name in loops}
  for round_ in range(rounds + 1):  # round 0 warms up: compilation, Adam's moments, caches
    for name, run in loops.items():
      start = time.perf_counter()
      run(steps)
      seconds[name].append(time.perf_counter() - start)
    print(f'batch {batch_size}, round {round_}/{rounds}: ' + ', '.join(
        f'{name} {batch_size * steps / times[-1]:.0f} images/s'
        for name, times in seconds.items()), file=sys.stderr)
  seconds = {name: times[1:] for name, times in seconds.items()}
  result = {'batch_size': batch_size, 'gflop_per_step': flops / 1e9}
  for name, times in seconds.items():
    median = statistics.median(times)
    result[f'{name}_images_per_s'] = batch_size * steps / median
    result[f'{name}_fraction_of_peak'] = flops * steps / median / peak_flops
    result[f'{name}_round_seconds'] = times
  result['jax_over_torch'] = result['jax_images_per_s'] / result['torch_images_per_s']
  return result


CPU_DISPATCH_STEPS = Config().dispatch_steps('cpu')


def dispatch_steps(steps):
  # train.py's steps per call, or all of a round's steps in one call when a round is shorter.
  return min(steps, CPU_DISPATCH_STEPS)


def cpu_peak():
  """(FLOP/s, how it was estimated): physical cores x clock x fp32 FLOPs per cycle."""
  cpuinfo = Path('/proc/cpuinfo').read_text()
  flags = set(re.search(r'^flags\s*:(.*)$', cpuinfo, re.M).group(1).split())
  allowed = os.sched_getaffinity(0)
  cores = set()
  for block in cpuinfo.strip().split('\n\n'):
    fields = dict(re.findall(r'^(.+?)\s*:\s*(.*)$', block, re.M))
    if int(fields['processor']) in allowed:  # hyperthreads of a core share its FMA units
      cores.add((fields.get('physical id'), fields.get('core id', fields['processor'])))
  ghz = float(re.search(r'^cpu MHz\s*:\s*(.*)$', cpuinfo, re.M).group(1)) / 1e3
  lanes, isa = (16, 'AVX-512') if 'avx512f' in flags else (8, 'AVX2') if 'avx2' in flags else (
      4, 'SSE')
  peak = len(cores) * ghz * 1e9 * lanes * 2 * 2
  return peak, (f'{len(cores)} physical cores x {ghz:.3f} GHz (cpu MHz in /proc/cpuinfo; '
                f'turbo and AVX clock changes ignored) x {lanes} fp32 lanes ({isa}) x 2 '
                f'(FMA: multiply and add) x 2 FMA units per core')


def machine():
  cpuinfo = Path('/proc/cpuinfo').read_text()
  return {
      'cpu': re.search(r'^model name\s*:\s*(.*)$', cpuinfo, re.M).group(1),
      'logical_cpus': os.cpu_count(),
      'cpus_allowed': len(os.sched_getaffinity(0)),
      'load_average_at_start': os.getloadavg(),
      'python': platform.python_version(),
      'jax': jax.__version__,
      'jaxlib': jaxlib.__version__,
      'jax_device': str(jax.devices()[0]),
      'torch': torch.__version__,
      'torch_threads': torch.get_num_threads(),
      'XLA_FLAGS': os.environ.get('XLA_FLAGS', ''),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch-sizes', type=int, nargs='+', default=[64, 256])
  parser.add_argument('--steps', type=int, default=CPU_DISPATCH_STEPS * 3,
                      help='steps per framework per round: at most train.py\'s steps per call '
                           f'on CPU ({CPU_DISPATCH_STEPS}) or a multiple of it')
  parser.add_argument('--rounds', type=int, default=4)
  parser.add_argument('--out', type=Path, help='also write the JSON here')
  args = parser.parse_args(argv)
  if args.steps <= 0 or args.steps % dispatch_steps(args.steps):
    parser.error(f'--steps must be at most {CPU_DISPATCH_STEPS} or a multiple of it')
  if args.rounds <= 0:
    parser.error('--rounds must be positive')

  # The peak and PyTorch's side are the CPU's, so JAX runs there too.
  jax.config.update('jax_platforms', 'cpu')
  torch.set_num_threads(os.cpu_count())
  peak_flops, peak_assumption = cpu_peak()
  images = np.random.default_rng(0).integers(0, 256, (NUM_IMAGES, 28, 28, 1), np.uint8)
  report = {
      'settings': {'steps_per_round': args.steps, 'rounds': args.rounds,
                   'steps_per_dispatch': dispatch_steps(args.steps), 'lr': Config.lr,
                   'weight_decay': Config.weight_decay, 'images': 'random uint8, 60000'},
      'machine': machine(),
      'peak_gflops': peak_flops / 1e9,
      'peak_assumption': peak_assumption,
      'results': [bench(batch_size, args.steps, args.rounds, images, peak_flops)
                  for batch_size in args.batch_sizes],
  }
  report_lib.emit(report, args.out)
  return 0


if __name__ == '__main__':
  sys.exit(main())
