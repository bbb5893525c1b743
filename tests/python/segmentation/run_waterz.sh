#!/usr/bin/env bash
# cg-segmentation against waterz 0.10.1 on the same affinities, in one run.
#
# Keeps its own virtualenv in .venv-seg (waterz and its build helpers, pinned in
# requirements.txt; re-created when that file or the interpreter changes). waterz compiles
# its C++ on first use, so g++ must be on PATH. Then:
#   1. the Rust bench (crates/segmentation/examples/bench.rs) scores gala and times the
#      synthetic volume, exporting the affinities and ground truths it used as .npy;
#   2. waterz runs on those same affinities: gala with its default watershed thresholds
#      (low 0.0001, high 0.9999), gala with ours (waterz needs low < 0 to keep voxels whose
#      every affinity is 0: it keeps a voxel only if its best edge is above low), and the
#      synthetic volume.
# Results: OUT/ours.json and OUT/waterz-*.json, then compare.py prints them side by side and
# fails if our quality falls short (gala ARAND above 0.05 or above waterz's; see compare.py) (OUT: first argument, default
# target/segmentation-comparison). The exported affinities are deleted afterwards unless
# KEEP_AFFS=1.
# Environment: SYNTHETIC (edge of the synthetic cube, default 320 = 32.8 MV),
# CG_SHARED_DATA (fixtures folder).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
venv=$root/.venv-seg
req=$here/requirements.txt
command -v g++ >/dev/null || { echo "g++ is missing: waterz compiles C++ on first use" >&2; exit 1; }
want="$(sha256sum "$req" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
have=$(cat "$venv/.requirements-stamp" 2>/dev/null || true)
if [ "$want" = "$have" ] && "$venv/bin/python" -c 'import waterz, numpy' >/dev/null 2>&1; then
  echo ".venv-seg is up to date"
else
  echo "creating .venv-seg from $req"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
  echo "$want" >"$venv/.requirements-stamp"
fi

out=${1:-$root/target/segmentation-comparison}
mkdir -p "$out"
out=$(cd "$out" && pwd)
n=${SYNTHETIC:-320}
gala_t=0.02,0.03,0.05,0.1,0.2,0.3
syn_t=0.2

echo "== cg-segmentation"
(cd "$root" && cargo run --quiet --release -p cg-segmentation --example bench -- \
  --synthetic "$n" --chunk 128,128,128 --thresholds "$gala_t" --synthetic-thresholds "$syn_t" \
  --export "$out" --json "$out/ours.json")

echo "== waterz"
py=$venv/bin/python
run_waterz() { # name, then waterz_bench.py arguments; waterz's own log goes to NAME.log
  local name=$1
  shift
  "$py" "$here/waterz_bench.py" --out "$out/waterz-$name.json" "$@" >"$out/waterz-$name.log" 2>&1 ||
    { tail -20 "$out/waterz-$name.log" >&2; exit 1; }
  tail -1 "$out/waterz-$name.log"
}
run_waterz gala-defaults --affs "$out/gala-affs.npy" --gt "$out/gala-gt.npy" --name gala \
  --thresholds "$gala_t"
run_waterz gala-no-background --affs "$out/gala-affs.npy" --gt "$out/gala-gt.npy" --name gala \
  --thresholds "$gala_t" --low -1 --high 0.9
run_waterz synthetic --affs "$out/synthetic-affs.npy" --gt "$out/synthetic-gt.npy" \
  --name synthetic --thresholds "$syn_t" --low -1 --high 0.99

if [ -z "${KEEP_AFFS:-}" ]; then
  rm -f "$out/gala-affs.npy" "$out/synthetic-affs.npy"
fi
echo "results in $out"
"$py" "$here/compare.py" "$out"
