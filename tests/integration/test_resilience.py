"""Upstream trouble absorbed without losing a request: 429 + Retry-After,
rate-limit headers, retries with backoff, deadlines, priority lanes and
fairness between tenants (issue 3)."""

import json
import subprocess
import time
import unittest

from harness import BURST_BIN, SluiceTestCase, read_arrivals, route, wait_for


class ResilienceTest(SluiceTestCase):

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.sluice.port, path)

    def test_upstream_429s_are_absorbed(self):
        # The API's real limit is 10/s but the route was set to 20/s: the API
        # answers 429 + Retry-After, and sluice waits and retries.
        mock = self.start_mock("--rate", "10/s")
        self.start_sluice(route(upstream_port=mock.port, rate="20/s"))
        summary, rows = self.burst(self.url("/drift"), 60, 60, "--seq", "--interval-us", "300")
        self.assertEqual(summary["status"], {"200": 60}, summary)
        arrivals = read_arrivals(mock.log)
        self.assertGreater(sum(1 for a in arrivals if a[3] == 429), 0, "the API never 429ed")
        self.assertTrue(any(int(r["attempts"]) > 1 for r in rows))
        # After each 429 sluice honours the announced pause: no arrival in it.
        for i, a in enumerate(arrivals[:-1]):
            if a[3] == 429:
                self.assertGreaterEqual(arrivals[i + 1][0] - a[0], 900_000,
                                        "arrival during the Retry-After pause")
        text = self.metrics()
        self.assertGreater(self.metric_value(text, "sluice_retries_total",
                                             route="default", reason="429"), 0)
        self.assertGreater(self.metric_value(text, "sluice_route_pauses_total",
                                             route="default"), 0)
        self.assertEqual(self.metric_value(text, "sluice_requests_total", route="default",
                                           outcome="relayed"), 60)

    def test_first_twenty_429s(self):
        mock = self.start_mock("--fail-first", "20", "--fail-status", "429",
                               "--retry-after", "0")
        self.start_sluice(route(upstream_port=mock.port, rate="100/s"))
        summary, _ = self.burst(self.url("/x"), 100, 100, "--seq", "--interval-us", "300")
        self.assertEqual(summary["status"], {"200": 100}, summary)
        codes = [a[3] for a in read_arrivals(mock.log)]
        self.assertEqual(codes.count(429), 20)
        self.assertEqual(codes.count(200), 100)

    def test_retry_after_pause_is_honoured(self):
        mock = self.start_mock("--fail-first", "2", "--fail-status", "429",
                               "--retry-after", "1")
        self.start_sluice(route(upstream_port=mock.port, rate="100/s"))
        t0 = time.monotonic()
        status, headers, _ = self.request(self.sluice.port, "GET", "/p")
        self.assertEqual(status, 200)
        self.assertEqual(headers["x-sluice-attempts"], "3")
        self.assertGreaterEqual(time.monotonic() - t0, 1.9)
        times = [a[0] for a in read_arrivals(mock.log)]
        self.assertGreaterEqual(times[1] - times[0], 1_000_000)
        self.assertGreaterEqual(times[2] - times[1], 1_000_000)

    def test_deadline_returns_the_last_upstream_answer(self):
        # A 429 whose retry is planned before the deadline, but whose token
        # comes after it: the request is parked again and its deadline fires
        # while it waits, so sluice answers with the 429 it kept (not 504).
        # rate 30/m: one dispatch every 2 s. Arrival t=0, dispatch ~0, 429
        # with Retry-After: 1 -> retry planned for t=1 s < deadline 1.5 s;
        # the limiter's next token is t~2 s > 1.5 s: the deadline fires first.
        # (A retry that cannot be planned before the deadline is answered at
        # once with the upstream's response: a different path, no wait.)
        mock = self.start_mock("--fail-first", "1000", "--fail-status", "429",
                               "--retry-after", "1")
        s = self.start_sluice(route(upstream_port=mock.port, rate="30/m"))
        t0 = time.monotonic()
        status, headers, _ = self.request(s.port, "GET", "/d",
                                          headers={"X-Sluice-Deadline": "1500ms"})
        elapsed = time.monotonic() - t0
        self.assertEqual(status, 429)
        self.assertNotIn("x-sluice-error", headers)
        self.assertEqual(headers.get("retry-after"), "1")
        # One attempt: the retry was planned, never dispatched.
        self.assertEqual(headers["x-sluice-attempts"], "1")
        self.assertEqual(len(read_arrivals(mock.log)), 1)
        self.assertEqual(self.metric_value(self.metrics(), "sluice_retries_total",
                                           route="default", reason="429"), 1)
        # Answered when the deadline fired, not when the 429 came back.
        self.assertGreaterEqual(elapsed, 1.4, "answered before the deadline")
        self.assertLess(elapsed, 3.0, "answered long after the deadline")
        log = wait_for(lambda: [l for l in s.stderr_text().splitlines()
                                if "msg=request " in l and "path=/d " in l],
                       what="the access log line")
        self.assertEqual(len(log), 1, log)
        self.assertIn(" status=429 outcome=relayed ", log[0])
        self.assertIn(" attempts=1 ", log[0])

    def test_ratelimit_headers_prevent_429s(self):
        mock = self.start_mock("--ratelimit-budget", "10", "--ratelimit-window", "1")
        self.start_sluice(route(upstream_port=mock.port, rate="50/s"))
        summary, _ = self.burst(self.url("/budget"), 35, 35, "--seq", "--interval-us", "300")
        self.assertEqual(summary["status"], {"200": 35}, summary)
        codes = [a[3] for a in read_arrivals(mock.log)]
        self.assertEqual(codes.count(429), 0, "the upstream had to answer 429")
        self.assertGreater(self.metric_value(self.metrics(), "sluice_route_pauses_total",
                                             route="default"), 0)

    def test_post_is_retried_on_503_only_with_idempotency_key(self):
        mock = self.start_mock("--fail-first", "1", "--fail-status", "503")
        s = self.start_sluice(route(upstream_port=mock.port, rate="100/s"))
        status, headers, _ = self.request(s.port, "POST", "/pay", body=b"{}")
        self.assertEqual((status, headers["x-sluice-attempts"]), (503, "1"))
        self.assertNotIn("x-sluice-error", headers)

        self.request(mock.port, "POST", "/_mock/config?fail_next=1&fail_status=503")
        status, headers, _ = self.request(s.port, "POST", "/pay", body=b"{}",
                                          headers={"Idempotency-Key": "k-1"})
        self.assertEqual((status, headers["x-sluice-attempts"]), (200, "2"))

        self.request(mock.port, "POST", "/_mock/config?fail_next=1&fail_status=502")
        status, headers, _ = self.request(s.port, "GET", "/read")
        self.assertEqual((status, headers["x-sluice-attempts"]), (200, "2"))
        self.assertEqual(self.metric_value(self.metrics(), "sluice_retries_total",
                                           route="default", reason="503"), 1)

    def test_retries_are_bounded_and_each_takes_a_token(self):
        mock = self.start_mock("--fail-first", "1000", "--fail-status", "503")
        s = self.start_sluice(route(upstream_port=mock.port, rate="100/s", extra="retries = 3"))
        status, headers, _ = self.request(s.port, "GET", "/always-503")
        self.assertEqual((status, headers["x-sluice-attempts"]), (503, "4"))
        self.assertEqual(len(read_arrivals(mock.log)), 4)
        self.assertEqual(self.metric_value(self.metrics(), "sluice_dispatched_total",
                                           route="default"), 4)

    def test_upstream_timeout_retried_for_idempotent_only(self):
        mock = self.start_mock("--hang-first", "1")
        s = self.start_sluice(route(upstream_port=mock.port, rate="100/s",
                                    extra="timeout = 300ms"))
        status, headers, _ = self.request(s.port, "GET", "/t")
        self.assertEqual((status, headers["x-sluice-attempts"]), (200, "2"))
        self.request(mock.port, "POST", "/_mock/config?hang_next=1")
        status, headers, body = self.request(s.port, "POST", "/t", body=b"x")
        self.assertEqual((status, headers.get("x-sluice-error")), (504, "upstream_timeout"))
        self.assertEqual(headers["x-sluice-attempts"], "1")

    def start_backlog(self, path, n, *extra):
        return subprocess.Popen([BURST_BIN, "--url", self.url(path), "-n", str(n), "-c", str(n),
                                 "--seq", "--interval-us", "300", "--json",
                                 "--max-seconds", "60"] + list(extra),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_parked(self, n):
        wait_for(lambda: json.loads(self.admin_get("/status")[2])["queue_depth"] >= n,
                 what="%d parked" % n)

    def test_high_priority_lane_goes_first(self):
        mock = self.start_mock()
        self.start_sluice(route(upstream_port=mock.port, rate="100/s"))
        backlog = self.start_backlog("/normal", 300)
        try:
            self.wait_parked(250)
            summary, _ = self.burst(self.url("/high"), 10, 10, "--seq", "-H",
                                    "X-Sluice-Priority: high")
        finally:
            out, _ = backlog.communicate(timeout=60)
        self.assertEqual(summary["status"], {"200": 10})
        self.assertEqual(json.loads(out.strip().splitlines()[-1])["status"], {"200": 300})
        paths = [a[4] for a in read_arrivals(mock.log)]
        first = paths.index("/high")
        # One normal request may already be on its way when the highs arrive.
        window = paths[first:first + 11]
        self.assertGreaterEqual(window.count("/high"), 10, window)
        self.assertGreater(paths[first + 11:].count("/normal"), 0)

    def test_fair_key_round_robin(self):
        mock = self.start_mock()
        self.start_sluice(route(upstream_port=mock.port, rate="100/s",
                                extra="fair_key = header:X-Tenant"))
        backlog = self.start_backlog("/a", 500, "-H", "X-Tenant: A")
        try:
            self.wait_parked(400)
            summary, _ = self.burst(self.url("/b"), 5, 5, "--seq", "-H", "X-Tenant: B")
        finally:
            backlog.communicate(timeout=60)
        self.assertEqual(summary["status"], {"200": 5})
        paths = [a[4] for a in read_arrivals(mock.log)]
        first = paths.index("/b")
        last = len(paths) - 1 - paths[::-1].index("/b")
        # B's five go out alternating with A: within about ten dispatch slots.
        self.assertLessEqual(last - first + 1, 11, paths[first:last + 1])


if __name__ == "__main__":
    unittest.main()
