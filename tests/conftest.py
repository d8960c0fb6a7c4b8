import os
import subprocess
import tempfile

import jax
import pytest

from jax_ae import runtime


def pytest_configure(config):
  # The XLA flags train.py sets before JAX starts, so that the tests run (and compare
  # against) the programs a user's train.py runs.
  runtime.set_cpu_xla_flags()
  # The tests train many tiny runs of the same shapes: compile each program once per session.
  # (JAX logs a compilation loaded from this cache as one, so counts still hold.)
  cache = tempfile.mkdtemp(prefix='jax-ae-tests-')
  jax.config.update('jax_compilation_cache_dir', cache)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  # The same cache for the tests' subprocesses (train.py, analyze.py, the notebook's kernel),
  # which inherit the environment: runtime.enable_compilation_cache reads the first, JAX the
  # second.
  os.environ[runtime.CACHE_SWITCH] = cache
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'


@pytest.fixture
def float32_matmuls():
  """Full float32 matmuls and convolutions: GPUs default to TF32 and TPUs to bf16 passes,
  which the float32 parity tests' tolerances do not allow. Use with
  pytestmark = pytest.mark.usefixtures('float32_matmuls')."""
  with jax.default_matmul_precision('highest'):
    yield


@pytest.fixture
def tmpfs(tmp_path):
  """mount(name, options): a tmpfs mounted at tmp_path / name (skips where it may not)."""
  mounted = []

  def mount(name, options):
    folder = tmp_path / name
    folder.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(folder)],
                      capture_output=True).returncode:
      pytest.skip('needs permission to mount a tmpfs')
    mounted.append(folder)
    return folder

  yield mount
  for folder in mounted:
    subprocess.run(['umount', str(folder)], check=True)
