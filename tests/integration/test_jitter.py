"""Strict on the real network (issue 13 item 3). A relay between sluice and
the mock upstream delays each request by a random 0-20 ms; the mock's clock
is the upstream's. With jitter_proof = on (dispatches dated by their
answers) no window of the upstream's clock holds more than the limit and the
upstream never answers 429; with the default settings and 0-3 ms of jitter
the 5 ms guard holds at full utilization."""

import os
import subprocess
import sys

from harness import (MOCK_PRIORITY, SluiceTestCase, free_port, max_in_window, port_open,
                     read_arrivals, route, wait_for)

RELAY_BIN = os.environ.get("RELAY_BIN", "build/tests/tools/jitter_relay")


class JitterTest(SluiceTestCase):

    def start_relay(self, to_port, max_ms):
        port = free_port()
        argv = MOCK_PRIORITY + [RELAY_BIN, "--listen", str(port), "--to",
                                "127.0.0.1:%d" % to_port, "--max-ms", str(max_ms),
                                "--max-seconds", "120"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (proc.terminate(), proc.wait(10)))
        wait_for(lambda: port_open(port), what="relay on %d" % port)
        return port

    def run_backlog(self, max_ms, extra, n=300):
        mock = self.start_mock("--rate", "50/s")
        relay = self.start_relay(mock.port, max_ms)
        s = self.start_sluice(route(upstream_port=relay, rate="50/s", extra=extra))
        summary, _ = self.burst("http://127.0.0.1:%d/j" % s.port, n, n, "--seq",
                                "--interval-us", "300")
        self.assertEqual(summary["status"], {"200": n}, summary)
        arrivals = read_arrivals(mock.log)
        times = [a[0] for a in arrivals]
        self.assertEqual([a[3] for a in arrivals], [200] * n, "the upstream answered 429")
        self.assertLessEqual(max_in_window(times, 1_000_000), 50)
        utilization = (n - 1) / ((times[-1] - times[0]) / 1e6) / 50
        print("\n%s, 0-%d ms jitter: utilization %.1f%%" % (extra.strip() or "defaults",
                                                            max_ms, 100 * utilization))
        return utilization

    def test_jitter_proof_holds_under_20ms_of_jitter(self):
        self.assertGreaterEqual(self.run_backlog(20, "jitter_proof = on\n"), 0.90)

    def test_default_guard_holds_under_3ms_of_jitter(self):
        # The guard covers the relay's 0-3 ms and ordinary scheduling noise,
        # not a vCPU the hypervisor stalls for longer (seen once in about
        # five loaded runs: one arrival 9 ms late); such a stall fails one
        # run, a guard too small fails every run. So: a second run, once.
        try:
            utilization = self.run_backlog(3, "")
        except AssertionError as first:
            print("\nfirst run failed (%s); once more" % str(first).splitlines()[0])
            utilization = self.run_backlog(3, "")
        self.assertGreaterEqual(utilization, 0.99)
