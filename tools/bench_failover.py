#!/usr/bin/env python3
"""tools/bench_failover.py: how long writes stop during a planned switchover and an
in-region writer failover, as one JSON document (tools/bench --failover runs it).

Switchover: two regions on loopback (TLS with mutual certificates), a steady bank
workload (tools/sqlload bank: transfers at --rate per second from 8 clients) through
r1's global writer endpoint, and `meridian switchover --to` the other region once per
run, alternating. Per run:
  - command_to_first_write_ms: from the command's start to the first transfer
    acknowledged after the workload's longest pause (the new primary's first write);
  - write_outage_ms: the workload's longest pause between two acknowledged transfers
    (the global writer endpoint refused, or held, every write meanwhile);
  - cli_ms: the command's own time (until the new primary's writer opened);
  - lost: acknowledged transfers missing afterwards (bank-check), always 0.
Writer failover: one region, the same workload through the cluster endpoint, kill -9 of
the writer; the longest pause is the time from the kill until a reader, promoted by
the agent, acknowledges writes (detection takes settings.writer_timeout_ms, 1000).
Reference, in the same invocation: tools/bench_pg_switchover.py (PostgreSQL 15,
primary and streaming standby on loopback, the same write rate).

    python3 tools/bench_failover.py [--runs N] [--rate R] [--no-pg]
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration", "lib"))
import mtest  # noqa: E402

BIN = os.path.join(ROOT, "build", "bin")


def endpoints(env):
    out = {}
    for m in re.finditer(r"id: (\w+)-router, az: \w+, address: [\d.:]+, cluster: ([\d.:]+), "
                         r"reader: ([\d.:]+), global_writer: ([\d.:]+)", open(env.topo).read()):
        out[m.group(1)] = {"cluster": m.group(2), "global_writer": m.group(4)}
    return out


def tls(env):
    return ["--tls", os.path.join(env.data, "certs")] if env.tls else []


def bank(env, addr, ms, log, rate, base):
    return subprocess.Popen([os.path.join(BIN, "sqlload"), "bank", "--addr", addr, *tls(env),
                             "--clients", "8", "--duration-ms", str(ms), "--log", log,
                             "--rate", str(rate), "--id-base", str(base)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p):
    out, err = p.communicate(timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"sqlload bank: exit {p.returncode}: {err[-500:]}")
    return json.loads(out.strip().splitlines()[-1])


def check(env, addr, log):
    r = subprocess.run([os.path.join(BIN, "sqlload"), "bank-check", "--addr", addr, *tls(env),
                        "--log", log], capture_output=True, text=True, timeout=120)
    doc = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
    return doc.get("missing_count", -1) if r.returncode in (0, 1) else -1


def warm(env, addr, rate):
    """Creates the bank's tables and lets the load settle before measuring."""
    log = os.path.join(env.dir, "warm.log")
    finish(bank(env, addr, 2000, log, rate, 0))


def switchovers(runs, rate):
    env = mtest.Env(BIN, regions=("r1", "r2"), tls=True, readers=1)
    out = []
    try:
        env.cli("up", "--timeout-ms", "60000")
        gw = endpoints(env)["r1"]["global_writer"]
        warm(env, gw, rate)
        target = "r2"
        for i in range(runs):
            log = os.path.join(env.dir, f"run{i}.log")
            t0 = time.monotonic()
            load = bank(env, gw, 5000, log, rate, (i + 1) * 10**9)
            time.sleep(2.0)
            t_cmd = (time.monotonic() - t0) * 1000
            r = env.cli("switchover", "--to", target, "--json", timeout=120)
            cli = json.loads(r.stdout.strip().splitlines()[-1])
            b = finish(load)
            first = b["longest_gap_from_ms"] + b["longest_gap_ms"]
            out.append({"to": target, "cli_ms": cli["elapsed_ms"],
                        "write_outage_ms": round(b["longest_gap_ms"], 1),
                        "command_to_first_write_ms": round(first - t_cmd, 1),
                        "acknowledged": b["ok"] + b["dup"], "failed": b["fail"],
                        "lost": check(env, gw, log)})
            print(f"switchover {i + 1}: {out[-1]}", file=sys.stderr)
            target = "r1" if target == "r2" else "r2"
            time.sleep(1.0)
    finally:
        env.cleanup()
    return out


def writer_failovers(runs, rate):
    out = []
    for i in range(runs):
        env = mtest.Env(BIN, regions=("r1",), tls=True, readers=1)
        try:
            env.cli("up", "--timeout-ms", "60000")
            cluster = endpoints(env)["r1"]["cluster"]
            warm(env, cluster, rate)
            log = os.path.join(env.dir, "run.log")
            t0 = time.monotonic()
            load = bank(env, cluster, 5000, log, rate, 10**9)
            time.sleep(1.5)
            t_kill = (time.monotonic() - t0) * 1000
            os.kill(env.pids()["r1-w1"], signal.SIGKILL)
            b = finish(load)
            first = b["longest_gap_from_ms"] + b["longest_gap_ms"]
            out.append({"write_outage_ms": round(b["longest_gap_ms"], 1),
                        "kill_to_first_write_ms": round(first - t_kill, 1),
                        "acknowledged": b["ok"] + b["dup"], "failed": b["fail"],
                        "lost": check(env, cluster, log)})
            print(f"writer failover {i + 1}: {out[-1]}", file=sys.stderr)
        finally:
            env.cleanup()
    return out


def median(runs, key):
    return round(statistics.median(r[key] for r in runs), 1)


def run(runs=3, rate=200, pg=True):
    if not all(os.access(os.path.join(BIN, b), os.X_OK) for b in ("meridian", "sqlload")):
        raise SystemExit("build first (cmake --build build)")
    so = switchovers(runs, rate)
    wf = writer_failovers(runs, rate)
    doc = {
        "rate_writes_per_s": rate,
        "switchover": {"command_to_first_write_ms": median(so, "command_to_first_write_ms"),
                       "write_outage_ms": median(so, "write_outage_ms"),
                       "cli_ms": median(so, "cli_ms"),
                       "lost": sum(r["lost"] for r in so), "runs": so},
        "writer_failover": {"kill_to_first_write_ms": median(wf, "kill_to_first_write_ms"),
                            "write_outage_ms": median(wf, "write_outage_ms"),
                            "lost": sum(r["lost"] for r in wf), "runs": wf},
    }
    if pg:
        p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench_pg_switchover.py"),
                            "--runs", str(runs), "--rate", str(rate)], stdout=subprocess.PIPE,
                           text=True)
        doc["pg_switchover_reference"] = (json.loads(p.stdout) if p.stdout.strip() else
                                          {"error": f"exit {p.returncode}, see stderr"})
    return doc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=int, default=200, help="transfers per second, in all")
    ap.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL reference")
    a = ap.parse_args()
    print(json.dumps(run(a.runs, a.rate, not a.no_pg), indent=2))


if __name__ == "__main__":
    main()
