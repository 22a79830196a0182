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


class UpgradeTest(SluiceTestCase):

    def test_websocket_upgrade_is_refused_without_a_token(self):
        mock = self.start_mock()
        self.start_sluice(route(upstream_port=mock.port, rate="100/s"))
        raw = raw_exchange(self.sluice.port,
                           b"GET /chat HTTP/1.1\r\nHost: s\r\nConnection: Upgrade\r\n"
                           b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", timeout=3)
        self.assertTrue(status_line(raw).startswith("HTTP/1.1 501 Not Implemented"), raw)
        status, headers, body = parse_response(raw)
        self.assert_sluice_error(status, headers, body, 501, "not_implemented")
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_requests_total", route="default",
                                           outcome="not_implemented"), 1)
        self.assertEqual(self.metric_value(text, "sluice_dispatched_total", route="default"), 0)
        self.assertEqual(read_arrivals(mock.log), [])

    def test_h2c_upgrade_is_ignored(self):
        # RFC 9110 7.8: a server may ignore Upgrade; h2c offers are answered in
        # HTTP/1.1, as `curl --http2 http://...` expects.
        mock = self.start_mock()
        self.start_sluice(route(upstream_port=mock.port, rate="100/s"))
        status, _, body = self.request(self.sluice.port, "GET", "/h", headers={
            "Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c",
            "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"})
        self.assertEqual(status, 200)
        seen = json.loads(body)["headers"]
        self.assertNotIn("Upgrade", seen)
        self.assertNotIn("HTTP2-Settings", seen)


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

    def test_target_too_long_for_the_upstream_is_414_at_intake(self):
        target = b"/" + b"a" * 9300
        raw = raw_exchange(self.sluice.port, b"GET " + target + b" HTTP/1.1\r\nHost: s\r\n"
                                             b"Connection: close\r\n\r\n")
        self.assertTrue(status_line(raw).startswith("HTTP/1.1 414 URI Too Long"), raw[:200])
        status, headers, body = parse_response(raw)
        self.assert_sluice_error(status, headers, body, 414, "uri_too_long")
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_dispatched_total", route="default"), 0)
        self.assertEqual(read_arrivals(self.mock.log), [])


if __name__ == "__main__":
    unittest.main()
