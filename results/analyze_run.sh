#!/usr/bin/env bash
# Analyses a finished run into results/: ./results/analyze_run.sh WORKDIR OUT [analyze.py flags]
# OUT gets the run's config.json and metrics.jsonl beside the analysis (not its checkpoints,
# 130 MB each, nor the codes of 10,000 test images, 23 MB).
set -euo pipefail
workdir=$1 out=$2; shift 2
cd "$(dirname "$0")/.."
python analyze.py --workdir "$workdir" --out "$out" "$@"
cp "$workdir/config.json" "$workdir/metrics.jsonl" "$out/"
rm -f "$out/codes.npz"
