"""SQL on the quorum volume against real processes on loopback: round trips
through every endpoint with every type, a reader that never shows a partial
transaction nor goes back in time under a write load, kill -9 of the writer
(every acknowledged transaction survives, none that was refused appears),
kill -9 of a whole AZ of storage (writes go on), a reader restarted under
load that catches up by itself, and a writer that holds requests while it opens."""

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
SQLLOAD = os.path.join(BIN, "sqlload")


def sql(env, text, endpoint="cluster", params=None, check=True, *extra):
    args = ["sql", "--endpoint", endpoint, "--json"]
    if params is not None:
        args += ["--params", json.dumps(params)]
    r = env.cli(*args, *extra, text, check=check)
    return json.loads(r.stdout) if r.stdout.strip() else {"stderr": r.stderr}


def endpoint_addresses(env):
    st = {p["id"]: p for p in env.status()["processes"]}
    c = subprocess.run(["curl", "-sS", "--max-time", "10", *env.curl_args(),
                        env.url(st["r1-router"]["address"], "/v1/status")],
                       capture_output=True, text=True)
    return {e["name"]: e["address"] for e in json.loads(c.stdout)["endpoints"]}


RUNS = [0]


def load(env, mode, addr, *args):
    tls = ["--tls", os.path.join(env.data, "certs")] if env.tls else []
    RUNS[0] += 1  # transaction ids never repeat across runs
    return subprocess.Popen([SQLLOAD, mode, "--addr", addr, *tls, "--id-base",
                             str(RUNS[0] * 10**12), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p, timeout=60):
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, (p.returncode, out, err)
    return json.loads(out.strip().splitlines()[-1])


def read_log(path):
    """Acknowledged, refused and unknown transactions. A router's 502
    backend_failed means the instance died before answering: the outcome of
    that transaction is unknown, as when the connection itself drops."""
    ok, fail, unknown = set(), set(), set()
    with open(path) as f:
        for line in f:
            parts = line.split()
            kind = "unknown" if parts[0] == "fail" and parts[2] == "backend_failed" else parts[0]
            {"ok": ok, "fail": fail, "unknown": unknown}[kind].add(int(parts[1]))
    return ok, fail, unknown


def txn_ids(env):
    rows = sql(env, "SELECT id FROM txns")["results"][0]["rows"]
    return {r[0] for r in rows}


def setup_counters(env):
    sql(env, "CREATE TABLE counters (id INTEGER PRIMARY KEY, v INTEGER, pad TEXT)")
    # rows of 1000 bytes: a transaction touches several pages
    sql(env, "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 12) "
             "INSERT INTO counters SELECT i, 0, printf('%01000d', i) FROM s")
    sql(env, "CREATE TABLE txns (id INTEGER PRIMARY KEY)")


def round_trips(tls):
    env = mtest.Env(BIN, tls=tls, readers=2)
    try:
        env.cli("up")
        sql(env, "CREATE TABLE t (k INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB, n)")
        values = [7, -2.5, "h\u00e9llo \"w\"\n", {"base64": "AAEC/w=="}, None]
        ins = sql(env, "INSERT INTO t (i, r, s, b, n) VALUES (?, ?, ?, ?, ?)", params=values)
        assert ins["results"][0]["changes"] == 1 and ins["results"][0]["last_insert_rowid"] == 1
        lsn = ins["lsn"]
        assert lsn > 0 and ins["instance"] == "r1-w1", ins
        want = [[1] + values]
        for ep in ("cluster", "global_writer", "instance:r1-w1"):
            got = sql(env, "SELECT k, i, r, s, b, n FROM t", endpoint=ep)
            assert got["results"][0]["rows"] == want, (ep, got)
        for ep in ("reader", "custom:analytics", "instance:r1-r1"):
            got = sql(env, "SELECT k, i, r, s, b, n FROM t", ep, None, True,
                      "--consistency", "session", "--after-lsn", str(lsn))
            assert got["results"][0]["rows"] == want, (ep, got)
            assert got["lsn"] >= lsn and "lag_ms" in got, got
        # GET /v1/health for load balancers: 200 within the lag given, 400 for a bad query
        st = {p["id"]: p for p in env.status()["processes"]}
        for q, code in (("", "200"), ("?max_lag_ms=60000", "200"), ("?max_lag_ms=x", "400")):
            c = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                *env.curl_args(), env.url(st["r1-r1"]["address"], "/v1/health" + q)],
                               capture_output=True, text=True)
            assert c.stdout == code, (q, c.stdout, c.stderr)
        # hex is SQL's own: x'..' literals and hex() work as in SQLite
        got = sql(env, "SELECT hex(b), typeof(r), typeof(n) FROM t")
        assert got["results"][0]["rows"] == [["000102FF", "real", "null"]], got
        # errors: a write to a reader, bad SQL, a bad body
        r = env.cli("sql", "--endpoint", "reader", "INSERT INTO t (i) VALUES (1)", check=False)
        assert r.returncode == 1 and "read_only" in r.stderr, r.stderr
        r = env.cli("sql", "SELEC 1", check=False)
        assert r.returncode == 1 and "syntax error" in r.stderr, r.stderr
        addr = endpoint_addresses(env)["cluster"]
        c = subprocess.run(["curl", "-sS", *env.curl_args(), "-d", "{\"sql\": 1}",
                            env.url(addr, "/v1/sql")], capture_output=True, text=True)
        assert '"code":"bad_request"' in c.stdout, c.stdout
        # h2load against the cluster endpoint with a request-body file
        if not tls:
            body = os.path.join(env.dir, "body.json")
            with open(body, "w") as f:
                f.write('{"sql": "INSERT INTO t (i) VALUES (1)"}')
            h = subprocess.run(["h2load", "-n", "200", "-c", "2", "-m", "8", "-d", body,
                                env.url(addr, "/v1/sql")], capture_output=True, text=True)
            assert "200 succeeded" in h.stdout, h.stdout
            assert sql(env, "SELECT count(*) FROM t")["results"][0]["rows"] == [[201]]
        assert not env.sanitizer_reports(), env.sanitizer_reports()
        env.cli("down")
    finally:
        env.cleanup()


