"""Probes between test hosts (tools/torturelib/hosts.py) for the torture_hosts tests:
listeners and senders run netprobe.py inside the hosts' namespaces. A host is a
(region, az) pair, or None for the hub."""

import json
import os
import subprocess
import sys

NETPROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netprobe.py")


class Probes:
    def __init__(self, hosts):
        self.hosts = hosts
        self.procs = []

    def cmd(self, host, args):
        args = [sys.executable, NETPROBE, *map(str, args)]
        return self.hosts.hub_cmd(args) if host is None else self.hosts.ns_cmd(*host, args)

    def addr(self, host, via=None):
        """host's address; the hub's is its gateway address of `via`'s region."""
        return self.hosts.hub_address(via[0]) if host is None else self.hosts.address(*host)

    def listen(self, host, port):
        """A TCP listener on host (ended by close(), or by the hosts' cleanup)."""
        p = subprocess.Popen(self.cmd(host, ["tcp-listen", port]), stdout=subprocess.PIPE,
                             text=True)
        self.procs.append(p)
        assert p.stdout.readline().strip() == "ready", "tcp listener did not start"
        return p

    def connect(self, src, dst, port, count=3, timeout_s=2.0):
        """One entry per TCP connect from src to dst: ms, or "timeout", or an error."""
        r = subprocess.run(self.cmd(src, ["tcp-connect", self.addr(dst, src), port, count,
                                          timeout_s]),
                           capture_output=True, text=True, timeout=count * timeout_s + 30)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def udp(self, src, dst, port, count, gap_ms, quiet_s=1.0, during=None):
        """Sends count datagrams from src to dst; returns [[seq, one_way_ms]] received.
        during(), when given, runs once the last one is sent (while they are on their way)."""
        recv = subprocess.Popen(self.cmd(dst, ["udp-recv", port, quiet_s]),
                                stdout=subprocess.PIPE, text=True)
        self.procs.append(recv)
        assert recv.stdout.readline().strip() == "ready", "udp receiver did not start"
        send = subprocess.Popen(self.cmd(src, ["udp-send", self.addr(dst, src), port, count,
                                               gap_ms]), stdout=subprocess.PIPE, text=True)
        sent = send.stdout.readline()
        assert sent.startswith("sent"), sent
        if during is not None:
            during()
        assert send.wait(timeout=60) == 0
        send.stdout.close()
        out = recv.stdout.readline()
        recv.wait(timeout=30)
        return json.loads(out)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            if p.stdout:
                p.stdout.close()
        self.procs = []
