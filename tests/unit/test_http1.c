/*
 * test_http1.c - HTTP/1.1 head parsing and chunked decoding.
 *
 * Every input is copied into a buffer of exactly its size, so that a read
 * past the end is an AddressSanitizer report, not a silent pass.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http1.h"
#include "sluice.h"

#define MAX_FIELDS 16
#define MAX_HEAD 8192

struct parsed {
    struct sl_http1_head h;
    struct sl_http1_field f[MAX_FIELDS];
};

static char *g_buf; /* the last input's exact-size copy */

static char *copy(const char *s, size_t n)
{
    free(g_buf);
    g_buf = malloc(n > 0 ? n : 1);
    assert_non_null(g_buf);
    memcpy(g_buf, s, n);
    return g_buf;
}

static int parse_n(struct parsed *p, const char *s, size_t n, size_t max_head, bool request)
{
    char *buf = copy(s, n);

    memset(p, 0xA5, sizeof(*p)); /* the parser must reset every output */
    p->h.fields = p->f;
    p->h.max_fields = MAX_FIELDS;
    return request ? sl_http1_parse_request(buf, n, max_head, &p->h)
                   : sl_http1_parse_response(buf, n, max_head, &p->h);
}

/* Literals keep their NULs: the length comes from sizeof. */
#define REQ(p, lit) parse_n(p, lit, sizeof(lit) - 1, MAX_HEAD, true)
#define RESP(p, lit) parse_n(p, lit, sizeof(lit) - 1, MAX_HEAD, false)

static void expect_str(const char *s, size_t n, const char *want)
{
    assert_int_equal(n, strlen(want));
    if (n > 0)
        assert_memory_equal(s, want, n);
}

static void expect_field(const struct parsed *p, size_t i, const char *name, const char *value)
{
    assert_true(i < p->h.n_fields);
    expect_str(p->f[i].name, p->f[i].name_len, name);
    expect_str(p->f[i].value, p->f[i].value_len, value);
}

static void expect_invalid(struct parsed *p, const char *s, size_t n, bool request,
                           const char *why)
{
    int rc = parse_n(p, s, n, MAX_HEAD, request);

    if (rc != SL_HTTP1_INVALID)
        fail_msg("expected INVALID, got %d for \"%.*s\"", rc, (int)n, s);
    assert_non_null(p->h.error);
    assert_string_equal(p->h.error, why);
}

#define BAD_REQ(p, lit, why) expect_invalid(p, lit, sizeof(lit) - 1, true, why)
#define BAD_RESP(p, lit, why) expect_invalid(p, lit, sizeof(lit) - 1, false, why)

/* ---- requests ---- */

static void test_get_with_fields(void **state)
{
    (void)state;
    struct parsed p;
    static const char in[] = "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n"
                             "Accept: */*\r\nUser-Agent: t/1.0\r\n\r\nNEXT";

    assert_int_equal(REQ(&p, in), SL_HTTP1_DONE);
    expect_str(p.h.method, p.h.method_len, "GET");
    expect_str(p.h.target, p.h.target_len, "/index.html?q=1");
    assert_int_equal(p.h.minor, 1);
    assert_int_equal(p.h.status, 0);
    assert_int_equal(p.h.n_fields, 3);
    expect_field(&p, 0, "Host", "example.com");
    expect_field(&p, 1, "Accept", "*/*");
    expect_field(&p, 2, "User-Agent", "t/1.0");
    assert_int_equal(p.h.head_len, sizeof(in) - 1 - 4);
    assert_int_equal(p.h.content_length, -1);
    assert_false(p.h.chunked);
    assert_false(p.h.transfer_encoding);
    assert_false(p.h.conn_close || p.h.conn_keep_alive || p.h.conn_other);
    assert_null(p.h.error);
    assert_true(sl_http1_keep_alive(&p.h));
    /* Pointers into the caller's buffer, not copies. */
    assert_ptr_equal(p.h.method, g_buf);
    assert_ptr_equal(p.f[0].name, g_buf + 30);
}

static void test_post_content_length(void **state)
{
    (void)state;
    struct parsed p;
    static const char in[] = "POST /api HTTP/1.0\r\ncontent-LENGTH: 42\r\n\r\n{\"a\":1}";

    assert_int_equal(REQ(&p, in), SL_HTTP1_DONE);
    expect_str(p.h.method, p.h.method_len, "POST");
    assert_int_equal(p.h.minor, 0);
    assert_int_equal(p.h.content_length, 42);
    assert_int_equal(p.h.head_len, sizeof(in) - 1 - 7);
    assert_false(sl_http1_keep_alive(&p.h));
}

/* The results of two parses of the same head, as offsets into their buffers. */
static void expect_same(const struct parsed *a, const char *abuf, const struct parsed *b,
                        const char *bbuf)
{
    assert_int_equal(a->h.head_len, b->h.head_len);
    assert_int_equal(a->h.n_fields, b->h.n_fields);
    assert_int_equal(a->h.minor, b->h.minor);
    assert_int_equal(a->h.status, b->h.status);
    assert_int_equal(a->h.content_length, b->h.content_length);
    assert_int_equal(a->h.method_len, b->h.method_len);
    assert_int_equal(a->h.target_len, b->h.target_len);
    if (a->h.method != NULL)
        assert_int_equal(a->h.method - abuf, b->h.method - bbuf);
    for (size_t i = 0; i < a->h.n_fields; i++) {
        assert_int_equal(a->f[i].name - abuf, b->f[i].name - bbuf);
        assert_int_equal(a->f[i].value - abuf, b->f[i].value - bbuf);
        assert_int_equal(a->f[i].name_len, b->f[i].name_len);
        assert_int_equal(a->f[i].value_len, b->f[i].value_len);
    }
}

