/* test_headers.c - header translation both ways, compared field by field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <sys/queue.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "headers.h"
#include "http1.h"
#include "sluice.h"

#define MAX_FIELDS 32

/* A NULL-terminated list of name/value pairs: {"A", "1", "B", "2", NULL}. */
static void fill(struct evkeyvalq *q, const char *const *pairs)
{
    TAILQ_INIT(q);
    for (size_t i = 0; pairs[i] != NULL && i < 2 * MAX_FIELDS; i += 2)
        assert_int_equal(evhttp_add_header(q, pairs[i], pairs[i + 1]), 0);
}

/* Exactly these fields, in this order. */
static void expect(const struct evkeyvalq *q, const char *const *pairs)
{
    const struct evkeyval *h = TAILQ_FIRST(q);
    size_t i = 0;

    for (; pairs[i] != NULL && i < 2 * MAX_FIELDS; i += 2) {
        assert_non_null(h);
        assert_string_equal(h->key, pairs[i]);
        assert_string_equal(h->value, pairs[i + 1]);
        h = TAILQ_NEXT(h, next);
    }
    if (h != NULL)
        fail_msg("unexpected extra field %s: %s", h->key, h->value);
}

static const struct sl_forward_info fwd = {
    .client_addr = "10.0.0.9", .proto = "http", .preserve_host = false,
};

/* Collect what a walk hands out into a list (sluice itself never builds one). */
static int add_to_list(const char *name, const char *value, void *arg)
{
    int rc = sl_headers_add(arg, name, value);

    return rc == SL_ERR ? SL_OK : rc; /* no list holds CR/LF: nothing to refuse here */
}

/* to_upstream(in) must equal want. */
static void check_up(const char *const *in_pairs, const struct sl_forward_info *fi,
                     const char *const *want)
{
    struct evkeyvalq in, out;

    fill(&in, in_pairs);
    TAILQ_INIT(&out);
    assert_int_equal(sl_headers_each_to_upstream(&in, fi, add_to_list, &out), SL_OK);
    expect(&out, want);
    evhttp_clear_headers(&in);
    sl_headers_clear(&out);
}

static void check_down(const char *const *in_pairs, bool keep_length, const char *const *want)
{
    struct evkeyvalq in, out;

    fill(&in, in_pairs);
    TAILQ_INIT(&out);
    assert_int_equal(sl_headers_each_from_upstream(&in, keep_length, NULL, add_to_list, &out),
                     SL_OK);
    expect(&out, want);
    evhttp_clear_headers(&in);
    sl_headers_clear(&out);
}

static void test_hop_by_hop_fixed(void **state)
{
    (void)state;
    static const char *const names[] = {
        "Connection", "Keep-Alive", "TE", "Trailer", "Transfer-Encoding",
        "Upgrade", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection",
        "connection", "KEEP-ALIVE", "te", "transfer-encoding", "proxy-authorization",
    };
    for (size_t i = 0; i < SL_ARRAY_LEN(names); i++)
        assert_true(sl_headers_is_hop_by_hop(names[i], NULL));
    assert_false(sl_headers_is_hop_by_hop("Content-Type", NULL));
    assert_false(sl_headers_is_hop_by_hop("TEX", NULL));
    assert_false(sl_headers_is_hop_by_hop("Connectio", NULL));
}

static void test_hop_by_hop_connection_tokens(void **state)
{
    (void)state;
    struct evkeyvalq q;
    fill(&q, (const char *const[]){"Connection", "close,  X-Foo ,x-bar", "CONNECTION", "\tX-Baz",
                                   "Connection", ",,", NULL});
    assert_true(sl_headers_is_hop_by_hop("X-Foo", &q));
    assert_true(sl_headers_is_hop_by_hop("x-foo", &q));
    assert_true(sl_headers_is_hop_by_hop("X-Bar", &q));
    assert_true(sl_headers_is_hop_by_hop("X-Baz", &q));
    assert_true(sl_headers_is_hop_by_hop("close", &q));
    assert_false(sl_headers_is_hop_by_hop("X-Fo", &q));
    assert_false(sl_headers_is_hop_by_hop("X-Foo2", &q));
    assert_false(sl_headers_is_hop_by_hop("", &q));
    assert_false(sl_headers_is_hop_by_hop("Accept", &q));
    evhttp_clear_headers(&q);
}

