"""The storage node role against real processes: `meridian up --role storage`
starts a region's six storage nodes (its writer would claim the volume), and
storage_client acts as the writer
(docs/storage-protocol.md). Checked: appends are acknowledged with the right
SCL; a node killed with -9 and restarted fills its gap from its peers without
the writer; pages read as of an LSN are the expected bytes, from memory and
from the page file; a stale epoch is refused; after kill -9 of all six every
acknowledged record is still there; a log whose tail was cut and damaged is
recovered and gap filling restores what it lost."""

import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import mtest  # noqa: E402

BIN = sys.argv[1]
CLIENT = sys.argv[2]
SEGS = range(6)
BATCH = 60  # records per append step


class Cluster:
    def __init__(self, tls):
        self.env = mtest.Env(BIN, name="st", tls=tls)

    def client(self, *args, timeout=60):
        cmd = [CLIENT, self.env.topo, self.env.data, *map(str, args)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr}")
        if args[0] == "get":
            return r.stdout
        return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]

    def status(self, seg):
        out = self.client("get", "/v1/status", seg)
        return json.loads(out) if out.startswith("{\"id\"") else None

    def pg0_scl(self, seg):
        st = self.status(seg)
        if not st:
            return -1
        return next((p["scl"] for p in st["pgs"] if p["pg"] == 0), 0)

    def node_id(self, seg):
        return f"r1-s{seg + 1}"

    def kill9(self, seg):
        ident = self.node_id(seg)
        pid = self.env.pids()[ident]
        assert mtest.pid_is(pid, ident), f"{ident} is not running as pid {pid}"
        os.kill(pid, signal.SIGKILL)
        mtest.wait_for(f"{ident} gone", lambda: not mtest.pid_is(pid, ident))

    def log_of(self, seg):
        with open(os.path.join(self.env.data, self.node_id(seg), "meridiand.log")) as f:
            return f.read()


def wait_quiet_epoch(c):
    """What the volume holds once nothing else moves it (a region's writer would fence
    and write at start; with storage nodes alone this settles at once)."""
    seen, stable_since = None, time.monotonic()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rec = c.client("recover")[0]
        key = (rec["epoch_max"], rec["highest"])
        if rec["answered"] == 6 and key == seen and time.monotonic() - stable_since > 1.0:
            return rec
        if key != seen:
            seen, stable_since = key, time.monotonic()
        time.sleep(0.2)
    raise AssertionError(f"the volume's epoch did not settle: {seen}")


def append(c, epoch, first, last, prev, vdl, nodes=None):
    args = ["append", epoch, first, last, prev, prev, vdl]
    if nodes is not None:
        args.append(nodes)
    return {a["seg"]: a for a in c.client(*args)}


def expect_acks(acks, segs, epoch, last):
    for seg in segs:
        a = acks[seg]
        assert a["status"] == 200, a
        assert a["epoch"] == epoch and a["pg"] == 0, a
        assert a["durable"] == last and a["scl"] == last, a


def expect_pages(c, first, lsn, segs="012345"):
    res = c.client("pages", first, lsn, segs)
    for r in res:
        assert r["ok"] == 8 and r["wrong"] == 0, r


def expect_all_records(c, first, last, segs="012345"):
    """Every record first..last, as the node serves it to peers: from memory, or from its
    log once it forgot it."""
    for r in c.client("records", segs):
        assert "lsns" in r, r
        held = set(r["lsns"])
        missing = [lsn for lsn in range(first, last + 1) if lsn not in held]
        assert not missing, f"segment {r['seg']} lost {missing[:10]}..."
        assert int(r["scl"]) >= last, r


def damage_tail(c, seg):
    """Cuts bytes off the last segment log file and flips a byte before the cut."""
    logdir = os.path.join(c.env.data, c.node_id(seg), "seglog")
    last = sorted(f for f in os.listdir(logdir) if f.startswith("seg-"))[-1]
    path = os.path.join(logdir, last)
    size = os.path.getsize(path)
    assert size > 2000, size
    with open(path, "r+b") as f:
        f.truncate(size - 37)
        f.seek(size - 37 - 700)
        b = f.read(1)
        f.seek(size - 37 - 700)
        f.write(bytes([b[0] ^ 0x5A]))
    return path


