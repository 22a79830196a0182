"""The pure parts of bench/soak.py: metrics parsing, body checks, the RSS
criterion. Run: python3 -m unittest discover -s bench -p 'test_*.py'"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soak  # noqa: E402


class TestSoak(unittest.TestCase):
    def test_fnv1a_matches_the_mock(self):
        self.assertEqual(soak.fnv1a(b""), "cbf29ce484222325")
        self.assertEqual(soak.fnv1a(b"a"), "af63dc4c8601ec8c")

    def test_pattern(self):
        n = 200000
        body = (soak.PATTERN * (n // len(soak.PATTERN) + 1))[:n]
        self.assertTrue(soak.pattern_ok(body, n))
        self.assertFalse(soak.pattern_ok(body[:-1], n))
        bad = bytearray(body)
        bad[150000] ^= 1
        self.assertFalse(soak.pattern_ok(bytes(bad), n))
        self.assertTrue(soak.pattern_ok(b"", 0))

    def test_metrics(self):
        m = soak.Metrics(
            '# HELP sluice_requests_total x\n'
            'sluice_requests_total{route="api",outcome="relayed"} 10\n'
            'sluice_requests_total{route="",outcome="no_route"} 2\n'
            'sluice_requests_total{route="a\\"b",outcome="relayed"} 1\n'
            'sluice_queue_depth{route="api",lane="high"} 3\n'
            'sluice_queue_depth{route="api",lane="low"} 4\n'
            'sluice_draining 0\n')
        self.assertEqual(m.total("sluice_requests_total"), 13)
        self.assertEqual(m.total("sluice_requests_total", route=""), 2)
        self.assertEqual(m.by("sluice_queue_depth", "route"), {"api": 7})
        self.assertEqual(m.total("sluice_draining"), 0)

    def test_rss_flat(self):
        flat = [(t, 50000 + (5000 if t % 17 == 0 else 0)) for t in range(121)]
        ok, _, info = soak.rss_flat(flat, 20, 120)
        self.assertTrue(ok)
        self.assertEqual(info["first_max"], 55000)
        # 10 MiB more in the second half, over the 8 MiB floor and 10 %
        grows = [(t, 50000 + (10240 if t > 100 else 0)) for t in range(121)]
        self.assertFalse(soak.rss_flat(grows, 20, 120)[0])
        # a steady leak: 200 KiB/s is 10 MiB per half, 100 KiB/s is under the floor
        self.assertFalse(soak.rss_flat([(t, 50000 + 200 * t) for t in range(121)], 20, 120)[0])
        self.assertTrue(soak.rss_flat([(t, 50000 + 100 * t) for t in range(121)], 20, 120)[0])
        self.assertFalse(soak.rss_flat(flat[:3], 20, 120)[0])


if __name__ == "__main__":
    unittest.main()
