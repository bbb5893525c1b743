"""Prints cg-segmentation beside waterz, from the JSON files run_waterz.sh wrote, and checks
the quality claims: on gala our best adapted Rand error is at most 0.05 and no worse than
waterz's best on the same affinities; on the synthetic volume we are no worse than waterz,
and the chunked run gives the whole-volume supervoxels and merges.
Throughput and memory are printed, never asserted (they are benchmark figures).

Usage: compare.py OUT_DIR
"""

import json
import sys
from pathlib import Path


def load(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        sys.exit(f"compare.py: cannot read {path}: {e}")


def best(rows):
    return min(rows, key=lambda r: r["arand"])


def fmt(v, spec):
    width = int(spec.split(".")[0] or 0)
    return "–".rjust(width) if v is None else format(v, spec)


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "target/segmentation-comparison")
    ours = load(out / "ours.json")
    wz_default = load(out / "waterz-gala-defaults.json")
    wz_nobg = load(out / "waterz-gala-no-background.json")
    wz_syn = load(out / "waterz-synthetic.json")
    failures = []

    g = best(ours["gala"]["thresholds"])
    gd, gn = best(wz_default["thresholds"]), best(wz_nobg["thresholds"])
    print("\n== gala (affinities from the boundary map), best threshold of each")
    print(f"  {'':28} {'ARAND':>8} {'VOI split':>10} {'VOI merge':>10} {'threshold':>10}")
    for name, r in [
        ("cg-segmentation", g),
        ("waterz 0.10.1 (defaults)", gd),
        ("waterz 0.10.1 (low=-1)", gn),
    ]:
        print(
            f"  {name:28} {r['arand']:8.4f} {r['voi_split']:10.4f} {r['voi_merge']:10.4f}"
            f" {r['threshold']:10}"
        )
    if g["arand"] > 0.05:
        failures.append(f"gala: our best ARAND {g['arand']:.4f} is above the goal 0.05")
    if g["arand"] > min(gd["arand"], gn["arand"]):
        failures.append(
            f"gala: our best ARAND {g['arand']:.4f} is worse than waterz's"
            f" {min(gd['arand'], gn['arand']):.4f}"
        )

    s = ours["synthetic"]
    c = ours.get("chunked", {})
    ws = best(wz_syn["thresholds"])
    mib_in = s.get("resident_mib_inputs")
    print(f"\n== synthetic Voronoi {s['shape']} ({s['megavoxels']:.1f} MV), same affinities")
    rows = [
        ("watershed + region graph, MV/s", s.get("watershed_region_graph_mvps"),
         c.get("watershed_region_graph_mvps"), None),
        ("agglomeration, MV/s", s.get("agglomeration_mvps"), c.get("agglomeration_mvps"),
         None),
        ("waterz overall (ws + agglomeration), MV/s", None, None,
         wz_syn.get("agglomerate_mvps")),
        ("peak memory, MiB", max(s.get("peak_mib_watershed") or 0,
                                 s.get("peak_mib_agglomeration") or 0) or None,
         c.get("peak_mib"), wz_syn.get("peak_rss_mib")),
        ("ARAND", s.get("arand"), c.get("arand", s.get("arand")), ws["arand"]),
    ]
    print(f"  {'':44} {'ours whole':>11} {'ours chunked':>13} {'waterz':>9}")
    for name, a, b, w in rows:
        print(f"  {name:44} {fmt(a, '11.3f')} {fmt(b, '13.3f')} {fmt(w, '9.3f')}")
    if mib_in:
        print(f"  (affinity input {mib_in:.0f} MiB resident before the runs)")
    if c:
        extra = {k: v for k, v in c.items() if not isinstance(v, (dict, list))}
        print("  chunked run:", json.dumps(extra))
    if c and c.get("same_as_whole") is not True:
        failures.append("synthetic: the chunked run differs from the whole-volume run")
    if s["arand"] > ws["arand"] + 0.01:
        failures.append(
            f"synthetic: our ARAND {s['arand']:.4f} is worse than waterz's {ws['arand']:.4f}"
        )

    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("\nsegmentation quality checks passed")


if __name__ == "__main__":
    main()
