"""POST /_sluice/batch (issue 12): items fan out as requests, each routed and
rate-limited like any other, in flight together across routes, and their
answers come back in item order; malformed batches are refused whole; a
client that leaves cancels what is not dispatched yet."""

import json
import os
import socket
import threading
import time
import unittest

from harness import SluiceTestCase, free_port, max_in_window, read_arrivals, route, wait_for

BATCH = "/_sluice/batch"


def items(n, path="/items/%d", **extra):
    """n GET items, each with X-Seq: i so the mock's log shows their order."""
    return [dict({"path": path % i, "headers": {"X-Seq": str(i)}}, **extra) for i in range(n)]


class BatchTest(SluiceTestCase):

    def post_batch(self, port, doc, headers=None, timeout=60):
        """POST doc (a dict, or raw bytes); returns (status, headers, parsed JSON)."""
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        status, rh, data = self.request(port, "POST", BATCH, body=body, headers=h,
                                        timeout=timeout)
        return status, rh, json.loads(data)

    def assert_relayed(self, r, seq=None):
        self.assertEqual(r["status"], 200, r)
        self.assertIsNone(r["error"], r)
        self.assertEqual(r["attempts"], 1)
        echo = json.loads(r["body"])
        if seq is not None:
            self.assertEqual(echo["seq"], str(seq))
        return echo

    def mock_window(self, mock, window_us=1_000_000):
        arrivals = read_arrivals(mock.log)
        return arrivals, max_in_window([a[0] for a in arrivals], window_us)

    # --- the limit holds across a batch ------------------------------------

    def test_30_items_at_20_per_second(self):
        mock = self.start_mock("--rate", "20/s")
        s = self.start_sluice(route(upstream_port=mock.port, rate="20/s"))
        t0 = time.monotonic()
        status, headers, doc = self.post_batch(s.port, {"requests": items(30)})
        elapsed = time.monotonic() - t0
        self.assertEqual(status, 200, doc)
        self.assertEqual(headers.get("content-type"), "application/json")
        responses = doc["responses"]
        self.assertEqual(len(responses), 30)
        for i, r in enumerate(responses):
            echo = self.assert_relayed(r, seq=i)
            self.assertEqual(echo["uri"], "/items/%d" % i)
            self.assertEqual(r["headers"]["x-sluice-attempts"], "1")
        # 29 intervals at 20/s: 1.45 s, not all at once and not one by one.
        self.assertGreater(elapsed, 1.40)
        self.assertLess(elapsed, 2.5)
        # Queue times grow along the batch: the first went at once, the last waited.
        self.assertLess(responses[0]["queue_ms"], 50)
        self.assertGreater(responses[-1]["queue_ms"], 1300)

        arrivals, most = self.mock_window(mock)
        self.assertEqual(len(arrivals), 30)
        self.assertEqual([a[3] for a in arrivals], [200] * 30, "the upstream answered 429")
        self.assertLessEqual(most, 20)
        self.assertEqual([int(a[1]) for a in arrivals], list(range(30)), "not in item order")

        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_batches_total", outcome="answered"), 1)
        self.assertEqual(self.metric_value(text, "sluice_batch_items_total",
                                           outcome="relayed"), 30)
        self.assertEqual(self.metric_value(text, "sluice_requests_total", route="default",
                                           outcome="relayed"), 30)
        # One access log line per item and one for the batch.
        log = s.stderr_text()
        self.assertEqual(log.count("msg=request route=default method=GET path=/items/"), 30)
        batch_lines = [l for l in log.splitlines() if "msg=batch " in l]
        self.assertEqual(len(batch_lines), 1)
        self.assertIn("status=200 outcome=answered items=30 failed=0", batch_lines[0])

    def test_one_item_to_a_dead_upstream(self):
        mock = self.start_mock("--rate", "20/s")
        dead = free_port()
        s = self.start_sluice(route(upstream_port=mock.port, rate="20/s") +
                              route(name="down", match="/down/", upstream_port=dead,
                                    rate="20/s", extra="retries = 2"))
        reqs = items(30)
        reqs[7] = {"path": "/down/x", "headers": {"X-Seq": "7"}}
        status, _, doc = self.post_batch(s.port, {"requests": reqs})
        self.assertEqual(status, 200, doc)
        responses = doc["responses"]
        self.assertEqual(len(responses), 30)
        bad = responses[7]
        self.assertEqual(bad["status"], 502)
        self.assertEqual(bad["error"], "upstream_unreachable")
        self.assertTrue(bad["detail"])
        self.assertEqual(bad["attempts"], 3)
        self.assertEqual(bad["headers"]["x-sluice-error"], "upstream_unreachable")
        self.assertEqual(json.loads(bad["body"])["error"], "upstream_unreachable")
        for i, r in enumerate(responses):
            if i != 7:
                self.assert_relayed(r, seq=i)
        arrivals, most = self.mock_window(mock)
        self.assertEqual(len(arrivals), 29)
        self.assertLessEqual(most, 20)
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_batch_items_total",
                                           outcome="upstream_unreachable"), 1)
        self.assertEqual(self.metric_value(text, "sluice_batch_items_total",
                                           outcome="relayed"), 29)
        self.assertIn("status=200 outcome=answered items=30 failed=1", s.stderr_text())

    def test_two_routes_in_flight_together(self):
        fast = self.start_mock("--rate", "10/s", name="fast")
        slow = self.start_mock("--rate", "5/s", name="slow")
        s = self.start_sluice(route(name="fast", match="/fast/", upstream_port=fast.port,
                                    rate="10/s") +
                              route(name="slow", match="/slow/", upstream_port=slow.port,
                                    rate="5/s"))
        reqs = []
        for i in range(30):
            # Two fast items for one slow one, interleaved.
            reqs.append({"path": ("/slow/%d" if i % 3 == 2 else "/fast/%d") % i,
                         "headers": {"X-Seq": str(i)}})
        t0 = time.monotonic()
        status, _, doc = self.post_batch(s.port, {"requests": reqs})
        elapsed = time.monotonic() - t0
        self.assertEqual(status, 200, doc)
        for i, r in enumerate(doc["responses"]):
            self.assertEqual(self.assert_relayed(r, seq=i)["uri"], reqs[i]["path"])
        # 20 at 10/s and 10 at 5/s take about 1.9 s side by side, 3.7 s one after the other.
        self.assertLess(elapsed, 2.8)
        for mock, n, limit in ((fast, 20, 10), (slow, 10, 5)):
            arrivals, most = self.mock_window(mock)
            self.assertEqual(len(arrivals), n)
            self.assertEqual([a[3] for a in arrivals], [200] * n)
            self.assertLessEqual(most, limit)
            seqs = [int(a[1]) for a in arrivals]
            self.assertEqual(seqs, sorted(seqs), "not in item order within the route")
        fast_t = [a[0] for a in read_arrivals(fast.log)]
        slow_t = [a[0] for a in read_arrivals(slow.log)]
        self.assertLess(max(slow_t[0], fast_t[0]), min(slow_t[-1], fast_t[-1]),
                        "the routes did not overlap")

    # --- items are requests --------------------------------------------------

    def test_items_inherit_the_batch_fields(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="100/s"))
        reqs = [
            {"path": "/a"},
            {"method": "POST", "path": "/b?q=1", "body": "caf\u00e9",
             "headers": {"X-Custom": "mine", "Content-Type": "text/plain"}},
            {"method": "PUT", "path": "/c", "body_base64": "AAEC/w=="},
        ]
        status, _, doc = self.post_batch(s.port, {"requests": reqs}, headers={
            "Authorization": "Bearer t0ken", "X-Custom": "batch", "Idempotency-Key": "k1",
            "X-Sluice-Priority": "high", "Prefer": "return=minimal"})
        self.assertEqual(status, 200, doc)
        a, b, c = (self.assert_relayed(r) for r in doc["responses"])
        self.assertEqual((a["method"], b["method"], c["method"]), ("GET", "POST", "PUT"))
        self.assertEqual(b["uri"], "/b?q=1")
        self.assertEqual(a["headers"].get("Authorization"), "Bearer t0ken")
        self.assertEqual(a["headers"].get("X-Custom"), "batch")
        self.assertEqual(a["headers"].get("Idempotency-Key"), "k1")
        self.assertEqual(b["headers"].get("X-Custom"), "mine")
        self.assertEqual(b["headers"].get("Content-Type"), "text/plain")
        for echo in (a, c):
            # The batch's own body fields and its Prefer are not the items'.
            self.assertNotIn("Content-Type", echo["headers"])
            self.assertNotIn("Prefer", echo["headers"])
            self.assertNotIn("X-Sluice-Priority", echo["headers"])
        self.assertEqual(a["body_len"], 0)
        self.assertEqual(b["body_len"], 5)  # UTF-8 bytes of the text body
        self.assertEqual(c["body_len"], 4)  # base64 decoded
        # Answers: field names lowercased, text bodies as text.
        self.assertEqual(doc["responses"][0]["headers"]["content-type"], "application/json")
        self.assertEqual(doc["responses"][0]["headers"]["via"], "1.1 sluice")

    def test_response_too_large(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="100/s",
                                    extra="max_response_size = 1k"))
        reqs = [{"path": "/big", "headers": {"X-Mock-Body-Size": "1025"}},
                {"path": "/fits", "headers": {"X-Mock-Body-Size": "1024"}}]
        status, _, doc = self.post_batch(s.port, {"requests": reqs})
        self.assertEqual(status, 200, doc)
        big, fits = doc["responses"]
        self.assertEqual((big["status"], big["error"]), (502, "response_too_large"))
        self.assertIn("max_response_size", big["detail"])
        self.assertEqual(fits["status"], 200)
        self.assertEqual(len(fits["body"]), 1024)
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_requests_total", route="default",
                                           outcome="response_too_large"), 1)
        # A client connection is not capped: the same answer is relayed whole.
        st, _, body = self.request(s.port, "GET", "/big", headers={"X-Mock-Body-Size": "4096"})
        self.assertEqual((st, len(body)), (200, 4096))

    # --- malformed batches ------------------------------------------------------

    def test_malformed_batches_are_refused_whole(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="100/s"),
                              server="max_batch_items = 5\nmax_body_size = 64k")
        ok = {"path": "/ok"}
        cases = [
            (b"{not json", "invalid JSON: "),
            (b'["requests"]', "the body must be a JSON object"),
            (b"{}", "requests: missing"),
            ({"requests": {"path": "/"}}, "requests: must be an array"),
            ({"requests": [ok] * 6}, "requests: 6 items, more than max_batch_items (5)"),
            ({"requests": [ok, ok, ok, {"path": "https://api.example.com/x"}]},
             "requests[3].path: must start with / (a path, not a URL)"),
            ({"requests": [ok, {"path": "//x", "method": "TRACE"}]},
             "requests[1].method: must be GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS"),
            ({"requests": [ok, ok, {}]}, "requests[2].path: missing"),
            ({"requests": [ok, {"path": 12}]}, "requests[1].path: must be a string"),
            ({"requests": [ok, "GET /"]}, "requests[1]: must be an object"),
            ({"requests": [{"path": "/", "headers": {"A": 1}}]},
             "requests[0].headers.A: must be a string or an array of strings"),
            ({"requests": [ok, {"path": "/", "headers": {"A": "1\r\nB: 2"}}]},
             "requests[1].headers.A: the value contains CR, LF or NUL"),
            ({"requests": [ok, {"path": "/", "body": 3}]}, "requests[1].body: must be a string"),
            ({"requests": [ok, ok, ok, ok, {"path": "/", "body_base64": "@@@"}]},
             "requests[4].body_base64: not valid base64"),
            ({"requests": [{"path": "/", "body": "x", "body_base64": "eA=="}]},
             "requests[0]: body and body_base64 are exclusive"),
            ({"requests": [ok, {"path": "/", "url": "/x"}]},
             'requests[1]: unknown field "url"'),
        ]
        for doc, detail in cases:
            status, headers, body = self.post_batch(s.port, doc)
            self.assertEqual(status, 400, (doc, body))
            self.assertEqual(headers.get("x-sluice-error"), "bad_request")
            self.assertEqual(body["error"], "bad_request")
            self.assertTrue(body["detail"].startswith(detail), (body["detail"], detail))
        # Nothing of any of them was sent, not even the well-formed items.
        self.assertEqual(read_arrivals(mock.log), [])
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_batches_total", outcome="bad_request"),
                         len(cases))
        self.assertEqual(self.metric_value(text, "sluice_batches_total", outcome="answered"), 0)
        # Limits of the batch request itself, as for any request.
        self.assert_sluice_error(*self.request(s.port, "POST", BATCH, body=b"x" * (65 << 10)),
                                 413, "body_too_large")

    def test_item_path_refused_by_normalisation_fails_alone(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="100/s"))
        status, _, doc = self.post_batch(s.port, {"requests": [
            {"path": "/a/../admin"}, {"path": "/_sluice/batch"}, {"path": "/fine"}]})
        self.assertEqual(status, 200, doc)
        first, second, third = doc["responses"]
        self.assertEqual((first["status"], first["error"]), (400, "bad_request"))
        self.assertEqual((second["status"], second["error"]), (404, "no_route"))
        self.assert_relayed(third)
        self.assertEqual([a[4] for a in read_arrivals(mock.log)], ["/fine"])

    # --- a client that leaves -----------------------------------------------------

    def test_disconnect_cancels_what_is_not_dispatched(self):
        mock = self.start_mock("--latency", "400")
        s = self.start_sluice(route(upstream_port=mock.port, rate="5/s"))
        body = json.dumps({"requests": items(20)}).encode()
        sock = socket.create_connection(("127.0.0.1", s.port))
        sock.sendall(b"POST " + BATCH.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                     + body)
        # At 5/s, about 6 items have left after 1.1 s; some are still at the (slow) upstream.
        time.sleep(1.1)
        sock.close()
        wait_for(lambda: self.metric_value(self.metrics(), "sluice_batches_total",
                                           outcome="client_gone") == 1, what="batch gone")

        def outcomes():
            text = self.metrics()
            return [self.metric_value(text, "sluice_requests_total", route="default", outcome=o)
                    for o in ("relayed", "client_gone")]
        # Items in flight land and are counted; the rest never reach the upstream.
        wait_for(lambda: sum(outcomes()) == 20, what="20 items counted")
        time.sleep(0.6)
        relayed, gone = outcomes()
        text = self.metrics()
        sent = self.metric_value(text, "sluice_dispatched_total", route="default")
        self.assertGreaterEqual(sent, 4)
        self.assertLessEqual(sent, 8)
        self.assertGreater(sent, relayed, "no item was in flight when the client left")
        arrivals = read_arrivals(mock.log)
        self.assertEqual(len(arrivals), sent)
        self.assertEqual([int(a[1]) for a in arrivals], list(range(int(sent))))
        # Cancelled: every item not answered before the client left, parked or in flight.
        self.assertEqual(self.metric_value(text, "sluice_client_gone_total", route="default"),
                         gone)
        self.assertEqual(self.metric_value(text, "sluice_batch_items_total",
                                           outcome="client_gone"), gone)
        self.assertEqual(self.metric_value(text, "sluice_batch_items_total",
                                           outcome="relayed"), relayed)
        self.assertEqual(self.metric_value(text, "sluice_queue_depth_total"), 0)
        self.assertIn("msg=batch method=POST path=/_sluice/batch status=499 outcome=client_gone",
                      s.stderr_text())
        # sluice is still fine.
        status, _, doc = self.post_batch(s.port, {"requests": items(1)})
        self.assertEqual(status, 200)

    # --- caps ---------------------------------------------------------------------

    def test_1000_items_over_a_queue_cap(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="250/s"),
                              queue="max_depth = 500\noverflow = reject")
        depth = [0]
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                try:
                    d = json.loads(self.admin_get("/status")[2])["queue_depth"]
                    depth[0] = max(depth[0], d)
                except (OSError, ValueError):
                    pass
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            status, _, doc = self.post_batch(s.port, {"requests": items(1000)})
        finally:
            stop.set()
            watcher.join()
        self.assertEqual(status, 200)
        responses = doc["responses"]
        self.assertEqual(len(responses), 1000)
        ok = [i for i, r in enumerate(responses) if r["status"] == 200]
        full = [i for i, r in enumerate(responses) if r["status"] == 503]
        # The first 500 park (plus the few dispatched while the batch was being
        # submitted, at 4 ms each), the rest are refused.
        self.assertEqual(len(ok) + len(full), 1000)
        self.assertGreaterEqual(len(ok), 501)
        self.assertLess(len(ok), 540)
        self.assertGreaterEqual(min(full), 501)
        for i in full:
            self.assertEqual(responses[i]["error"], "queue_full")
            self.assertEqual(responses[i]["detail"], "the queue is full")
            self.assertGreaterEqual(int(responses[i]["headers"]["retry-after"]), 1)
        self.assertLessEqual(depth[0], 500)
        self.assertEqual([int(a[1]) for a in read_arrivals(mock.log)], ok)
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_batch_items_total",
                                           outcome="queue_full"), len(full))
        self.assertEqual(self.metric_value(text, "sluice_requests_total", route="default",
                                           outcome="queue_full"), len(full))
        # Memory stays bounded: the answers of 1000 items are not kept past the batch.
        with open("/proc/%d/status" % s.p.pid) as f:
            hwm_kb = int(next(l for l in f if l.startswith("VmHWM:")).split()[1])
        self.assertLess(hwm_kb, 256 * 1024, "peak RSS %d kB" % hwm_kb)

    # --- Prefer: respond-async: the batch is one job (item 6) -----------------

    def test_async_batch_is_one_job(self):
        mock = self.start_mock("--rate", "20/s")
        s = self.start_sluice(route(upstream_port=mock.port, rate="20/s"))
        async_ = {"Prefer": "respond-async"}
        # Malformed: refused as it is, at once: no 202, no job.
        status, headers, body = self.post_batch(s.port, {"requests": [
            {"path": "/ok"}, {"path": "https://api.example.com/x"}]}, headers=async_)
        self.assertEqual(status, 400, body)
        self.assertEqual(headers.get("x-sluice-error"), "bad_request")
        self.assertEqual(body["detail"], "requests[1].path: must start with / (a path, not a URL)")
        self.assertNotIn("location", headers)

        t0 = time.monotonic()
        status, headers, doc = self.post_batch(s.port, {"requests": items(20)}, headers=async_)
        self.assertEqual(status, 202, doc)
        self.assertLess(time.monotonic() - t0, 0.5, "the 202 waited for the items")
        self.assertEqual(headers["location"], "/_sluice/jobs/" + doc["id"])
        self.assertEqual(headers.get("preference-applied"), "respond-async")

        def job():
            st, _, data = self.request(s.port, "GET", headers["location"])
            self.assertEqual(st, 200, data)
            return json.loads(data)
        # The first item went at once: the job runs.
        wait_for(lambda: job()["state"] == "running", timeout=5, what="job running")
        wait_for(lambda: job()["state"] == "done", timeout=10, what="job done")
        result = job()
        self.assertEqual(result["status"], 200)
        self.assertIsNone(result["route"])
        self.assertEqual(result["headers"]["content-type"], "application/json")
        responses = json.loads(result["body"])["responses"]
        self.assertEqual(len(responses), 20)
        for i, r in enumerate(responses):
            echo = self.assert_relayed(r, seq=i)
            # respond-async was the batch's: its items answer the batch, they are no jobs.
            self.assertNotIn("Prefer", echo["headers"])
        # Each item kept its route's limit, in item order.
        arrivals, most = self.mock_window(mock)
        self.assertEqual([int(a[1]) for a in arrivals], list(range(20)))
        self.assertEqual([a[3] for a in arrivals], [200] * 20, "the upstream answered 429")
        self.assertLessEqual(most, 20)
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_jobs_accepted_total"), 1)
        self.assertEqual(self.metric_value(text, "sluice_batches_total", outcome="answered"), 1)
        self.assertEqual(self.metric_value(text, "sluice_batches_total", outcome="bad_request"),
                         1)
        self.assertEqual(self.metric_value(text, "sluice_batch_items_total",
                                           outcome="relayed"), 20)


if __name__ == "__main__":
    unittest.main()
