"""Training throughput: train.py's own step against a PyTorch eager loop of the lab's
network, on the device JAX finds (the CPU, or a GPU with PyTorch on the same GPU).

python bench/throughput.py [--batch-sizes 64 256] [--rounds R] [--seconds S] [--out FILE]

JAX runs the loop's own calls (dispatch.build, with the backend's step plan and XLA options:
4 unrolled steps a call on CPU, a lax.scan of 64 on a GPU or TPU), compiled ahead of time:
the compile seconds are reported apart from the steady state. Both frameworks run in this
one process and alternate in rounds of about S seconds each, after a warm-up round, so that
machine noise hits both; each reports its median images/s. The images are 60,000 random
uint8 digits: speed does not depend on them.
"""
import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

import output
from jax_ae import dispatch, parallel, runtime, torch_port, update
from jax_ae.config import Config

NUM_IMAGES = 60_000  # MNIST's training split: each batch is gathered from all of it


def jax_loop(batch_size, images):
  """(run(num_calls) -> steps, compile seconds, steps per call, FLOPs of one step)."""
  platform = jax.default_backend()
  config = Config(batch_size=batch_size)
  mesh = parallel.make_mesh(config.devices, batch_size)
  plan = update.plan_steps(platform)
  state, _, calls = dispatch.build(config, mesh, plan, images)
  compile_seconds, _ = calls.compile(state, plan.steps_per_call)
  calls.compile(state, 1)  # FLOPs of exactly one step
  cost = calls.programs[1].cost_analysis()
  flops = (cost[0] if isinstance(cost, list) else cost)['flops']  # a list in older jax
  step = 0

  def run(num_calls):
    nonlocal state, step
    for _ in range(num_calls):
      state, losses = calls(state, step, plan.steps_per_call)
      np.asarray(losses)  # as the loop does: it checks every call's losses
      step += plan.steps_per_call
    return num_calls * plan.steps_per_call

  return run, compile_seconds, plan.steps_per_call, flops


def torch_loop(batch_size, images, device):
  """run(num_steps): the lab's network in a plain PyTorch eager loop on the same batches,
  on `device`. No DataLoader: batches are gathered from one tensor on the device, the fastest
  PyTorch can be fed."""
  import torch
  config = Config(batch_size=batch_size)
  torch.manual_seed(config.seed)
  model = torch_port.torch_autoencoder().to(device)
  adam = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
  mse = torch.nn.MSELoss()
  data = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
  step = 0

  def run(num_steps):
    nonlocal step
    rows = update.batch_schedule(config.seed, len(images), batch_size, step, num_steps)
    for indices in torch.from_numpy(rows).to(device):
      batch = data[indices].float() / 255.0
      loss = mse(model(batch), batch)
      adam.zero_grad()
      loss.backward()
      adam.step()
    loss.item()  # waits for the device
    step += num_steps
    return num_steps

  return run


def timed(run, amount):
  start = time.perf_counter()
  done = run(amount)
  return done, time.perf_counter() - start


def bench(batch_size, rounds, round_seconds, images, torch_device, peak_flops):
  jax_run, compile_seconds, steps_per_call, flops = jax_loop(batch_size, images)
  torch_run = torch_loop(batch_size, images, torch_device)
  # Size the rounds from a first call of each: about round_seconds per framework.
  steps, seconds = timed(jax_run, 1)
  calls = max(1, round(round_seconds / seconds))
  torch_steps, _ = timed(torch_run, calls * steps_per_call)  # warm-up
  result = {'batch_size': batch_size, 'jax_steps_per_call': steps_per_call,
            'jax_compile_seconds': compile_seconds, 'steps_per_round': calls * steps_per_call,
            'gflop_per_step': flops / 1e9, 'jax_round_seconds': [], 'torch_round_seconds': []}
  for round_ in range(rounds):
    for name, run, amount in (('jax', jax_run, calls), ('torch', torch_run,
                                                        calls * steps_per_call)):
      steps, seconds = timed(run, amount)
      result[f'{name}_round_seconds'].append(seconds)
    print(f'batch {batch_size}, round {round_ + 1}/{rounds}: ' + ', '.join(
        f'{name} {batch_size * steps / result[f"{name}_round_seconds"][-1]:.0f} images/s'
        for name in ('jax', 'torch')), file=sys.stderr)
  for name in ('jax', 'torch'):
    median = statistics.median(result[f'{name}_round_seconds'])
    result[f'{name}_images_per_s'] = batch_size * calls * steps_per_call / median
    if peak_flops:
      result[f'{name}_fraction_of_peak'] = flops * calls * steps_per_call / median / peak_flops
  result['jax_over_torch'] = result['jax_images_per_s'] / result['torch_images_per_s']
  return result


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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch-sizes', type=int, nargs='+', default=[64, 256])
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--seconds', type=float, default=3.0, help='seconds per round and side')
  parser.add_argument('--out', type=Path, help='also write the JSON here')
  args = parser.parse_args(argv)
  import torch
  backend = jax.default_backend()
  if backend == 'gpu':
    torch_device = 'cuda'
    # The same arithmetic on both sides: JAX's default on NVIDIA GPUs is TF32 for float32
    # matmuls and convolutions; PyTorch's is TF32 for convolutions only.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
  elif backend == 'cpu':
    torch_device = 'cpu'
    torch.set_num_threads(len(os.sched_getaffinity(0)))
  else:
    sys.exit(f'no PyTorch baseline on {backend}')
  peak_flops, peak_assumption = cpu_peak() if backend == 'cpu' else (None, None)
  images = np.random.default_rng(0).integers(0, 256, (NUM_IMAGES, 28, 28, 1), np.uint8)
  report = {
      'settings': {'rounds': args.rounds, 'seconds_per_round': args.seconds,
                   'lr': Config.lr, 'weight_decay': Config.weight_decay,
                   'images': f'random uint8, {NUM_IMAGES}',
                   'torch_tf32': backend == 'gpu'},
      'machine': {**output.machine(), 'torch': torch.__version__,
                  'torch_device': torch_device, 'torch_threads': torch.get_num_threads()},
      'peak_gflops': peak_flops and peak_flops / 1e9,
      'peak_assumption': peak_assumption,
      'results': [bench(batch_size, args.rounds, args.seconds, images, torch_device, peak_flops)
                  for batch_size in args.batch_sizes],
  }
  output.emit(report, args.out)
  return 0


if __name__ == '__main__':
  runtime.set_cpu_xla_flags()  # as train.py, before JAX starts
  sys.exit(main())
