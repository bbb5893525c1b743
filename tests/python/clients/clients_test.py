"""The real clients against `chunkedgraph serve`: caveclient and cloud-volume, pinned in
requirements.txt beside this file, use a synthetic graph as they would use PyChunkedGraph.

    python tests/python/clients/clients_test.py

Ingests a synthetic graph into a temporary embedded store with `$CHUNKEDGRAPH_BIN ingest`,
starts `$CHUNKEDGRAPH_BIN serve` on a free port, and runs named checks; prints
`clients: N passed, N failed` and exits 0 only when all pass.

Environment:
  CHUNKEDGRAPH_BIN  our binary (default: target/debug/chunkedgraph)
"""

import datetime
import os
import subprocess
import sys
import tempfile
import time
import traceback

import DracoPy
import numpy as np
import requests
from caveclient.auth import AuthClient
from caveclient.chunkedgraph import ChunkedGraphClient
from cloudvolume import Bbox, CloudVolume

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
BIN = os.environ.get("CHUNKEDGRAPH_BIN", os.path.join(ROOT, "target", "debug", "chunkedgraph"))
TABLE = "clients"
# Both clients want a token; the server does not check it yet.
TOKEN = "0123abcd"

results = []


def check(name):
    def wrap(f):
        try:
            f()
            results.append((name, None))
            print(f"ok    {name}")
        except Exception as e:  # a failed check is reported, the others still run
            results.append((name, e))
            print(f"FAIL  {name}: {e!r}")
            traceback.print_exc(limit=3)
        return f

    return wrap


