"""The status page (issue 17): what /status adds for it, the page itself on
the admin listener, the Grafana dashboard's metric names, and the page in a
headless Chromium against a running sluice.

The browser tests need Debian's `chromium` (scripts/deps.sh installs it) and
skip without it; SLUICE_SKIP_BROWSER=1 skips them too (the sanitizer build
sets it: the page is the same bytes in both builds). Chromium runs headless
with --dump-dom after a --virtual-time-budget, a handful of times in all;
every host name but loopback resolves to nothing, and its net log shows
every request the page made. Screenshots are kept in the test's workdir
and copied to SLUICE_ARTIFACT_DIR when set (CTest sets it to
BUILD/tests/integration/artifacts).
"""

import html.parser
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import unittest

from harness import BURST_BIN, SluiceTestCase, route, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DASHBOARD = os.path.join(ROOT, "grafana", "sluice.json")
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
SKIP_BROWSER = os.environ.get("SLUICE_SKIP_BROWSER") == "1"


class StatusTestCase(SluiceTestCase):

    def status(self):
        status, _, body = self.admin_get("/status")
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def route_status(self, name="default"):
        for r in self.status()["routes"]:
            if r["name"] == name:
                return r
        raise AssertionError("no route %r in /status" % name)

    def background_burst(self, path, n, *extra):
        """The burst client in the background; finish_burst() waits for it."""
        results = os.path.join(self.workdir, "bg-%d.txt" % time.monotonic_ns())
        proc = subprocess.Popen(
            [BURST_BIN, "--url", "http://127.0.0.1:%d%s" % (self.sluice.port, path), "-n", str(n),
             "-c", str(n), "--json", "--max-seconds", "90", "--results", results] + list(extra),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        return proc

    def finish_burst(self, proc):
        out, err = proc.communicate(timeout=120)
        self.assertEqual(proc.returncode, 0, err)
        return json.loads(out.strip().splitlines()[-1])

    def mock_config(self, mock, query):
        status, _, body = self.request(mock.port, "POST", "/_mock/config?" + query)
        self.assertEqual(status, 200, body)


class StatusFieldsTest(StatusTestCase):
    """/status carries what the page shows, and it moves."""

    def test_fields_idle(self):
        mock = self.start_mock()
        self.start_sluice(route(upstream_port=mock.port, rate="10/s",
                                extra="quota = 1000/h\nmax_in_flight = 4\nburst = 3"))
        doc = self.status()
        r = doc["routes"][0]
        self.assertEqual(r["max_in_flight"], 4)
        self.assertEqual(r["burst"], 3)
        self.assertEqual(r["quotas"], [{"n": 1000.0, "period_s": 3600.0}])
        self.assertIsNone(r["oldest_wait_ms"])
        self.assertEqual(r["oldest_wait_ms_by_lane"], {"high": None, "normal": None, "low": None})
        self.assertIsNone(r["pause_reason"])
        self.assertIsNone(r["paused_until"])
        self.assertEqual(r["dispatch_rate"], {"10s": 0, "60s": 0})
        self.assertEqual(r["dispatch_history"], [0] * 300)
        self.assertEqual(set(r["outcomes_60s"]), set(r["outcomes"]))
        self.assertEqual(sum(r["outcomes_60s"].values()), 0)
        self.assertEqual(doc["outcome_status"]["queue_timeout"], 504)
        self.assertEqual(doc["outcome_status"]["upstream_unreachable"], 502)
        self.assertEqual(doc["outcome_status"]["relayed"], 0)
        self.assertIsNone(doc["last_reload"])
        self.assertFalse(doc["reload_refused"])
        self.assertEqual(doc["retired_routes"], 0)
        self.assertLess(abs(doc["now"] - time.time()), 5)
        self.assertLessEqual(doc["start_time"], doc["now"])

    def test_rates_and_oldest_wait_move_during_a_burst(self):
        mock = self.start_mock()
        self.start_sluice(route(upstream_port=mock.port, rate="10/s"))
        bg = self.background_burst("/b", 40)
        wait_for(lambda: self.route_status()["depth"]["normal"] >= 20, what="a parked burst")
        time.sleep(0.3)
        r = self.route_status()
        self.assertGreater(r["oldest_wait_ms"], 200)
        self.assertGreater(r["oldest_wait_ms_by_lane"]["normal"], 200)
        self.assertIsNone(r["oldest_wait_ms_by_lane"]["high"])
        # Complete seconds with dispatches in them: rates above zero, never above the limit.
        wait_for(lambda: self.route_status()["dispatch_rate"]["10s"] > 0, timeout=5,
                 what="a 10 s rate above 0")
        r = self.route_status()
        self.assertGreater(r["dispatch_rate"]["60s"], 0)
        self.assertLessEqual(r["dispatch_rate"]["10s"], 10.0)
        self.assertGreater(sum(r["dispatch_history"]), 0)
        self.assertLessEqual(max(r["dispatch_history"]), 10)
        self.assertEqual(self.finish_burst(bg)["status"], {"200": 40})
        r = self.route_status()
        self.assertIsNone(r["oldest_wait_ms"])
        self.assertEqual(r["outcomes_60s"]["relayed"], 40)
        # Every dispatch of the burst is in the history or the current second.
        wait_for(lambda: sum(self.route_status()["dispatch_history"]) == 40, timeout=3,
                 what="all 40 dispatches in complete seconds")
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_queue_oldest_seconds", route="default"), 0)
        self.assertEqual(self.metric_value(text, "sluice_route_rate_limit_per_second",
                                           route="default"), 10)
        self.assertEqual(self.metric_value(text, "sluice_route_max_in_flight", route="default"), 32)

    def wait_paused(self, reason, timeout=10):
        def paused():
            r = self.route_status()
            return r if r["pause_reason"] == reason else None
        return wait_for(paused, timeout=timeout, interval=0.01, what="a %s pause" % reason)

    def test_pause_reason_retry_after(self):
        mock = self.start_mock("--fail-first", "1", "--fail-status", "429", "--retry-after", "3")
        s = self.start_sluice(route(upstream_port=mock.port))
        got = []
        t = threading.Thread(target=lambda: got.append(self.request(s.port, "GET", "/p")[0]))
        t.start()
        r = self.wait_paused("retry_after")
        doc = self.status()
        self.assertGreater(r["paused_for_ms"], 1000)
        self.assertGreater(r["paused_until"], doc["now"])
        self.assertLess(r["paused_until"], doc["now"] + 4)
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_route_paused_reason", route="default",
                                           reason="retry_after"), 1)
        self.assertEqual(self.metric_value(text, "sluice_route_paused_reason", route="default",
                                           reason="backoff"), 0)
        t.join(timeout=15)
        self.assertEqual(got, [200])
        r = self.route_status()
        self.assertIsNone(r["pause_reason"])
        self.assertIsNone(r["paused_for_ms"])

    def test_pause_reason_backoff(self):
        # 429 without Retry-After: sluice's own backoff (about a second).
        mock = self.start_mock("--fail-first", "1", "--fail-status", "429")
        s = self.start_sluice(route(upstream_port=mock.port))
        got = []
        t = threading.Thread(target=lambda: got.append(self.request(s.port, "GET", "/p")[0]))
        t.start()
        self.wait_paused("backoff")
        t.join(timeout=15)
        self.assertEqual(got, [200])

    def test_pause_reason_budget(self):
        # The upstream's RateLimit headers say the budget is spent.
        mock = self.start_mock("--ratelimit-budget", "2", "--ratelimit-window", "3")
        s = self.start_sluice(route(upstream_port=mock.port))
        # Two in one window of the mock spend it; two requests may straddle a window's end.
        for _ in range(6):
            self.assertEqual(self.request(s.port, "GET", "/q")[0], 200)
            r = self.route_status()
            if r["pause_reason"] == "budget":
                break
        self.assertEqual(r["pause_reason"], "budget")
        self.assertGreater(r["paused_for_ms"], 0)


    def test_reload_state(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port))
        s.p.send_signal(signal.SIGHUP)
        wait_for(lambda: self.status()["last_reload"] is not None, what="a reload")
        doc = self.status()
        self.assertFalse(doc["reload_refused"])
        self.assertEqual(doc["reloads"], 1)
        self.assertLess(abs(doc["last_reload"] - time.time()), 5)
        first = doc["last_reload"]
        with open(s.config, "a") as f:
            f.write("[route broken]\nmatch = /b\n")  # no upstream, no rate
        s.p.send_signal(signal.SIGHUP)
        wait_for(lambda: self.status()["reload_refused"], what="a refused reload")
        doc = self.status()
        self.assertEqual(doc["reloads"], 1)
        self.assertGreaterEqual(doc["last_reload"], first)


