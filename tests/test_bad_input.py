"""Every mistake a user can make at the command line: exit code 2, one line on stderr that
says what to do, and nothing written or lost."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import analyze as analyze_cli
import train as train_cli
from idx_files import write_idx, write_idx_dataset
from jax_ae import data, loop, rundir, study
from jax_ae.config import Config


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
  folder = tmp_path_factory.mktemp('idx')
  write_idx_dataset(folder, n_train=40, n_test=8)
  return f'idx:{folder}'


@pytest.fixture(scope='module')
def trained(tiny_data, tmp_path_factory):
  """A finished 2-step run: (workdir, its config)."""
  workdir = tmp_path_factory.mktemp('trained')
  config = Config(data=tiny_data, steps=2, batch_size=8, eval_every=2, steps_per_dispatch=2)
  loop.train(config, workdir)
  return workdir, config


def snapshot(folder):
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob('*')) if p.is_file()}


def run_cli(argv, capsys):
  code = train_cli.main([str(a) for a in argv])
  lines = capsys.readouterr().err.strip().splitlines()
  return code, lines[-1] if lines else ''


def assert_refused(argv, message, capsys):
  code, line = run_cli(argv, capsys)
  assert code == 2 and line.startswith('error: ') and message in line, line


def idx_folder(tmp_path, break_it):
  folder = tmp_path / 'idx'
  folder.mkdir()
  write_idx_dataset(folder, n_train=40, n_test=8)
  break_it(folder)
  return f'idx:{folder}'


def wrong_magic(folder):
  path = folder / 'train-images-idx3-ubyte'
  path.write_bytes(b'\x00\x00\x08\x01' + path.read_bytes()[4:])


def truncated(folder):
  path = folder / 't10k-images-idx3-ubyte'
  path.write_bytes(path.read_bytes()[:-5])


def wrong_size(folder):
  write_idx(folder / 'train-images-idx3-ubyte', np.zeros((40, 32, 32), np.uint8))


def label_count(folder):
  write_idx(folder / 'train-labels-idx1-ubyte', np.zeros(39, np.uint8))


def empty(folder):
  for path in folder.iterdir():
    path.unlink()


@pytest.mark.parametrize('break_it,message', [
    (wrong_magic, 'is not an IDX file of images'),
    (truncated, 'is truncated'),
    (wrong_size, 'holds images of shape (32, 32), not 28x28'),
    (label_count, 'has 40 images but'),
    (empty, 'has no train-images-idx3-ubyte'),
])
def test_bad_idx_files(break_it, message, tmp_path, capsys):
  data = idx_folder(tmp_path, break_it)
  assert_refused(['--data', data, '--workdir', tmp_path / 'run'], message, capsys)
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('flags,message', [
    (['--data', 'nope'], "unknown --data 'nope'"),
    (['--data', 'idx:/does/not/exist'], 'does not exist'),
    (['--steps', 0], '--steps must be a positive integer'),
    (['--epochs', -1], '--epochs must be a positive integer'),
    (['--batch-size', -3], '--batch-size must be a positive integer'),
    (['--lr', 0], '--lr must be a positive finite number'),
    (['--lr', 'nan'], '--lr must be a positive finite number'),
    (['--lr', 'inf'], '--lr must be a positive finite number'),
    (['--lr', 1e39], '--lr must be a positive finite number'),  # float32 overflows
    (['--weight-decay', 'inf'], '--weight-decay must be zero or a positive finite number'),
    (['--weight-decay=-1e-6'], '--weight-decay must be zero or a positive finite number'),
    (['--seed', -1], '--seed must be an integer from 0'),
    (['--devices', 'two'], "--devices must be 'auto', 'all' or a number"),
    (['--devices', 2], "--devices must be 'auto', 'all' or a number from 1 to 1"),
    (['--devices', '\u00b2'], "--devices must be 'auto', 'all' or a number"),  # isdigit() takes it
    (['--data', 'tfds:'], 'tfds: names no TFDS dataset'),
    (['--data', 'tfds:Not-A-Name'], 'tfds:Not-A-Name names no TFDS dataset'),
    (['--data', 'tfds:mnist/bogus'], 'tfds:mnist/bogus names no TFDS dataset'),
    (['--steps-per-dispatch', 64], '--steps-per-dispatch 64 on CPU'),
])
def test_bad_flags(flags, message, tmp_path, capsys):
  assert_refused([*flags, '--workdir', tmp_path / 'run'], message, capsys)
  assert not (tmp_path / 'run').exists()


def test_batch_larger_than_the_dataset(tiny_data, tmp_path, capsys):
  assert_refused(['--data', tiny_data, '--batch-size', 64, '--workdir', tmp_path / 'run'],
                 'larger than the 40 training images', capsys)
  assert not (tmp_path / 'run').exists()


def test_resume_without_a_run(tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no runs/ here
  assert_refused(['--resume'], '--resume found no run under runs/', capsys)


def test_existing_run_without_resume_is_kept(trained, capsys):
  workdir, config = trained
  before = snapshot(workdir)
  assert_refused(['--data', config.data, '--batch-size', 8, '--workdir', workdir],
                 'pass --resume', capsys)
  assert snapshot(workdir) == before


@pytest.mark.parametrize('flags', [['--lr', 0.5], ['--eval-every', 1], ['--seed', 1],
                                   ['--data', 'mnist5k'], ['--latent-dim', 2],
                                   ['--init', 'flax']])
def test_resume_with_other_settings_is_refused(trained, capsys, flags):
  workdir, _ = trained
  before = snapshot(workdir)
  assert_refused(['--workdir', workdir, '--resume', *flags], 'resume with the same', capsys)
  assert snapshot(workdir) == before


@pytest.mark.parametrize('content', ['{"data": "mnist5k", "ste', '{"learning_rate": 1}',
                                     '{"data": "mnist5k", "batch_size": "64"}'])
def test_a_damaged_config_json_is_one_line(trained, tmp_path, capsys, content):
  _, config = trained
  workdir = tmp_path / 'damaged'
  loop.train(config, workdir)
  (workdir / 'config.json').write_text(content)
  before = snapshot(workdir)
  assert_refused(['--workdir', workdir, '--resume'], 'config.json', capsys)
  assert analyze_cli.main(['--workdir', str(workdir), '--out', str(tmp_path / 'out')]) == 2
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and 'config.json' in lines[0], lines
  assert snapshot(workdir) == before


def test_analyze_out_naming_a_file_is_refused_before_the_analysis(trained, tmp_path, capsys,
                                                                  monkeypatch):
  workdir, _ = trained
  (tmp_path / 'out').write_text('mine')
  monkeypatch.setattr(study, 'analyze_run', lambda *args: pytest.fail('analysed'))
  assert analyze_cli.main(['--workdir', str(workdir), '--out', str(tmp_path / 'out')]) == 2
  assert '--out' in capsys.readouterr().err and (tmp_path / 'out').read_text() == 'mine'


def test_analyze_refuses_nan_torch_weights(tmp_path, capsys, monkeypatch):
  torch = pytest.importorskip('torch')
  from jax_ae import torch_port
  network = torch_port.torch_autoencoder()
  with torch.no_grad():
    next(network.parameters()).fill_(float('nan'))
  torch.save(network.state_dict(), tmp_path / 'nan.pt')
  monkeypatch.setattr(study, 'analyze', lambda *args, **kwargs: pytest.fail('analysed'))
  assert analyze_cli.main(['--torch-weights', str(tmp_path / 'nan.pt'),
                           '--out', str(tmp_path / 'out')]) == 2
  assert 'NaN or infinite weights' in capsys.readouterr().err


def test_a_nan_first_evaluation_exits_2_without_a_checkpoint(tiny_data, tmp_path, capsys):
  # The step's loss is finite (computed before the update); the model after it is NaN.
  workdir = tmp_path / 'run'
  assert_refused(['--data', tiny_data, '--batch-size', 8, '--steps', 1, '--lr', 1e30,
                  '--eval-every', 1, '--workdir', workdir], 'test MSE is nan at step 1', capsys)
  opened = rundir.open_for_reading(workdir)
  assert opened.checkpoint_steps() == [] and opened.records('eval') == []


def test_checkpoints_without_config_json_are_refused(trained, tmp_path, capsys):
  _, config = trained
  workdir = tmp_path / 'orphan'
  loop.train(config, workdir)
  (workdir / 'config.json').unlink()
  before = snapshot(workdir)
  for resume in ([], ['--resume']):
    assert_refused(['--data', config.data, '--batch-size', 8, '--seed', 3, '--lr', 0.01,
                    '--workdir', workdir, *resume], 'holds checkpoints but no config.json',
                   capsys)
  assert snapshot(workdir) == before


def test_a_full_disk_at_the_start_is_one_line(tmpfs, tiny_data, capsys):
  disk = tmpfs('full', 'size=1M')
  with open(disk / 'filler', 'wb') as filler:
    with pytest.raises(OSError):
      while True:
        filler.write(b'\0' * 65536)
        filler.flush()
  assert_refused(['--data', tiny_data, '--batch-size', 8, '--steps', 2, '--workdir',
                  disk / 'run'], 'No space left on device', capsys)
  assert sorted(p.name for p in (disk / 'run').iterdir()) == ['.lock', 'checkpoints']


def test_a_read_only_workdir_with_resume_is_one_line(tmpfs, trained, capsys):
  _, config = trained
  disk = tmpfs('disk', 'size=200M')
  loop.train(config, disk / 'run')
  subprocess.run(['mount', '-o', 'remount,ro', str(disk)], check=True)
  try:
    assert_refused(['--workdir', disk / 'run', '--resume', '--steps', 4],
                   'cannot be written (Read-only file system)', capsys)
  finally:
    subprocess.run(['mount', '-o', 'remount,rw', str(disk)], check=True)


def test_checkpoint_of_another_model_is_refused(trained, tmp_path, capsys):
  _, config = trained
  workdir = tmp_path / 'other'
  state = loop.train(config, tmp_path / 'source')
  run = rundir.open_for_training(workdir, config, resume=False)
  run.write_config(config)
  run.save(state._replace(params={'fc': {'kernel': np.ones((2, 3), np.float32)}}), 0.1)
  run.close()
  before = snapshot(workdir)
  assert_refused(['--workdir', workdir, '--resume'], 'holds a different model', capsys)
  assert snapshot(workdir) == before


def test_an_unreadable_only_checkpoint_is_reported_and_kept(trained, tmp_path, capsys):
  _, config = trained
  workdir = tmp_path / 'corrupt'
  loop.train(config, workdir)
  for path in (workdir / 'checkpoints' / '2').rglob('*'):
    if path.is_file() and path.stat().st_size > 1000:  # the array data files
      path.write_bytes(b'\x00' * path.stat().st_size)
  before = snapshot(workdir)
  assert_refused(['--workdir', workdir, '--resume', '--steps', 4],
                 'no checkpoint in', capsys)
  assert snapshot(workdir) == before


def test_a_workdir_that_is_a_file(tmp_path, tiny_data, capsys):
  (tmp_path / 'file').write_text('mine')
  assert_refused(['--data', tiny_data, '--batch-size', 8, '--workdir', tmp_path / 'file'],
                 'is a file: choose a folder', capsys)
  assert_refused(['--data', tiny_data, '--batch-size', 8, '--workdir', tmp_path / 'file' / 'run'],
                 'cannot be written (Not a directory)', capsys)
  assert (tmp_path / 'file').read_text() == 'mine'


def test_a_workdir_that_cannot_be_written(tmpfs, tiny_data, capsys):
  read_only = tmpfs('read-only', 'ro,size=1M')
  assert_refused(['--data', tiny_data, '--batch-size', 8, '--workdir', read_only / 'run'],
                 'cannot be written (Read-only file system)', capsys)


@pytest.mark.parametrize('environment,message', [
    ({'JAX_COORDINATOR_ADDRESS': '127.0.0.1:1234'},
     'JAX_COORDINATOR_ADDRESS set without JAX_NUM_PROCESSES and JAX_PROCESS_ID'),
    ({'JAX_COORDINATOR_ADDRESS': '127.0.0.1:1234', 'JAX_NUM_PROCESSES': '2',
      'JAX_PROCESS_ID': '2'}, 'JAX_PROCESS_ID must be an integer from 0 to 1'),
    ({'JAX_COORDINATOR_ADDRESS': '127.0.0.1', 'JAX_NUM_PROCESSES': '2',
      'JAX_PROCESS_ID': '0'}, 'JAX_COORDINATOR_ADDRESS must be host:port'),
    ({'JAX_COORDINATOR_ADDRESS': '127.0.0.1:1234', 'JAX_NUM_PROCESSES': '\u00b2',
      'JAX_PROCESS_ID': '0'}, 'JAX_NUM_PROCESSES must be a positive integer'),
])
def test_a_half_set_multi_process_environment(environment, message, tiny_data, tmp_path,
                                              capsys, monkeypatch):
  for name, value in environment.items():
    monkeypatch.setenv(name, value)
  assert_refused(['--data', tiny_data, '--workdir', tmp_path / 'run'], message, capsys)
  assert not (tmp_path / 'run').exists()


def test_an_empty_test_split(tmp_path, capsys):
  folder = tmp_path / 'idx'
  folder.mkdir()
  write_idx_dataset(folder, n_train=40, n_test=0)
  assert_refused(['--data', f'idx:{folder}', '--workdir', tmp_path / 'run'],
                 't10k-images-idx3-ubyte holds 0 images', capsys)


def test_a_bug_is_not_dressed_as_advice(tiny_data, tmp_path, monkeypatch):
  # Only UserError means "the user can fix it": any other exception keeps its traceback.
  def broken(source):
    raise ValueError('a bug somewhere')
  monkeypatch.setattr(data, 'load_dataset', broken)
  with pytest.raises(ValueError, match='a bug somewhere'):
    train_cli.main(['--data', tiny_data, '--workdir', str(tmp_path / 'run')])


# Resumes a user would try: each goes where it was asked, or says why not.

def test_a_relative_data_path_resumes_from_anywhere(tmp_path, capsys, monkeypatch):
  (tmp_path / 'tiny').mkdir()
  write_idx_dataset(tmp_path / 'tiny', n_train=40, n_test=8)
  monkeypatch.chdir(tmp_path)
  assert run_cli(['--data', 'idx:tiny', '--batch-size', 8, '--steps', 2, '--eval-every', 2,
                  '--workdir', tmp_path / 'run'], capsys)[0] == 0
  assert rundir.saved_config(tmp_path / 'run')['data'] == f'idx:{tmp_path / "tiny"}'
  (tmp_path / 'elsewhere').mkdir()
  monkeypatch.chdir(tmp_path / 'elsewhere')
  assert run_cli(['--workdir', tmp_path / 'run', '--resume', '--steps', 4], capsys)[0] == 0
  # The same folder, spelled another way.
  assert run_cli(['--workdir', tmp_path / 'run', '--resume', '--steps', 6,
                  '--data', f'idx:{tmp_path}/./tiny/'], capsys)[0] == 0
  assert rundir.open_for_reading(tmp_path / 'run').checkpoint_steps() == [2, 4, 6]


def test_eval_every_equal_to_its_default_is_the_same_setting(tiny_data, tmp_path, capsys):
  # 40 images in batches of 8: an epoch is 5 steps.
  flags = ['--data', tiny_data, '--batch-size', 8, '--workdir', tmp_path / 'run']
  assert run_cli([*flags, '--steps', 5], capsys)[0] == 0
  assert run_cli([*flags, '--steps', 10, '--eval-every', 5, '--resume'], capsys)[0] == 0
  assert rundir.open_for_reading(tmp_path / 'run').checkpoint_steps() == [5, 10]


def test_a_run_moved_to_a_backend_with_other_steps_per_call_resumes_with_one_warning(
    tiny_data, tmp_path, capsys):
  workdir = tmp_path / 'run'
  assert run_cli(['--data', tiny_data, '--batch-size', 8, '--steps', 3, '--eval-every', 3,
                  '--steps-per-dispatch', 2, '--workdir', workdir], capsys)[0] == 0
  config = json.loads((workdir / 'config.json').read_text())
  config['steps_per_dispatch'] = 64  # as a GPU saves it; too many for a CPU
  (workdir / 'config.json').write_text(json.dumps(config))
  code = train_cli.main(['--workdir', str(workdir), '--resume', '--steps', '6'])
  captured = capsys.readouterr()
  warnings = [line for line in (captured.out + captured.err).splitlines() if 'warning' in line]
  assert code == 0, captured.err[-2000:]
  assert len(warnings) == 1 and '64 steps per compiled call' in warnings[0], warnings
  assert rundir.open_for_reading(workdir).checkpoint_steps() == [3, 6]
  # This machine's own value is not refused either.
  assert run_cli(['--workdir', workdir, '--resume', '--steps', 9, '--steps-per-dispatch', 1],
                 capsys)[0] == 0
  assert rundir.open_for_reading(workdir).checkpoint_steps() == [3, 6, 9]


def test_a_resume_asked_for_another_length_goes_there_or_says_why(tiny_data, tmp_path, capsys):
  workdir = tmp_path / 'run'
  assert run_cli(['--data', tiny_data, '--batch-size', 8, '--steps', 4, '--eval-every', 2,
                  '--workdir', workdir], capsys)[0] == 0
  # --epochs replaces the saved --steps, which would otherwise win: 2 epochs of 5 steps.
  assert run_cli(['--workdir', workdir, '--resume', '--epochs', 2], capsys)[0] == 0
  assert max(rundir.open_for_reading(workdir).checkpoint_steps()) == 10
  assert rundir.saved_config(workdir)['steps'] is None
  before = snapshot(workdir)
  assert_refused(['--workdir', workdir, '--resume', '--steps', 2],
                 'is at step 10, past the 2 steps asked for', capsys)
  assert snapshot(workdir) == before


# Errors of access: one line naming the file, and nothing moved to damaged/ or rewritten.

@pytest.fixture
def as_another_user(tmp_path_factory):
  """(folder, command prefix): a folder this user and the prefix's user can reach, and a
  prefix that runs a command as a user without root's right to read anything."""
  if os.geteuid() != 0:
    return tmp_path_factory.mktemp('access'), []
  if not shutil.which('setpriv'):
    pytest.skip('root without setpriv cannot lose its right to read')
  prefix = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']
  if subprocess.run([*prefix, sys.executable, '-c', 'import jax_ae'], cwd=ROOT,
                    capture_output=True).returncode:
    pytest.skip('the unprivileged user cannot run this Python (its files are root\'s alone)')
  folder = Path(tempfile.mkdtemp(prefix='jax-ae-access-'))
  folder.chmod(0o755)  # tmp_path's parents are root's alone
  yield folder, prefix
  shutil.rmtree(folder)