def main():
    if not os.path.exists(BIN):
        print(f"error: {BIN} not found; build it with cargo build -p chunkedgraph", file=sys.stderr)
        print("clients: 0 passed, 1 failed")
        return 1
    env = dict(os.environ, RUST_LOG="warn")
    env.pop("BIGTABLE_EMULATOR_HOST", None)
    with tempfile.TemporaryDirectory() as data:
        ingest = subprocess.run(
            [BIN, "ingest", "--table", TABLE, "--synthetic", "3000", "--seed", "3",
             "--data-dir", data, "--segmentation-dir", os.path.join(data, "segmentation")],
            env=env, capture_output=True, text=True,
        )
        if ingest.returncode != 0:
            print(ingest.stderr, file=sys.stderr)
            print("clients: 0 passed, 1 failed")
            return 1
        mesh = subprocess.run(
            [BIN, "mesh", "--table", TABLE, "--data-dir", data],
            env=env, capture_output=True, text=True,
        )
        if mesh.returncode != 0:
            print(mesh.stderr, file=sys.stderr)
            print("clients: 0 passed, 1 failed")
            return 1
        server = subprocess.Popen(
            [BIN, "serve", "--data-dir", data, "--listen", "127.0.0.1:0"],
            env=env, stdout=subprocess.PIPE, text=True,
        )
        try:
            line = server.stdout.readline().strip()
            prefix = "chunkedgraph serving on "
            if not line.startswith(prefix):
                raise RuntimeError(f"unexpected first line from the server: {line!r}")
            run_checks(line[len(prefix):])
        finally:
            server.terminate()
            server.wait(timeout=30)
    failed = sum(1 for _, e in results if e is not None)
    print(f"clients: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def run_checks(base):
    cg = ChunkedGraphClient(
        server_address=base, table_name=TABLE, auth_client=AuthClient(token=TOKEN)
    )
    cv = CloudVolume(
        f"graphene://{base}/segmentation/table/{TABLE}", secrets={"token": TOKEN}
    )
    state = {}

    @check("caveclient reads the server version and info")
    def _():
        assert cg.server_version is not None
        info = cg.segmentation_info
        assert info["graph"]["n_layers"] == cv.meta.n_layers
        assert list(cg.base_resolution) == [1, 1, 1]

    @check("cloud-volume reads the graphene info")
    def _():
        assert cv.meta.api_version.version == "v1"
        assert list(cv.meta.graph_chunk_size) == cg.segmentation_info["graph"]["chunk_size"]
        assert cv.bounds.minpt.tolist() == [0, 0, 0]

    @check("cloud-volume maps a layer-2 chunk to its supervoxels")
    def _():
        chunk = cv.meta.encode_label(2, 0, 0, 0, 0)
        mapping = cv.get_chunk_mappings(chunk)
        assert len(mapping) > 1
        for l2, svs in mapping.items():
            assert sorted(svs) == sorted(cg.get_children(l2).tolist())
        state["svs"] = [int(s) for svs in mapping.values() for s in svs]

    @check("roots agree between caveclient, cloud-volume and single lookups")
    def _():
        svs = state["svs"]
        roots = cg.get_roots(svs)
        assert roots.tolist() == cv.get_roots(svs).tolist()
        for sv, r in list(zip(svs, roots))[:5]:
            assert cg.get_root_id(sv) == r
        l2 = cg.get_roots(svs, stop_layer=2)
        assert all(cv.meta.decode_layer_id(x) == 2 for x in l2)
        state["roots"] = roots

    @check("cloud-volume downloads supervoxels and roots from the served data_dir")
    def _():
        assert cv.meta.info["data_dir"].startswith(base), cv.meta.info["data_dir"]
        box = Bbox((0, 0, 0), (96, 96, 80))  # crosses chunk faces on every axis
        svs = np.asarray(cv.download(box, agglomerate=False))[..., 0]
        roots = np.asarray(cv.download(box, agglomerate=True))[..., 0]
        assert svs.shape == roots.shape == (96, 96, 80)
        assert (svs != 0).all(), "the synthetic segmentation is dense"
        distinct = np.unique(svs)
        assert len(distinct) > 50
        expected = {int(s): cg.get_root_id(int(s)) for s in distinct[:: max(1, len(distinct) // 40)]}
        for sv, root in expected.items():
            assert (roots[svs == sv] == root).all(), f"voxels of {sv} are not labelled {root}"
        by_batch = dict(zip(distinct.tolist(), cg.get_roots(distinct).tolist()))
        mapped = np.vectorize(lambda s: by_batch[int(s)], otypes=[np.uint64])(svs)
        assert (mapped == roots).all(), "agglomerate=True differs from the server's roots"
        # The files themselves: a ranged read is a 206 with just those bytes.
        url = cv.meta.info["data_dir"] + "/info"
        part = requests.get(url, headers={"Range": "bytes=0-9"})
        assert part.status_code == 206 and len(part.content) == 10, part.status_code

    @check("leaves of each root hold exactly its supervoxels in the chunk")
    def _():
        svs, roots = state["svs"], state["roots"]
        distinct = sorted(set(roots.tolist()))
        many = cg.get_leaves_many(distinct)
        for r in distinct:
            leaves = set(cg.get_leaves(r).tolist())
            assert set(many[r].tolist()) == leaves
            mine = {s for s, x in zip(svs, roots) if x == r}
            assert mine <= leaves
            assert not (leaves & (set(svs) - mine))
            cv_leaves = cv.get_leaves(r, cv.bounds, 0)
            assert set(cv_leaves.tolist()) == leaves
        box = np.array([[0, 64], [0, 64], [0, 64]])
        boxed = cg.get_leaves(distinct[0], bounds=box)
        assert set(boxed.tolist()) <= set(cg.get_leaves(distinct[0]).tolist())

    @check("graphs: subgraph, layer-2 graph, covering nodes")
    def _():
        r = state["roots"][0]
        nodes, affinities, areas = cg.get_subgraph(r, bounds=None)
        assert nodes.shape[0] == affinities.shape[0] == areas.shape[0]
        leaves = set(cg.get_leaves(r).tolist())
        assert set(nodes.flatten().tolist()) <= leaves
        edges = cg.level2_chunk_graph(r)
        l2s = cg.get_leaves(r, stop_layer=2)
        assert {x for e in edges for x in e} <= set(l2s.tolist())
        cover = cg.get_minimal_covering_nodes(l2s)
        assert cover.tolist() == [r]

    def fragments_decoded(root):
        """Every fragment of a root's manifest, fetched and parsed as Neuroglancer does (the
        `~{seg}:` prefix, then `~{layer}/{shard}:{offset}:{size}` by byte range or a
        dynamic file name) and decoded by DracoPy; returns (dynamic count, vertices)."""
        url = f"{base}/meshing/api/v1/table/{TABLE}/manifest/{root}:0"
        m = requests.get(url, params={"verify": 1, "prepend_seg_ids": 1}).json()
        assert m["fragments"], f"no fragments for {root}"
        mesh_dir = cv.meta.info["data_dir"] + "/" + cv.meta.info["mesh"]
        dynamic, points = 0, []
        for frag in m["fragments"]:
            seg, frag = frag[1:].split(":", 1)
            assert int(seg) > 0
            if frag.startswith("~"):
                path, offset, size = frag[1:].split(":")
                offset, size = int(offset), int(size)
                r = requests.get(f"{mesh_dir}/initial/{path}",
                                 headers={"Range": f"bytes={offset}-{offset + size - 1}"})
                assert r.status_code == 206 and len(r.content) == size, r.status_code
            else:
                dynamic += 1
                r = requests.get(f"{mesh_dir}/dynamic/{frag}")
                assert r.status_code == 200, r.status_code
            decoded = DracoPy.decode(r.content)
            pts = np.asarray(decoded.points).reshape(-1, 3)
            assert len(pts) and len(np.asarray(decoded.faces)), frag
            points.append(pts)
        return dynamic, np.concatenate(points)

    def inside_volume(points):
        lo = np.asarray(cv.bounds.minpt) * np.asarray(cv.resolution)
        hi = np.asarray(cv.bounds.maxpt) * np.asarray(cv.resolution)
        assert (points >= lo).all() and (points <= hi).all(), (points.min(0), points.max(0), lo, hi)

    @check("meshes: manifests, every fragment through DracoPy, cloud-volume mesh.get")
    def _():
        info = cg.segmentation_info
        assert info["mesh"] == "graphene_meshes"
        meta = info["mesh_metadata"]
        assert meta["unsharded_mesh_dir"] == "dynamic" and meta["uniform_draco_grid_size"] >= 1
        roots = sorted(set(int(r) for r in state["roots"]))
        for root in roots[:6]:
            _, points = fragments_decoded(root)
            inside_volume(points)
            mesh = cv.mesh.get(root)
            mesh = mesh[root] if isinstance(mesh, dict) else mesh
            assert len(mesh.faces) > 0 and len(mesh.vertices) > 0
            inside_volume(mesh.vertices)
            # cloud-volume's layer-2 path: the manifest with return_seg_ids and a body.
            l2 = cv.mesh.fetch_manifest(root, level=2, return_segids=True)
            assert len(l2["fragments"]) == len(l2["seg_ids"]) > 0
            assert all(cv.meta.decode_layer_id(s) == 2 for s in l2["seg_ids"])
            # cloud-volume's own shard reader (minishard indexes) over the same files.
            labels = cv.mesh.get_fragment_labels(root, level=meta["max_meshed_layer"])
            direct = cv.mesh.get_meshes_on_bypass(labels)
            assert sorted(direct) == sorted(labels)
            assert sum(len(m.faces) for m in direct.values()) == len(mesh.faces)

    @check("merge, history and undo through caveclient")
    def _():
        svs, roots = state["svs"], state["roots"]
        a = svs[0]
        b = next(s for s, x in zip(svs, roots) if x != roots[0])
        before = cg.get_roots([a, b])
        res = cg.do_merge([a, b], [[10, 10, 10], [12, 12, 12]], resolution=(1, 1, 1))
        new_root = int(res["new_root_ids"][0])
        after = cg.get_roots([a, b])
        assert after[0] == after[1] == new_root
        assert cg.is_latest_roots(before).tolist() == [False, False]
        assert cg.is_latest_roots([new_root]).tolist() == [True]
        lineage = cg.get_lineage_graph(new_root, as_nx_graph=True)
        assert set(lineage.predecessors(new_root)) == set(before.tolist())
        assert sorted(cg.get_latest_roots(before[0]).tolist()) == [new_root]
        assert sorted(cg.get_original_roots(new_root).tolist()) == sorted(before.tolist())
        past = cg.get_past_ids([new_root])
        assert sorted(past["past_id_map"][new_root]) == sorted(before.tolist())
        log = cg.get_change_log(new_root)
        assert log["n_mergers"] == 1 and log["n_splits"] == 0
        table = cg.get_tabular_change_log([new_root])[new_root]
        assert table["operation_id"].tolist() == [res["operation_id"]]
        assert table["is_merge"].tolist() == [True]
        details = cg.get_operation_details([res["operation_id"]])
        assert details[str(res["operation_id"])]["added_edges"]
        old, new = cg.get_delta_roots(datetime.datetime.now(datetime.timezone.utc)
                                      - datetime.timedelta(hours=1))
        assert new.tolist() == [new_root]
        # The new root's meshes come without asking: the server remeshes after each edit.
        deadline = time.time() + 60
        while True:
            try:
                dynamic, points = fragments_decoded(new_root)
                if dynamic:
                    break
            except AssertionError:
                pass
            assert time.time() < deadline, "the merged root got no new mesh fragments"
            time.sleep(0.05)
        inside_volume(points)
        merged = cv.mesh.get(new_root)
        merged = merged[new_root] if isinstance(merged, dict) else merged
        assert len(merged.faces) > 0
        undo = cg.undo_operation(res["operation_id"])
        assert sorted(int(x) for x in undo["new_root_ids"]) == sorted(cg.get_roots([a, b]).tolist())
        assert cg.get_roots([a]) != cg.get_roots([b])
        state["pair"] = (a, b)

    @check("split preview and split: done, or refused with a reason")
    def _():
        a, b = state["pair"]
        res = cg.do_merge([a, b], [[10, 10, 10], [12, 12, 12]], resolution=(1, 1, 1))
        root = int(res["new_root_ids"][0])
        try:
            src, snk, ok = cg.preview_split([[10, 10, 10]], [[12, 12, 12]], root,
                                            source_supervoxels=[a], sink_supervoxels=[b])
        except requests.HTTPError as e:
            assert e.response.status_code == 400, e
            print(f"      (refused: {e.response.json()['message']})")
            return
        assert ok and a in src and b in snk
        op, new_roots = cg.execute_split([[10, 10, 10]], [[12, 12, 12]], root,
                                         source_supervoxels=[a], sink_supervoxels=[b])
        assert len(new_roots) == 2
        print(f"      (split by operation {op})")
        assert cg.get_roots([a]) != cg.get_roots([b])

    @check("unknown IDs are a client error")
    def _():
        bad = cv.meta.encode_label(3, 0, 0, 0, 12345)
        try:
            cg.get_children(bad)
        except requests.HTTPError as e:
            assert e.response.status_code == 404, e
        else:
            raise AssertionError("no error for an unknown node")


if __name__ == "__main__":
    sys.exit(main())
