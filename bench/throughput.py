"""Training throughput: train.py's own step against the lab's network in PyTorch, eager and
under torch.compile, on the device JAX finds (the CPU, or a GPU with PyTorch on the same GPU).

python bench/throughput.py [--batch-sizes 64 256] [--rounds R] [--seconds S]
                           [--torch-compile MODE ...] [--out FILE]

JAX runs the loop's own calls (dispatch.build, with the backend's step plan and XLA options:
4 unrolled steps a call on CPU, a lax.scan of 64 on a GPU or TPU), compiled ahead of time:
the compile seconds are reported apart from the steady state. PyTorch runs eager and, for
each --torch-compile mode (default: 'default', Inductor, on CPU; 'max-autotune' and
'reduce-overhead', CUDA graphs, on a GPU), with the loss and the optimizer's step compiled as
PyTorch's tutorials do it; its first steps, which compile, are reported apart too. A mode
that cannot compile here (no C++ compiler, say) is reported with its error and left out. All
sides run in this one process and alternate in rounds of about S seconds each, after a
warm-up round, so that machine noise hits them all; each reports its median images/s. The
images are 60,000 random uint8 digits: speed does not depend on them.

On CPU the report also holds the machine's measured limits (bench/limits.py): the float32
matmul peak (XLA, NumPy, PyTorch: the best) with the nominal figure beside it, each side's
fraction of it from the FLOPs of one step (XLA's cost analysis of the same network), and the
memory bandwidth against the bytes Adam moves a step.
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

import limits
import output
from jax_ae import dispatch, parallel, runtime, torch_port, update
from jax_ae.config import Config
from jax_ae.model import init_params

NUM_IMAGES = 60_000  # MNIST's training split: each batch is gathered from all of it
COMPILE_MODES = {'cpu': ['default'], 'gpu': ['max-autotune', 'reduce-overhead']}
FIRST_STEPS = 3  # torch.compile's steps that compile (and record CUDA graphs), timed apart


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


def torch_loop(batch_size, images, device, mode=None):
  """run(num_steps): the lab's network in a plain PyTorch loop on the same batches, on
  `device`: eager (mode None) or with the loss (the batch's gather, the network, the MSE;
  AOTAutograd compiles its backward) and Adam's step each under torch.compile(mode=mode).
  No DataLoader: batches are gathered from one tensor on the device, the fastest PyTorch can
  be fed."""
  import torch
  config = Config(batch_size=batch_size)
  torch.manual_seed(config.seed)
  model = torch_port.torch_autoencoder().to(device)
  adam = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
  mse = torch.nn.MSELoss()
  data = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
  step = 0

  def loss_of(indices):
    batch = data[indices].float() / 255.0
    return mse(model(batch), batch)

  def adam_step():
    adam.step()

  if mode:
    loss_of, adam_step = (torch.compile(fn, mode=mode) for fn in (loss_of, adam_step))
  # CUDA graphs (reduce-overhead, max-autotune on a GPU) reuse their output buffers: each
  # step tells them that the last step's outputs are no longer read.
  mark_step = (torch.compiler.cudagraph_mark_step_begin if mode and device == 'cuda' else
               lambda: None)

  def run(num_steps):
    nonlocal step
    rows = update.batch_schedule(config.seed, len(images), batch_size, step, num_steps)
    for indices in torch.from_numpy(rows).to(device):
      mark_step()
      loss = loss_of(indices)
      adam.zero_grad()
      loss.backward()
      adam_step()
    loss.item()  # waits for the device
    step += num_steps
    return num_steps

  return run


def timed(run, amount):
  start = time.perf_counter()
  done = run(amount)
  return done, time.perf_counter() - start


def bench(batch_size, rounds, round_seconds, images, torch_device, modes, peaks):
  """One batch size: every side's rounds, median images/s and, given peaks ({name: FLOP/s}),
  fraction of each peak."""
  jax_run, compile_seconds, steps_per_call, flops = jax_loop(batch_size, images)
  sides = {'jax-ae': {'compile_seconds': compile_seconds, 'steps_per_call': steps_per_call}}
  runs = {'jax-ae': jax_run, 'torch eager': torch_loop(batch_size, images, torch_device)}
  sides['torch eager'] = {}
  for mode in modes:
    name = f'torch.compile ({mode})'
    try:
      run = torch_loop(batch_size, images, torch_device, mode)
      _, seconds = timed(run, FIRST_STEPS)
    # A mode the installed PyTorch cannot compile here (Inductor without a C++ compiler, a
    # CUDA graph that fails) is a fact about this machine: report it, measure the others.
    except Exception as error:  # noqa: BLE001
      message = f'{type(error).__name__}: {(str(error).strip().splitlines() or [""])[0]}'
      print(f'batch {batch_size}: {name} cannot run here: {message}', file=sys.stderr)
      sides[name] = {'error': message}
      continue
    sides[name] = {'first_steps': FIRST_STEPS, 'first_steps_seconds': seconds}
    runs[name] = run
  # Size the rounds from a first call of jax-ae's: about round_seconds a side.
  _, seconds = timed(jax_run, 1)
  calls = max(1, round(round_seconds / seconds))
  amounts = {name: calls if name == 'jax-ae' else calls * steps_per_call for name in runs}
  for name, run in runs.items():
    if name != 'jax-ae':
      timed(run, amounts[name])  # warm-up
    sides[name]['round_seconds'] = []
  for round_ in range(rounds):
    line = []
    for name, run in runs.items():
      steps, seconds = timed(run, amounts[name])
      sides[name]['round_seconds'].append(seconds)
      line.append(f'{name} {batch_size * steps / seconds:.0f}')
    print(f'batch {batch_size}, round {round_ + 1}/{rounds}, images/s: ' + ', '.join(line),
          file=sys.stderr)
  steps = calls * steps_per_call
  for name in runs:
    median = statistics.median(sides[name]['round_seconds'])
    sides[name]['images_per_s'] = batch_size * steps / median
    for peak, flop_per_s in peaks.items():
      sides[name][f'fraction_of_{peak}_peak'] = flops * steps / median / flop_per_s
  ours = sides['jax-ae']['images_per_s']
  return {'batch_size': batch_size, 'steps_per_round': steps, 'gflop_per_step': flops / 1e9,
          'sides': sides, 'jax_ae_over': {name: ours / sides[name]['images_per_s']
                                          for name in runs if name != 'jax-ae'}}


def cpu_limits(torch, num_params):
  """The machine's measured peak and bandwidth, the nominal peak, and Adam's bytes a step."""
  nominal, assumption = limits.nominal_peak()
  bandwidth = limits.memory_bandwidth()
  adam_bytes = limits.adam_bytes(num_params)
  return {'measured_peak': limits.matmul_peak(torch),
          'nominal_peak': {'gflops': nominal / 1e9, 'assumption': assumption},
          'memory_bandwidth': bandwidth,
          'adam': {'params': num_params, 'bytes_per_step': adam_bytes,
                   'ms_per_step_at_measured_bandwidth':
                       1e3 * adam_bytes / (bandwidth['gb_per_s'] * 1e9)}}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch-sizes', type=int, nargs='+', default=[64, 256])
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--seconds', type=float, default=3.0, help='seconds per round and side')
  parser.add_argument('--torch-compile', nargs='*', metavar='MODE',
                      help="torch.compile's modes to measure (default: 'default' on CPU, "
                      "'max-autotune' and 'reduce-overhead' on a GPU; none: eager only)")
  parser.add_argument('--out', type=Path, help='also write the JSON here')
  args = parser.parse_args(argv)
  import torch
  backend = jax.default_backend()
  modes = COMPILE_MODES.get(backend, []) if args.torch_compile is None else args.torch_compile
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
  measured = {}
  if backend == 'cpu':
    params = jax.eval_shape(init_params, jax.random.key(0))
    measured = cpu_limits(torch, sum(leaf.size for leaf in jax.tree.leaves(params)))
  peaks = measured and {'measured': measured['measured_peak']['gflops'] * 1e9,
                        'nominal': measured['nominal_peak']['gflops'] * 1e9}
  images = np.random.default_rng(0).integers(0, 256, (NUM_IMAGES, 28, 28, 1), np.uint8)
  report = {
      'settings': {'rounds': args.rounds, 'seconds_per_round': args.seconds,
                   'lr': Config.lr, 'weight_decay': Config.weight_decay,
                   'images': f'random uint8, {NUM_IMAGES}',
                   'torch_tf32': backend == 'gpu', 'torch_compile_modes': modes},
      'machine': {**output.machine(), 'torch': torch.__version__,
                  'torch_device': torch_device, 'torch_threads': torch.get_num_threads()},
      'limits': measured or None,
      'results': [bench(batch_size, args.rounds, args.seconds, images, torch_device, modes,
                        peaks) for batch_size in args.batch_sizes],
  }
  output.emit(report, args.out)
  return 0


if __name__ == '__main__':
  runtime.set_cpu_xla_flags()  # as train.py, before JAX starts
  sys.exit(main())
