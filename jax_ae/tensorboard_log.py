"""TensorBoard event files beside a run's metrics.jsonl, when tensorboardX is installed
(pip install 'jax-ae[tensorboard]'): `tensorboard --logdir runs` draws every run's curves.

The events are a view of metrics.jsonl (the same numbers, steps and wall-clock times), which
stays the record: analyze.py reads the log, never the events.
"""
# The records drawn, and their numbers: tags '<event>/<key>', e.g. 'eval/test_mse'.
SCALARS = {'train': ('train_loss',), 'eval': ('test_mse', 'train_loss', 'images_per_s')}


class EventLog:
  """Writes the records of one process of a run as TensorBoard scalars (nothing without
  tensorboardX).

  first_step: the step this process starts from. An earlier process may have logged past it
  before it was stopped (the steps after its last checkpoint, which it trains again):
  TensorBoard hides those events (tensorboardX's purge_step), as the resume drops their
  records from metrics.jsonl.
  """

  def __init__(self, folder, first_step):
    try:
      from tensorboardX import SummaryWriter
    except ImportError:  # the optional extra is not installed: the log alone
      self._writer = None
      return
    self._writer = SummaryWriter(str(folder), purge_step=first_step + 1)

  def write(self, record):
    if self._writer is None:
      return
    for key in SCALARS.get(record['event'], ()):
      if record.get(key) is not None:
        self._writer.add_scalar(f'{record["event"]}/{key}', record[key], record['step'],
                                walltime=record['time'])
    if record['event'] == 'eval':  # on the disk with the log's record, before the checkpoint
      self._writer.flush()

  def close(self):
    if self._writer is not None:
      self._writer.close()
