"""The SQL part of tools/bench: single-row INSERT commits per second and
p50/p99 latency with 1, 16 and 64 concurrent clients through the cluster
endpoint (mutual TLS, as in production), h2load against the cluster endpoint
with a request-body file (cleartext: h2load has no client certificate),
reader lag p50/p99 sampled during the 64-client load, and the reference: the
same inserts into a plain local SQLite file (WAL, synchronous=FULL) on the
same filesystem. Every process is stopped by pid; folders are removed."""

import json
import os
import re
import statistics
import subprocess
import threading
import time

import mtest


def _sqlload(bindir, *args):
    r = subprocess.run([os.path.join(bindir, "sqlload"), *args], capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"sqlload {' '.join(args)}: {r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _endpoints(env):
    st = {p["id"]: p for p in env.status()["processes"]}
    c = subprocess.run(["curl", "-sS", "--max-time", "10", *env.curl_args(),
                        env.url(st["r1-router"]["address"], "/v1/status")],
                       capture_output=True, text=True)
    return {e["name"]: e["address"] for e in json.loads(c.stdout)["endpoints"]}, st


def _sample_lag(env, addresses, stop, out):
    while not stop.is_set():
        for a in addresses:
            c = subprocess.run(["curl", "-sS", "--max-time", "2", *env.curl_args(),
                                env.url(a, "/v1/status")], capture_output=True, text=True)
            try:
                out.append(json.loads(c.stdout)["lag_ms"])
            except (ValueError, KeyError):
                pass
        time.sleep(0.05)


def _quantile(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def run(bindir, seconds=5, runs=3):
    out = {"duration_s_per_run": seconds, "runs": runs, "clients": {}}
    env = mtest.Env(bindir, name="sqlbench", tls=True, readers=2)
    try:
        env.cli("up")
        env.cli("sql", "CREATE TABLE bench (id INTEGER PRIMARY KEY, client INTEGER, payload TEXT)")
        ep, st = _endpoints(env)
        certs = os.path.join(env.data, "certs")
        for clients in (1, 16, 64):
            res = []
            lag = []
            for _ in range(runs):
                stop = threading.Event()
                sampler = None
                if clients == 64:
                    sampler = threading.Thread(target=_sample_lag, args=(
                        env, [st["r1-r1"]["address"], st["r1-r2"]["address"]], stop, lag))
                    sampler.start()
                res.append(_sqlload(bindir, "insert", "--addr", ep["cluster"], "--tls", certs,
                                    "--clients", str(clients), "--duration-ms",
                                    str(seconds * 1000)))
                stop.set()
                if sampler:
                    sampler.join()
            med = lambda k: statistics.median(r[k] for r in res)  # noqa: E731
            out["clients"][str(clients)] = {
                "commits_per_s": med("commits_per_s"), "p50_ms": med("p50_ms"),
                "p99_ms": med("p99_ms"), "errors": sum(r["errors"] + r["unknown"] for r in res)}
            if clients == 64:
                out["reader_lag_ms_during_64"] = {"samples": len(lag), "p50": _quantile(lag, 0.5),
                                                  "p99": _quantile(lag, 0.99)}
        ref = [_sqlload(bindir, "sqlite", "--file", os.path.join(env.dir, "ref.db"),
                        "--duration-ms", str(seconds * 1000)) for _ in range(runs)]
        out["sqlite_wal_full_reference"] = {
            "commits_per_s": statistics.median(r["commits_per_s"] for r in ref),
            "p50_ms": statistics.median(r["p50_ms"] for r in ref),
            "p99_ms": statistics.median(r["p99_ms"] for r in ref)}
        env.cli("down")
    finally:
        env.cleanup()
    out["h2load_cleartext"] = _h2load(bindir, seconds)
    return out


def _h2load(bindir, seconds):
    env = mtest.Env(bindir, name="sqlbench-h2load", tls=False, readers=2)
    try:
        env.cli("up")
        env.cli("sql", "CREATE TABLE bench (id INTEGER PRIMARY KEY, client INTEGER, payload TEXT)")
        ep, _ = _endpoints(env)
        body = os.path.join(env.dir, "body.json")
        with open(body, "w") as f:
            f.write('{"sql": "INSERT INTO bench (client, payload) VALUES (0, '
                    "printf('%0100d', random()))\"}")
        h = subprocess.run(["h2load", "-D", str(seconds), "-c", "4", "-m", "16", "-d", body,
                            "-H", "content-type: application/json",
                            env.url(ep["cluster"], "/v1/sql")],
                           capture_output=True, text=True, timeout=seconds + 60)
        m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", h.stdout)
        ok = re.search(r"(\d+) succeeded, (\d+) failed", h.stdout)
        lat = re.search(r"time for request:\s+([\d.]+\w+)\s+([\d.]+\w+)\s+([\d.]+\w+)", h.stdout)
        env.cli("down")
        return {"clients": 4, "streams_each": 16, "requests_per_s": float(m.group(1)) if m else None,
                "succeeded": int(ok.group(1)) if ok else None,
                "failed": int(ok.group(2)) if ok else None,
                "latency_min_max_mean": list(lat.groups()) if lat else None}
    finally:
        env.cleanup()
