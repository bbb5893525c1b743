#!/usr/bin/env bash
# The Python differential test: the official google-cloud-bigtable client runs one scenario
# against Google's emulator and ours; every step's result must be identical.
# Options and environment (PYTHON, CBTEMULATOR, CHUNKEDGRAPH_BIN): see run_differential.py.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ -z "${PYTHON:-}" ] && [ -x "$root/.venv/bin/python" ]; then
  PYTHON="$root/.venv/bin/python"
fi
PYTHON=${PYTHON:-python3}
export PYTHON
exec "$PYTHON" "$here/run_differential.py" "$@"
