"""A resend is a dispatch (issue 13 item 4). An upstream that reads a request
and closes the connection without a byte of answer (on a reused keep-alive
connection: the keep-alive race) used to get the request again, sent
silently by the upstream client without a token: 3 POSTs reached it 5 times,
and a burst of 60 at 20/s reached it 120 times with 40 in one second. Now
the request layer decides: it resends only where a retry is allowed
(idempotent method or Idempotency-Key), through the queue with a token,
counted as an attempt; a POST without a key gets 502."""

import json
import unittest

from harness import SluiceTestCase, max_in_window, read_arrivals, route


class ResendTest(SluiceTestCase):

    def start(self, rate="100/s"):
        self.mock = self.start_mock()
        return self.start_sluice(route(upstream_port=self.mock.port, rate=rate))

    def drop_next(self, k):
        self.request(self.mock.port, "POST", "/_mock/config?drop_next=%d" % k)

    def test_post_without_key_is_not_sent_twice(self):
        s = self.start()
        self.assertEqual(self.request(s.port, "GET", "/warm")[0], 200)  # a pooled connection
        self.drop_next(1)
        status, headers, body = self.request(s.port, "POST", "/pay", body=b"{}")
        self.assert_sluice_error(status, headers, body, 502, "upstream_unreachable")
        self.assertIn("closed the connection before answering", json.loads(body)["detail"])
        self.assertEqual(headers["x-sluice-attempts"], "1")
        self.assertEqual([a[4] for a in read_arrivals(self.mock.log)], ["/warm", "/pay"])

    def test_idempotent_requests_are_resent_with_a_token(self):
        s = self.start()
        self.assertEqual(self.request(s.port, "GET", "/warm")[0], 200)
        self.drop_next(1)
        status, headers, _ = self.request(s.port, "GET", "/read")
        self.assertEqual((status, headers["x-sluice-attempts"]), (200, "2"))
        self.drop_next(1)
        status, headers, _ = self.request(s.port, "POST", "/pay", body=b"{}",
                                          headers={"Idempotency-Key": "k-7"})
        self.assertEqual((status, headers["x-sluice-attempts"]), (200, "2"))
        arrivals = read_arrivals(self.mock.log)
        self.assertEqual([a[4] for a in arrivals], ["/warm", "/read", "/read", "/pay", "/pay"])
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_dispatched_total", route="default"),
                         len(arrivals))
        self.assertEqual(self.metric_value(text, "sluice_retries_total", route="default",
                                           reason="closed"), 2)

    def test_a_burst_against_a_dropping_upstream_holds_the_limit(self):
        s = self.start(rate="20/s")
        self.drop_next(20)
        summary, _ = self.burst(self.url("/b"), 60, 60, "--seq", "--interval-us", "300")
        # A resend goes back to the head of its lane, so the 20 drops take
        # the first requests in turn: each is sent at most 1 + retries (2)
        # times. Six use up their three attempts (502), the seventh gets
        # through on its third; every send was a dispatch with its token.
        self.assertEqual(summary["status"], {"200": 54, "502": 6}, summary)
        arrivals = read_arrivals(self.mock.log)
        self.assertEqual(len(arrivals), 6 * 3 + 3 + 53)
        self.assertLessEqual(max_in_window([a[0] for a in arrivals], 1_000_000), 20)
        self.assertEqual(self.metric_value(self.metrics(), "sluice_dispatched_total",
                                           route="default"), len(arrivals))

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.sluice.port, path)


if __name__ == "__main__":
    unittest.main()
