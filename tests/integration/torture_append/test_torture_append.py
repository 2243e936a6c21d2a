"""The list-append pipeline of the fault harness on real processes (no faults): a
one-region cluster with TLS, `sqlload append` writing through the cluster endpoint and
reading through the reader endpoint with session consistency, `sqlload append-check`
reading every key's final list, and tools/torturelib/check_append.py finding nothing.
Then the same history against a final state with one acknowledged value taken out: the
checker must report it as lost (the pipeline can fail)."""

import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import mtest  # noqa: E402

BIN = sys.argv[1]
SQLLOAD = os.path.join(BIN, "sqlload")
CHECKER = os.path.join(os.path.dirname(__file__), "..", "..", "..", "tools", "torturelib",
                       "check_append.py")


def endpoints(env):
    """{"cluster": addr, "reader": addr} of region r1's router, from the topology."""
    m = re.search(r"id: r1-router, az: \w+, address: [\d.:]+, cluster: ([\d.:]+), "
                  r"reader: ([\d.:]+)", open(env.topo).read())
    return {"cluster": m.group(1), "reader": m.group(2)}


def tls_args(env):
    return ["--tls", os.path.join(env.data, "certs")] if env.tls else []


def run(cmd, timeout=120, codes=(0,)):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode in codes, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}{r.stderr}"
    return r


def checker(log, final, codes=(0,)):
    r = run([sys.executable, CHECKER, "--log", log, "--final", final], codes=codes)
    return json.loads(r.stdout)


def acknowledged(log):
    """[(key, value)] of the log's acknowledged appends."""
    out = []
    with open(log) as f:
        for line in f:
            parts = line.split()
            if parts[:2] == ["append", "ok"]:
                out.append((parts[3], int(parts[4])))
    return out


def append_pipeline():
    env = mtest.Env(BIN, tls=True, readers=2)
    try:
        env.cli("up", "--timeout-ms", "30000")
        ep = endpoints(env)
        log = os.path.join(env.dir, "append.log")
        final = os.path.join(env.dir, "final.json")
        r = run([SQLLOAD, "append", "--addr", ep["cluster"], "--read-addr", ep["reader"],
                 *tls_args(env), "--read-consistency", "session", "--clients", "4",
                 "--duration-ms", "4000", "--keys", "4", "--appends-per-key", "20",
                 "--log", log])
        load = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"append: {json.dumps(load)}", flush=True)
        assert load["ok"] > 50 and load["reads"] > 50, load
        assert load["keys_used"] > 4, load  # keys rotated
        r = run([SQLLOAD, "append-check", "--addr", ep["cluster"], *tls_args(env), "--log", log,
                 "--final", final])
        read = json.loads(r.stdout.strip().splitlines()[-1])
        # append-check reads every key the log names (a fresh key may have been read but
        # not yet appended to: an empty list); keys_used counts keys given an append: all
        # of them hold values when every append was acknowledged
        with open(final) as f:
            lists = json.load(f)["lists"]
        holding = sum(1 for v in lists.values() if v)
        assert read["keys"] == len(lists) and holding <= load["keys_used"], (read, load, holding)
        assert read["values"] >= load["ok"], (read, load)
        if load["fail"] == 0 and load["unknown"] == 0:
            assert holding == load["keys_used"], (read, load, holding)
        verdict = checker(log, final)
        counts = verdict["counts"]
        print(f"check: {json.dumps(counts)}", flush=True)
        assert verdict["violations"] == [] and counts["appends_ok"] == load["ok"], verdict
        assert counts["reads_ok"] == load["reads"], (counts, load)
        assert counts["reads_by_consistency"] == {"session": load["reads"]}, counts
        # the same final state read through the reader endpoint, at the log's highest LSN
        other = os.path.join(env.dir, "final-reader.json")
        run([SQLLOAD, "append-check", "--addr", ep["reader"], *tls_args(env), "--log", log,
             "--final", other])
        with open(final) as f, open(other) as g:
            assert json.load(f)["lists"] == json.load(g)["lists"]

        # negative: drop one acknowledged value from the final state
        key, value = acknowledged(log)[len(acknowledged(log)) // 2]
        with open(final) as f:
            doc = json.load(f)
        doc["lists"][key].remove(value)
        broken = os.path.join(env.dir, "final-broken.json")
        with open(broken, "w") as f:
            json.dump(doc, f)
        verdict = checker(log, broken, codes=(1,))
        lost = [v for v in verdict["violations"] if v["kind"] == "lost"]
        assert len(lost) == 1 and lost[0]["values"] == [value], verdict["violations"]
        assert lost[0]["key"] == int(key), lost
        assert env.sanitizer_reports() == [], env.sanitizer_reports()
    finally:
        env.cleanup()


mtest.run_tests([("append_pipeline", append_pipeline)])
