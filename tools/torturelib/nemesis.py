"""The fault schedule of the fault harness (tools/torture): what goes wrong, when, and
for how long, drawn from a seed, and the thread that makes it happen.

The schedule is drawn whole before the run from the seed alone: the same seed gives
the same sequence of faults, targets, holds and gaps on any machine. What the system
does in between (how long a restart or a switchover takes) is not seeded, so a replay
repeats the faults, not the run to the millisecond.

Faults run one at a time and each is healed (the process restarted or resumed, the
link back up, the delay back to normal) before the gap to the next one starts, so at
most one AZ of a region is ever down, plus one storage node of another AZ in the
`az_plus_one` kind: what the design promises to survive (AZ+1 for reads, one AZ for
writes: that region's writes wait while it lasts). A run marked to exceed it
(`exceed=True`) hits two AZs of one region at once for the kinds that take a target
(kill, pause, AZ partition, the disk kinds).

Kinds (`KINDS`):

| kind | what | hold |
| --- | --- | --- |
| kill | kill -9 of a process, then `meridian up` starts it again | 1-3 s before the restart |
| pause | SIGSTOP of a process, then SIGCONT | 1-5 s |
| partition_az | an AZ host's link down (nothing reaches it), then up | 5-15 s |
| az_plus_one | an AZ cut off as above and kill -9 of a storage node in another AZ of the region, then both healed | 5-15 s |
| partition_regions | the delay link between two regions blackholes, then heals | 5-15 s |
| delay_spike | the link between two regions at 300 ms one way, then back | 5 s |
| switchover | `meridian switchover --to` the region that is not the primary | (as long as it takes) |
| disk_full | a storage node's disk fills up (tools/faultfs: writes fail ENOSPC), then the disk is freed and the node restarted | 3-8 s |
| fsync_fail | a storage node's fdatasync fails (EIO), then the disk heals and the node is restarted (a failed sync is never retried) | 3-8 s |

The disk kinds are drawn only when the cluster has the faultfs shim (`cluster.disk_faults`).

Every fault is printed as it starts and as it heals, with its time from the start of
the run, and recorded: {"kind", "target", "at_s", "healed_s", "hold_s", "result"}.
"""

import random
import threading
import time

KINDS = ("kill", "pause", "partition_az", "partition_regions", "delay_spike", "switchover",
         "disk_full", "fsync_fail", "az_plus_one")
DISK_KINDS = {"disk_full": "enospc", "fsync_fail": "fsync_eio"}  # faultfs control words
GAP_S = (3.0, 8.0)             # quiet time between a fault's heal and the next one
FIRST_S = 5.0                  # no fault in the first seconds: the workloads get going
HOLD_S = {"kill": (1.0, 3.0), "pause": (1.0, 5.0), "partition_az": (5.0, 15.0),
          "partition_regions": (5.0, 15.0), "delay_spike": (5.0, 5.0), "switchover": (0, 0),
          "disk_full": (3.0, 8.0), "fsync_fail": (3.0, 8.0), "az_plus_one": (5.0, 15.0)}
SPIKE_MS = 300                 # one-way delay during a delay spike
TAIL_S = 8.0                   # no fault starts this close to the end of the schedule
SCHEDULE_MAX = 10000           # faults drawn for one run, whatever its length


def draw(seed, duration_s, regions, nodes, azs=("a", "b", "c"), exceed=False, disks=False):
    """The schedule: [{"gap_s", "kind", "targets", "hold_s"}] for a run of duration_s
    seconds. nodes: {node id: {"region", "az", ...}} (hosts.topology()'s). Kinds come
    in seeded shuffled rounds of all of them, so a short run still sees several; the
    disk kinds only with disks=True."""
    rng = random.Random(seed)
    ids = sorted(nodes)
    storage = [i for i in ids if nodes[i].get("role") == "storage"]
    out, t, bag = [], FIRST_S, []
    while t < duration_s - TAIL_S and len(out) < SCHEDULE_MAX:
        if not bag:
            bag = list(KINDS)
            rng.shuffle(bag)
        kind = bag.pop()
        if (kind == "switchover" and len(regions) < 2) or \
                (kind in DISK_KINDS and (not disks or not storage)):
            continue
        lo, hi = HOLD_S[kind]
        hold = round(rng.uniform(lo, hi), 1)
        double = exceed and kind in ("kill", "pause", "partition_az", *DISK_KINDS) and \
            rng.random() < 0.5
        if kind in ("kill", "pause", *DISK_KINDS):
            pool = storage if kind in DISK_KINDS else ids
            first = rng.choice(pool)
            targets = [first]
            if double:
                same = [i for i in pool if nodes[i]["region"] == nodes[first]["region"]
                        and nodes[i]["az"] != nodes[first]["az"]]
                targets.append(rng.choice(same))
        elif kind == "partition_az":
            region = rng.choice(regions)
            picked = rng.sample(list(azs), 2 if double else 1)
            targets = [f"{region}/{az}" for az in picked]
        elif kind == "az_plus_one":
            if not storage:
                continue
            region = rng.choice(regions)
            az = rng.choice(list(azs))
            other = [i for i in storage if nodes[i]["region"] == region and nodes[i]["az"] != az]
            if not other:
                continue
            targets = [f"{region}/{az}", rng.choice(other)]
        elif kind in ("partition_regions", "delay_spike"):
            a, b = sorted(rng.sample(list(regions), 2)) if len(regions) > 1 else (None, None)
            if a is None:
                continue
            targets = [f"{a}-{b}"]
        else:
            targets = ["the other region"]
        gap = round(rng.uniform(*GAP_S), 1) if out else FIRST_S
        out.append({"gap_s": gap, "kind": kind, "targets": targets, "hold_s": hold})
        t += gap + hold + 1.0  # a rough guess; the run stops at its deadline anyway
    return out


