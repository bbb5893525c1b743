#!/usr/bin/env bash
# Makes (or reuses) the virtualenv .venv-mesh at the repository root with the pinned packages
# of requirements.txt beside this script, and prints its python's path on the last line.
# Needs python3 with venv; pip fetches from PyPI on first use.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
venv="$root/.venv-mesh"
req="$here/requirements.txt"

if ! command -v python3 >/dev/null; then
  echo "python3 is missing: install it (Debian: apt-get install python3 python3-venv)" >&2
  exit 2
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "python3 cannot make virtualenvs: install python3-venv (Debian: apt-get install python3-venv)" >&2
  exit 2
fi
# The stamp covers the requirements and the interpreter: either changing rebuilds the venv.
want="$(sha256sum "$req" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
have=$(cat "$venv/.requirements-stamp" 2>/dev/null || true)
if [ "$want" != "$have" ] || ! "$venv/bin/python" -c 'import DracoPy, zmesh, numpy' >/dev/null 2>&1; then
  echo "creating $venv from $req" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  echo "$want" >"$venv/.requirements-stamp"
fi
echo "$venv/bin/python"
