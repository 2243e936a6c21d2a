"""Network probes run on a test host (`ip netns exec NS python3 netprobe.py ...`).
CLOCK_MONOTONIC is one clock for every namespace of the machine, so a datagram
stamped by its sender tells its receiver the one-way delay.

  udp-recv PORT QUIET_S           print "ready", then receive until QUIET_S seconds pass
                                  with nothing; print JSON [[seq, one_way_ms], ...]
  udp-send HOST PORT COUNT GAP_MS send COUNT datagrams "SEQ STAMP", GAP_MS apart; print
                                  "sent COUNT" when all are out
  tcp-listen PORT                 print "ready"; accept and close connections until killed
  tcp-connect HOST PORT COUNT TIMEOUT_S
                                  print JSON: one entry per connect, its ms or an error name
"""

import json
import socket
import sys
import time


def udp_recv(port, quiet_s):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(port)))
    s.settimeout(float(quiet_s))
    print("ready", flush=True)
    got = []
    while True:
        try:
            data = s.recv(2048)
        except socket.timeout:
            break
        now = time.monotonic()
        seq, stamp = data.split()[:2]
        got.append([int(seq), round((now - float(stamp)) * 1000, 3)])
    print(json.dumps(got), flush=True)


def udp_send(host, port, count, gap_ms):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(int(count)):
        s.sendto(f"{i} {time.monotonic():.9f} ".encode() + b"x" * 64, (host, int(port)))
        time.sleep(float(gap_ms) / 1000)
    print(f"sent {count}", flush=True)


def tcp_listen(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    s.listen(128)
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        c.close()


def tcp_connect(host, port, count, timeout_s):
    out = []
    for _ in range(int(count)):
        t0 = time.monotonic()
        try:
            c = socket.create_connection((host, int(port)), timeout=float(timeout_s))
            out.append(round((time.monotonic() - t0) * 1000, 3))
            c.close()
        except socket.timeout:
            out.append("timeout")
        except OSError as e:
            out.append(type(e).__name__ + ":" + (e.strerror or ""))
    print(json.dumps(out), flush=True)


COMMANDS = {"udp-recv": udp_recv, "udp-send": udp_send, "tcp-listen": tcp_listen,
            "tcp-connect": tcp_connect}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
