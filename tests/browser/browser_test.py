#!/usr/bin/env python3
"""The browser test (issue 8): the real Neuroglancer client proofreading against our server.

Builds the quickstart dataset, serves it with `chunkedgraph serve`, opens a Neuroglancer
viewer (PyPI neuroglancer, its Python server serving the bundled client) with a
`graphene://` layer in headless Chromium, and drives it over the DevTools protocol like a
person: it waits in real time, moves and clicks the mouse, presses keys, and takes
screenshots. It checks that

  1. segments are drawn in the 2-D panels: the leaves requests of the selected roots answer
     2xx and the xy panel shows about as many coloured pixels as those roots cover;
  2. meshes load: manifest and fragment requests answer 2xx, the console has no errors, and
     the 3-D panel shows coloured pixels;
  3. a merge (graphene merge tool) and a split (multicut tool) made with mouse and keyboard in
     the viewer change the roots on the server, as its HTTP API reports.

Every check runs and is reported, even after an earlier one failed; the exit status is 1 if
any failed. Screenshots go to target/browser-artifacts (CG_BROWSER_ARTIFACTS).

Environment: CHUNKEDGRAPH_BIN (default target/debug/chunkedgraph), CHROMIUM (default
`chromium` on PATH), CG_BROWSER_ARTIFACTS, CG_BROWSER_DATA_DIR (a quickstart data directory
to reuse; default a new temporary one), CG_BROWSER_KEEP=1 keeps the temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cdp import CTRL, SHIFT, Chromium  # noqa: E402

import neuroglancer  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ARTIFACTS = os.environ.get("CG_BROWSER_ARTIFACTS", os.path.join(ROOT, "target", "browser-artifacts"))
BIN = os.environ.get("CHUNKEDGRAPH_BIN", os.path.join(ROOT, "target", "debug", "chunkedgraph"))
TABLE = "quickstart"
LAYER = "quickstart"
# The quickstart volume (x, y, z voxels of 8 nm) and the section the 2-D views show.
SIZE = (256, 256, 128)
Z = 64
CENTRE = (128.5, 128.5, Z + 0.5)  # voxel centres sit at i + 0.5
CROSS_SECTION_SCALE = 0.5  # voxels per screen pixel: 2 px a voxel
WIDTH, HEIGHT = 1280, 1024
SELECTED = 24  # roots selected in the viewer

T0 = time.monotonic()


def log(msg: str):
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


class CheckFailed(Exception):
    pass


def wait_for(what: str, probe, timeout: float, interval: float = 0.5):
    """Polls `probe` until it returns something truthy; fails with the last answer."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = probe()
        if last and (not isinstance(last, tuple) or last[0]):
            return last
        if time.monotonic() > deadline:
            detail = last[1] if isinstance(last, tuple) and len(last) > 1 else last
            raise CheckFailed(f"{what}: not after {timeout:.0f} s ({detail})")
        time.sleep(interval)


# ------------------------------------------------------------------------------------------
# The server side.


def run(cmd: list[str], what: str) -> str:
    log(f"{what}: {' '.join(cmd)}")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"error: {what} failed with exit status {p.returncode}")
    return p.stdout


class Server:
    """`chunkedgraph serve` on a free port, its log in the artefacts."""

    def __init__(self, data_dir: str, log_path: str):
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--data-dir", data_dir, "--listen", "127.0.0.1:0", "--grpc-listen", "off"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
        )
        line = self.proc.stdout.readline()
        m = re.match(r"chunkedgraph serving on (http://\S+)", line)
        if not m:
            self.proc.kill()
            raise SystemExit(f"error: chunkedgraph serve did not start (said {line!r}); see {log_path}")
        self.base = m.group(1)
        # Keep draining stdout so the server never blocks on a full pipe.
        threading.Thread(target=lambda: [self.log.write(x) for x in self.proc.stdout], daemon=True).start()

    def api(self, path: str, body=None):
        url = f"{self.base}/segmentation/api/v1/table/{TABLE}{path}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.load(r)

    def root(self, sv: int, timestamp: float | None = None) -> int:
        q = "?int64_as_str=1" + (f"&timestamp={timestamp}" if timestamp is not None else "")
        return int(self.api(f"/node/{sv}/root{q}")["root_id"])

    def leaves(self, node: int) -> set[int]:
        return {int(x) for x in self.api(f"/node/{node}/leaves?int64_as_str=1")["leaf_ids"]}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


# ------------------------------------------------------------------------------------------
# Where things are in the section: which roots to select, where to merge and split.


