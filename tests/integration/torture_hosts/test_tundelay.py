"""tools/tundelay and the test hosts' faults (tools/torturelib/hosts.py), measured with
real packets between network namespaces: the one-way delay is what was set, in each
direction, and 1 ms between two AZs of a region (none to the hub); jitter spreads
packets without reordering them; a delay change applies
at once; a cut link drops everything, packets already held included, and a healed
one carries again; an isolated region reaches no other region while the hub still
reaches it; a partitioned AZ reaches nobody. Cleanup leaves nothing, whether the
harness closes, is sent SIGTERM, or is killed and `--cleanup STATEFILE` runs after."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
import mtest  # noqa: E402
from probes import Probes  # noqa: E402
from tools.torturelib.hosts import Hosts, leftovers  # noqa: E402

BIN = sys.argv[1]
TUNDELAY = os.path.join(BIN, "tundelay")
R1A, R1B, R2A, R2B, HUB = ("r1", "a"), ("r1", "b"), ("r2", "a"), ("r2", "b"), None
AZ_DELAY_MS = 1


def ordered(got):
    seqs = [s for s, _ in got]
    return seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def one_way(got):
    return [ms for _, ms in got]


def median(xs):
    return sorted(xs)[len(xs) // 2]


# This machine is shared (load far above its cores): a process may stall for tens of
# ms, delaying a datagram's receipt. Lower bounds are exact (nothing beats the delay);
# upper bounds hold for the median, and only loosely for the worst case.
STALL_MS = 250


def tundelay_counters(hosts):
    """The last counters line of the r1-r2 link's tundelay log, as a dict."""
    link = hosts.links[("r1", "r2")]
    with open(link["log"]) as f:
        line = [l for l in f if "read=" in l][-1]
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def check_one_way(pr, pairs, delay_ms, what):
    """50 datagrams each way of pairs: every one, in order, none before delay_ms."""
    for src, dst, port in pairs:
        got = pr.udp(src, dst, port, count=50, gap_ms=5)
        ms = one_way(got)
        print(f"  one way {src}->{dst} ({what}): {len(got)}/50, {min(ms):.2f}..{max(ms):.2f} "
              f"ms, median {median(ms):.2f}")
        assert len(got) == 50 and ordered(got), got
        assert delay_ms <= min(ms) and median(ms) < delay_ms + 10, ms
        assert max(ms) < delay_ms + STALL_MS, ms


def check_delay(hosts, pr):
    check_one_way(pr, ((R1A, R2A, 9101), (R2B, R1B, 9102)), 40, "regions")
    # between two AZs of a region: the region's AZ link
    check_one_way(pr, ((R1A, R1B, 9103), (R2B, R2A, 9104)), AZ_DELAY_MS, "AZs")
    # to the hub: no delay link on the way
    pr.listen(R1B, 9200)
    pr.listen(R2A, 9200)
    same = pr.connect(R1A, R1B, 9200, count=5)
    hub = pr.connect(HUB, R2A, 9200, count=5)
    cross = pr.connect(R1A, R2A, 9200, count=5)
    print(f"  tcp connect: between AZs {same}, hub {hub}, across regions {cross}")
    assert min(same) >= 2 * AZ_DELAY_MS and median(same) < 20, same
    assert median(hub) < 20, hub
    assert min(cross) >= 80, cross


