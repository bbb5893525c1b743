"""A small Chrome DevTools Protocol client for the browser test.

One websocket to the browser target with flattened sessions: the page and every worker it
starts (Neuroglancer fetches chunks, leaves, manifests and fragments from a web worker) are
attached automatically, and each gets the Network, Runtime and Log domains enabled, so the
test sees every request and every console message wherever it happens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import websocket


class CdpError(RuntimeError):
    pass


@dataclass
class Request:
    """One network request seen by any attached target."""

    request_id: str
    url: str
    method: str
    post_data: str | None
    started: float
    session: str
    status: int | None = None
    error: str | None = None
    finished: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class ConsoleMessage:
    level: str
    text: str
    source: str
    url: str = ""


@dataclass
class Recorder:
    """Everything the test asserts on, filled from CDP events."""

    requests: dict = field(default_factory=dict)
    console: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def all_requests(self) -> list[Request]:
        with self.lock:
            return list(self.requests.values())

    def errors(self) -> list[ConsoleMessage]:
        with self.lock:
            return [m for m in self.console if m.level == "error"]


class Cdp:
    """The browser websocket; `call` sends a command (to a session, or the browser)."""

    def __init__(self, ws_url: str):
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.ws.settimeout(None)
        self.next_id = 0
        self.pending: dict[int, dict] = {}
        self.cond = threading.Condition()
        self.recorder = Recorder()
        self.page_session: str | None = None
        self.sessions: dict[str, str] = {}  # session id -> target type
        self.closed = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    # -- transport ------------------------------------------------------------------------

    def _read(self):
        while True:
            try:
                raw = self.ws.recv()
            except Exception:
                with self.cond:
                    self.closed = True
                    self.cond.notify_all()
                return
            if not raw:
                continue
            msg = json.loads(raw)
            if "id" in msg:
                with self.cond:
                    self.pending[msg["id"]] = msg
                    self.cond.notify_all()
            else:
                try:
                    self._event(msg)
                except Exception as e:  # an event handler must never kill the reader
                    print(f"cdp: event {msg.get('method')} failed: {e!r}")

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        with self.cond:
            self.next_id += 1
            mid = self.next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        return mid

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60):
        mid = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        with self.cond:
            while mid not in self.pending:
                if self.closed:
                    raise CdpError(f"{method}: the DevTools connection closed")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CdpError(f"{method}: no answer in {timeout} s")
                self.cond.wait(left)
            msg = self.pending.pop(mid)
        if "error" in msg:
            raise CdpError(f"{method}: {msg['error']}")
        return msg.get("result", {})

    def page(self, method: str, params: dict | None = None, timeout: float = 60):
        """A command to the page's session."""
        return self.call(method, params, self.page_session, timeout)

    # -- events ---------------------------------------------------------------------------

    def _enable(self, session: str, kind: str):
        # Sent without waiting: this runs on the reader thread, which must keep reading.
        self.send("Network.enable", {}, session)
        self.send("Runtime.enable", {}, session)
        self.send("Log.enable", {}, session)
        if kind == "page":
            self.send("Page.enable", {}, session)
        self.send(
            "Target.setAutoAttach",
            {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True},
            session,
        )
        self.send("Runtime.runIfWaitingForDebugger", {}, session)

    def _event(self, msg: dict):
        method = msg.get("method", "")
        p = msg.get("params", {})
        session = msg.get("sessionId", "")
        rec = self.recorder
        if method == "Target.attachedToTarget":
            sid = p["sessionId"]
            kind = p["targetInfo"]["type"]
            self.sessions[sid] = kind
            self._enable(sid, kind)
        elif method == "Network.requestWillBeSent":
            r = p["request"]
            key = (session, p["requestId"])
            with rec.lock:
                old = rec.requests.get(key)
                if old is None or not p.get("redirectResponse"):
                    rec.requests[key] = Request(
                        request_id=p["requestId"],
                        url=r["url"],
                        method=r["method"],
                        post_data=r.get("postData"),
                        started=time.monotonic(),
                        session=session,
                    )
                else:
                    old.url = r["url"]
        elif method == "Network.responseReceived":
            with rec.lock:
                req = rec.requests.get((session, p["requestId"]))
                if req is not None:
                    req.status = int(p["response"]["status"])
        elif method == "Network.loadingFinished":
            with rec.lock:
                req = rec.requests.get((session, p["requestId"]))
                if req is not None:
                    req.finished = True
        elif method == "Network.loadingFailed":
            with rec.lock:
                req = rec.requests.get((session, p["requestId"]))
                if req is not None:
                    req.error = p.get("errorText", "failed")
                    req.finished = True
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_text(a) for a in p.get("args", []))
            level = {"error": "error", "assert": "error", "warning": "warning"}.get(p["type"], "info")
            with rec.lock:
                rec.console.append(ConsoleMessage(level, text, f"console.{p['type']} ({self.sessions.get(session, 'page')})"))
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            text = d.get("text", "")
            exc = d.get("exception")
            if exc:
                text += " " + _remote_text(exc)
            with rec.lock:
                rec.console.append(ConsoleMessage("error", text, f"exception ({self.sessions.get(session, 'page')})", d.get("url", "")))
        elif method == "Log.entryAdded":
            e = p["entry"]
            with rec.lock:
                rec.console.append(ConsoleMessage(e["level"], e.get("text", ""), f"log.{e.get('source', '')}", e.get("url", "")))

    # -- helpers --------------------------------------------------------------------------

    def evaluate(self, expression: str, timeout: float = 30):
        res = self.page(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout,
        )
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise CdpError(f"evaluate: {d.get('text')} {_remote_text(d.get('exception', {}))}")
        return res.get("result", {}).get("value")

    def screenshot(self, path: str) -> bytes:
        import base64

        res = self.page("Page.captureScreenshot", {"format": "png"}, timeout=120)
        data = base64.b64decode(res["data"])
        with open(path, "wb") as f:
            f.write(data)
        return data

    def mouse(self, kind: str, x: float, y: float, button: str = "none", modifiers: int = 0, clicks: int = 0):
        self.page(
            "Input.dispatchMouseEvent",
            {
                "type": kind,
                "x": x,
                "y": y,
                "button": button,
                "buttons": 1 if (button == "left" and kind == "mousePressed") else 0,
                "modifiers": modifiers,
                "clickCount": clicks,
            },
        )

    def click(self, x: float, y: float, modifiers: int = 0):
        self.mouse("mouseMoved", x, y, modifiers=modifiers)
        self.mouse("mousePressed", x, y, "left", modifiers, 1)
        self.mouse("mouseReleased", x, y, "left", modifiers, 1)

    def key(self, key: str, code: str, key_code: int, modifiers: int = 0, text: str | None = None):
        """A key press as a person makes it: keyDown (with text), keyUp."""
        down = {
            "type": "keyDown" if text else "rawKeyDown",
            "key": key,
            "code": code,
            "windowsVirtualKeyCode": key_code,
            "nativeVirtualKeyCode": key_code,
            "modifiers": modifiers,
        }
        if text:
            down["text"] = text
            down["unmodifiedText"] = text
        self.page("Input.dispatchKeyEvent", down)
        up = {k: v for k, v in down.items() if k not in ("text", "unmodifiedText")}
        up["type"] = "keyUp"
        self.page("Input.dispatchKeyEvent", up)

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass


# CDP modifier bits.
ALT, CTRL, META, SHIFT = 1, 2, 4, 8


def _remote_text(obj: dict) -> str:
    if not isinstance(obj, dict):
        return str(obj)
    if "value" in obj:
        return str(obj["value"])
    return obj.get("description") or obj.get("unserializableValue") or obj.get("type", "")


class Chromium:
    """Headless Chromium with a fresh profile, driven over CDP."""

    FLAGS = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-unsafe-swiftshader",
        "--use-angle=swiftshader",
        "--remote-debugging-port=0",
        # Real-time rendering must not be throttled while nobody looks at the window.
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
    ]

    def __init__(self, binary: str, width: int, height: int, log_path: str):
        self.profile = tempfile.mkdtemp(prefix="cg-browser-profile-")
        self.log = open(log_path, "wb")
        args = [binary, *self.FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise CdpError(f"chromium exited with {self.proc.returncode} before DevTools started; see {log_path}")
            try:
                with open(port_file) as f:
                    lines = f.read().split("\n")
                if len(lines) >= 2 and lines[0].strip() and lines[1].strip():
                    break
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                raise CdpError(f"chromium wrote no {port_file} in 60 s; see {log_path}")
            time.sleep(0.1)
        self.port = int(lines[0])
        self.browser_ws = f"ws://127.0.0.1:{self.port}{lines[1].strip()}"
        self.cdp = Cdp(self.browser_ws)
        self.width, self.height = width, height

    def open_page(self, url: str):
        """Attaches to the blank tab, turns on recording, sizes it, then loads `url`."""
        cdp = self.cdp
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=30) as r:
            targets = json.load(r)
        page = next(t for t in targets if t["type"] == "page")
        sid = cdp.call("Target.attachToTarget", {"targetId": page["id"], "flatten": True})["sessionId"]
        cdp.page_session = sid
        cdp.sessions[sid] = "page"
        for m in ("Network.enable", "Runtime.enable", "Log.enable", "Page.enable"):
            cdp.call(m, {}, sid)
        cdp.call(
            "Target.setAutoAttach",
            {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True},
            sid,
        )
        cdp.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
            sid,
        )
        cdp.call("Emulation.setFocusEmulationEnabled", {"enabled": True}, sid)
        cdp.call("Page.navigate", {"url": url}, sid)

    def close(self):
        self.cdp.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)