def depth_map(labels: np.ndarray, max_depth: int = 8) -> np.ndarray:
    """Chessboard distance (in voxels, capped) from each voxel to the nearest other label
    or the edge of the section."""
    depth = np.zeros(labels.shape, np.int32)
    inside = np.ones(labels.shape, bool)
    for d in range(1, max_depth + 1):
        # A voxel is at depth >= d when its whole 3x3 neighbourhood was at depth >= d - 1
        # and carries its label.
        p = np.pad(inside, 1, constant_values=False)
        lp = np.pad(labels, 1, constant_values=0)
        ok = inside.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                sl = (slice(1 + dy, 1 + dy + labels.shape[0]), slice(1 + dx, 1 + dx + labels.shape[1]))
                ok &= p[sl] & (lp[sl] == labels)
        inside = ok
        depth[inside] = d
    return depth


def plan(section: np.ndarray):
    """section: root IDs, (y, x). Returns the roots to select and the merge pair, each as
    (root, (x, y)) with the point deep inside the root."""
    depth = depth_map(section)
    ids, counts = np.unique(section, return_counts=True)
    order = [int(i) for i in ids[np.argsort(-counts)] if i != 0]
    # Pairs of touching roots (4-neighbours), scored by how deep a point each has.
    best_point = {}
    for r in order[: SELECTED * 2]:
        ys, xs = np.nonzero((section == r) & (depth == depth[section == r].max()))
        k = len(ys) // 2
        best_point[r] = ((int(xs[k]), int(ys[k])), int(depth[ys[k], xs[k]]))
    touching = set()
    for a, b in ((section[:, :-1], section[:, 1:]), (section[:-1, :], section[1:, :])):
        m = a != b
        for u, v in zip(a[m].tolist(), b[m].tolist()):
            touching.add((min(u, v), max(u, v)))
    pairs = [
        (min(best_point[u][1], best_point[v][1]), u, v)
        for u, v in touching
        if u in best_point and v in best_point and u != 0 and v != 0
    ]
    if not pairs:
        raise SystemExit("error: no two touching large segments in the section")
    pairs.sort(reverse=True)
    _, a, b = pairs[0]
    selected = [a, b] + [r for r in order if r not in (a, b)][: SELECTED - 2]
    return selected, (a, best_point[a][0]), (b, best_point[b][0])


# ------------------------------------------------------------------------------------------
# Pixels.


def coloured_pixels(png_path: str, rect) -> int:
    """Pixels in `rect` (x, y, w, h) that are clearly coloured: segments and meshes; not the
    black background, grey or white text."""
    img = np.asarray(Image.open(png_path).convert("RGB")).astype(np.int16)
    x, y, w, h = (int(round(v)) for v in rect)
    crop = img[y + 2 : y + h - 2, x + 2 : x + w - 2]
    hi = crop.max(axis=2)
    lo = crop.min(axis=2)
    return int(np.count_nonzero((hi - lo >= 40) & (hi >= 60)))


# ------------------------------------------------------------------------------------------
# The viewer.


READBACK_JS = """(() => {
  const v = window.viewer;
  if (!v) return null;
  const l = v.layerManager.getLayerByName(%s);
  const s = l && l.layer && l.layer.displayState.segmentSelectionState;
  const str = (x) => (x === undefined || x === null) ? null : String(x);
  const tool = l && l.layer && l.layer.toolBinder && l.layer.toolBinder.activeTool_;
  return {
    active: v.mouseState.active,
    pos: Array.from(v.mouseState.position),
    value: s ? str(s.value) : null,
    base: s ? str(s.baseValue) : null,
    focused: document.activeElement ? document.activeElement.className : null,
  };
})()""" % json.dumps(LAYER)

PANELS_JS = """Array.from(document.querySelectorAll('.neuroglancer-rendered-data-panel'))
  .map((e) => { const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })"""


class Browser:
    def __init__(self, chromium_bin: str, url: str):
        self.chrome = Chromium(chromium_bin, WIDTH, HEIGHT, os.path.join(ARTIFACTS, "chromium.log"))
        self.cdp = self.chrome.cdp
        self.chrome.open_page(url)
        self.shots = []

    def readback(self):
        return self.cdp.evaluate(READBACK_JS)

    def shot(self, name: str) -> str:
        path = os.path.join(ARTIFACTS, name)
        self.cdp.screenshot(path)
        self.shots.append(path)
        return path

    def hover(self, x: float, y: float):
        self.cdp.mouse("mouseMoved", x, y)

    def requests(self, pattern: str, method: str | None = None):
        rx = re.compile(pattern)
        return [r for r in self.cdp.recorder.all_requests() if rx.search(r.url) and (method is None or r.method == method)]

    def close(self):
        self.chrome.close()


