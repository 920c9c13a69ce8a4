#!/usr/bin/env bash
# Everything that needs CUDA, in one go, into one report: see benchmarks/gpu.py (--help) and docs/speed.md.
#   benchmarks/gpu.sh [--model FOLDER] [--text FILE] [--out gpu-report.md] [--quick] ...
# Relative paths are the caller's: the script stays in the current folder and finds the repository from its own
# path. PYTHON picks the interpreter (default: the repository's .venv, else python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
# The repository on the path (of this process and of every one the benchmark starts): `-m benchmarks.gpu` from
# any folder, and this checkout's toolkit for an interpreter that has not installed it.
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m benchmarks.gpu "$@"
