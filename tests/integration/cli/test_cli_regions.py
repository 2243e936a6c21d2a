"""meridian status, lag and sql follow the current primary, not the topology's.

Two regions (r1 the topology's primary): `meridian status` shows global epoch 0
with r1 primary and each process's role; `meridian switchover --to r2` makes r2
primary at epoch 1; then status shows r2 primary and r1 its secondary,
`meridian lag` asks r2's agent, and `meridian sql` through the default endpoint
writes in r2. A switchover left half-done (r2 told to drain towards r1, by hand)
is named in status with the commands that end it, and `switchover --to r2`
calls it off. A region whose agent is down is named as such.
"""

import json
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import mtest  # noqa: E402

BIN = sys.argv[1]


def by_name(items, key="name"):
    return {i[key]: i for i in items}


def curl(env, address, path, *extra):
    return subprocess.run(["curl", "-sS", "--max-time", "10", *env.curl_args(), *extra,
                           env.url(address, path)], capture_output=True, text=True)


def lag(env):
    r = env.cli("lag", "--json", check=False)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def sql(env, *args):
    r = env.cli("sql", "--json", *args, check=False)
    try:
        return json.loads(r.stdout) if r.returncode == 0 else {}
    except ValueError:
        return {}


def check_start(env):
    st = env.status()
    assert st["global_epoch"] == 0 and st["primary"] == "r1", st
    assert st["topology_primary"] == "r1" and st["under_way"] == [], st
    regions = by_name(st["regions"])
    assert regions["r1"]["role"] == "primary" and regions["r1"]["writer"] == "r1-w1", regions
    assert regions["r2"]["role"] == "secondary" and regions["r2"]["primary"] == "r1", regions
    assert regions["r2"]["epoch"] == 0 and regions["r2"]["op"] == "none", regions
    procs = by_name(st["processes"], "id")
    assert procs["r1-w1"]["role"] == "writer" and procs["r1-r1"]["role"] == "reader", procs
    assert procs["r2-agent"]["topology_role"] == "agent", procs
    text = env.cli("status").stdout
    for line in ("primary r1 at global epoch 0", "region r1: primary, epoch 0, writer r1-w1",
                 "region r2: secondary of r1, epoch 0, writer r2-w1", "volume of region r1"):
        assert line in text, text
    mtest.wait_for("lag at r1's agent", lambda: by_name(lag(env).get("regions", [])).get(
        "r2", {}).get("role") == "secondary")
    assert lag(env)["primary"] == "r1"
    a = sql(env, "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    assert a.get("region") == "r1", a


def check_switched(env):
    st = env.status()
    assert st["global_epoch"] == 1 and st["primary"] == "r2", st
    assert st["topology_primary"] == "r1", st
    regions = by_name(st["regions"])
    assert regions["r2"]["role"] == "primary" and regions["r2"]["epoch"] == 1, regions
    assert regions["r1"]["role"] == "secondary" and regions["r1"]["primary"] == "r2", regions
    assert regions["r1"]["epoch"] == 1, regions
    text = env.cli("status").stdout
    for line in ("primary r2 at global epoch 1 (the topology file names r1)",
                 "region r1: secondary of r2, epoch 1, writer r1-w1",
                 "region r2: primary, epoch 1, writer r2-w1"):
        assert line in text, text
    # r2's agent restarted as the primary half: it reports the regions once it follows r2-w1
    mtest.wait_for("lag at r2's agent", lambda: by_name(lag(env).get("regions", [])).get(
        "r2", {}).get("role") == "primary", timeout=30)
    table = env.cli("lag").stdout
    assert any(l.split()[:2] == ["r2", "primary"] for l in table.splitlines()), table
    answers = []
    mtest.wait_for("a write through the default endpoint", lambda: answers.append(
        sql(env, "INSERT INTO t (v) VALUES ('after')")) or answers[-1].get("region") == "r2",
        timeout=30)
    assert answers[-1]["instance"] == "r2-w1", answers[-1]


def check_half_done(env):
    """r2 drains towards r1 (as if a switchover to r1 stopped there); status says so."""
    addr = by_name(env.status()["processes"], "id")["r2-agent"]["address"]
    state = json.loads(curl(env, addr, "/v1/region").stdout)["state"]
    state.update(op="switchover", op_epoch=state["epoch"] + 1, op_to="r1")
    c = curl(env, addr, "/v1/region?reason=switchover", "-X", "POST", "-H",
             "content-type: application/json", "--data", json.dumps(state))
    assert c.returncode == 0 and '"op":"switchover"' in c.stdout, c.stdout + c.stderr
    st = env.status()
    r2 = by_name(st["regions"])["r2"]
    assert r2["op"] == "switchover" and r2["op_to"] == "r1" and r2["op_epoch"] == 2, r2
    text = env.cli("status").stdout
    want = (f"switchover to r1 at epoch 2 under way: r2 drains; run `meridian switchover "
            f"{os.path.realpath(env.topo)} --data {os.path.realpath(env.data)} --to r1` to "
            f"finish it or `--to r2` to call it off")
    assert want in text, text
    assert st["under_way"] == [want], st["under_way"]
    r = env.cli("switchover", "--to", "r2", timeout=120)
    assert "undrain" in r.stdout and "done" in r.stdout, r.stdout
    st = env.status()
    assert st["under_way"] == [] and by_name(st["regions"])["r2"]["op"] == "none", st
    answers = []
    mtest.wait_for("writes again in r2", lambda: answers.append(
        sql(env, "INSERT INTO t (v) VALUES ('undrained')")) or answers[-1].get("region") == "r2",
        timeout=30)


def check_agent_down(env):
    pid = env.pids()["r1-agent"]
    os.kill(pid, signal.SIGKILL)
    mtest.wait_for("r1-agent gone", lambda: not mtest.pid_is(pid, "r1-agent"))
    st = env.status()
    assert by_name(st["regions"])["r1"]["agent_answering"] is False, st["regions"]
    assert st["primary"] == "r2" and st["global_epoch"] == 1, st
    assert "region r1: agent not answering" in env.cli("status").stdout
    env.cli("up", "--timeout-ms", "30000")


def check_corrupt_state(env):
    """A damaged region.json stops the agent at start with the file and the fault named;
    nothing is guessed; the good file back, it starts with the state it held."""
    pid = env.pids()["r1-agent"]
    os.kill(pid, signal.SIGKILL)
    mtest.wait_for("r1-agent gone", lambda: not mtest.pid_is(pid, "r1-agent"))
    path = os.path.join(env.data, "r1-agent", "region.json")
    good = open(path).read()
    for bad, word in ((good.replace('"epoch":1', '"epoch":"one"'), "epoch"),
                      (good[:len(good) // 2], "region.json"),
                      (good.replace('"primary":"r2"', '"primary":"r9"'), "r9")):
        with open(path, "w") as f:
            f.write(bad)
        cmd = [os.path.join(BIN, "meridian"), "up", env.topo, "--data", env.data,
               "--timeout-ms", "15000"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        out = r.stdout + r.stderr
        assert r.returncode != 0 and "r1-agent" in out and "region.json" in out and word in out, \
            (bad, out)
        print("refused:", out.strip().splitlines()[-1][:300])
        assert open(path).read() == bad  # the agent does not rewrite what it cannot read
    with open(path, "w") as f:
        f.write(good)
    env.cli("up", "--timeout-ms", "30000")
    st = env.status()
    assert st["primary"] == "r2" and by_name(st["regions"])["r1"]["epoch"] == 1, st


def test_status_lag_sql_follow_the_primary():
    env = mtest.Env(BIN, regions=("r1", "r2"), readers=1)
    try:
        env.cli("up", "--timeout-ms", "30000")
        check_start(env)
        r = env.cli("switchover", "--to", "r2", timeout=120)
        assert "done" in r.stdout, r.stdout
        check_switched(env)
        check_half_done(env)
        check_agent_down(env)
        check_corrupt_state(env)
        env.cli("down")
        reports = env.sanitizer_reports()
        assert not reports, reports
    finally:
        env.cleanup()


mtest.run_tests([
    ("status_lag_sql_follow_the_primary", test_status_lag_sql_follow_the_primary),
])