class Calibration:
    """The xy panel's screen-to-voxel map, measured by hovering and reading the viewer's
    mouse position back (no assumption about layout or zoom arithmetic). Measured again
    whenever the panel moves: tool status bars and the selection panel resize the panels."""

    def __init__(self, browser: Browser):
        self.b = browser
        self.rect = None
        self.measure()

    def xy_rect(self):
        # 4panel: xy and xz on top, 3-D and yz below (Neuroglancer's data_panel_layout).
        return self.b.cdp.evaluate(PANELS_JS)[0]

    def measure(self):
        # The panel first settles (a side panel or status bar opening animates the layout).
        def settled():
            a = self.xy_rect()
            time.sleep(0.3)
            c = self.xy_rect()
            return (np.allclose(a, c, atol=0.5), c)

        rect = wait_for("the xy panel to settle", settled, 20, 0.1)[1]
        x, y, w, h = rect
        cx, cy = x + w / 2, y + h / 2
        d = min(w, h) / 4
        p0 = self.position_at(cx, cy)
        px = self.position_at(cx + d, cy)
        py = self.position_at(cx, cy + d)
        self.origin = (cx, cy)
        self.v0 = np.array(p0)
        # Voxels per pixel along screen x and y.
        self.ax = (np.array(px) - self.v0) / d
        self.ay = (np.array(py) - self.v0) / d
        log(
            f"xy panel at {[round(v) for v in rect]}: centre voxel {np.round(self.v0, 2).tolist()}, "
            f"{np.round(self.ax, 3).tolist()} voxels per pixel along x, {np.round(self.ay, 3).tolist()} along y"
        )
        if abs(self.ax[0]) < 1e-6 or abs(self.ay[1]) < 1e-6:
            raise CheckFailed("the xy panel's mouse position does not follow the mouse")
        self.rect = rect

    def position_at(self, sx: float, sy: float):
        self.b.hover(sx, sy)

        def probe():
            r = self.b.readback()
            return (r is not None and r["active"] and len(r["pos"]) == 3, r)

        # The position for this mouse event, once it stops changing.
        prev = None
        for _ in range(50):
            pos = wait_for("the viewer's mouse position", probe, 20, 0.1)[1]["pos"]
            if prev is not None and np.allclose(prev, pos):
                return pos
            prev = pos
            time.sleep(0.1)
        raise CheckFailed(f"the mouse position at ({sx}, {sy}) does not settle")

    def matrix(self):
        return np.array([[self.ax[0], self.ay[0]], [self.ax[1], self.ay[1]]])

    def screen(self, vx: float, vy: float):
        """Screen position of the centre of voxel (vx, vy) of the shown section."""
        if not np.allclose(self.xy_rect(), self.rect, atol=0.5):
            self.measure()
        dv = np.array([vx + 0.5 - self.v0[0], vy + 0.5 - self.v0[1]])
        ds = np.linalg.solve(self.matrix(), dv)
        return self.origin[0] + ds[0], self.origin[1] + ds[1]

    def correct(self, xy, pos, point):
        """A screen position moved from `xy` (where the viewer saw voxel position `pos`)
        towards the centre of voxel `point`."""
        dv = np.array([point[0] + 0.5 - pos[0], point[1] + 0.5 - pos[1]])
        ds = np.linalg.solve(self.matrix(), dv)
        return xy[0] + ds[0], xy[1] + ds[1]


# ------------------------------------------------------------------------------------------


class Report:
    def __init__(self):
        self.results = []

    def check(self, name: str, fn):
        log(f"--- check: {name}")
        try:
            detail = fn()
            self.results.append((name, True, detail or ""))
            log(f"PASS {name}: {detail or ''}")
        except CheckFailed as e:
            self.results.append((name, False, str(e)))
            log(f"FAIL {name}: {e}")
        except Exception as e:
            self.results.append((name, False, f"{type(e).__name__}: {e}"))
            log(f"FAIL {name}: {type(e).__name__}: {e}")
            traceback.print_exc()

    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.results)

    def print(self):
        print("\nbrowser test results:")
        for name, ok, detail in self.results:
            print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
        passed = sum(1 for _, ok, _ in self.results if ok)
        print(f"{passed} passed, {len(self.results) - passed} failed")


