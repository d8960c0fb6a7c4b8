"""Shared by the benchmarks: print the JSON report and keep a copy under results/."""
import json


def emit(report, out):
  text = json.dumps(report, indent=2)
  print(text)
  if out:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + '\n')
