"""Meridian on separate network hosts (tools/torturelib/hosts.py): two regions of three
AZs, each AZ a network namespace, 25 ms one way between the regions through the
project's delay link. `meridian up` places every process in its AZ's namespace
through MERIDIAN_SPAWN_WRAPPER, and `status`/`down` still find them by pid. A write
through r1's cluster endpoint is read back in r2 (session consistency at its LSN);
the round trip between the regions is at least 2 x 25 ms. Cutting the link between
the regions leaves r1 writing while r2 falls behind (the primary's agent reports the
lag, r2's agent its region watch timing out, r2's readers refuse a session read they
cannot serve); healing it brings r2 back to the same LSN and checksum. Cutting AZ c
of r1 off leaves writes working on the other four storage nodes; healing it brings
its two nodes back to the volume's VDL. Nothing of the run is left afterwards."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
import mtest  # noqa: E402
from probes import Probes  # noqa: E402
from tools.torturelib.hosts import Hosts, leftovers, net_ns_inode  # noqa: E402

BIN = sys.argv[1]
DELAY_MS = 25
AZ_DELAY_MS = 1
PROBE_PORT = 9300  # Meridian's ports on a host start at 7100


class HostEnv(mtest.Env):
    """mtest.Env on test hosts: the topology's addresses are the AZ hosts', the CLI runs
    in the hub with MERIDIAN_SPAWN_WRAPPER set."""

    def __init__(self, hosts, bindir):  # noqa: super().__init__ writes a loopback topology
        self.hosts = hosts
        self.bindir = bindir
        self.dir = tempfile.mkdtemp(prefix="mrd-it-hosts-")
        self.data = os.path.join(self.dir, "data")
        self.topo = os.path.join(self.dir, "topology.yaml")
        self.tls = False
        self.ids = []
        self.info = hosts.topology(self.topo, name="t", readers=2)
        self.env = hosts.spawn_env()

    def cli(self, *args, check=True, timeout=60):
        cmd = self.hosts.hub_cmd([os.path.join(self.bindir, "meridian"), args[0], self.topo,
                                  "--data", self.data, *args[1:]])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
        return r

    def sql(self, text, *extra, region=None, endpoint="cluster", check=True):
        args = ["sql", "--endpoint", endpoint, "--json"] + (["--region", region] if region else [])
        r = self.cli(*args, *extra, text, check=check)
        return json.loads(r.stdout) if r.returncode == 0 else r

    def get(self, ident, path="/v1/status"):
        addr = self.info["nodes"][ident]["address"]
        r = subprocess.run(self.hosts.hub_cmd(["curl", "-sS", "--max-time", "5",
                                               *self.curl_args(), self.url(addr, path)]),
                           capture_output=True, text=True)
        try:
            return json.loads(r.stdout)
        except ValueError:
            return {}

    def log(self, ident):
        with open(os.path.join(self.data, ident, "meridiand.log"), errors="replace") as f:
            return f.read()


def secondary(env):
    """r2 as the primary's agent sees it."""
    regions = {r["name"]: r for r in env.get("r1-agent").get("regions", [])}
    return regions.get("r2", {})


def caught_up(env):
    p, s = env.get("r1-agent"), env.get("r2-agent")
    r2 = {r["name"]: r for r in p.get("regions", [])}.get("r2", {})
    return (r2.get("lsn_gap") == 0 and p.get("durable_lsn", 0) >= env.get("r1-w1").get("vdl", 1)
            and s.get("checksum_lsn") == p.get("checksum_lsn") and "checksum" in s)


def check_placement(env):
    """Every process runs in its own AZ's namespace, not in the machine's own."""
    pids = env.pids()
    own = net_ns_inode(os.getpid())
    status = {p["id"]: p for p in env.status()["processes"]}
    for ident, node in env.info["nodes"].items():
        pid = pids.get(ident)
        assert pid and mtest.pid_is(pid, ident), (ident, pid)
        ns = env.hosts.ns_inode(node["ns"])
        assert net_ns_inode(pid) == ns != own, (ident, pid, net_ns_inode(pid), ns)
        assert status[ident]["pid"] == pid and status[ident]["state"] == "running", status[ident]
    print(f"  {len(pids)} processes, each in its AZ's namespace "
          f"(e.g. r2-s5 pid {pids['r2-s5']} in {env.info['nodes']['r2-s5']['ns']})")


