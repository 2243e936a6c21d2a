"""Test hosts: a Meridian topology laid out as separate network hosts on one machine.

Every (region, AZ) is a network namespace of its own with one address; a hub
namespace routes between them: a veth link per AZ host, and delay links of the
project's own (tools/tundelay, a TUN device in the hub), since this kernel has no
netem qdisc and no iptables: one between each pair of regions (delay_ms) and one
per region for the traffic between its AZs (az_delay_ms, about 1 ms). Partitions
take an AZ's link down, blackhole a region with policy rules, or cut the delay link
between two regions. The CLI and test clients run in the hub, which reaches every
host directly, without delay.

    hosts = Hosts(regions=("r1", "r2"), delay_ms=25, az_delay_ms=1)
    topo = hosts.topology(path)                     # addresses on the AZ hosts
    subprocess.run(hosts.hub_cmd([meridian, "up", path, "--data", d]),
                   env=hosts.spawn_env())           # each meridiand in its AZ's namespace
    key = hosts.partition_regions("r1", "r2"); ...; hosts.heal(key)
    hosts.close()                                   # nothing of the run is left

Everything created is written to a state file before (or, for a process, right
after) it exists; close(), SIGINT/SIGTERM and `python3 -m tools.torturelib.hosts
--cleanup STATEFILE` remove it all. Processes are ended by pid: those recorded
(after /proc confirms they still run what was started) and any process found
inside one of the run's namespaces. docs/torture-hosts.md has the picture.
"""

import argparse
import atexit
import glob
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

WRAPPER_ENV = "MERIDIAN_SPAWN_WRAPPER"
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")
IFNAME_MAX = 15          # the kernel's IFNAMSIZ - 1
RULE_PREF_FAULT = 100    # partition rules: looked up before the delay-link rules
RULE_PREF_LINK = 1000    # region-pair rules sending forwarded packets into a tundelay
TABLE_LINK = 100         # routing table of the first region pair
TABLE_AZ = 200           # routing table of the first region's AZ link
PORT_FIRST = 7100        # every host numbers its own ports from here
SIGNAL_ACK_S = 5.0       # how long a tundelay may take to log that it acted on a signal
STATE_GLOB = "meridian-hosts-*/state.json"


class HostsError(Exception):
    """The layout could not be made (or a fault not applied); the message says why."""


def _ip_path():
    path = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise HostsError("`ip` (iproute2) is not installed: tools/deps installs it")
    return path


def _run(cmd, check=True, timeout=30):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise HostsError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def _proc_runs(pid, program, marker):
    """True when pid is alive (not a zombie), runs `program` (argv[0]'s base name) and has
    `marker` among its arguments: a recycled pid is never signalled."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state in ("Z", "X"):
        return False
    return os.path.basename(args[0]) == program.encode() and marker.encode() in args


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def net_ns_inode(pid):
    """The inode of pid's network namespace, or None when the process is gone."""
    try:
        link = os.readlink(f"/proc/{pid}/ns/net")  # "net:[4026532281]"
    except OSError:
        return None
    return int(link[link.index("[") + 1:-1])


def pids_in_namespaces(inodes):
    """Every live process whose network namespace is one of inodes."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            if net_ns_inode(int(entry)) in inodes and _alive(int(entry)):
                found.append(int(entry))
    return found


class _State:
    """The run's state file: rewritten (write, rename) each time something is recorded."""

    def __init__(self, path, data):
        self.path = path
        self.data = data
        self.save()

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, self.path)

    def add(self, kind, item):
        self.data.setdefault(kind, []).append(item)
        self.save()

    def remove(self, kind, item):
        if item in self.data.get(kind, []):
            self.data[kind].remove(item)
            self.save()