class StatusPageServedTest(StatusTestCase):
    """GET / on the admin listener."""

    def test_page(self):
        mock = self.start_mock()
        self.start_sluice(route(upstream_port=mock.port))
        status, headers, body = self.admin_get("/")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "text/html; charset=utf-8")
        page = body.decode("utf-8")
        self.assertTrue(page.startswith("<!doctype html>"))
        self.assertLess(len(body), 64 * 1024)
        self.assertIn('fetch("/status"', page)
        # Self-contained: no other host named anywhere, nothing loaded by address.
        self.assertIsNone(re.search(r"(?i)https?:|//[a-z0-9.-]+\.[a-z]", page))
        for attr in re.findall(r'(?i)\b(?:src|href|action)\s*=\s*"?([^"\s>]*)', page):
            self.assertTrue(attr.startswith("data:") or attr.startswith("/"), attr)
        self.assertNotIn("@import", page)
        self.assertNotIn("url(", page)
        # And the browser is told so.
        csp = headers["content-security-policy"]
        self.assertIn("default-src 'none'", csp)
        self.assertIn("connect-src 'self'", csp)
        self.assertEqual(headers["cache-control"], "no-store")
        status, _, _ = self.request(self.sluice.admin, "HEAD", "/")
        self.assertEqual(status, 200)

    def test_page_with_admin_token(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port), server="admin_token = s3cret")
        # No token: a form that asks for it, as HTML, and nothing of the page.
        status, headers, body = self.admin_get("/")
        self.assertEqual(status, 401)
        self.assertEqual(headers["content-type"], "text/html; charset=utf-8")
        self.assertIn(b'name=token', body)
        self.assertNotIn(b"fetch(", body)
        self.assertEqual(self.admin_get("/?token=wrong")[0], 401)
        self.assertEqual(self.admin_get("/?token=s3cre")[0], 401)
        status, _, body = self.admin_get("/?token=s3cret")
        self.assertEqual(status, 200)
        self.assertIn(b'fetch("/status"', body)
        status, _, _ = self.request(s.admin, "GET", "/", headers={"Authorization": "Bearer s3cret"})
        self.assertEqual(status, 200)
        # The query is for the page only: data wants the header.
        self.assertEqual(self.admin_get("/status?token=s3cret")[0], 401)
        self.assertEqual(self.admin_get("/metrics?token=s3cret")[0], 401)
        status, _, _ = self.request(s.admin, "GET", "/status",
                                    headers={"Authorization": "Bearer s3cret"})
        self.assertEqual(status, 200)


