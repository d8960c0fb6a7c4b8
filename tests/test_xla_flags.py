"""The XLA:CPU flags set by `import jax_ae` (jax_ae/__init__.py): applied, and never over
a user's own. Each case runs in a fresh process, since XLA reads XLA_FLAGS once."""
import json
import os
import subprocess
import sys

PROBE = """
import json, os
import jax_ae, jax, jax.numpy as jnp
conv = jax.jit(lambda x, k: jax.lax.conv(x, k, (1, 1), 'SAME'))
siblings = jax.jit(lambda a, b: (a * b + 1, a * b * 2))  # two loops over the same inputs
print(json.dumps({
    'XLA_FLAGS': os.environ['XLA_FLAGS'],
    'conv': conv.lower(jnp.ones((8, 32, 14, 14)), jnp.ones((64, 32, 5, 5))).compile().as_text(),
    'siblings': siblings.lower(jnp.ones(4096), jnp.ones(4096)).compile().as_text(),
}))
"""
OURS = {'--xla_cpu_experimental_ynn_fusion_type': 'individual_dot',
        '--xla_backend_extra_options': 'xla_cpu_use_multi_output_fusion'}


def probe(xla_flags):
  env = {key: value for key, value in os.environ.items() if key != 'XLA_FLAGS'}
  if xla_flags is not None:
    env['XLA_FLAGS'] = xla_flags
  out = subprocess.run([sys.executable, '-c', PROBE], env=env, capture_output=True, text=True,
                       check=True).stdout
  return json.loads(out.splitlines()[-1])


def test_flags_take_effect():
  result = probe(None)
  assert result['XLA_FLAGS'].split() == [f'{name}={value}' for name, value in OURS.items()]
  assert 'ynn' not in result['conv']  # the convolution compiles to Eigen, not YNNPACK
  assert ') fusion(' in result['siblings']  # one fusion returns both outputs (a tuple)


def test_a_users_flag_wins():
  users = '--xla_cpu_experimental_ynn_fusion_type=individual_dot,individual_convolution'
  result = probe(users)
  assert result['XLA_FLAGS'] == f'{users} --xla_backend_extra_options=xla_cpu_use_multi_output_fusion'
  assert 'ynn' in result['conv']  # the user's choice is what XLA ran
