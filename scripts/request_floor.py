#!/usr/bin/env python3
"""Sends bare ApiVersions v0 requests over one TCP connection at a fixed rate, one at a time,
so the broker's CPU per request (read from /proc by the caller) shows the machine's floor cost
of a request/response round trip: wakeups, syscalls and context switches, with no work behind it.

Usage: request_floor.py HOST:PORT COUNT RATE
"""
import socket
import struct
import sys
import time


def main() -> None:
    host, port = sys.argv[1].rsplit(":", 1)
    count, rate = int(sys.argv[2]), int(sys.argv[3])
    s = socket.create_connection((host, int(port)), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    start = time.monotonic()
    for i in range(count):
        body = struct.pack(">hhih", 18, 0, i, 5) + b"floor"
        s.sendall(struct.pack(">i", len(body)) + body)
        head = b""
        while len(head) < 4:
            chunk = s.recv(4 - len(head))
            if not chunk:
                sys.exit("broker closed the connection")
            head += chunk
        left = struct.unpack(">i", head)[0]
        while left > 0:
            chunk = s.recv(left)
            if not chunk:
                sys.exit("broker closed the connection")
            left -= len(chunk)
        due = start + (i + 1) / rate - time.monotonic()
        if due > 0:
            time.sleep(due)
    print(f"{count} ApiVersions round trips at {count / (time.monotonic() - start):.0f}/s")


if __name__ == "__main__":
    main()
