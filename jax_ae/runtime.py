"""How JAX runs here: XLA's options for CPU programs, the persistent compilation cache, and
what the backend is, for the logs.

Nothing here acts on import: `import jax_ae` changes no environment variable and no JAX
setting. The command lines call these before their first computation.
"""
import functools
import importlib.metadata
import os
import sys
from pathlib import Path

import jax
import numpy as np

from jax_ae.errors import first_line

OPTIONS_SWITCH = 'JAX_AE_XLA_OPTIONS'  # '0': XLA's defaults on CPU
CACHE_SWITCH = 'JAX_AE_COMPILATION_CACHE'  # '0': no persistent cache; a path: that folder

# Convolutions compile to Eigen instead of YNNPACK (dots stay on YNNPACK): YNNPACK's
# convolution gradients were most of the CPU step (results/bench/xla_flags.json). Given per
# compilation, it reaches CPU programs only, also when JAX started before jax_ae was imported,
# and a jaxlib that does not know it gives a warning instead of aborting.
CPU_COMPILER_OPTIONS = {
    'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT',
}
# Multi-output fusion: elementwise loops that read the same arrays, such as Adam's two moment
# updates, run as one pass over memory. XLA takes it only as a key of the backend-options map,
# which no jaxlib accepts per compilation ("not a valid message value"), so the command lines
# put it in XLA_FLAGS before JAX starts. That is safe where an unknown flag would abort:
# --xla_backend_extra_options is a flag of every jaxlib, and XLA:CPU looks the key up by name,
# ignoring keys it does not know: XLA hands LLVM (which aborts on an unknown option) only the
# keys that do not start with 'xla_' (checked on jaxlib 0.10.2 and 0.12.0).
CPU_XLA_FLAGS = {'--xla_backend_extra_options': 'xla_cpu_use_multi_output_fusion'}

ACCELERATOR_PLUGINS = ('jax-cuda', 'jax-rocm', 'libtpu')  # distribution name prefixes


def options_enabled():
  return os.environ.get(OPTIONS_SWITCH, '1') != '0'


@functools.cache
def compiler_options(platform):
  """The XLA options of jax_ae's compilations on `platform` ({} off CPU or when switched off)."""
  if platform != 'cpu' or not options_enabled():
    return {}
  probe = jax.jit(lambda x: x + 1).lower(jax.device_put(np.float32(0), jax.devices('cpu')[0]))
  try:
    probe.compile(compiler_options=CPU_COMPILER_OPTIONS)
  except jax.errors.JaxRuntimeError as error:
    print(f'warning: jaxlib {jax.__version__} refuses the XLA option jax_ae sets for CPU '
          f'({first_line(error)}): compiling with XLA\'s defaults, slower', file=sys.stderr)
    return {}
  return CPU_COMPILER_OPTIONS


def set_cpu_xla_flags():
  """Adds CPU_XLA_FLAGS to this process's XLA_FLAGS, for the command lines to call before
  JAX starts; a flag the user set is kept as it is."""
  if not options_enabled():
    return
  current = os.environ.get('XLA_FLAGS', '')
  given = {flag.split('=')[0] for flag in current.split()}
  added = [f'{name}={value}' for name, value in CPU_XLA_FLAGS.items() if name not in given]
  if added:
    os.environ['XLA_FLAGS'] = ' '.join([current, *added]).strip()


def enable_compilation_cache():
  """Turns on JAX's persistent compilation cache, so that a second run skips compiling.

  The folder: JAX_COMPILATION_CACHE_DIR if the user set one, else JAX_AE_COMPILATION_CACHE,
  else the user's cache folder; JAX_AE_COMPILATION_CACHE=0 turns it off. Returns the folder
  or None.
  """
  setting = os.environ.get(CACHE_SWITCH, '')
  if setting == '0':
    return None
  if jax.config.jax_compilation_cache_dir:
    return Path(jax.config.jax_compilation_cache_dir)
  folder = Path(setting) if setting else Path(
      os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'jax-ae' / 'xla'
  jax.config.update('jax_compilation_cache_dir', str(folder))
  return folder


_cache_hits = []


def cache_hits():
  """How many compilations this process has loaded from the persistent cache so far."""
  _listen_for_cache_hits()
  return len(_cache_hits)


@functools.cache
def _listen_for_cache_hits():
  jax.monitoring.register_event_listener(
      lambda event, **_: _cache_hits.append(event)
      if event == '/jax/compilation_cache/cache_hits' else None)


def describe():
  """Where this process runs: backend, devices, processes and versions, for the run's log."""
  devices = jax.devices()
  return {
      'backend': jax.default_backend(),
      'device_kind': devices[0].device_kind,
      'device_count': len(devices),
      'process_count': jax.process_count(),
      'versions': {name: _version(name) for name in
                   ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint')},
  }


def unused_accelerator_warning():
  """One line when a GPU or TPU plugin is installed but JAX runs on the CPU, else None."""
  if jax.default_backend() != 'cpu':
    return None
  plugins = sorted({dist.metadata['Name'] for dist in importlib.metadata.distributions()
                    if (dist.metadata['Name'] or '').lower().startswith(ACCELERATOR_PLUGINS)})
  if not plugins:
    return None
  return (f'warning: {plugins[0]} is installed but JAX runs on the CPU: check the driver, '
          'CUDA_VISIBLE_DEVICES and JAX_PLATFORMS (python -c "import jax; print(jax.devices())")')


def _version(distribution):
  try:
    return importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return None