class Nemesis(threading.Thread):
    """Runs a schedule against a cluster. `cluster` provides: kill(id), restart(),
    pause(id), resume(id), switchover() -> (ok, text), and `hosts` (tools/torturelib/
    hosts.Hosts) with `delay_ms`, `jitter_ms` for the link's normal delay. `log(text)`
    prints a line. stop() ends it at the next step, healing what it holds."""

    def __init__(self, schedule, cluster, t0, deadline, log):
        super().__init__(daemon=True, name="nemesis")
        self.schedule = schedule
        self.cluster = cluster
        self.t0 = t0
        self.deadline = deadline  # time.monotonic(): no fault starts after it
        self.log = log
        self.faults = []
        self.error = None
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._held = None  # what heal_now() must undo

    def now(self):
        return round(time.monotonic() - self.t0, 2)

    def stop(self):
        self._halt.set()

    def run(self):
        try:
            for step in self.schedule:
                if self._halt.wait(step["gap_s"]):
                    return
                if time.monotonic() + step["hold_s"] > self.deadline:
                    return
                self._one(step)
        except Exception as e:  # the harness reports it and ends the run as failed
            self.error = f"{type(e).__name__}: {e}"
            self.log(f"nemesis: {self.error}")
        finally:
            self.heal_now()

    def _one(self, step):
        kind, targets = step["kind"], step["targets"]
        fault = {"kind": kind, "target": ",".join(targets), "at_s": self.now(),
                 "healed_s": None, "hold_s": step["hold_s"], "result": "ok"}
        with self._lock:
            self.faults.append(fault)
            self._held = (kind, targets, fault)
            self.log(f"[{fault['at_s']:7.2f} s] fault {kind} {fault['target']}"
                     + (f" for {step['hold_s']} s" if step["hold_s"] else ""))
            self._apply(kind, targets, fault)
        if kind != "switchover":
            self._halt.wait(step["hold_s"])
        self.heal_now()

    def _apply(self, kind, targets, fault):
        c, h = self.cluster, self.cluster.hosts
        if kind == "kill":
            fault["pids"] = [c.kill(t) for t in targets]
        elif kind == "pause":
            fault["pids"] = [c.pause(t) for t in targets]
        elif kind == "partition_az":
            fault["keys"] = [h.partition_az(*t.split("/")) for t in targets]
        elif kind == "az_plus_one":
            fault["keys"] = [h.partition_az(*targets[0].split("/"))]
            fault["pids"] = [c.kill(targets[1])]
        elif kind == "partition_regions":
            fault["keys"] = [h.partition_regions(*targets[0].split("-"))]
        elif kind == "delay_spike":
            h.set_delay(*targets[0].split("-"), SPIKE_MS, 0)
        elif kind in DISK_KINDS:
            for t in targets:
                c.disk_fault(t, DISK_KINDS[kind])
        elif kind == "switchover":
            ok, text = c.switchover()
            fault["target"] = text.split()[0] if ok and text else fault["target"]
            fault["result"] = "done" if ok else f"refused: {text[:200]}"

    def heal_now(self):
        """Undoes the fault held now, if any (also from another thread, at the end)."""
        with self._lock:
            held, self._held = self._held, None
            if held is None:
                return
            kind, targets, fault = held
            c, h = self.cluster, self.cluster.hosts
            if kind == "kill":
                c.restart()
            elif kind == "pause":
                for t in targets:
                    c.resume(t)
            elif kind in ("partition_az", "partition_regions", "az_plus_one"):
                for key in fault.pop("keys", []):
                    h.heal(key)
                if kind == "az_plus_one":
                    c.restart()
            elif kind == "delay_spike":
                h.set_delay(*targets[0].split("-"), c.delay_ms, c.jitter_ms)
            elif kind in DISK_KINDS:  # a node whose disk failed stays failed: restart it
                said = [c.disk_heal(t) for t in targets]
                fault["node_said"] = said
                if not all(said):
                    fault["result"] = "no write reached the failing disk"
                c.restart()
            fault.pop("pids", None)
            fault["healed_s"] = self.now()
            self.log(f"[{fault['healed_s']:7.2f} s] healed {kind} {fault['target']}"
                     + (f" ({fault['result']})" if fault["result"] != "ok" else ""))
