"""Hostile clients, raw sockets: no spelling of a path gets around a route
(issue 16 item 1). A strict route at 1/m sits beside a generous default; every
spelling that names the strict route's path must either be refused with 400
or be routed to the strict route, never reach the upstream's /api/reports
through the default route."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))

from harness import SluiceTestCase, read_arrivals, route, wait_for  # noqa: E402
from test_errors import parse_response, raw_exchange  # noqa: E402


class PathBypassTest(SluiceTestCase):

    def setUp(self):
        super().setUp()
        self.mock = self.start_mock()
        self.s = self.start_sluice(route("reports", "/api/reports", self.mock.port, "1/m") +
                                   route("default", "/", self.mock.port, "100/s"))

    def get(self, target, timeout=3.0):
        """(status, headers, body); status None when nothing came in `timeout`."""
        try:
            raw = raw_exchange(self.s.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n"
                               b"Connection: close\r\n\r\n", timeout=timeout)
        except TimeoutError:
            raw = b""
        return parse_response(raw) if raw else (None, {}, b"")

    def paths_seen(self):
        return [a[4] for a in read_arrivals(self.mock.log)]

    def test_ambiguous_spellings_are_refused_with_the_reason(self):
        cases = {
            b"/api/x/%2e%2e/reports": "encoded dot segment",
            b"/api/x/%2E./reports": "encoded dot segment",
            b"/api/x/../reports": "dot segments",
            b"/api/reports%2fx": "encoded slash",
            b"/api%5creports": "encoded backslash",
            b"/api\\reports": "backslash",
            b"/api/%252e%252e/reports": "double percent-encoding",
            b"/api/%zzreports": "bad percent-encoding",
        }
        for target, reason in cases.items():
            status, headers, body = self.get(target)
            self.assertEqual(status, 400, target)
            self.assertEqual(headers.get("x-sluice-error"), "bad_request", target)
            self.assertIn(reason, body.decode(), target)
        self.assertEqual(self.paths_seen(), [])

    def test_equivalent_spellings_take_the_strict_route(self):
        # The one token of the minute goes to the first; the rest wait behind it.
        self.assertEqual(self.get(b"/api/reports")[0], 200)
        for target in (b"/api/%72eports", b"//api/reports", b"/api//%72%65ports?x=%41"):
            status, _, _ = self.get(target, timeout=1.0)
            self.assertIsNone(status, "%r was answered at once: not held by the 1/m route" % target)
        time.sleep(0.5)
        self.assertEqual(self.paths_seen(), ["/api/reports"])
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_client_gone_total", route="reports"), 3)

    def test_the_upstream_gets_the_normalised_target(self):
        self.assertEqual(self.get(b"//x/%7e%41?q=%2f%62")[0], 200)
        wait_for(lambda: self.paths_seen(), what="the arrival")
        self.assertEqual(self.paths_seen(), ["/x/~A?q=%2Fb"])

    def test_reserved_prefix_cannot_be_spelled_around(self):
        for target in (b"/%5fsluice/jobs/1", b"//_sluice/jobs/1"):
            status, headers, _ = self.get(target)
            self.assertEqual(status, 404, target)
            self.assertEqual(headers.get("x-sluice-error"), "no_route", target)
        self.assertEqual(self.paths_seen(), [])
