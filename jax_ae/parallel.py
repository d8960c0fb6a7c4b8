"""Data parallelism with jax.sharding: one mesh axis over every device of every host.

The batch is split along the mesh; parameters, optimizer state and the (small) dataset
are replicated, so the jitted step is unchanged and XLA inserts the gradient all-reduce.
"""
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jax_ae.config import ConfigError

# Any of these means the process is one of several: TPU pod slices, SLURM, or by hand.
DISTRIBUTED_ENV = ('JAX_COORDINATOR_ADDRESS', 'TPU_WORKER_HOSTNAMES', 'SLURM_STEP_NUM_TASKS')


def maybe_initialize_distributed():
  """Joins JAX's distributed runtime when the environment describes a multi-process job."""
  tasks = os.environ.get('SLURM_STEP_NUM_TASKS', '1')
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  if 'JAX_COORDINATOR_ADDRESS' in os.environ or ',' in hosts or tasks not in ('', '1'):
    jax.distributed.initialize()  # reads the coordinator, process count and id from there


def make_mesh(devices, batch_size):
  """A 1-D 'batch' mesh over `devices` ('all' or a count) of jax.devices()."""
  available = jax.devices()
  count = len(available) if devices == 'all' else _count(devices, len(available))
  if batch_size % count:
    raise ConfigError(f'--batch-size {batch_size} does not split evenly over {count} devices: '
                      f'use a multiple of {count} or --devices with a divisor of {batch_size}')
  return Mesh(np.array(available[:count]), ('batch',))


def _count(devices, available):
  if not devices.isdigit() or not 1 <= int(devices) <= available:
    raise ConfigError(f"--devices must be 'all' or a number from 1 to {available} (the devices "
                      f'JAX sees here), got {devices!r}')
  return int(devices)


def replicate(tree, mesh):
  return jax.tree.map(lambda leaf: _global_array(np.asarray(leaf), NamedSharding(
      mesh, PartitionSpec())), tree)


def shard_batches(batch_indices, mesh):
  """(K, B) rows of K batches, each batch split along the mesh."""
  return _global_array(batch_indices, NamedSharding(mesh, PartitionSpec(None, 'batch')))


def _global_array(array, sharding):
  # Every process holds the same host array (the schedule is a function of seed and step),
  # and each fills only the shards of its own devices: this works on one host or many.
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def local_copy(tree):
  """One device's copy of a replicated tree, for evaluation on this host."""
  return jax.tree.map(lambda leaf: leaf.addressable_data(0), tree)
