"""Helpers for Meridian's integration tests: free loopback ports, topology
files, running the CLI, reading pid files, and cleaning up every process a
test started (by pid, never by name) and every folder it made."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback


def free_ports(n):
    """n distinct loopback ports that were free a moment ago (bound to 0, then closed)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def region_yaml(name, ports, readers=2, indent="  "):
    """One region's YAML block; ports is a list of at least 13 + readers free ports."""
    p = iter(ports)
    lines = [f"- name: {name}", "  azs: [a, b, c]", "  storage:"]
    for i, az in enumerate("aabbcc"):
        lines.append(f"    - {{id: {name}-s{i + 1}, az: {az}, address: 127.0.0.1:{next(p)}}}")
    lines.append("  instances:")
    lines.append(f"    - {{id: {name}-w1, role: writer, az: a, address: 127.0.0.1:{next(p)}}}")
    for r in range(readers):
        az = "bca"[r % 3]
        lines.append(f"    - {{id: {name}-r{r + 1}, role: reader, az: {az}, "
                     f"address: 127.0.0.1:{next(p)}, priority: {r + 1}}}")
    lines.append(f"  agent: {{id: {name}-agent, az: a, address: 127.0.0.1:{next(p)}}}")
    lines.append("  routers:")
    custom = f", custom: {{analytics: 127.0.0.1:{next(p)}}}" if readers >= 2 else ""
    lines.append(f"    - {{id: {name}-router, az: a, address: 127.0.0.1:{next(p)}, "
                 f"cluster: 127.0.0.1:{next(p)}, reader: 127.0.0.1:{next(p)}, "
                 f"global_writer: 127.0.0.1:{next(p)}{custom}}}")
    if readers >= 2:
        # "analytics": exactly the last reader.
        lines.append("  custom_endpoints:")
        lines.append(f"    - {{name: analytics, members: [{name}-r{readers}]}}")
    return "\n".join(indent + l for l in lines) + "\n"


def topology_yaml(name, regions, tls, pg_size="1MiB", readers=2):
    """A whole topology with the given region names, on fresh free ports."""
    text = (f"name: {name}\nprimary: {regions[0]}\nsettings:\n"
            f"  tls: {'true' if tls else 'false'}\n  pg_size: {pg_size}\n"
            f"regions:\n")
    n = 13 + readers
    ports = free_ports(n * len(regions))  # at once: no port twice across regions
    for i, r in enumerate(regions):
        text += region_yaml(r, ports[i * n:(i + 1) * n], readers=readers)
    return text


class Env:
    """A temporary folder with a topology, plus the CLI bound to it."""

    def __init__(self, bindir, name="t", regions=("r1",), tls=False, readers=2):
        self.bindir = bindir
        self.dir = tempfile.mkdtemp(prefix="mrd-it-")
        self.data = os.path.join(self.dir, "data")
        self.topo = os.path.join(self.dir, "topology.yaml")
        self.tls = tls
        with open(self.topo, "w") as f:
            f.write(topology_yaml(name, list(regions), tls, readers=readers))
        self.ids = []

    def cli(self, *args, check=True, timeout=60):
        cmd = [os.path.join(self.bindir, "meridian"), args[0], self.topo, "--data", self.data,
               *args[1:]]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
        return r

    def status(self):
        return json.loads(self.cli("status", "--json").stdout)

    def pids(self):
        """pid of every process that has a pid file, by id."""
        out = {}
        if not os.path.isdir(self.data):
            return out
        for ident in os.listdir(self.data):
            path = os.path.join(self.data, ident, "meridiand.pid")
            try:
                with open(path) as f:
                    out[ident] = int(f.read().strip())
            except (OSError, ValueError):
                pass
        return out

    def curl_args(self):
        if not self.tls:
            return ["--http2-prior-knowledge"]
        certs = os.path.join(self.data, "certs")
        return ["--http2", "--cacert", f"{certs}/ca.crt", "--cert", f"{certs}/cli.crt",
                "--key", f"{certs}/cli.key"]

    def url(self, address, path):
        return f"{'https' if self.tls else 'http'}://{address}{path}"

    def sanitizer_reports(self):
        """Lines of sanitizer reports found in any process log."""
        found = []
        if not os.path.isdir(self.data):
            return found
        for ident in os.listdir(self.data):
            log = os.path.join(self.data, ident, "meridiand.log")
            if not os.path.exists(log):
                continue
            with open(log, errors="replace") as f:
                for line in f:
                    if ("AddressSanitizer" in line or "LeakSanitizer" in line
                            or "runtime error:" in line):
                        found.append(f"{ident}: {line.strip()}")
        return found

    def cleanup(self):
        """Ends every process this test's data folder knows of, by pid; removes the folder."""
        for ident, pid in self.pids().items():
            if pid_is(pid, ident):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if os.environ.get("MRD_TEST_KEEP"):  # for a post-mortem: logs and data stay
            print(f"kept {self.dir}", file=sys.stderr)
            return
        shutil.rmtree(self.dir, ignore_errors=True)


def proc_runs(pid, program, marker):
    """True when pid is alive (not a zombie), runs `program` (its argv[0]'s base name) and
    has `marker` among its arguments."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    if state in ("Z", "X"):
        return False
    return os.path.basename(args[0]) == program.encode() and marker.encode() in args


def log_vdl(path):
    """Highest `vdl N` in a `meridian volume-bench --log` file (0 when none yet)."""
    best = 0
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("vdl "):
                    best = max(best, int(line.split()[1]))
    except OSError:
        pass
    return best


def vdl_advances(path, by, what, timeout=20.0):
    """Waits until the volume-bench log at path shows VDL `by` above where it is now."""
    start = log_vdl(path)
    wait_for(f"vdl to advance by {by} ({what}; it was {start})",
             lambda: log_vdl(path) >= start + by, timeout=timeout)


def pid_is(pid, ident):
    """True when pid is a live meridiand started for ident."""
    return proc_runs(pid, "meridiand", ident)


def wait_for(what, cond, timeout=20.0, interval=0.05):
    """Polls cond() until it is true; raises with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def run_tests(tests):
    """Runs each (name, fn) and prints 'N passed, N failed'; exits non-zero on failure."""
    passed = failed = 0
    for name, fn in tests:
        t0 = time.monotonic()
        try:
            fn()
            passed += 1
            print(f"PASS {name} ({time.monotonic() - t0:.1f} s)", flush=True)
        except Exception as e:  # report every failure, keep going
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
