"""Data parallel training over 4 fake CPU devices, in a subprocess: XLA reads the device
count once, before JAX starts, so the rest of the suite keeps its single device."""
import os
import subprocess
import sys
import textwrap

import jax
import pytest

from idx_files import write_idx_dataset
from jax_ae import parallel, rundir

SCRIPT = textwrap.dedent('''
    import sys
    import jax
    import numpy as np
    from jax_ae import loop, rundir
    from jax_ae.config import Config

    data, out = sys.argv[1], sys.argv[2]
    assert len(jax.devices()) == 4

    def config(devices, steps=4):
      return Config(data=data, steps=steps, batch_size=8, eval_every=2, steps_per_dispatch=2,
                    devices=devices)

    def max_diff(a, b):
      return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
                 for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    four = loop.train(config('4'), out + '/four')
    one = loop.train(config('1'), out + '/one')
    kernel = four.params['decoder']['fc2']['kernel']
    assert len(kernel.sharding.device_set) == 4 and kernel.sharding.is_fully_replicated
    assert len(one.params['decoder']['fc2']['kernel'].sharding.device_set) == 1
    # The default in one process: one device, the lab's batch is too small to split.
    auto = loop.train(config('auto', steps=2), out + '/auto')
    assert len(auto.params['decoder']['fc2']['kernel'].sharding.device_set) == 1
    print('sharded vs single', max_diff(four.params, one.params))
    assert max_diff(four.params, one.params) < 1e-5

    # A checkpoint written by the 4-device run restores onto one device...
    restored, step = rundir.open_for_reading(out + '/four').load_params(step=4)
    assert step == 4 and len(restored['decoder']['fc2']['kernel'].devices()) == 1
    assert max_diff(restored, four.params) == 0.0
    # ...and the 1-device run resumes over 4 devices, like a 4-device run from the start.
    resumed = loop.train(config('4', steps=6), out + '/one', resume=True)
    longer = loop.train(config('4', steps=6), out + '/four', resume=True)
    print('resumed across device counts', max_diff(resumed.params, longer.params))
    assert max_diff(resumed.params, longer.params) < 1e-5
    print('OK')
''')


@pytest.mark.slow
def test_four_devices_train_like_one_and_share_checkpoints(tmp_path):
  write_idx_dataset(tmp_path, n_train=40, n_test=8)
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4',
         'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run([sys.executable, '-c', SCRIPT, f'idx:{tmp_path}', str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().endswith('OK'), result.stdout


def several_processes_watch():
  watch = parallel.PeerWatch(lambda: 'resume')
  watch.several = True  # as in a job of several processes, without its watchdog thread
  return watch


def test_a_failed_collective_is_a_lost_peer_and_nothing_else_is():
  watch = several_processes_watch()
  with pytest.raises(parallel.PeerLost, match='failed in the call.*probably stopped; resume'):
    with watch.waiting('the call'):
      raise jax.errors.JaxRuntimeError('gloo: connection closed by peer')
  full_disk = rundir.CheckpointError('could not write the checkpoint: no space left on device')
  for error in (full_disk, KeyError('a bug')):
    with pytest.raises(type(error)) as raised:
      with watch.waiting('the checkpoint'):
        raise error
    assert raised.value is error
