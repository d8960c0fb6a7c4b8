"""The host loop around the jitted steps: data to the device, evaluation, checkpoints, logs."""
import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from jax_ae import checkpoint, data, parallel, training
from jax_ae.config import TRAJECTORY_FIELDS, ConfigError, load_config, save_config


class NonFiniteLoss(RuntimeError):
  """Training diverged; the last good checkpoint is kept."""


def train(config, workdir, resume=False):
  """Trains (or resumes) the run in workdir; returns the final TrainState."""
  workdir = Path(workdir)
  dataset = data.load_dataset(config.data)
  # Record what was loaded ('mnist' may fall back to 'mnist5k'), so analyze.py and a
  # resume read the same data.
  config = dataclasses.replace(config, data=dataset.name)
  num_train = len(dataset.train.images)
  if config.batch_size > num_train:
    raise ConfigError(f'--batch-size {config.batch_size} is larger than the {num_train} '
                      f'training images of {dataset.name}: choose a smaller one')
  total_steps = config.total_steps(dataset.name, num_train)
  eval_every = config.eval_every or num_train // config.batch_size
  mesh = parallel.make_mesh(config.devices, config.batch_size)
  dispatch_steps = config.dispatch_steps(jax.default_backend())

  optimizer = training.make_optimizer(config.lr, config.weight_decay)
  state = parallel.replicate(training.init_state(config.seed, optimizer), mesh)
  manager = checkpoint.open_manager(workdir / 'checkpoints')
  if manager.latest_step() is not None:
    _check_resumable(config, workdir, resume)
    state = checkpoint.restore(manager, manager.latest_step(), state)
  is_main_process = jax.process_index() == 0  # one writer of the logs on many hosts
  if is_main_process:
    workdir.mkdir(parents=True, exist_ok=True)
    save_config(config, workdir / 'config.json')

  train_images = parallel.replicate(dataset.train.images, mesh)
  step = int(state.step)
  compiled_lengths = set()
  losses, seconds, timed_images = [], 0.0, 0
  with tqdm(total=total_steps, initial=step, unit='step', dynamic_ncols=True,
            disable=not is_main_process) as bar:
    while step < total_steps:
      next_eval = min((step // eval_every + 1) * eval_every, total_steps)
      # Dispatch boundaries depend on the global step alone, so a resumed run
      # makes the very same calls as an uninterrupted one.
      end = min((step // dispatch_steps + 1) * dispatch_steps, next_eval)
      indices = parallel.shard_batches(training.batch_schedule(
          config.seed, num_train, config.batch_size, step, end - step), mesh)
      start = time.perf_counter()
      state, chunk_losses = training.train_steps(state, train_images, indices, lr=config.lr,
                                                 weight_decay=config.weight_decay)
      chunk_losses = np.asarray(chunk_losses)  # waits for the device
      if len(indices) in compiled_lengths:  # the first call of a shape includes compiling
        seconds += time.perf_counter() - start
        timed_images += indices.size
      compiled_lengths.add(len(indices))
      if not np.all(np.isfinite(chunk_losses)):
        bad = int(np.argmin(np.isfinite(chunk_losses)))
        last_good = manager.latest_step()
        kept = ('no checkpoint was written' if last_good is None else
                f'the last good checkpoint (step {last_good}) in {workdir} is kept')
        raise NonFiniteLoss(f'loss is {chunk_losses[bad]} at step {step + bad + 1}: training '
                            f'stopped; {kept}; try a lower --lr')
      losses.extend(chunk_losses.tolist())
      images_per_s = timed_images / seconds if seconds else float('nan')
      bar.update(end - step)
      bar.set_postfix(loss=f'{chunk_losses[-1]:.4f}', img_s=f'{images_per_s:.0f}')
      step = end
      if step == next_eval:
        test_mse = float(np.mean(training.image_errors(parallel.local_copy(state.params),
                                                       dataset.test.images)))
        checkpoint.save(manager, state, test_mse)
        record = dict(step=step, epoch=round(step * config.batch_size / num_train, 3),
                      train_loss=float(np.mean(losses)), test_mse=test_mse,
                      images_per_s=round(images_per_s, 1) if seconds else None,
                      data=dataset.name)
        if is_main_process:
          with open(workdir / 'metrics.jsonl', 'a') as log:
            log.write(json.dumps(record) + '\n')
        bar.write(f'step {step}: train loss {record["train_loss"]:.5f}, '
                  f'test MSE/pixel {test_mse:.5f}, {images_per_s:.0f} images/s')
        losses = []
  return state


def _check_resumable(config, workdir, resume):
  if not resume:
    raise ConfigError(f'{workdir} already holds a run: pass --resume to continue it, '
                      'or choose another --workdir')
  config_path = workdir / 'config.json'
  if not config_path.exists():
    return
  saved = load_config(config_path)
  changed = [name for name in TRAJECTORY_FIELDS
             if getattr(saved, name) != getattr(config, name)]
  if changed:
    was = ', '.join(f'{name}={getattr(saved, name)!r}' for name in changed)
    raise ConfigError(f'{workdir} holds a run with {was}: resume with the same settings, '
                      'or choose another --workdir')


def restore_params(workdir, step=None):
  """(config, params, step) of the run in workdir: its best checkpoint by test MSE, or step."""
  workdir = Path(workdir)
  if not (workdir / 'config.json').exists():
    raise ConfigError(f'{workdir} holds no run (no config.json): pass the --workdir of a '
                      'train.py run')
  config = load_config(workdir / 'config.json')
  manager = checkpoint.open_manager(workdir / 'checkpoints', read_only=True)
  step = manager.best_step() if step is None else step
  if step is None:
    raise ConfigError(f'{workdir} has no checkpoint yet: let train.py reach its first '
                      'evaluation')
  optimizer = training.make_optimizer(config.lr, config.weight_decay)
  # Onto this host's first device, whatever devices the run was sharded over.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  like = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                      jax.eval_shape(lambda: training.init_state(config.seed, optimizer)))
  state = checkpoint.restore(manager, step, like)
  return config, state.params, step
