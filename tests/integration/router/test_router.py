"""The router's endpoints against real processes on loopback: the cluster and
global writer endpoints reach the writer, the reader endpoint balances over
the readers and skips one that died, a custom endpoint reaches only its
members, and with no reader left the answer is a clear 503."""

import collections
import json
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import mtest  # noqa: E402

BIN = sys.argv[1]


def curl(env, address, path):
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "-D", "-", *env.curl_args(),
                        env.url(address, path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition("\n\n")  # text mode turned \r\n into \n
    status = int(head.split()[1])
    headers = dict(l.split(": ", 1) for l in head.split("\n")[1:] if ": " in l)
    return status, headers, body


def router_status(env):
    st = {p["id"]: p for p in env.status()["processes"]}
    _, _, body = curl(env, st["r1-router"]["address"], "/v1/status")
    return json.loads(body)


def endpoints(env):
    return {e["name"]: e["address"] for e in router_status(env)["endpoints"]}


def backends_up(env, ids):
    up = {b["id"]: b["up"] for b in router_status(env)["backends"]}
    return all(up.get(i) for i in ids)


def run(tls):
    env = mtest.Env(BIN, tls=tls, readers=3)
    try:
        env.cli("up")
        mtest.wait_for("router sees every instance",
                       lambda: backends_up(env, ["r1-w1", "r1-r1", "r1-r2", "r1-r3"]))
        ep = endpoints(env)
        assert set(ep) == {"cluster", "reader", "custom:analytics", "global_writer"}, ep

        for name in ("cluster", "global_writer"):
            status, headers, body = curl(env, ep[name], "/v1/status")
            assert status == 200 and json.loads(body)["id"] == "r1-w1", (name, body)
            assert headers.get("meridian-backend") == "r1-w1", headers

        seen = collections.Counter()
        for _ in range(30):
            status, headers, body = curl(env, ep["reader"], "/v1/status")
            ident = json.loads(body)["id"]
            assert status == 200 and headers["meridian-backend"] == ident
            seen[ident] += 1
        assert set(seen) == {"r1-r1", "r1-r2", "r1-r3"}, seen

        for _ in range(5):
            _, _, body = curl(env, ep["custom:analytics"], "/v1/status")
            assert json.loads(body)["id"] == "r1-r3", body

        # kill -9 one reader: once the router notices, only the others answer,
        # and requests in between are retried on another reader, never failed.
        pids = env.pids()
        os.kill(pids["r1-r1"], signal.SIGKILL)
        for _ in range(40):
            status, _, body = curl(env, ep["reader"], "/v1/status")
            assert status == 200, body
            assert json.loads(body)["id"] in ("r1-r2", "r1-r3"), body

        # The custom endpoint's only member dies: a clear 503, not a hang.
        os.kill(pids["r1-r3"], signal.SIGKILL)
        mtest.wait_for("router sees r1-r3 down", lambda: not backends_up(env, ["r1-r3"]))
        status, _, body = curl(env, ep["custom:analytics"], "/v1/status")
        assert status == 503 and '"code":"unavailable"' in body, (status, body)
        assert "custom:analytics" in body, body

        # A reader comes back: up restarts it and the router uses it again.
        env.cli("up")
        mtest.wait_for("router sees r1-r1 back", lambda: backends_up(env, ["r1-r1", "r1-r3"]))
        seen = collections.Counter()
        for _ in range(30):
            _, _, body = curl(env, ep["reader"], "/v1/status")
            seen[json.loads(body)["id"]] += 1
        assert "r1-r1" in seen, seen
        assert not env.sanitizer_reports(), env.sanitizer_reports()
        env.cli("down")
    finally:
        env.cleanup()


mtest.run_tests([
    ("router_cleartext", lambda: run(False)),
    ("router_tls", lambda: run(True)),
])
