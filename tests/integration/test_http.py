"""HTTP as real clients expect it (issue 18), one class per promise; raw
sockets where the bytes matter."""

import http.client
import json
import shutil
import socket
import subprocess
import time
import unittest

from harness import SluiceTestCase, read_arrivals, route, wait_for
from test_errors import parse_response, raw_exchange


def half_closed_exchange(port, payload, timeout=5.0, close_after_shutdown=False):
    """Send payload, shut down the sending side, read until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        if close_after_shutdown:
            return b""
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)
    finally:
        s.close()


def status_line(raw):
    return raw.partition(b"\r\n")[0].decode("latin-1")


class StatusLineTest(SluiceTestCase):
    """Status lines as the upstream wrote them; sluice's own with standard phrases."""

    def setUp(self):
        super().setUp()
        self.mock = self.start_mock()
        self.start_sluice(route(upstream_port=self.mock.port, rate="100/s"))

    def status_line_for(self, status, reason=None):
        head = "GET /s HTTP/1.1\r\nHost: s\r\nConnection: close\r\nX-Mock-Status: %d\r\n" % status
        if reason is not None:
            head += "X-Mock-Reason: %s\r\n" % reason
        return status_line(raw_exchange(self.sluice.port, (head + "\r\n").encode()))

    def test_reason_phrase_is_relayed(self):
        self.assertEqual(self.status_line_for(200, "Fine Thanks"), "HTTP/1.1 200 Fine Thanks")
        self.assertEqual(self.status_line_for(416, "Range Not Satisfiable"),
                         "HTTP/1.1 416 Range Not Satisfiable")
        self.assertEqual(self.status_line_for(451, "Unavailable For Legal Reasons"),
                         "HTTP/1.1 451 Unavailable For Legal Reasons")
        self.assertEqual(self.status_line_for(299, "Custom"), "HTTP/1.1 299 Custom")


if __name__ == "__main__":
    unittest.main()
