"""zmesh on the same volume as our benchmark (examples/bench.rs runs this in .venv-mesh).

Usage: zmesh_bench.py VOLUME.npy RX,RY,RZ REDUCTION MAX_ERROR_NM OUT.bin

VOLUME is a (z, y, x) C-order label array; zmesh gets it as its (x, y, z) transpose (the
same memory, Fortran order), so its vertices come out (x, y, z) in nm with voxel centres at
integer coordinates × resolution, as ours do. Prints one JSON line of timings and counts and
writes the simplified meshes to OUT.bin: per label u64 label, u32 vertex count, u32 triangle
count, f32 xyz positions, u32 indices (little-endian).
"""

import importlib.metadata
import json
import struct
import sys
import time

import numpy as np
import zmesh


def main():
    path, res, reduction, max_error, out = sys.argv[1:6]
    res = tuple(float(r) for r in res.split(","))
    reduction, max_error = int(reduction), float(max_error)
    labels = np.load(path)
    volume = labels.T  # (x, y, z), Fortran order, no copy

    mesher = zmesh.Mesher(res)
    t0 = time.perf_counter()
    mesher.mesh(volume)
    t_mesh = time.perf_counter() - t0
    ids = [int(i) for i in mesher.ids() if i != 0]

    t0 = time.perf_counter()
    simplified = {i: mesher.get(i, normals=False, reduction_factor=reduction, max_error=max_error) for i in ids}
    t_simplify = time.perf_counter() - t0

    # Unsimplified counts, outside the timings: a check that both meshers see one surface.
    full_triangles = sum(len(mesher.get(i, normals=False, reduction_factor=0).faces) for i in ids)

    with open(out, "wb") as f:
        for i in ids:
            m = simplified[i]
            v = np.ascontiguousarray(m.vertices, dtype="<f4")
            t = np.ascontiguousarray(m.faces, dtype="<u4")
            f.write(struct.pack("<QII", i, len(v), len(t)))
            f.write(v.tobytes())
            f.write(t.tobytes())

    print(json.dumps({
        "zmesh_version": importlib.metadata.version("zmesh"),
        "voxels": int(labels.size),
        "labels": len(ids),
        "mesh_s": t_mesh,
        "simplify_s": t_simplify,
        "triangles_full": int(full_triangles),
        "triangles_simplified": int(sum(len(m.faces) for m in simplified.values())),
    }))


if __name__ == "__main__":
    main()
