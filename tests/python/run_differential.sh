#!/usr/bin/env bash
# The Python differential test; see run_differential.py.
set -euo pipefail
exec "${PYTHON:-python3}" "$(dirname "$0")/run_differential.py" "$@"