/*
 * Feed growing prefixes of `in`, in ONE buffer as a connection would (so
 * that in-place unfolding before a PARTIAL is seen again): PARTIAL until
 * the head is complete, then DONE with the same result as a single parse.
 */
static void split_everywhere(const char *in, size_t n, size_t head_len, bool request)
{
    struct parsed whole, part;
    char *mine = malloc(n);
    int rc;

    assert_non_null(mine);
    assert_int_equal(parse_n(&whole, in, n, MAX_HEAD, request), SL_HTTP1_DONE);
    assert_int_equal(whole.h.head_len, head_len);
    memcpy(mine, in, n);
    for (size_t len = 0; len <= n; len++) {
        memset(&part, 0, sizeof(part));
        part.h.fields = part.f;
        part.h.max_fields = MAX_FIELDS;
        rc = request ? sl_http1_parse_request(mine, len, MAX_HEAD, &part.h)
                     : sl_http1_parse_response(mine, len, MAX_HEAD, &part.h);
        if (len < head_len && rc != SL_HTTP1_PARTIAL)
            fail_msg("prefix %zu: got %d (%s)", len, rc, part.h.error);
        if (len >= head_len) {
            assert_int_equal(rc, SL_HTTP1_DONE);
            expect_same(&whole, g_buf, &part, mine);
        }
    }
    assert_memory_equal(mine, g_buf, n); /* the same unfolding too */
    free(mine);
}

static void test_request_split_at_every_length(void **state)
{
    (void)state;
    static const char in[] = "\r\nPUT /x/y HTTP/1.1\r\nHost: h\nContent-Length: 3\r\n"
                             "X-Empty:\r\nConnection: close\r\n\r\nabc";

    split_everywhere(in, sizeof(in) - 1, sizeof(in) - 1 - 3, true);
}

static void test_bare_lf(void **state)
{
    (void)state;
    struct parsed p;
    static const char in[] = "GET / HTTP/1.1\nHost: a\nX: b \r\n\nrest";

    assert_int_equal(REQ(&p, in), SL_HTTP1_DONE);
    assert_int_equal(p.h.n_fields, 2);
    expect_field(&p, 0, "Host", "a");
    expect_field(&p, 1, "X", "b");
    assert_int_equal(p.h.head_len, sizeof(in) - 1 - 4);
    assert_int_equal(RESP(&p, "HTTP/1.1 200 OK\n\n"), SL_HTTP1_DONE);
    assert_int_equal(p.h.head_len, 17);
}

