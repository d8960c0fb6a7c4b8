"""Shared by the benchmarks: what machine measured it, and the JSON report."""
import json
import os
import platform
import re
from pathlib import Path

import jax


def machine():
  """The CPU (and the accelerator JAX sees), the software, and how busy the machine was."""
  cpuinfo = Path('/proc/cpuinfo').read_text() if Path('/proc/cpuinfo').exists() else ''
  model = re.search(r'^model name\s*:\s*(.*)$', cpuinfo, re.M)
  flags = re.search(r'^flags\s*:(.*)$', cpuinfo, re.M)
  flags = set(flags.group(1).split()) if flags else set()
  device = jax.devices()[0]
  return {
      'cpu': model.group(1) if model else platform.processor(),
      'cpu_vector_isa': 'AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else
                        'other',
      'logical_cpus': os.cpu_count(),
      'cpus_allowed': len(os.sched_getaffinity(0)),
      'load_average_at_start': os.getloadavg(),
      'python': platform.python_version(),
      'jax': jax.__version__,
      'jax_backend': jax.default_backend(),
      'jax_device': f'{device.platform}: {device.device_kind}',
      'XLA_FLAGS': os.environ.get('XLA_FLAGS', ''),
  }


def emit(report, out):
  text = json.dumps(report, indent=2)
  print(text)
  if out:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + '\n')
