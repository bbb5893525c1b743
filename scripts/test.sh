#!/usr/bin/env bash
# The project's one test command (README: ./scripts/test.sh; .ci/run calls it).
#
# On a fresh Debian machine with the Rust toolchain it installs what it needs, idempotently
# (Google's Bigtable emulator if missing, python3-venv if venv is unusable, a virtualenv in
# .venv with tests/python/requirements.txt), then runs, stopping at the first failure:
#   cargo fmt --check, cargo clippy -D warnings, cargo build -p chunkedgraph,
#   cargo test --workspace, the Python differential test (tests/python), the real-client
#   test (tests/python/clients: caveclient and cloud-volume in .venv-clients), the
#   segmentation comparison (tests/python/segmentation: waterz 0.10.1 in .venv-seg on the
#   same affinities; fails on a quality regression, prints throughput), and the
#   browser test (tests/browser: Neuroglancer in headless Chromium, .venv-browser; installs
#   the Debian package chromium when missing; screenshots in target/browser-artifacts).
#
# Environment:
#   CBTEMULATOR       Google's emulator binary (default: the gcloud SDK path, then PATH)
#   CHUNKEDGRAPH_BIN  our binary for the differential test (default: target/debug/chunkedgraph)
#   CG_SKIP_CARGO=1   skip the cargo steps (for working on this script and the Python test)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$SECONDS
section() { printf '\n==> %s\n' "$*"; }
die() {
  printf '\nerror: %s\n' "$*" >&2
  exit 1
}
apt_updated=
apt_install() {
  [ "$(id -u)" = 0 ] || die "need root to apt-get install $*; install it yourself and re-run"
  if [ -z "$apt_updated" ]; then
    apt-get update -qq || return 1
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# ------------------------------------------------------------------------------------------
section "tools"
command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) first"
if [ -z "${CG_SKIP_CARGO:-}" ]; then
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt ||
    die "rustfmt is missing and 'rustup component add rustfmt' failed"
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy ||
    die "clippy is missing and 'rustup component add clippy' failed"
fi

CBT_DEFAULT=/usr/lib/google-cloud-sdk/platform/bigtable-emulator/cbtemulator
if [ -n "${CBTEMULATOR:-}" ]; then
  [ -x "$CBTEMULATOR" ] || die "CBTEMULATOR=$CBTEMULATOR is not executable"
elif [ -x "$CBT_DEFAULT" ]; then
  CBTEMULATOR=$CBT_DEFAULT
elif command -v cbtemulator >/dev/null; then
  CBTEMULATOR=$(command -v cbtemulator)
else
  echo "Google's Bigtable emulator is missing: installing google-cloud-cli-bigtable-emulator"
  apt_install google-cloud-cli-bigtable-emulator ||
    die "could not install google-cloud-cli-bigtable-emulator with apt-get. The package comes from
  Google's Cloud SDK apt repository: add that repository (see the Cloud SDK install guide), then
  run: apt-get install google-cloud-cli-bigtable-emulator
  (or set CBTEMULATOR to an existing cbtemulator binary)"
  [ -x "$CBT_DEFAULT" ] || die "google-cloud-cli-bigtable-emulator installed, but $CBT_DEFAULT is missing"
  CBTEMULATOR=$CBT_DEFAULT
fi
export CBTEMULATOR
echo "cbtemulator: $CBTEMULATOR"

# ------------------------------------------------------------------------------------------
section "python virtualenv (.venv)"
command -v python3 >/dev/null || apt_install python3 || die "python3 is missing and could not be installed"
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "python3 cannot make virtualenvs: installing python3-venv"
  pyver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  apt_install python3-venv || apt_install "python$pyver-venv" ||
    die "could not install python3-venv (needed for .venv)"
fi
REQ=tests/python/requirements.txt
[ -f "$REQ" ] || die "$REQ is missing"
# The stamp covers the requirements and the interpreter: either changing re-creates .venv.
want="$(sha256sum "$REQ" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
have=$(cat .venv/.requirements-stamp 2>/dev/null || true)
if [ "$want" = "$have" ] && .venv/bin/python -c 'import google.cloud.bigtable' >/dev/null 2>&1; then
  echo ".venv is up to date"
else
  echo "creating .venv from $REQ"
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-input -r "$REQ" ||
    die "pip could not install $REQ into .venv"
  .venv/bin/python -m pip check --disable-pip-version-check >/dev/null ||
    die "the packages in .venv conflict: run .venv/bin/python -m pip check"
  echo "$want" >.venv/.requirements-stamp
fi

# ------------------------------------------------------------------------------------------
if [ -n "${CG_SKIP_CARGO:-}" ]; then
  section "cargo steps skipped (CG_SKIP_CARGO is set)"
else
  section "cargo fmt --check"
  cargo fmt --all --check

  section "cargo clippy -D warnings"
  cargo clippy --workspace --all-targets -- -D warnings

  section "cargo build -p chunkedgraph"
  cargo build -p chunkedgraph

  section "cargo test"
  cargo test --workspace
fi

# ------------------------------------------------------------------------------------------
section "python differential: google-cloud-bigtable against cbtemulator and ours"
export CHUNKEDGRAPH_BIN=${CHUNKEDGRAPH_BIN:-$PWD/target/debug/chunkedgraph}
PYTHON=$PWD/.venv/bin/python tests/python/run_differential.sh

# ------------------------------------------------------------------------------------------
section "python clients: caveclient and cloud-volume against chunkedgraph serve"
tests/python/clients/run_clients.sh

# ------------------------------------------------------------------------------------------
section "segmentation: cg-segmentation beside waterz 0.10.1 (gala quality, 32.8 MV throughput)"
tests/python/segmentation/run_waterz.sh

# ------------------------------------------------------------------------------------------
section "browser: Neuroglancer in headless Chromium against chunkedgraph serve"
tests/browser/run_browser.sh

section "all passed ($((SECONDS - started)) s)"