static void test_up_drops_every_hop_field(void **state)
{
    (void)state;
    check_up((const char *const[]){
                 "Accept", "a/b",
                 "Connection", "keep-alive", "Keep-Alive", "timeout=5", "TE", "trailers",
                 "Trailer", "X-T", "Transfer-Encoding", "chunked", "Upgrade", "h2c",
                 "Proxy-Authenticate", "Basic", "Proxy-Authorization", "Basic eA==",
                 "Proxy-Connection", "keep-alive", "X-Keep", "1", NULL},
             &fwd,
             (const char *const[]){"Accept", "a/b", "X-Keep", "1", "X-Forwarded-For", "10.0.0.9",
                                   "X-Forwarded-Proto", "http", "Via", "1.1 sluice", NULL});
}

static void test_up_drops_connection_named(void **state)
{
    (void)state;
    check_up((const char *const[]){"X-Foo", "1", "Connection", "close, X-Foo",
                                   "x-bar", "2", "connection", " X-BAR ", "X-Other", "3", NULL},
             &fwd,
             (const char *const[]){"X-Other", "3", "X-Forwarded-For", "10.0.0.9",
                                   "X-Forwarded-Proto", "http", "Via", "1.1 sluice", NULL});
}

static void test_up_strips_sluice_fields(void **state)
{
    (void)state;
    check_up((const char *const[]){"X-Sluice-Priority", "high", "x-sluice-deadline", "5s",
                                   "X-SLUICE-ERROR", "no", "X-Sluicer", "kept", NULL},
             &fwd,
             (const char *const[]){"X-Sluicer", "kept", "X-Forwarded-For", "10.0.0.9",
                                   "X-Forwarded-Proto", "http", "Via", "1.1 sluice", NULL});
}

static void test_up_forwarded_for_appended(void **state)
{
    (void)state;
    check_up((const char *const[]){"X-Forwarded-For", "1.1.1.1, 2.2.2.2",
                                   "x-forwarded-for", "3.3.3.3", "X-Forwarded-Proto", "https",
                                   "Via", "1.0 edge", "via", "1.1 lb", NULL},
             &fwd,
             (const char *const[]){"X-Forwarded-For", "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9",
                                   "X-Forwarded-Proto", "http",
                                   "Via", "1.0 edge, 1.1 lb, 1.1 sluice", NULL});
}

static void test_up_host_kept_or_dropped(void **state)
{
    (void)state;
    const char *const in[] = {"Host", "client.example", "Accept", "*/*", NULL};
    struct sl_forward_info keep = fwd;
    keep.preserve_host = true;

    check_up(in, &fwd,
             (const char *const[]){"Accept", "*/*", "X-Forwarded-For", "10.0.0.9",
                                   "X-Forwarded-Proto", "http", "Via", "1.1 sluice", NULL});
    check_up(in, &keep,
             (const char *const[]){"Host", "client.example", "Accept", "*/*",
                                   "X-Forwarded-For", "10.0.0.9", "X-Forwarded-Proto", "http",
                                   "Via", "1.1 sluice", NULL});
}

static void test_up_drops_length_and_expect(void **state)
{
    (void)state;
    check_up((const char *const[]){"Content-Length", "12", "Expect", "100-continue",
                                   "content-type", "text/plain", NULL},
             &fwd,
             (const char *const[]){"content-type", "text/plain", "X-Forwarded-For", "10.0.0.9",
                                   "X-Forwarded-Proto", "http", "Via", "1.1 sluice", NULL});
}

static void test_up_order_and_duplicates(void **state)
{
    (void)state;
    check_up((const char *const[]){"B", "1", "A", "2", "B", "3", "Cookie", "x=1",
                                   "cookie", "y=2", "Empty", "", NULL},
             &fwd,
             (const char *const[]){"B", "1", "A", "2", "B", "3", "Cookie", "x=1", "cookie", "y=2",
                                   "Empty", "", "X-Forwarded-For", "10.0.0.9",
                                   "X-Forwarded-Proto", "http", "Via", "1.1 sluice", NULL});
}

/*
 * The translations trust that no list holds CR or LF: both ways of adding a
 * field must refuse them, in names and values, and leave the list as it was.
 */
