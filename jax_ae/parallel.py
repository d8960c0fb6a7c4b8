"""Data parallelism with jax.sharding: one mesh axis over the devices of every process.

The batch is split along the mesh; the params, the optimizer state and the training images
are replicated, so the step is the same program on one device or many, and XLA inserts the
gradient all-reduce.
"""
import contextlib
import os
import sys
import threading
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jax_ae.errors import ConfigError, UserError, first_line

BY_HAND = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID')
PEER_TIMEOUT = 'JAX_AE_PEER_TIMEOUT'  # seconds a process waits for the others, default 60


def peer_timeout(environ=os.environ):
  value = environ.get(PEER_TIMEOUT) or '60'
  try:
    return float(value)
  except ValueError:
    raise ConfigError(f'{PEER_TIMEOUT} must be a number of seconds, got {value!r}') from None


def initialize_distributed(environ=os.environ):
  """Joins JAX's distributed runtime when the environment describes a job of several processes.

  By hand: JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and
  JAX_PROCESS_ID, passed on explicitly since jax.distributed.initialize() reads only the
  address. TPU pod slices, SLURM and Open MPI: JAX detects those itself. Must run before JAX
  starts its backends.
  """
  given = {name: environ[name] for name in BY_HAND if environ.get(name)}
  if given:
    missing = [name for name in BY_HAND if name not in given]
    if missing:
      raise ConfigError(f'{" and ".join(given)} set without {" and ".join(missing)}: a run of '
                        'several processes by hand needs all three (see the README)')
    address, count, index = (given[name] for name in BY_HAND)
    if not _is_count(count) or int(count) < 1:
      raise ConfigError(f'JAX_NUM_PROCESSES must be a positive integer, got {count!r}')
    if not _is_count(index) or int(index) >= int(count):
      raise ConfigError(f'JAX_PROCESS_ID must be an integer from 0 to {int(count) - 1}, '
                        f'got {index!r}')
    host, _, port = address.rpartition(':')
    if not host or not port.isdigit():
      raise ConfigError(f'JAX_COORDINATOR_ADDRESS must be host:port (process 0\'s), got '
                        f'{address!r}')
    try:
      jax.distributed.initialize(address, int(count), int(index),
                                 heartbeat_timeout_seconds=_heartbeat_timeout(environ))
    except Exception as error:  # JAX raises various types: unreachable, timed out, port taken
      raise ConfigError(f'process {index} could not join the job at {address} '
                        f'({first_line(error)}): start every process with the same address, reachable from all, and '
                        'a port that is free on process 0\'s host') from None
  elif _in_cluster(environ):
    jax.distributed.initialize(heartbeat_timeout_seconds=_heartbeat_timeout(environ))


def _is_count(text):
  return text.isascii() and text.isdigit()  # str.isdigit alone takes '²', which int() refuses


def _heartbeat_timeout(environ):
  # Longer than PeerWatch's wait, which ends a process with one line: JAX's check would end
  # it with an abort and a stack trace.
  return int(max(100, 2 * peer_timeout(environ)))


def _in_cluster(environ):
  return (',' in environ.get('TPU_WORKER_HOSTNAMES', '')
          or environ.get('SLURM_STEP_NUM_TASKS', '1') not in ('', '1')
          or environ.get('OMPI_COMM_WORLD_SIZE', '1') not in ('', '1'))


def several_processes():
  """Whether this process is one of a job of several (jax.distributed)."""
  return jax.process_count() > 1


def sync(name):
  """Waits until every process of the job has come here (at once in a job of one)."""
  if several_processes():
    multihost_utils.sync_global_devices(name)


def any_process(flag):
  """Whether flag is true in any process of the job."""
  if not several_processes():
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.array(flag))))


def make_mesh(devices, batch_size):
  """A 1-D 'batch' mesh over `devices` of jax.devices(): 'auto', 'all' or a count.

  'auto' is one device in one process: the lab's batch of 64 is too little work to split,
  and a split adds a gradient all-reduce to every step. A job of several processes needs
  every device, so there 'auto' is all of them.
  """
  available = jax.devices()
  several = several_processes()
  if devices == 'auto':
    count = len(available) if several else 1
  elif devices == 'all':
    count = len(available)
  elif _is_count(devices) and 1 <= int(devices) <= len(available):
    count = int(devices)
  else:
    raise ConfigError(f"--devices must be 'auto', 'all' or a number from 1 to {len(available)} "
                      f'(the devices JAX sees here), got {devices!r}')
  if several and count != len(available):
    raise ConfigError(f'--devices {devices}: a job of {jax.process_count()} processes trains on '
                      f"all {len(available)} of its devices: pass --devices all or leave it out")
  if batch_size % count:
    raise ConfigError(f'--batch-size {batch_size} does not split evenly over {count} devices: '
                      f'use a multiple of {count} or --devices with a divisor of {batch_size}')
  return Mesh(np.array(available[:count]), ('batch',))


