"""Hostile clients, raw sockets: what dispatch would refuse is refused at
intake, before a token is spent (issue 16 item 3). A 15 KB target under
max_header_size used to be parked, take the 1/m route's token at dispatch,
and then get 400: the next good request waited a minute."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))

from harness import SluiceTestCase, read_arrivals, route  # noqa: E402
from test_errors import parse_response, raw_exchange  # noqa: E402


class IntakeTest(SluiceTestCase):

    def test_target_too_long_for_the_upstream_costs_no_token(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="1/m"),
                              server="max_header_size = 32k\n")
        target = b"/" + b"a" * 15000
        raw = raw_exchange(s.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n"
                           b"Connection: close\r\n\r\n", timeout=5)
        status, headers, body = parse_response(raw)
        self.assert_sluice_error(status, headers, body, 414, "uri_too_long")
        # The minute's one token is still there.
        status, _, _ = self.request(s.port, "GET", "/good", timeout=5)
        self.assertEqual(status, 200)
        self.assertEqual([a[4] for a in read_arrivals(mock.log)], ["/good"])
