"""Where the training step's time goes on this CPU: the forward pass, the backward pass and
the optimizer, each compiled alone with train.py's XLA options, against the machine's
measured limits; and the optimizer as jax_ae builds it against an Adam written as one pass.

python bench/cpu_step.py [--batch-sizes 64 256] [--rounds R] [--out FILE]

Parts, each its own program, alternating in rounds in this one process (median ms):
  forward: the batch's rows gathered, the network and the MSE;
  forward + backward: that and the gradients (backward = the difference);
  optimizer: update.make_optimizer's update applied to params and moments, donated as the
    step donates its state (a program that writes fresh buffers page-faults them every call);
  optimizer, one pass: coupled L2 then Adam as a single tree_map, optax's arithmetic and
    state, so XLA sees one expression per parameter;
  step: the whole step as train.py runs it (dispatch.Dispatch, 4 unrolled a call) with each
    optimizer: what a user would gain.
Also each part's minor page faults in one call: glibc's malloc mmaps and unmaps a program's
tens of MB of temporaries around a call, so they are faulted in again (strace of the batch-64
step: its 80 MB, 20k faults, every call).

Measured (results/bench/cpu_step.json): the one-pass Adam compiles to the same fusions as
optax's chain (per parameter: the decayed gradient to a temporary, the two moments in one
multi-output loop, the parameter), so it is no faster, and make_optimizer keeps the chain.
"""
import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import limits
import output
from jax_ae import dispatch, parallel, runtime, update
from jax_ae.config import Config

NUM_IMAGES = 60_000


def one_pass_adam(lr, weight_decay, b1=0.9, b2=0.999, eps=1e-8):
  """update.make_optimizer's arithmetic and state, written as one function of a parameter's
  gradient, value and moments; the updates it returns are the parameter's change."""
  reference = update.make_optimizer(lr, weight_decay)

  def update_fn(grads, state, params):
    decay_state, (adam_state, scale_state) = state
    count = optax.safe_increment(adam_state.count)

    def leaf(g, p, m, v):
      g = g + weight_decay * p
      m = (1 - b1) * g + b1 * m
      v = (1 - b2) * jnp.square(g) + b2 * v
      m_hat = m / (1 - b1 ** count).astype(m.dtype)
      v_hat = v / (1 - b2 ** count).astype(v.dtype)
      return -lr * (m_hat / (jnp.sqrt(v_hat) + eps)), m, v

    out = jax.tree.map(leaf, grads, params, adam_state.mu, adam_state.nu)
    pick = lambda i: jax.tree.map(lambda _, o: o[i], grads, out)
    adam_state = adam_state._replace(count=count, mu=pick(1), nu=pick(2))
    return pick(0), (decay_state, (adam_state, scale_state))

  return optax.GradientTransformation(reference.init, update_fn)


def parts(batch_size, images, optimizers):
  """{name: run()} of each part at this batch size; run() waits for its result."""
  options = runtime.compiler_options('cpu')
  config = Config(batch_size=batch_size)
  flat = jnp.asarray(images.reshape(len(images), -1))
  rows = jnp.asarray(update.batch_schedule(config.seed, len(images), batch_size, 0, 1)[0])
  reference = optimizers['optimizer']
  params = update.init_state(config.seed, reference).params
  grads = jax.jit(jax.grad(update.image_loss))(params, flat[rows])
  compile = lambda fn, *args, **jit: jax.jit(fn, **jit).lower(*args).compile(
      compiler_options=options)
  forward = compile(lambda p, x, r: update.image_loss(p, x[r]), params, flat, rows)
  backward = compile(lambda p, x, r: jax.value_and_grad(update.image_loss)(p, x[r]),
                     params, flat, rows)
  runs = {'forward': lambda: forward(params, flat, rows).block_until_ready(),
          'forward + backward': lambda: jax.block_until_ready(backward(params, flat, rows))}
  mesh = parallel.make_mesh(config.devices, batch_size)
  plan = update.plan_steps('cpu')
  for name, optimizer in optimizers.items():
    def apply(params, opt_state, grads, optimizer=optimizer):
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state
    state = [params, optimizer.init(params)]
    program = compile(apply, *state, grads, donate_argnums=(0, 1))
    state = [jax.tree.map(jnp.copy, leaf) for leaf in state]  # theirs to donate

    def run(program=program, state=state):
      state[:] = jax.block_until_ready(program(*state, grads))
    runs[name] = run
  for name, optimizer in optimizers.items():
    state = [parallel.replicated_init(lambda o=optimizer: update.init_state(config.seed, o),
                                      mesh), 0]
    calls = dispatch.Dispatch(optimizer, plan, mesh, images, config.seed, batch_size, options)
    calls.compile(state[0], plan.steps_per_call)

    def run(calls=calls, state=state):
      state[0], losses = calls(state[0], state[1], plan.steps_per_call)
      np.asarray(losses)
      state[1] += plan.steps_per_call
    runs[f'step ({plan.steps_per_call} a call), {name}'] = run
  return runs, plan.steps_per_call, sum(leaf.size for leaf in jax.tree.leaves(params))


def bench(batch_size, rounds, repeats, images, optimizers):
  runs, steps_per_call, num_params = parts(batch_size, images, optimizers)
  ms = {name: [] for name in runs}
  faults = {}
  for name, run in runs.items():  # warm-up; page faults of one call, steady state
    run()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    run()
    faults[name] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
  for round_ in range(rounds):
    for name, run in runs.items():
      start = time.perf_counter()
      for _ in range(repeats):
        run()
      ms[name].append(1e3 * (time.perf_counter() - start) / repeats)
    print(f'batch {batch_size}, round {round_ + 1}/{rounds}', file=sys.stderr)
  median = {name: statistics.median(values) for name, values in ms.items()}
  for name in list(median):
    if name.startswith('step'):
      median[name.replace('step (', 'per step (', 1)] = median[name] / steps_per_call
  median['backward (difference)'] = median['forward + backward'] - median['forward']
  return {'batch_size': batch_size, 'num_params': num_params, 'median_ms': median,
          'round_ms': ms, 'minor_page_faults_per_call': faults}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch-sizes', type=int, nargs='+', default=[64, 256])
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--repeats', type=int, default=3, help='calls of each part a round')
  parser.add_argument('--out', type=Path)
  args = parser.parse_args(argv)
  if jax.default_backend() != 'cpu':
    sys.exit('bench/cpu_step.py measures the CPU step: run it with JAX_PLATFORMS=cpu')
  config = Config()
  optimizers = {'optimizer': update.make_optimizer(config.lr, config.weight_decay),
                'optimizer, one pass': one_pass_adam(config.lr, config.weight_decay)}
  images = np.random.default_rng(0).integers(0, 256, (NUM_IMAGES, 28, 28, 1), np.uint8)
  bandwidth = limits.memory_bandwidth()
  results = [bench(b, args.rounds, args.repeats, images, optimizers)
             for b in args.batch_sizes]
  adam_bytes = limits.adam_bytes(results[0]['num_params'])
  report = {'machine': output.machine(), 'rounds': args.rounds, 'repeats': args.repeats,
            'memory_bandwidth': bandwidth, 'adam_bytes_per_step': adam_bytes,
            'adam_ms_at_measured_bandwidth': 1e3 * adam_bytes / bandwidth['gb_per_s'] / 1e9,
            'results': results}
  output.emit(report, args.out)
  return 0


if __name__ == '__main__':
  runtime.set_cpu_xla_flags()  # as train.py, before JAX starts
  sys.exit(main())
