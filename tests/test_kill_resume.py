"""kill -9 a real training process, mid-checkpoint if we can catch one, then --resume."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from idx_files import write_idx_dataset
from jax_ae import trainer
from jax_ae.config import Config

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ['--steps', '12', '--batch-size', '8', '--eval-every', '2', '--steps-per-dispatch', '1']


def test_kill_9_then_resume_ends_like_an_uninterrupted_run(tmp_path):
  write_idx_dataset(tmp_path, n_train=40, n_test=8)
  data, workdir = f'idx:{tmp_path}', tmp_path / 'run'
  # The resumed process reuses the killed one's compilation instead of compiling again.
  env = {**os.environ, 'JAX_COMPILATION_CACHE_DIR': str(tmp_path / 'jax-cache')}
  command = [sys.executable, str(ROOT / 'train.py'), '--data', data, *FLAGS,
             '--workdir', str(workdir)]
  process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  checkpoints = workdir / 'checkpoints'
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline and process.poll() is None:
    saving = [p for p in checkpoints.glob('*') if 'tmp' in p.name]
    done = [p for p in checkpoints.glob('*') if p.name.isdigit()]
    if done and saving:  # a save in progress after at least one complete one
      break
    time.sleep(0.005)
  assert process.poll() is None, 'the run ended before it could be killed'
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert 0 < max(int(p.name) for p in checkpoints.glob('*') if p.name.isdigit()) < 12

  resumed = subprocess.run([sys.executable, str(ROOT / 'train.py'), '--workdir', str(workdir),
                            '--resume'], env=env, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert not [p for p in checkpoints.glob('*') if 'tmp' in p.name]

  uninterrupted = trainer.train(Config(data=data, steps=12, batch_size=8, eval_every=2,
                                       steps_per_dispatch=1), tmp_path / 'whole')
  _, params, step = trainer.restore_params(workdir, step=12)
  assert step == 12
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(uninterrupted.params)):
    np.testing.assert_array_equal(a, b)