def main() -> int:
    chromium_bin = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not chromium_bin:
        raise SystemExit("error: chromium not found: apt-get install chromium (or set CHROMIUM)")
    if not os.access(BIN, os.X_OK):
        raise SystemExit(f"error: {BIN} is missing: cargo build -p chunkedgraph (or set CHUNKEDGRAPH_BIN)")
    os.makedirs(ARTIFACTS, exist_ok=True)
    for f in os.listdir(ARTIFACTS):
        if f.endswith((".png", ".log", ".json")):
            os.remove(os.path.join(ARTIFACTS, f))
    work = tempfile.mkdtemp(prefix="cg-browser-")
    # A given data directory is reused (quickstart skips the stages it finished; the
    # edits this test makes stay in it); by default a new one is made and removed.
    data = os.environ.get("CG_BROWSER_DATA_DIR") or os.path.join(work, "quickstart")
    report = Report()
    server = browser = None
    try:
        # The dataset: quickstart, then the root IDs of the section the xy panel shows.
        run([BIN, "quickstart", "--data-dir", data, "--no-serve"], "quickstart")
        npy = os.path.join(work, "section.npy")
        run(
            [BIN, "export", "--data-dir", data, "--table", TABLE, "--bbox", f"0,0,{Z},{SIZE[0]},{SIZE[1]},{Z + 1}", "--out", npy],
            "export the section",
        )
        section = np.load(npy)[0]  # (y, x)
        selected, (root_a, pa), (root_b, pb) = plan(section)
        log(f"selecting {len(selected)} roots; merge {root_a} at {pa} with {root_b} at {pb}")

        server = Server(data, os.path.join(ARTIFACTS, "server.log"))
        log(f"server at {server.base}")
        source = f"graphene://{server.base}/segmentation/table/{TABLE}"

        neuroglancer.set_server_bind_address("127.0.0.1", 0)
        viewer = neuroglancer.Viewer()
        state = {
            "dimensions": {"x": [8e-9, "m"], "y": [8e-9, "m"], "z": [8e-9, "m"]},
            "position": list(CENTRE),
            "crossSectionScale": CROSS_SECTION_SCALE,
            "projectionScale": 384,
            "projectionOrientation": [0.3, -0.2, 0.05, 0.93],
            "layers": [
                {
                    "type": "segmentation",
                    "source": source,
                    "name": LAYER,
                    "segments": [str(s) for s in selected],
                    "toolBindings": {"A": "grapheneMergeSegments", "B": "grapheneMulticutSegments"},
                }
            ],
            "selectedLayer": {"layer": LAYER, "visible": False},
            "layout": "4panel",
            "showAxisLines": False,
            "showDefaultAnnotations": False,
            "showSlices": False,
            "showScaleBar": False,
        }
        viewer.set_state(neuroglancer.ViewerState(state))
        url = viewer.get_viewer_url()
        log(f"neuroglancer at {url}")

        browser = Browser(chromium_bin, url)
        wait_for(
            "the Neuroglancer client to start",
            lambda: browser.cdp.evaluate(
                f"!!(window.viewer && window.viewer.layerManager.getLayerByName({json.dumps(LAYER)}))"
            ),
            120,
        )
        rects = wait_for(
            "four data panels",
            lambda: (lambda r: (r and len(r) == 4 and all(w > 100 and h > 100 for _, _, w, h in r), r))(
                browser.cdp.evaluate(PANELS_JS)
            ),
            60,
        )[1]
        # 4panel: xy and xz on top, 3-D and yz below (Neuroglancer's data_panel_layout).
        xy_rect, three_d_rect = rects[0], rects[2]
        log(f"panels: {[[round(v) for v in r] for r in rects]}")
        ctx = {"browser": browser, "server": server, "rects": rects, "section": section, "selected": selected}

        loaded = layer_loaded(browser, server)
        if loaded is not None:
            # Nothing below can work without the layer: say why once, fail every check.
            report.results.append(("Neuroglancer loads the graphene layer", False, loaded))
            for name in CHECKS:
                report.results.append((name, False, "not run: the layer did not load"))
            browser.shot("00-layer-failed.png")
            return finish(report)
        report.check("2-D: selected segments drawn in the xy panel", lambda: check_2d(ctx, xy_rect))
        report.check("3-D: meshes loaded and drawn", lambda: check_meshes(ctx, three_d_rect, selected))
        calib = None
        try:
            calib = Calibration(browser)
        except Exception as e:
            report.results.append(("calibrate the xy panel", False, str(e)))
        if calib is not None:
            report.check(
                "merge through the viewer changes the roots on the server",
                lambda: check_merge(ctx, calib, (root_a, pa), (root_b, pb)),
            )
            report.check(
                "split (multicut) through the viewer changes the roots on the server",
                lambda: check_split(ctx, calib, (root_a, pa), (root_b, pb)),
            )
            report.check("3-D after the edits: the new roots' meshes load", lambda: check_new_meshes(ctx, three_d_rect))
        report.check("console: no errors", lambda: check_console(ctx))
    finally:
        if browser is not None:
            try:
                dump_traffic(browser)
            finally:
                browser.close()
        if server is not None:
            server.stop()
        if os.environ.get("CG_BROWSER_KEEP"):
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return finish(report)


def finish(report: Report) -> int:
    report.print()
    shots = sorted(f for f in os.listdir(ARTIFACTS) if f.endswith(".png"))
    print(f"screenshots in {ARTIFACTS}: {', '.join(shots)}")
    return 0 if report.ok() else 1


CHECKS = [
    "2-D: selected segments drawn in the xy panel",
    "3-D: meshes loaded and drawn",
    "merge through the viewer changes the roots on the server",
    "split (multicut) through the viewer changes the roots on the server",
    "3-D after the edits: the new roots' meshes load",
    "console: no errors",
]

LOAD_STATE_JS = """(() => {
  const l = window.viewer.layerManager.getLayerByName(%s).layer;
  return l.dataSources.map((d) => {
    const s = d.loadState;
    if (s === undefined) return null;
    if (s.error !== undefined) return String((s.error && s.error.message) || s.error);
    return "loaded";
  });
})()""" % json.dumps(LAYER)