def check_write_read(env):
    env.sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    w = env.sql("INSERT INTO t VALUES (1, 'first')")
    assert w["region"] == "r1" and w["lsn"] > 0, w
    got = env.sql("SELECT id, v FROM t", "--consistency", "session", "--after-lsn", str(w["lsn"]),
                  region="r2", endpoint="reader")
    print(f"  write at LSN {w['lsn']} in r1, read in r2 by {got['instance']}: "
          f"{got['results'][0]['rows']}")
    assert got["region"] == "r2" and got["results"][0]["rows"] == [[1, "first"]], got


def check_rtt(env, pr):
    pr.listen(("r2", "b"), PROBE_PORT)
    pr.listen(("r1", "b"), PROBE_PORT)
    cross = pr.connect(("r1", "a"), ("r2", "b"), PROBE_PORT, count=5)
    same = pr.connect(("r1", "a"), ("r1", "b"), PROBE_PORT, count=5)
    print(f"  tcp connect r1/a -> r2/b: {cross} ms; r1/a -> r1/b: {same} ms")
    assert all(isinstance(x, float) for x in cross + same), (cross, same)
    assert min(cross) >= 2 * DELAY_MS, cross
    assert min(same) >= 2 * AZ_DELAY_MS and sorted(same)[2] < 2 * DELAY_MS, same
    return cross


def writes(env, first, count):
    """count single-row inserts through r1's cluster endpoint; returns the last answer."""
    last = None
    for i in range(first, first + count):
        last = env.sql(f"INSERT INTO t VALUES ({i}, 'row {i}')")
        assert last["region"] == "r1", last
    return last


def check_region_partition(env):
    watch_timeouts = env.log("r2-agent").count("event=region_watch_timeout region=r1")
    key = env.hosts.partition_regions("r1", "r2")
    t_cut = time.monotonic()
    last = writes(env, 100, 10)  # r1 goes on writing
    mtest.wait_for("the primary's agent to report r2 lagging",
                   lambda: secondary(env).get("lag_ms", 0) >= 2000
                   and secondary(env).get("lsn_gap", 0) > 0, timeout=30)
    mtest.wait_for("r2's agent to log its watch of r1 timing out",
                   lambda: env.log("r2-agent").count("event=region_watch_timeout region=r1")
                   > watch_timeouts, timeout=30)
    # a silent cut is noticed (HTTP/2 liveness): both ends drop the replication stream
    mtest.wait_for("both agents to see the replication stream down",
                   lambda: secondary(env).get("stream") != "streaming"
                   and env.get("r2-agent").get("stream") is False, timeout=30)
    stale = env.sql("SELECT count(*) FROM t", "--consistency", "session", "--after-lsn",
                    str(last["lsn"]), region="r2", endpoint="reader", check=False)
    assert isinstance(stale, subprocess.CompletedProcess) and "lagging" in stale.stderr, stale
    r2, s = secondary(env), env.get("r2-agent")
    print(f"  cut r1-r2 for {time.monotonic() - t_cut:.1f} s: r1 wrote up to LSN {last['lsn']}; "
          f"primary's agent: r2 lag_ms {r2['lag_ms']} lsn_gap {r2['lsn_gap']} stream "
          f"{r2.get('stream')}; r2's agent: durable_lsn {s.get('durable_lsn')} stream "
          f"{s.get('stream')}; session read in r2: {stale.stderr.strip()[:120]}")
    env.hosts.heal(key)
    t_heal = time.monotonic()
    mtest.wait_for("r2 to catch up after the heal", lambda: caught_up(env), timeout=180,
                   interval=0.2)
    print(f"  healed: r2 caught up {time.monotonic() - t_heal:.1f} s later")
    got = env.sql("SELECT count(*) FROM t", "--consistency", "session", "--after-lsn",
                  str(last["lsn"]), region="r2", endpoint="reader")
    assert got["results"][0]["rows"] == [[11]], got


def nodes_scl(env):
    return {p["id"]: p.get("scl") for p in env.status()["processes"] if p["role"] == "storage"
            and p["region"] == "r1"}


