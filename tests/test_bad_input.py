"""Every mistake a user can make at the command line: exit code 2, one line on stderr that
says what to do, and nothing written or lost."""
import hashlib
import json

import numpy as np
import pytest

import train as train_cli
from idx_files import write_idx, write_idx_dataset
from jax_ae import checkpoint, trainer
from jax_ae.config import Config


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
  trainer.train(config, workdir)
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
    (['--lr', 0], '--lr must be positive'),
    (['--lr', 'nan'], '--lr must be positive'),
    (['--devices', 'two'], "--devices must be 'all' or a number"),
    (['--devices', 2], "--devices must be 'all' or a number from 1 to 1"),
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


def test_resume_with_other_settings_is_refused(trained, capsys):
  workdir, _ = trained
  before = snapshot(workdir)
  assert_refused(['--workdir', workdir, '--resume', '--lr', 0.5], 'resume with the same', capsys)
  assert snapshot(workdir) == before


def test_checkpoint_of_another_model_is_refused(trained, tmp_path, capsys):
  _, config = trained
  workdir = tmp_path / 'other'
  state = trainer.train(config, tmp_path / 'source')
  checkpoint.save(checkpoint.open_manager(workdir / 'checkpoints'),
                  state._replace(params={'fc': {'kernel': np.ones((2, 3), np.float32)}}), 0.1)
  (workdir / 'config.json').write_text(json.dumps(config.__dict__))
  before = snapshot(workdir)
  assert_refused(['--workdir', workdir, '--resume'], 'holds a different model', capsys)
  assert snapshot(workdir) == before


def test_corrupted_checkpoint_is_reported_and_kept(trained, tmp_path, capsys):
  source, config = trained
  workdir = tmp_path / 'corrupt'
  trainer.train(config, workdir)
  for path in (workdir / 'checkpoints' / '2').rglob('*'):
    if path.is_file() and path.stat().st_size > 1000:  # the array data files
      path.write_bytes(b'\x00' * path.stat().st_size)
  before = snapshot(workdir)
  code, line = run_cli(['--workdir', workdir, '--resume', '--steps', 4], capsys)
  assert code == 2 and 'checkpoint' in line and 'corrupted' in line, line
  assert snapshot(workdir) == before
