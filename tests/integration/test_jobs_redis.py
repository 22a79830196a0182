"""Durable async jobs in Redis ([redis] jobs = on): stored before the 202,
run once per consumer group, recovered after a crash, dead-lettered after
max_deliveries, and nothing accepted lost while Redis is away. Each test
starts its own redis-server on a loopback port (no persistence files)."""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import unittest

from harness import (Proc, SluiceTestCase, free_port, port_open, read_arrivals, route,
                     max_in_window, wait_for)
from test_jobs import ASYNC, Client

REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


@unittest.skipUnless(os.path.exists(REDIS_BIN), "redis-server is not installed")
class RedisJobsTest(SluiceTestCase):

    def start_redis(self):
        port = free_port()
        argv = [REDIS_BIN, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.workdir]
        proc = Proc("redis", argv, self.workdir)
        self.procs.insert(0, proc)      # stopped last
        wait_for(lambda: port_open(port), what="redis-server on %d" % port)
        proc.port = port
        self.redis = proc
        return proc

    def redis_cli(self, *args):
        out = subprocess.run([REDIS_CLI, "-p", str(self.redis.port)] + list(args),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def redis_section(self, extra=""):
        return "[redis]\nurl = redis://127.0.0.1:%d/0\nprefix = t:\n%s\n" % (
            self.redis.port, extra)

    def start(self, mock, rate="50/s", redis_extra="", route_extra="", name="sluice"):
        return self.start_sluice(route(upstream_port=mock.port, rate=rate, extra=route_extra),
                                 server="access_log = off\n" + self.redis_section(redis_extra),
                                 name=name)

    def wait_up(self, s):
        wait_for(lambda: self.request(s.admin, "GET", "/health")[0] == 200, timeout=10,
                 what="sluice connected to redis")

    def submit(self, client, path, headers=None):
        status, h, body = client.request("GET", path, headers=dict(ASYNC, **(headers or {})))
        self.assertEqual(status, 202, body)
        doc = json.loads(body)
        self.assertEqual(h["location"], "/_sluice/jobs/" + doc["id"])
        return doc["id"]

    def job(self, client, job_id):
        status, _, body = client.request("GET", "/_sluice/jobs/" + job_id)
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def wait_done(self, client, ids, timeout):
        docs = {}

        def check():
            for i in ids:
                if i not in docs:
                    doc = self.job(client, i)
                    if doc["state"] in ("done", "failed"):
                        docs[i] = doc
            return len(docs) == len(ids)
        wait_for(check, timeout=timeout, interval=0.25,
                 what="jobs finished (%d of %d)" % (len(docs), len(ids)))
        return docs

    def seqs_seen(self, mock):
        out = {}
        for row in read_arrivals(mock.log):
            seq = row[4].rsplit("seq=", 1)[-1]
            out[seq] = out.get(seq, 0) + 1
        return out

    # --- tests -------------------------------------------------------------

    def test_burst_of_durable_jobs(self):
        n, rate = 1000, 100
        self.start_redis()
        mock = self.start_mock()
        s = self.start(mock, rate="%d/s" % rate)
        self.wait_up(s)
        c = Client(s.port)
        t0 = time.monotonic()
        ids = [self.submit(c, "/v1/item?seq=%d" % i) for i in range(n)]
        intake = time.monotonic() - t0
        arrived = len(read_arrivals(mock.log))
        self.assertLess(intake, n / rate * 0.8, "202s took %.2fs" % intake)
        self.assertLess(arrived, n * 0.9, "the 202s waited for the upstream")
        docs = self.wait_done(c, ids, timeout=n / rate + 30)
        for i, job_id in enumerate(ids):
            doc = docs[job_id]
            self.assertEqual(doc["state"], "done", doc)
            self.assertEqual(doc["status"], 200)
            self.assertEqual(json.loads(doc["body"])["uri"], "/v1/item?seq=%d" % i)
        seen = self.seqs_seen(mock)
        self.assertEqual(sorted(seen), sorted(str(i) for i in range(n)))
        self.assertEqual(set(seen.values()), {1}, "a job ran twice")
        rows = read_arrivals(mock.log)
        self.assertLessEqual(max_in_window([r[0] for r in rows], 1_000_000), rate)
        # Acknowledged and deleted: nothing left in the stream, nothing pending.
        wait_for(lambda: self.redis_cli("XLEN", "t:{default}:jobs") == "0", timeout=5,
                 what="stream emptied")
        self.assertEqual(self.redis_cli("XPENDING", "t:{default}:jobs", "sluice").split()[0], "0")
        text = self.metrics()
        self.assertGreater(self.metric_value(text, "sluice_redis_roundtrip_seconds_count"), n)
        wait_for(lambda: self.metric_value(self.metrics(), "sluice_jobs_stream_length",
                                           route="default") == 0, timeout=5, what="polled")
        self.assertEqual(self.metric_value(self.metrics(), "sluice_jobs_stream_pending",
                                           route="default"), 0)
        st = json.loads(self.request(s.admin, "GET", "/status")[2])
        self.assertEqual(st["jobs"]["mode"], "redis")
        self.assertTrue(st["jobs"]["durable"])
        self.assertEqual(st["jobs"]["accepted"], n)
        c.close()

    def test_kill_and_restart_loses_nothing(self):
        n = 30
        self.start_redis()
        mock = self.start_mock()
        extra = "claim_after = 1s"
        s = self.start(mock, rate="5/s", redis_extra=extra)
        self.wait_up(s)
        c = Client(s.port)
        ids = [self.submit(c, "/k?seq=%d" % i) for i in range(n)]
        c.close()
        wait_for(lambda: len(read_arrivals(mock.log)) >= 5, timeout=10, what="some dispatched")
        s.p.send_signal(signal.SIGKILL)
        s.p.wait(timeout=5)
        before = len(read_arrivals(mock.log))
        self.assertLess(before, n)
        s2 = self.start(mock, rate="20/s", redis_extra=extra, name="sluice2")
        c = Client(s2.port)
        docs = self.wait_done(c, ids, timeout=30)
        self.assertTrue(all(d["state"] == "done" for d in docs.values()), docs)
        seen = self.seqs_seen(mock)
        self.assertEqual(sorted(seen), sorted(str(i) for i in range(n)))
        # At least once: only jobs the dead instance held can have run twice.
        self.assertLessEqual(sum(seen.values()) - n, 2 * 32 + 16)
        c.close()

    def test_two_instances_run_each_job_once(self):
        n = 200
        self.start_redis()
        mock = self.start_mock()
        extra = "claim_after = 1s"
        a = self.start(mock, rate="25/s", redis_extra=extra, name="a")
        b = self.start(mock, rate="25/s", redis_extra=extra, name="b")
        self.wait_up(a)
        self.wait_up(b)
        ca, cb = Client(a.port), Client(b.port)
        ids = [self.submit(ca if i % 2 else cb, "/two?seq=%d" % i) for i in range(n)]
        # A backlog of about 4 s, longer than claim_after: held jobs stay held.
        docs = self.wait_done(ca, ids, timeout=40)
        self.assertTrue(all(d["state"] == "done" for d in docs.values()))
        seen = self.seqs_seen(mock)
        self.assertEqual(sorted(seen), sorted(str(i) for i in range(n)))
        self.assertEqual(set(seen.values()), {1}, "a job ran twice")
        # Both instances took jobs from the shared group.
        vias = {doc["route"] for doc in docs.values()}
        self.assertEqual(vias, {"default"})
        ma, mb = self.metrics_of(a), self.metrics_of(b)
        self.assertGreater(ma, 0)
        self.assertGreater(mb, 0)
        self.assertEqual(ma + mb, n)
        ca.close()
        cb.close()

    def metrics_of(self, s):
        status, _, body = self.request(s.admin, "GET", "/metrics")
        return self.metric_value(body.decode(), "sluice_requests_total", route="default",
                                 outcome="relayed")

    def test_redis_stopped_while_jobs_arrive(self):
        self.start_redis()
        mock = self.start_mock()
        s = self.start(mock, rate="50/s")
        self.wait_up(s)
        results = []
        health = []
        stop = threading.Event()

        def submitter():
            c = Client(s.port)
            i = 0
            while not stop.is_set():
                status, h, body = c.request("GET", "/r?seq=%d" % i, headers=ASYNC)
                results.append((i, status, h.get("x-sluice-error"), body))
                i += 1
                time.sleep(0.05)
            c.close()

        t = threading.Thread(target=submitter)
        t.start()
        time.sleep(1.5)
        self.redis.p.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: self.request(s.admin, "GET", "/health")[0] == 503, timeout=6,
                     what="/health 503 while redis is stopped")
            status, _, body = self.request(s.admin, "GET", "/health")
            health.append(status)
            if status == 503:
                self.assertIn("redis", json.loads(body)["reason"])
            # Synchronous requests keep flowing.
            self.assertEqual(self.request(s.port, "GET", "/sync?seq=sync")[0], 200)
            time.sleep(max(0, 3.0 - 0.1))
        finally:
            self.redis.p.send_signal(signal.SIGCONT)
        wait_for(lambda: self.request(s.admin, "GET", "/health")[0] == 200, timeout=15,
                 what="/health 200 after redis is back")
        time.sleep(1.5)
        stop.set()
        t.join(timeout=30)
        statuses = {r[1] for r in results}
        self.assertLessEqual(statuses, {202, 503}, results)
        refused = [r for r in results if r[1] == 503]
        self.assertTrue(refused, "no 503 while redis was stopped")
        for r in refused:
            self.assertEqual(r[2], "redis_unavailable")
        accepted = [(r[0], json.loads(r[3])["id"]) for r in results if r[1] == 202]
        c = Client(s.port)
        docs = self.wait_done(c, [i for _, i in accepted], timeout=30)
        self.assertTrue(all(d["state"] == "done" for d in docs.values()))
        seen = self.seqs_seen(mock)
        for seq, _ in accepted:
            self.assertIn(str(seq), seen, "accepted job %d never reached the upstream" % seq)
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_redis_up"), 1)
        self.assertGreaterEqual(self.metric_value(text, "sluice_redis_reconnects_total"), 1)
        self.assertGreaterEqual(self.metric_value(text, "sluice_redis_timeouts_total"), 1)
        self.assertEqual(self.metric_value(text, "sluice_requests_total", route="",
                                           outcome="redis_unavailable"), len(refused))
        c.close()

    def test_drain_leaves_jobs_for_another_instance(self):
        n = 12
        self.start_redis()
        mock = self.start_mock()
        extra = "claim_after = 1s"
        s = self.start_sluice(route(upstream_port=mock.port, rate="2/s"),
                              server="access_log = off\ndrain_timeout = 1s\n" +
                              self.redis_section(extra))
        self.wait_up(s)
        c = Client(s.port)
        ids = [self.submit(c, "/d?seq=%d" % i) for i in range(n)]
        c.close()
        wait_for(lambda: len(read_arrivals(mock.log)) >= 2, timeout=10, what="dispatched")
        t0 = time.monotonic()
        self.assertEqual(s.stop(signal.SIGTERM), 0)
        self.assertLess(time.monotonic() - t0, 5)
        self.procs.remove(s)
        # What it could not run in its drain time is left in Redis, not failed.
        s2 = self.start(mock, rate="20/s", redis_extra=extra, name="sluice2")
        c = Client(s2.port)
        docs = self.wait_done(c, ids, timeout=20)
        self.assertEqual({d["state"] for d in docs.values()}, {"done"})
        self.assertEqual(sorted(self.seqs_seen(mock)), sorted(str(i) for i in range(n)))
        c.close()

    def test_dead_letter_after_max_deliveries(self):
        self.start_redis()
        # The first arrival is never answered: the holder is killed meanwhile.
        mock = self.start_mock("--hang-first", "1")
        extra = "claim_after = 1s\nmax_deliveries = 1"
        s = self.start(mock, rate="10/s", redis_extra=extra, route_extra="timeout = 60s")
        self.wait_up(s)
        c = Client(s.port)
        poison = self.submit(c, "/poison?seq=0")
        c.close()
        wait_for(lambda: len(read_arrivals(mock.log)) >= 1, timeout=10, what="dispatched")
        s.p.send_signal(signal.SIGKILL)
        s.p.wait(timeout=5)
        s2 = self.start(mock, rate="10/s", redis_extra=extra, name="sluice2")
        c = Client(s2.port)
        doc = self.wait_done(c, [poison], timeout=15)[poison]
        self.assertEqual(doc["state"], "failed")
        self.assertEqual(doc["status"], 502)
        self.assertEqual(doc["headers"]["x-sluice-error"], "dead_lettered")
        self.assertEqual(len(read_arrivals(mock.log)), 1, "a dead-lettered job ran again")
        self.assertEqual(self.redis_cli("XLEN", "t:{default}:dead"), "1")
        fields = self.redis_cli("XRANGE", "t:{default}:dead", "-", "+").split("\n")
        self.assertIn(poison, fields)
        self.assertIn("/poison?seq=0", fields)
        wait_for(lambda: json.loads(self.request(s2.admin, "GET", "/status")[2])
                 ["routes"][0]["jobs"]["dead_letter"] == 1, timeout=10, what="status")
        self.assertEqual(self.redis_cli("XLEN", "t:{default}:jobs"), "0")
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_jobs_dead_lettered_total"), 1)
        self.assertEqual(self.metric_value(text, "sluice_jobs_dead_letter_length",
                                           route="default"), 1)
        c.close()

    def test_ids_refusals_and_ttl(self):
        self.start_redis()
        mock = self.start_mock()
        s = self.start(mock, redis_extra="result_ttl = 1s")
        self.wait_up(s)
        c = Client(s.port)
        job_id = self.submit(c, "/t?seq=0")
        self.wait_done(c, [job_id], timeout=10)
        for bad in ("", "x", job_id[:-1], job_id.upper(), "0" * 32):
            self.assert_sluice_error(*c.request("GET", "/_sluice/jobs/" + bad), 404,
                                     "job_not_found")
        # Refused at intake: no 202, nothing in Redis.
        self.assert_sluice_error(*c.request("GET", "/_sluice/x", headers=ASYNC), 404, "no_route")
        self.assert_sluice_error(*c.request("GET", "/p", headers=dict(
            ASYNC, **{"X-Sluice-Deadline": "soon"})), 400, "bad_request")
        # The result expires with result_ttl (Redis's own TTL).
        wait_for(lambda: c.request("GET", "/_sluice/jobs/" + job_id)[0] == 404, timeout=5,
                 what="result expired")
        self.assertEqual(self.redis_cli("EXISTS", "t:job:" + job_id), "0")
        # Redis gone for good: new jobs and reads are refused, never a 202.
        self.redis.stop(signal.SIGKILL)
        wait_for(lambda: self.request(s.admin, "GET", "/health")[0] == 503, timeout=10,
                 what="/health 503")
        c2 = Client(s.port)
        self.assert_sluice_error(*c2.request("GET", "/t", headers=ASYNC), 503,
                                 "redis_unavailable")
        self.assert_sluice_error(*c2.request("GET", "/_sluice/jobs/" + job_id), 503,
                                 "redis_unavailable")
        self.assertEqual(c2.request("GET", "/sync")[0], 200)
        c2.close()
        c.close()

    # --- batch jobs (POST /_sluice/batch with Prefer: respond-async) ----------

    def submit_batch(self, client, paths, want=202):
        body = json.dumps({"requests": [{"path": p} for p in paths]})
        status, h, data = client.request("POST", "/_sluice/batch", body=body,
                                         headers=dict(ASYNC, **{"Content-Type":
                                                                "application/json"}))
        self.assertEqual(status, want, data)
        doc = json.loads(data)
        if want == 202:
            self.assertEqual(h["location"], "/_sluice/jobs/" + doc["id"])
        return doc

    def test_batch_job_survives_kill_and_restart(self):
        n = 20
        self.start_redis()
        mock = self.start_mock()
        extra = "claim_after = 1s"
        s = self.start(mock, rate="5/s", redis_extra=extra)
        self.wait_up(s)
        c = Client(s.port)
        # Malformed: 400 at once with the item, nothing stored.
        doc = self.submit_batch(c, ["/ok", "no-slash"], want=400)
        self.assertTrue(doc["detail"].startswith("requests[1].path: "), doc)
        self.assertEqual(self.redis_cli("XLEN", "t:{@batch}:jobs"), "0")
        job_id = self.submit_batch(c, ["/b?seq=%d" % i for i in range(n)])["id"]
        # In Redis before the 202: the record, and the entry in the batches' stream.
        self.assertEqual(self.redis_cli("EXISTS", "t:job:" + job_id), "1")
        self.assertEqual(self.redis_cli("XLEN", "t:{@batch}:jobs"), "1")
        c.close()
        wait_for(lambda: len(read_arrivals(mock.log)) >= 3, timeout=10, what="some items sent")
        s.p.send_signal(signal.SIGKILL)
        s.p.wait(timeout=5)
        self.assertLess(len(read_arrivals(mock.log)), n)
        s2 = self.start(mock, rate="20/s", redis_extra=extra, name="sluice2")
        c = Client(s2.port)
        doc = self.wait_done(c, [job_id], timeout=30)[job_id]
        self.assertEqual(doc["state"], "done", doc)
        self.assertEqual(doc["status"], 200)
        responses = json.loads(doc["body"])["responses"]
        self.assertEqual(len(responses), n)
        for i, r in enumerate(responses):
            self.assertEqual(r["status"], 200, r)
            self.assertEqual(json.loads(r["body"])["uri"], "/b?seq=%d" % i)
        # Every item reached the upstream (at least once: the dead holder's ran again).
        self.assertEqual(sorted(self.seqs_seen(mock)), sorted(str(i) for i in range(n)))
        wait_for(lambda: self.redis_cli("XLEN", "t:{@batch}:jobs") == "0", timeout=5,
                 what="batch entry acknowledged and deleted")
        st = json.loads(self.request(s2.admin, "GET", "/status")[2])
        self.assertIsNotNone(st["jobs"]["batch_stream"])
        self.assertEqual(self.metric_value(self.metrics(), "sluice_batches_total",
                                           outcome="answered"), 1)
        c.close()

    def test_batch_job_dead_letter(self):
        self.start_redis()
        mock = self.start_mock("--hang-first", "1")
        extra = "claim_after = 1s\nmax_deliveries = 1"
        s = self.start(mock, rate="10/s", redis_extra=extra, route_extra="timeout = 60s")
        self.wait_up(s)
        c = Client(s.port)
        job_id = self.submit_batch(c, ["/poison?seq=0", "/poison?seq=1"])["id"]
        c.close()
        wait_for(lambda: len(read_arrivals(mock.log)) >= 1, timeout=10, what="dispatched")
        s.p.send_signal(signal.SIGKILL)
        s.p.wait(timeout=5)
        sent = len(read_arrivals(mock.log))
        s2 = self.start(mock, rate="10/s", redis_extra=extra, name="sluice2")
        c = Client(s2.port)
        doc = self.wait_done(c, [job_id], timeout=15)[job_id]
        self.assertEqual(doc["state"], "failed")
        self.assertEqual(doc["headers"]["x-sluice-error"], "dead_lettered")
        self.assertEqual(len(read_arrivals(mock.log)), sent, "a dead-lettered batch ran again")
        self.assertEqual(self.redis_cli("XLEN", "t:{@batch}:dead"), "1")
        self.assertIn(job_id, self.redis_cli("XRANGE", "t:{@batch}:dead", "-", "+").split("\n"))
        self.assertEqual(self.redis_cli("XLEN", "t:{@batch}:jobs"), "0")
        c.close()

    def test_batches_taken_as_the_queue_has_room(self):
        # Room for one batch's items at a time: the next is taken when it is done.
        self.start_redis()
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="40/s"),
                              server="access_log = off\nmax_batch_items = 10\n" +
                              self.redis_section(),
                              queue="max_depth = 10")
        self.wait_up(s)
        c = Client(s.port)
        ids = [self.submit_batch(c, ["/q?seq=%d" % (10 * b + i) for i in range(10)])["id"]
               for b in range(3)]
        deepest = 0
        deadline = time.monotonic() + 20
        docs = {}
        while len(docs) < 3 and time.monotonic() < deadline:
            st = json.loads(self.request(s.admin, "GET", "/status")[2])
            deepest = max(deepest, st["queue_depth"])
            for i in ids:
                if i not in docs:
                    doc = self.job(c, i)
                    if doc["state"] in ("done", "failed"):
                        docs[i] = doc
            time.sleep(0.02)
        self.assertEqual(len(docs), 3, "batches not finished")
        for doc in docs.values():
            self.assertEqual(doc["state"], "done")
            self.assertEqual([r["status"] for r in json.loads(doc["body"])["responses"]],
                             [200] * 10)
        self.assertLessEqual(deepest, 10, "more batches taken than the queue had room for")
        self.assertEqual(sorted(self.seqs_seen(mock), key=int), [str(i) for i in range(30)])
        c.close()


if __name__ == "__main__":
    unittest.main()
