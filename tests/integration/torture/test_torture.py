"""The fault harness's short schedule: `tools/torture --minutes 1.5` with seeds 1 and 2
on test hosts (two regions of three AZs, 30-80 ms apart) must each end clean (exit 0,
no violation in report.json) after faults of several kinds, with every workload
acknowledging operations, a timeline.svg that parses as XML and marks every fault, and
nothing of the run left: no namespace, link, process or temporary folder. Then the
pipeline must be able to fail: the run's final lists with one acknowledged value taken
out, judged again (`tools/torture --rejudge`), give exit 1 and a `lost` violation in
report.json, and the command that replays the seed is printed."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, ROOT)
import mtest  # noqa: E402
from tools.torturelib.hosts import leftovers  # noqa: E402

BIN = sys.argv[1]
TORTURE = os.path.join(ROOT, "tools", "torture")
SEEDS = (1, 2)
MINUTES = "1.5"
KINDS_MIN = 3  # distinct kinds of fault a short run must have injected
RUN_TIMEOUT_S = 270  # per seed; each run takes about 100 s


def processes_mentioning(*needles):
    """pids of live processes whose command line holds one of needles."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if any(n in cmd for n in needles):
            found.append((int(entry), cmd.replace("\0", " ")[:120]))
    return found


def run_torture(seed, out):
    r = subprocess.run([TORTURE, "--minutes", MINUTES, "--seed", str(seed), "--out", out,
                        "--bin", BIN], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    print(r.stdout + r.stderr, flush=True)
    return r


def check_nothing_left(text):
    m = re.search(r"hosts run (mt[0-9a-f]{4}), work (\S+)", text)
    assert m, "the run did not print its hosts prefix and work folder"
    prefix, work = m.group(1), m.group(2)
    assert leftovers(prefix) == [], leftovers(prefix)
    assert not os.path.exists(work), work
    left = processes_mentioning(work, f"meridian-hosts-{prefix}-")
    assert left == [], left
    print(f"  cleanup: nothing of run {prefix} left (namespaces, links, processes, {work})")


def check_report(out):
    with open(os.path.join(out, "report.json")) as f:
        doc = json.load(f)
    assert doc["violations"] == [], doc["violations"]
    kinds = doc["fault_kinds"]
    assert len(kinds) >= KINDS_MIN, kinds
    assert all(f["healed_s"] is not None for f in doc["faults"]), doc["faults"]
    ops = doc["operations"]
    assert ops["bank"]["acknowledged"] > 0 and ops["append"]["acknowledged"] > 0, ops
    assert ops["append"]["reads_ok"] > 0, ops
    assert all(r["acknowledged"] > 0 for r in ops["reads"].values()), ops
    assert doc["lag_ms"] and doc["latency_ms"]["append"]["p99"] is not None, doc
    assert "--seed" in doc["replay"], doc["replay"]
    # a failing disk (tools/faultfs) is seen by its node: it says why it stopped
    disk = [f for f in doc["faults"] if f["kind"] in ("disk_full", "fsync_fail")]
    assert not disk or any(all(f.get("node_said")) for f in disk), disk
    svg = ET.parse(os.path.join(out, "timeline.svg")).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg", svg.tag
    spans = [t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}title")]
    for f in doc["faults"]:
        assert any(t.startswith(f"{f['kind']} {f['target']}:") for t in spans), (f, spans)
    print(f"  {len(doc['faults'])} faults {kinds}; bank {ops['bank']}; append {ops['append']}; "
          f"reads {ops['reads']}; lag {doc['lag_ms']}; {doc['duration_s']} s")
    return doc


def check_planted_loss(out, scratch):
    """The run's files with one acknowledged append taken out of the final lists."""
    copy = os.path.join(scratch, "planted")
    shutil.copytree(out, copy)
    acked = None
    with open(os.path.join(copy, "append.log")) as f:
        for line in f:
            p = line.split()
            if p[:2] == ["append", "ok"]:
                acked = (p[3], int(p[4]))
                break
    assert acked, "no acknowledged append in the log"
    path = os.path.join(copy, "final.json")
    with open(path) as f:
        final = json.load(f)
    final["lists"][acked[0]].remove(acked[1])
    with open(path, "w") as f:
        json.dump(final, f)
    r = subprocess.run([TORTURE, "--rejudge", copy], capture_output=True, text=True,
                       timeout=120)
    print(r.stdout.strip(), flush=True)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    with open(os.path.join(copy, "report.json")) as f:
        doc = json.load(f)
    lost = [v for v in doc["violations"] if v["kind"] == "lost"]
    assert lost and str(acked[1]) in json.dumps(lost[0]), doc["violations"]
    assert "replay with: tools/torture" in r.stdout and "--seed" in r.stdout, r.stdout


def test_short_schedule():
    scratch = tempfile.mkdtemp(prefix="mrd-it-torture-")
    try:
        for seed in SEEDS:
            out = os.path.join(scratch, f"seed-{seed}")
            r = run_torture(seed, out)
            check_nothing_left(r.stdout)
            assert r.returncode == 0, f"tools/torture seed {seed} exited {r.returncode}"
            check_report(out)
        check_planted_loss(os.path.join(scratch, f"seed-{SEEDS[0]}"), scratch)
    finally:
        if os.environ.get("MRD_TEST_KEEP"):
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if os.geteuid() != 0:
    print("FAIL: the fault harness needs root (network namespaces, TUN devices)")
    sys.exit(1)
mtest.run_tests([("short_schedule", test_short_schedule)])