def under_load():
    env = mtest.Env(BIN, tls=False, readers=2)
    try:
        env.cli("up")
        setup_counters(env)
        ep = endpoint_addresses(env)
        st = {p["id"]: p for p in env.status()["processes"]}
        log = os.path.join(env.dir, "txns.log")

        # 1. readers never see a partial transaction nor go back in time
        w = load(env, "counters", ep["cluster"], "--clients", "16", "--duration-ms", "4000",
                 "--log", log)
        checks = [load(env, "check", st[r]["address"], "--clients", "4", "--duration-ms", "4000")
                  for r in ("r1-r1", "r1-r2")]
        wr = finish(w)
        for c in checks:
            res = finish(c)
            assert res["reads"] > 50 and res["violations"] == 0, res
        assert wr["commits"] > 100, wr

        # 2. kill -9 one whole AZ of storage under load: writes keep being acknowledged
        w = load(env, "counters", ep["cluster"], "--clients", "16", "--duration-ms", "5000",
                 "--log", log)
        time.sleep(1)
        pids = env.pids()
        for s in ("r1-s1", "r1-s2"):  # AZ a
            os.kill(pids[s], signal.SIGKILL)
        before = len(read_log(log)[0])
        time.sleep(2)
        after = len(read_log(log)[0])
        assert after > before + 50, (before, after)
        finish(w)
        env.cli("up")

        # 3. kill -9 the writer under load; restart; acknowledged present, refused absent
        w = load(env, "counters", ep["cluster"], "--clients", "16", "--duration-ms", "6000",
                 "--log", log)
        time.sleep(1.5)
        os.kill(env.pids()["r1-w1"], signal.SIGKILL)
        time.sleep(0.5)
        env.cli("up")
        finish(w)
        ok, fail, unknown = read_log(log)
        present = txn_ids(env)
        assert ok <= present, f"{len(ok - present)} acknowledged transactions lost"
        assert not (fail & present), f"refused transactions applied: {sorted(fail & present)[:5]}"
        counters = sql(env, "SELECT min(v), max(v) FROM counters")["results"][0]["rows"][0]
        assert counters[0] == counters[1] == len(present), (counters, len(present))

        # 4. a reader restarted under load catches up and serves the newest data
        w = load(env, "counters", ep["cluster"], "--clients", "8", "--duration-ms", "4000",
                 "--log", log)
        time.sleep(1)
        os.kill(env.pids()["r1-r1"], signal.SIGKILL)
        time.sleep(0.3)
        env.cli("up")
        finish(w)
        last = sql(env, "SELECT max(v) FROM counters")
        got = sql(env, "SELECT max(v) FROM counters", "instance:r1-r1", None, True,
                  "--consistency", "session", "--after-lsn", str(last["lsn"]))
        assert got["results"][0]["rows"] == last["results"][0]["rows"], (got, last)
        assert not env.sanitizer_reports(), env.sanitizer_reports()
        env.cli("down")
    finally:
        env.cleanup()


