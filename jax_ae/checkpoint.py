"""Orbax checkpoints of the train state: the last few, and the best by test MSE."""
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

KEEP_LATEST = 3


class CheckpointError(ValueError):
  """A checkpoint that cannot be used; str() is one line that says what to do."""


def open_manager(directory, read_only=False):
  options = ocp.CheckpointManagerOptions(
      best_fn=lambda metrics: metrics['test_mse'],
      best_mode='min',
      preservation_policy=policies.AnyPreservationPolicy([
          policies.LatestN(n=KEEP_LATEST),
          # BestN keeps the n largest values of the metric.
          policies.BestN(get_metric_fn=lambda metrics: -metrics['test_mse'], n=1),
      ]),
      # A save is written to a temporary folder and renamed when complete; a save cut
      # short (kill -9, full disk) leaves such a folder, removed on the next open.
      cleanup_tmp_directories=not read_only,
      enable_async_checkpointing=False,
      read_only=read_only,
  )
  return ocp.CheckpointManager(Path(directory).absolute(), options=options,
                               item_handlers=ocp.StandardCheckpointHandler())


def save(manager, state, test_mse):
  step, previous = int(state.step), manager.latest_step()
  try:
    manager.save(step, args=ocp.args.StandardSave(state), metrics={'test_mse': float(test_mse)})
    manager.wait_until_finished()
  except Exception as error:  # a full disk, a lost mount: Orbax raises various types
    reason = 'no space left on device' if 'No space left' in str(error) else type(error).__name__
    kept = 'no earlier checkpoint' if previous is None else f'the checkpoint of step {previous}'
    raise CheckpointError(f'could not write the checkpoint of step {step} in {manager.directory} '
                          f'({reason}); {kept} is intact: free some space and run again with '
                          '--resume') from error


def restore(manager, step, like_state):
  """The checkpointed state at step, with the tree structure, shapes and dtypes of like_state."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
  where = Path(manager.directory) / str(step)
  try:
    saved = manager.item_metadata(step)
  except Exception as error:
    raise CheckpointError(f'cannot read the checkpoint in {where} ({type(error).__name__}): '
                          'it is corrupted or not a jax-ae checkpoint; delete it or use '
                          'another --workdir') from error
  if _param_shapes(saved.tree['params']) != _param_shapes(like_state.params):
    raise CheckpointError(f'the checkpoint in {where} holds a different model than this one; '
                          'use another --workdir')
  try:
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception as error:
    raise CheckpointError(f'cannot restore the checkpoint in {where} ({type(error).__name__}): '
                          'it is corrupted; delete that step folder to fall back to an '
                          'earlier one, or use another --workdir') from error


def _param_shapes(params):
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in flat}
