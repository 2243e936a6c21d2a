"""The router's endpoints against real processes on loopback: the cluster and
global writer endpoints reach the writer, the reader endpoint balances over
the readers and skips one that died, a custom endpoint reaches only its
members, and with no reader left the answer is a clear 503.

The endpoints follow the region state (GET /v1/region of each agent), not the
topology: a new writer posted to the agent takes the cluster endpoint's writes
(parked and sent again while it restarts, never a read_only refusal passed on),
the old writer comes back as a reader behind the reader endpoint, and every
write acknowledged before the change is still there. With two regions, a
higher-epoch state making r2 primary moves the global writer endpoint to r2's
writer; that part runs only while `meridian switchover` does not exist (its own
tests cover the global writer endpoint then), or with ROUTER_TEST_TWO_REGIONS=1."""

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time

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


def router_status(env, router="r1-router"):
    st = {p["id"]: p for p in env.status()["processes"]}
    _, _, body = curl(env, st[router]["address"], "/v1/status")
    return json.loads(body)


def address(env, ident):
    return {p["id"]: p for p in env.status()["processes"]}[ident]["address"]


def post(env, addr, path, doc, timeout=15):
    """POST doc as JSON; (status, headers, parsed body or None)."""
    r = subprocess.run(["curl", "-sS", "--max-time", str(timeout), "-D", "-", *env.curl_args(),
                        "-H", "content-type: application/json", "--data-binary", json.dumps(doc),
                        env.url(addr, path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition("\n\n")
    status = int(head.split()[1])
    headers = dict(l.split(": ", 1) for l in head.split("\n")[1:] if ": " in l)
    try:
        return status, headers, json.loads(body)
    except ValueError:
        return status, headers, None


def sql(env, addr, text, params=()):
    return post(env, addr, "/v1/sql", {"sql": text, "params": list(params)})


def region_state(env, agent):
    status, _, body = curl(env, address(env, agent), "/v1/region")
    assert status == 200, body
    return json.loads(body)["state"]


def post_state(env, agent, state):
    status, _, body = post(env, address(env, agent), "/v1/region", state)
    assert status == 200, (status, body)
    return body["state"]


def metric(env, router, name):
    _, _, body = curl(env, address(env, router), "/metrics")
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in {router}'s metrics")


def switchover_cli_exists(env):
    r = subprocess.run([os.path.join(BIN, "meridian")], capture_output=True, text=True)
    return "switchover" in r.stdout + r.stderr


def endpoints(env, router="r1-router"):
    return {e["name"]: e["address"] for e in router_status(env, router)["endpoints"]}


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


class Writes:
    """Inserts with keys of their own through an endpoint, from any thread; keeps what was
    acknowledged and every answer with its latency."""

    def __init__(self, env, addr):
        self.env, self.addr, self.next, self.acked = env, addr, 1, {}
        self.answers = []
        self.lock = threading.Lock()

    def one(self):
        """One insert: (status, instance or None, error code or None)."""
        with self.lock:
            k = self.next
            self.next += 1
        t0 = time.monotonic()
        status, _, body = sql(self.env, self.addr, "INSERT INTO t (k, v) VALUES (?, ?)",
                              [k, f"v{k}"])
        took = time.monotonic() - t0
        inst = body.get("instance") if status == 200 else None
        code = None if status == 200 else (body or {}).get("error", {}).get("code")
        with self.lock:
            if status == 200:
                self.acked[k] = inst
            self.answers.append((status, inst or code, took))
        # 502: the writer died while it ran the write (outcome unknown, not sent again);
        # 503 only once the router's wait (ROUTER_WAIT_MS, 5 s) is over: a refusal answered
        # sooner was passed on instead of sent again. Never a read_only refusal (the
        # endpoint went to a reader), nor a write applied twice (a sql_error: keys are
        # unique).
        ok = status == 200 or (status == 502 and code == "backend_failed") or \
            (status == 503 and took >= 4.5)
        assert ok, (status, body, f"{took:.2f} s")
        return status, inst, code

    def check_present(self, addr):
        status, _, body = sql(self.env, addr, "SELECT k FROM t")
        assert status == 200, body
        have = {row[0] for row in body["results"][0]["rows"]}
        missing = sorted(set(self.acked) - have)
        assert not missing, f"acknowledged writes lost: {missing[:20]}"


def set_drain(env, on):
    """The region's writer drains (a switchover towards... itself: it only drains) or not."""
    state = region_state(env, "r1-agent")
    for key in ("op_epoch", "op_to"):
        state.pop(key, None)
    if on:
        state.update(op="switchover", op_epoch=state["epoch"] + 1, op_to="r1")
    else:
        state["op"] = "none"
    post_state(env, "r1-agent", state)
    writer = address(env, "r1-w1")
    mtest.wait_for("the writer drains" if on else "the writer takes writes again",
                   lambda: (sql(env, writer, "SELECT 1")[0] == 503) == on)


def drain_holds_writes(env, w):
    """A writer that refuses (503 draining) before doing anything: the router holds the
    write and sends it again as soon as the region's state changes, within its wait; past
    the wait, the refusal is the answer."""
    set_drain(env, True)
    held = []
    t = threading.Thread(target=lambda: held.append(w.one()))
    t.start()
    time.sleep(1)
    set_drain(env, False)
    t.join()
    status, inst, _ = held[0]
    took = w.answers[-1][2]
    assert status == 200 and inst == "r1-w1" and took >= 0.9, (held, took)
    assert metric(env, "r1-router", "meridian_router_redirects_total") >= 1

    set_drain(env, True)
    status, _, code = w.one()
    took = w.answers[-1][2]
    assert status == 503 and code == "draining" and took < 8, (status, code, took)
    set_drain(env, False)
    assert w.one()[1] == "r1-w1"


def writer_change():
    """One region: the endpoints follow an in-region writer change, under writes."""
    env = mtest.Env(BIN, tls=False, readers=2)
    try:
        env.cli("up")
        mtest.wait_for("router sees every instance",
                       lambda: backends_up(env, ["r1-w1", "r1-r1", "r1-r2"]))
        ep = endpoints(env)
        status, _, body = sql(env, ep["cluster"], "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        assert status == 200, body
        w = Writes(env, ep["cluster"])
        for _ in range(20):
            assert w.one()[1] == "r1-w1"
        rs = router_status(env)
        assert rs["primary"] == "r1" and rs["regions"][0]["writer"] == "r1-w1", rs
        drain_holds_writes(env, w)

        # writers keep sending through the cluster endpoint while the writer changes
        stop = threading.Event()
        failures = []

        def keep_writing():
            try:
                while not stop.is_set():
                    w.one()
            except Exception as e:  # reported below
                failures.append(e)
        first = len(w.answers)
        threads = [threading.Thread(target=keep_writing) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            # r1-r1 becomes the writer: the agent's state says so, the instances restart
            state = region_state(env, "r1-agent")
            assert state["writer"] == "r1-w1", state
            state["writer"] = "r1-r1"
            state["writer_gen"] += 1
            t0 = time.monotonic()
            post_state(env, "r1-agent", state)
            mtest.wait_for("the new writer answers through the cluster endpoint",
                           lambda: failures or "r1-r1" in w.acked.values(), timeout=60)
            took = time.monotonic() - t0
            time.sleep(1)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not failures, failures
        after = collections.Counter(a[1] for a in w.answers[first:])
        print(f"  new writer answers after {took:.1f} s; answers: {dict(after)}", flush=True)
        for _ in range(10):
            assert w.one()[1] == "r1-r1"
        rs = router_status(env)
        assert rs["regions"][0]["writer"] == "r1-r1", rs["regions"]
        assert rs["regions"][0]["state"]["writer_gen"] == state["writer_gen"], rs["regions"]

        # the old writer serves reads behind the reader endpoint; the new one never does
        def old_writer_reads():
            status, _, body = sql(env, ep["reader"], "SELECT count(*) FROM t")
            return status == 200 and body["instance"] == "r1-w1"
        mtest.wait_for("the old writer answers through the reader endpoint", old_writer_reads,
                       timeout=60)
        seen = collections.Counter()
        for _ in range(30):
            status, headers, body = curl(env, ep["reader"], "/v1/status")
            assert status == 200, body
            seen[json.loads(body)["id"]] += 1
        assert "r1-r1" not in seen and "r1-w1" in seen, seen

        # everything acknowledged, before, during and after the change, is there
        w.check_present(ep["cluster"])
        print(f"  redirects: {metric(env, 'r1-router', 'meridian_router_redirects_total'):.0f}",
              flush=True)
        assert not env.sanitizer_reports(), env.sanitizer_reports()
        env.cli("down")
    finally:
        env.cleanup()


def primary_change():
    """Two regions: a higher-epoch state making r2 primary moves the global writer."""
    env = mtest.Env(BIN, regions=("r1", "r2"), tls=False, readers=1)
    try:
        if switchover_cli_exists(env) and os.environ.get("ROUTER_TEST_TWO_REGIONS") != "1":
            print("  skipped: `meridian switchover` exists; its tests cover the global writer",
                  flush=True)
            return
        env.cli("up")
        mtest.wait_for("r1's router sees its instances", lambda: backends_up(env, ["r1-w1"]))
        gw = endpoints(env)["global_writer"]
        status, _, body = sql(env, gw, "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        assert status == 200 and body["instance"] == "r1-w1", body
        # r2 holds the table before it takes over (else its writer starts without it)
        r2_reader = endpoints(env, "r2-router")["reader"]
        mtest.wait_for("the table reaches r2",
                       lambda: sql(env, r2_reader, "SELECT count(*) FROM t")[0] == 200)
        state = region_state(env, "r2-agent")
        assert state["primary"] == "r1", state
        state["epoch"] += 1
        state["primary"] = "r2"
        post_state(env, "r2-agent", state)

        def global_writer_moved():
            status, _, body = sql(env, gw, "INSERT INTO t (v) VALUES ('after')")
            return status == 200 and body["instance"] == "r2-w1"
        mtest.wait_for("r1's global writer endpoint reaches r2's writer", global_writer_moved,
                       timeout=60)
        for router in ("r1-router", "r2-router"):
            rs = router_status(env, router)
            assert rs["primary"] == "r2" and rs["epoch"] == state["epoch"], (router, rs)
        # r1's cluster endpoint: its writer stands by in a secondary, said at once
        cluster = endpoints(env)["cluster"]
        t0 = time.monotonic()
        status, _, body = sql(env, cluster, "INSERT INTO t (v) VALUES ('x')")
        assert status == 503 and body["error"]["code"] == "secondary_region", (status, body)
        assert time.monotonic() - t0 < 3, "a secondary's refusal was held"
        assert not env.sanitizer_reports(), env.sanitizer_reports()
        env.cli("down")
    finally:
        env.cleanup()


mtest.run_tests([
    ("router_cleartext", lambda: run(False)),
    ("router_tls", lambda: run(True)),
    ("router_writer_change", writer_change),
    ("router_primary_change", primary_change),
])
