"""Hostile clients, raw sockets: the Host rules of RFC 9112 section 3.2
(issue 16 item 4). Nothing that breaks them reaches the upstream."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))

from harness import SluiceTestCase, read_arrivals, route  # noqa: E402
from test_errors import parse_response, raw_exchange  # noqa: E402


class HostTest(SluiceTestCase):

    def setUp(self):
        super().setUp()
        self.mock = self.start_mock()
        self.s = self.start_sluice(route(upstream_port=self.mock.port, rate="100/s"))

    def exchange(self, head):
        return parse_response(raw_exchange(self.s.port, head, timeout=3))

    def test_missing_host_in_http11_is_refused(self):
        status, headers, body = self.exchange(b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n")
        self.assert_sluice_error(status, headers, body, 400, "bad_request")
        self.assertIn(b"missing Host", body)

    def test_repeated_host_is_refused_in_any_version(self):
        for version in (b"1.1", b"1.0"):
            status, headers, body = self.exchange(b"GET /a HTTP/" + version +
                                                  b"\r\nHost: a\r\nHost: b\r\n\r\n")
            self.assert_sluice_error(status, headers, body, 400, "bad_request")
            self.assertIn(b"repeated Host", body)

    def test_http10_needs_no_host(self):
        status, _, _ = self.exchange(b"GET /old HTTP/1.0\r\n\r\n")
        self.assertEqual(status, 200)
        self.assertEqual([a[4] for a in read_arrivals(self.mock.log)], ["/old"])
