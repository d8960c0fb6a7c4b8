"""The command lines as a user meets them: --help with every default and examples, the lines a
run ends with (and that the commands they name work), the folder a default run is named after,
analyze's progress and export, and the installed commands."""
import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from idx_files import write_idx_dataset

from jax_ae import cli, data, rundir, study

ROOT = Path(__file__).resolve().parents[1]
TINY = ['--batch-size', '8', '--eval-every', '2', '--steps-per-dispatch', '2']


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
  folder = tmp_path_factory.mktemp('digits')
  write_idx_dataset(folder, n_train=40, n_test=8)
  return f'idx:{folder}'


@pytest.fixture(scope='module')
def finished(tiny_data, tmp_path_factory):
  """A finished 2-step run trained by train.py's main: (workdir, what it printed on stderr)."""
  workdir = tmp_path_factory.mktemp('run') / 'run'
  with contextlib.redirect_stderr(io.StringIO()) as stderr:  # capsys is per test
    code = cli.train_main(['--data', tiny_data, '--steps', '2', *TINY, '--workdir', str(workdir)])
  err = stderr.getvalue()
  assert code == 0, err[-2000:]
  return workdir, err


def option_entries(help_text):
  """{'--flag': its help text} of an argparse --help."""
  options = help_text.split('options:\n', 1)[1].split('\n\n', 1)[0]
  entries = re.split(r'\n(?=  -)', options)
  return {re.match(r'\s*(-\w, )?(--[\w-]+)', entry).group(2): ' '.join(entry.split())
          for entry in entries}


@pytest.mark.parametrize('command', [cli.SCRIPT, cli.MODULE, cli.INSTALLED])
@pytest.mark.parametrize('parser', [cli.train_parser, cli.analyze_parser])
def test_help_shows_every_default_and_examples(parser, command):
  text = parser(command).format_help()
  entries = option_entries(text)
  del entries['--help']
  assert len(entries) >= 6
  for flag, entry in entries.items():
    assert '(default: ' in entry, (flag, entry)
  assert text.startswith(f'usage: {command.format(parser.__name__.split("_")[0])} ')
  examples = text.split('examples:\n', 1)[1].splitlines()
  commands = (command.format('train'), command.format('analyze'))
  assert sum(line.strip().startswith(commands) for line in examples) >= 3


def test_train_help_defaults_are_the_configs():
  entries = option_entries(cli.train_parser().format_help())
  assert "(default: 64, the lab's)" in entries['--batch-size']
  assert '(default: 0)' in entries['--seed']
  assert '(default: mnist)' in entries['--data']
  assert "(default: 10, the lab's; 40 on mnist5k)" in entries['--epochs']


def test_a_run_ends_saying_where_its_checkpoint_is_and_what_to_run_next(finished):
  workdir, err = finished
  last = err.strip().splitlines()[-3:]
  assert last[0] == f'done: the checkpoint of step 2 is in {workdir}/checkpoints/2'
  assert (workdir / 'checkpoints' / '2').is_dir()
  assert last[1] == f'next, its latent-space study: python analyze.py --workdir {workdir}'
  assert last[2] == f'or train on: python train.py --workdir {workdir} --resume --steps 4'


def test_a_finished_run_resumed_says_so_and_its_advice_trains_on(finished, tmp_path, capsys):
  workdir = tmp_path / 'run'
  subprocess.run(['cp', '-r', str(finished[0]), str(workdir)], check=True)
  assert cli.train_main(['--workdir', str(workdir), '--resume']) == 0
  captured = capsys.readouterr()
  said = captured.out + captured.err
  assert 'already' in said and '--steps' in said, said  # the loop's line: nothing trained
  assert rundir.open_for_reading(workdir).checkpoint_steps() == [2]
  advice = said.strip().splitlines()[-1]
  assert advice.startswith('or train on: python train.py ')
  argv = shlex.split(advice.removeprefix('or train on: python train.py '))
  assert cli.train_main(argv) == 0
  assert rundir.open_for_reading(workdir).checkpoint_steps() == [2, 4]