static void test_crlf_refused_at_the_boundary(void **state)
{
    (void)state;
    struct evkeyvalq q;
    static const char *const bad[][2] = {
        {"X-Evil", "a\r\nX-Injected: 1"}, {"X-Lf", "a\nb"}, {"X-Cr", "a\rb"},
        {"X-Bad\r\nName", "v"}, {"X-Bad\nName", "v"},
    };

    TAILQ_INIT(&q);
    for (size_t i = 0; i < SL_ARRAY_LEN(bad); i++) {
        assert_int_equal(sl_headers_add(&q, bad[i][0], bad[i][1]), SL_ERR);
        assert_int_not_equal(evhttp_add_header(&q, bad[i][0], bad[i][1]), 0);
    }
    assert_true(TAILQ_EMPTY(&q));
}

/*
 * Parsed fields share one block; a list may mix them with single entries,
 * be translated, lose fields one by one and be cleared: ASan (the
 * sanitizer build) checks every free, and that the block goes with its
 * last field.
 */
static int add_field(const char *name, const char *value, void *arg)
{
    return sl_headers_add(arg, name, value);
}

static void test_parsed_block_mixed_and_translated(void **state)
{
    (void)state;
    struct evkeyvalq q, out;
    const struct sl_http1_field f[] = {
        {"Connection", "close", 10, 5}, {"A-B", "xyz", 1, 2}, {"Via", "1.0 up", 3, 6},
        {"Empty", "", 5, 0}, {"Content-Length", "12", 14, 2},
    };

    TAILQ_INIT(&q);
    assert_int_equal(sl_headers_add_parsed(&q, f, 0), SL_OK);
    assert_true(TAILQ_EMPTY(&q));
    assert_int_equal(sl_headers_add(&q, "First", "1"), SL_OK);
    assert_int_equal(sl_headers_add_parsed(&q, f, SL_ARRAY_LEN(f)), SL_OK);
    assert_int_equal(sl_headers_add(&q, "Last", "2"), SL_OK);
    expect(&q, (const char *const[]){"First", "1", "Connection", "close", "A", "xy", "Via",
                                     "1.0 up", "Empty", "", "Content-Length", "12", "Last", "2",
                                     NULL});
    TAILQ_INIT(&out);
    assert_int_equal(sl_headers_each_from_upstream(&q, false, NULL, add_field, &out), SL_OK);
    expect(&out, (const char *const[]){"First", "1", "A", "xy", "Empty", "", "Last", "2", "Via",
                                       "1.0 up, 1.1 sluice", NULL});
    sl_headers_clear(&out);
    /* Remove every other field (block ones among them), then clear the rest. */
    for (struct evkeyval *e = TAILQ_FIRST(&q), *next; e != NULL; e = next) {
        next = TAILQ_NEXT(e, next);
        if (next != NULL)
            next = TAILQ_NEXT(next, next);
        sl_headers_remove(&q, e);
    }
    expect(&q, (const char *const[]){"Connection", "close", "Via", "1.0 up", "Content-Length",
                                     "12", NULL});
    sl_headers_clear(&q);
    assert_true(TAILQ_EMPTY(&q));
}

static int fail_at_third(const char *name, const char *value, void *arg)
{
    int *n = arg;

    (void)name;
    (void)value;
    return ++*n == 3 ? SL_ENOMEM : SL_OK;
}

/* A visitor's error stops the walk and is returned as it is. */
static void test_visitor_error_stops(void **state)
{
    (void)state;
    struct evkeyvalq in;
    int n = 0;

    fill(&in, (const char *const[]){"A", "1", "B", "2", "C", "3", "D", "4", NULL});
    assert_int_equal(sl_headers_each_from_upstream(&in, false, NULL, fail_at_third, &n),
                     SL_ENOMEM);
    assert_int_equal(n, 3);
    n = 0;
    assert_int_equal(sl_headers_each(&in, fail_at_third, &n), SL_ENOMEM);
    assert_int_equal(n, 3);
    n = 0;
    assert_int_equal(sl_headers_each_to_upstream(&in, &fwd, fail_at_third, &n), SL_ENOMEM);
    assert_int_equal(n, 3);
    evhttp_clear_headers(&in);
}

