"""Hostile clients, raw sockets: slow clients cannot hold connections
(issue 16 item 2). A client that trickles its head or its body a byte at a
time used to re-arm the idle timeout with every byte and keep its
connection for ever; with max_connections reached, new clients got nothing.
Now a whole head must arrive within client_header_timeout and a whole body
within client_body_timeout, or the client gets 408 request_timeout."""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))

from harness import SluiceTestCase, route  # noqa: E402
from test_errors import parse_response  # noqa: E402


def trickle(port, first, byte, seconds, every, out):
    """Send `first`, then `byte` every `every` s for at most `seconds`; keep what comes back."""
    got = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=seconds + 5) as s:
            s.sendall(first)
            s.settimeout(every)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    data = s.recv(65536)
                    if not data:
                        break
                    got += data
                except socket.timeout:
                    try:
                        s.sendall(byte)
                    except OSError:
                        break
                except OSError:
                    break
    except OSError:
        pass
    out.append(got)


class SlowClientTest(SluiceTestCase):

    def start(self):
        self.mock = self.start_mock()
        return self.start_sluice(route(upstream_port=self.mock.port, rate="100/s"),
                                 server="max_connections = 5\nclient_timeout = 60s\n"
                                        "client_header_timeout = 2s\nclient_body_timeout = 2s\n")

    def test_trickled_heads_are_cut_and_new_clients_get_in(self):
        s = self.start()
        results, threads = [], []
        for _ in range(5):
            t = threading.Thread(target=trickle, args=(s.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ",
                                                       b"a", 12, 0.5, results))
            t.start()
            threads.append(t)
        time.sleep(0.5)
        # All five slots are taken by tricklers; this one must still be served.
        status, _, _ = self.request(s.port, "GET", "/fresh", timeout=10)
        self.assertEqual(status, 200)
        for t in threads:
            t.join(20)
        self.assertEqual(len(results), 5)
        for raw in results:
            status, headers, body = parse_response(raw)
            self.assert_sluice_error(status, headers, body, 408, "request_timeout")
            self.assertIn(b"client_header_timeout", body)
        self.assertEqual(self.metric_value(self.metrics(), "sluice_requests_total",
                                           route="", outcome="request_timeout"), 5)

    def test_trickled_body_is_cut(self):
        s = self.start()
        results = []
        trickle(s.port, b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", b"b",
                10, 0.5, results)
        status, headers, body = parse_response(results[0])
        self.assert_sluice_error(status, headers, body, 408, "request_timeout")
        self.assertIn(b"client_body_timeout", body)

    def test_idle_keep_alive_keeps_its_own_timeout(self):
        s = self.start()
        # An idle connection between requests is not under the header deadline.
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            first = c.recv(65536)
            self.assertTrue(first.startswith(b"HTTP/1.1 200"), first)
            time.sleep(3)  # longer than client_header_timeout, shorter than client_timeout
            c.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            second = c.recv(65536)
            self.assertTrue(second.startswith(b"HTTP/1.1 200"), second)