def test_a_default_run_is_named_after_the_data_it_resolved_to(tiny_data, tmp_path, monkeypatch,
                                                              capsys):
  """--data mnist offline and without TFDS trains on mnist5k: the folder says what it holds.
  (Here 'mnist' resolves to a small IDX folder named 'resolved-digits'.)"""
  folder = tmp_path / 'resolved-digits'
  folder.mkdir()
  write_idx_dataset(folder, n_train=40, n_test=8)
  load = data.load_dataset
  monkeypatch.setattr(data, 'load_dataset', lambda source: load(
      f'idx:{folder}' if source == 'mnist' else source))
  monkeypatch.chdir(tmp_path)
  assert cli.train_main(['--steps', '2', *TINY]) == 0
  runs = list((tmp_path / 'runs').iterdir())
  assert len(runs) == 1 and runs[0].name.startswith('resolved-digits-'), runs
  assert f'training in {Path("runs") / runs[0].name}' in capsys.readouterr().err
  assert rundir.open_for_reading(runs[0]).config.data == f'idx:{folder}'


def test_analyze_shows_its_progress(finished, tmp_path, monkeypatch, capsys):
  """The stage lines of the study reach stderr as they come (the study is faked: its own
  stages are study.analyze's progress calls)."""
  def fake_analyze(params, data_source, source, out, *args, progress=None, **kwargs):
    progress('measuring the codes')
    progress('drawing the figures')
  monkeypatch.setattr(study, 'analyze', fake_analyze)
  assert cli.analyze_main(['--workdir', str(finished[0]), '--out', str(tmp_path / 'a')]) == 0
  lines = capsys.readouterr().err.splitlines()
  assert [re.sub(r'^\[\s*\d+ s\] ', '', line) for line in lines[:2]] == [
      'measuring the codes', 'drawing the figures']
  assert lines[-1].startswith(f'wrote {tmp_path / "a"} in ')


def test_analyze_exports_the_run_for_pytorch(finished, tmp_path, capsys):
  torch = pytest.importorskip('torch')
  from jax_ae import torch_port
  path = tmp_path / 'model.pt'
  assert cli.analyze_main(['--workdir', str(finished[0]), '--export-torch', str(path)]) == 0
  assert 'jax_ae.torch_autoencoder(576)' in capsys.readouterr().err
  torch_port.torch_autoencoder(576).load_state_dict(torch.load(path, weights_only=True))
  assert not (finished[0] / 'analysis').exists()  # the export alone, no study
  assert cli.analyze_main(['--workdir', str(finished[0]), '--export-torch', str(path),
                           '--torch-weights', str(path), '--out', str(tmp_path)]) == 2
  assert 'pass one of them' in capsys.readouterr().err


@pytest.mark.parametrize('command', [['-m', 'jax_ae', 'train'], ['-m', 'jax_ae', 'analyze'],
                                     [str(ROOT / 'train.py')], [str(ROOT / 'analyze.py')]])
def test_the_module_and_the_scripts_run(command, tmp_path):
  shown = subprocess.run([sys.executable, *command, '--help'], capture_output=True, text=True,
                         cwd=tmp_path, check=True).stdout
  assert shown.startswith('usage: python ') and '(default: ' in shown


def test_python_m_jax_ae_without_a_command_says_which(tmp_path):
  result = subprocess.run([sys.executable, '-m', 'jax_ae'], capture_output=True, text=True,
                          cwd=tmp_path)
  assert result.returncode == 2 and 'name a command: train or analyze' in result.stderr


def test_the_installed_commands_train_and_export(tiny_data, tmp_path):
  """jax-ae-train and jax-ae-analyze, as pip install puts them beside this Python."""
  scripts = Path(sys.executable).parent
  if not (scripts / 'jax-ae-train').exists():
    pytest.skip("the console scripts are not installed: pip install -e '.[test]'")
  pytest.importorskip('torch')
  workdir = tmp_path / 'run'
  trained = subprocess.run([str(scripts / 'jax-ae-train'), '--data', tiny_data, '--steps', '2',
                            *TINY, '--workdir', str(workdir)], capture_output=True, text=True,
                           cwd=tmp_path)
  assert trained.returncode == 0, trained.stderr[-2000:]
  assert f'next, its latent-space study: jax-ae-analyze --workdir {workdir}' in trained.stderr
  exported = subprocess.run([str(scripts / 'jax-ae-analyze'), '--workdir', str(workdir),
                             '--export-torch', str(tmp_path / 'model.pt')], capture_output=True,
                            text=True, cwd=tmp_path)
  assert exported.returncode == 0, exported.stderr[-2000:]
  assert (tmp_path / 'model.pt').stat().st_size > 1_000_000
