"""Runs waterz on the affinities cg-segmentation's bench exported, scores it the way
cg-segmentation scores itself, and writes the figures as JSON.

Usage: waterz_bench.py --affs A.npy --gt GT.npy --name NAME --thresholds 0.05,0.1
                       [--low 0.0001] [--high 0.9999] --out OUT.json

Thresholds are mean affinities, as in cg-segmentation (merge while the best mean >= t);
waterz's default scoring is 1 - mean affinity, merged while below its threshold, so waterz
runs at 1 - t. ARAND and VOI ignore ground-truth label 0 and count segmentation label 0 as
a label (as cg_segmentation::metrics does); waterz's own Rand/VOI figures are recorded too.
"""

import argparse
import json
import resource
import time

import numpy as np
import waterz


def scores(seg, gt):
    """Adapted Rand error and VOI (bits) over voxels where gt != 0."""
    mask = gt != 0
    s = seg[mask].ravel()
    g = gt[mask].ravel()
    n = s.size
    if n == 0:
        return {"arand": 0.0, "voi_split": 0.0, "voi_merge": 0.0}
    _, si = np.unique(s, return_inverse=True)
    _, gi = np.unique(g, return_inverse=True)
    key = si.astype(np.int64) * (int(gi.max()) + 1) + gi
    _, cells = np.unique(key, return_counts=True)
    rows = np.bincount(si).astype(np.float64)
    cols = np.bincount(gi).astype(np.float64)
    cells = cells.astype(np.float64)
    sum_cells = np.sum(cells**2)
    precision = sum_cells / np.sum(rows**2)
    recall = sum_cells / np.sum(cols**2)
    f = 2 * precision * recall / (precision + recall)

    def entropy(c):
        p = c[c > 0] / n
        return float(-np.sum(p * np.log2(p)))

    h_joint, h_seg, h_gt = entropy(cells), entropy(rows), entropy(cols)
    return {
        "arand": float(1 - f),
        "voi_split": max(0.0, h_joint - h_gt),
        "voi_merge": max(0.0, h_joint - h_seg),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--affs", required=True)
    ap.add_argument("--gt", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--thresholds", required=True)
    ap.add_argument("--low", type=float, default=0.0001)
    ap.add_argument("--high", type=float, default=0.9999)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    affs = np.load(args.affs)
    gt = np.load(args.gt).astype(np.uint32)
    assert affs.dtype == np.float32 and affs.shape[1:] == gt.shape, (affs.shape, gt.shape)
    ours = sorted((float(t) for t in args.thresholds.split(",")), reverse=True)
    theirs = [1.0 - t for t in ours]  # increasing, as waterz wants

    # waterz builds its C++ module on first use; do that outside the timing.
    tiny = np.random.default_rng(0).random((3, 4, 4, 4), dtype=np.float32)
    for _ in waterz.agglomerate(tiny, [0.5]):
        pass

    rows = []
    busy = 0.0
    cpu = 0.0
    start = time.perf_counter()
    gen = waterz.agglomerate(
        affs, theirs, gt=gt, aff_threshold_low=args.low, aff_threshold_high=args.high
    )
    while True:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            seg, metrics = next(gen)
        except StopIteration:
            break
        busy += time.perf_counter() - t0
        cpu += time.process_time() - c0
        # Scoring happens between yields and is not counted: waterz reuses `seg`.
        row = scores(seg, gt)
        row["threshold"] = ours[len(rows)]
        row["waterz_threshold"] = theirs[len(rows)]
        row["segments"] = int(np.unique(seg).size)
        row["waterz_metrics"] = {k: float(v) for k, v in metrics.items()}
        rows.append(row)
    wall = time.perf_counter() - start
    voxels = int(np.prod(gt.shape))
    out = {
        "name": args.name,
        "waterz": waterz.__version__ if hasattr(waterz, "__version__") else "0.10.1",
        "shape": list(gt.shape),
        "megavoxels": voxels / 1e6,
        "aff_threshold_low": args.low,
        "aff_threshold_high": args.high,
        "agglomerate_s": busy,
        "agglomerate_mvps": voxels / 1e6 / busy,
        "agglomerate_cpu_s": cpu,
        "agglomerate_cpu_mvps": voxels / 1e6 / cpu,
        "wall_s_with_scoring": wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "thresholds": rows,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    best = min(rows, key=lambda r: r["arand"])
    print(
        f"waterz {args.name} (low {args.low}, high {args.high}): {busy:.2f} s = "
        f"{out['agglomerate_mvps']:.1f} MV/s (CPU {cpu:.2f} s = {out['agglomerate_cpu_mvps']:.1f}"
        f" MV/s), peak {out['peak_rss_mib']:.0f} MiB; best ARAND "
        f"{best['arand']:.4f} at {best['threshold']} (VOI {best['voi_split']:.4f} + "
        f"{best['voi_merge']:.4f})"
    )


if __name__ == "__main__":
    main()
