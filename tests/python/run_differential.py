"""Runs differential.py against Google's emulator and ours and compares the two outputs.

    python tests/python/run_differential.py [--self-check] [--keep]

Starts cbtemulator and `$CHUNKEDGRAPH_BIN emulator --data-dir TMP --listen 127.0.0.1:PORT` on
free loopback ports, waits until both accept TCP connections, runs the scenario against each,
stops both, and compares the outputs step by step. Exits 0 only when every step agrees.

Environment:
  PYTHON            interpreter with google-cloud-bigtable (default: .venv/bin/python if present,
                    else this interpreter)
  CBTEMULATOR       Google's emulator (default: the gcloud SDK path, then `cbtemulator` on PATH)
  CHUNKEDGRAPH_BIN  our binary (default: target/debug/chunkedgraph); a path, or a command line
                    such as "cargo run -q -p chunkedgraph --"
  DIFF_OUT          where outputs and server logs go (default: target/differential)

--self-check runs a second cbtemulator in place of ours: the two must agree, which shows the
scenario's canonical form does not depend on run-to-run differences.
--keep leaves the data directory of our emulator in DIFF_OUT.
"""

import difflib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CBT_DEFAULT = "/usr/lib/google-cloud-sdk/platform/bigtable-emulator/cbtemulator"
START_TIMEOUT_S = 60
SCENARIO_TIMEOUT_S = 180  # the scenario takes seconds; more means a hang
SHOWN_STEPS = 6


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    print("differential: 0 passed, 1 failed")
    sys.exit(1)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


