#!/usr/bin/env bash
# The real-client test: caveclient and cloud-volume (pinned in requirements.txt) against
# `chunkedgraph serve`. Keeps its own virtualenv in .venv-clients (their dependency tree is
# large and apart from the differential test's), re-created when requirements.txt changes.
# Environment: CHUNKEDGRAPH_BIN (default target/debug/chunkedgraph).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
venv=$root/.venv-clients
req=$here/requirements.txt
want="$(sha256sum "$req" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
have=$(cat "$venv/.requirements-stamp" 2>/dev/null || true)
if [ "$want" = "$have" ] && "$venv/bin/python" -c 'import caveclient, cloudvolume' >/dev/null 2>&1; then
  echo ".venv-clients is up to date"
else
  echo "creating .venv-clients from $req"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
  echo "$want" >"$venv/.requirements-stamp"
fi
exec "$venv/bin/python" "$here/clients_test.py" "$@"
