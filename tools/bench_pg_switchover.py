#!/usr/bin/env python3
"""The reference for Meridian's switchover: a planned PostgreSQL 15 switchover
on this machine, done the way a Patroni user would do it by hand, timed as
the writing client sees it. Prints one JSON object on stdout; progress goes
to stderr.

Each run builds a fresh pair on loopback (free ports, 127.0.0.1 only, unix
sockets in a temporary folder): a primary (wal_level replica,
synchronous_commit on, synchronous_standby_names '*' once the standby
streams) and a streaming standby made with pg_basebackup -R. A client
thread writes R single-row INSERTs per second, each with a fresh id,
through a libpq multi-host connection string with
target_session_attrs=read-write, so it always writes to the current primary
without being told which one it is (what a Patroni client without a proxy
does). Then the switchover:

  1. pg_ctl stop -m fast on the primary; wait for its postmaster to exit;
  2. read the primary's final WAL position from pg_controldata (the shutdown
     checkpoint is the last record it wrote) and wait until the standby has
     replayed past it — nothing acknowledged can be lost after this;
  3. pg_ctl promote -w on the standby;
  4. the client's first write accepted by the promoted standby.

write_outage_ms runs from the stop command (or the first failed write, if
one in flight when the stop began failed earlier) to the acknowledgement of
that first write. Afterwards every acknowledged id must be in the new
primary's table (lost_acknowledged). The medians of the runs are reported.

As in Patroni's synchronous mode (not strict), the standby carries
synchronous_standby_names '' so that, once promoted without a standby of its
own, it accepts writes at once; re-attaching the old primary as a standby
is not part of the measured outage and is not done here.

Runs as root: installs postgresql-15 and python3-psycopg2 with apt-get when
missing, runs the servers as the postgres user with initdb, pg_ctl and
pg_basebackup from /usr/lib/postgresql/15/bin (never the Debian cluster
tooling). Every postmaster is stopped by the pid in its postmaster.pid; the
temporary folder is removed, also on failure.

    python3 tools/bench_pg_switchover.py [--runs N] [--rate R]
"""

import argparse
import json
import os
import platform
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "integration", "lib"))
import mtest  # noqa: E402  (free loopback ports, shared with the tests)

PG_BIN = "/usr/lib/postgresql/15/bin"
PG_USER = "postgres"
DEBIAN_PYTHON = "/usr/bin/python3"
STEP_TIMEOUT_S = 60        # the longest any one step (start, stop, replay, promote) may take
WARMUP_S = 2               # steady load before the switchover
AFTER_S = 1                # load kept on the new primary before the check
POLL_S = 0.001             # our own polling interval while the clock runs


class BenchError(Exception):
    """A failure to report to the user in one line (exit status 1)."""


def log(msg):
    print(f"bench_pg_switchover: {msg}", file=sys.stderr, flush=True)


# --- Setup: packages, ports, the machine -------------------------------------

def apt_install(packages):
    """apt-get install, refreshing the package lists once if the first try fails."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    log(f"installing {' '.join(packages)}")
    if subprocess.run(cmd, env=env, stdout=sys.stderr, stderr=sys.stderr).returncode == 0:
        return
    subprocess.run(["apt-get", "update"], env=env, stdout=sys.stderr, stderr=sys.stderr)
    if subprocess.run(cmd, env=env, stdout=sys.stderr, stderr=sys.stderr).returncode != 0:
        raise BenchError(f"apt-get install {' '.join(packages)} failed")


def deb_installed(package):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True,
                       text=True)
    return r.returncode == 0 and r.stdout.endswith(" installed")


def have_psycopg2():
    try:
        import psycopg2  # noqa: F401
        return True
    except ImportError:
        return False


def ensure_installed():
    """Install what is missing. Note: installing postgresql-15 fresh lets Debian
    create (and maybe start) its default cluster on port 5432; we never use it.
    python3-psycopg2 is built for Debian's /usr/bin/python3: when this script
    runs under another python3 (pyenv, a venv) without psycopg2, it starts
    again under Debian's (exec, same pid, same arguments)."""
    missing = []
    if not os.access(os.path.join(PG_BIN, "initdb"), os.X_OK):
        missing.append("postgresql-15")
    if not have_psycopg2() and not deb_installed("python3-psycopg2"):
        missing.append("python3-psycopg2")
    if missing:
        apt_install(missing)
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        raise BenchError(f"no user {PG_USER!r} after installing postgresql-15")
    if not have_psycopg2():
        if os.path.realpath(sys.executable) == os.path.realpath(DEBIAN_PYTHON):
            raise BenchError("python3-psycopg2 is installed but psycopg2 does not import")
        log(f"psycopg2 comes from Debian: running again under {DEBIAN_PYTHON}")
        sys.stderr.flush()
        os.execv(DEBIAN_PYTHON, [DEBIAN_PYTHON, os.path.abspath(__file__), *sys.argv[1:]])