/* Connection naming only close/keep-alive takes the fast path; naming more does not. */
static void test_down_connection_tokens(void **state)
{
    (void)state;
    check_down((const char *const[]){"Connection", "Keep-Alive, close", "Close", "1",
                                     "A", "2", NULL},
               false, (const char *const[]){"Close", "1", "A", "2", "Via", "1.1 sluice", NULL});
    check_down((const char *const[]){"A", "1", "X-Foo", "2", "Connection", "x-foo , upgrade",
                                     "Upgrade", "h2c", "B", "3", NULL},
               false, (const char *const[]){"A", "1", "B", "3", "Via", "1.1 sluice", NULL});
}

static void test_up_without_client_info(void **state)
{
    (void)state;
    const struct sl_forward_info none = {.client_addr = NULL, .proto = NULL};
    check_up((const char *const[]){"A", "1", NULL}, &none,
             (const char *const[]){"A", "1", "Via", "1.1 sluice", NULL});
}

static void test_down_drops(void **state)
{
    (void)state;
    check_down((const char *const[]){"Content-Type", "application/json", "Connection", "close, X-Hop",
                                     "X-Hop", "1", "Transfer-Encoding", "chunked",
                                     "Keep-Alive", "timeout=5", "Content-Length", "42",
                                     "X-Sluice-Error", "queue_full", "Set-Cookie", "a=1",
                                     "Set-Cookie", "b=2", "Retry-After", "3", NULL},
               false,
               (const char *const[]){"Content-Type", "application/json", "Set-Cookie", "a=1",
                                     "Set-Cookie", "b=2", "Retry-After", "3",
                                     "Via", "1.1 sluice", NULL});
}

static void test_down_keep_length_and_via(void **state)
{
    (void)state;
    check_down((const char *const[]){"Via", "1.1 varnish", "Content-Length", "42",
                                     "ETag", "\"x\"", NULL},
               true,
               (const char *const[]){"Content-Length", "42", "ETag", "\"x\"",
                                     "Via", "1.1 varnish, 1.1 sluice", NULL});
}

/* ---- redirects ---------------------------------------------------------- */

/* map_url(url) under upstream, for a client that sent `host` (NULL: none). */
static void check_map(const char *upstream, const char *host, const char *prefix, const char *url,
                      const char *want)
{
    struct evkeyvalq req;
    struct sl_redirect_map map = {upstream, "http", &req, prefix};
    char *out = NULL;
    int rc;

    TAILQ_INIT(&req);
    assert_int_equal(evhttp_add_header(&req, "Accept", "*/*"), 0);
    if (host != NULL)
        assert_int_equal(evhttp_add_header(&req, "host", host), 0);
    rc = sl_headers_map_url(url, &map, &out);
    if (want == NULL) {
        if (rc != 0)
            fail_msg("%s under %s: mapped to %s", url, upstream, out);
    } else {
        if (rc != 1)
            fail_msg("%s under %s: not mapped (%d)", url, upstream, rc);
        assert_string_equal(out, want);
    }
    free(out);
    evhttp_clear_headers(&req);
}

