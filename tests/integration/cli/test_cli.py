"""meridian check / up / status / down against real meridiand processes on
loopback: start a whole region, kill -9 one process, `up` restarts only it,
`down` leaves nothing running; the same over TLS with curl as the client."""

import os
import signal
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import mtest  # noqa: E402

BIN = sys.argv[1]
SRC = sys.argv[2]


def test_check():
    env = mtest.Env(BIN)
    try:
        r = env.cli("check")
        assert "r1-s6" in r.stdout and ": ok" in r.stdout, r.stdout
        for shipped in ("local-1region", "local-2region", "local-3region"):
            r = subprocess.run([f"{BIN}/meridian", "check", f"{SRC}/regions/{shipped}.yaml"],
                               capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
        with open(env.topo, "a") as f:
            f.write("bogus_key: 1\n")
        r = env.cli("check", check=False)
        assert r.returncode == 1, r
        lines = open(env.topo).read().count("\n")
        assert f"topology.yaml:{lines}:" in r.stderr and "bogus_key" in r.stderr, r.stderr
    finally:
        env.cleanup()


def curl(env, address, path, extra=()):
    return subprocess.run(["curl", "-sS", "--max-time", "10", "-w", "\n%{http_version}",
                           *env.curl_args(), *extra, env.url(address, path)],
                          capture_output=True, text=True)


def address_of(env, ident):
    st = env.status()
    return next(p["address"] for p in st["processes"] if p["id"] == ident)


def up_kill_up_down(tls):
    env = mtest.Env(BIN, tls=tls)
    try:
        r = env.cli("up")
        assert "11 processes healthy" in r.stdout, r.stdout
        st = env.status()
        assert all(p["state"] == "running" for p in st["processes"]), st
        before = env.pids()
        assert len(before) == 11, before

        os.kill(before["r1-s3"], signal.SIGKILL)
        mtest.wait_for("r1-s3 gone", lambda: not mtest.pid_is(before["r1-s3"], "r1-s3"))
        st = {p["id"]: p for p in env.status()["processes"]}
        assert st["r1-s3"]["state"] == "stopped", st["r1-s3"]
        r = env.cli("up")
        assert "starting r1-s3" in r.stdout and r.stdout.count("starting") == 1, r.stdout
        after = env.pids()
        for ident, pid in before.items():
            if ident != "r1-s3":
                assert after[ident] == pid, f"{ident} restarted needlessly"
        assert after["r1-s3"] != before["r1-s3"]

        addr = address_of(env, "r1-w1")
        c = curl(env, addr, "/v1/status")
        assert c.returncode == 0 and c.stdout.endswith("\n2"), (c.stdout, c.stderr)
        assert '"role":"writer"' in c.stdout, c.stdout
        c = curl(env, addr, "/metrics")
        assert "meridian_http_requests_total" in c.stdout, c.stdout
        c = curl(env, addr, "/nope")
        assert '"code":"not_found"' in c.stdout, c.stdout
        if tls:
            certs = os.path.join(env.data, "certs")
            bare = subprocess.run(["curl", "-sS", "--max-time", "10", "--http2", "--cacert",
                                   f"{certs}/ca.crt", env.url(addr, "/v1/status")],
                                  capture_output=True, text=True)
            assert bare.returncode != 0, "a client without a certificate was served"

        r = env.cli("down")
        assert "11 processes stopped" in r.stdout, r.stdout
        for ident, pid in after.items():
            assert not mtest.pid_is(pid, ident), f"{ident} still running"
        st = env.status()
        assert all(p["state"] == "stopped" for p in st["processes"]), st
        reports = env.sanitizer_reports()
        assert not reports, reports
        env.cli("down", "--purge")
        assert not os.path.exists(env.data), os.listdir(env.data)
    finally:
        env.cleanup()


def test_up_kill_up_down_cleartext():
    up_kill_up_down(tls=False)


def test_up_kill_up_down_tls():
    up_kill_up_down(tls=True)


def test_up_reports_a_process_that_cannot_start():
    env = mtest.Env(BIN)
    blocker = socket.socket()
    try:
        st = env.status()
        addr = next(p["address"] for p in st["processes"] if p["id"] == "r1-s2")
        host, port = addr.rsplit(":", 1)
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind((host, int(port)))
        blocker.listen(1)
        r = env.cli("up", "--timeout-ms", "10000", check=False)
        assert r.returncode == 1, r.stdout
        assert "r1-s2" in r.stderr and "exited" in r.stderr, r.stderr
        env.cli("down")
    finally:
        blocker.close()
        env.cleanup()


def test_h2load_against_a_process():
    env = mtest.Env(BIN)
    try:
        env.cli("up")
        addr = address_of(env, "r1-s1")
        r = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "16",
                            f"http://{addr}/v1/status"], capture_output=True, text=True,
                           timeout=60)
        assert "2000 succeeded" in r.stdout, r.stdout + r.stderr
        env.cli("down")
    finally:
        env.cleanup()


mtest.run_tests([
    ("check", test_check),
    ("up_kill_up_down_cleartext", test_up_kill_up_down_cleartext),
    ("up_kill_up_down_tls", test_up_kill_up_down_tls),
    ("up_reports_a_process_that_cannot_start", test_up_reports_a_process_that_cannot_start),
    ("h2load_against_a_process", test_h2load_against_a_process),
])