def replicated(mesh):
  return NamedSharding(mesh, PartitionSpec())


def batch_split(mesh):
  """(K, B) batch rows: each batch split along the mesh."""
  return NamedSharding(mesh, PartitionSpec(None, 'batch'))


def replicated_init(init, mesh):
  """init() computed in one compiled program, straight onto every device of the mesh."""
  return jax.jit(init, out_shardings=replicated(mesh))()


def replicate(tree, mesh):
  return jax.tree.map(lambda leaf: _global_array(np.asarray(leaf), replicated(mesh)), tree)


def shard_batches(batch_indices, mesh):
  return _global_array(batch_indices, batch_split(mesh))


def _global_array(array, sharding):
  # Every process holds the same host array and fills only its own devices' shards: the
  # batch rows are a function of (seed, step), and every process loads the whole training
  # split (60,000 images are 47 MB). A dataset too large for one host would need each
  # process to load and feed only the rows of its own shards, with the gather moved to the host.
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def compile_train_steps(train_steps, mesh, state, images, batch_indices, compiler_options):
  """train_steps compiled for these arguments' shapes and the mesh (a call with other
  shapes raises instead of compiling again)."""
  jitted = jax.jit(train_steps, donate_argnums=0,
                   in_shardings=(replicated(mesh), replicated(mesh), batch_split(mesh)),
                   out_shardings=(replicated(mesh), replicated(mesh)))
  return jitted.lower(state, images, batch_indices).compile(
      compiler_options=compiler_options or None)


class PeerLost(UserError):
  """A collective of a job of several processes failed: another process has stopped."""


class PeerWatch:
  """Waits on the other processes of a job, ended in one line when one of them has died:
  a collective that fails (gloo sees the connection close) raises PeerLost, and one that
  hangs past the peer timeout ends this process. Does nothing in a job of one process."""

  def __init__(self, advice):
    self.advice = advice  # () -> what to do, e.g. which checkpoint to resume from
    self.timeout = peer_timeout()
    self._waiting = None  # (since, what)
    self.several = several_processes()
    if self.several:
      threading.Thread(target=self._watch, daemon=True).start()

  @contextlib.contextmanager
  def waiting(self, what):
    """A context in which this process waits on the others, doing `what`."""
    self._waiting = (time.monotonic(), what)
    try:
      yield
    except Exception as error:
      # Only a failed collective means a lost peer: a UserError (a full disk in a save) says
      # what it is itself, and any other exception is a bug, which keeps its traceback.
      if not self.several or isinstance(error, UserError) or not _is_runtime_error(error):
        raise
      while error.__cause__ is not None:  # the collective's own message, not a wrapper's
        error = error.__cause__
      raise PeerLost(f'process {jax.process_index()} failed in {what} ({first_line(error)}): '
                     f'another process has probably stopped; {self.advice()}') from None
    finally:
      self._waiting = None

  def _watch(self):
    while True:
      time.sleep(0.5)
      waiting = self._waiting
      if waiting and time.monotonic() - waiting[0] > self.timeout:
        sys.stderr.write(f'\nerror: process {jax.process_index()} waited {self.timeout:.0f} s in '
                         f'{waiting[1]}: another process has probably stopped; '
                         f'{self.advice()}\n')
        sys.stderr.flush()
        os._exit(1)  # the main thread is stuck in the collective


def _is_runtime_error(error):
  """Whether error, or what caused it, is JAX's runtime reporting a failed operation."""
  while error is not None:
    if isinstance(error, jax.errors.JaxRuntimeError):
      return True
    error = error.__cause__
  return False


def local_copy(tree):
  """This process's first copy of a replicated tree, for evaluation on this host."""
  return jax.tree.map(lambda leaf: leaf.addressable_data(0), tree)
