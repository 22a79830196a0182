"""The core promises under a real burst: strict rate at the upstream, nothing
dropped, FIFO order, full utilization, no tokens spent on clients that left."""

import json
import subprocess
import unittest

from harness import BURST_BIN, SluiceTestCase, max_in_window, read_arrivals, route, wait_for


class BurstTest(SluiceTestCase):

    def test_burst_500_at_50_per_second(self):
        mock = self.start_mock("--rate", "50/s")
        s = self.start_sluice(route(upstream_port=mock.port, rate="50/s"))
        summary, rows = self.burst("http://127.0.0.1:%d/items" % s.port, 500, 500,
                                   "--seq", "--interval-us", "1000")
        self.assertEqual(summary["status"], {"200": 500}, summary)
        self.assertEqual(summary["timeout"] + summary["error"], 0)

        arrivals = read_arrivals(mock.log)
        self.assertEqual(len(arrivals), 500)
        self.assertEqual([a[3] for a in arrivals], [200] * 500, "the upstream answered 429")
        times = [a[0] for a in arrivals]
        self.assertLessEqual(max_in_window(times, 1_000_000), 50)
        # FIFO: the upstream sees the requests in the order they were sent.
        self.assertEqual([int(a[1]) for a in arrivals], list(range(500)))
        # Utilization: 499 intervals at 50/s take 9.98 s; allow 1% slack.
        span = (times[-1] - times[0]) / 1e6
        self.assertLess(span, 9.98 / 0.99, "rate %.2f/s" % (499 / span))
        # Every response says how long it waited and how many attempts it took.
        self.assertTrue(all(r["attempts"] == "1" for r in rows))
        self.assertGreater(float(rows[-1]["queue_time"]), 9000.0)

        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_requests_total",
                                           route="default", outcome="relayed"), 500)
        self.assertEqual(self.metric_value(text, "sluice_upstream_requests_total",
                                           route="default", code="200"), 500)

    def test_quota_is_strict_too(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="100/s",
                                    extra="burst = 10\nquota = 30/m"))
        summary, _ = self.burst("http://127.0.0.1:%d/q" % s.port, 40, 40, "--seq",
                                "--timeout", "3")
        # 30 per minute: the first 30 go at once (burst), the rest wait.
        self.assertEqual(summary["status"].get("200"), 30, summary)
        self.assertEqual(len(read_arrivals(mock.log)), 30)

    def test_clients_that_leave_do_not_reach_the_upstream(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="5/s"))
        # 40 parked at 5/s; those from index 10 on hang up after 1 s.
        summary, rows = self.burst("http://127.0.0.1:%d/gone" % s.port, 40, 40, "--seq",
                                   "--interval-us", "500", "--abandon-from", "10",
                                   "--abandon-after-ms", "1000")
        # On a loaded machine connections may reach sluice out of order: an
        # abandoner parked among the first five is served before it gives up.
        # What must hold: every patient client is served, and exactly the
        # clients that were served reached the upstream, none that gave up.
        served = sorted(r["index"] for r in rows if r["status"] == "200")
        gone = summary["abandoned"]
        self.assertEqual(gone + len(served), 40, summary)
        self.assertTrue(set(range(10)) <= set(served), summary)
        self.assertGreaterEqual(gone, 25, summary)
        wait_for(lambda: self.metric_value(self.metrics(), "sluice_requests_total",
                                           route="default", outcome="client_gone") == gone,
                 what="%d client_gone outcomes" % gone)
        seqs = sorted(int(a[1]) for a in read_arrivals(mock.log))
        self.assertEqual(seqs, served, "abandoned requests reached the upstream")
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_client_gone_total", route="default"), gone)
        self.assertEqual(self.metric_value(text, "sluice_dispatched_total", route="default"),
                         len(served))
        self.assertEqual(self.metric_value(text, "sluice_queue_depth_total"), 0)

    def test_no_token_wasted_on_abandoned_clients(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="10/s"))
        url = "http://127.0.0.1:%d" % s.port
        # Tenant A parks 20 and hangs up after 1 s; B parks 20 behind them.
        leaver = subprocess.Popen([BURST_BIN, "--url", url + "/a", "-n", "20", "-c", "20",
                                   "--abandon-from", "0", "--abandon-after-ms", "1000",
                                   "--json", "--max-seconds", "30"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: json.loads(self.admin_get("/status")[2])["queue_depth"] >= 19,
                     what="A parked")
            summary, _ = self.burst(url + "/b", 20, 20)
        finally:
            out, _ = leaver.communicate(timeout=60)
        self.assertEqual(summary["status"], {"200": 20}, summary)
        self.assertGreaterEqual(json.loads(out.strip().splitlines()[-1])["abandoned"], 8)
        arrivals = read_arrivals(mock.log)
        times = [a[0] for a in arrivals]
        gaps = [(b - a) / 1000 for a, b in zip(times, times[1:])]
        # Every slot at 10/s is used: no gap opens where A's clients left.
        self.assertTrue(all(g < 150 for g in gaps), "idle dispatch slots: %s" % gaps)
        self.assertEqual(sum(1 for a in arrivals if a[4] == "/b"), 20)
        # A's clients that left before their turn never reached the upstream.
        self.assertLessEqual(sum(1 for a in arrivals if a[4] == "/a"), 12)

if __name__ == "__main__":
    unittest.main()
