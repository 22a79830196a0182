"""Async jobs in memory (Prefer: respond-async, GET /_sluice/jobs/{id}):
202 at once, the same limits as any request, results until result_ttl."""

import http.client
import json
import re
import time
import unittest

from harness import SluiceTestCase, max_in_window, read_arrivals, route, wait_for

ASYNC = {"Prefer": "respond-async"}
ID_RE = re.compile(r"^[0-9a-f]{32}$")


class Client:
    """One keep-alive connection, for many requests in a row."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method, path, body=None, headers=None):
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def close(self):
        self.conn.close()


class JobsTest(SluiceTestCase):

    def submit(self, client, path, headers=None, body=None, method="GET"):
        status, h, body = client.request(method, path, body=body,
                                         headers=dict(ASYNC, **(headers or {})))
        self.assertEqual(status, 202, body)
        doc = json.loads(body)
        self.assertRegex(doc["id"], ID_RE)
        self.assertEqual(h["location"], "/_sluice/jobs/" + doc["id"])
        self.assertEqual(doc["location"], h["location"])
        self.assertEqual(h.get("preference-applied"), "respond-async")
        self.assertNotIn("x-sluice-error", h)
        return doc["id"]

    def job(self, client, job_id):
        status, h, body = client.request("GET", "/_sluice/jobs/" + job_id)
        self.assertEqual(status, 200, body)
        self.assertEqual(h["content-type"], "application/json")
        return json.loads(body)

    def wait_finished(self, client, ids, timeout):
        docs = {}

        def all_done():
            for i in ids:
                if i not in docs:
                    doc = self.job(client, i)
                    if doc["state"] in ("done", "failed"):
                        docs[i] = doc
            return len(docs) == len(ids)
        wait_for(all_done, timeout=timeout, interval=0.2, what="jobs finished")
        return docs

    def test_burst_of_jobs_at_the_limit(self):
        n, rate = 1000, 100
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="%d/s" % rate),
                              server="access_log = off")
        c = Client(s.port)
        t0 = time.monotonic()
        ids = [self.submit(c, "/v1/item?i=%d" % i, {"X-Seq": str(i)}) for i in range(n)]
        intake = time.monotonic() - t0
        # Every 202 came before dispatch at the limit could have finished (n / rate s).
        arrived = len(read_arrivals(mock.log))
        self.assertLess(intake, n / rate * 0.8, "202s took %.2fs" % intake)
        self.assertLess(arrived, n * 0.9, "the 202s waited for the upstream (%d arrived)" % arrived)
        self.assertEqual(len(set(ids)), n)
        docs = self.wait_finished(c, ids, timeout=n / rate + 20)
        for i, job_id in enumerate(ids):
            doc = docs[job_id]
            self.assertEqual(doc["state"], "done", doc)
            self.assertEqual(doc["status"], 200)
            self.assertEqual(doc["attempts"], 1)
            self.assertEqual(doc["route"], "default")
            self.assertTrue(doc["queued_at"] <= doc["started_at"] <= doc["finished_at"])
            echo = json.loads(doc["body"])
            self.assertEqual(echo["seq"], str(i))
            self.assertEqual(echo["uri"], "/v1/item?i=%d" % i)
            # respond-async is for sluice; the upstream answers the request itself.
            self.assertNotIn("Prefer", echo["headers"])
        rows = read_arrivals(mock.log)
        self.assertEqual(sorted(r[4] for r in rows), sorted("/v1/item?i=%d" % i for i in range(n)))
        self.assertLessEqual(max_in_window([r[0] for r in rows], 1_000_000), rate)
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_jobs_accepted_total"), n)
        self.assertEqual(self.metric_value(text, "sluice_jobs", state="done"), n)
        self.assertEqual(self.metric_value(text, "sluice_requests_total", route="default",
                                           outcome="relayed"), n)
        c.close()

    def test_states_ttl_and_unknown_ids(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="2/s"),
                              server="[redis]\njobs = off\nresult_ttl = 2s\n")
        c = Client(s.port)
        body = "payload \u00e9".encode()
        first = self.submit(c, "/a", method="POST", body=body, headers={"X-Seq": "0"})
        ids = [self.submit(c, "/b/%d" % i) for i in range(3)]
        doc = self.job(c, ids[-1])
        self.assertEqual(doc["state"], "queued")
        self.assertIsNone(doc["started_at"])
        self.assertNotIn("status", doc)
        self.assertNotIn("body", doc)
        docs = self.wait_finished(c, [first] + ids, timeout=15)
        done = docs[first]
        self.assertEqual(done["state"], "done")
        self.assertEqual(done["headers"]["content-type"], "application/json")
        self.assertEqual(done["headers"]["x-sluice-attempts"], "1")
        echo = json.loads(done["body"])
        self.assertEqual(echo["method"], "POST")
        self.assertEqual(echo["body_len"], len(body))
        _, _, st = self.request(s.admin, "GET", "/status")
        jobs = json.loads(st)["jobs"]
        self.assertEqual(jobs["mode"], "memory")
        self.assertFalse(jobs["durable"])
        self.assertIn("not durable", jobs["note"])
        # After result_ttl the result is gone.
        wait_for(lambda: c.request("GET", "/_sluice/jobs/" + ids[-1])[0] == 404, timeout=5,
                 what="result expired")
        self.assert_sluice_error(*c.request("GET", "/_sluice/jobs/" + first), 404,
                                 "job_not_found")
        for bad in ("", "x", first[:-1], first.upper(), first + "0", "../" + first[3:],
                    "%30" + first[1:], "0" * 32):
            self.assert_sluice_error(*c.request("GET", "/_sluice/jobs/" + bad), 404,
                                     "job_not_found")
        self.assertEqual(self.metric_value(self.metrics(), "sluice_jobs_expired_total"), 4)
        self.assertEqual(len(read_arrivals(mock.log)), 4)
        c.close()

    def test_refusals_are_not_jobs(self):
        mock = self.start_mock()
        s = self.start_sluice(route(match="/api", upstream_port=mock.port))
        c = Client(s.port)
        # Refused at intake: the refusal itself, never a 202.
        self.assert_sluice_error(*c.request("GET", "/other", headers=ASYNC), 404, "no_route")
        self.assert_sluice_error(*c.request("GET", "/api/x", headers=dict(
            ASYNC, **{"X-Sluice-Priority": "urgent"})), 400, "bad_request")
        self.assert_sluice_error(*c.request("GET", "/_sluice/other", headers=ASYNC), 404,
                                 "no_route")
        self.assertEqual(read_arrivals(mock.log), [])
        # Without the header a request is answered synchronously as ever.
        status, h, body = c.request("GET", "/api/sync")
        self.assertEqual(status, 200)
        self.assertNotIn("location", h)
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_jobs_accepted_total"), 0)
        c.close()

    def test_failed_jobs(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="1/s",
                                    extra="max_response_size = 1k"))
        c = Client(s.port)
        big = self.submit(c, "/big", headers={"X-Mock-Body-Size": "2000"})
        small = self.submit(c, "/small", headers={"X-Mock-Body-Size": "1000"})
        # Behind two others at 1/s: its 500 ms deadline passes while parked.
        late = self.submit(c, "/late", headers={"X-Sluice-Deadline": "500ms"})
        upstream_error = self.submit(c, "/err", headers={"X-Mock-Status": "500",
                                                         "X-Sluice-Deadline": "10s"})
        docs = self.wait_finished(c, [big, small, late, upstream_error], timeout=15)
        self.assertEqual(docs[big]["state"], "failed")
        self.assertEqual(docs[big]["status"], 502)
        self.assertEqual(docs[big]["headers"]["x-sluice-error"], "response_too_large")
        self.assertEqual(json.loads(docs[big]["body"])["error"], "response_too_large")
        self.assertEqual(docs[small]["state"], "done")
        self.assertEqual(len(docs[small]["body"]), 1000)
        self.assertEqual(docs[late]["state"], "failed")
        self.assertEqual(docs[late]["status"], 504)
        self.assertEqual(docs[late]["headers"]["x-sluice-error"], "queue_timeout")
        self.assertIsNone(docs[late]["started_at"])
        # The upstream's own error is the upstream's answer: done, with its status.
        self.assertEqual(docs[upstream_error]["state"], "done")
        self.assertEqual(docs[upstream_error]["status"], 500)
        self.assertEqual(len(read_arrivals(mock.log)), 3)
        c.close()


if __name__ == "__main__":
    unittest.main()
