"""RPO and write forwarding against real processes: two regions, rpo_seconds 1. Stop the
secondary's agent under a write load: its lag grows and `meridian lag`
reports it; once no secondary is within the RPO the primary refuses writes
(503 rpo_exceeded, nothing applied) and says so on status and metrics;
restart it: acknowledgements resume by themselves, and every acknowledged
transaction is present in both regions."""

import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import mtest  # noqa: E402

BIN = sys.argv[1]


def lag(env):
    return {r["name"]: r for r in json.loads(env.cli("lag", "--json").stdout)["regions"]}


def writer_status(env):
    st = {p["id"]: p for p in env.status()["processes"]}
    c = subprocess.run(["curl", "-sS", "--max-time", "5", *env.curl_args(),
                        env.url(st["r1-w1"]["address"], "/v1/status")],
                       capture_output=True, text=True)
    return json.loads(c.stdout)


def test_rpo():
    env = mtest.Env(BIN, regions=("r1", "r2"), tls=False, readers=1)
    with open(env.topo) as f:
        text = f.read().replace("  pg_size: 1MiB\n", "  pg_size: 1MiB\n  rpo_seconds: 1\n")
    with open(env.topo, "w") as f:
        f.write(text)
    try:
        env.cli("up")
        # until the secondary has acknowledged once, the primary cannot show the RPO is met
        mtest.wait_for("RPO met", lambda: not writer_status(env)["rpo"]["blocked"], timeout=20)
        env.cli("sql", "CREATE TABLE t (k INTEGER PRIMARY KEY)")
        os.kill(env.pids()["r2-agent"], signal.SIGKILL)
        refused, held = None, []
        deadline = time.monotonic() + 30
        n = 0
        while time.monotonic() < deadline:
            n += 1
            r = env.cli("sql", "INSERT INTO t VALUES (?)", "--params", json.dumps([n]), check=False)
            if r.returncode != 0 and "timed out" in r.stderr and "rpo_exceeded" not in r.stderr:
                held.append(n)  # committed as the RPO broke: its answer is held, not refused
                deadline = max(deadline, time.monotonic() + 10)  # the CLI waited 30 s on it
                continue
            if r.returncode != 0:
                refused = (n, r.stderr)
                break
            time.sleep(0.1)
        print(f"  refused at insert {refused and refused[0]}; answers held: {held}")
        assert refused and "rpo_exceeded" in refused[1], refused
        lagging = lag(env)["r2"]
        assert lagging["lag_ms"] >= 1000, lagging
        st = writer_status(env)
        assert st["rpo"]["blocked"] is True and "r2" in st["rpo"]["reason"], st["rpo"]
        # the refused write was not applied
        got = json.loads(env.cli("sql", "--json", "SELECT count(*), max(k) FROM t").stdout)
        count, top = got["results"][0]["rows"][0]
        assert top == refused[0] - 1 and count == refused[0] - 1, (got, refused)
        env.cli("up")  # the secondary's agent comes back: the primary resumes by itself
        mtest.wait_for("writes acknowledged again", lambda: env.cli(
            "sql", "INSERT INTO t VALUES (?)", "--params", json.dumps([refused[0]]),
            check=False).returncode == 0, timeout=20, interval=0.3)
        assert writer_status(env)["rpo"]["blocked"] is False
        mtest.wait_for("r2 caught up", lambda: lag(env)["r2"]["lag_ms"] == 0, timeout=20)
        want = json.loads(env.cli("sql", "--json", "SELECT k FROM t ORDER BY k").stdout)
        got = json.loads(env.cli("sql", "--json", "--region", "r2", "--endpoint", "reader",
                                 "--consistency", "session", "--after-lsn", str(want["lsn"]),
                                 "SELECT k FROM t ORDER BY k").stdout)
        assert got["results"][0]["rows"] == want["results"][0]["rows"], (got, want)
        assert not env.sanitizer_reports(), env.sanitizer_reports()
        env.cli("down")
    finally:
        env.cleanup()


def test_write_forwarding():
    """A write sent to the secondary: refused without write_forwarding, forwarded to the
    primary with it, its answer carrying the primary's commit LSN for a session read."""
    env = mtest.Env(BIN, regions=("r1", "r2"), tls=False, readers=1)
    try:
        env.cli("up")
        made = json.loads(env.cli("sql", "--json", "--endpoint", "global_writer",
                                  "CREATE TABLE t (k INTEGER PRIMARY KEY)").stdout)
        # a reader tells a write from a read by preparing it: it must know the table
        env.cli("sql", "--region", "r2", "--endpoint", "reader", "--consistency", "session",
                "--after-lsn", str(made["lsn"]), "SELECT count(*) FROM t")
        r = env.cli("sql", "--region", "r2", "--endpoint", "reader", "INSERT INTO t VALUES (1)",
                    check=False)
        assert r.returncode == 1 and "read_only" in r.stderr, r.stderr
        r = env.cli("sql", "--region", "r2", "--endpoint", "instance:r2-w1",
                    "INSERT INTO t VALUES (1)", check=False)
        assert r.returncode == 1 and "secondary" in r.stderr, r.stderr
        env.cli("down")
        with open(env.topo) as f:
            text = f.read().replace("  pg_size: 1MiB\n", "  pg_size: 1MiB\n  write_forwarding: true\n")
        with open(env.topo, "w") as f:
            f.write(text)
        env.cli("up")
        env.cli("sql", "--region", "r2", "--endpoint", "reader", "--consistency", "session",
                "--after-lsn", str(made["lsn"]), "SELECT count(*) FROM t")
        for ep in ("reader", "cluster"):
            got = json.loads(env.cli("sql", "--json", "--region", "r2", "--endpoint", ep,
                                     "INSERT INTO t VALUES (NULL)").stdout)
            assert got["instance"] == "r1-w1" and got["region"] == "r1", got
            seen = json.loads(env.cli("sql", "--json", "--region", "r2", "--endpoint", "reader",
                                      "--consistency", "session", "--after-lsn", str(got["lsn"]),
                                      "SELECT count(*) FROM t").stdout)
            assert seen["lsn"] >= got["lsn"] and seen["region"] == "r2", seen
        assert seen["results"][0]["rows"] == [[2]], seen
        assert not env.sanitizer_reports(), env.sanitizer_reports()
        env.cli("down")
    finally:
        env.cleanup()


mtest.run_tests([("rpo", test_rpo), ("write_forwarding", test_write_forwarding)])