def layer_loaded(b: Browser, server: Server) -> str | None:
    """None once the layer's data source loaded; else why not."""
    try:
        states = wait_for(
            "the graphene data source to load",
            lambda: (lambda s: (s and all(x is not None for x in s), s))(b.cdp.evaluate(LOAD_STATE_JS)),
            90,
        )[1]
    except CheckFailed as e:
        return str(e)
    errors = [x for x in states if x != "loaded"]
    if not errors:
        return None
    msg = f"Neuroglancer says: {errors[0]}"
    failed_reqs = [r for r in b.requests(re.escape(server.base)) if failed(r)]
    if failed_reqs:
        msg += "; failed requests: " + ", ".join(f"{r.url} -> {r.status or r.error}" for r in failed_reqs[:3])
    return msg


def dump_traffic(browser: Browser):
    reqs = browser.cdp.recorder.all_requests()
    with open(os.path.join(ARTIFACTS, "requests.json"), "w") as f:
        json.dump(
            [{"method": r.method, "url": r.url, "status": r.status, "error": r.error, "session": browser.cdp.sessions.get(r.session, "browser")} for r in reqs],
            f,
            indent=1,
        )
    with open(os.path.join(ARTIFACTS, "console.json"), "w") as f:
        json.dump([m.__dict__ for m in browser.cdp.recorder.console], f, indent=1)


# ------------------------------------------------------------------------------------------
# The checks.

def failed(r) -> bool:
    """A request that finished without a 2xx; the viewer cancelling one it no longer needs
    (net::ERR_ABORTED, after the view moved) is no failure."""
    if r.error == "net::ERR_ABORTED" and r.status is None:
        return False
    return r.finished and not r.ok


LEAVES = r"/segmentation/api/v1/table/%s/node/(\d+)/leaves\?" % TABLE


def check_2d(ctx, rect):
    b: Browser = ctx["browser"]
    selected = set(ctx["selected"])
    section = ctx["section"]
    # What the xy panel can show of the selected roots: 2 x 2 pixels a voxel, clipped to the
    # panel (the section is centred in it).
    x, y, w, h = rect
    half_w, half_h = w / 2 * CROSS_SECTION_SCALE, h / 2 * CROSS_SECTION_SCALE
    x0, x1 = int(max(0, CENTRE[0] - half_w)), int(min(SIZE[0], CENTRE[0] + half_w))
    y0, y1 = int(max(0, CENTRE[1] - half_h)), int(min(SIZE[1], CENTRE[1] + half_h))
    window = section[y0:y1, x0:x1]
    expected = int(np.isin(window, list(selected)).sum() / CROSS_SECTION_SCALE**2)

    def leaves_done():
        reqs = b.requests(LEAVES)
        roots_ok = {int(re.search(LEAVES, r.url).group(1)) for r in reqs if r.ok}
        bad = [r for r in reqs if failed(r)]
        if bad:
            r = bad[0]
            raise CheckFailed(f"{len(bad)} leaves requests failed, e.g. {r.url} -> {r.status or r.error}")
        missing = selected - roots_ok
        return (not missing, f"{len(reqs)} leaves requests, no 2xx yet for {len(missing)} roots, e.g. {sorted(missing)[:3]}")

    wait_for("leaves requests answered 2xx for every selected root", leaves_done, 90, 1)
    n_leaves = len(b.requests(LEAVES))
    best = [0]

    def drawn():
        path = b.shot("01-segments-2d.png")
        n = coloured_pixels(path, rect)
        best[0] = max(best[0], n)
        return (n >= expected * 0.5, f"{n} coloured pixels of about {expected} expected")

    wait_for("the xy panel to show the selected segments", drawn, 90, 2)
    return f"{n_leaves} leaves requests 2xx for all {len(selected)} roots; xy panel {best[0]} coloured pixels (about {expected} expected); screenshot 01-segments-2d.png"


MANIFEST = r"/meshing/api/v1/table/%s/manifest/(\d+):0" % TABLE


