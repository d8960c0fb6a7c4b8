"""How JAX runs: the XLA options for CPU programs, the compilation cache, and that importing
jax_ae changes nothing. XLA reads XLA_FLAGS once per process: those cases run in subprocesses."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp

from jax_ae import runtime

CONV = (jnp.ones((8, 32, 14, 14)), jnp.ones((64, 32, 5, 5)))


def conv_program(compiler_options):
  conv = jax.jit(lambda x, k: jax.lax.conv(x, k, (1, 1), 'SAME'))
  return conv.lower(*CONV).compile(compiler_options=compiler_options or None).as_text()


def test_importing_jax_ae_changes_no_environment_variable():
  script = ('import os, json; before = dict(os.environ); import jax_ae, jax_ae.loop, '
            'jax_ae.runtime; print(json.dumps(dict(os.environ) == before))')
  out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                       check=True).stdout
  assert json.loads(out) is True


def test_the_cpu_option_compiles_convolutions_to_eigen():
  options = runtime.compiler_options('cpu')
  assert options == runtime.CPU_COMPILER_OPTIONS
  # (The fusion's kind: the programs' metadata also hold this test's name.)
  assert '"__ynn_fusion"' in conv_program({})
  assert '"__ynn_fusion"' not in conv_program(options)
  assert runtime.compiler_options('gpu') == {}


def test_switched_off_or_unknown_options_compile_with_xlas_defaults(monkeypatch, capsys):
  runtime.compiler_options.cache_clear()
  monkeypatch.setenv('JAX_AE_XLA_OPTIONS', '0')
  assert runtime.compiler_options('cpu') == {}
  runtime.compiler_options.cache_clear()
  monkeypatch.delenv('JAX_AE_XLA_OPTIONS')
  monkeypatch.setattr(runtime, 'CPU_COMPILER_OPTIONS', {'xla_cpu_no_such_option': True})
  assert runtime.compiler_options('cpu') == {}  # a warning, not an abort
  err = capsys.readouterr().err
  assert err.startswith('warning: jaxlib') and err.count('\n') == 1, err
  runtime.compiler_options.cache_clear()


PROBE = """
import json, os
from jax_ae import runtime
{setup}
import jax, jax.numpy as jnp
siblings = jax.jit(lambda a, b: (a * b + 1, a * b * 2))  # two loops over the same inputs
print(json.dumps({{'XLA_FLAGS': os.environ.get('XLA_FLAGS', ''), 'program':
    siblings.lower(jnp.ones(4096), jnp.ones(4096)).compile().as_text()}}))
"""


def probe(setup, xla_flags=None):
  env = {key: value for key, value in os.environ.items()
         if key not in ('XLA_FLAGS', 'JAX_AE_XLA_OPTIONS')}
  if xla_flags is not None:
    env['XLA_FLAGS'] = xla_flags
  out = subprocess.run([sys.executable, '-c', PROBE.format(setup=setup)], env=env,
                       capture_output=True, text=True, check=True).stdout
  return json.loads(out.splitlines()[-1])


def test_the_command_lines_flag_fuses_sibling_loops():
  plain = probe('')
  assert plain['XLA_FLAGS'] == '' and ') fusion(' not in plain['program']
  flagged = probe('runtime.set_cpu_xla_flags()')
  assert flagged['XLA_FLAGS'] == ('--xla_backend_extra_options='
                                  'xla_cpu_use_multi_output_fusion')
  assert ') fusion(' in flagged['program']  # one fusion returns both outputs (a tuple)


def test_a_users_own_flag_wins_and_the_switch_turns_it_off():
  users = '--xla_backend_extra_options=xla_cpu_flatten_after_fusion'
  assert probe('runtime.set_cpu_xla_flags()', users)['XLA_FLAGS'] == users
  switched_off = probe('os.environ["JAX_AE_XLA_OPTIONS"] = "0"; runtime.set_cpu_xla_flags()')
  assert switched_off['XLA_FLAGS'] == ''


def test_the_compilation_cache_folder(monkeypatch, tmp_path):
  previous = jax.config.jax_compilation_cache_dir
  try:
    monkeypatch.setenv('JAX_AE_COMPILATION_CACHE', '0')
    assert runtime.enable_compilation_cache() is None
    jax.config.update('jax_compilation_cache_dir', None)
    monkeypatch.setenv('JAX_AE_COMPILATION_CACHE', str(tmp_path / 'cache'))
    assert runtime.enable_compilation_cache() == tmp_path / 'cache'
    jax.config.update('jax_compilation_cache_dir', None)
    monkeypatch.delenv('JAX_AE_COMPILATION_CACHE')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert runtime.enable_compilation_cache() == tmp_path / 'xdg' / 'jax-ae' / 'xla'
    jax.config.update('jax_compilation_cache_dir', str(tmp_path / 'users'))
    assert runtime.enable_compilation_cache() == tmp_path / 'users'  # the user's choice wins
  finally:
    jax.config.update('jax_compilation_cache_dir', previous)


def test_where_it_runs():
  where = runtime.describe()
  assert where['backend'] == jax.default_backend() and where['device_count'] == len(jax.devices())
  assert where['versions']['jax'] == jax.__version__ and where['versions']['flax']


def test_an_unused_accelerator_plugin_is_one_warning(monkeypatch):
  class Distribution:
    metadata = {'Name': 'jax-cuda12-plugin'}
  monkeypatch.setattr(runtime.importlib.metadata, 'distributions', lambda: [Distribution()])
  warning = runtime.unused_accelerator_warning()
  assert warning.startswith('warning: jax-cuda12-plugin is installed but JAX runs on the CPU')
  monkeypatch.setattr(runtime.importlib.metadata, 'distributions', lambda: [])
  assert runtime.unused_accelerator_warning() is None