class Server:
    """One emulator process in its own process group, with its output in a log file."""

    def __init__(self, name, argv, port, log_path):
        self.name, self.port, self.log_path = name, port, log_path
        self.log = open(log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so stop() also ends children, e.g. under `cargo run`
                env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn")),
            )
        except OSError as e:
            self.log.close()
            fail(f"could not start {name} ({shlex.join(argv)}): {e}")

    def wait_listening(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                fail(f"{self.name} exited with status {self.proc.returncode} before listening; "
                     f"its log ({self.log_path}):\n{tail(self.log_path)}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        fail(f"{self.name} did not accept connections on 127.0.0.1:{self.port} within {START_TIMEOUT_S} s; "
             f"its log ({self.log_path}):\n{tail(self.log_path)}")

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self.log.close()


def run_scenario(python, server, out_dir, label):
    env = dict(os.environ, BIGTABLE_EMULATOR_HOST=f"127.0.0.1:{server.port}")
    out_path = os.path.join(out_dir, f"{label}.json")
    err_path = os.path.join(out_dir, f"{label}.stderr")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        try:
            res = subprocess.run(
                [python, "-W", "ignore", os.path.join(HERE, "differential.py"), "--verbose"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, timeout=SCENARIO_TIMEOUT_S,
            )
            rc = res.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    with open(out_path) as f:
        text = f.read()
    return rc, text, err_path


def parse_steps(text):
    """{step name: [result lines]} in scenario order, or None if text is not the scenario's JSON."""
    try:
        steps = json.loads(text)
        out = {}
        for st in steps:
            r = st["result"]
            lines = [json.dumps(x, sort_keys=True) for x in r] if isinstance(r, list) and r else [json.dumps(r, sort_keys=True)]
            out[st["step"]] = lines
        return out
    except (ValueError, KeyError, TypeError):
        return None


def clip(line, at, width=220):
    """The part of a long line around position `at`, where it first differs from its pair."""
    if len(line) <= width:
        return line
    start = max(0, min(at - 60, len(line) - width))
    head = line[:40] + " ... " if start > 40 else line[:start]  # keeps a row's key in view
    return head + line[start:start + width] + ("..." if start + width < len(line) else "")


def step_diff(old, new, limit=12):
    """Changed lines of one step's result: '-' cbtemulator, '+' ours."""
    out = []
    sm = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            continue
        olds, news = old[i1:i2], new[j1:j2]
        for k in range(max(len(olds), len(news))):
            o = olds[k] if k < len(olds) else None
            n = news[k] if k < len(news) else None
            at = 0
            if o is not None and n is not None:
                at = next((x for x, (c1, c2) in enumerate(zip(o, n)) if c1 != c2), min(len(o), len(n)))
            if o is not None:
                out.append("    - " + clip(o, at))
            if n is not None:
                out.append("    + " + clip(n, at))
    if len(out) > limit:
        out = out[:limit] + [f"    ... {len(out) - limit} more changed lines"]
    return out


def resolve_ours():
    spec = os.environ.get("CHUNKEDGRAPH_BIN") or os.path.join(ROOT, "target", "debug", "chunkedgraph")
    if os.path.exists(spec):
        return [os.path.abspath(spec)]
    argv = shlex.split(spec)
    if argv and shutil.which(argv[0]):
        return argv
    fail(f"our emulator binary {spec} was not found; build it with: cargo build -p chunkedgraph")


def resolve_cbt():
    cbt = os.environ.get("CBTEMULATOR")
    if cbt:
        if not os.access(cbt, os.X_OK):
            fail(f"CBTEMULATOR={cbt} is not an executable; install it with: "
                 "apt-get install google-cloud-cli-bigtable-emulator")
        return cbt
    if os.access(CBT_DEFAULT, os.X_OK):
        return CBT_DEFAULT
    found = shutil.which("cbtemulator")
    if found:
        return found
    fail("Google's Bigtable emulator (cbtemulator) was not found; "
         "install it with: apt-get install google-cloud-cli-bigtable-emulator")


def default_python():
    venv = os.path.join(ROOT, ".venv", "bin", "python")
    return os.environ.get("PYTHON") or (venv if os.path.exists(venv) else sys.executable)


def main():
    args = sys.argv[1:]
    unknown = [a for a in args if a not in ("--self-check", "--keep")]
    if unknown:
        fail(f"unknown arguments {unknown}; see the docstring of {__file__}")
    self_check = "--self-check" in args
    keep = "--keep" in args

    python = default_python()
    probe = subprocess.run([python, "-c", "import google.cloud.bigtable"], capture_output=True, text=True)
    if probe.returncode != 0:
        fail(f"{python} cannot import google.cloud.bigtable; install tests/python/requirements.txt "
             f"(./scripts/test.sh makes .venv with it):\n{probe.stderr.strip()[-500:]}")
    cbt = resolve_cbt()
    ours_name = "cbtemulator (second instance)" if self_check else "chunkedgraph emulator"
    ours_argv = None if self_check else resolve_ours()

    out_dir = os.path.abspath(os.environ.get("DIFF_OUT") or os.path.join(ROOT, "target", "differential"))
    os.makedirs(out_dir, exist_ok=True)
    data_dir = tempfile.mkdtemp(prefix="data-", dir=out_dir) if keep else tempfile.mkdtemp(prefix="cg-differential-")

    servers = []
    try:
        gport = free_port()
        google = Server("cbtemulator", [cbt, "-host", "127.0.0.1", "-port", str(gport)], gport,
                        os.path.join(out_dir, "cbtemulator.log"))
        servers.append(google)
        oport = free_port()
        if self_check:
            argv = [cbt, "-host", "127.0.0.1", "-port", str(oport)]
        else:
            argv = ours_argv + ["emulator", "--data-dir", data_dir, "--listen", f"127.0.0.1:{oport}"]
        ours = Server(ours_name, argv, oport, os.path.join(out_dir, "ours.log"))
        servers.append(ours)
        google.wait_listening()
        ours.wait_listening()

        g_rc, g_text, g_err = run_scenario(python, google, out_dir, "cbtemulator")
        if g_rc != 0:
            fail(f"the scenario itself failed against cbtemulator (status {g_rc}), so nothing was compared; "
                 f"{g_err}:\n{tail(g_err, 40)}")
        o_rc, o_text, o_err = run_scenario(python, ours, out_dir, "ours")
    finally:
        for s in servers:
            s.stop()
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)

    expected = parse_steps(g_text)
    if expected is None:
        fail(f"the scenario's output against cbtemulator is not the expected JSON: {out_dir}/cbtemulator.json")
    got = parse_steps(o_text) if o_rc == 0 else None
    if got is None:
        # The scenario stopped against ours: a crash or a hang, not a recorded API error.
        print(f"the scenario failed against {ours_name} (status {o_rc}); {o_err}:\n{tail(o_err, 25)}")
        print(f"differential: 0 passed, {len(expected)} failed")
        sys.exit(1)

    differing = [name for name in expected if got.get(name) != expected[name]]
    extra = [name for name in got if name not in expected]
    passed = len(expected) - len(differing)
    failed = len(differing) + len(extra)
    if failed:
        print(f"{failed} of {len(expected)} steps differ; '-' is cbtemulator, '+' is {ours_name}:")
        for name in differing[:SHOWN_STEPS]:
            if name not in got:
                print(f"  step {name!r}: missing from ours")
                continue
            print(f"  step {name!r}:")
            print("\n".join(step_diff(expected[name], got[name])))
        if len(differing) > SHOWN_STEPS:
            print(f"  ... and {len(differing) - SHOWN_STEPS} more: " + "; ".join(differing[SHOWN_STEPS:]))
        for name in extra:
            print(f"  step {name!r}: only in ours")
        print(f"full outputs and server logs: {out_dir} (diff cbtemulator.json ours.json)")
        print(f"differential: {passed} passed, {failed} failed")
        sys.exit(1)
    print(f"differential: {passed} passed, 0 failed")


if __name__ == "__main__":
    main()
