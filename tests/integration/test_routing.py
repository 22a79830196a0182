"""Routes that fit real APIs (issue 14 item 3): strip_prefix maps
/github/... onto an upstream's own paths, and a route may match a Host."""

import json

from harness import SluiceTestCase, read_arrivals


def route(name, match, port, extra="", base=""):
    return ("[route %s]\nmatch = %s\nupstream = http://127.0.0.1:%d%s\nrate = 100/s\n%s\n"
            % (name, match, port, base, extra))


class RoutingTest(SluiceTestCase):

    def test_strip_prefix(self):
        mock = self.start_mock()
        s = self.start_sluice(route("gh", "/github", mock.port, "strip_prefix = on\n", "/base") +
                              route("keep", "/keep", mock.port, "", "/base"))
        for target in ("/github/repos/x?q=1", "/github", "/github?page=2", "/keep/y"):
            self.assertEqual(self.request(s.port, "GET", target)[0], 200, target)
        self.assertEqual([a[4] for a in read_arrivals(mock.log)],
                         ["/base/repos/x?q=1", "/base/", "/base/?page=2", "/base/keep/y"])
        # No way out of the base path after stripping either.
        status, headers, body = self.request(s.port, "GET", "/github/%2e%2e/admin")
        self.assert_sluice_error(status, headers, body, 400, "bad_request")
        self.assertEqual(len(read_arrivals(mock.log)), 4)

    def test_host_routes_before_host_less_ones(self):
        a, b = self.start_mock(name="a"), self.start_mock(name="b")
        s = self.start_sluice(route("any", "/", b.port) +
                              route("api", "/", a.port, "host = api.example.com\n") +
                              route("api-v2", "/v2", a.port, "host = api.example.com\n"))
        for host, path in (("api.example.com", "/x"), ("API.example.com:8080", "/v2/y"),
                           ("other.example.com", "/z")):
            status, headers, body = self.request(s.port, "GET", path, headers={"Host": host})
            self.assertEqual(status, 200, host)
        self.assertEqual([r[4] for r in read_arrivals(a.log)], ["/x", "/v2/y"])
        self.assertEqual([r[4] for r in read_arrivals(b.log)], ["/z"])
        routes = {r["name"]: r["dispatched"] for r in json.loads(self.admin_get("/status")[2])["routes"]}
        self.assertEqual(routes, {"any": 1, "api": 1, "api-v2": 1})

    def test_unmatched_host_without_default_route(self):
        mock = self.start_mock()
        s = self.start_sluice(route("api", "/", mock.port, "host = api.example.com\n"))
        status, headers, body = self.request(s.port, "GET", "/x", headers={"Host": "evil.example"})
        self.assert_sluice_error(status, headers, body, 404, "no_route")
        self.assertEqual(read_arrivals(mock.log), [])


class CostTest(SluiceTestCase):
    """Request cost (issue 14 item 2): a dispatch takes its cost from every limit."""

    def test_cost_holds_strictness_in_units(self):
        from harness import max_in_window
        mock = self.start_mock()
        s = self.start_sluice(route("api", "/", mock.port, "max_cost = 5\nburst = 10\n")
                              .replace("rate = 100/s", "rate = 10/s"))
        summary, _ = self.burst("http://127.0.0.1:%d/c" % s.port, 20, 20, "--seq",
                                "--interval-us", "300", "-H", "X-Sluice-Cost: 2")
        self.assertEqual(summary["status"], {"200": 20}, summary)
        times = [a[0] for a in read_arrivals(mock.log)]
        # 10 units per second at 2 units each: 5 requests in any second.
        self.assertLessEqual(max_in_window(times, 1_000_000), 5)
        self.assertEqual(self.metric_value(self.metrics(), "sluice_units_dispatched_total",
                                           route="api"), 40)

    def test_bad_cost_is_refused(self):
        mock = self.start_mock()
        s = self.start_sluice(route("api", "/", mock.port, "max_cost = 5\n"))
        for v in ("0", "6", "abc", "-1", "2.5"):
            status, headers, body = self.request(s.port, "GET", "/", headers={"X-Sluice-Cost": v})
            self.assert_sluice_error(status, headers, body, 400, "bad_request")
        self.assertEqual(read_arrivals(mock.log), [])
