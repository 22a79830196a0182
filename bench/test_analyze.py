"""Checks of the benchmark's own arithmetic: a wrong metric would make every
table lie. Run: python3 -m unittest discover -s bench -p 'test_*.py'"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import analyze as A  # noqa: E402
from bench import abandon_metrics  # noqa: E402
from procs import parse_wrk, wrk_ms  # noqa: E402

S = 1_000_000


class WindowTest(unittest.TestCase):

    def test_evenly_spaced_at_the_limit_never_exceeds_it(self):
        times = [i * 20_000 for i in range(500)]  # 50/s exactly
        self.assertEqual(A.max_in_window(times, S), 50)
        self.assertEqual(A.window_violations(times, 50, S), 0)

    def test_a_hair_under_the_spacing_exceeds_it(self):
        times = [i * 19_990 for i in range(101)]
        self.assertEqual(A.max_in_window(times, S), 51)
        # arrivals 50..100 each close a window holding 51
        self.assertEqual(A.window_violations(times, 50, S), 51)

    def test_window_is_half_open(self):
        self.assertEqual(A.max_in_window([0, S], S), 1)
        self.assertEqual(A.max_in_window([0, S - 1], S), 2)


class OrderTest(unittest.TestCase):

    def test_inversions(self):
        self.assertEqual(A.inversions([0, 1, 2, 3]), 0)
        self.assertEqual(A.inversions([1, 0, 2, 3]), 1)
        self.assertEqual(A.inversions([3, 2, 1, 0]), 6)
        self.assertEqual(A.inversions([]), 0)

    def test_percentile_nearest_rank(self):
        v = list(range(1, 101))
        self.assertEqual(A.percentile(v, 0.50), 50)
        self.assertEqual(A.percentile(v, 0.99), 99)
        self.assertIsNone(A.percentile([], 0.5))

    def test_rate_over(self):
        self.assertAlmostEqual(A.rate_over([0, S, 2 * S]), 1.0)
        self.assertIsNone(A.rate_over([5]))


class PauseTest(unittest.TestCase):

    def test_arrivals_inside_an_announced_pause(self):
        arr = [(0, 0, 429, "/"), (S, 1, 200, "/"), (2 * S, 2, 200, "/"),
               (2 * S + 1, 3, 200, "/")]
        # pause of 2 s from t=0: only the arrival at 1 s is inside
        self.assertEqual(A.arrivals_during_pause(arr, 2 * S), 1)

    def test_pauses_extend_each_other(self):
        arr = [(0, 0, 429, "/"), (S, 1, 429, "/"), (int(2.5 * S), 2, 200, "/")]
        self.assertEqual(A.arrivals_during_pause(arr, 2 * S), 2)


class AbandonTest(unittest.TestCase):

    def test_held_slot_counts_as_idle(self):
        # 50/s: keep 0 at 0 ms, gone 0 left, keep 1 at 40 ms: one slot idle
        arr = [(0, 0, 200, "/keep"), (40_000, 1, 200, "/keep")]
        out = {("/keep", 0): "200", ("/keep", 1): "200", ("/gone", 0): "abandoned"}
        m = abandon_metrics(arr, out, 50)
        self.assertEqual(m["idle_slots"], 1)
        self.assertEqual(m["to_gone"], 0)
        self.assertAlmostEqual(m["ideal_s"], 0.02)

    def test_token_spent_on_a_gone_client_counts(self):
        arr = [(0, 0, 200, "/keep"), (20_000, 0, 200, "/gone"), (40_000, 1, 200, "/keep")]
        out = {("/keep", 0): "200", ("/keep", 1): "200", ("/gone", 0): "abandoned"}
        m = abandon_metrics(arr, out, 50)
        self.assertEqual((m["idle_slots"], m["to_gone"]), (1, 1))

    def test_no_waste(self):
        arr = [(0, 0, 200, "/keep"), (20_000, 1, 200, "/keep")]
        out = {("/keep", 0): "200", ("/keep", 1): "200", ("/gone", 0): "abandoned"}
        self.assertEqual(abandon_metrics(arr, out, 50)["idle_slots"], 0)


class WrkTest(unittest.TestCase):

    def test_units(self):
        self.assertAlmostEqual(wrk_ms("512.00us"), 0.512)
        self.assertAlmostEqual(wrk_ms("1.50ms"), 1.5)
        self.assertAlmostEqual(wrk_ms("2.00s"), 2000.0)
        with self.assertRaises(ValueError):
            wrk_ms("3parsecs")

    def test_parse(self):
        text = ("Running 5s test @ http://127.0.0.1:1/\n"
                "  Latency Distribution\n     50%  620.00us\n     75%    1.00ms\n"
                "     90%    1.50ms\n     99%    2.84ms\n"
                "  460000 requests in 5.00s, 70.00MB read\n"
                "  Socket errors: connect 0, read 2, write 0, timeout 1\n"
                "  Non-2xx or 3xx responses: 7\n"
                "Requests/sec:  92142.10\nTransfer/sec:     14.00MB\n")
        r = parse_wrk(text)
        self.assertEqual(r["rps"], 92142.10)
        self.assertAlmostEqual(r["p50_ms"], 0.62)
        self.assertAlmostEqual(r["p99_ms"], 2.84)
        self.assertEqual((r["errors"], r["non2xx"]), (3, 7))


if __name__ == "__main__":
    unittest.main()
