"""Storage nodes whose disk fails, through tools/faultfs (LD_PRELOAD), under a
volume-bench write load on six real storage nodes (docs/torture-disk.md).

Every node runs with the shim, each with a control file of its own; a fault is
set by writing a word into a node's control file. (a) fdatasync fails (EIO) on
r1-s1: the node logs `log_failed` naming fdatasync, the error and the file,
acknowledges nothing more (its durable LSNs freeze), and the VDL goes on with
five nodes; healed and restarted, it catches up with its peers. (b) the same with
writes failing for a full disk (ENOSPC) on r1-s3. (c) two nodes failing at once
(4 of 6 left): the VDL goes on; a third: the VDL stops, the bench waits without
an error, and after heal and restart the VDL moves again. At the end, after kill
-9 of all six and a restart, volume-verify recovers the volume and finds every
page the bench logged as acknowledged."""

import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import mtest  # noqa: E402

BIN = sys.argv[1]
SHIM = sys.argv[2]
NODES = [f"r1-s{i}" for i in range(1, 7)]

WRAPPER = """#!/bin/sh
# WRAPPER NODE-ID REGION AZ meridiand ARGS...: storage nodes run with the faultfs shim,
# failing only their own data files, each switched by its own control file.
id=$1
shift 3
case "$id" in
  r1-s*)
    export LD_PRELOAD="{shim}${{LD_PRELOAD:+:$LD_PRELOAD}}"
    export MERIDIAN_FAULTFS_DIR="{data}/$id/seglog:{data}/$id/pages:{data}/$id/meta.tmp"
    export MERIDIAN_FAULTFS_CTL="{dir}/ctl-$id"
    # the shim is not instrumented: an ASan build must not insist on coming first
    export ASAN_OPTIONS="${{ASAN_OPTIONS:+$ASAN_OPTIONS:}}verify_asan_link_order=0"
    ;;
esac
exec "$@"
"""


class Cluster:
    def __init__(self):
        self.env = mtest.Env(BIN, tls=False)
        self.wrapper = os.path.join(self.env.dir, "spawn-wrapper.sh")
        with open(self.wrapper, "w") as f:
            f.write(WRAPPER.format(shim=SHIM, data=self.env.data, dir=self.env.dir))
        os.chmod(self.wrapper, 0o755)
        os.environ["MERIDIAN_SPAWN_WRAPPER"] = self.wrapper
        self.addrs = {}

    def up(self):
        r = self.env.cli("up", "--role", "storage")
        self.addrs = {p["id"]: p["address"] for p in self.env.status()["processes"]}
        return r

    def fault(self, ident, words):
        """Sets the faults of ident's disk ("" heals it)."""
        path = os.path.join(self.env.dir, f"ctl-{ident}")
        with open(path + ".tmp", "w") as f:
            f.write(words)
        os.replace(path + ".tmp", path)

    def status(self, ident):
        c = subprocess.run(["curl", "-sS", "--max-time", "10", *self.env.curl_args(),
                            self.env.url(self.addrs[ident], "/v1/status")],
                           capture_output=True, text=True)
        return json.loads(c.stdout) if c.returncode == 0 and c.stdout.startswith("{") else None

    def durable(self, ident):
        """{pg: durable LSN} of a node."""
        return {p["pg"]: p["durable"] for p in self.status(ident)["pgs"]}

    def log(self, ident):
        with open(os.path.join(self.env.data, ident, "meridiand.log"), errors="replace") as f:
            return f.read()

    def stop(self, ident):
        """SIGTERM to a node (a failed node keeps running, refusing writes), by pid."""
        pid = self.env.pids()[ident]
        assert mtest.pid_is(pid, ident), f"{ident} (pid {pid}) is not running"
        os.kill(pid, signal.SIGTERM)
        mtest.wait_for(f"{ident} gone", lambda: not mtest.pid_is(pid, ident), timeout=15)

    def kill9(self, ident):
        pid = self.env.pids()[ident]
        assert mtest.pid_is(pid, ident), f"{ident} (pid {pid}) is not running"
        os.kill(pid, signal.SIGKILL)
        mtest.wait_for(f"{ident} gone", lambda: not mtest.pid_is(pid, ident), timeout=10)

    def cleanup(self):
        del os.environ["MERIDIAN_SPAWN_WRAPPER"]
        self.env.cleanup()


def fail_node(c, log, bench_err, ident, words, call, errtext):
    """Sets a fault on ident while the bench runs; checks that the node fails its log with
    a clear line, acknowledges nothing after it, stays up, and that writes go on."""
    c.fault(ident, words)
    mtest.wait_for(f"{ident} reports log_failed",
                   lambda: (c.status(ident) or {}).get("log_failed") is True, timeout=20)
    text = c.log(ident)
    lines = [l for l in text.splitlines() if "event=log_failed" in l]
    assert lines, text[-3000:]
    line = lines[0]
    # the first failed call may be the log's or the metadata file's (written as the
    # records below the VDL are forgotten): either names the node's own file
    assert call in line and errtext in line, line
    assert (f"what={call} " in line and f"/{ident}/seglog/seg-" in line) or \
        ("what=metadata " in line and f"/{ident}/meta.tmp:" in line), line
    assert "faultfs: injected" in text, text[-3000:]
    st = c.status(ident)
    assert st["log_failed_reason"], st
    # a sync already under way when another write failed may still complete (what it
    # holds is durable): frozen is what the node holds once two readings agree
    frozen, prev = c.durable(ident), None
    while frozen != prev:
        time.sleep(0.5)
        prev, frozen = frozen, c.durable(ident)
    mtest.vdl_advances(log, 500, f"{ident} failed ({words}), five nodes left", timeout=30.0)
    assert c.durable(ident) == frozen, (frozen, c.durable(ident))
    pid = c.env.pids()[ident]
    assert mtest.pid_is(pid, ident), f"{ident} exited instead of refusing writes"
    bench_err.seek(0)  # the writer saw the refusal (503 log_failed) and dropped the node
    drops = [l for l in bench_err.read().splitlines()
             if "event=vol_node_drop" in l and f"node={ident} " in l and "log failed" in l]
    assert drops, f"volume-bench never saw {ident}'s log_failed"
    return line


