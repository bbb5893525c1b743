#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs (idempotently), then
# formatting, lints, unit and cross-crate tests, and the Python differential test.
set -euo pipefail
cd "$(dirname "$0")/.."

section() { printf '\n==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

section "tools"
command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup)"
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

CBT_DEFAULT=/usr/lib/google-cloud-sdk/platform/bigtable-emulator/cbtemulator
if [ -z "${CBTEMULATOR:-}" ]; then
  if [ -x "$CBT_DEFAULT" ]; then
    CBTEMULATOR=$CBT_DEFAULT
  elif command -v cbtemulator >/dev/null; then
    CBTEMULATOR=$(command -v cbtemulator)
  else
    echo "cbtemulator missing: installing google-cloud-cli-bigtable-emulator"
    { apt-get update -qq && apt-get install -y -qq google-cloud-cli-bigtable-emulator; } ||
      die "could not install Google's Bigtable emulator; install the Debian package google-cloud-cli-bigtable-emulator (Google Cloud SDK apt repository) and re-run"
    CBTEMULATOR=$CBT_DEFAULT
  fi
fi
[ -x "$CBTEMULATOR" ] || die "cbtemulator not executable at $CBTEMULATOR"
export CBTEMULATOR
echo "cbtemulator: $CBTEMULATOR"

section "python virtualenv (.venv)"
python3 -m venv --help >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-venv; }
REQ=tests/python/requirements.txt
[ -f "$REQ" ] || die "$REQ is missing"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
have=$(cat .venv/.requirements.sha256 2>/dev/null || true)
if [ ! -x .venv/bin/python ] || [ "$want" != "$have" ]; then
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r "$REQ"
  echo "$want" > .venv/.requirements.sha256
else
  echo "up to date"
fi

section "cargo fmt --check"
cargo fmt --all --check

section "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

section "build"
cargo build -p chunkedgraph
export CHUNKEDGRAPH_BIN="$PWD/target/debug/chunkedgraph"

section "cargo test"
cargo test --workspace

section "python differential (google-cloud-bigtable against cbtemulator and ours)"
PYTHON=.venv/bin/python tests/python/run_differential.sh

section "all passed"
