"""What this CPU can do, measured in the benchmark's own process: the float32 matmul peak and
the memory bandwidth, with the nominal peak from the instruction set beside them.

A fraction of peak from an ISA flag alone misleads: Zen 4 has AVX-512 but executes it in
256-bit halves, half the nominal figure of a CPU with 512-bit FMA units. So the benchmarks
divide by what a large matmul achieves here, in XLA and in NumPy and PyTorch (the best of
them), and count memory-bound work (the optimizer) against a measured copy's bandwidth.
"""
import os
import re
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

MATMUL_N = 2048  # 2 * 2048^3 = 17.2 GFLOP: ~0.1 s a product here, far past any cache
COPY_BYTES = 256 << 20  # a 256 MiB float32 array, far past the last-level cache
REPEATS = 5  # the best of these: the limit is the fastest run, the others met the load


def _best_seconds(run, repeats=REPEATS):
  run()  # compile, allocate, touch the pages
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - start)
  return best


def matmul_peak(torch=None):
  """{'gflops': the best, 'by': {framework: GFLOP/s}, 'n': N} of an N x N float32 matmul."""
  rng = np.random.default_rng(0)
  a, b = (rng.standard_normal((MATMUL_N, MATMUL_N), np.float32) for _ in range(2))
  flops = 2 * MATMUL_N ** 3
  xa, xb = jnp.asarray(a), jnp.asarray(b)
  dot = jax.jit(jnp.dot)
  runs = {'xla': lambda: dot(xa, xb).block_until_ready(), 'numpy': lambda: a @ b}
  if torch is not None:
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    runs['torch'] = lambda: ta @ tb
  by = {name: flops / _best_seconds(run) / 1e9 for name, run in runs.items()}
  return {'gflops': max(by.values()), 'by': by, 'n': MATMUL_N}


def memory_bandwidth():
  """{'gb_per_s': the best, 'by': {...}}: bytes read plus bytes written per second by a
  copy of a 256 MiB float32 array (NumPy, one thread) and a scaling of it in XLA."""
  count = COPY_BYTES // 4
  src = np.random.default_rng(0).standard_normal(count, np.float32)
  dst = np.empty_like(src)
  # Donated, as the training step's state is: a program that writes fresh buffers
  # page-faults them on every call, at a tenth of this speed here.
  scale = jax.jit(lambda x: x * np.float32(1.5), donate_argnums=0)  # a copy XLA keeps
  xla = [jnp.asarray(src)]

  def run_xla():
    xla[0] = scale(xla[0]).block_until_ready()
  runs = {'numpy copy': lambda: np.copyto(dst, src), 'xla x * 1.5, donated': run_xla}
  by = {name: 2 * COPY_BYTES / _best_seconds(run) / 1e9 for name, run in runs.items()}
  return {'gb_per_s': max(by.values()), 'by': by, 'bytes_copied': COPY_BYTES}


def adam_bytes(num_params):
  """Bytes an Adam step moves at least: it reads params, gradients and both moments and
  writes params and both moments, float32 each (7 x 4 bytes a parameter)."""
  return 7 * 4 * num_params


def nominal_peak():
  """(FLOP/s, how it was estimated): physical cores x clock x fp32 FLOPs per cycle."""
  cpuinfo = Path('/proc/cpuinfo').read_text()
  first = dict(re.findall(r'^(.+?)\s*:\s*(.*)$', cpuinfo.split('\n\n')[0], re.M))
  flags = set(first['flags'].split())
  allowed = os.sched_getaffinity(0)
  cores = set()
  for block in cpuinfo.strip().split('\n\n'):
    fields = dict(re.findall(r'^(.+?)\s*:\s*(.*)$', block, re.M))
    if int(fields['processor']) in allowed:  # hyperthreads of a core share its FMA units
      cores.add((fields.get('physical id'), fields.get('core id', fields['processor'])))
  ghz = float(first['cpu MHz']) / 1e3
  # Zen 4 (AMD family 25 with AVX-512) runs a 512-bit FMA as two 256-bit halves.
  zen4 = first.get('vendor_id') == 'AuthenticAMD' and first.get('cpu family') == '25'
  if 'avx512f' in flags and not zen4:
    lanes, isa = 16, 'AVX-512'
  elif 'avx512f' in flags:
    lanes, isa = 8, 'AVX-512 on 256-bit units (Zen 4)'
  else:
    lanes, isa = (8, 'AVX2') if 'avx2' in flags else (4, 'SSE')
  peak = len(cores) * ghz * 1e9 * lanes * 2 * 2
  return peak, (f'{len(cores)} physical cores x {ghz:.3f} GHz (cpu MHz in /proc/cpuinfo; '
                f'turbo and AVX clock changes ignored) x {lanes} fp32 lanes per FMA unit '
                f'({isa}) x 2 (FMA: multiply and add) x 2 FMA units per core')
