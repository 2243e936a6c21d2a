"""The cross-region agent on two real regions (r1 primary, r2 secondary), TLS with
mutual certificates: a write acknowledged by the primary shows in the secondary;
the secondary's readers never show a partial transaction nor go back in time
under load; kill -9 of the secondary's agent and then of the primary's agent under
load, `meridian up` restarts them, and both regions end with the same rows at the
same LSN and the same rolling checksum; hostile bytes on the replication route
close that stream with a logged reason while the agent keeps serving."""

import json
import os
import signal
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import mtest  # noqa: E402

BIN = sys.argv[1]
SQLLOAD = os.path.join(BIN, "sqlload")
RUNS = [0]


def sql(env, text, *extra, region=None, endpoint="cluster"):
    args = ["sql", "--endpoint", endpoint, "--json"]
    if region:
        args += ["--region", region]
    r = env.cli(*args, *extra, text)
    return json.loads(r.stdout)


def load(env, mode, addr, *args):
    tls = ["--tls", os.path.join(env.data, "certs")] if env.tls else []
    RUNS[0] += 1
    return subprocess.Popen([SQLLOAD, mode, "--addr", addr, *tls, "--id-base",
                             str(RUNS[0] * 10**12), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p, timeout=90):
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, (p.returncode, out, err)
    return json.loads(out.strip().splitlines()[-1])


def curl(env, address, path, *extra):
    return subprocess.run(["curl", "-sS", "--max-time", "10", *env.curl_args(), *extra,
                           env.url(address, path)], capture_output=True, text=True,
                          errors="replace")


def agent_status(env, addrs, ident):
    c = curl(env, addrs[ident], "/v1/status")
    return json.loads(c.stdout) if c.returncode == 0 and c.stdout.strip() else {}


def caught_up(env, addrs):
    p = agent_status(env, addrs, "r1-agent")
    s = agent_status(env, addrs, "r2-agent")
    regions = {r["name"]: r for r in p.get("regions", [])}
    r2 = regions.get("r2", {})
    w = agent_status(env, addrs, "r1-w1")  # the agent has everything the writer made durable
    return ("log_gap" not in p and p.get("durable_lsn", 0) >= w.get("vdl", 1 << 64)
            and r2.get("lsn_gap") == 0 and r2.get("durable_lsn", 0) > 0
            and s.get("checksum_lsn") == p.get("checksum_lsn") and "checksum" in s)


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def frame(payload):
    return struct.pack("<II", len(payload), crc32c(payload)) + payload


def hostile(env, addrs):
    """Each of these closes its stream with a logged reason; the agent keeps serving."""
    import zlib
    log = os.path.join(env.data, "r2-agent", "meridiand.log")
    cases = [
        b"\x00" * 3 + b"garbage that is not a frame" * 10,        # a length past the limit
        frame(b"Zxxxx"),                                           # a batch with no zlib
        frame(b"Z" + struct.pack("<I", 100) + zlib.compress(b"not a batch" * 9 + b"x")),
        frame(b"Z" + struct.pack("<I", 10**9) + zlib.compress(b"a")),  # a raw size past limit
        frame(b"Q" + b"unknown tag"),
    ]
    before = open(log).read().count("replication_stream_closed")
    for body in cases:
        path = os.path.join(env.dir, "hostile.bin")
        with open(path, "wb") as f:
            f.write(body)
        curl(env, addrs["r2-agent"], "/v1/replicate", "-X", "POST", "-H", "meridian-region: r1",
             "--data-binary", f"@{path}")
    mtest.wait_for("the hostile streams logged",
                   lambda: open(log).read().count("replication_stream_closed") >= before + len(cases),
                   timeout=10)
    text = open(log).read()
    assert "frame 1: expected tag" in text or "unknown" in text or "tag" in text, text[-2000:]
    assert agent_status(env, addrs, "r2-agent").get("id") == "r2-agent"


def replication():
    # a small backlog: a secondary that comes back is served from storage, then the backlog
    os.environ["MERIDIAN_AGENT_BACKLOG_RECORDS"] = "1000"
    env = mtest.Env(BIN, regions=("r1", "r2"), tls=True, readers=2)
    addrs = {}
    try:
        env.cli("up", "--timeout-ms", "30000")
        st = {p["id"]: p for p in env.status()["processes"]}
        addrs = {i: p["address"] for i, p in st.items()}
        sql(env, "CREATE TABLE counters (id INTEGER PRIMARY KEY, v INTEGER, pad TEXT)")
        sql(env, "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 12) "
                 "INSERT INTO counters SELECT i, 0, printf('%01000d', i) FROM s")
        sql(env, "CREATE TABLE txns (id INTEGER PRIMARY KEY)")

        # 1. a write acknowledged by the primary appears in the secondary
        w = sql(env, "INSERT INTO txns (id) VALUES (7)")
        got = sql(env, "SELECT id FROM txns", "--consistency", "session", "--after-lsn",
                  str(w["lsn"]), region="r2", endpoint="reader")
        assert got["results"][0]["rows"] == [[7]], got
        assert got["region"] == "r2", got

        # 2. load on the primary; the secondary's readers checked all along;
        #    kill -9 the secondary's agent, then the primary's, `meridian up` each time
        router = agent_status(env, addrs, "r1-router")
        cluster = {e["name"]: e["address"] for e in router["endpoints"]}["cluster"]
        wl = load(env, "counters", cluster, "--clients", "8", "--duration-ms", "7000",
                  "--log", os.path.join(env.dir, "txns.log"))
        checks = [load(env, "check", addrs[r], "--clients", "2", "--duration-ms", "7000")
                  for r in ("r2-r1", "r2-r2")]
        time.sleep(1.5)
        os.kill(env.pids()["r2-agent"], signal.SIGKILL)
        time.sleep(0.5)
        env.cli("up", "--timeout-ms", "30000")
        time.sleep(1.5)
        os.kill(env.pids()["r1-agent"], signal.SIGKILL)
        time.sleep(0.5)
        env.cli("up", "--timeout-ms", "30000")
        wr = finish(wl)
        assert wr["commits"] > 100, wr
        for c in checks:
            res = finish(c)
            assert res["reads"] > 20 and res["violations"] == 0, res

        # 3. both regions hold the same rows at the same LSN, with the same checksum
        mtest.wait_for("the secondary caught up", lambda: caught_up(env, addrs), timeout=30)
        p = agent_status(env, addrs, "r1-agent")
        s = agent_status(env, addrs, "r2-agent")
        assert p["checksum"] == s["checksum"], (p, s)
        r2 = {r["name"]: r for r in p["regions"]}["r2"]
        assert r2["lag_ms"] == 0 and r2["bytes_gap"] == 0 and r2["checksum_match"], r2
        q = "SELECT count(*), min(v), max(v), sum(v) FROM counters"
        a = sql(env, q)
        b = sql(env, q, "--consistency", "session", "--after-lsn", str(a["lsn"]),
                region="r2", endpoint="reader")
        assert a["results"][0]["rows"] == b["results"][0]["rows"], (a, b)
        assert a["results"][0]["rows"][0][1] == a["results"][0]["rows"][0][2], a
        lag = json.loads(env.cli("lag", "--json").stdout)
        assert {r["name"] for r in lag["regions"]} == {"r1", "r2"}, lag
        assert "mismatch" not in env.cli("status").stdout

        # 4. kill -9 the primary's writer under load: its successor writes at a new epoch,
        #    the secondary fences its storage at that epoch and the regions agree again
        wl = load(env, "counters", cluster, "--clients", "4", "--duration-ms", "3000",
                  "--log", os.path.join(env.dir, "txns.log"))
        time.sleep(1.5)
        os.kill(env.pids()["r1-w1"], signal.SIGKILL)
        time.sleep(0.3)
        # the writer only: the primary's readers follow a restarted writer once it commits
        env.cli("up", "--role", "writer", "--timeout-ms", "30000")
        finish(wl)
        w = sql(env, "INSERT INTO txns (id) VALUES (10)")
        mtest.wait_for("the secondary caught up after the writer restarted",
                       lambda: caught_up(env, addrs), timeout=30)
        p = agent_status(env, addrs, "r1-agent")
        s = agent_status(env, addrs, "r2-agent")
        assert p["checksum"] == s["checksum"] and s["epoch"] >= 2, (p, s)
        a = sql(env, q)
        b = sql(env, q, "--consistency", "session", "--after-lsn", str(a["lsn"]),
                region="r2", endpoint="reader")
        assert a["results"][0]["rows"] == b["results"][0]["rows"], (a, b)

        # 5. kill -9 the secondary's agent, then the primary's agent and writer together:
        #    the new writer no longer holds what the secondary lacks, so the restarted
        #    agent reads it from the primary region's storage
        wl = load(env, "counters", cluster, "--clients", "4", "--duration-ms", "3000",
                  "--log", os.path.join(env.dir, "txns.log"))
        time.sleep(1)
        os.kill(env.pids()["r2-agent"], signal.SIGKILL)
        time.sleep(1)
        for ident in ("r1-agent", "r1-w1"):
            os.kill(env.pids()[ident], signal.SIGKILL)
        time.sleep(0.3)
        for role in ("agent", "writer"):  # instances ask their agent first
            env.cli("up", "--role", role, "--timeout-ms", "30000")
        finish(wl)
        mtest.wait_for("the secondary caught up through storage",
                       lambda: caught_up(env, addrs), timeout=30)
        p = agent_status(env, addrs, "r1-agent")
        s = agent_status(env, addrs, "r2-agent")
        assert p["checksum"] == s["checksum"], (p, s)
        a = sql(env, q)
        b = sql(env, q, "--consistency", "session", "--after-lsn", str(a["lsn"]),
                region="r2", endpoint="reader")
        assert a["results"][0]["rows"] == b["results"][0]["rows"], (a, b)

        # 6. hostile bytes on the replication route; replication goes on afterwards
        hostile(env, addrs)
        w = sql(env, "INSERT INTO txns (id) VALUES (8)")
        got = sql(env, "SELECT count(*) FROM txns WHERE id = 8", "--consistency", "session",
                  "--after-lsn", str(w["lsn"]), region="r2", endpoint="reader")
        assert got["results"][0]["rows"] == [[1]], got
        r = env.cli("sql", "--region", "r2", "INSERT INTO txns (id) VALUES (9)", check=False)
        assert r.returncode != 0 and "secondary" in r.stderr, r
        for ident in ("r1-agent", "r2-agent"):  # the story, for whoever reads the test log
            with open(os.path.join(env.data, ident, "meridiand.log")) as f:
                for line in f:
                    if any(k in line for k in ("replica_link", "replication_stream", "checksum",
                                               "log_follow", "replica_ready", "log_gap",
                                               "catchup")):
                        print(line.rstrip()[:300])
        print(env.cli("lag").stdout)
        assert not env.sanitizer_reports(), env.sanitizer_reports()
        env.cli("down")
    except Exception:
        for ident in ("r1-agent", "r2-agent"):
            path = os.path.join(env.data, ident, "meridiand.log")
            if os.path.exists(path):
                with open(path) as f:
                    print("".join(l for l in f if "level=info" not in l or "gap" in l
                                  or "catchup" in l or "link" in l)[-8000:])
            print(json.dumps(agent_status(env, addrs, ident))[:3000])
        raise
    finally:
        env.cleanup()


mtest.run_tests([("replication", replication)])
