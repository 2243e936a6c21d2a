"""Switchover, failover and in-region writer failover on real processes.

- switchover_bank: a bank workload (accounts with a fixed total, transfers through
  r1's global writer endpoint) runs across a kill -9 of the primary's writer (a reader
  of r1 takes over; the old writer returns as a reader and streams again), then
  `meridian switchover --to r2` and back (TLS); the total holds, every acknowledged transfer is in both regions, both
  regions hold the same rows and the same rolling checksum at the same LSN;
  readers of the secondary keep answering consistent reads, without a restart;
  a client that writes straight to the old primary's writer is refused.
- switchover_crash: kill -9 the CLI at each step of a switchover, and kill -9 the
  old primary's writer and the target's agent midway: `meridian status` says what
  is under way, the next `meridian switchover` completes it, nothing is lost.
- unplanned_failover: the primary region stops (SIGSTOP) with commits the
  secondary lacks; `meridian failover --allow-data-loss` promotes r2 and reports
  where the new history forks; every acknowledged transfer at or below the fork
  is in r2, every one above it is in the divergent tail the old primary saves
  when it returns; it then refuses writes, rejoins and equals r2.
- frozen_primary: the whole primary region freezes (SIGSTOP) with a commit in flight and
  is failed over from; when it wakes up, its writer sees it was stopped and holds the
  answer until the region state is confirmed afresh: the commit is never acknowledged.
- writer_kill: kill -9 of the writer under load: a reader takes over (priority
  tier), every acknowledged transfer is there, the old writer returns as a reader.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import mtest  # noqa: E402

BIN = sys.argv[1]
SQLLOAD = os.path.join(BIN, "sqlload")
RUNS = [0]


def endpoints(env):
    """{region: {"cluster": addr, "reader": addr, "global_writer": addr}} from the topology."""
    out = {}
    for m in re.finditer(r"id: (\w+)-router, az: \w+, address: [\d.:]+, cluster: ([\d.:]+), "
                         r"reader: ([\d.:]+), global_writer: ([\d.:]+)", open(env.topo).read()):
        out[m.group(1)] = {"cluster": m.group(2), "reader": m.group(3),
                           "global_writer": m.group(4)}
    return out


def addresses(env):
    return {p["id"]: p["address"] for p in env.status()["processes"]}


def curl(env, address, path, *extra):
    return subprocess.run(["curl", "-sS", "--max-time", "10", *env.curl_args(), *extra,
                           env.url(address, path)], capture_output=True, text=True,
                          errors="replace")


def get_json(env, address, path):
    c = curl(env, address, path)
    try:
        return json.loads(c.stdout) if c.returncode == 0 and c.stdout.strip() else {}
    except ValueError:
        return {}


def post_sql(env, address, sql):
    c = curl(env, address, "/v1/sql", "-X", "POST", "-H", "content-type: application/json",
             "-w", "\n%{http_code}", "--data", json.dumps({"sql": sql}))
    body, _, code = c.stdout.rpartition("\n")
    return int(code or 0), body


def tls_args(env):
    return ["--tls", os.path.join(env.data, "certs")] if env.tls else []


def bank(env, addr, duration_ms, log, clients=8):
    RUNS[0] += 1
    return subprocess.Popen([SQLLOAD, "bank", "--addr", addr, *tls_args(env), "--clients",
                             str(clients), "--duration-ms", str(duration_ms), "--log", log,
                             "--id-base", str(RUNS[0] * 10**9)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p, timeout=120):
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, (p.returncode, out, err)
    return json.loads(out.strip().splitlines()[-1])


def fail_codes(log):
    """How many transfers failed with each code, from a bank log."""
    codes = {}
    with open(log) as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == "fail":
                codes[parts[2]] = codes.get(parts[2], 0) + 1
    return codes


def bank_check(env, addr, log, *extra, check=True):
    r = subprocess.run([SQLLOAD, "bank-check", "--addr", addr, *tls_args(env), "--log", log,
                        *extra], capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        doc = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
        acked = acknowledged(log) if os.path.exists(log) else {}
        lsns = sorted(acked.get(i) or 0 for i in doc.get("missing", []))
        states = {g: region_state(env, addresses(env), g).get("state") for g in endpoints(env)}
        raise AssertionError(f"bank-check failed at {addr}: {r.stdout.strip()} {r.stderr.strip()}"
                             f"; missing transfers' LSNs {lsns}; region states {states}")
    return json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}


def dump(env, addr, path, lsn):
    bank_check(env, addr, "-", "--consistency", "session", "--after-lsn", str(lsn),
               "--dump", path)
    with open(path) as f:
        return f.read()


def region_state(env, addrs, region):
    return get_json(env, addrs[f"{region}-agent"], "/v1/region")


def equal_checksums(env, addrs, primary, other):
    p = get_json(env, addrs[f"{primary}-agent"], "/v1/status")
    regions = {r["name"]: r for r in p.get("regions", [])}
    r = regions.get(other, {})
    return r.get("lsn_gap") == 0 and r.get("checksum_match") is True and \
        r.get("checksum_lsn") == p.get("checksum_lsn")


def metric(env, address, name):
    text = curl(env, address, "/metrics").stdout
    m = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else None


def acknowledged(log):
    """{transfer id: LSN or None} of the transfers a bank log says were applied."""
    out = {}
    with open(log) as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == "ok":
                out[int(parts[1])] = int(parts[2])
            elif parts and parts[0] == "dup":
                out[int(parts[1])] = None
    return out


def dumped_ids(text):
    ids = set()
    for line in text.splitlines():
        if line == "balances":
            break
        ids.add(int(line.split()[0]))
    return ids


class ReadLoop(threading.Thread):
    """Reads the accounts' total over and over through one endpoint: every answer must
    hold the whole total (no partial transfer), and none may fail."""

    def __init__(self, env, addr, total):
        super().__init__(daemon=True)
        self.env, self.addr, self.total = env, addr, total
        self.stop, self.reads, self.errors = False, 0, []

    def run(self):
        while not self.stop:
            code, body = post_sql(self.env, self.addr, "SELECT sum(balance) FROM accounts")
            if code != 200:
                self.errors.append((code, body[:200]))
            else:
                s = json.loads(body)["results"][0]["rows"][0][0]
                if s != self.total:
                    self.errors.append(("partial", s))
                self.reads += 1
            time.sleep(0.02)


def wait_bank_ready(env, *addrs):
    """Waits until every address shows the bank's 100 accounts (the bank creates its tables
    and its accounts in two transactions: the tables alone read as a sum of NULL)."""
    def ready(addr):
        code, body = post_sql(env, addr, "SELECT count(*) FROM accounts")
        return code == 200 and json.loads(body)["results"][0]["rows"][0][0] == 100
    for addr in addrs:
        mtest.wait_for(f"the bank's accounts at {addr}", lambda: ready(addr), timeout=30)


def switchover_bank():
    env = mtest.Env(BIN, regions=("r1", "r2"), tls=True, readers=2)
    try:
        env.cli("up", "--timeout-ms", "30000")
        ep, addrs = endpoints(env), addresses(env)
        log = os.path.join(env.dir, "bank.log")
        load = bank(env, ep["r1"]["global_writer"], 16000, log)
        wait_bank_ready(env, ep["r2"]["reader"], addrs["r2-r1"], addrs["r2-r2"])
        readers = ("r1-r2", "r2-r1", "r2-r2")  # r1-r1 becomes r1's writer below
        pids = {i: env.pids()[i] for i in readers}
        loop = ReadLoop(env, ep["r2"]["reader"], 100 * 1000)
        loop.start()
        time.sleep(2)
        # the primary's writer dies: a reader of r1 takes over, the agent follows its log,
        # the global writer endpoint follows it, the secondary's readers go on
        os.kill(env.pids()["r1-w1"], signal.SIGKILL)
        mtest.wait_for("r1-r1 is r1's writer", lambda: region_state(env, addrs, "r1").get(
            "state", {}).get("writer") == "r1-r1", timeout=30)
        env.cli("up", "--timeout-ms", "30000")  # r1-w1 returns, as a reader
        time.sleep(1.5)
        r = env.cli("switchover", "--to", "r2", "--json", timeout=120)
        first = json.loads(r.stdout.strip().splitlines()[-1])
        assert first["target"] == "r2" and first["epoch"] == 1, first
        # a client that cached the old primary's writer is refused, never served (the
        # writer restarts to stand by: until it listens again, its connections are refused)
        tries = []
        mtest.wait_for("r1-r1 answering", lambda: tries.append(post_sql(
            env, addrs["r1-r1"], "UPDATE accounts SET balance = 0")) or tries[-1][0] != 0,
            timeout=10)
        code, body = tries[-1]
        assert code == 503 and json.loads(body)["error"]["code"] in (
            "secondary_region", "draining"), (code, body)
        code, body = post_sql(env, addrs["r1-w1"], "UPDATE accounts SET balance = 0")
        assert code == 403 and json.loads(body)["error"]["code"] == "read_only", (code, body)
        time.sleep(3)
        r = env.cli("switchover", "--to", "r1", "--json", timeout=120)
        second = json.loads(r.stdout.strip().splitlines()[-1])
        assert second["target"] == "r1" and second["epoch"] == 2, second
        out = finish(load)
        loop.stop = True
        loop.join()
        assert out["ok"] > 0 and out["fail"] == 0, (out, fail_codes(log))
        assert not loop.errors, loop.errors[:5]
        assert loop.reads > 20, loop.reads
        assert {i: env.pids()[i] for i in readers} == pids, "a reader restarted"
        mtest.wait_for("r2 caught up", lambda: equal_checksums(env, addrs, "r1", "r2"),
                       timeout=30)
        c1 = bank_check(env, ep["r1"]["cluster"], log)
        c2 = bank_check(env, ep["r2"]["reader"], log, "--consistency", "session",
                        "--after-lsn", str(c1["read_lsn"]))
        assert c1["missing_count"] == 0 and c2["missing_count"] == 0, (c1, c2)
        d1 = dump(env, ep["r1"]["reader"], os.path.join(env.dir, "r1.dump"), c1["read_lsn"])
        d2 = dump(env, ep["r2"]["reader"], os.path.join(env.dir, "r2.dump"), c1["read_lsn"])
        assert d1 == d2, "the regions differ"
        assert metric(env, addrs["r2-agent"], "meridian_region_switchovers_total") == 1
        assert metric(env, addrs["r1-agent"], "meridian_region_switchovers_total") == 1
        print(f"switchovers: {first['elapsed_ms']} ms and {second['elapsed_ms']} ms; "
              f"bank {out}; {loop.reads} reads in r2")
        assert not env.sanitizer_reports(), env.sanitizer_reports()
    finally:
        env.cleanup()


def run_until(env, args, word):
    """Runs the CLI and kill -9s it as soon as a progress line names `word`; True if it did."""
    cmd = [os.path.join(BIN, "meridian"), args[0], env.topo, "--data", env.data, *args[1:]]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = False
    for line in p.stdout:
        if re.match(rf"\[\s*[\d.]+ s\] {re.escape(word)}\b", line):
            os.kill(p.pid, signal.SIGKILL)
            killed = True
            break
    p.wait(timeout=60)
    p.stdout.close()
    p.stderr.close()
    return killed


def switchover_crash():
    env = mtest.Env(BIN, regions=("r1", "r2"), tls=False, readers=1)
    try:
        env.cli("up", "--timeout-ms", "30000")
        ep, addrs = endpoints(env), addresses(env)
        log = os.path.join(env.dir, "bank.log")
        loads = [bank(env, ep[r]["global_writer"], 40000, log + r, clients=4)
                 for r in ("r1", "r2")]
        wait_bank_ready(env, ep["r1"]["cluster"])
        target, killed = "r2", []
        for step in ("drain", "promote", "open", "tell", "catch-up"):
            if run_until(env, ("switchover", "--to", target), step):
                killed.append(step)
                st = env.cli("status").stdout
                assert f"primary " in st and "region r1:" in st, st
                if step in ("drain", "catch-up"):  # nobody promoted yet: it says what to run,
                    old = "r1" if target == "r2" else "r2"  # unless the kill came before the post
                    assert ("under way" in st and f"--to {target}" in st) or \
                        f"region {old}: primary" in st, st
            r = env.cli("switchover", "--to", target, timeout=120)
            assert "done" in r.stdout, r.stdout
            target = "r1" if target == "r2" else "r2"
        assert len(killed) >= 3, killed
        # participants die midway: the old primary's writer while it drains, the target's
        # agent as it is promoted; `meridian up` starts them again, the next run completes
        old = "r2" if target == "r1" else "r1"
        for word, victim in (("drain", f"{old}-w1"), ("promote", f"{target}-agent")):
            cmd = [os.path.join(BIN, "meridian"), "switchover", env.topo, "--data", env.data,
                   "--to", target]
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for line in p.stdout:
                if re.match(rf"\[\s*[\d.]+ s\] {word}\b", line):
                    os.kill(env.pids()[victim], signal.SIGKILL)
                    break
            p.wait(timeout=120)
            p.stdout.close()
            p.stderr.close()
            env.cli("up", "--timeout-ms", "30000")
            r = env.cli("switchover", "--to", target, timeout=120)
            assert "done" in r.stdout, r.stdout
            target, old = old, target
        outs = [finish(p) for p in loads]
        for o in outs:
            assert o["ok"] > 0 and o["fail"] == 0, outs
        primary = old  # the last switchover made `old` (swapped) the primary
        other = "r1" if primary == "r2" else "r2"
        mtest.wait_for("the secondary caught up",
                       lambda: equal_checksums(env, addrs, primary, other), timeout=30)
        merged = os.path.join(env.dir, "all.log")
        with open(merged, "w") as f:
            for r in ("r1", "r2"):
                f.write(open(log + r).read())
        c = bank_check(env, ep[primary]["cluster"], merged)
        bank_check(env, ep[other]["reader"], merged, "--consistency", "session",
                   "--after-lsn", str(c["read_lsn"]))
        print(f"killed the CLI at {killed}; bank {outs}")
        assert not env.sanitizer_reports(), env.sanitizer_reports()
    finally:
        env.cleanup()


def unplanned_failover():
    env = mtest.Env(BIN, regions=("r1", "r2"), tls=False, readers=1)
    try:
        env.cli("up", "--timeout-ms", "30000")
        ep, addrs = endpoints(env), addresses(env)
        log = os.path.join(env.dir, "bank.log")
        load = bank(env, ep["r1"]["cluster"], 6000, log)
        wait_bank_ready(env, ep["r2"]["reader"], addrs["r2-r1"])
        time.sleep(1.5)
        pids = env.pids()
        r1 = [pid for ident, pid in pids.items() if ident.startswith("r1-")]
        # r1's agent stops first: r1 goes on acknowledging commits r2 never receives
        os.kill(pids["r1-agent"], signal.SIGSTOP)
        time.sleep(1)
        for pid in r1:
            os.kill(pid, signal.SIGSTOP)
        try:
            r = env.cli("failover", "--to", "r2", "--allow-data-loss", "--json", timeout=120)
            report = json.loads(r.stdout.strip().splitlines()[-1])
            assert report["target"] == "r2" and report["epoch"] == 1, report
            fork = report["fork_lsn"]
            finish(load)
            acked = acknowledged(log)
            kept = {i for i, lsn in acked.items() if lsn is not None and lsn <= fork}
            lost = {i: lsn for i, lsn in acked.items() if lsn is not None and lsn > fork}
            assert lost, f"the test needs commits r2 lacked (fork {fork})"
            # r2: the total holds; it has every transfer at or below the fork, none above
            more = os.path.join(env.dir, "r2.log")
            finish(bank(env, ep["r2"]["cluster"], 2000, more))
            c2 = bank_check(env, ep["r2"]["cluster"], more)
            ids = dumped_ids(dump(env, ep["r2"]["cluster"], os.path.join(env.dir, "a.dump"),
                                  c2["read_lsn"]))
            assert kept <= ids, sorted(kept - ids)[:10]
            assert not (set(lost) & ids), sorted(set(lost) & ids)[:10]
        finally:
            for pid in r1:
                os.kill(pid, signal.SIGCONT)
        # r1 returns: it learns epoch 1, saves its tail, refuses writes, rejoins
        adir = os.path.join(env.data, "r1-agent")
        mtest.wait_for("r1's divergent tail saved",
                       lambda: any(f.endswith(".json") and f.startswith("divergent-")
                                   for f in os.listdir(adir)), timeout=60)
        tail = json.load(open(os.path.join(adir, [f for f in os.listdir(adir)
                                                  if f.startswith("divergent-")
                                                  and f.endswith(".json")][0])))
        assert tail["fork_lsn"] == fork, (tail, fork)
        missing = {i: lsn for i, lsn in lost.items() if lsn not in tail["commit_lsns"]}
        assert not missing, (missing, tail)
        # the old writer restarts as a standby once it hears the state; from then on it
        # refuses (its storage already refuses its old epoch)
        mtest.wait_for("r1-w1 standing by", lambda: get_json(
            env, addrs["r1-w1"], "/v1/status").get("mode") == "standby", timeout=30)
        code, body = post_sql(env, addrs["r1-w1"], "UPDATE accounts SET balance = 0")
        assert code == 503 and json.loads(body)["error"]["code"] == "secondary_region", \
            (code, body)
        mtest.wait_for("r1 rejoined and caught up",
                       lambda: equal_checksums(env, addrs, "r2", "r1"), timeout=90)
        st = region_state(env, addrs, "r1")
        assert st["state"]["epoch"] == 1 and st["state"]["primary"] == "r2", st
        d2 = dump(env, ep["r2"]["cluster"], os.path.join(env.dir, "b.dump"), c2["read_lsn"])
        d1 = dump(env, ep["r1"]["reader"], os.path.join(env.dir, "c.dump"), c2["read_lsn"])
        assert d1 == d2, "r1 differs from r2 after rejoining"
        print(f"fork {fork}; {len(lost)} acknowledged transfers lost and saved in "
              f"{tail['commits']} commits of the tail; report {report}")
        assert not env.sanitizer_reports(), env.sanitizer_reports()
    finally:
        env.cleanup()


def frozen_primary():
    """A commit in flight when the whole primary region froze is not acknowledged after it
    wakes up deposed: the writer sees it was stopped and holds every answer until its
    agent, having heard from the other regions again, confirms it is still the writer."""
    env = mtest.Env(BIN, regions=("r1", "r2"), tls=False, readers=1)
    try:
        env.cli("up", "--timeout-ms", "30000")
        addrs = addresses(env)
        code, body = post_sql(env, addrs["r1-w1"], "CREATE TABLE t (x INTEGER)")
        assert code == 200, body
        mtest.wait_for("r2 caught up", lambda: equal_checksums(env, addrs, "r1", "r2"),
                       timeout=30)
        pids = env.pids()
        r1 = {i: p for i, p in pids.items() if i.startswith("r1-")}
        storage = [p for i, p in r1.items() if "-s" in i]
        for pid in storage:  # the commit below cannot become durable while they sleep
            os.kill(pid, signal.SIGSTOP)
        inflight = subprocess.Popen(
            ["curl", "-sS", "--max-time", "60", *env.curl_args(), "-o", "/dev/null", "-w",
             "%{http_code}", "-X", "POST", "-H", "content-type: application/json", "--data",
             json.dumps({"sql": "INSERT INTO t VALUES (42)"}),
             env.url(addrs["r1-w1"], "/v1/sql")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        rest = [p for i, p in r1.items() if "-s" not in i]
        for pid in rest:
            os.kill(pid, signal.SIGSTOP)
        try:
            env.cli("failover", "--to", "r2", "--allow-data-loss", timeout=120)
            time.sleep(1.5)  # well past the writer's stall threshold
        finally:
            for pid in storage + rest:
                os.kill(pid, signal.SIGCONT)
        out, err = inflight.communicate(timeout=90)
        assert out.strip() != "200", ("a deposed writer acknowledged a commit", out, err)
        log = open(os.path.join(env.data, "r1-w1", "meridiand.log")).read()
        assert "writer_stalled" in log, log[-3000:]
        mtest.wait_for("r1 rejoined and caught up",
                       lambda: equal_checksums(env, addrs, "r2", "r1"), timeout=90)
        code, body = post_sql(env, addrs["r2-w1"], "SELECT count(*) FROM t WHERE x = 42")
        assert code == 200 and json.loads(body)["results"][0]["rows"][0][0] == 0, body
        print(f"the in-flight commit got {out.strip() or err.strip()[:80]!r}, not 200")
        assert not env.sanitizer_reports(), env.sanitizer_reports()
    finally:
        env.cleanup()


def writer_kill():
    env = mtest.Env(BIN, regions=("r1",), tls=False, readers=2)
    try:
        env.cli("up", "--timeout-ms", "30000")
        ep, addrs = endpoints(env), addresses(env)
        log = os.path.join(env.dir, "bank.log")
        load = bank(env, ep["r1"]["cluster"], 6000, log)
        wait_bank_ready(env, ep["r1"]["cluster"])
        time.sleep(1.5)
        # the writer dies; the reader the agent will choose (r1-r1, priority 1) is stopped
        # 0.7 s later, while still counted fresh (it answered within the last second): it is
        # named, and cannot start as the writer until it resumes 2 s after. A writer just
        # named has AG_WRITER_START_MS (5 s) to first answer: the agent waits for it
        # instead of naming r1-r2 a second later
        pids = env.pids()
        os.kill(pids["r1-w1"], signal.SIGKILL)
        time.sleep(0.7)
        os.kill(pids["r1-r1"], signal.SIGSTOP)
        try:
            mtest.wait_for("a writer named", lambda: region_state(env, addrs, "r1").get(
                "state", {}).get("writer") != "r1-w1", timeout=30, interval=0.05)
            time.sleep(2.0)
        finally:
            os.kill(pids["r1-r1"], signal.SIGCONT)
        out = finish(load)
        assert out["ok"] > 0 and out["fail"] == 0, out
        c = bank_check(env, ep["r1"]["cluster"], log)
        st = region_state(env, addrs, "r1")["state"]
        assert st["writer"] == "r1-r1" and st["writer_gen"] == 1, st  # priority 1 < 2, once
        env.cli("up", "--timeout-ms", "30000")  # the old writer returns ...
        mtest.wait_for("r1-w1 back as a reader", lambda: get_json(
            env, addrs["r1-w1"], "/v1/status").get("role") == "reader", timeout=30)
        code, _ = post_sql(env, addrs["r1-w1"], "UPDATE accounts SET balance = 0")
        assert code != 200
        bank_check(env, ep["r1"]["reader"], log, "--consistency", "session", "--after-lsn",
                   str(c["read_lsn"]))
        assert metric(env, addrs["r1-agent"], "meridian_region_writer_changes_total") == 1
        print(f"bank across the writer's kill: {out}")
        assert not env.sanitizer_reports(), env.sanitizer_reports()
    finally:
        env.cleanup()


if __name__ == "__main__":
    CASES = [("switchover_bank", switchover_bank), ("switchover_crash", switchover_crash),
             ("unplanned_failover", unplanned_failover), ("frozen_primary", frozen_primary),
             ("writer_kill", writer_kill)]
    # MRD_FAILOVER_CASES=switchover_crash,writer_kill runs only those (for repeating one case)
    only = [c for c in os.environ.get("MRD_FAILOVER_CASES", "").split(",") if c]
    mtest.run_tests([c for c in CASES if not only or c[0] in only])
