"""A TCP workload for the flow-metric checks: transfer, then stay connected and idle.

    python3 -m mbrec.lab.flowpeer serve PORT
    python3 -m mbrec.lab.flowpeer client HOST PORT [--conns K] [--send N] [--recv M] [--idle S]

Each client connection sends N bytes, reads M bytes back, then keeps the connection open and
idle for S seconds before closing, so the lab's periodic `ss` snapshots see every flow at rest
(when its state can be compared with mbrec's records exactly, docs/metrics.md).
"""

import argparse
import socket
import struct
import sys
import threading
import time


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        b = conn.recv(min(1 << 16, n - got))
        if not b:
            raise ConnectionError(f"peer closed after {got} of {n} bytes")
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def _serve_one(conn: socket.socket) -> None:
    with conn:
        send_n, recv_n = struct.unpack("!QQ", _recv_exact(conn, 16))
        _recv_exact(conn, send_n)
        conn.sendall(b"r" * recv_n)
        while conn.recv(1 << 16):  # idle until the client closes
            pass


def serve(port: int) -> None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()


def _client_one(host, port, send_n, recv_n, idle_s, errors) -> None:
    try:
        with socket.create_connection((host, port)) as c:
            c.sendall(struct.pack("!QQ", send_n, recv_n) + b"s" * send_n)
            _recv_exact(c, recv_n)
            time.sleep(idle_s)
    except OSError as e:
        errors.append(str(e))


def client(host, port, conns, send_n, recv_n, idle_s) -> int:
    errors: list[str] = []
    threads = [threading.Thread(target=_client_one, args=(host, port, send_n, recv_n, idle_s, errors))
               for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors:
        print(f"flowpeer: {e}", file=sys.stderr)
    return 1 if errors else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m mbrec.lab.flowpeer")
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    c = sub.add_parser("client")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--conns", type=int, default=2)
    c.add_argument("--send", type=int, default=2_000_000)
    c.add_argument("--recv", type=int, default=300_000)
    c.add_argument("--idle", type=float, default=8.0)
    a = p.parse_args(argv)
    if a.mode == "serve":
        serve(a.port)
        return 0
    return client(a.host, a.port, a.conns, a.send, a.recv, a.idle)


if __name__ == "__main__":
    sys.exit(main())
