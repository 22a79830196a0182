"""https:// upstreams are tested like http:// ones: the mock upstream serves
HTTPS with certificates from a throwaway PKI the tests make (harness.TestPKI),
and sluice reaches it through libcurl (issue 13)."""

import http.client
import json
import ssl
import unittest

from harness import SluiceTestCase, read_arrivals


class MockTlsTest(SluiceTestCase):
    """The tool the other tests rely on: the mock over TLS."""

    def test_mock_serves_https_and_counts_handshakes(self):
        mock = self.start_tls_mock()
        for i in range(3):
            status, _, data = self.request(mock.port, "POST", "/t/%d" % i, body=b"abc")
            self.assertEqual(status, 200, data)
            self.assertEqual(json.loads(data)["body_len"], 3)
        stats = self.mock_stats(mock)
        self.assertEqual(stats["arrivals"], 3)
        # One handshake per request here, and the stats request's own; the
        # harness's readiness probe connected without one.
        self.assertEqual(stats["tls_handshakes"], 4)
        self.assertGreater(stats["tls_connections"], 4)
        self.assertEqual(len(read_arrivals(mock.log)), 3)
        # Plain HTTP on the TLS port gets no answer.
        with self.assertRaises((http.client.HTTPException, ConnectionError)):
            conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=5)
            conn.request("GET", "/plain")
            conn.getresponse()
        # A client that trusts another CA refuses the mock's certificate.
        ctx = ssl.create_default_context(cafile=self.pki().other_ca)
        conn = http.client.HTTPSConnection("127.0.0.1", mock.port, timeout=5, context=ctx)
        with self.assertRaises(ssl.SSLCertVerificationError):
            conn.request("GET", "/untrusted")
        conn.close()
        self.assertEqual(len(read_arrivals(mock.log)), 3)

    def test_mock_demands_a_client_certificate(self):
        mock = self.start_tls_mock(client_ca=True)
        self.assertEqual(self.request(mock.port, "GET", "/with-cert")[0], 200)
        ctx = ssl.create_default_context(cafile=self.pki().ca)
        ctx.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", mock.port, timeout=5, context=ctx)
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            conn.request("GET", "/without-cert")
            conn.getresponse()
        conn.close()
        self.assertEqual([a[4] for a in read_arrivals(mock.log)], ["/with-cert"])


if __name__ == "__main__":
    unittest.main()