def check_meshes(ctx, rect, roots):
    b: Browser = ctx["browser"]
    server: Server = ctx["server"]
    roots = set(roots)
    # Neuroglancer reads fragments under the info's data_dir + mesh (and manifests from the
    # meshing API).
    with urllib.request.urlopen(f"{server.base}/segmentation/table/{TABLE}/info", timeout=30) as r:
        info = json.load(r)
    if not info.get("mesh"):
        raise CheckFailed(f"the info names no mesh folder: {info}")
    mesh_prefix = ctx["mesh_prefix"] = f"{info['data_dir'].rstrip('/')}/{info['mesh'].strip('/')}/"

    def fragments():
        return [r for r in b.requests(re.escape(mesh_prefix)) if not r.url.split("?")[0].endswith("/info")]

    def fetched():
        man = b.requests(MANIFEST)
        ok_roots = {int(re.search(MANIFEST, r.url).group(1)) for r in man if r.ok}
        frags = fragments()
        frag_ok = [r for r in frags if r.ok]
        bad = [r for r in man + frags if failed(r)]
        detail = (
            f"manifests 2xx for {len(ok_roots & roots)}/{len(roots)} roots, {len(frag_ok)} fragment "
            f"requests 2xx, {len(bad)} failed"
        )
        if not man and not frags:
            detail = "no manifest/fragments fetched (" + detail + ")"
        if bad:
            detail += f", e.g. {bad[0].url} -> {bad[0].status or bad[0].error}"
            answered = {int(re.search(MANIFEST, r.url).group(1)) for r in man if r.ok or failed(r)}
            if answered >= roots:
                # Neuroglancer does not ask again for a manifest that failed.
                raise CheckFailed(f"mesh manifests and fragments: {detail}")
        return (ok_roots >= roots and frag_ok and not bad, detail)

    failure = None
    try:
        wait_for("mesh manifests and fragments", fetched, 60, 1)
    except CheckFailed as e:
        failure = str(e)
    best = [0]

    def drawn():
        path = b.shot("02-meshes-3d.png")
        n = coloured_pixels(path, rect)
        best[0] = max(best[0], n)
        return (n >= 2000, f"{n} coloured pixels in the 3-D panel")

    try:
        wait_for("meshes in the 3-D panel", drawn, 10 if failure else 60, 2)
    except CheckFailed as e:
        failure = f"{failure}; {e}" if failure else str(e)
    if failure:
        raise CheckFailed(failure)
    return f"{fetched()[1]}; 3-D panel {best[0]} coloured pixels; screenshot 02-meshes-3d.png"


def hover_until(b: Browser, calib: Calibration, point, want_root: int | None, what: str):
    """Moves the mouse over voxel `point` of the section and waits until the viewer reports
    the segment under it (its root once the root's leaves are loaded). Closed loop: where
    the viewer says the mouse is corrects the next move."""
    at = {"rect": None, "xy": None, "tries": 0}

    def probe():
        if not np.allclose(calib.xy_rect(), calib.rect, atol=0.5):
            calib.measure()
        if at["rect"] != calib.rect:
            # Placed anew whenever the panel moved.
            at["rect"] = calib.rect
            at["xy"] = calib.screen(*point)
        at["tries"] += 1
        if at["tries"] > 1:
            # A move to where the mouse already is may not refresh the viewer's mouse state
            # (seen on a loaded machine: no segment reported for a minute): step away first.
            b.hover(at["xy"][0] + 6, at["xy"][1] + 6)
            time.sleep(0.05)
        b.hover(*at["xy"])
        r = b.readback()
        if r is None or len(r["pos"]) != 3:
            return (False, r)
        if [int(np.floor(v)) for v in r["pos"][:2]] != list(point):
            # Off by a pixel or so: aim at the voxel's centre from where the mouse is.
            at["xy"] = calib.correct(at["xy"], r["pos"], point)
            return (False, r)
        ok = r["base"] not in (None, "0") and (want_root is None or r["value"] == str(want_root))
        return (ok, r)

    r = wait_for(f"{what} (voxel {list(point)}, root {want_root})", probe, 60, 0.3)[1]
    return at["xy"][0], at["xy"][1], int(r["base"]), int(r["value"])


def click_until(b: Browser, calib: Calibration, point, want_root, what: str, done, supervoxel=None):
    """Hovers `point` until the viewer shows `want_root` there, then control+clicks, until
    `done()` (a probe as `wait_for` takes) holds; a click the viewer missed (the tool saw no
    segment under the mouse yet) is made again, up to 3 times. Returns the supervoxel."""
    last = None
    for _ in range(3):
        x, y, s, _ = hover_until(b, calib, point, want_root, what)
        if supervoxel is not None and s != supervoxel:
            raise CheckFailed(f"{what}: supervoxel {s} under the mouse, expected {supervoxel}")
        b.cdp.click(x, y, CTRL)
        try:
            wait_for(f"{what}: the click taken", done, 5, 0.2)
            return s
        except CheckFailed as e:
            last = e
    raise CheckFailed(f"{what}: 3 clicks not taken ({last})")


def edit_requests(b: Browser, name: str):
    return b.requests(r"/segmentation/api/v1/table/%s/%s\?" % (TABLE, name), method="POST")


def wait_answered(b: Browser, name: str, before: int, timeout: float):
    """The first `name` request after the `before` already seen, once answered; fails
    unless it answered 2xx."""

    def probe():
        done = [r for r in edit_requests(b, name)[before:] if r.finished or r.status is not None]
        return (bool(done), done[0] if done else "none sent")

    req = wait_for(f"the viewer's {name} request", probe, timeout, 0.5)[1]
    if not req.ok:
        raise CheckFailed(f"{name} request answered {req.status or req.error}; body {req.post_data}")
    return req


def dom_count(b: Browser, selector: str) -> int:
    return b.cdp.evaluate(f"document.querySelectorAll({json.dumps(selector)}).length")