def dashboard_metric_names(doc):
    """Metric names in every PromQL expression and variable query of a dashboard."""
    exprs = []

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if k in ("expr", "definition") and isinstance(v, str):
                    exprs.append(v)
                elif k == "query" and isinstance(v, str):
                    exprs.append(v)
                else:
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
    walk(doc)
    names = set()
    for e in exprs:
        e = re.sub(r'"[^"]*"', '""', e)  # label values are not names
        names.update(re.findall(r"\bsluice_[a-z0-9_]+\b", e))
    return exprs, names


class GrafanaDashboardTest(StatusTestCase):

    def test_every_metric_exists(self):
        with open(DASHBOARD) as f:
            doc = json.load(f)
        exprs, names = dashboard_metric_names(doc)
        self.assertGreater(len(exprs), 15)
        self.assertGreater(len(names), 15)
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, extra="quota = 100/m"))
        self.assertEqual(self.request(s.port, "GET", "/x")[0], 200)
        exposed = set()
        for line in self.metrics().splitlines():
            m = re.match(r"^# TYPE (\S+) ", line) or re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
            if m:
                exposed.add(m.group(1))
        missing = sorted(names - exposed)
        self.assertEqual(missing, [], "the dashboard uses metrics sluice does not export")
        # What makes it importable anywhere: a datasource variable, a route variable.
        variables = {v["name"]: v for v in doc["templating"]["list"]}
        self.assertEqual(variables["datasource"]["type"], "datasource")
        self.assertIn("route", variables)
        for p in doc["panels"]:
            for t in p.get("targets", []):
                self.assertEqual(t["datasource"]["uid"], "${datasource}", p["title"])


# --- the page in a browser ---------------------------------------------------

