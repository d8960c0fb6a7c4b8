"""The training on the devices, built from a Config in one place: the optimizer, the initial
train state, and Dispatch, the calls of train steps compiled ahead of time. The loop, the
restore of a checkpoint (jax_ae/rundir.py) and bench/ all build through here, so that they
run, restore and measure the same thing."""
import time
from typing import Any, NamedTuple

import jax

from jax_ae import parallel, runtime, update


def make_optimizer(config):
  return update.make_optimizer(config.lr, config.weight_decay)


def initial_state(config, optimizer):
  """The TrainState of step 0: the params of config.seed, the optimizer's first state."""
  return update.init_state(config.seed, optimizer, config.latent_dim, config.init)


def state_shape(config):
  """The shapes and dtypes of a run's TrainState, which a checkpoint restores into."""
  return jax.eval_shape(lambda: initial_state(config, make_optimizer(config)))


class Built(NamedTuple):
  state: update.TrainState  # of step 0, replicated on the mesh
  optimizer: Any
  dispatch: 'Dispatch'


def build(config, mesh, plan, train_images, compiler_options=None):
  """What a run of config trains with on mesh: Built(state, optimizer, dispatch).

  plan: update.StepPlan; train_images: the training split, (N, 28, 28, 1) uint8;
  compiler_options: XLA's options (None: runtime.compiler_options of the mesh's platform).
  """
  if compiler_options is None:
    compiler_options = runtime.compiler_options(mesh.devices.flat[0].platform)
  optimizer = make_optimizer(config)
  state = parallel.replicated_init(lambda: initial_state(config, optimizer), mesh)
  return Built(state, optimizer, Dispatch(optimizer, plan, mesh, train_images, config.seed,
                                          config.batch_size, compiler_options))


class Dispatch:
  """The calls of train steps as the loop makes them: the training split on the devices as
  (N, 784) uint8 (see update.make_train_steps), the batch rows of any step, and a program
  compiled ahead of time per call length."""

  def __init__(self, optimizer, plan, mesh, train_images, seed, batch_size, compiler_options):
    self.train_steps = update.make_train_steps(optimizer, plan)
    self.mesh, self.seed, self.batch_size = mesh, seed, batch_size
    self.compiler_options = compiler_options
    self.images = parallel.replicate(train_images.reshape(len(train_images), -1), mesh)
    self.programs = {}  # steps per call -> compiled program

  def rows(self, step, length):
    """(length, B) rows of the batches of steps step .. step + length - 1, split on the mesh."""
    return parallel.shard_batches(update.batch_schedule(
        self.seed, len(self.images), self.batch_size, step, length), self.mesh)

  def compile(self, state, length):
    """Compiles the program of `length` steps a call: (seconds, whether from the cache)."""
    began, cache_hits = time.perf_counter(), runtime.cache_hits()
    self.programs[length] = parallel.compile_train_steps(
        self.train_steps, self.mesh, state, self.images, self.rows(0, length),
        self.compiler_options)
    return time.perf_counter() - began, runtime.cache_hits() > cache_hits

  def __call__(self, state, step, length):
    """(state, losses) after steps step + 1 .. step + length, in one call (asynchronous)."""
    return self.programs[length](state, self.images, self.rows(step, length))