def scenario(tls):
    c = Cluster(tls)
    try:
        r = c.env.cli("up", "--role", "storage")
        assert "6 processes healthy" in r.stdout, r.stdout
        rec = wait_quiet_epoch(c)
        epoch, base, head = rec["epoch_max"] + 1, rec["highest"], rec["pg0_head"]

        # Fence, then a stale fence.
        for f in c.client("fence", epoch, base):
            assert f["status"] == 200 and f["epoch"] == epoch, f
        stale = c.client("fence", epoch - 1, base, "0")[0]
        assert stale["status"] == 409 and "stale_epoch" in stale["body"], stale

        # Appends acknowledged with the SCL; pages as of the last LSN.
        last = base + BATCH
        expect_acks(append(c, epoch, base + 1, last, head, last), SEGS, epoch, last)
        expect_pages(c, base + 1, last)
        again = append(c, epoch, base + 1, last, head, last, "1")  # duplicates: acked again
        expect_acks(again, [1], epoch, last)

        # Stale and future epochs, reads that need more than the node has.
        a = append(c, epoch - 1, last + 1, last + 1, last, last, "0")[0]
        assert a["status"] == 409 and "stale_epoch" in a["body"], a
        a = append(c, epoch + 1, last + 1, last + 1, last, last, "0")[0]
        assert a["status"] == 409 and "fence_required" in a["body"], a
        g = c.client("get", f"/v1/page?page=200&lsn={last + 5}", "0")
        assert 'incomplete' in g and f"complete to lsn {last}" in g, g
        g = c.client("get", "/v1/page?page=99999999&lsn=1", "0")
        assert '"status":400' in g, g
        metrics = c.client("get", "/metrics", "0")
        for name in ("meridian_storage_records_received_total",
                     "meridian_storage_bytes_received_total",
                     "meridian_storage_fsync_batches_total",
                     "meridian_storage_fsync_seconds_bucket",
                     "meridian_storage_gap_fill_records_total",
                     'meridian_storage_scl{pg="0"}'):
            assert name in metrics, name
        assert "meridian_storage_stale_epoch_refusals_total 2" in metrics, metrics

        # kill -9 of one node; the others take more; restarted, it fills its gap.
        c.kill9(2)
        prev, last = last, last + BATCH
        acks = append(c, epoch, prev + 1, last, prev, last)
        expect_acks(acks, [0, 1, 3, 4, 5], epoch, last)
        assert acks[2]["status"] == 0, acks[2]  # unreachable
        r = c.env.cli("up", "--role", "storage")
        assert "starting r1-s3" in r.stdout and r.stdout.count("starting") == 1, r.stdout
        mtest.wait_for("r1-s3 catches up from its peers", lambda: c.pg0_scl(2) == last, 20)
        assert "event=gap_filled" in c.log_of(2)
        m = c.client("get", "/metrics", "2")
        gap = [l for l in m.splitlines() if l.startswith("meridian_storage_gap_fill_records_total")]
        assert gap and float(gap[0].split()[1]) >= BATCH, gap
        expect_pages(c, base + 1, last)

        # Materialized pages (the VDL allows it) read back the same, from the page file.
        mtest.wait_for("materialization", lambda: all(
            c.status(s)["pgs"][0]["materialized"] == last for s in SEGS), 20)
        expect_pages(c, base + 1, last)
        g = c.client("get", f"/v1/page?page=200&lsn={base + 1}", "0")
        assert '"status":410' in g and 'gone' in g, g

        # kill -9 of all six: every acknowledged record is still there.
        for seg in SEGS:
            c.kill9(seg)
        c.env.cli("up", "--role", "storage")
        mtest.wait_for("all six complete", lambda: all(c.pg0_scl(s) == last for s in SEGS), 20)
        expect_all_records(c, base + 1, last)
        expect_pages(c, base + 1, last)
        prev, last = last, last + BATCH  # and they take more, unmaterialized this time
        expect_acks(append(c, epoch, prev + 1, last, prev, prev), SEGS, epoch, last)
        expect_pages(c, base + 1, last)

        # A log whose tail was cut and damaged while the node was down.
        c.kill9(4)
        damage_tail(c, 4)
        c.env.cli("up", "--role", "storage")
        mtest.wait_for("r1-s5 restored by gap fill", lambda: c.pg0_scl(4) == last, 20)
        log = c.log_of(4)
        assert "event=log_tail_cut" in log and 'reason="bad crc"' in log, log[-3000:]
        assert log.count("event=gap_filled") >= 1, log[-3000:]
        expect_all_records(c, base + 1, last, "4")
        expect_pages(c, base + 1, last, "4")

        r = c.env.cli("down", "--role", "storage")
        assert "6 processes stopped" in r.stdout, r.stdout
        for seg in SEGS:  # a clean stop: everything closed and freed
            assert "event=storage_closed" in c.log_of(seg), c.log_of(seg)[-2000:]
        reports = c.env.sanitizer_reports()
        assert not reports, reports
    finally:
        c.env.cleanup()


def test_storage_tls():
    scenario(tls=True)


if __name__ == "__main__":
    mtest.run_tests([("storage_nodes_tls", test_storage_tls)])