class RouteCards(html.parser.HTMLParser):
    """From a dumped DOM: each route card's attributes and the text of its fields."""

    def __init__(self):
        super().__init__()
        self.cards = {}
        self.stack = []       # (tag, card name or None, field or None, id)
        self.banner = None
        self.stale = False
        self.in_banner = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        card = self.stack[-1][1] if self.stack else None
        field = self.stack[-1][2] if self.stack else None
        if "data-route" in a:
            card = a["data-route"]
            self.cards[card] = {"attrs": a, "text": "", "fields": {}}
        if "data-f" in a and card is not None:
            field = a["data-f"]
            self.cards[card]["fields"].setdefault(field, "")
        if a.get("id") == "banner":
            self.banner = {"hidden": "hidden" in a, "text": ""}
            self.in_banner = True
        if tag == "body" and "stale" in (a.get("class") or "").split():
            self.stale = True
        if tag not in self.VOID:
            self.stack.append((tag, card, field, a.get("id")))

    VOID = ("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
            "track", "wbr")

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if tag not in [t[0] for t in self.stack]:
            return
        while self.stack:
            t = self.stack.pop()
            if t[3] == "banner":
                self.in_banner = False
            if t[0] == tag:
                break

    def handle_data(self, data):
        if self.in_banner and self.banner is not None:
            self.banner["text"] += data
        if not self.stack or self.stack[-1][1] is None:
            return
        card = self.cards[self.stack[-1][1]]
        card["text"] += data
        if self.stack[-1][2] is not None:
            card["fields"][self.stack[-1][2]] += data


