"""Writes the zarr fixtures under tests/data/zarr (run once; outputs committed).

Zarr v2 arrays come from zarr-python 2.18 with numcodecs (c-blosc inside), v3 arrays from
zarr-python 3; NumPy saves the expected arrays. Run each part with its own zarr version:

    python make_zarr_fixtures.py v2   # zarr<3, numcodecs
    python make_zarr_fixtures.py v3   # zarr>=3
"""

import os
import shutil
import sys

import numpy as np
import zarr

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "zarr")
os.makedirs(OUT, exist_ok=True)

rng = np.random.RandomState(5)
labels = rng.randint(0, 6, size=(4, 5, 3)).repeat(5, 0).repeat(4, 1).repeat(4, 2)[:19, :17, :11]
labels = labels.astype(np.uint64) * np.uint64(1 << 33) + np.uint64(7)


def save(name, arr):
    np.save(os.path.join(OUT, name + ".npy"), np.ascontiguousarray(arr))


def fresh(name):
    path = os.path.join(OUT, name)
    shutil.rmtree(path, ignore_errors=True)
    return path


if sys.argv[1] == "v2":
    from numcodecs import GZip, Blosc, Zlib

    cases = {
        "v2_blosc_lz4": (labels.astype(np.uint32), Blosc("lz4", 5, Blosc.SHUFFLE), "C", "."),
        "v2_blosc_zstd_bitshuffle": (labels.astype(np.uint16), Blosc("zstd", 3, Blosc.BITSHUFFLE), "C", "."),
        "v2_blosc_blosclz": (rng.rand(19, 17, 11).astype(np.float32), Blosc("blosclz", 9, Blosc.NOSHUFFLE), "C", "."),
        "v2_blosc_zlib_f": (labels.astype(np.int64), Blosc("zlib", 4, Blosc.SHUFFLE), "F", "."),
        "v2_zlib_f": (labels.astype(np.int32), Zlib(1), "F", "."),
        "v2_gzip_nested": (labels.astype(np.uint8), GZip(6), "C", "/"),
        "v2_raw_be": (labels.astype(">u4"), None, "C", "."),
    }
    for name, (arr, comp, order, sep) in cases.items():
        z = zarr.open_array(fresh(name), mode="w", shape=arr.shape, chunks=(8, 8, 4), dtype=arr.dtype,
                            compressor=comp, order=order, fill_value=3, dimension_separator=sep)
        z[:] = arr
        # Leave one chunk out: it must read as the fill value.
        if name == "v2_raw_be":
            os.remove(os.path.join(OUT, name, "2.2.2"))
            arr = arr.copy()
            arr[16:, 16:, 8:] = 3
        save(name, arr.astype(arr.dtype.newbyteorder("<")))
else:
    from zarr.codecs import BloscCodec, BytesCodec, GzipCodec

    for name, arr, comp in [
        ("v3_gzip", labels.astype(np.uint32), [GzipCodec(level=5)]),
        ("v3_blosc", labels, [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]),
        ("v3_raw", labels.astype(np.int16), []),
    ]:
        z = zarr.create_array(fresh(name), shape=arr.shape, chunks=(8, 8, 4), dtype=arr.dtype,
                              compressors=comp, fill_value=0, zarr_format=3)
        z[:] = arr
        save(name, arr)
print("ok")
