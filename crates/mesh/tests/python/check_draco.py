"""Decodes our Draco fragments with Google's decoder (DracoPy) and compares them with what
the Rust side expects.

Usage: check_draco.py DIR. DIR holds pairs NAME.drc (our encoder's output) and NAME.expected
(the expected decoded mesh in the precomputed legacy layout: u32 vertex count, f32 xyz
positions, u32 triangle indices). Positions must match exactly (float32), faces exactly.
"""

import pathlib
import sys

import DracoPy
import numpy as np


def read_legacy(path):
    data = path.read_bytes()
    n = int(np.frombuffer(data[:4], dtype="<u4")[0])
    points = np.frombuffer(data[4 : 4 + 12 * n], dtype="<f4").reshape(-1, 3)
    faces = np.frombuffer(data[4 + 12 * n :], dtype="<u4").reshape(-1, 3)
    return points, faces


def main():
    folder = pathlib.Path(sys.argv[1])
    passed, failed = 0, 0
    for drc in sorted(folder.glob("*.drc")):
        points, faces = read_legacy(drc.with_suffix(".expected"))
        try:
            mesh = DracoPy.decode(drc.read_bytes())
        except Exception as e:  # the decoder refusing a fragment is a failure to report
            failed += 1
            print(f"{drc.name}: Google's decoder refused it: {e}")
            continue
        got_points = np.asarray(mesh.points, dtype=np.float32).reshape(-1, 3)
        got_faces = np.asarray(mesh.faces, dtype=np.uint32).reshape(-1, 3)
        problems = []
        if got_points.shape != points.shape:
            problems.append(f"points {got_points.shape} != {points.shape}")
        elif not np.array_equal(got_points, points):
            worst = np.abs(got_points - points).max()
            problems.append(f"positions differ by up to {worst} nm")
        if not np.array_equal(got_faces, faces):
            problems.append(f"faces differ ({got_faces.shape} vs {faces.shape})")
        if problems:
            failed += 1
            print(f"{drc.name}: " + "; ".join(problems))
        else:
            passed += 1
            print(f"{drc.name}: {len(points)} vertices, {len(faces)} faces decoded identically")
    print(f"draco: {passed} passed, {failed} failed")
    sys.exit(1 if failed or not passed else 0)


if __name__ == "__main__":
    main()