@unittest.skipIf(CHROMIUM is None, "chromium is not installed (scripts/deps.sh installs it)")
@unittest.skipIf(SKIP_BROWSER, "SLUICE_SKIP_BROWSER=1")
class StatusPageBrowserTest(StatusTestCase):

    def chromium(self, url, name, budget_ms=2500, screenshot=False):
        """Open url in a headless Chromium; returns (parsed DOM, the URLs the page asked for)."""
        profile = os.path.join(self.workdir, "chromium-profile")
        netlog = os.path.join(self.workdir, name + ".netlog.json")
        argv = [CHROMIUM, "--headless", "--disable-gpu", "--user-data-dir=" + profile,
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
                # No name resolves: nothing leaves this machine, whoever asks.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--log-net-log=" + netlog, "--window-size=1280,720",
                "--virtual-time-budget=%d" % budget_ms, "--dump-dom"]
        if os.geteuid() == 0:
            argv.append("--no-sandbox")
        if screenshot:
            argv.append("--screenshot=" + os.path.join(self.workdir, name + ".png"))
        argv.append(url)
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=90, cwd=self.workdir)
        with open(os.path.join(self.workdir, name + ".html"), "w") as f:
            f.write(cp.stdout)
        with open(os.path.join(self.workdir, name + ".chromium.err"), "w") as f:
            f.write(cp.stderr)
        self.assertEqual(cp.returncode, 0, cp.stderr[-2000:])
        self.assertIn("</html>", cp.stdout, cp.stderr[-2000:])
        dom = RouteCards()
        dom.feed(cp.stdout)
        if screenshot:
            self.keep(name + ".png")
        return dom, self.page_requests(netlog, url)

    def page_requests(self, netlog, url):
        """URLs of the requests the page made (its own site's), from Chromium's net log."""
        with open(netlog) as f:
            text = f.read()
        try:
            log = json.loads(text)
        except ValueError:  # not closed: Chromium stopped mid-write
            log = json.loads(text.rstrip().rstrip(",") + "]}")
        start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        site = re.match(r"(http://[^:/]+)", url).group(1)
        urls = []
        for ev in log["events"]:
            p = ev.get("params", {})
            if ev["type"] == start and site in p.get("network_isolation_key", ""):
                urls.append(p["url"])
        return urls

    def keep(self, name):
        dest = os.environ.get("SLUICE_ARTIFACT_DIR")
        if dest:
            os.makedirs(dest, exist_ok=True)
            shutil.copyfile(os.path.join(self.workdir, name), os.path.join(dest, name))

    def assert_only_admin(self, urls, admin):
        self.assertGreaterEqual(urls.count("http://127.0.0.1:%d/status" % admin), 2, urls)
        for u in urls:
            self.assertTrue(u.startswith("http://127.0.0.1:%d/" % admin), u)

    def test_page_follows_a_parked_burst_and_a_pause(self):
        mock = self.start_mock()
        s = self.start_sluice(route(name="api", upstream_port=mock.port, rate="4/s",
                                    extra="quota = 5000/h\nmax_in_flight = 8"),
                              server="drain_timeout = 1s")
        url = "http://127.0.0.1:%d/" % s.admin
        # 20 s of backlog at 4/s: room for three slow Chromium starts on a busy machine.
        bg = self.background_burst("/v1/items", 80)
        wait_for(lambda: self.route_status("api")["depth"]["normal"] >= 50, what="a parked burst")

        dom, urls = self.chromium(url, "parked")
        self.assertIn("api", dom.cards)
        card = dom.cards["api"]
        first = int(card["attrs"]["data-depth"])
        self.assertGreater(first, 0)
        self.assertEqual(card["fields"]["depth"].strip(), str(first))
        self.assertEqual(card["fields"]["rate"].strip(), "4/s")
        self.assertEqual(card["fields"]["quotas"].strip(), "5000/h")
        self.assertEqual(card["fields"]["maxinflight"].strip(), "8")
        self.assertEqual(card["fields"]["state"].strip(), "backlog")
        self.assertIn("relayed", card["fields"]["outcomes"])
        self.assertTrue(dom.banner["hidden"])
        self.assert_only_admin(urls, s.admin)

        time.sleep(2)
        dom, urls = self.chromium(url, "draining-queue")
        later = int(dom.cards["api"]["attrs"]["data-depth"])
        self.assertLess(later, first)
        self.assertGreater(later, 0)
        self.assertNotEqual(dom.cards["api"]["fields"]["r10"].strip(), "0")

        # The upstream says 429 with Retry-After: 30 to the next request.
        self.mock_config(mock, "fail_next=1&fail_status=429&retry_after=30")
        wait_for(lambda: self.route_status("api")["pause_reason"] == "retry_after",
                 what="the route paused by Retry-After")
        dom, urls = self.chromium(url, "paused", screenshot=True)
        card = dom.cards["api"]
        self.assertEqual(card["attrs"]["data-state"], "paused")
        self.assertEqual(card["attrs"]["data-pause-reason"], "retry_after")
        self.assertEqual(card["fields"]["state"].strip(), "paused")
        self.assertIn("Retry-After", card["fields"]["pause"])
        self.assertRegex(card["fields"]["pause"], r"Paused for \d+(\.\d)? s more, until \d\d:\d\d:\d\d")
        self.assertGreater(int(card["attrs"]["data-depth"]), 0)
        self.assert_only_admin(urls, s.admin)

        # Stop here: the drain answers what is parked 503 draining after 1 s.
        self.assertEqual(self.sluice.stop(), 0)
        self.finish_burst(bg)

    def test_page_says_when_sluice_is_gone(self):
        """Two good answers, one HTTP error, then a connection closed unanswered:
        the banner names the last good update and the numbers are greyed."""
        mock = self.start_mock()
        s = self.start_sluice(route(name="api", upstream_port=mock.port))
        page = self.admin_get("/")[2]
        snapshot = self.admin_get("/status")[2]
        self.assertEqual(self.sluice.stop(), 0)
        seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/":
                    body, ctype = page, "text/html; charset=utf-8"
                elif self.path == "/status" and len(seen) < 2:
                    seen.append(200)
                    body, ctype = snapshot, "application/json"
                elif self.path == "/status" and len(seen) == 2:
                    seen.append(500)
                    self.send_error(500)
                    return
                else:
                    seen.append(0)
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.handle_error = lambda request, address: None  # the closed ones
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        port = server.server_address[1]
        dom, urls = self.chromium("http://127.0.0.1:%d/" % port, "gone", budget_ms=6000,
                                  screenshot=True)
        self.assertEqual(seen[:3], [200, 200, 500])
        self.assertIn(0, seen)
        self.assertFalse(dom.banner["hidden"])
        self.assertRegex(dom.banner["text"], r"No update since \d\d:\d\d:\d\d")
        self.assertIn("sluice is not answering", dom.banner["text"])
        self.assertTrue(dom.stale)
        self.assertIn("api", dom.cards)  # the last good numbers stay, greyed
        self.assert_only_admin(urls, port)


if __name__ == "__main__":
    unittest.main()