static void test_leading_empty_lines(void **state)
{
    (void)state;
    struct parsed p;

    assert_int_equal(REQ(&p, "\r\n\n\r\n\nGET / HTTP/1.1\r\n\r\n"), SL_HTTP1_DONE);
    expect_str(p.h.method, p.h.method_len, "GET");
    assert_int_equal(p.h.head_len, 6 + 16 + 2);
    assert_int_equal(REQ(&p, "\r\n\r\n"), SL_HTTP1_PARTIAL);
    assert_int_equal(REQ(&p, "\r"), SL_HTTP1_PARTIAL);
    BAD_REQ(&p, "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            "too many empty lines before the request line");
    /* Only before a request line. */
    BAD_RESP(&p, "\r\nHTTP/1.1 200 OK\r\n\r\n", "malformed HTTP version");
}

static void test_too_large_by_bytes(void **state)
{
    (void)state;
    struct parsed p;
    static const char in[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"; /* 27 bytes */

    assert_int_equal(parse_n(&p, in, 27, 27, true), SL_HTTP1_DONE);
    assert_int_equal(p.h.head_len, 27);
    assert_int_equal(parse_n(&p, in, 27, 26, true), SL_HTTP1_TOO_LARGE);
    assert_string_equal(p.h.error, "head too large");
    /* Incomplete: too large once max_head bytes came without its end. */
    assert_int_equal(parse_n(&p, in, 20, 20, true), SL_HTTP1_TOO_LARGE);
    assert_int_equal(parse_n(&p, in, 20, 21, true), SL_HTTP1_PARTIAL);
    assert_int_equal(parse_n(&p, in, 26, 64, true), SL_HTTP1_PARTIAL);
    assert_int_equal(parse_n(&p, in, 0, 64, true), SL_HTTP1_PARTIAL);
}

static void test_too_many_fields(void **state)
{
    (void)state;
    struct parsed p;
    static const char two[] = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n";
    static const char three[] = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    char *buf = copy(three, sizeof(three) - 1);

    p.h.fields = p.f;
    p.h.max_fields = 2;
    assert_int_equal(sl_http1_parse_request(buf, sizeof(three) - 1, MAX_HEAD, &p.h),
                     SL_HTTP1_TOO_LARGE);
    assert_string_equal(p.h.error, "too many header fields");
    buf = copy(two, sizeof(two) - 1);
    assert_int_equal(sl_http1_parse_request(buf, sizeof(two) - 1, MAX_HEAD, &p.h),
                     SL_HTTP1_DONE);
    assert_int_equal(p.h.n_fields, 2);
    p.h.fields = NULL;
    p.h.max_fields = 0;
    assert_int_equal(sl_http1_parse_request(buf, sizeof(two) - 1, MAX_HEAD, &p.h),
                     SL_HTTP1_TOO_LARGE);
}

static void test_invalid_request_line(void **state)
{
    (void)state;
    struct parsed p;

    BAD_REQ(&p, "G@T / HTTP/1.1\r\n\r\n", "malformed method");
    BAD_REQ(&p, " GET / HTTP/1.1\r\n\r\n", "malformed method");
    BAD_REQ(&p, "GET\r\n\r\n", "malformed method");
    BAD_REQ(&p, "GET  / HTTP/1.1\r\n\r\n", "malformed request target");
    BAD_REQ(&p, "GET /  HTTP/1.1\r\n\r\n", "malformed HTTP version");
    BAD_REQ(&p, "GET /a\x01 HTTP/1.1\r\n\r\n", "malformed request target");
    BAD_REQ(&p, "GET /a\x7f HTTP/1.1\r\n\r\n", "malformed request target");
    BAD_REQ(&p, "GET /\r\n\r\n", "malformed request target");
    BAD_REQ(&p, "GET / HTTP/2.0\r\n\r\n", "unsupported HTTP version");
    BAD_REQ(&p, "GET / HTTP/0.9\r\n\r\n", "unsupported HTTP version");
    BAD_REQ(&p, "GET / http/1.1\r\n\r\n", "malformed HTTP version");
    BAD_REQ(&p, "GET / HTTP/1.x\r\n\r\n", "malformed HTTP version");
    BAD_REQ(&p, "GET / HTTP/1.10\r\n\r\n", "malformed request line");
    BAD_REQ(&p, "GET / HTTP/1.1 \r\n\r\n", "malformed request line");
    BAD_REQ(&p, "GET / HTTP/1.1\rX: 1\r\n\r\n", "bare CR");
    /* Bad bytes are reported as soon as seen, whole head or not. */
    BAD_REQ(&p, "GET / HTTP/2", "unsupported HTTP version");
    BAD_REQ(&p, "GE(", "malformed method");
    /* obs-text is allowed in a target. */
    assert_int_equal(REQ(&p, "GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n"), SL_HTTP1_DONE);
    expect_str(p.h.target, p.h.target_len, "/caf\xc3\xa9");
}

static void test_invalid_field_lines(void **state)
{
    (void)state;
    struct parsed p;

    BAD_REQ(&p, "GET / HTTP/1.1\r\nHost : a\r\n\r\n", "malformed field name");
    BAD_REQ(&p, "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", "malformed field name");
    BAD_REQ(&p, "GET / HTTP/1.1\r\nX Y: a\r\n\r\n", "malformed field name");
    BAD_REQ(&p, "GET / HTTP/1.1\r\nNoColon\r\n\r\n", "malformed field name");
    BAD_REQ(&p, "GET / HTTP/1.1\r\n: a\r\n\r\n", "empty field name");
    BAD_REQ(&p, "GET / HTTP/1.1\r\nX: a\x01z\r\n\r\n", "invalid character in field value");
    BAD_REQ(&p, "GET / HTTP/1.1\r\nX: a\x7fz\r\n\r\n", "invalid character in field value");
    BAD_REQ(&p, "GET / HTTP/1.1\r\nX: a\0z\r\n\r\n", "invalid character in field value");
    BAD_REQ(&p, "GET / HTTP/1.1\r\nX: a\rz\r\n\r\n", "bare CR");
    BAD_REQ(&p, "GET / HTTP/1.1\r\nX: a\r\r\n\r\n", "bare CR");
    BAD_REQ(&p, "GET / HTTP/1.1\r\nX: a\r\n\r\r\n", "bare CR");
    BAD_REQ(&p, "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", "obsolete line folding");
    BAD_REQ(&p, "GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", "obsolete line folding");
    BAD_REQ(&p, "GET / HTTP/1.1\r\n X: a\r\n\r\n", "whitespace after the start line");
    BAD_RESP(&p, "HTTP/1.1 200 OK\r\n X: a\r\n\r\n", "whitespace after the start line");
    /* Field names are tokens: these are fine. */
    assert_int_equal(REQ(&p, "GET / HTTP/1.1\r\nX-a.b_c~!#$%&'*+^`|: 1\r\n\r\n"), SL_HTTP1_DONE);
    expect_field(&p, 0, "X-a.b_c~!#$%&'*+^`|", "1");
    /* obs-text and HTAB in values too. */
    assert_int_equal(REQ(&p, "GET / HTTP/1.1\r\nX: \xff\ta\"(,);\r\n\r\n"), SL_HTTP1_DONE);
    expect_field(&p, 0, "X", "\xff\ta\"(,);");
}

static void test_ows_trimmed(void **state)
{
    (void)state;
    struct parsed p;

    assert_int_equal(REQ(&p, "GET / HTTP/1.1\r\nA:  a  b \t\r\nB:\r\nC: \t \r\nD:d\r\n\r\n"),
                     SL_HTTP1_DONE);
    assert_int_equal(p.h.n_fields, 4);
    expect_field(&p, 0, "A", "a  b");
    expect_field(&p, 1, "B", "");
    expect_field(&p, 2, "C", "");
    expect_field(&p, 3, "D", "d");
}

static void test_transfer_encoding_in_requests(void **state)
{
    (void)state;
    struct parsed p;

    BAD_REQ(&p, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "both Transfer-Encoding and Content-Length");
    BAD_REQ(&p, "POST / HTTP/1.1\r\nContent-Length: 5\r\ntransfer-encoding: CHUNKED\r\n\r\n",
            "both Transfer-Encoding and Content-Length");
    BAD_REQ(&p, "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "Transfer-Encoding does not end in chunked");
    BAD_REQ(&p, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "Transfer-Encoding does not end in chunked");
    BAD_REQ(&p, "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n",
            "Transfer-Encoding does not end in chunked");
    BAD_REQ(&p, "POST / HTTP/1.1\r\nTransfer-Encoding: chunkedx\r\n\r\n",
            "Transfer-Encoding does not end in chunked");
    BAD_REQ(&p, "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Transfer-Encoding in an HTTP/1.0 request");
    BAD_REQ(&p, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                "Transfer-Encoding: chunked\r\n\r\n",
            "chunked applied more than once");
    assert_int_equal(REQ(&p, "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n"
                             "Transfer-Encoding: , Chunked ; x=1 ,\r\n\r\n"),
                     SL_HTTP1_DONE);
    assert_true(p.h.transfer_encoding);
    assert_true(p.h.chunked);
    assert_int_equal(p.h.content_length, -1);
    assert_true(sl_http1_keep_alive(&p.h));
}

static void test_content_length_values(void **state)
{
    (void)state;
    struct parsed p;

    BAD_REQ(&p, "PUT / HTTP/1.1\r\nContent-Length: +42\r\n\r\n", "malformed Content-Length");
    BAD_REQ(&p, "PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "malformed Content-Length");
    BAD_REQ(&p, "PUT / HTTP/1.1\r\nContent-Length: 4 2\r\n\r\n", "malformed Content-Length");
    BAD_REQ(&p, "PUT / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", "malformed Content-Length");
    BAD_REQ(&p, "PUT / HTTP/1.1\r\nContent-Length:\r\n\r\n", "malformed Content-Length");
    BAD_REQ(&p, "PUT / HTTP/1.1\r\nContent-Length: 42,\r\n\r\n", "malformed Content-Length");
    BAD_REQ(&p, "PUT / HTTP/1.1\r\nContent-Length: 4611686018427387905\r\n\r\n",
            "Content-Length too large");
    BAD_REQ(&p, "PUT / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "Content-Length too large");
    BAD_REQ(&p, "PUT / HTTP/1.1\r\nContent-Length: 42\r\nContent-Length: 43\r\n\r\n",
            "conflicting Content-Length values");
    BAD_REQ(&p, "PUT / HTTP/1.1\r\nContent-Length: 42, 43\r\n\r\n",
            "conflicting Content-Length values");
    BAD_RESP(&p, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
             "conflicting Content-Length values");

    assert_int_equal(REQ(&p, "PUT / HTTP/1.1\r\nContent-Length: 4611686018427387904\r\n\r\n"),
                     SL_HTTP1_DONE);
    assert_int_equal(p.h.content_length, INT64_C(4611686018427387904));
    assert_int_equal(REQ(&p, "PUT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), SL_HTTP1_DONE);
    assert_int_equal(p.h.content_length, 0);
    assert_int_equal(REQ(&p, "PUT / HTTP/1.1\r\nContent-Length: 42 , 42\r\n"
                             "content-length: 042\r\n\r\n"),
                     SL_HTTP1_DONE);
    assert_int_equal(p.h.content_length, 42);
    assert_int_equal(p.h.n_fields, 2);
    /* Not the framing field, whatever its value. */
    assert_int_equal(REQ(&p, "PUT / HTTP/1.1\r\nContent-Lengths: x\r\n\r\n"), SL_HTTP1_DONE);
    assert_int_equal(p.h.content_length, -1);
}

/* ---- responses ---- */

static void test_status_line(void **state)
{
    (void)state;
    struct parsed p;

    assert_int_equal(RESP(&p, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), SL_HTTP1_DONE);
    assert_int_equal(p.h.status, 200);
    assert_int_equal(p.h.minor, 1);
    assert_null(p.h.method);
    assert_int_equal(p.h.content_length, 2);
    assert_int_equal(p.h.head_len, 38);
    expect_str(p.h.reason, p.h.reason_len, "OK");
    assert_int_equal(RESP(&p, "HTTP/1.0 204\r\n\r\n"), SL_HTTP1_DONE);
    assert_int_equal(p.h.status, 204);
    assert_int_equal(p.h.minor, 0);
    assert_int_equal(p.h.reason_len, 0);
    assert_int_equal(RESP(&p, "HTTP/1.1 404 \r\n\r\n"), SL_HTTP1_DONE);
    assert_int_equal(p.h.status, 404);
    assert_int_equal(p.h.reason_len, 0);
    assert_int_equal(RESP(&p, "HTTP/1.1 999 No\tt \xe9t\xe9 (x)\r\n\r\n"), SL_HTTP1_DONE);
    assert_int_equal(p.h.status, 999);
    expect_str(p.h.reason, p.h.reason_len, "No\tt \xe9t\xe9 (x)");
    assert_int_equal(RESP(&p, "HTTP/1.1 200 Fine Thanks \r\n\r\n"), SL_HTTP1_DONE);
    expect_str(p.h.reason, p.h.reason_len, "Fine Thanks");
    assert_int_equal(REQ(&p, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"), SL_HTTP1_DONE);
    assert_null(p.h.reason);
    assert_int_equal(RESP(&p, "HTTP/1.1 100 Continue\r\n\r\n"), SL_HTTP1_DONE);
    assert_int_equal(p.h.status, 100);

    BAD_RESP(&p, "HTTP/1.1 099 Low\r\n\r\n", "status code below 100");
    BAD_RESP(&p, "HTTP/1.1 000\r\n\r\n", "status code below 100");
    BAD_RESP(&p, "HTTP/1.1 20 OK\r\n\r\n", "malformed status code");
    BAD_RESP(&p, "HTTP/1.1  200 OK\r\n\r\n", "malformed status code");
    BAD_RESP(&p, "HTTP/1.1 2x0 OK\r\n\r\n", "malformed status code");
    BAD_RESP(&p, "HTTP/1.1 2000 OK\r\n\r\n", "malformed status line");
    BAD_RESP(&p, "HTTP/1.1 200 O\x01K\r\n\r\n", "malformed status line");
    BAD_RESP(&p, "HTTP/1.1 200 OK\rX\r\n\r\n", "bare CR");
    BAD_RESP(&p, "HTTP/2 200\r\n\r\n", "unsupported HTTP version");
    BAD_RESP(&p, "HTTP/1.1\r\n\r\n", "malformed status code");
    assert_int_equal(RESP(&p, "HTTP/1.1 20"), SL_HTTP1_PARTIAL);
    assert_int_equal(RESP(&p, "HTTP/1"), SL_HTTP1_PARTIAL);
}

static void test_response_obs_fold_joined(void **state)
{
    (void)state;
    struct parsed p;

    assert_int_equal(RESP(&p, "HTTP/1.1 200 OK\r\nX: a\r\n  b\r\n\tc \r\nY: d\r\n\r\n"),
                     SL_HTTP1_DONE);
    assert_int_equal(p.h.n_fields, 2);
    expect_field(&p, 0, "X", "a b c"); /* one SP per fold */
    assert_memory_equal(g_buf + 17, "X: a b c      \r\n", 16);
    expect_field(&p, 1, "Y", "d");
    assert_int_equal(RESP(&p, "HTTP/1.1 200 OK\nX:\n  z\nY: a\n \n\n"), SL_HTTP1_DONE);
    expect_field(&p, 0, "X", "z");
    expect_field(&p, 1, "Y", "a");
    assert_memory_equal(g_buf + 16, "X:   z\nY: a  \n\n", 15);
    /* The folded Content-Length is recognized as one value. */
    assert_int_equal(RESP(&p, "HTTP/1.1 200 OK\r\nContent-Length: 5,\r\n 5\r\n\r\n"),
                     SL_HTTP1_DONE);
    assert_int_equal(p.h.content_length, 5);
    assert_int_equal(RESP(&p, "HTTP/1.1 200 OK\r\nX: a  \r\n \t b  c \r\n\r\n"), SL_HTTP1_DONE);
    expect_field(&p, 0, "X", "a b  c");
    BAD_RESP(&p, "HTTP/1.1 200 OK\r\nX: a\r\n b\x01\r\n\r\n", "invalid character in field value");
}

static void test_response_split_at_every_length(void **state)
{
    (void)state;
    static const char in[] = "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\t\r\nE:\r\n  e \r\n"
                             "Connection: x,\r\n close"
                             "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    split_everywhere(in, sizeof(in) - 1, sizeof(in) - 1 - 5, false);
}

static void test_response_te_overrides_cl(void **state)
{
    (void)state;
    struct parsed p;

    assert_int_equal(RESP(&p, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n"),
                     SL_HTTP1_DONE);
    assert_int_equal(p.h.content_length, -1);
    assert_true(p.h.chunked);
    assert_true(p.h.transfer_encoding);
    assert_true(p.h.both_lengths);
    assert_false(sl_http1_keep_alive(&p.h)); /* read by TE, but no reuse after it */
    assert_int_equal(RESP(&p, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
                     SL_HTTP1_DONE);
    assert_false(p.h.both_lengths);
    assert_true(sl_http1_keep_alive(&p.h));
    /* Not chunked: the body runs to the close. */
    assert_int_equal(RESP(&p, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
                     SL_HTTP1_DONE);
    assert_false(p.h.chunked);
    assert_true(p.h.transfer_encoding);
    assert_int_equal(p.h.content_length, -1);
    assert_false(sl_http1_keep_alive(&p.h));
}

/* ---- both ---- */

static void test_connection_tokens(void **state)
{
    (void)state;
    struct parsed p;

    assert_int_equal(REQ(&p, "GET / HTTP/1.1\r\nConnection: Keep-Alive, X-Foo\r\n"
                             "CONNECTION: ,, CLOSE ,\r\n\r\n"),
                     SL_HTTP1_DONE);
    assert_true(p.h.conn_keep_alive);
    assert_true(p.h.conn_other);
    assert_true(p.h.conn_close);
    assert_int_equal(REQ(&p, "GET / HTTP/1.1\r\nconnection: close\r\n\r\n"), SL_HTTP1_DONE);
    assert_true(p.h.conn_close);
    assert_false(p.h.conn_keep_alive);
    assert_false(p.h.conn_other);
    assert_int_equal(REQ(&p, "GET / HTTP/1.1\r\nConnection: upgrade\r\nConnection:\r\n\r\n"),
                     SL_HTTP1_DONE);
    assert_false(p.h.conn_close);
    assert_false(p.h.conn_keep_alive);
    assert_true(p.h.conn_other);
    assert_int_equal(REQ(&p, "GET / HTTP/1.1\r\nConnection: closed, keep-alive2\r\n"
                             "Connections: close\r\n\r\n"),
                     SL_HTTP1_DONE);
    assert_false(p.h.conn_close);
    assert_false(p.h.conn_keep_alive);
    assert_true(p.h.conn_other);
}

static void test_keep_alive(void **state)
{
    (void)state;
    struct parsed p;

    assert_int_equal(REQ(&p, "GET / HTTP/1.1\r\n\r\n"), SL_HTTP1_DONE);
    assert_true(sl_http1_keep_alive(&p.h));
    assert_int_equal(REQ(&p, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n"), SL_HTTP1_DONE);
    assert_false(sl_http1_keep_alive(&p.h));
    assert_int_equal(REQ(&p, "GET / HTTP/1.0\r\n\r\n"), SL_HTTP1_DONE);
    assert_false(sl_http1_keep_alive(&p.h));
    assert_int_equal(REQ(&p, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), SL_HTTP1_DONE);
    assert_true(sl_http1_keep_alive(&p.h));
    assert_int_equal(REQ(&p, "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"),
                     SL_HTTP1_DONE);
    assert_false(sl_http1_keep_alive(&p.h));
    assert_int_equal(RESP(&p, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n"),
                     SL_HTTP1_DONE);
    assert_false(sl_http1_keep_alive(&p.h));
    assert_int_equal(RESP(&p, "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n"),
                     SL_HTTP1_DONE);
    assert_true(sl_http1_keep_alive(&p.h));
}

/* ---- chunked ---- */

struct sink {
    char data[4096];
    size_t len;
    int calls;
    int fail_at; /* the call to fail, 1-based; 0: never */
};

static int collect(void *arg, const char *data, size_t len)
{
    struct sink *s = arg;

    s->calls++;
    if (s->fail_at == s->calls)
        return -1;
    assert_true(len > 0);
    assert_true(len <= sizeof(s->data) - s->len);
    memcpy(s->data + s->len, data, len);
    s->len += len;
    return 0;
}

/* Feed in[0..n) from an exact-size copy; returns what feed returned. */
static long feed(struct sl_http1_chunked *d, const char *in, size_t n, struct sink *s)
{
    return sl_http1_chunked_feed(d, copy(in, n), n, collect, s);
}

/* Decode `in` whole: it must end exactly after the chunked body and give `want`. */
static void expect_decoded(const char *in, size_t n, const char *want)
{
    struct sl_http1_chunked d;
    struct sink s = {0};

    sl_http1_chunked_init(&d);
    assert_int_equal(feed(&d, in, n, &s), (long)n);
    assert_true(d.done);
    assert_null(d.error);
    expect_str(s.data, s.len, want);
}

static void expect_bad_chunked(const char *in, size_t n, const char *why)
{
    struct sl_http1_chunked d;
    struct sink s = {0};

    sl_http1_chunked_init(&d);
    assert_int_equal(feed(&d, in, n, &s), -1);
    assert_false(d.done);
    assert_non_null(d.error);
    assert_string_equal(d.error, why);
    assert_int_equal(feed(&d, "0\r\n\r\n", 5, &s), -1); /* and it stays failed */
}

#define DECODED(lit, want) expect_decoded(lit, sizeof(lit) - 1, want)
#define BAD_CHUNKED(lit, why) expect_bad_chunked(lit, sizeof(lit) - 1, why)

static void test_chunked_simple(void **state)
{
    (void)state;
    struct sl_http1_chunked d;
    struct sink s = {0};
    static const char in[] = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";

    sl_http1_chunked_init(&d);
    assert_int_equal(feed(&d, in, sizeof(in) - 1, &s), (long)sizeof(in) - 1);
    assert_true(d.done);
    expect_str(s.data, s.len, "hello world");
    assert_int_equal(s.calls, 2); /* each chunk's data in one piece */
    DECODED("0\r\n\r\n", "");
    DECODED("1a\r\nabcdefghijklmnopqrstuvwxyz\nA\n0123456789\n0\n\n",
            "abcdefghijklmnopqrstuvwxyz0123456789");
}

static void test_chunked_extensions(void **state)
{
    (void)state;
    DECODED("5;name=val\r\nhello\r\nA ; x=\"y z\" ;flag\r\n0123456789\r\n000;last\r\n\r\n",
            "hello0123456789");
    BAD_CHUNKED("5 x\r\nhello\r\n0\r\n\r\n", "malformed chunk size");
    BAD_CHUNKED("5 \r\nhello\r\n0\r\n\r\n", "malformed chunk size"); /* BWS only before ';' */
    BAD_CHUNKED("5;a\x01\r\nhello\r\n0\r\n\r\n", "invalid character in chunk extension");
    BAD_CHUNKED("5;a\rb\r\nhello\r\n0\r\n\r\n", "bare CR");
}

static void test_chunked_trailers(void **state)
{
    (void)state;
    DECODED("3\r\nabc\r\n0\r\nX-Sum: 1\r\nY:\t2\r\n\r\n", "abc");
    DECODED("3\nabc\n0\nX-Sum: 1\n\n", "abc");
    BAD_CHUNKED("0\r\n: x\r\n\r\n", "malformed trailer field");
    BAD_CHUNKED("0\r\n(X: x\r\n\r\n", "malformed trailer field");
    BAD_CHUNKED("0\r\n X: x\r\n\r\n", "malformed trailer field");
    BAD_CHUNKED("0\r\nX : x\r\n\r\n", "malformed trailer field");
    BAD_CHUNKED("0\r\nX: a\x01\r\n\r\n", "invalid character in trailer field");
    BAD_CHUNKED("0\r\nX: a\r\r\n\r\n", "bare CR");
    BAD_CHUNKED("0\r\nX: a\rb\r\n\r\n", "bare CR");
    BAD_CHUNKED("0\r\nX: a\r\n\rx", "bare CR");
    BAD_CHUNKED("0\rx", "bare CR");
}

/* in is decoded the same, to the same end, however it is split. */
static void test_chunked_split_everywhere(void **state)
{
    (void)state;
    static const char in[] = "4;ext=\"v\"\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks."
                             "\r\n10 ;x\nabcdefghijklmnop\n0\r\nExpires: never\r\n\r\nNEXT";
    static const char want[] = "Wikipedia in\r\n\r\nchunks.abcdefghijklmnop";
    const size_t n = sizeof(in) - 1, body = n - 4;
    struct sl_http1_chunked d;
    struct sink s;

    /* One byte at a time. */
    memset(&s, 0, sizeof(s));
    sl_http1_chunked_init(&d);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(sl_http1_chunked_feed(&d, in + i, 1, collect, &s), i < body ? 1 : 0);
    assert_true(d.done);
    expect_str(s.data, s.len, want);

    /* Every 2-way split. */
    for (size_t cut = 0; cut <= n; cut++) {
        long a, b;

        memset(&s, 0, sizeof(s));
        sl_http1_chunked_init(&d);
        a = feed(&d, in, cut, &s);
        assert_int_equal(a, (long)(cut < body ? cut : body));
        b = feed(&d, in + a, n - (size_t)a, &s);
        assert_int_equal(a + b, (long)body);
        assert_true(d.done);
        expect_str(s.data, s.len, want);
    }
}

static void test_chunked_bad_size(void **state)
{
    (void)state;
    BAD_CHUNKED("g\r\n", "malformed chunk size");
    BAD_CHUNKED("\r\n", "malformed chunk size");
    BAD_CHUNKED(";x\r\n", "malformed chunk size");
    BAD_CHUNKED("-5\r\n", "malformed chunk size");
    BAD_CHUNKED("+5\r\n", "malformed chunk size");
    BAD_CHUNKED("0x5\r\n", "malformed chunk size");
    BAD_CHUNKED("5\rx", "bare CR");
}

static void test_chunked_missing_crlf_after_data(void **state)
{
    (void)state;
    BAD_CHUNKED("3\r\nabcX\r\n0\r\n\r\n", "missing CRLF after chunk data");
    BAD_CHUNKED("3\r\nabc\rX\n0\r\n\r\n", "bare CR");
    BAD_CHUNKED("3\r\nabcd\r\n", "missing CRLF after chunk data");
}

static void test_chunked_overflow(void **state)
{
    (void)state;
    struct sl_http1_chunked d;
    struct sink s = {0};

    sl_http1_chunked_init(&d);
    assert_int_equal(feed(&d, "fffffffffffffff\r\nab", 19, &s), 19); /* 15 digits */
    assert_int_equal(d.remaining, (UINT64_C(1) << 60) - 1 - 2);
    DECODED("000000000000001\r\na\r\n00000000000001\r\nb\r\n0\r\n\r\n", "ab"); /* per chunk */
    BAD_CHUNKED("1000000000000000\r\n", "chunk size too large");
    BAD_CHUNKED("0000000000000001\r\n", "chunk size too large");
}

static void test_chunked_stops_at_end(void **state)
{
    (void)state;
    struct sl_http1_chunked d;
    struct sink s = {0};
    static const char in[] = "2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n";

    sl_http1_chunked_init(&d);
    assert_int_equal(feed(&d, in, sizeof(in) - 1, &s), 12);
    assert_true(d.done);
    expect_str(s.data, s.len, "hi");
    assert_int_equal(feed(&d, in + 12, sizeof(in) - 1 - 12, &s), 0);
    assert_int_equal(feed(&d, "", 0, &s), 0);
}

static void test_chunked_callback_failure(void **state)
{
    (void)state;
    struct sl_http1_chunked d;
    struct sink s = {.fail_at = 2};
    static const char in[] = "1\r\na\r\n1\r\nb\r\n0\r\n\r\n";

    sl_http1_chunked_init(&d);
    assert_int_equal(feed(&d, in, sizeof(in) - 1, &s), -1);
    assert_string_equal(d.error, "data callback failed");
    assert_int_equal(s.calls, 2);
    expect_str(s.data, s.len, "a");
    assert_int_equal(feed(&d, "0\r\n\r\n", 5, &s), -1);
    assert_int_equal(s.calls, 2);
    assert_false(d.done);
    /* NULL out: the data is skipped. */
    sl_http1_chunked_init(&d);
    assert_int_equal(sl_http1_chunked_feed(&d, in, sizeof(in) - 1, NULL, NULL),
                     (long)sizeof(in) - 1);
    assert_true(d.done);
}

static void test_chunked_limits(void **state)
{
    (void)state;
    char in[70 * 1024];
    size_t k = 4096 - 2, m = 64 * 1024 - 7;

    /* A size line of exactly 4096 bytes (its CRLF aside) passes, 4097 not. */
    memcpy(in, "1;", 2);
    memset(in + 2, 'x', k);
    memcpy(in + 2 + k, "\r\na\r\n0\r\n\r\n", 10);
    expect_decoded(in, 2 + k + 10, "a");
    memset(in + 2, 'x', k + 1);
    memcpy(in + 2 + k + 1, "\r\na\r\n0\r\n\r\n", 10);
    expect_bad_chunked(in, 2 + k + 11, "chunk size line too long");

    /* A trailer section (after "0\r\n") of 64 KiB passes, one byte more not. */
    memcpy(in, "0\r\nX: ", 6);
    memset(in + 6, 'v', m);
    memcpy(in + 6 + m, "\r\n\r\n", 4);
    expect_decoded(in, 6 + m + 4, "");
    memset(in + 6, 'v', m + 1);
    memcpy(in + 6 + m + 1, "\r\n\r\n", 4);
    expect_bad_chunked(in, 6 + m + 5, "trailer section too large");
}

static int teardown(void **state)
{
    (void)state;
    free(g_buf);
    g_buf = NULL;
    return 0;
}

/* Absolute-form targets (RFC 9112 3.2.2): authority and the rest, or refused. */
static void expect_absolute(const char *t, const char *authority, const char *rest)
{
    const char *a = NULL, *r = NULL;
    size_t an = 0, rn = 0;

    if (sl_http1_absolute_form(t, strlen(t), &a, &an, &r, &rn) != 0)
        fail_msg("\"%s\": refused", t);
    expect_str(a, an, authority);
    expect_str(r, rn, rest);
}

static void expect_not_absolute(const char *t)
{
    const char *a, *r;
    size_t an, rn;

    if (sl_http1_absolute_form(t, strlen(t), &a, &an, &r, &rn) == 0)
        fail_msg("\"%s\": taken as absolute-form", t);
}

static void test_absolute_form(void **state)
{
    (void)state;
    expect_absolute("http://example.com/a/b?q=1", "example.com", "/a/b?q=1");
    expect_absolute("HTTP://Example.COM:8080", "Example.COM:8080", "");
    expect_absolute("https://api.example.com?x", "api.example.com", "?x");
    expect_absolute("http://127.0.0.1:9/", "127.0.0.1:9", "/");
    expect_absolute("http://[::1]:80/p", "[::1]:80", "/p");
    expect_absolute("http://h:/p", "h:", "/p"); /* port = *DIGIT (RFC 3986 3.2.3) */

    expect_not_absolute("/origin/form");
    expect_not_absolute("*");
    expect_not_absolute("example.com:443"); /* authority-form (CONNECT) */
    expect_not_absolute("ftp://example.com/");
    expect_not_absolute("http:/example.com/");
    expect_not_absolute("http:///path");
    expect_not_absolute("http://user:pw@example.com/");
    expect_not_absolute("http://example.com:8x/");
    expect_not_absolute("http://exa%6dple.com/");
    expect_not_absolute("http://[::1/");
    expect_not_absolute("http://[]/");
    expect_not_absolute("http://[::1]x/");
    expect_not_absolute("http://example.com#frag");
    expect_not_absolute("http://a,b/");
    expect_not_absolute("http:");
}

static void test_u64(void **state)
{
    (void)state;
    char buf[32];
    static const struct {
        uint64_t v;
        const char *want;
    } cases[] = {{0, "0"}, {7, "7"}, {10, "10"}, {4096, "4096"},
                 {UINT64_MAX, "18446744073709551615"}};

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(buf, 'x', sizeof(buf));
        char *s = sl_http1_u64(buf + 21, cases[i].v);
        assert_string_equal(s, cases[i].want);
        assert_true(s + strlen(s) == buf + 21);
        assert_true(s >= buf + 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_with_fields),
        cmocka_unit_test(test_post_content_length),
        cmocka_unit_test(test_request_split_at_every_length),
        cmocka_unit_test(test_bare_lf),
        cmocka_unit_test(test_leading_empty_lines),
        cmocka_unit_test(test_too_large_by_bytes),
        cmocka_unit_test(test_too_many_fields),
        cmocka_unit_test(test_invalid_request_line),
        cmocka_unit_test(test_invalid_field_lines),
        cmocka_unit_test(test_ows_trimmed),
        cmocka_unit_test(test_transfer_encoding_in_requests),
        cmocka_unit_test(test_content_length_values),
        cmocka_unit_test(test_status_line),
        cmocka_unit_test(test_response_obs_fold_joined),
        cmocka_unit_test(test_response_split_at_every_length),
        cmocka_unit_test(test_response_te_overrides_cl),
        cmocka_unit_test(test_connection_tokens),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_chunked_simple),
        cmocka_unit_test(test_chunked_extensions),
        cmocka_unit_test(test_chunked_trailers),
        cmocka_unit_test(test_chunked_split_everywhere),
        cmocka_unit_test(test_chunked_bad_size),
        cmocka_unit_test(test_chunked_missing_crlf_after_data),
        cmocka_unit_test(test_chunked_overflow),
        cmocka_unit_test(test_chunked_stops_at_end),
        cmocka_unit_test(test_chunked_callback_failure),
        cmocka_unit_test(test_chunked_limits),
        cmocka_unit_test(test_absolute_form),
        cmocka_unit_test(test_u64),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