MULTICUT_JS = """(() => {
  const l = window.viewer.layerManager.getLayerByName(%s).layer;
  const c = l.graphConnection && l.graphConnection.value;
  const m = c && c.state && c.state.multicutState;
  return m ? {red: m.sinks.size, blue: m.sources.size, blueActive: m.blueGroup.value} : null;
})()""" % json.dumps(LAYER)


def check_merge(ctx, calib: Calibration, a, b_):
    b: Browser = ctx["browser"]
    server: Server = ctx["server"]
    (root_a, pa), (root_b, pb) = a, b_
    _, _, sv_a, _ = hover_until(b, calib, pa, root_a, "segment A under the mouse")
    _, _, sv_b, _ = hover_until(b, calib, pb, root_b, "segment B under the mouse")
    before = (server.root(sv_a), server.root(sv_b))
    if before != (root_a, root_b):
        raise CheckFailed(f"server roots before the merge {before}, expected {(root_a, root_b)}")
    ctx["sv"] = (sv_a, sv_b)
    ctx["leaves_before"] = (server.leaves(root_a), server.leaves(root_b))
    sent = len(edit_requests(b, "merge"))
    # Shift+A: the merge tool (bound to A in the layer). Control+click in A, control+click
    # in B draws the merge line; Enter submits.
    b.cdp.key("A", "KeyA", 65, SHIFT, "A")
    wait_for("the merge tool", lambda: dom_count(b, ".graphene-merge-segments-status") > 0, 10, 0.2)
    click_until(
        b,
        calib,
        pa,
        root_a,
        "the merge line's first point (segment A)",
        lambda: dom_count(b, ".graphene-merge-segments-point") == 1,
    )
    click_until(
        b,
        calib,
        pb,
        root_b,
        "the merge line's second point (segment B)",
        lambda: (dom_count(b, ".graphene-merge-segments-point") == 2, status_text(b)),
    )
    b.shot("03-merge-line.png")
    b.cdp.key("Enter", "Enter", 13, 0, "\r")
    req = wait_answered(b, "merge", sent, 30)
    body = json.loads(req.post_data)
    ids = sorted(int(p[0]) for p in body)
    if ids != sorted((sv_a, sv_b)):
        raise CheckFailed(f"the viewer merged {ids}, expected supervoxels {sorted((sv_a, sv_b))}")
    after = (server.root(sv_a), server.root(sv_b))
    if after[0] != after[1] or after[0] in (root_a, root_b):
        raise CheckFailed(f"after the merge the server has roots {after} for {sv_a}, {sv_b}")
    merged = after[0]
    ctx["merged"] = merged
    leaves = server.leaves(merged)
    want = ctx["leaves_before"][0] | ctx["leaves_before"][1]
    if leaves != want:
        raise CheckFailed(f"merged root {merged} has {len(leaves)} leaves, expected the {len(want)} of A and B")
    # The viewer follows: the new root is selected and shows under the mouse.
    hover_until(b, calib, pb, merged, "the merged root under the mouse")
    b.shot("04-merged.png")
    # Shift+A again puts the merge tool away.
    b.cdp.key("A", "KeyA", 65, SHIFT, "A")
    wait_for("the merge tool to close", lambda: dom_count(b, ".graphene-merge-segments-status") == 0, 10, 0.2)
    return (
        f"POST merge {req.status} with supervoxels {sv_a}, {sv_b}; roots {root_a} + {root_b} -> {merged} "
        f"({len(leaves)} leaves); screenshots 03-merge-line.png, 04-merged.png"
    )


def status_text(b: Browser) -> str:
    return b.cdp.evaluate(
        "Array.from(document.querySelectorAll('.neuroglancer-status')).map(e => e.textContent).join(' | ')"
    )


