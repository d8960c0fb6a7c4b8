"""The jitted update: the train state, the optimizer, and how a call runs several steps.

Pure functions over pytrees. jax_ae/dispatch.py builds the optimizer and the calls from a
Config, compiling train_steps ahead of time (for K steps a call, and for one); the host loop
(jax_ae/loop.py) calls those programs for the whole run.
"""
import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_ae.errors import ConfigError
from jax_ae.images import to_float
from jax_ae.model import LATENT_DIM, init_params, model_of

# Updates per call. On GPUs and TPUs a call's steps run in a lax.scan: 64 keep the device
# busy between the host's calls. On CPU they are unrolled into straight-line code, because
# XLA:CPU runs a loop body about 10x slower (results/bench/scan.json); unrolled, 4 steps a
# call are 1.2x faster than 1 (XLA fuses across them), and compile time grows with the count.
ACCELERATOR_STEPS_PER_CALL = 64
CPU_STEPS_PER_CALL = 4
CPU_MAX_STEPS_PER_CALL = 8


class TrainState(NamedTuple):
  params: Any
  opt_state: Any
  step: jax.Array  # () int32, updates applied so far


def make_optimizer(lr, weight_decay):
  # PyTorch's Adam(weight_decay=wd) adds wd * param to the gradient *before* the moments
  # (coupled L2), which is this chain; optax.adamw would decay after them.
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr))


def init_state(seed, optimizer, latent_dim=LATENT_DIM, init='torch'):
  params = init_params(jax.random.key(seed), latent_dim, init)
  return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def mse_loss(params, images):
  """Mean squared error over every pixel of the batch, as torch.nn.MSELoss()."""
  return jnp.mean((model_of(params).apply({'params': params}, images) - images) ** 2)


@dataclasses.dataclass(frozen=True)
class StepPlan:
  """How a call runs its steps: the one decision the loop, the tests and bench/ share."""
  steps_per_call: int
  unroll: bool  # straight-line steps (CPU) rather than a lax.scan (GPU, TPU)


def plan_steps(platform, steps_per_call=None):
  """The StepPlan for a JAX platform ('cpu', 'gpu', 'tpu'); steps_per_call None: its default."""
  if platform != 'cpu':
    return StepPlan(steps_per_call or ACCELERATOR_STEPS_PER_CALL, unroll=False)
  steps_per_call = steps_per_call or CPU_STEPS_PER_CALL
  if steps_per_call > CPU_MAX_STEPS_PER_CALL:
    raise ConfigError(f'--steps-per-dispatch {steps_per_call} on CPU: its steps are unrolled '
                      'into one program, whose compile time grows with them, for no gain past '
                      f'a few: use at most {CPU_MAX_STEPS_PER_CALL}')
  return StepPlan(steps_per_call, unroll=True)


def image_loss(params, rows):
  """mse_loss of uint8 image rows gathered from the training split."""
  return mse_loss(params, to_float(rows))


def make_train_steps(optimizer, plan, loss=image_loss):
  """train_steps(state, images, batch_indices) -> (state, losses), to be jitted.

  loss(params, rows): the loss of a batch of rows of `images` (default: the autoencoder's MSE
    on uint8 images; tests train other models through the same step).

  images: (N, 784) uint8, the whole training split on the device. Flat rows, because TPUs
    tile the two minor dimensions of an array: (N, 28, 28, 1) would pad each image's
    trailing (28, 1) to a whole tile, many times its size, where 784 pads to 896 at most.
  batch_indices: (K, B) int32, the rows of the batches of K consecutive steps.
  Returns the new state and the K losses.
  """
  def step(state, images, indices):
    value, grads = jax.value_and_grad(loss)(state.params, images[indices])
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state, state.step + 1), value

  def train_steps(state, images, batch_indices):
    if plan.unroll or len(batch_indices) == 1:
      losses = []
      for indices in batch_indices:
        state, loss = step(state, images, indices)
        losses.append(loss)
      return state, jnp.stack(losses)
    return jax.lax.scan(lambda state, indices: step(state, images, indices), state,
                        batch_indices)

  return train_steps


def call_length(step, segment_end, steps_per_call):
  """Steps in the next call: K while K fit before the segment's end, then single steps.

  So a run compiles two programs at most, and the calls from any call boundary on depend
  on that step and the segment's end alone: a run stopped after any call and resumed makes
  the very same calls as an uninterrupted one, and ends with exactly its params (a call's
  rounding depends on its length: XLA fuses across the steps of a call).
  """
  return steps_per_call if segment_end - step >= steps_per_call else 1


def batch_schedule(seed, num_examples, batch_size, first_step, num_steps):
  """(num_steps, batch_size) row indices for global steps first_step .. first_step+num_steps-1.

  Epoch e visits the rows in the order of a permutation seeded by (seed, e) and drops the
  last partial batch, so any step's batch depends on (seed, step) alone: a resumed run sees
  exactly the batches an uninterrupted one would.
  """
  steps_per_epoch = num_examples // batch_size
  steps = np.arange(first_step, first_step + num_steps)
  epochs, positions = np.divmod(steps, steps_per_epoch)
  rows = np.empty((num_steps, batch_size), np.int32)
  for epoch in np.unique(epochs):
    order = _epoch_order(seed, int(epoch), num_examples)
    batches = order[:steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)
    rows[epochs == epoch] = batches[positions[epochs == epoch]]
  return rows


@functools.lru_cache(maxsize=2)  # an epoch's calls share one permutation (2 ms for 60,000)
def _epoch_order(seed, epoch, num_examples):
  return np.random.default_rng([seed, epoch]).permutation(num_examples)