def train_as(prefix, *flags):
  environment = {**os.environ, 'JAX_AE_COMPILATION_CACHE': '0'}
  return subprocess.run([*prefix, sys.executable, str(ROOT / 'train.py'), *map(str, flags)],
                        capture_output=True, text=True, env=environment, timeout=300)


def give_to(prefix, folder):
  if prefix:
    subprocess.run(['chown', '-R', '65534:65534', str(folder)], check=True)


@pytest.fixture
def tiny_run(as_another_user):
  folder, prefix = as_another_user
  data = folder / 'idx'
  data.mkdir()
  write_idx_dataset(data, n_train=40, n_test=8)
  workdir = folder / 'run'
  loop.train(Config(data=f'idx:{data}', steps=4, batch_size=8, eval_every=2,
                    steps_per_dispatch=2), workdir)
  give_to(prefix, folder)
  return workdir, prefix


def assert_one_line(result, message):
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert lines[-1].startswith('error: ') and message in lines[-1], lines[-1]


def test_an_unreadable_checkpoint_stops_in_one_line_and_is_not_moved(tiny_run):
  workdir, prefix = tiny_run
  unreadable = workdir / 'checkpoints' / '4' / 'default' / 'manifest.ocdbt'
  unreadable.chmod(0)
  before = snapshot(workdir)
  assert_one_line(train_as(prefix, '--workdir', workdir, '--resume', '--steps', 6),
                  f'cannot read {unreadable} (Permission denied)')
  assert snapshot(workdir) == before and not (workdir / 'damaged').exists()


def test_a_read_only_checkpoints_folder_with_a_damaged_checkpoint_is_one_line(tiny_run):
  workdir, prefix = tiny_run
  (workdir / 'checkpoints' / '4' / '_CHECKPOINT_METADATA').write_text('{"damaged')
  (workdir / 'checkpoints').chmod(0o555)
  before = snapshot(workdir)
  result = train_as(prefix, '--workdir', workdir, '--resume', '--steps', 6)
  (workdir / 'checkpoints').chmod(0o755)
  assert_one_line(result, 'Permission denied')
  assert 'could not write' in result.stderr.splitlines()[-1]
  assert snapshot(workdir) == before