def check_jitter_and_spike(hosts, pr):
    # datagrams further apart than the jitter's span: each one's own delay, 40..60 ms
    hosts.set_delay("r1", "r2", 50, 10)
    got = pr.udp(R1A, R2A, 9103, count=80, gap_ms=25)
    ms = one_way(got)
    print(f"  jitter 50±10, 25 ms apart: {len(got)}/80, {min(ms):.1f}..{max(ms):.1f} ms, "
          f"median {median(ms):.1f}")
    assert len(got) == 80 and ordered(got), got
    assert 40 <= min(ms) < 45 and max(ms) >= 55 and 44 <= median(ms) <= 56 + 5, ms
    # 1 ms apart: jitter would reorder them; the link keeps each direction's order
    got = pr.udp(R1A, R2A, 9107, count=300, gap_ms=1)
    ms = one_way(got)
    print(f"  jitter 50±10, 1 ms apart: {len(got)}/300 in order {ordered(got)}, "
          f"{min(ms):.1f}..{max(ms):.1f} ms")
    assert len(got) == 300 and ordered(got), got[:20]
    assert 40 <= min(ms) and median(ms) < 60 + 10, ms
    hosts.set_delay("r1", "r2", 300, 0)  # a spike
    spike = pr.connect(R1A, R2A, 9200, count=2)
    print(f"  spike 300 ms: tcp connect {spike}")
    assert min(spike) >= 600, spike
    hosts.set_delay("r1", "r2", 40, 0)
    back = pr.connect(R1A, R2A, 9200, count=3)
    print(f"  back to 40 ms: tcp connect {back}")
    assert 80 <= min(back) < 80 + STALL_MS, back


def check_blackhole(hosts, pr):
    before = int(tundelay_counters(hosts)["dropped_blackhole"])
    key = hosts.partition_regions("r1", "r2")
    got = pr.udp(R1A, R2A, 9104, count=20, gap_ms=5)
    cut = pr.connect(R1A, R2A, 9200, count=1, timeout_s=1)
    hub = pr.connect(HUB, R2A, 9200, count=1) + pr.connect(HUB, R1B, 9200, count=1)
    print(f"  cut: udp {len(got)}/20, tcp {cut}, hub still {hub}")
    assert got == [] and cut == ["timeout"], (got, cut)
    assert all(isinstance(x, float) for x in hub), hub
    hosts.heal(key)
    got = pr.udp(R1A, R2A, 9105, count=20, gap_ms=5)
    assert len(got) == 20 and ordered(got), got
    # packets held in the link when it is cut are lost with it
    hosts.set_delay("r1", "r2", 500, 0)

    def cut_while_held():  # all 10 sent within ~50 ms; each due 500 ms after it left
        k = hosts.partition_regions("r1", "r2")
        time.sleep(0.1)
        hosts.heal(k)
    got = pr.udp(R1A, R2A, 9106, count=10, gap_ms=5, during=cut_while_held, quiet_s=1.5)
    print(f"  cut while 10 datagrams were held: {len(got)} arrived")
    assert got == [], got
    hosts.set_delay("r1", "r2", 40, 0)
    counters = tundelay_counters(hosts)
    print(f"  tundelay counters: {counters}")
    assert int(counters["dropped_blackhole"]) - before >= 30, counters


def check_isolate_and_az(hosts, pr):
    pr.listen(R2B, 9201)
    key = hosts.isolate_region("r1")
    cross = pr.connect(R1A, R2A, 9200, count=1, timeout_s=1)
    back = pr.connect(R2B, R1B, 9200, count=1, timeout_s=1)
    inside = pr.connect(R1A, R1B, 9200, count=1)
    hub = pr.connect(HUB, R1B, 9200, count=1) + pr.connect(HUB, R2A, 9200, count=1)
    print(f"  r1 isolated: r1->r2 {cross}, r2->r1 {back}, inside r1 {inside}, hub {hub}")
    assert cross == ["timeout"] and back == ["timeout"], (cross, back)
    assert all(isinstance(x, float) for x in inside + hub), (inside, hub)
    hosts.heal(key)
    key = hosts.isolate_region("r1", mode="reject")
    rejected = pr.connect(R1A, R2A, 9200, count=1, timeout_s=1)
    print(f"  r1 isolated (reject): {rejected}")
    assert rejected != ["timeout"] and not isinstance(rejected[0], float), rejected
    hosts.heal(key)
    assert isinstance(pr.connect(R1A, R2A, 9200, count=1)[0], float)

    key = hosts.partition_az("r1", "b")
    results = {"r1a->r1b": pr.connect(R1A, R1B, 9200, count=1, timeout_s=1),
               "hub->r1b": pr.connect(HUB, R1B, 9200, count=1, timeout_s=1),
               "r1b->r2b": pr.connect(R1B, R2B, 9201, count=1, timeout_s=1),
               "r1a->r2a": pr.connect(R1A, R2A, 9200, count=1)}
    print(f"  az r1/b partitioned: {results}")
    for name in ("r1a->r1b", "hub->r1b", "r1b->r2b"):
        assert not isinstance(results[name][0], float), results
    assert isinstance(results["r1a->r2a"][0], float), results
    hosts.heal(key)
    mtest.wait_for("r1/b reachable again",
                   lambda: isinstance(pr.connect(HUB, R1B, 9200, count=1)[0], float),
                   timeout=10)


