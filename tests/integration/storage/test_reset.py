"""POST /v1/reset on real storage nodes (`meridian up --role storage`, no TLS,
volume-bench as the writer). Checked: bodies that are not {"node": "<this
node's id>"} are refused with 400 naming the field and change nothing; a
valid reset answers 200 {"reset": true, "node": ID}, refuses reads, appends
and fences with 503 resetting while it runs, and restarts the node in the
same pid, which comes up holding nothing (epoch 0, no PGs, an empty log, no
RESET marker) while its process log and lock stay; the volume goes on: a new
bench writes, the reset node is refilled by gap filling up to its peers'
SCLs, and volume-verify passes. Then a reset cut short: a node stopped with
SIGTERM and given a RESET marker by hand comes back empty, the marker gone,
and the volume still verifies and takes writes."""

import json
import os
import signal
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import mtest  # noqa: E402

BIN = sys.argv[1]
CLIENT = sys.argv[2]
META_EMPTY_BYTES = 44    # docs/storage-format.md: 44 + 16 F + 40 N, no fence, no PG
SEG_HEADER_BYTES = 32    # a segment log file holding no frame


class Nodes:
    def __init__(self, env):
        self.env = env
        self.addrs = {p["id"]: p["address"] for p in env.status()["processes"]}

    def dir(self, ident):
        return os.path.join(self.env.data, ident)

    def curl(self, ident, path, body=None, method=None):
        """(status, body text) of one request; (None, error) when it got no answer."""
        args = ["curl", "-sS", "--max-time", "10", *self.env.curl_args(), "-w", "\n%{http_code}"]
        if method is not None:
            args += ["-X", method]
        if body is not None:
            args += ["-H", "content-type: application/json", "--data-binary", body]
        args.append(self.env.url(self.addrs[ident], path))
        r = subprocess.run(args, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            return None, r.stderr
        text, _, code = r.stdout.rpartition("\n")
        return int(code), text

    def status(self, ident):
        code, text = self.curl(ident, "/v1/status")
        return json.loads(text) if code == 200 else None

    def pid(self, ident):
        return self.env.pids().get(ident)

    def log(self, ident):
        with open(os.path.join(self.dir(ident), "meridiand.log")) as f:
            return f.read()

    def event(self, ident, name):
        """The key=value fields of the last log line of event name (None: no such line)."""
        lines = [l for l in self.log(ident).splitlines() if f" event={name}" in l]
        return dict(kv.split("=", 1) for kv in lines[-1].split() if "=" in kv) if lines else None


def bench(env, log, records):
    r = env.cli("volume-bench", "--records", str(records), "--inflight", "32", "--log", log,
                "--json", timeout=180)
    out = json.loads(r.stdout)
    assert out["records"] == records and out["stopped_by"] == "records", out
    return out


def verify(env, log):
    r = env.cli("volume-verify", "--log", log, "--json", check=False, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] and out["mismatches"] == 0 and out["pages"] > 0, out
    assert out["recovered_vdl"] >= out["logged_vdl"], out


def expect_empty(n, ident):
    """What a node that never ran holds: its status and its files."""
    st = n.status(ident)
    assert st is not None and st["ready"], st
    assert (st["epoch"], st["scl"], st["vdl"], st["records"], st["pgs"]) == (0, 0, 0, 0, []), st
    d = n.dir(ident)
    assert not os.path.exists(os.path.join(d, "RESET")), os.listdir(d)
    for keep in ("LOCK", "meridiand.pid", "meridiand.log"):
        assert os.path.exists(os.path.join(d, keep)), (keep, os.listdir(d))
    with open(os.path.join(d, "meta"), "rb") as f:  # rewritten by the start: epoch 0, nothing
        meta = f.read()
    assert len(meta) == META_EMPTY_BYTES and meta[:4] == b"MRDM", meta.hex()
    n_pgs, epoch, n_fences = struct.unpack_from("<H", meta, 6)[0], *struct.unpack_from(
        "<QH", meta, 8)
    assert (n_pgs, epoch, n_fences) == (0, 0, 0), (n_pgs, epoch, n_fences)
    logdir = os.path.join(d, "seglog")
    sizes = [os.path.getsize(os.path.join(logdir, f)) for f in os.listdir(logdir)]
    assert sizes == [SEG_HEADER_BYTES], sizes  # a new log: one file, no frame
    assert os.listdir(os.path.join(d, "pages")) == [], os.listdir(os.path.join(d, "pages"))


def wait_refilled(n, ident, peer):
    """The reset node holds every PG its peer holds, complete to the same SCL."""
    def same():
        mine, theirs = n.status(ident), n.status(peer)
        if not mine or not theirs or not theirs["pgs"]:
            return False
        scl = {p["pg"]: p["scl"] for p in mine["pgs"]}
        return all(scl.get(p["pg"], -1) >= p["scl"] for p in theirs["pgs"])
    mtest.wait_for(f"{ident} refilled to {peer}'s SCLs", same, timeout=90)


def bad_bodies_change_nothing(n, ident):
    held = lambda st: [(p["pg"], p["scl"], p["durable"]) for p in st["pgs"]]  # noqa: E731
    before = n.status(ident)
    assert before["pgs"] and before["scl"] > 0 and before["epoch"] > 0, before
    bad = [
        ('{"node":"r1-s2"}', "node: 'r1-s2' is not this node (r1-s1)"),
        ("not json", "body: not JSON"),
        ("{}", "node: missing"),
        ('{"node":1}', "node: JSON number, expected a string"),
        ('["r1-s1"]', "JSON array, expected an object"),
        ('{"node":"r1-s1","also":1}', "unknown member 'also'"),
        ("", "body: empty"),
    ]
    for body, says in bad:
        code, text = n.curl(ident, "/v1/reset", body=body, method="POST")
        assert code == 400, (body, code, text)
        err = json.loads(text)["error"]
        assert err["code"] == "bad_request" and says in err["message"], (body, err)
    code, text = n.curl(ident, "/v1/reset")
    assert code == 405, (code, text)
    after = n.status(ident)
    assert after["pid"] == before["pid"] and after["started_at_ms"] == before["started_at_ms"]
    assert held(after) == held(before) and after["epoch"] == before["epoch"], after
    assert not os.path.exists(os.path.join(n.dir(ident), "RESET"))
    assert "event=reset_started" not in n.log(ident)


def reset_answers_then_restarts_empty(n, ident):
    """The reset, then right after its answer (same connection, before the restart)
    a read, an append and a fence: each 503 resetting (or, after a stall past the
    restart, the connection closed)."""
    before = n.status(ident)
    pid = n.pid(ident)
    assert pid == before["pid"], (pid, before)
    seg = str(int(ident.rsplit("s", 1)[1]) - 1)
    r = subprocess.run([CLIENT, n.env.topo, n.env.data, "reset", json.dumps({"node": ident}), seg],
                       capture_output=True, text=True, timeout=60)
    answers = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    assert r.returncode == 0 and len(answers) == 4, (r.returncode, r.stdout, r.stderr)
    first = answers[0]
    assert first["status"] == 200, first
    assert json.loads(first["body"]) == {"reset": True, "node": ident}, first
    # the node restarts 100 ms after the answer: a client stalled that long sees the
    # connection close instead (status 0) for what it sends after; the first is refused
    assert answers[1]["status"] == 503, answers[1]
    for a in answers[1:]:
        assert a["status"] in (503, 0), a
        if a["status"] == 503:
            assert json.loads(a["body"])["error"]["code"] == "resetting", a

    def back():
        st = n.status(ident)
        return st is not None and st["ready"] and st["started_at_ms"] > before["started_at_ms"]
    mtest.wait_for(f"{ident} back after its reset", back, timeout=30)
    st = n.status(ident)
    assert st["pid"] == pid and n.pid(ident) == pid and mtest.pid_is(pid, ident), (st, pid)
    expect_empty(n, ident)
    log = n.log(ident)
    for event in ("event=reset_started", "event=reset_marked", "event=reset_deleted",
                  'event=restarting reason="reset"', "event=reset_finished"):
        assert event in log, (event, log[-3000:])
    # the start after the answer had nothing left to delete: only the marker went
    assert n.event(ident, "reset_finished")["deleted"] == "0", n.event(ident, "reset_finished")
    assert int(n.event(ident, "reset_deleted")["deleted"]) > 0, n.event(ident, "reset_deleted")


def interrupted_reset_finishes_at_start(n, ident):
    pid = n.pid(ident)
    assert mtest.pid_is(pid, ident), (ident, pid)
    before = n.status(ident)
    assert before["pgs"] and before["scl"] > 0, before
    os.kill(pid, signal.SIGTERM)
    mtest.wait_for(f"{ident} stopped", lambda: not mtest.pid_is(pid, ident), timeout=20)
    with open(os.path.join(n.dir(ident), "RESET"), "w") as f:
        f.write("by hand: a reset a crash cut short\n")
    r = n.env.cli("up", "--role", "storage")
    assert f"starting {ident}" in r.stdout and r.stdout.count("starting") == 1, r.stdout
    expect_empty(n, ident)
    done = n.event(ident, "reset_finished")  # here the start did the deleting
    assert done is not None and int(done["deleted"]) > 0, done
    assert n.event(ident, "reset_started") is None, "no reset was requested of it"


def test_reset():
    env = mtest.Env(BIN, name="rs", tls=False)
    try:
        r = env.cli("up", "--role", "storage")
        assert "6 processes healthy" in r.stdout, r.stdout
        n = Nodes(env)
        log = os.path.join(env.dir, "bench.log")
        bench(env, log, 3000)

        bad_bodies_change_nothing(n, "r1-s1")
        reset_answers_then_restarts_empty(n, "r1-s1")

        # the volume goes on; the next writer's appends make r1-s1 fill its gaps
        bench(env, log, 2000)
        wait_refilled(n, "r1-s1", "r1-s2")
        verify(env, log)

        interrupted_reset_finishes_at_start(n, "r1-s3")
        verify(env, log)
        bench(env, log, 500)
        wait_refilled(n, "r1-s3", "r1-s2")
        verify(env, log)

        r = env.cli("down", "--role", "storage")
        assert "6 processes stopped" in r.stdout, r.stdout
        for i in range(1, 7):
            assert "event=storage_closed" in n.log(f"r1-s{i}"), f"r1-s{i}"
        reports = env.sanitizer_reports()
        assert not reports, reports
    finally:
        env.cleanup()


if __name__ == "__main__":
    mtest.run_tests([("storage reset: refused bodies, reset, restart, refill, cut short",
                      test_reset)])
