"""volume-bench and volume-verify against six real storage nodes on loopback:
10,000 records with a log; then a long-running bench while storage nodes die
with kill -9 — one whole AZ (VDL keeps advancing), then a third node (VDL
stops, the bench waits without an error), then `meridian up` brings them
back (VDL advances again); SIGTERM ends the bench cleanly; after kill -9 of
all six and a restart, volume-verify recovers the volume and finds every
logged page as the log says. Then, with storage nodes that may hold only
1,500 records per PG in memory, 20,000 records on one PG: writes go on (the
nodes forget what is materialized, complete and below the VDL), a node killed
meanwhile catches up from what its peers serve from their logs, and after
kill -9 of all six, a restart that reads the log only from the key the
metadata recorded, and recovery, volume-verify passes."""

import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import mtest  # noqa: E402

BIN = sys.argv[1]


def kill9(env, ident):
    pid = env.pids()[ident]
    assert mtest.pid_is(pid, ident), f"{ident} (pid {pid}) is not running"
    os.kill(pid, signal.SIGKILL)
    mtest.wait_for(f"{ident} gone", lambda: not mtest.pid_is(pid, ident), timeout=10)


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
        assert mtest.log_vdl(log) >= out["first_lsn"] + 9999, (mtest.log_vdl(log), out)
        with open(log) as f:
            first = f.readline().split()
        assert first[0] == "recovered", first

        err = open(os.path.join(env.dir, "bench.err"), "w+")
        bench = subprocess.Popen(bench_args(env, "--duration-ms", "120000", "--inflight", "16",
                                            "--log", log, "--json"),
                                 stdout=subprocess.PIPE, stderr=err, text=True)
        mtest.vdl_advances(log, 500, "all six up")

        kill9(env, "r1-s1")  # both nodes of AZ a: a write quorum (4 of 6) remains
        kill9(env, "r1-s2")
        mtest.vdl_advances(log, 500, "AZ a down")

        kill9(env, "r1-s3")  # AZ a plus one: no write quorum
        time.sleep(1.0)      # what was in flight settles
        stalled = mtest.log_vdl(log)
        time.sleep(3.0)
        assert mtest.log_vdl(log) == stalled, f"vdl moved from {stalled} to {mtest.log_vdl(log)} without a quorum"
        assert bench.poll() is None, "volume-bench exited without a write quorum"
        err.seek(0)
        text = err.read()
        assert "level=error" not in text and "meridian volume-bench:" not in text, text[-2000:]

        r = env.cli("up", "--role", "storage")
        assert r.stdout.count("starting") == 3, r.stdout
        mtest.vdl_advances(log, 500, "after the restart")

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


HELD_MAX = 1500


def node_status(env, addrs, ident):
    c = subprocess.run(["curl", "-sS", "--max-time", "10", *env.curl_args(),
                        env.url(addrs[ident], "/v1/status")], capture_output=True, text=True)
    return json.loads(c.stdout) if c.returncode == 0 and c.stdout.startswith("{") else None


def test_forgetting(tls):
    env = mtest.Env(BIN, tls=tls)
    os.environ["MERIDIAN_STORAGE_HELD_MAX"] = str(HELD_MAX)
    try:
        r = env.cli("up", "--role", "storage")
        assert "6 processes healthy" in r.stdout, r.stdout
        addrs = {p["id"]: p["address"] for p in env.status()["processes"]}
        log = os.path.join(env.dir, "bench.log")
        # --pages 64: every record goes to PG 0, 8,000 records each round
        args = ["--records", "8000", "--inflight", "64", "--pages", "64", "--log", log, "--json"]
        r = env.cli("volume-bench", *args, timeout=120)
        out = json.loads(r.stdout)
        assert out["records"] == 8000 and out["stopped_by"] == "records", out

        def pg0_of(ident):
            st = node_status(env, addrs, ident)
            return next((p for p in st["pgs"] if p["pg"] == 0), None) if st else None

        for i in range(1, 7):
            mtest.wait_for(f"r1-s{i} forgets", lambda: (pg0_of(f"r1-s{i}") or {}).get(
                "forgotten", 0) > 0, timeout=20)
            p = pg0_of(f"r1-s{i}")
            assert p["records"] <= HELD_MAX, p

        # one node down while the others take more; back, it fills its gap from the
        # peers, which serve what they forgot from their logs
        kill9(env, "r1-s1")
        r = env.cli("volume-bench", *args, timeout=120)
        assert json.loads(r.stdout)["records"] == 8000, r.stdout
        env.cli("up", "--role", "storage")
        # the next writer's fence lets it take the newer epoch's records from its peers
        r = env.cli("volume-bench", *args[:1], "4000", *args[2:], timeout=120)
        assert json.loads(r.stdout)["records"] == 4000, r.stdout
        target = pg0_of("r1-s2")["scl"]
        mtest.wait_for("r1-s1 catches up from its peers' logs",
                       lambda: (pg0_of("r1-s1") or {}).get("scl", 0) >= target, timeout=60)

        for i in range(1, 7):
            kill9(env, f"r1-s{i}")
        env.cli("up", "--role", "storage")
        for i in range(1, 7):  # the log is read back from the recorded key start on
            p = pg0_of(f"r1-s{i}")
            assert p["forgotten"] > 0 and p["records"] <= HELD_MAX, p
            with open(os.path.join(env.data, f"r1-s{i}", "meridiand.log")) as f:
                replayed = [l for l in f if "event=replayed" in l][-1]
            fields = dict(kv.split("=", 1) for kv in replayed.split() if "=" in kv)
            assert int(fields["from_key"]) > 1 and int(fields["entries"]) < 10000, replayed
        r = env.cli("volume-verify", "--log", log, "--json", check=False, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        out = json.loads(r.stdout)
        assert out["ok"] and out["mismatches"] == 0 and out["pages"] > 0, out
        assert out["recovered_vdl"] >= out["logged_vdl"], out
        assert not env.sanitizer_reports(), env.sanitizer_reports()
    finally:
        del os.environ["MERIDIAN_STORAGE_HELD_MAX"]
        env.cleanup()


mtest.run_tests([
    ("bench, AZ+1 failure, restart, verify (tls)", lambda: test_bench_faults_verify(True)),
    ("held_max 1500: 20,000 records, a lagging node, restart, verify (no tls)",
     lambda: test_forgetting(False)),
])
