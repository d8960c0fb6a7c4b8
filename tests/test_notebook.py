"""notebooks/lab.ipynb: stored without outputs, and run end to end, as a user would on Colab's
CPU runtime, on a 4-step run of mnist5k."""
import json
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / 'notebooks' / 'lab.ipynb'


def test_the_notebook_is_stored_without_outputs():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(notebook)
  code = [cell for cell in notebook.cells if cell.cell_type == 'code']
  assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_the_notebook_runs_end_to_end(tmp_path, monkeypatch):
  nbclient = pytest.importorskip('nbclient')
  # The kernel inherits these, and the tests' compilation cache (conftest.py).
  monkeypatch.setenv('JAX_AE_NOTEBOOK_STEPS', '4')
  monkeypatch.setenv('JAX_AE_NOTEBOOK_WORKDIR', str(tmp_path / 'run'))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': str(tmp_path)}}).execute()
  metrics = json.loads((tmp_path / 'run' / 'analysis' / 'metrics.json').read_text())
  assert metrics['measured_on']['dataset'] == 'mnist5k'
  assert metrics['training']['updates'] == 4
  outputs = [output for cell in notebook.cells if cell.cell_type == 'code'
             for output in cell.outputs]
  assert not [output for output in outputs if output.output_type == 'error']
  figures = [output for output in outputs if 'image/png' in output.get('data', {})]
  assert len(figures) == 2  # the reconstructions; the PCA of the codes and of the pixels
  tables = [output.data['text/markdown'] for output in outputs
            if 'text/markdown' in output.get('data', {})]
  controls, comparisons = tables
  assert '| k-NN accuracy, full vectors | ' in controls and 'untrained network' in controls
  assert all(f'| {name} | ' in comparisons for name in
             ('the linear probe', '5-NN on the full vectors'))