def heal_restart(c, log, idents, peer):
    """Heals the faults of idents, stops and restarts them; each catches up with peer."""
    for ident in idents:
        c.fault(ident, "")
        c.stop(ident)
    r = c.up()
    assert r.stdout.count("starting") == len(idents), r.stdout
    for ident in idents:
        st = c.status(ident)
        assert st["log_failed"] is False, st
    mtest.vdl_advances(log, 500, f"{', '.join(idents)} back", timeout=30.0)
    target = c.status(peer)["scl"]
    for ident in idents:
        mtest.wait_for(f"{ident} catches up to scl {target}",
                       lambda: (c.status(ident) or {}).get("scl", 0) >= target, timeout=60)


def test_disk_faults():
    c = Cluster()
    bench = None
    try:
        r = c.up()
        assert "6 processes healthy" in r.stdout, r.stdout
        log = os.path.join(c.env.dir, "bench.log")
        err = open(os.path.join(c.env.dir, "bench.err"), "w+")
        bench = subprocess.Popen([os.path.join(BIN, "meridian"), "volume-bench", c.env.topo,
                                  "--data", c.env.data, "--duration-ms", "300000",
                                  "--inflight", "16", "--log", log, "--json"],
                                 stdout=subprocess.PIPE, stderr=err, text=True)
        mtest.vdl_advances(log, 500, "all six up", timeout=30.0)

        # (a) fdatasync fails on one node
        line = fail_node(c, log, err, "r1-s1", "fsync_eio", "fdatasync", "Input/output error")
        print(f"r1-s1: {line}", flush=True)
        heal_restart(c, log, ["r1-s1"], "r1-s2")

        # (b) the disk of another node is full
        line = fail_node(c, log, err, "r1-s3", "enospc", "write", "No space left on device")
        print(f"r1-s3: {line}", flush=True)
        heal_restart(c, log, ["r1-s3"], "r1-s4")

        # (c) two nodes at once (one per AZ): four of six remain, writes go on
        c.fault("r1-s2", "fsync_eio")
        c.fault("r1-s5", "enospc")
        for ident in ("r1-s2", "r1-s5"):
            mtest.wait_for(f"{ident} reports log_failed",
                           lambda: (c.status(ident) or {}).get("log_failed") is True, timeout=20)
        mtest.vdl_advances(log, 500, "r1-s2 and r1-s5 failed", timeout=30.0)
        # a third: no write quorum; nothing is acknowledged, the bench waits
        c.fault("r1-s6", "fsync_eio")
        mtest.wait_for("r1-s6 reports log_failed",
                       lambda: (c.status("r1-s6") or {}).get("log_failed") is True, timeout=20)
        time.sleep(1.0)  # what was in flight settles
        stalled = mtest.log_vdl(log)
        time.sleep(3.0)
        assert mtest.log_vdl(log) == stalled, f"vdl moved from {stalled} to {mtest.log_vdl(log)} on 3 nodes"
        assert bench.poll() is None, "volume-bench exited without a write quorum"
        heal_restart(c, log, ["r1-s2", "r1-s5", "r1-s6"], "r1-s1")

        err.seek(0)
        text = err.read()
        assert "level=error" not in text and "meridian volume-bench:" not in text, text[-2000:]
        bench.send_signal(signal.SIGTERM)
        stdout, _ = bench.communicate(timeout=30)
        assert bench.returncode == 0, (bench.returncode, stdout)
        out = json.loads(stdout)
        assert out["stopped_by"] == "signal" and out["records"] > 0, out
        bench = None
        print(f"bench: {out['records']} records acknowledged, vdl {mtest.log_vdl(log)}", flush=True)

        # nothing acknowledged is lost: recover from scratch and compare with the log
        for ident in NODES:
            c.kill9(ident)
        c.up()
        r = c.env.cli("volume-verify", "--log", log, "--json", check=False, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        out = json.loads(r.stdout)
        assert out["ok"] and out["mismatches"] == 0 and out["pages"] > 0, out
        assert out["recovered_vdl"] >= out["logged_vdl"], out
        print(f"verify: {out}", flush=True)
        assert not c.env.sanitizer_reports(), c.env.sanitizer_reports()
    finally:
        if bench is not None and bench.poll() is None:
            bench.kill()
            bench.wait()
        c.cleanup()


mtest.run_tests([
    ("fdatasync EIO, ENOSPC, two and three nodes failing; heal, restart, verify",
     test_disk_faults),
])
