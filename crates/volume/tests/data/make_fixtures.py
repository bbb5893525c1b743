"""Writes the cloud-volume fixtures under tests/data/cloudvolume (run once; outputs committed).

An independent implementation's files for cg-volume's interop tests: cloud-volume writes
precomputed volumes (gzip'd compressed_segmentation, raw, sharded) and NumPy writes the
expected arrays as .npy, axes (z, y, x).

    .venv-clients/bin/python crates/volume/tests/data/make_fixtures.py
"""

import os
import shutil

import numpy as np
from cloudvolume import CloudVolume
from cloudvolume.lib import Bbox

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "cloudvolume")


def labels(shape_xyz, dtype, seed):
    """Blocky labels: a few distinct values per region, so blocks need 0 to 8 bits."""
    rng = np.random.RandomState(seed)
    x, y, z = shape_xyz
    coarse = rng.randint(0, 300, size=(x // 5 + 1, y // 4 + 1, z // 3 + 1)).astype(np.uint64)
    big = coarse.repeat(5, 0).repeat(4, 1).repeat(3, 2)[:x, :y, :z]
    big = big * np.uint64(0x100000001) if dtype == np.uint64 else big
    noise = rng.randint(0, 40, size=shape_xyz) == 0
    big = np.where(noise, rng.randint(0, 5, size=shape_xyz), big)
    return big.astype(dtype)


def write(name, info, data_xyz, offset, **kw):
    path = os.path.join(OUT, name)
    shutil.rmtree(path, ignore_errors=True)
    vol = CloudVolume("file://" + path, info=info, **kw)
    vol.commit_info()
    size = data_xyz.shape[:3]
    vol[offset[0]:offset[0] + size[0], offset[1]:offset[1] + size[1], offset[2]:offset[2] + size[2]] = data_xyz
    return vol


def expected(name, data_xyzc):
    # (x, y, z, c) -> (z, y, x) for one channel, (c, z, y, x) otherwise.
    arr = np.ascontiguousarray(np.transpose(data_xyzc, (3, 2, 1, 0)))
    if arr.shape[0] == 1:
        arr = arr[0]
    np.save(os.path.join(OUT, name + ".npy"), arr)


os.makedirs(OUT, exist_ok=True)

# 1. uint64 segmentation, compressed_segmentation, gzip, clipped edge chunks, offset.
size = [37, 29, 11]
offset = [3, -2, 5]
info = CloudVolume.create_new_info(
    num_channels=1, layer_type="segmentation", data_type="uint64",
    encoding="compressed_segmentation", resolution=[8, 8, 40], voxel_offset=offset,
    volume_size=size, chunk_size=[16, 16, 8], compressed_segmentation_block_size=[8, 8, 4],
)
seg = labels(size, np.uint64, 1)[..., None]
write("cseg_gzip", info, seg, offset, compress="gzip")
expected("cseg_gzip", seg)

# 2. Two-channel uint16 image, raw, uncompressed.
size = [20, 18, 7]
info = CloudVolume.create_new_info(
    num_channels=2, layer_type="image", data_type="uint16", encoding="raw",
    resolution=[4, 4, 4], voxel_offset=[0, 0, 0], volume_size=size, chunk_size=[8, 8, 4],
)
rng = np.random.RandomState(2)
img = rng.randint(0, 65535, size=size + [2]).astype(np.uint16)
write("raw_2ch", info, img, [0, 0, 0], compress=False)
expected("raw_2ch", img)

# 3. uint32 segmentation, compressed_segmentation, sharded (murmurhash, gzip; cloud-volume's
#    make_shard writes one shard at a time, so one shard with several minishards).
size = [40, 24, 12]
spec = {
    "@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 1,
    "hash": "murmurhash3_x86_128", "minishard_bits": 3, "shard_bits": 0,
    "minishard_index_encoding": "gzip", "data_encoding": "gzip",
}
info = CloudVolume.create_new_info(
    num_channels=1, layer_type="segmentation", data_type="uint32",
    encoding="compressed_segmentation", resolution=[8, 8, 8], voxel_offset=[0, 0, 0],
    volume_size=size, chunk_size=[8, 8, 4], compressed_segmentation_block_size=[4, 4, 4],
)
info["scales"][0]["sharding"] = spec
path = os.path.join(OUT, "sharded")
shutil.rmtree(path, ignore_errors=True)
vol = CloudVolume("file://" + path, info=info)
vol.commit_info()
sh = labels(size, np.uint32, 3)[..., None]
fname, content = vol.image.make_shard(sh, Bbox([0, 0, 0], size), mip=0)
os.makedirs(os.path.join(path, vol.key), exist_ok=True)
with open(os.path.join(path, vol.key, fname), "wb") as f:
    f.write(content)
expected("sharded", sh)

# 4. Generic (u64 key -> bytes) shards, as for meshes: several shards and minishards.
from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

spec = ShardingSpecification(
    type="neuroglancer_uint64_sharded_v1", preshift_bits=1, hash="murmurhash3_x86_128",
    minishard_bits=2, shard_bits=3, minishard_index_encoding="gzip", data_encoding="gzip",
)
keys = [int(k) for k in np.random.RandomState(4).randint(1, 2**62, size=200, dtype=np.int64)]
entries = {k: (b"label-%d;" % k) * (k % 7 + 1) for k in keys}
path = os.path.join(OUT, "generic_shards")
shutil.rmtree(path, ignore_errors=True)
os.makedirs(path)
for fname, content in spec.synthesize_shards(entries).items():
    with open(os.path.join(path, fname), "wb") as f:
        f.write(content)
with open(os.path.join(path, "spec.json"), "w") as f:
    f.write(spec.to_json())
np.save(os.path.join(OUT, "generic_shards_keys.npy"), np.array(keys, dtype=np.uint64))

# Read everything back through cloud-volume as a self-check.
for name in ["cseg_gzip", "raw_2ch", "sharded"]:
    v = CloudVolume("file://" + os.path.join(OUT, name))
    got = v[v.bounds]
    want = np.load(os.path.join(OUT, name + ".npy"))
    want_xyzc = np.transpose(want if want.ndim == 4 else want[None], (3, 2, 1, 0))
    assert (np.asarray(got) == want_xyzc).all(), name
print("ok")