def gone(hosts, pids):
    left = leftovers(hosts.prefix)
    left += [f"pid {p}" for p in pids if os.path.exists(f"/proc/{p}")
             and open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    return left


def test_links():
    hosts = Hosts(regions=("r1", "r2"), azs=("a", "b"), delay_ms=40, tundelay=TUNDELAY,
                  az_delay_ms=AZ_DELAY_MS)
    pr = Probes(hosts)
    pids = [l["pid"] for l in hosts.all_links()]
    try:
        print(f"  run {hosts.prefix}: state {hosts.state.path}")
        check_delay(hosts, pr)
        check_jitter_and_spike(hosts, pr)
        check_blackhole(hosts, pr)
        check_isolate_and_az(hosts, pr)
        pids += [p.pid for p in pr.procs]
    finally:
        left = hosts.close(keep_files=True)  # the tundelay logs, read below
        pr.close()
    assert left == [], left
    assert gone(hosts, pids) == [], gone(hosts, pids)
    reports, stopped = [], 0
    for log in glob.glob(os.path.join(hosts.dir, "*.log")):
        with open(log, errors="replace") as f:
            text = f.read()
        stopped += "event=tundelay_stopped" in text
        reports += [l for l in text.splitlines()
                    if "Sanitizer" in l or "runtime error:" in l]
    if not os.environ.get("MRD_TEST_KEEP"):
        shutil.rmtree(hosts.dir)
    # three links (r1-r2, r1's AZs, r2's AZs), each ended by SIGTERM
    assert stopped == 3 and reports == [], (stopped, reports)


def held_run():
    """A harness in a process of its own holding a layout; returns it and its state file."""
    p = subprocess.Popen([sys.executable, "-m", "tools.torturelib.hosts", "--up", "r1,r2",
                          "--delay-ms", "5", "--tundelay", TUNDELAY], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()
    assert first.startswith("hosts: run "), (first, p.stderr.read() if p.poll() else "")
    prefix, state = first.split()[2].rstrip(","), first.split()[-1]
    mtest.wait_for("the layout printed", lambda: "Ctrl-C" in p.stdout.readline(), timeout=30)
    return p, prefix, state


def test_cleanup_paths():
    # SIGTERM: the harness's handler removes everything
    p, prefix, state = held_run()
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{prefix}-hub" in ns and f"{prefix}-r2-c" in ns, ns
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    p.stdout.close()
    p.stderr.close()
    assert leftovers(prefix) == [], leftovers(prefix)
    assert not os.path.exists(state), state
    # SIGKILL: nothing runs the handler; --cleanup STATEFILE removes what it recorded
    p, prefix, state = held_run()
    with open(state) as f:
        pids = [x["pid"] for x in json.load(f)["processes"]]
    p.kill()
    p.wait(timeout=30)
    p.stdout.close()
    p.stderr.close()
    assert leftovers(prefix) != [], "a killed harness left nothing to clean?"
    r = subprocess.run([sys.executable, "-m", "tools.torturelib.hosts", "--cleanup", state],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    print(f"  --cleanup: {r.stdout.strip()}")
    assert r.returncode == 0 and "clean" in r.stdout, (r.stdout, r.stderr)
    assert leftovers(prefix) == [], leftovers(prefix)
    assert all(not mtest.proc_runs(pid, "tundelay", "--dev") for pid in pids), pids


mtest.run_tests([("links", test_links), ("cleanup_paths", test_cleanup_paths)])
