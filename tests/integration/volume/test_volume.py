"""volume-bench and volume-verify against six real storage nodes on loopback:
10,000 records with a log; then a long-running bench while storage nodes die
with kill -9 — one whole AZ (VDL keeps advancing), then a third node (VDL
stops, the bench waits without an error), then `meridian up` brings them
back (VDL advances again); SIGTERM ends the bench cleanly; after kill -9 of
all six and a restart, volume-verify recovers the volume and finds every
logged page as the log says."""

import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import mtest  # noqa: E402

BIN = sys.argv[1]


def log_vdl(path):
    """Highest `vdl N` in the bench log (0 when none yet)."""
    best = 0
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("vdl "):
                    best = max(best, int(line.split()[1]))
    except OSError:
        pass
    return best


def kill9(env, ident):
    pid = env.pids()[ident]
    assert mtest.pid_is(pid, ident), f"{ident} (pid {pid}) is not running"
    os.kill(pid, signal.SIGKILL)
    mtest.wait_for(f"{ident} gone", lambda: not mtest.pid_is(pid, ident), timeout=10)


def vdl_advances(path, by, what, timeout=20.0):
    start = log_vdl(path)
    mtest.wait_for(f"vdl to advance by {by} ({what}; it was {start})",
                   lambda: log_vdl(path) >= start + by, timeout=timeout)


def bench_args(env, *extra):
    return [os.path.join(BIN, "meridian"), "volume-bench", env.topo, "--data", env.data, *extra]


def test_bench_faults_verify(tls):
    env = mtest.Env(BIN, tls=tls)
    bench = None
    try:
        # the region's writer would claim the volume too: storage nodes only
        r = env.cli("up", "--role", "storage")
        assert "6 processes healthy" in r.stdout, r.stdout
        log = os.path.join(env.dir, "bench.log")

        r = env.cli("volume-bench", "--records", "10000", "--inflight", "64", "--log", log,
                    "--json", timeout=120)
        out = json.loads(r.stdout)
        assert out["records"] == 10000 and out["stopped_by"] == "records", out
        assert log_vdl(log) >= out["first_lsn"] + 9999, (log_vdl(log), out)
        with open(log) as f:
            first = f.readline().split()
        assert first[0] == "recovered", first

        err = open(os.path.join(env.dir, "bench.err"), "w+")
        bench = subprocess.Popen(bench_args(env, "--duration-ms", "120000", "--inflight", "16",
                                            "--log", log, "--json"),
                                 stdout=subprocess.PIPE, stderr=err, text=True)
        vdl_advances(log, 500, "all six up")

        kill9(env, "r1-s1")  # both nodes of AZ a: a write quorum (4 of 6) remains
        kill9(env, "r1-s2")
        vdl_advances(log, 500, "AZ a down")

        kill9(env, "r1-s3")  # AZ a plus one: no write quorum
        time.sleep(1.0)      # what was in flight settles
        stalled = log_vdl(log)
        time.sleep(3.0)
        assert log_vdl(log) == stalled, f"vdl moved from {stalled} to {log_vdl(log)} without a quorum"
        assert bench.poll() is None, "volume-bench exited without a write quorum"
        err.seek(0)
        text = err.read()
        assert "level=error" not in text and "meridian volume-bench:" not in text, text[-2000:]

        r = env.cli("up", "--role", "storage")
        assert r.stdout.count("starting") == 3, r.stdout
        vdl_advances(log, 500, "after the restart")

        bench.send_signal(signal.SIGTERM)
        stdout, _ = bench.communicate(timeout=30)
        assert bench.returncode == 0, (bench.returncode, stdout)
        out = json.loads(stdout)
        assert out["stopped_by"] == "signal" and out["records"] > 0, out
        bench = None

        for ident in ("r1-s1", "r1-s2", "r1-s3", "r1-s4", "r1-s5", "r1-s6"):
            kill9(env, ident)
        env.cli("up", "--role", "storage")
        r = env.cli("volume-verify", "--log", log, "--json", check=False, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        out = json.loads(r.stdout)
        assert out["ok"] and out["mismatches"] == 0 and out["pages"] > 0, out
        assert out["recovered_vdl"] >= out["logged_vdl"], out

        # a log that disagrees with the volume is caught, naming the page
        with open(log, "a") as f:
            f.write(f"vdl {out['recovered_vdl'] + 1}\n")
        r = env.cli("volume-verify", "--log", log, check=False, timeout=120)
        assert r.returncode == 1 and "below the logged vdl" in r.stderr, r.stdout + r.stderr
        assert not env.sanitizer_reports(), env.sanitizer_reports()
    finally:
        if bench is not None and bench.poll() is None:
            bench.kill()
            bench.wait()
        env.cleanup()


mtest.run_tests([
    ("bench, AZ+1 failure, restart, verify (tls)", lambda: test_bench_faults_verify(True)),
])
