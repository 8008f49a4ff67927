"""Probe agent for the network-namespace tests, run inside one node's namespace.

Usage: `python netns_agent.py NAME`. Listens on OS-picked TCP and UDP ports on every address of
its namespace and prints `READY <tcp_port> <udp_port>`. Every TCP connection is greeted with
`HELLO NAME`; the driver then sends one command per line and reads one reply line:

- `TCP <host> <port> <timeout_s>` -> `OK <greeting>` or `FAIL <reason>` (`FAIL timeout` when the
  connect or greeting did not arrive in time: what a dropped-packet partition looks like)
- `UDP <host> <port> <payload>` -> `SENT`
- `SEEN <payload>` -> `YES` or `NO` (whether a datagram with that payload arrived)

The agent exits when its stdin closes, so it cannot outlive the test that started it.
"""

from __future__ import annotations

import os
import socket
import socketserver
import sys
import threading

_MAX_REMEMBERED_DATAGRAMS = 10_000
_MAX_LINE_BYTES = 4096


class _State:
    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.datagrams: set[str] = set()

    def remember(self, payload: str) -> None:
        with self.lock:
            if len(self.datagrams) < _MAX_REMEMBERED_DATAGRAMS:
                self.datagrams.add(payload)

    def seen(self, payload: str) -> bool:
        with self.lock:
            return payload in self.datagrams


def _probe_tcp(host: str, port: int, timeout_s: float) -> str:
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as connection:
            greeting = connection.makefile("rb").readline(_MAX_LINE_BYTES)
    except TimeoutError:
        return "FAIL timeout"
    except OSError as exc:
        return f"FAIL {type(exc).__name__}"
    return f"OK {greeting.decode().strip()}" if greeting else "FAIL closed"


def _answer(state: _State, line: str) -> str:
    words = line.split()
    if len(words) == 4 and words[0] == "TCP":
        return _probe_tcp(words[1], int(words[2]), float(words[3]))
    if len(words) == 4 and words[0] == "UDP":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(words[3].encode(), (words[1], int(words[2])))
        return "SENT"
    if len(words) == 2 and words[0] == "SEEN":
        return "YES" if state.seen(words[1]) else "NO"
    return f"ERROR unknown command {line!r}"


def _make_handler(state: _State) -> type[socketserver.StreamRequestHandler]:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(f"HELLO {state.name}\n".encode())
            self.wfile.flush()
            while line := self.rfile.readline(_MAX_LINE_BYTES):
                self.wfile.write(f"{_answer(state, line.decode())}\n".encode())
                self.wfile.flush()

    return Handler


def _receive_datagrams(state: _State, receiver: socket.socket) -> None:
    while True:
        payload, _ = receiver.recvfrom(_MAX_LINE_BYTES)
        state.remember(payload.decode(errors="replace"))


def _exit_when_stdin_closes() -> None:
    sys.stdin.read()
    os._exit(0)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True


def main() -> None:
    state = _State(sys.argv[1])
    server = _Server(("0.0.0.0", 0), _make_handler(state))
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("0.0.0.0", 0))
    threading.Thread(target=_receive_datagrams, args=(state, receiver), daemon=True).start()
    threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
    print(f"READY {server.server_address[1]} {receiver.getsockname()[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
