"""The cross-region part of tools/bench: under a steady write load at the
primary (sqlload at a fixed rate through the cluster endpoint, TLS), the
secondary's lag p50/p99/max in ms as the primary's agent measures it
(sampled every 50 ms), with no added delay and with an emulated one-way WAN
delay between the regions' agents (tools/relay, the secondary agent's
peer_address); and the bytes per committed transaction on the wire before
and after compression. Every process is stopped by pid; folders removed."""

import json
import os
import re
import signal
import subprocess
import threading
import time

import mtest


def _status(env, address):
    c = subprocess.run(["curl", "-sS", "--max-time", "2", *env.curl_args(),
                        env.url(address, "/v1/status")], capture_output=True, text=True)
    return json.loads(c.stdout)


def _quantile(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def _one(bindir, delay_ms, seconds, rate):
    env = mtest.Env(bindir, name="geobench", regions=("r1", "r2"), tls=True, readers=1)
    relay = None
    try:
        relay_port = mtest.free_ports(1)[0]
        with open(env.topo) as f:
            text = f.read()
        m = re.search(r"agent: \{id: r2-agent, az: a, address: (127\.0\.0\.1:\d+)\}", text)
        agent_addr = m.group(1)
        text = text.replace(m.group(0), f"agent: {{id: r2-agent, az: a, address: {agent_addr}, "
                                         f"peer_address: 127.0.0.1:{relay_port}}}")
        with open(env.topo, "w") as f:
            f.write(text)
        relay = subprocess.Popen([os.path.join(bindir, "relay"), "--listen",
                                  f"127.0.0.1:{relay_port}", "--to", agent_addr,
                                  "--delay-ms", str(delay_ms)],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        relay.stdout.readline()
        env.cli("up", timeout=120)
        env.cli("sql", "CREATE TABLE bench (id INTEGER PRIMARY KEY, client INTEGER, payload TEXT)")
        st = {p["id"]: p for p in env.status()["processes"]}
        routers = json.loads(subprocess.run(
            ["curl", "-sS", *env.curl_args(), env.url(st["r1-router"]["address"], "/v1/status")],
            capture_output=True, text=True).stdout)
        cluster = next(e["address"] for e in routers["endpoints"] if e["name"] == "cluster")
        agent = st["r1-agent"]["address"]
        before = next(r for r in _status(env, agent)["regions"] if r["name"] == "r2")
        lags, stop = [], threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    r2 = next(r for r in _status(env, agent)["regions"] if r["name"] == "r2")
                    lags.append(r2["lag_ms"])
                except (ValueError, KeyError, StopIteration):
                    pass
                time.sleep(0.05)

        t = threading.Thread(target=sample)
        t.start()
        load = subprocess.run([os.path.join(bindir, "sqlload"), "insert", "--addr", cluster,
                               "--tls", os.path.join(env.data, "certs"), "--clients", "32",
                               "--rate", str(rate), "--duration-ms", str(seconds * 1000)],
                              capture_output=True, text=True, timeout=seconds + 120)
        stop.set()
        t.join()
        res = json.loads(load.stdout.strip().splitlines()[-1])
        after = next(r for r in _status(env, agent)["regions"] if r["name"] == "r2")
        commits = max(1, res["commits"])
        raw = after.get("bytes_raw", 0) - before.get("bytes_raw", 0)
        sent = after.get("bytes_sent", 0) - before.get("bytes_sent", 0)
        env.cli("down")
        return {"one_way_delay_ms": delay_ms, "commits_per_s": res["commits_per_s"],
                "commit_p50_ms": res["p50_ms"], "commit_p99_ms": res["p99_ms"],
                "lag_ms": {"samples": len(lags), "p50": _quantile(lags, 0.5),
                           "p99": _quantile(lags, 0.99), "max": max(lags) if lags else None},
                "bytes_per_commit_raw": round(raw / commits, 1),
                "bytes_per_commit_sent": round(sent / commits, 1)}
    finally:
        if relay is not None:
            relay.send_signal(signal.SIGTERM)
            relay.wait(timeout=10)
        env.cleanup()


def run(bindir, seconds=10, rate=1000, delays=(0, 50)):
    return {"target_commits_per_s": rate, "seconds": seconds,
            "runs": [_one(bindir, d, seconds, rate) for d in delays]}