def machine(path):
    """One line: cores, CPU, kernel, and the filesystem the data directories were on."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    df = subprocess.run(["df", "--output=fstype,source", path], capture_output=True, text=True)
    fs = df.stdout.split("\n")[1].split() if df.returncode == 0 else ["unknown", "unknown"]
    return (f"{os.cpu_count()} x {cpu}, Linux {platform.release()}, "
            f"{fs[0]} on {fs[1]}, Debian {open('/etc/debian_version').read().strip()}")


# --- One server: its folder, its config, its postmaster ---------------------

def as_postgres(args, cwd, timeout=STEP_TIMEOUT_S):
    """Run a PostgreSQL program as the postgres user (it refuses root); raise on failure."""
    try:
        r = subprocess.run(["runuser", "-u", PG_USER, "--", *args], cwd=cwd,
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{os.path.basename(args[0])} took more than {timeout} s")
    if r.returncode != 0:
        raise BenchError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


class Node:
    """One PostgreSQL server: data directory, log file, port, and the postmaster
    pid read from postmaster.pid once it is up (kept so we stop it by pid)."""

    def __init__(self, tmp, name, port):
        self.tmp, self.name, self.port = tmp, name, port
        self.data = os.path.join(tmp, name)
        self.logfile = os.path.join(tmp, f"{name}.log")
        self.pid = None

    def configure(self, settings):
        """Append settings to postgresql.conf (a later line wins over an earlier one)."""
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"\n# tools/bench_pg_switchover.py, node {self.name}\n")
            for key, value in settings.items():
                f.write(f"{key} = '{value}'\n")

    def start(self, started):
        as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", self.logfile, "-w",
                     "-t", str(STEP_TIMEOUT_S), "start"], self.tmp)
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.pid = int(f.readline())
        started.append(self)
        log(f"{self.name}: postmaster pid {self.pid}, port {self.port}")

    def alive(self):
        """True when our postmaster still runs (the pid is not reused by another program)."""
        return self.pid is not None and postmaster_alive(self.pid, self.data)

    def dsn(self):
        return f"host=127.0.0.1 port={self.port} dbname=postgres user={PG_USER}"

    def log_tail(self, lines=20):
        try:
            with open(self.logfile) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


def postmaster_alive(pid, data):
    return mtest.proc_runs(pid, "postgres", data)


def stop_by_pid(node):
    """Fast shutdown (SIGINT) of the postmaster; immediate (SIGQUIT) after 20 s,
    SIGKILL after 5 more. The postmaster takes its children down with it."""
    for sig, wait_s in ((signal.SIGINT, 20), (signal.SIGQUIT, 5), (signal.SIGKILL, 5)):
        if not node.alive():
            return
        os.kill(node.pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and node.alive():
            time.sleep(0.02)
    if node.alive():
        log(f"{node.name}: postmaster {node.pid} survived SIGKILL")


# --- The client: a steady write load to whichever server takes writes ---------

class Load(threading.Thread):
    """rate single-row INSERTs per second, one at a time, each with a new id.
    On any error the connection is dropped and the next write reconnects
    through the multi-host string, so each scheduled write is one attempt.
    A slow write does not cause a burst later: the schedule restarts from now.
    acked: (id, start, end, port) of every acknowledged write; failed: (id,
    start, end, message) of every failed one (times from time.monotonic())."""

    def __init__(self, nodes, rate):
        super().__init__(daemon=True)
        hosts = ",".join("127.0.0.1" for _ in nodes)
        ports = ",".join(str(n.port) for n in nodes)
        self.dsn = (f"host={hosts} port={ports} dbname=postgres user={PG_USER} "
                    f"target_session_attrs=read-write connect_timeout=2")
        self.interval_s = 1.0 / rate
        self.acked, self.failed = [], []
        self.halt = threading.Event()

    def run(self):
        import psycopg2
        conn, next_id, due = None, 1, time.monotonic()
        while not self.halt.is_set():
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            start = time.monotonic()
            try:
                if conn is None:
                    conn = psycopg2.connect(self.dsn)
                    conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO bench (id) VALUES (%s)", (next_id,))
                self.acked.append((next_id, start, time.monotonic(), conn.info.port))
            except psycopg2.Error as e:
                msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
                self.failed.append((next_id, start, time.monotonic(), msg))
                if conn is not None:
                    conn.close()
                conn = None
            next_id += 1
            due = max(due + self.interval_s, time.monotonic() - self.interval_s)
        if conn is not None:
            conn.close()

    def stop(self):
        self.halt.set()
        self.join(timeout=STEP_TIMEOUT_S)


# --- One run ----------------------------------------------------------------

def wait_for(what, check, timeout_s=STEP_TIMEOUT_S):
    """Poll check() every POLL_S until it is true; return the time it became true."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(POLL_S)
    return time.monotonic()


