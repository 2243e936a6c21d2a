"""tools/relay, the userspace WAN link: bytes arrive intact and in order after
the set delay in each direction; a partition drops them; healing lets new
bytes through again."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import mtest  # noqa: E402

BIN = sys.argv[1]


def echo_server(sock):
    def serve(conn):
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def round_trip(conn, payload):
    t0 = time.monotonic()
    conn.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = conn.recv(65536)
        if not chunk:
            raise AssertionError("closed")
        got += chunk
    return got, time.monotonic() - t0


def test_delay_and_partition():
    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen()
    threading.Thread(target=echo_server, args=(echo,), daemon=True).start()
    port = mtest.free_ports(1)[0]
    relay = subprocess.Popen([os.path.join(BIN, "relay"), "--listen", f"127.0.0.1:{port}",
                              "--to", f"127.0.0.1:{echo.getsockname()[1]}", "--delay-ms", "50"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "delay 50 ms" in relay.stdout.readline()
        conn = socket.create_connection(("127.0.0.1", port))
        conn.settimeout(5)
        payload = bytes(range(256)) * 4096  # 1 MiB, in order
        got, secs = round_trip(conn, payload)
        assert got == payload
        _, secs = round_trip(conn, b"ping")
        assert 0.1 <= secs < 0.5, secs  # 50 ms each way
        relay.send_signal(signal.SIGUSR1)  # partition
        time.sleep(0.1)
        conn.sendall(b"lost")
        conn.settimeout(0.5)
        try:
            data = conn.recv(100)
            raise AssertionError(f"bytes crossed a partition: {data!r}")
        except socket.timeout:
            pass
        relay.send_signal(signal.SIGUSR2)  # heal
        time.sleep(0.1)
        conn.settimeout(5)
        got, _ = round_trip(conn, b"back")
        assert got == b"back", got
        conn.close()
    finally:
        relay.terminate()
        relay.wait(timeout=10)
        echo.close()


mtest.run_tests([("delay_and_partition", test_delay_and_partition)])