def post(env, address, text, max_s=10):
    """POST /v1/sql straight to an instance: (HTTP status, answer, seconds taken)."""
    t = time.monotonic()
    c = subprocess.run(["curl", "-sS", "--max-time", str(max_s), *env.curl_args(),
                        "-o", "-", "-w", "\n%{http_code}", "-H", "content-type: application/json",
                        "--data", json.dumps({"sql": text}), env.url(address, "/v1/sql")],
                       capture_output=True, text=True)
    body, _, code = c.stdout.rpartition("\n")
    return int(code or 0), json.loads(body) if body.strip() else c.stderr, time.monotonic() - t


def writer_holds_while_opening():
    """A writer still recovering the volume holds a request and runs it the moment it is
    ready; one it cannot open within WRITER_OPEN_HOLD_MS (1 s) is answered 503, nothing
    changed. The writer is restarted (kill -9, `meridian up`) while four of its six storage
    nodes are stopped: recovery waits for them."""
    env = mtest.Env(BIN, tls=False, readers=1)
    with open(env.topo) as f:
        text = f.read()
    with open(env.topo, "w") as f:  # no in-region failover: the writer itself comes back
        f.write(text.replace("settings:\n", "settings:\n  writer_timeout_ms: 0\n", 1))
    stopped = []
    try:
        env.cli("up")
        sql(env, "CREATE TABLE h (k INTEGER PRIMARY KEY)")
        addr = {p["id"]: p for p in env.status()["processes"]}["r1-w1"]["address"]
        pids = env.pids()
        stopped = [pids[s] for s in ("r1-s1", "r1-s2", "r1-s3", "r1-s4")]
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        os.kill(pids["r1-w1"], signal.SIGKILL)
        mtest.wait_for("r1-w1 gone", lambda: not mtest.pid_is(pids["r1-w1"], "r1-w1"))
        env.cli("up", "--timeout-ms", "300", check=False)  # starts it; it cannot get ready
        # a probe that reaches the writer is held 1 s, then answered 503 (counted as
        # refused); before the instance knows its role it answers 503 "the instance is
        # starting" at once (not counted)
        probes = []

        def writer_answers():
            code, doc, _ = post(env, addr, "SELECT 1", 2)
            probes.append(code == 503 and isinstance(doc, dict) and
                          doc["error"]["message"].startswith("the writer is"))
            return probes[-1]
        mtest.wait_for("r1-w1 answering as the writer", writer_answers)

        code, doc, took = post(env, addr, "INSERT INTO h VALUES (1)")
        print(f"  recovery blocked: {code} {doc} after {took:.2f} s")
        assert code == 503 and doc["error"]["code"] == "unavailable", (code, doc)
        assert "still recovering the volume after 1000 ms" in doc["error"]["message"], doc
        assert took >= 1.0, took

        result = {}

        def send():
            result["answer"] = post(env, addr, "INSERT INTO h VALUES (2)")

        t = threading.Thread(target=send)
        t.start()
        time.sleep(0.15)  # the request is held; the rest of the hold is for recovery
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        stopped = []
        t.join(timeout=30)
        code, doc, took = result["answer"]
        print(f"  storage back 0.15 s after the request: {code} after {took:.2f} s")
        assert code == 200 and doc["results"][0]["changes"] == 1, (code, doc)
        assert took >= 0.15, took
        rows = sql(env, "SELECT k FROM h")["results"][0]["rows"]
        assert rows == [[2]], rows  # the refused one never ran
        log = open(os.path.join(env.data, "r1-w1", "meridiand.log")).read()
        assert "event=sql_ready" in log and "held=1" in log, log[-2000:]
        # refused: the probes and the first insert, which waited out the hold; not the
        # insert that was held and then run
        c = subprocess.run(["curl", "-sS", "--max-time", "10", *env.curl_args(),
                            env.url(addr, "/metrics")], capture_output=True, text=True)
        refused = [l for l in c.stdout.splitlines()
                   if l.startswith("meridian_fenced_requests_total ")]
        assert refused == [f"meridian_fenced_requests_total {probes.count(True) + 1}"], \
            (refused, probes)
        assert not env.sanitizer_reports(), env.sanitizer_reports()
        env.cli("down")
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        env.cleanup()


mtest.run_tests([
    ("writer_holds_while_opening", writer_holds_while_opening),
    ("round_trips_cleartext", lambda: round_trips(False)),
    ("round_trips_tls", lambda: round_trips(True)),
    ("under_load", under_load),
])
