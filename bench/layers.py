"""The hand-written layers of jax_ae/model.py against the Flax layers they replace.

python bench/layers.py [--rounds R] [--out results/bench/layers.json]

Times one jitted forward pass plus the gradients of a training step (with respect to the
parameters and the input) at batch 64, under the XLA options train.py uses, the variants
alternating in rounds in this one process.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

import output
from jax_ae import runtime
from jax_ae.model import ConvTranspose4x4, max_pool_2x2, torch_deconv

BATCH = 64


def conv_transpose(layer, height):
  params = layer.init(jax.random.key(0), jnp.zeros((1, height, height, 64)))
  x = jax.random.normal(jax.random.key(1), (BATCH, height, height, 64))
  return (lambda params, x: layer.apply(params, x)), (params, x)


def pool(fn, height, channels):
  x = jax.random.normal(jax.random.key(1), (BATCH, height, height, channels))
  return (lambda params, x: fn(x)), ({}, x)


CASES = {
    'deconv1 7x7x64 -> 14x14x64': {
        'ConvTranspose4x4 (phase convolutions)': conv_transpose(ConvTranspose4x4(64), 7),
        'nn.ConvTranspose': conv_transpose(torch_deconv(64), 7),
    },
    'deconv2 14x14x64 -> 28x28x1': {
        'ConvTranspose4x4 (phase convolutions)': conv_transpose(ConvTranspose4x4(1), 14),
        'nn.ConvTranspose': conv_transpose(torch_deconv(1), 14),
    },
    'max-pool 28x28x32': {
        'max_pool_2x2': pool(max_pool_2x2, 28, 32),
        'nn.max_pool': pool(lambda x: nn.max_pool(x, (2, 2), (2, 2)), 28, 32),
    },
}


def forward_and_grads(fn):
  def run(params, x, cotangent):
    _, vjp = jax.vjp(fn, params, x)
    return vjp(cotangent)
  return jax.jit(run, compiler_options=runtime.compiler_options(jax.default_backend()))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--out', type=Path)
  args = parser.parse_args(argv)
  report = {'batch_size': BATCH, 'rounds': args.rounds, 'machine': output.machine(),
            'ms_forward_and_gradients': {}}
  for case, variants in CASES.items():
    runs = {}
    for name, (fn, (params, x)) in variants.items():
      cotangent = jnp.ones(jax.eval_shape(fn, params, x).shape)
      run = forward_and_grads(fn)
      jax.block_until_ready(run(params, x, cotangent))  # compile
      runs[name] = lambda run=run, args=(params, x, cotangent): run(*args)
    ms = {name: [] for name in runs}
    for _ in range(args.rounds):
      for name, run in runs.items():
        start = time.perf_counter()
        for _ in range(5):
          jax.block_until_ready(run())
        ms[name].append(1e3 * (time.perf_counter() - start) / 5)
    report['ms_forward_and_gradients'][case] = {name: statistics.median(times)
                                                for name, times in ms.items()}
    print(case, report['ms_forward_and_gradients'][case], file=sys.stderr)
  output.emit(report, args.out)
  return 0


if __name__ == '__main__':
  runtime.set_cpu_xla_flags()  # as train.py, before JAX starts
  sys.exit(main())