class Hosts:
    """A hub namespace and one namespace per (region, AZ); see the module's docstring."""

    def __init__(self, regions=("r1", "r2"), azs=("a", "b", "c"), delay_ms=0, jitter_ms=0,
                 tundelay=None, net=77, state_dir=None, signals=True, az_delay_ms=1):
        for name in (*regions, *azs):
            if not NAME_RE.match(name):
                raise HostsError(f"'{name}': region and AZ names use only A-Z a-z 0-9 _ . -")
        if not 1 <= len(regions) <= 11 or len(set(regions)) != len(regions):
            raise HostsError("1..11 distinct regions")
        if not 1 <= len(azs) <= 10 or len(set(azs)) != len(azs):
            raise HostsError("1..10 distinct AZs")
        if not 1 <= net <= 254:
            raise HostsError("net: the second octet of 10.NET.R.0/24, 1..254")
        self.regions = list(regions)
        self.azs = list(azs)
        self.net = net
        self.ip = _ip_path()
        self.tundelay = tundelay or os.environ.get("MERIDIAN_TUNDELAY") or os.path.join(
            os.path.dirname(__file__), "..", "..", "build", "bin", "tundelay")
        self.tundelay = os.path.abspath(self.tundelay)
        self.closed = False
        self.faults = {}      # key -> what heal() must undo
        self.links = {}       # (a, b) -> {"dev", "table", "pid", "proc", "log", "control"}
        self.az_links = {}    # region -> the same, for the link between its AZs
        self._rule_pref = RULE_PREF_FAULT
        self._ports = {}      # namespace -> next free port
        self._old_handlers = {}
        self._check_capable()
        self.prefix = self._new_prefix()
        self.hub = f"{self.prefix}-hub"
        self.dir = state_dir or tempfile.mkdtemp(prefix=f"meridian-hosts-{self.prefix}-")
        self.state = _State(os.path.join(self.dir, "state.json"), {
            "prefix": self.prefix, "creator_pid": os.getpid(), "dir": self.dir,
            "hub": self.hub, "namespaces": [], "ns_inodes": [], "links": [], "rules": [],
            "processes": [], "files": []})
        if signals:
            self._install_signals()
        atexit.register(self.close)  # a harness that forgets still leaves nothing behind
        try:
            self._build(delay_ms, jitter_ms, az_delay_ms)
        except BaseException:
            self.close()
            raise

    # ---- names and addresses --------------------------------------------------------

    def ns(self, region, az):
        """The namespace of an AZ host."""
        return f"{self.prefix}-{region}-{az}"

    def subnet(self, region):
        return f"10.{self.net}.{self.regions.index(region) + 1}.0/24"

    def hub_address(self, region):
        return f"10.{self.net}.{self.regions.index(region) + 1}.1"

    def address(self, region, az):
        """The one address of an AZ host."""
        return f"10.{self.net}.{self.regions.index(region) + 1}.{10 + self.azs.index(az)}"

    def veth(self, region, az):
        """The hub's end of an AZ host's link (the host's end is its eth0)."""
        return f"v-{region}-{az}"

    def hosts(self):
        return [(r, az) for r in self.regions for az in self.azs]

    def ns_inode(self, ns):
        return os.stat(f"/run/netns/{ns}").st_ino

    def hub_cmd(self, args):
        """args run in the hub namespace, where the CLI and test clients belong."""
        return [self.ip, "netns", "exec", self.hub, *args]

    def ns_cmd(self, region, az, args):
        """args run on an AZ host."""
        return [self.ip, "netns", "exec", self.ns(region, az), *args]

    def _ipn(self, ns, *args, check=True):
        return _run([self.ip, "-n", ns, *args], check=check)

    # ---- building ---------------------------------------------------------------------

    def _check_capable(self):
        if os.geteuid() != 0:
            raise HostsError("test hosts need root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create "
                             "network namespaces; this process runs as uid "
                             f"{os.geteuid()}: run it as root")
        if not os.path.exists("/dev/net/tun"):
            raise HostsError("/dev/net/tun is missing: the delay links need TUN devices")
        if not os.access(self.tundelay, os.X_OK):
            raise HostsError(f"{self.tundelay}: not built (cmake --build build --target "
                             "tundelay), or pass tundelay= / set MERIDIAN_TUNDELAY")

    def _new_prefix(self):
        taken = _run([self.ip, "netns", "list"]).stdout
        for _ in range(100):
            prefix = "mt" + secrets.token_hex(2)
            if f"{prefix}-" not in taken:
                return prefix
        raise HostsError("no free run prefix")

    def _add_ns(self, ns):
        self.state.add("namespaces", ns)
        r = _run([self.ip, "netns", "add", ns], check=False)
        if r.returncode != 0:
            raise HostsError(f"cannot create the network namespace {ns} (ip netns add: "
                             f"{r.stderr.strip()}): the test hosts need root with "
                             "CAP_SYS_ADMIN and CAP_NET_ADMIN")
        self.state.add("ns_inodes", self.ns_inode(ns))
        self._ipn(ns, "link", "set", "lo", "up")

    def _sysctl(self, ns, *settings):
        _run([self.ip, "netns", "exec", ns, "sysctl", "-q", "-w", *settings])

    def _build(self, delay_ms, jitter_ms, az_delay_ms):
        self._add_ns(self.hub)
        # Forwarding in the hub only; no reverse-path filter, since packets coming back out
        # of a delay link arrive on its TUN device, not on the link of their source.
        self._sysctl(self.hub, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                     "net.ipv4.conf.default.rp_filter=0")
        for region in self.regions:
            self._build_region(region)
        for i, a in enumerate(self.regions):
            for b in self.regions[i + 1:]:
                self._build_link(a, b, delay_ms, jitter_ms)
        if az_delay_ms > 0 and len(self.azs) > 1:
            for region in self.regions:
                self._build_az_link(region, az_delay_ms)

    def _add_link(self, name, *args):
        if len(name) > IFNAME_MAX:
            raise HostsError(f"link name {name} is longer than {IFNAME_MAX} characters: "
                             "use shorter region and AZ names")
        self.state.add("links", {"ns": self.hub, "name": name})
        self._ipn(self.hub, "link", "add", name, *args)

    def _build_region(self, region):
        # Routed, not bridged: every packet between two AZ hosts crosses the hub's routing,
        # where the policy rules send it through a delay link or drop it. The hub holds
        # the region's gateway address itself (on its loopback device).
        gw = self.hub_address(region)
        self._ipn(self.hub, "addr", "add", f"{gw}/32", "dev", "lo")
        for az in self.azs:
            ns = self.ns(region, az)
            self._add_ns(ns)
            veth = self.veth(region, az)
            # Made in the hub with its peer straight in the AZ host: nothing of the run
            # ever exists in the machine's own namespace.
            self._add_link(veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._ipn(self.hub, "link", "set", veth, "up")
            self._host_route(region, az)
            self._ipn(ns, "addr", "add", f"{self.address(region, az)}/32", "dev", "eth0")
            self._ipn(ns, "link", "set", "eth0", "up")
            self._ipn(ns, "route", "add", gw, "dev", "eth0", "scope", "link")
            self._ipn(ns, "route", "add", "default", "via", gw, "dev", "eth0")

    def _host_route(self, region, az):
        """The hub's route to an AZ host (the kernel drops it when the link goes down)."""
        self._ipn(self.hub, "route", "replace", f"{self.address(region, az)}/32",
                  "dev", self.veth(region, az), "src", self.hub_address(region))

    def _build_link(self, a, b, delay_ms, jitter_ms):
        """The delay link between two regions: what one sends the other goes through it."""
        i, k = self.regions.index(a), self.regions.index(b)
        self.links[(a, b)] = self._delay_link(f"td{i}x{k}", TABLE_LINK + len(self.links),
                                              delay_ms, jitter_ms, ((a, b), (b, a)), a=a, b=b)

    def _build_az_link(self, region, delay_ms):
        """The delay link between a region's AZs: what one AZ host sends to another of its
        region goes through it (a host's own traffic and the hub's do not)."""
        i = self.regions.index(region)
        self.az_links[region] = self._delay_link(f"tz{i}", TABLE_AZ + i, delay_ms, 0,
                                                 ((region, region),), region=region)

    def _delay_link(self, dev, table, delay_ms, jitter_ms, pairs, **tags):
        """A TUN device with its tundelay, and a rule per AZ of src for every (src, dst)
        region pair sending what src's hosts send to dst's subnet into it."""
        self.state.add("links", {"ns": self.hub, "name": dev})
        # Persistent: routes through it outlive a tundelay restart; without a tundelay
        # attached the device has no carrier and drops what is routed into it.
        self._ipn(self.hub, "tuntap", "add", "dev", dev, "mode", "tun")
        control = os.path.join(self.dir, f"{dev}.delay")
        with open(control, "w") as f:
            f.write(f"{delay_ms} {jitter_ms}\n")
        link = {"dev": dev, "table": table, "log": os.path.join(self.dir, f"{dev}.log"),
                "control": control, **tags}
        self._start_tundelay(link, delay_ms, jitter_ms)
        self._sysctl(self.hub, f"net.ipv4.conf.{dev}.rp_filter=0")
        self._ipn(self.hub, "link", "set", dev, "up")
        self._ipn(self.hub, "route", "add", "default", "dev", dev, "table", str(table))
        for src, dst in pairs:
            for az in self.azs:
                self._add_rule(RULE_PREF_LINK + len(self.state.data["rules"]),
                               "iif", self.veth(src, az), "to", self.subnet(dst),
                               "lookup", str(table))
        return link

    def _start_tundelay(self, link, delay_ms, jitter_ms):
        log = open(link["log"], "ab")
        try:
            proc = subprocess.Popen(
                self.hub_cmd([self.tundelay, "--dev", link["dev"], "--delay-ms", str(delay_ms),
                              "--jitter-ms", str(jitter_ms), "--control", link["control"]]),
                stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
        finally:
            log.close()
        self.state.add("processes", {"pid": proc.pid, "program": "tundelay",
                                     "marker": link["dev"]})
        link["proc"], link["pid"] = proc, proc.pid
        ready = proc.stdout.readline()
        if not ready.startswith("tundelay: dev"):
            proc.wait(timeout=10)
            with open(link["log"], errors="replace") as f:
                raise HostsError(f"tundelay for {link['dev']} did not start: {f.read()[-1000:]}")

    def _add_rule(self, pref, *spec):
        rule = {"ns": self.hub, "pref": pref, "spec": list(spec)}
        self.state.add("rules", rule)
        self._ipn(self.hub, "rule", "add", "pref", str(pref), *spec)
        return rule

    def _del_rule(self, rule):
        self._ipn(rule["ns"], "rule", "del", "pref", str(rule["pref"]), *rule["spec"],
                  check=False)
        self.state.remove("rules", rule)

    # ---- Meridian on the hosts ------------------------------------------------------------

    def port(self, region, az):
        """A port not yet handed out on that host."""
        ns = self.ns(region, az)
        p = self._ports.get(ns, PORT_FIRST)
        self._ports[ns] = p + 1
        return p

    def _addr(self, region, az):
        return f"{self.address(region, az)}:{self.port(region, az)}"

    def topology(self, path, name="t", tls=False, readers=2, pg_size="1MiB", settings=None):
        """Writes a topology (the shape of mtest.topology_yaml) whose every address is its
        AZ host's address with a distinct port; returns {"path", "nodes": {id: {role,
        region, az, ns, address}}, "regions": {name: {cluster, reader, global_writer,
        router, agent, writer}}}. TLS is off by default: the CLI's generated certificates
        name a node by its id, localhost, 127.0.0.1 and ::1 only, so a client checking a
        10.x address against them refuses the connection."""
        if len(self.azs) != 3:
            raise HostsError("a Meridian region has exactly 3 AZs")
        extra = "".join(f"  {k}: {v}\n" for k, v in (settings or {}).items())
        text = (f"name: {name}\nprimary: {self.regions[0]}\nsettings:\n"
                f"  tls: {'true' if tls else 'false'}\n  pg_size: {pg_size}\n{extra}regions:\n")
        info = {"path": os.path.abspath(path), "nodes": {}, "regions": {}}
        for region in self.regions:
            text += self._region_yaml(region, readers, info)
        with open(path, "w") as f:
            f.write(text)
        return info

    def _region_yaml(self, region, readers, info):
        a, b, c = self.azs
        nodes = info["nodes"]

        def node(ident, role, az):
            addr = self._addr(region, az)
            nodes[ident] = {"role": role, "region": region, "az": az,
                            "ns": self.ns(region, az), "address": addr}
            return addr

        lines = [f"- name: {region}", f"  azs: [{a}, {b}, {c}]", "  storage:"]
        for i, az in enumerate((a, a, b, b, c, c)):
            ident = f"{region}-s{i + 1}"
            lines.append(f"    - {{id: {ident}, az: {az}, address: {node(ident, 'storage', az)}}}")
        lines.append("  instances:")
        ident = f"{region}-w1"
        lines.append(f"    - {{id: {ident}, role: writer, az: {a}, "
                     f"address: {node(ident, 'writer', a)}}}")
        for r in range(readers):
            az = (b, c, a)[r % 3]
            ident = f"{region}-r{r + 1}"
            lines.append(f"    - {{id: {ident}, role: reader, az: {az}, "
                         f"address: {node(ident, 'reader', az)}, priority: {r + 1}}}")
        ident = f"{region}-agent"
        lines.append(f"  agent: {{id: {ident}, az: {a}, address: {node(ident, 'agent', a)}}}")
        ident = f"{region}-router"
        router = node(ident, "router", a)
        ends = {k: self._addr(region, a) for k in ("cluster", "reader", "global_writer")}
        custom = ""
        if readers >= 2:
            ends["analytics"] = self._addr(region, a)
            custom = f", custom: {{analytics: {ends['analytics']}}}"
        lines.append("  routers:")
        lines.append(f"    - {{id: {ident}, az: {a}, address: {router}, "
                     f"cluster: {ends['cluster']}, reader: {ends['reader']}, "
                     f"global_writer: {ends['global_writer']}{custom}}}")
        if readers >= 2:
            lines.append("  custom_endpoints:")
            lines.append(f"    - {{name: analytics, members: [{region}-r{readers}]}}")
        info["regions"][region] = {**ends, "router": router,
                                   "agent": nodes[f"{region}-agent"]["address"],
                                   "writer": f"{region}-w1"}
        return "".join(f"  {l}\n" for l in lines)

    def spawn_wrapper(self):
        """Writes (once) the MERIDIAN_SPAWN_WRAPPER script: NODE-ID REGION AZ COMMAND...
        runs COMMAND in that AZ's namespace. `ip netns exec` execs, so the pid the CLI
        forked becomes meridiand's and its pid file and /proc checks keep working."""
        path = os.path.join(self.dir, "spawn-wrapper")
        if os.path.exists(path):
            return path
        cases = "".join(f'{r}/{az}) exec {self.ip} netns exec {self.ns(r, az)} "$@" ;;\n'
                        for r, az in self.hosts())
        text = (f"#!/bin/sh\n# {WRAPPER_ENV} of test-host run {self.prefix} "
                "(tools/torturelib/hosts.py):\n# NODE-ID REGION AZ COMMAND... runs COMMAND "
                "on the AZ's host, keeping this pid.\n"
                'node=$1 region=$2 az=$3\nshift 3\ncase "$region/$az" in\n' + cases +
                'esac\necho "spawn-wrapper: no test host for $node (region $region, az $az)" '
                ">&2\nexit 126\n")
        self.state.add("files", path)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755)
        return path

    def spawn_env(self, base=None):
        """An environment for the CLI: MERIDIAN_SPAWN_WRAPPER set to spawn_wrapper()."""
        env = dict(os.environ if base is None else base)
        env[WRAPPER_ENV] = self.spawn_wrapper()
        return env

    # ---- faults -----------------------------------------------------------------------

    def _link(self, a, b):
        link = self.links.get((a, b)) or self.links.get((b, a))
        if link is None:
            raise HostsError(f"no link between regions {a} and {b}")
        return link

    def _tundelay_signal(self, link, sig, event):
        """Sends sig and waits until the tundelay logs `event=EVENT` once more."""
        def count():
            with open(link["log"], errors="replace") as f:
                return f.read().count(f"event={event} ")
        before = count()
        os.kill(link["pid"], sig)
        deadline = time.monotonic() + SIGNAL_ACK_S
        while count() <= before:
            if time.monotonic() > deadline or link["proc"].poll() is not None:
                raise HostsError(f"tundelay {link['dev']} did not log {event}")
            time.sleep(0.01)

    def partition_az(self, region, az):
        """Cuts an AZ host off everything (its link down): its region's other AZs, the
        other regions and the hub. Returns the key heal() takes."""
        key = ("az", region, az)
        if key in self.faults:
            raise HostsError(f"AZ {region}/{az} is already cut off: heal it first")
        self._ipn(self.hub, "link", "set", self.veth(region, az), "down")
        # The kernel dropped the route with the link: without this one the hub would
        # answer "network unreachable" for the AZ, where a cut link answers nothing.
        self._ipn(self.hub, "route", "replace", "blackhole", f"{self.address(region, az)}/32")
        self.faults[key] = {}
        return key

    def partition_regions(self, a, b):
        """Cuts the link between two regions: its tundelay drops every packet, held ones
        too, as a cut WAN link does (no answer, no reset). Both still reach the hub."""
        key = ("link",) + tuple(sorted((a, b)))
        self._tundelay_signal(self._link(a, b), signal.SIGUSR1, "tundelay_blackhole")
        self.faults[key] = {}
        return key

    def isolate_region(self, region, mode="drop"):
        """Cuts a region off every other region with policy rules in the hub (mode "drop":
        blackhole, silent; "reject": prohibit, an ICMP error). The hub, where the CLI and
        test clients run, still reaches the region."""
        if mode not in ("drop", "reject"):
            raise HostsError("mode: drop or reject")
        action = "blackhole" if mode == "drop" else "prohibit"
        key = ("region", region)
        if key in self.faults:
            raise HostsError(f"region {region} is already isolated: heal it first")
        rules = []
        for other in self.regions:
            if other != region:
                for src, dst in ((region, other), (other, region)):
                    for az in self.azs:
                        rules.append(self._add_rule(self._rule_pref, "iif", self.veth(src, az),
                                                    "to", self.subnet(dst), action))
                        self._rule_pref += 1
        self.faults[key] = {"rules": rules}
        return key

    def heal(self, key=None):
        """Heals one fault (a key from partition_*/isolate_region), or every one."""
        keys = list(self.faults) if key is None else [key]
        for k in keys:
            fault = self.faults.pop(k, None)
            if fault is None:
                continue
            if k[0] == "az":
                self._ipn(self.hub, "link", "set", self.veth(k[1], k[2]), "up")
                self._host_route(k[1], k[2])
            elif k[0] == "link":
                self._tundelay_signal(self._link(k[1], k[2]), signal.SIGUSR2, "tundelay_healed")
            elif k[0] == "region":
                for rule in fault["rules"]:
                    self._del_rule(rule)
        return keys

    def all_links(self):
        """Every delay link: between regions, then between each region's AZs."""
        return [*self.links.values(), *self.az_links.values()]

    def set_delay(self, a, b, ms, jitter=0):
        """One-way delay (± jitter, whole ms) of the link between two regions, from now on;
        packets already held keep their time, and none overtakes another."""
        link = self._link(a, b)
        tmp = link["control"] + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{int(ms)} {int(jitter)}\n")
        os.replace(tmp, link["control"])
        self._tundelay_signal(link, signal.SIGHUP, "tundelay_delay")

    # ---- the end ----------------------------------------------------------------------

    def _install_signals(self):
        def on_signal(signum, frame):
            self.close()
            signal.signal(signum, self._old_handlers.get(signum, signal.SIG_DFL))
            os.kill(os.getpid(), signum)
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old_handlers[sig] = signal.signal(sig, on_signal)
            except ValueError:  # not the main thread: the caller cleans up
                pass

    def close(self, keep_files=None):
        """Removes everything of the run; returns what could not be removed (empty when
        all went). keep_files (default: MRD_TEST_KEEP set) keeps the state folder and the
        delay links' logs for a post-mortem."""
        if self.closed:
            return []
        self.closed = True
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        for link in self.all_links():
            if "proc" in link:
                try:
                    link["proc"].stdout.close()
                except OSError:
                    pass
        if keep_files is None:
            keep_files = bool(os.environ.get("MRD_TEST_KEEP"))
        left = cleanup(self.state.path, keep_files=keep_files)
        for link in self.all_links():  # reap our own children
            if "proc" in link:
                try:
                    link["proc"].wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        return left

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _end_pids(pids, grace_s):
    """SIGTERM, then SIGKILL whatever still runs after grace_s; returns those left."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in [p for p in pids if _alive(p)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [p for p in pids if _alive(p)]


def cleanup(state_path, keep_files=False):
    """Removes everything a state file records: processes (by pid), rules, links,
    namespaces, files; then checks. Returns a list of what is left (empty: all gone)."""
    with open(state_path) as f:
        data = json.load(f)
    ip = _ip_path()
    prefix = data["prefix"]
    inodes = set(data.get("ns_inodes", []))
    for ns in data.get("namespaces", []):
        try:
            inodes.add(os.stat(f"/run/netns/{ns}").st_ino)
        except OSError:
            pass
    # Processes: the recorded ones (only while /proc shows they still run what was
    # started), then any process inside one of the run's namespaces (meridiand and
    # whatever a test left there): every one by pid.
    recorded = [p["pid"] for p in data.get("processes", [])
                if _proc_runs(p["pid"], p["program"], p["marker"])]
    left_pids = _end_pids(recorded, grace_s=2)
    left_pids += _end_pids(pids_in_namespaces(inodes), grace_s=0.5)
    for rule in reversed(data.get("rules", [])):
        _run([ip, "-n", rule["ns"], "rule", "del", "pref", str(rule["pref"]), *rule["spec"]],
             check=False)
    for link in reversed(data.get("links", [])):
        _run([ip, "-n", link["ns"], "link", "del", link["name"]], check=False)
    for ns in reversed(data.get("namespaces", [])):
        _run([ip, "netns", "del", ns], check=False)
    if not keep_files:
        for path in data.get("files", []):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    left = [f"process {p} (still running)" for p in left_pids]
    left += leftovers(prefix, inodes)
    if not keep_files and not left:
        shutil.rmtree(data.get("dir") or os.path.dirname(state_path), ignore_errors=True)
    elif keep_files:
        print(f"hosts: kept {os.path.dirname(state_path)}", file=sys.stderr)
    return left


def leftovers(prefix, inodes=()):
    """What of a run (by its prefix, and its namespaces' inodes) still exists: namespaces,
    links in this namespace, processes inside its namespaces."""
    ip = _ip_path()
    left = [f"namespace {line.split()[0]}"
            for line in _run([ip, "netns", "list"]).stdout.splitlines()
            if line.startswith(f"{prefix}-")]
    left += [f"link {line.strip()}" for line in _run([ip, "-o", "link"]).stdout.splitlines()
             if prefix in line]
    left += [f"process {p} (in the run's namespaces)" for p in pids_in_namespaces(set(inodes))]
    return left


def stale_state_files():
    """State files of runs whose creating process is gone."""
    found = []
    for path in glob.glob(os.path.join(tempfile.gettempdir(), STATE_GLOB)):
        try:
            with open(path) as f:
                pid = json.load(f)["creator_pid"]
        except (OSError, ValueError, KeyError):
            continue
        if not _alive(pid):
            found.append(path)
    return found


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m tools.torturelib.hosts",
                                 description="Meridian's test hosts: clean up a run, or lay "
                                             "one out and hold it until interrupted.")
    ap.add_argument("--cleanup", nargs="*", metavar="STATEFILE",
                    help="remove what these state files record (none given: every run in "
                         f"{tempfile.gettempdir()} whose creator is gone)")
    ap.add_argument("--up", metavar="REGIONS", help="lay out these regions (r1,r2) and hold")
    ap.add_argument("--delay-ms", type=int, default=30)
    ap.add_argument("--jitter-ms", type=int, default=0)
    ap.add_argument("--az-delay-ms", type=int, default=1)
    ap.add_argument("--tundelay", help="path of build/bin/tundelay")
    args = ap.parse_args(argv)
    if args.cleanup is not None:
        paths = args.cleanup or stale_state_files()
        bad = 0
        for path in paths:
            left = cleanup(path)
            print(f"{path}: {'clean' if not left else 'left: ' + ', '.join(left)}")
            bad += bool(left)
        return 1 if bad else 0
    if args.up:
        hosts = Hosts(regions=tuple(args.up.split(",")), delay_ms=args.delay_ms,
                      jitter_ms=args.jitter_ms, tundelay=args.tundelay,
                      az_delay_ms=args.az_delay_ms)
        print(f"hosts: run {hosts.prefix}, state {hosts.state.path}")
        for r, az in hosts.hosts():
            print(f"  {hosts.ns(r, az):24} {hosts.address(r, az)}")
        print(f"  {hosts.hub:24} hub: ip netns exec {hosts.hub} ...; Ctrl-C removes it all",
              flush=True)
        try:
            signal.pause()
        finally:
            hosts.close()
        return 0
    ap.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
