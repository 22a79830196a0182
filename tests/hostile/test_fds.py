"""Hostile load: clients cannot take the descriptors upstream connects need
(issue 16 item 5). With ulimit -n 256 and max_connections = 10000, clients
took every descriptor and upstream connects failed (44 x 502 against
5 x 200 in 10 s). sluice now keeps descriptors in reserve, caps clients
below the limit and says so at start."""

import os
import shutil
import sys
import unittest
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))

from harness import SluiceTestCase, read_arrivals, route  # noqa: E402


@unittest.skipUnless(shutil.which("prlimit"), "prlimit (util-linux) is needed")
class DescriptorTest(SluiceTestCase):

    def test_many_clients_under_a_small_descriptor_limit(self):
        # A slow upstream keeps calls in flight and clients parked, holding
        # descriptors; it closes every connection, so each call needs a new one.
        mock = self.start_mock("--latency", "200")
        s = self.start_sluice(route(upstream_port=mock.port, rate="1000/s",
                                    extra="max_in_flight = 32\nretries = 0\n"),
                              server="max_connections = 10000\n",
                              wrap=["prlimit", "--nofile=256:256"])
        self.assertRegex(s.stderr_text(), r"max_connections does not fit the descriptor limit"
                                          r".*nofile=256 reserved=128 cap=128")
        # 300 clients at once, each one request and gone: more than the
        # descriptors allow at once, so some wait in the accept queue.
        def one(i):
            try:
                return self.request(s.port, "GET", "/many/%d" % i,
                                    headers={"Connection": "close",
                                             "X-Mock-Header": "Connection: close"},
                                    timeout=30)[0]
            except OSError as e:
                return type(e).__name__
        with ThreadPoolExecutor(max_workers=300) as pool:
            statuses = list(pool.map(one, range(300)))
        self.assertEqual({st: statuses.count(st) for st in set(statuses)}, {200: 300})
        self.assertEqual(len(read_arrivals(mock.log)), 300)