def reader_endpoint_reads(env, count, max_s=5):
    """count reads through r1's reader endpoint at once (curl, max_s each): who answered."""
    url = env.url(env.info["regions"]["r1"]["reader"], "/v1/sql")
    ps = [subprocess.Popen(env.hosts.hub_cmd(["curl", "-sS", "--max-time", str(max_s),
                                              *env.curl_args(),
                                              "-d", '{"sql": "SELECT count(*) FROM t"}', url]),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for _ in range(count)]
    out = []
    for p in ps:
        o, e = p.communicate(timeout=30)
        try:
            out.append(json.loads(o)["instance"])
        except (ValueError, KeyError):
            out.append("failed: " + (e or o).strip()[:80])
    return out


def check_az_partition(env):
    key = env.hosts.partition_az("r1", "c")
    t0 = time.monotonic()
    # reads sent at the cut, some to the reader in AZ c: its connection dies silently,
    # the router notices (no answer to its PINGs) and sends the read to another reader
    at_cut = reader_endpoint_reads(env, 6, max_s=20)
    print(f"  az r1/c cut: reads sent at the cut answered by {at_cut} "
          f"({time.monotonic() - t0:.1f} s)")
    assert all(not r.startswith("failed") for r in at_cut), at_cut
    times = []
    for i in range(200, 210):
        t = time.monotonic()
        writes(env, i, 1)
        times.append(round((time.monotonic() - t) * 1000))
    vdl = env.get("r1-w1")
    print(f"  az r1/c cut: 10 writes in {times} ms; writer vdl {vdl.get('vdl')} "
          f"storage_nodes_up {vdl.get('storage_nodes_up')} "
          f"({time.monotonic() - t0:.1f} s after the cut)")
    mtest.wait_for("the writer to count four storage nodes up",
                   lambda: env.get("r1-w1").get("storage_nodes_up") == 4, timeout=30)
    # the router stops choosing a reader whose health poll goes unanswered for
    # ROUTER_POLL_TIMEOUT_MS (1.5 s): r1-r2, in AZ c
    time.sleep(max(0.0, 2.5 - (time.monotonic() - t0)))
    reads = reader_endpoint_reads(env, 6)
    print(f"  az r1/c cut {time.monotonic() - t0:.1f} s: reads through r1's reader endpoint "
          f"answered by {reads}")
    assert reads == ["r1-r1"] * 6, reads
    env.hosts.heal(key)
    t_heal = time.monotonic()
    target = env.get("r1-w1")["vdl"]
    mtest.wait_for("r1's AZ c storage nodes back at the volume's VDL",
                   lambda: all((scl or 0) >= target for scl in nodes_scl(env).values()),
                   timeout=120, interval=0.2)
    print(f"  healed: every r1 storage node at SCL >= {target} "
          f"{time.monotonic() - t_heal:.1f} s later")
    writes(env, 300, 3)


def test_meridian_on_hosts():
    hosts = Hosts(regions=("r1", "r2"), delay_ms=DELAY_MS, az_delay_ms=AZ_DELAY_MS,
                  tundelay=os.path.join(BIN, "tundelay"))
    env = HostEnv(hosts, BIN)
    pr = Probes(hosts)
    pids = {}
    ok = False
    try:
        print(f"  run {hosts.prefix}: state {hosts.state.path}, data {env.data}")
        r = env.cli("up", "--timeout-ms", "90000", timeout=120)
        print("  " + r.stdout.strip().splitlines()[-1])
        pids = env.pids()
        check_placement(env)
        check_write_read(env)
        check_rtt(env, pr)
        check_region_partition(env)
        check_az_partition(env)
        mtest.wait_for("both regions at the same LSN and checksum", lambda: caught_up(env),
                       timeout=60)
        p, s = env.get("r1-agent"), env.get("r2-agent")
        assert p["checksum"] == s["checksum"], (p, s)
        print(f"  end: both regions at LSN {p['checksum_lsn']} checksum {p['checksum']}")
        assert not env.sanitizer_reports(), env.sanitizer_reports()
        r = env.cli("down", timeout=120)
        print("  " + r.stdout.strip().splitlines()[-1])
        running = [i for i, pid in pids.items() if mtest.pid_is(pid, i)]
        assert running == [], running
        ok = True
    finally:
        if not ok:
            for ident in ("r1-agent", "r2-agent", "r1-w1"):
                try:
                    print(f"--- {ident}\n" + "".join(l for l in env.log(ident).splitlines(True)
                                                      if "level=info" not in l)[-3000:])
                except OSError:
                    pass
        pr.close()
        env.cleanup()  # by pid, only what still runs
        left = hosts.close()
    assert left == [], left
    assert leftovers(hosts.prefix) == [], leftovers(hosts.prefix)
    alive = [i for i, pid in pids.items() if mtest.pid_is(pid, i)]
    alive += [f"tundelay {l['pid']}" for l in hosts.all_links()
              if mtest.proc_runs(l["pid"], "tundelay", l["dev"])]
    assert alive == [], alive
    assert os.environ.get("MRD_TEST_KEEP") or not os.path.exists(hosts.dir), hosts.dir
    print(f"  cleanup: no namespace, link or process of run {hosts.prefix} left")


if shutil.which("curl") is None:
    print("FAIL: curl is missing (tools/deps installs it)")
    sys.exit(1)
mtest.run_tests([("meridian_on_hosts", test_meridian_on_hosts)])