def check_split(ctx, calib: Calibration, a, b_):
    b: Browser = ctx["browser"]
    server: Server = ctx["server"]
    if "merged" not in ctx:
        raise CheckFailed("needs the merge to have succeeded")
    (_, pa), (_, pb) = a, b_
    merged = ctx["merged"]
    sv_a, sv_b = ctx["sv"]
    sent = len(edit_requests(b, "split"))
    # Shift+B: the multicut tool. Control+click a red point in A, G swaps to the blue group,
    # control+click a blue point in B, Enter submits.
    b.cdp.key("B", "KeyB", 66, SHIFT, "B")
    wait_for("the multicut tool", lambda: dom_count(b, ".graphene-multicut-status") > 0, 10, 0.2)
    click_until(
        b,
        calib,
        pa,
        merged,
        "the red point (merged root under the mouse)",
        lambda: (lambda m: (m and m["red"] == 1, m))(b.cdp.evaluate(MULTICUT_JS)),
        supervoxel=sv_a,
    )
    b.cdp.key("g", "KeyG", 71, 0, "g")
    wait_for("the blue group", lambda: (lambda m: (m and m["blueActive"], m))(b.cdp.evaluate(MULTICUT_JS)), 10, 0.2)
    click_until(
        b,
        calib,
        pb,
        merged,
        "the blue point (merged root under the mouse)",
        lambda: (lambda m: (m and m["blue"] == 1, m))(b.cdp.evaluate(MULTICUT_JS)),
        supervoxel=sv_b,
    )
    b.shot("05-multicut-points.png")
    b.cdp.key("Enter", "Enter", 13, 0, "\r")
    req = wait_answered(b, "split", sent, 30)
    body = json.loads(req.post_data)
    groups = sorted([sorted(int(p[0]) for p in body["sources"]), sorted(int(p[0]) for p in body["sinks"])])
    if groups != sorted([[sv_a], [sv_b]]):
        raise CheckFailed(f"the viewer's split had sources/sinks {groups}, expected [{sv_a}] and [{sv_b}]")
    ra, rb = server.root(sv_a), server.root(sv_b)
    if ra == rb or merged in (ra, rb):
        raise CheckFailed(f"after the split the server has roots {ra}, {rb} (the merged root was {merged})")
    la, lb = server.leaves(ra), server.leaves(rb)
    if (la, lb) != ctx["leaves_before"]:
        raise CheckFailed(
            f"the split did not restore A and B: {len(la)} and {len(lb)} leaves, expected "
            f"{len(ctx['leaves_before'][0])} and {len(ctx['leaves_before'][1])}"
        )
    latest = server.api("/is_latest_roots?int64_as_str=1", {"node_ids": [str(merged)]})["is_latest"]
    if latest != [False]:
        raise CheckFailed(f"merged root {merged} still latest after the split: {latest}")
    # The viewer follows: both new roots are selected, A's shows under the mouse.
    ctx["split"] = ({ra, rb}, req.started)
    hover_until(b, calib, pa, ra, "A's new root under the mouse")
    b.shot("06-split.png")
    return (
        f"POST split {req.status}; {merged} -> {ra} ({len(la)} leaves, as A) and {rb} ({len(lb)} leaves, as B); "
        f"screenshots 05-multicut-points.png, 06-split.png"
    )


def check_new_meshes(ctx, rect):
    """After the split the viewer asks for the new roots' manifests (again and again while
    they are new); the server must have meshed them (issue 7: remeshing after edits)."""
    b: Browser = ctx["browser"]
    server: Server = ctx["server"]
    if "split" not in ctx:
        raise CheckFailed("needs the split to have succeeded")
    new_roots, since = ctx["split"]

    def fetched():
        man = [r for r in b.requests(MANIFEST) if r.started >= since]
        ok_roots = {int(re.search(MANIFEST, r.url).group(1)) for r in man if r.ok}
        frags = [r for r in b.requests(re.escape(ctx["mesh_prefix"])) if r.started >= since] if "mesh_prefix" in ctx else []
        frag_ok = [r for r in frags if r.ok]
        detail = f"manifests 2xx for {len(ok_roots & new_roots)}/{len(new_roots)} new roots, {len(frag_ok)} fragment requests 2xx since the split"
        if not man and not frags:
            detail = "no manifest/fragments fetched for the new roots (" + detail + ")"
        bad = [r for r in man if failed(r)]
        if bad:
            detail += f", {len(bad)} failed, e.g. {bad[0].url} -> {bad[0].status or bad[0].error}"
            answered = {int(re.search(MANIFEST, r.url).group(1)) for r in man if r.ok or failed(r)}
            if answered >= new_roots and not ok_roots:
                raise CheckFailed(f"the new roots' meshes: {detail}")
        return (ok_roots >= new_roots and frag_ok, detail)

    wait_for("the new roots' meshes", fetched, 30, 1)
    # What the viewer got: each new root's manifest lists fragments.
    for r in sorted(new_roots):
        with urllib.request.urlopen(
            f"{server.base}/meshing/api/v1/table/{TABLE}/manifest/{r}:0?verify=1&prepend_seg_ids=1", timeout=30
        ) as resp:
            frags = json.load(resp).get("fragments", [])
        if not frags:
            raise CheckFailed(f"the manifest of new root {r} lists no fragments")
    path = b.shot("07-split-meshes-3d.png")
    n = coloured_pixels(path, rect)
    if n < 2000:
        raise CheckFailed(f"{n} coloured pixels in the 3-D panel after the split")
    return f"{fetched()[1]}; 3-D panel {n} coloured pixels; screenshot 07-split-meshes-3d.png"


def check_console(ctx):
    b: Browser = ctx["browser"]
    # The Neuroglancer Python server has no favicon; that 404 is not ours.
    errors = [m for m in b.cdp.recorder.errors() if not m.url.endswith("/favicon.ico")]
    if errors:
        lines = "; ".join(f"[{m.source}] {m.text[:200]}" for m in errors[:5])
        raise CheckFailed(f"{len(errors)} console errors (all in console.json): {lines}")
    return f"{len(b.cdp.recorder.console)} console messages, none an error"


if __name__ == "__main__":
    sys.exit(main())