def connect(node):
    """An autocommit session on one server."""
    import psycopg2  # installed by ensure_installed() when it was missing
    conn = psycopg2.connect(node.dsn())
    conn.autocommit = True
    return conn


def query(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall() if cur.description else []


def build_pair(tmp, started):
    """A primary with a table, and a synchronous streaming standby of it."""
    port_a, port_b = mtest.free_ports(2)
    primary, standby = Node(tmp, "a", port_a), Node(tmp, "b", port_b)
    as_postgres([f"{PG_BIN}/initdb", "-D", primary.data, "-U", PG_USER, "--auth=trust",
                 "--locale=C", "--encoding=UTF8"], tmp)
    # pg_hba.conf from initdb already trusts 127.0.0.1 for normal and replication
    # connections; the server listens on nothing else.
    primary.configure({"listen_addresses": "127.0.0.1", "port": port_a,
                       "unix_socket_directories": tmp, "wal_level": "replica",
                       "max_wal_senders": 4, "synchronous_commit": "on",
                       "hot_standby": "on", "cluster_name": "a"})
    primary.start(started)
    conn = connect(primary)
    try:
        query(conn, "CREATE TABLE bench (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")
    finally:
        conn.close()
    as_postgres([f"{PG_BIN}/pg_basebackup", "-h", "127.0.0.1", "-p", str(port_a), "-U",
                 PG_USER, "-D", standby.data, "-R", "-X", "stream", "-c", "fast"], tmp)
    # The copy carries the primary's settings; these lines override them.
    standby.configure({"port": port_b, "cluster_name": "b", "synchronous_standby_names": ""})
    standby.start(started)
    # Synchronous only once the standby streams (as Patroni does): before that,
    # every commit on the primary would wait for a standby that is not there.
    conn = connect(primary)
    try:
        query(conn, "ALTER SYSTEM SET synchronous_standby_names = '*'")
        query(conn, "SELECT pg_reload_conf()")
        wait_for("the standby to stream synchronously", lambda: query(
            conn, "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")[0][0] == 1)
    finally:
        conn.close()
    return primary, standby


def controldata(node):
    """pg_controldata of a stopped server, as a dict."""
    out = as_postgres([f"{PG_BIN}/pg_controldata", "-D", node.data], node.tmp)
    return {k.strip(): v.strip() for k, v in
            (line.split(":", 1) for line in out.splitlines() if ":" in line)}


def switchover(primary, standby, load):
    """Steps 1-4 of the module comment; returns the instants (time.monotonic())."""
    t = {}
    # Opened before the clock starts: a hot-standby session on the standby to
    # watch replay and the end of recovery (it survives the promotion).
    watch = connect(standby)
    pgctl = None
    try:
        # 1. Stop. pg_ctl -w checks only every 100 ms; -W and our 1 ms poll of the
        # postmaster pid keep that granularity out of the outage.
        t["stop"] = time.monotonic()
        as_postgres([f"{PG_BIN}/pg_ctl", "-D", primary.data, "-m", "fast", "-W", "stop"],
                    primary.tmp)
        t["stopped"] = wait_for("the primary to stop", lambda: not primary.alive())
        # 2. The shutdown checkpoint is the primary's last WAL record, and
        # pg_last_wal_replay_lsn() is the END of the last record replayed: once
        # it is past the checkpoint's start, the standby has everything.
        cd = controldata(primary)
        state = cd.get("Database cluster state")
        if state != "shut down":
            raise BenchError(f"the primary did not shut down cleanly: {state}")
        final_lsn = cd["Latest checkpoint location"]
        t["replayed"] = wait_for(f"the standby to replay past {final_lsn}", lambda: query(
            watch, "SELECT pg_last_wal_replay_lsn() > %s::pg_lsn", (final_lsn,))[0][0])
        # 3. Promote. pg_ctl promote -w also polls every 100 ms, so the end of
        # recovery is timed by our own session; pg_ctl's time is kept as well.
        t["promote"] = time.monotonic()
        pgctl = subprocess.Popen(["runuser", "-u", PG_USER, "--", f"{PG_BIN}/pg_ctl", "-D",
                                  standby.data, "-w", "-t", str(STEP_TIMEOUT_S), "promote"],
                                 cwd=standby.tmp, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        t["promoted"] = wait_for("the end of recovery", lambda: not query(
            watch, "SELECT pg_is_in_recovery()")[0][0])
        out, err = pgctl.communicate(timeout=STEP_TIMEOUT_S)
        t["pg_ctl_promote_done"] = time.monotonic()
        if pgctl.returncode != 0:
            raise BenchError(f"pg_ctl promote failed: {err.strip()}")
    finally:
        watch.close()
        if pgctl is not None and pgctl.poll() is None:  # only when a step above failed
            pgctl.kill()
            pgctl.wait()
    # 4. The client's first write acknowledged by the new primary.
    wait_for("the first write on the new primary",
             lambda: any(a[3] == standby.port for a in load.acked[-50:]))
    t["first_write"] = next(a[2] for a in load.acked if a[3] == standby.port)
    return t


def one_run(tmp, rate, started):
    primary, standby = build_pair(tmp, started)
    load = Load([primary, standby], rate)
    load.start()
    try:
        time.sleep(WARMUP_S)
        if load.failed or not load.acked:
            raise BenchError(f"writes fail before the switchover: {load.failed[:1]}")
        log(f"switchover: {len(load.acked)} writes acknowledged by the primary so far")
        t = switchover(primary, standby, load)
        time.sleep(AFTER_S)
    finally:
        load.stop()
    conn = connect(standby)
    try:
        present = {row[0] for row in query(conn, "SELECT id FROM bench")}
    finally:
        conn.close()
    acked = {a[0] for a in load.acked}
    # A write in flight when the stop began may fail before the stop command
    # is even sent: the outage starts at whichever comes first.
    failures = [f for f in load.failed if t["stop"] <= f[2] <= t["first_write"]]
    start = min([t["stop"]] + [f[1] for f in failures])
    ms = lambda a, b: round((b - a) * 1000, 1)  # noqa: E731
    return {"write_outage_ms": ms(start, t["first_write"]),
            "stop_ms": ms(t["stop"], t["stopped"]),
            "replay_wait_ms": ms(t["stopped"], t["replayed"]),
            "promote_ms": ms(t["promote"], t["promoted"]),
            "pg_ctl_promote_ms": ms(t["promote"], t["pg_ctl_promote_done"]),
            "first_write_after_promote_ms": ms(t["promoted"], t["first_write"]),
            "acknowledged": len(acked), "failed_writes": len(failures),
            "lost_acknowledged": len(acked - present),
            "first_error": failures[0][3] if failures else None}


def server_version():
    return subprocess.run([f"{PG_BIN}/postgres", "--version"], capture_output=True,
                          text=True).stdout.strip()


def run(runs=3, rate=200):
    """All runs in one fresh temporary folder; every postmaster stopped by pid and
    the folder removed whatever happens. Returns the JSON document as a dict."""
    pg = pwd.getpwnam(PG_USER)
    tmp = tempfile.mkdtemp(prefix="bench-pg-switchover-")
    started = []
    results = []
    try:
        os.chown(tmp, pg.pw_uid, pg.pw_gid)
        for i in range(runs):
            run_dir = os.path.join(tmp, f"run{i + 1}")
            os.mkdir(run_dir, 0o700)
            os.chown(run_dir, pg.pw_uid, pg.pw_gid)
            log(f"run {i + 1}/{runs} in {run_dir}")
            try:
                results.append(one_run(run_dir, rate, started))
            except BenchError as e:
                tails = "".join(f"\n--- {n.name}.log ---\n{n.log_tail()}" for n in started
                                if n.tmp == run_dir)
                raise BenchError(f"run {i + 1}: {e}{tails}")
            finally:
                for node in started:
                    stop_by_pid(node)
            log(f"run {i + 1}: {json.dumps(results[-1])}")
        where = machine(tmp)
    finally:
        for node in started:
            stop_by_pid(node)
        shutil.rmtree(tmp, ignore_errors=True)
        survivors = [n.pid for n in started if n.alive()]
        if survivors:
            log(f"postmasters still alive: {survivors}")
        else:
            log(f"all {len(started)} postmasters we started are gone: "
                f"{[n.pid for n in started]}")
    med = lambda key: round(statistics.median(r[key] for r in results), 1)  # noqa: E731
    return {"reference": "postgresql-15 switchover",
            "server": server_version(),
            "procedure": "pg_ctl stop -m fast; wait for the standby to replay the shutdown "
                         "checkpoint; pg_ctl promote -w; client reconnects via libpq "
                         "target_session_attrs=read-write",
            "runs": runs, "rate_writes_per_s": rate,
            "write_outage_ms": {"median": med("write_outage_ms"),
                                "runs": [r["write_outage_ms"] for r in results]},
            "promote_ms": {"median": med("promote_ms"),
                           "runs": [r["promote_ms"] for r in results]},
            "steps_ms_median": {k: med(k) for k in ("stop_ms", "replay_wait_ms", "promote_ms",
                                                    "pg_ctl_promote_ms",
                                                    "first_write_after_promote_ms")},
            "lost_acknowledged": sum(r["lost_acknowledged"] for r in results),
            "acknowledged": sum(r["acknowledged"] for r in results),
            "details": results,
            "machine": where}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=int, default=200, help="writes per second")
    a = ap.parse_args()
    if a.runs < 1 or a.rate < 1:
        ap.error("--runs and --rate must be at least 1")
    if os.geteuid() != 0:
        log("error: must run as root (apt-get, and the servers run as the postgres user)")
        sys.exit(1)
    try:
        ensure_installed()
        doc = run(a.runs, a.rate)
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(1)
    print(json.dumps(doc))
    if doc["lost_acknowledged"]:
        log(f"error: {doc['lost_acknowledged']} acknowledged writes lost")
        sys.exit(1)


if __name__ == "__main__":
    main()