static void test_map_url(void **state)
{
    (void)state;
    /* Under the base: the client's own origin, the base taken off. */
    check_map("http://10.1.2.3:8080/base", "proxy:81", "", "http://10.1.2.3:8080/base/next?a=1",
              "http://proxy:81/next?a=1");
    check_map("http://10.1.2.3:8080/base", "proxy", "", "http://10.1.2.3:8080/base",
              "http://proxy/");
    check_map("http://10.1.2.3:8080/base", "proxy", "", "http://10.1.2.3:8080/base?x#f",
              "http://proxy/?x#f");
    check_map("http://up:8080", "proxy", "", "http://up:8080/a/b", "http://proxy/a/b");
    check_map("http://up:8080", "proxy", "", "http://up:8080", "http://proxy/");
    check_map("http://up:8080/", "proxy", "", "http://up:8080/x", "http://proxy/x");
    /* Scheme and host in any case; the default port written or not. */
    check_map("https://API.example.com/v1", "proxy", "", "HTTPS://api.EXAMPLE.com/v1/x",
              "http://proxy/x");
    check_map("https://api.example.com/v1", "proxy", "", "https://api.example.com:443/v1/x",
              "http://proxy/x");
    check_map("http://up:80/v1", "proxy", "", "http://up/v1/x", "http://proxy/x");
    check_map("http://[::1]:9/b", "[::1]:8080", "", "http://[::1]:9/b/c", "http://[::1]:8080/c");
    /* A prefix the upstream path lacks is put back. */
    check_map("http://up/base", "proxy", "/api", "http://up/base/next", "http://proxy/api/next");
    check_map("http://up/base", "proxy", "/api", "http://up/base?q", "http://proxy/api?q");
    check_map("http://up/base", "proxy", "/api/", "http://up/base/n", "http://proxy/api/n");
    check_map("http://up/base", "proxy", "/", "http://up/base/n", "http://proxy/n");
    /* No usable Host: a path-absolute reference. */
    check_map("http://up/base", NULL, "", "http://up/base/next", "/next");
    check_map("http://up/base", "evil.example/x?", "", "http://up/base/next", "/next");

    /* Left alone: relative, another origin, outside the base. */
    check_map("http://up:8080/base", "proxy", "", "/base/next", NULL);
    check_map("http://up:8080/base", "proxy", "", "next", NULL);
    check_map("http://up:8080/base", "proxy", "", "//up:8080/base/next", NULL);
    check_map("http://up:8080/base", "proxy", "", "https://up:8080/base/next", NULL);
    check_map("http://up:8080/base", "proxy", "", "http://up:8081/base/next", NULL);
    check_map("http://up:8080/base", "proxy", "", "http://up/base/next", NULL);
    check_map("http://up:8080/base", "proxy", "", "http://up:80800/base/next", NULL);
    check_map("http://up:8080/base", "proxy", "", "http://upx:8080/base/next", NULL);
    check_map("http://up:8080/base", "proxy", "", "http://up:8080/basement", NULL);
    check_map("http://up:8080/base", "proxy", "", "http://up:8080/Base/x", NULL);
    check_map("http://up:8080/base", "proxy", "", "http://up:8080", NULL);
    check_map("http://up:8080/base", "proxy", "", "http://other.example/", NULL);
    check_map("http://up:8080/base", "proxy", "", "", NULL);
}

/* Location and Content-Location go through the map; nothing else does. */
static void test_down_maps_locations(void **state)
{
    struct evkeyvalq in, out, req;
    struct sl_redirect_map map = {"http://up:8080/base", "http", &req, ""};

    (void)state;
    TAILQ_INIT(&req);
    assert_int_equal(evhttp_add_header(&req, "Host", "proxy:81"), 0);
    fill(&in, (const char *const[]){"Location", "http://up:8080/base/next", "Link",
                                    "<http://up:8080/base/x>", "content-location",
                                    "http://up:8080/base/y", "X-Location",
                                    "http://up:8080/base/z", NULL});
    TAILQ_INIT(&out);
    assert_int_equal(sl_headers_each_from_upstream(&in, false, &map, add_to_list, &out), SL_OK);
    expect(&out, (const char *const[]){"Location", "http://proxy:81/next", "Link",
                                       "<http://up:8080/base/x>", "content-location",
                                       "http://proxy:81/y", "X-Location",
                                       "http://up:8080/base/z", "Via", "1.1 sluice", NULL});
    sl_headers_clear(&out);
    /* Without a map, as they came. */
    TAILQ_INIT(&out);
    assert_int_equal(sl_headers_each_from_upstream(&in, false, NULL, add_to_list, &out), SL_OK);
    assert_string_equal(TAILQ_FIRST(&out)->value, "http://up:8080/base/next");
    sl_headers_clear(&out);
    evhttp_clear_headers(&in);
    evhttp_clear_headers(&req);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hop_by_hop_fixed),
        cmocka_unit_test(test_hop_by_hop_connection_tokens),
        cmocka_unit_test(test_up_drops_every_hop_field),
        cmocka_unit_test(test_up_drops_connection_named),
        cmocka_unit_test(test_up_strips_sluice_fields),
        cmocka_unit_test(test_up_forwarded_for_appended),
        cmocka_unit_test(test_up_host_kept_or_dropped),
        cmocka_unit_test(test_up_drops_length_and_expect),
        cmocka_unit_test(test_up_order_and_duplicates),
        cmocka_unit_test(test_crlf_refused_at_the_boundary),
        cmocka_unit_test(test_down_connection_tokens),
        cmocka_unit_test(test_parsed_block_mixed_and_translated),
        cmocka_unit_test(test_visitor_error_stops),
        cmocka_unit_test(test_up_without_client_info),
        cmocka_unit_test(test_down_drops),
        cmocka_unit_test(test_down_keep_length_and_via),
        cmocka_unit_test(test_map_url),
        cmocka_unit_test(test_down_maps_locations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
