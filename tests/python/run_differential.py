"""Runs differential.py against Google's emulator and ours, and diffs the outputs.

Exits non-zero on any difference. Environment: PYTHON (default: this interpreter),
CBTEMULATOR (default: the gcloud SDK path), CHUNKEDGRAPH_BIN (default: target/debug/chunkedgraph).
"""

import difflib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CBT_DEFAULT = "/usr/lib/google-cloud-sdk/platform/bigtable-emulator/cbtemulator"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, name):
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{name} exited before listening (status {proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{name} did not listen on port {port} within 30 s")


def run_scenario(name, port):
    env = dict(os.environ, BIGTABLE_EMULATOR_HOST=f"127.0.0.1:{port}")
    python = os.environ.get("PYTHON", sys.executable)
    res = subprocess.run(
        [python, "-W", "ignore", os.path.join(HERE, "differential.py")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    if res.returncode != 0:
        sys.exit(f"the scenario failed against {name}:\n{res.stderr[-4000:]}")
    return res.stdout


def main():
    cbt = os.environ.get("CBTEMULATOR", CBT_DEFAULT)
    if not os.path.exists(cbt):
        cbt = shutil.which("cbtemulator") or ""
    if not cbt:
        sys.exit("cbtemulator not found; install it with: apt-get install google-cloud-cli-bigtable-emulator")
    ours_bin = os.environ.get("CHUNKEDGRAPH_BIN", os.path.join(ROOT, "target", "debug", "chunkedgraph"))
    if not os.path.exists(ours_bin):
        sys.exit(f"{ours_bin} not found; build it with: cargo build -p chunkedgraph")

    procs = []
    try:
        gport = free_port()
        google = subprocess.Popen([cbt, "-host", "127.0.0.1", "-port", str(gport)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(google)
        wait_listening(gport, google, "cbtemulator")
        data_dir = tempfile.mkdtemp(prefix="cg-differential-")
        oport = free_port()
        ours = subprocess.Popen([ours_bin, "emulator", "--data-dir", data_dir, "--listen", f"127.0.0.1:{oport}"],
                                stdout=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="warn"))
        procs.append(ours)
        wait_listening(oport, ours, "chunkedgraph emulator")

        expected = run_scenario("cbtemulator", gport)
        got = run_scenario("chunkedgraph emulator", oport)
    finally:
        for p in procs:
            p.kill()
            p.wait()

    steps = expected.count('"step"')
    if expected != got:
        diff = difflib.unified_diff(expected.splitlines(), got.splitlines(), "cbtemulator", "ours", lineterm="")
        print("\n".join(diff))
        print(f"differential: 0 passed, 1 failed ({steps} steps)")
        sys.exit(1)
    print(f"differential: {steps} steps identical")
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
