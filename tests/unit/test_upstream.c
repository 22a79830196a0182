/*
 * test_upstream.c - real HTTP over loopback: an evhttp server and a raw TCP
 * server in this process, on the same event_base as the upstream module.
 *
 * Every case that talks to a server runs twice: http:// through the native
 * HTTP/1.1 client (the default), then through libcurl, the path https://
 * takes, so both keep the same contract.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "clock.h"
#include "config.h"
#include "http_fixture.h"
#include "sluice.h"
#include "upstream.h"
#include "../tools/toolutil.h"

#define MAX_RESULTS 64
#define MAX_SLOW 8
#define MAX_RAW 8
#define BIG_LEN (1024 * 1024)

/* A /slow request the server answers from a timer, unless its client goes. */
struct slow {
    struct event *timer;
    struct evhttp_request *req;
};

struct fixture {
    struct event_base *base;
    struct sl_upstream *up;
    struct evhttp *http;
    int port;
    struct fx_listener raw;
    int raw_port;
    const char *raw_reply;          /* NULL: close without answering */
    struct bufferevent *raw_conns[MAX_RAW];
    struct slow slow[MAX_SLOW];
    /* the last request the evhttp server received */
    int received;
    char method[16];
    char uri[256];
    struct evkeyvalq got_headers;
    struct evbuffer *got_body;
    struct fx_result res[MAX_RESULTS];
    /* the streaming server: an answer in parts, written when the test says */
    struct fx_listener sraw;
    int sraw_port;
    int sraw_accepted;
    int sraw_requests;
    bool sraw_big;                  /* answer with a STREAM_BIG-byte pattern body */
    const char *sraw_reply;         /* else this, and the rest through stream_write */
    struct bufferevent *sraw_conns[MAX_RAW];
    struct bufferevent *sraw_bev;   /* the connection answering now */
    size_t big_added;               /* pattern bytes put in its output so far */
};

static struct fixture F;

/* What the streaming callbacks (backend.h: head, body_chunk) saw. */
struct stream {
    enum sl_upstream_take take;     /* what the head callback answers */
    int pause_at;                   /* body_chunk number that returns false (0: none) */
    bool pattern;                   /* check the bytes against big_byte(), keep none */
    bool in_start;
    int heads;
    int head_status;
    int64_t content_length;
    int chunks;
    size_t total;                   /* body bytes handed to body_chunk */
    struct evbuffer *got;           /* ...and the bytes, unless `pattern` */
    char error[128];                /* what a callback found wrong */
};

static struct stream S;

/* ---- helpers ------------------------------------------------------------ */

static bool n_received(void *arg)
{
    return F.received >= *(int *)arg;
}

static char *url(const char *target, char *buf, size_t size)
{
    char base[64];
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", F.port);
    assert_int_equal(sl_upstream_url(base, target, buf, size), SL_OK);
    return buf;
}

/* Start one call into F.res[slot]. */
static struct sl_upstream_call *start(int slot, const char *method, const char *target,
                                      const struct evkeyvalq *hdrs, const void *body,
                                      size_t len, int64_t timeout_us)
{
    char buf[512];
    const struct sl_upstream_request req = {
        .method = method, .url = url(target, buf, sizeof(buf)), .headers = hdrs,
        .body = body, .body_len = len, .timeout_us = timeout_us,
    };
    struct sl_upstream_call *call = sl_upstream_start(F.up, &req, fx_on_done, &F.res[slot]);
    assert_non_null(call);
    return call;
}

/* Run one call to completion and return its result. */
static struct fx_result *call_once(const char *method, const char *target,
                                   const struct evkeyvalq *hdrs, const void *body, size_t len)
{
    start(0, method, target, hdrs, body, len, 5 * SL_USEC_PER_SEC);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    assert_int_equal(F.res[0].calls, 1);
    return &F.res[0];
}

/* ---- the evhttp server -------------------------------------------------- */

static void record(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);

    F.received++;
    snprintf(F.method, sizeof(F.method), "%s",
             tool_method_name((int)evhttp_request_get_command(req)));
    snprintf(F.uri, sizeof(F.uri), "%s", evhttp_request_get_uri(req));
    fx_copy_headers(evhttp_request_get_input_headers(req), &F.got_headers);
    evbuffer_drain(F.got_body, evbuffer_get_length(F.got_body));
    assert_int_equal(evbuffer_add_buffer(F.got_body, in), 0);
}

static void reply_echo(struct evhttp_request *req)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    struct evbuffer *body = evbuffer_new();

    assert_non_null(body);
    evhttp_add_header(out, "X-Echo-Method", F.method);
    evhttp_add_header(out, "X-Multi", "a");
    evhttp_add_header(out, "X-Multi", "b");
    evhttp_add_header(out, "X-Empty-Resp", "");
    assert_int_equal(evbuffer_add(body, evbuffer_pullup(F.got_body, -1),
                                  evbuffer_get_length(F.got_body)), 0);
    evhttp_send_reply(req, 200, "OK", body);
    evbuffer_free(body);
}

static void reply_big(struct evhttp_request *req)
{
    struct evbuffer *body = evbuffer_new();
    unsigned char *data = malloc(BIG_LEN);

    assert_non_null(body);
    assert_non_null(data);
    for (size_t i = 0; i < BIG_LEN; i++)
        data[i] = (unsigned char)(i * 31 + 7);
    assert_int_equal(evbuffer_add(body, data, BIG_LEN), 0);
    free(data);
    evhttp_send_reply(req, 200, "OK", body);
    evbuffer_free(body);
}

static void on_slow_timer(evutil_socket_t fd, short what, void *arg)
{
    struct slow *s = arg;
    (void)fd;
    (void)what;
    evhttp_connection_set_closecb(evhttp_request_get_connection(s->req), NULL, NULL);
    evhttp_send_reply(s->req, 200, "OK", NULL);
    s->req = NULL;
}

static void on_slow_close(struct evhttp_connection *conn, void *arg)
{
    struct slow *s = arg;
    (void)conn;
    evtimer_del(s->timer);
    s->req = NULL;
}

static void reply_slow(struct evhttp_request *req)
{
    struct timeval tv = {2, 0};

    for (size_t i = 0; i < MAX_SLOW; i++) {
        struct slow *s = &F.slow[i];
        if (s->req != NULL)
            continue;
        s->req = req;
        evhttp_connection_set_closecb(evhttp_request_get_connection(req), on_slow_close, s);
        assert_int_equal(evtimer_add(s->timer, &tv), 0);
        return;
    }
    fail_msg("too many slow requests");
}

static void on_request(struct evhttp_request *req, void *arg)
{
    const char *path = evhttp_request_get_uri(req);
    (void)arg;

    record(req);
    if (strncmp(path, "/slow", 5) == 0) {
        reply_slow(req);
    } else if (strncmp(path, "/big", 4) == 0) {
        reply_big(req);
    } else if (strncmp(path, "/429", 4) == 0) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "7");
        evhttp_send_reply(req, 429, "Too Many Requests", NULL);
    } else if (strncmp(path, "/redirect", 9) == 0) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Location", "/echo");
        evhttp_send_reply(req, 302, "Found", NULL);
    } else {
        reply_echo(req);
    }
}

static void http_start(void)
{
    F.http = evhttp_new(F.base);
    assert_non_null(F.http);
    evhttp_set_allowed_methods(F.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                           EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                           EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(F.http, on_request, NULL);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(F.http, "127.0.0.1", 0);
    assert_non_null(bs);
    F.port = fx_bound_port(evhttp_bound_socket_get_fd(bs));
    for (size_t i = 0; i < MAX_SLOW; i++) {
        F.slow[i].timer = evtimer_new(F.base, on_slow_timer, &F.slow[i]);
        assert_non_null(F.slow[i].timer);
    }
}

/* ---- the raw server: a canned answer to whatever comes ------------------ */

static void raw_close(struct bufferevent *bev)
{
    for (size_t i = 0; i < MAX_RAW; i++)
        if (F.raw_conns[i] == bev)
            F.raw_conns[i] = NULL;
    bufferevent_free(bev);
}

static void raw_on_written(struct bufferevent *bev, void *arg)
{
    (void)arg;
    raw_close(bev);
}

static void raw_on_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    (void)arg;

    if (evbuffer_search(in, "\r\n\r\n", 4, NULL).pos < 0)
        return;
    if (F.raw_reply == NULL) {
        raw_close(bev);
        return;
    }
    bufferevent_setcb(bev, NULL, raw_on_written, NULL, NULL);
    assert_int_equal(bufferevent_write(bev, F.raw_reply, strlen(F.raw_reply)), 0);
}

static void raw_on_conn(struct bufferevent *bev)
{
    for (size_t i = 0; i < MAX_RAW; i++) {
        if (F.raw_conns[i] == NULL) {
            F.raw_conns[i] = bev;
            bufferevent_setcb(bev, raw_on_read, NULL, NULL, NULL);
            assert_int_equal(bufferevent_enable(bev, EV_READ), 0);
            return;
        }
    }
    fail_msg("too many raw connections");
}

static void raw_start(void)
{
    F.raw_port = fx_listen(&F.raw, F.base, raw_on_conn, 16);
}

/* ---- the streaming server: answers in parts ----------------------------- */

#define STREAM_BIG (16 * 1024 * 1024) /* more than loopback's socket buffers hold */

static unsigned char big_byte(size_t i)
{
    return (unsigned char)(i % 251 + i / 65536);
}

static void sraw_close(struct bufferevent *bev)
{
    for (size_t i = 0; i < MAX_RAW; i++)
        if (F.sraw_conns[i] == bev)
            F.sraw_conns[i] = NULL;
    if (F.sraw_bev == bev)
        F.sraw_bev = NULL;
    bufferevent_free(bev);
}

/* Keep 256 KiB queued until the whole pattern body was queued. */
static void sraw_big_fill(struct bufferevent *bev, void *arg)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    unsigned char block[16384];

    (void)arg;
    while (F.sraw_big && evbuffer_get_length(out) < 256 * 1024 && F.big_added < STREAM_BIG) {
        size_t n = STREAM_BIG - F.big_added < sizeof(block) ? STREAM_BIG - F.big_added
                                                             : sizeof(block);

        for (size_t k = 0; k < n; k++)
            block[k] = big_byte(F.big_added + k);
        assert_int_equal(evbuffer_add(out, block, n), 0);
        F.big_added += n;
    }
}

static void sraw_on_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    char head[128];

    (void)arg;
    if (end.pos < 0)
        return;
    /* GETs only: the request ends with its head. */
    assert_int_equal(evbuffer_drain(in, (size_t)end.pos + 4), 0);
    F.sraw_requests++;
    F.sraw_bev = bev;
    if (!F.sraw_big) {
        assert_int_equal(bufferevent_write(bev, F.sraw_reply, strlen(F.sraw_reply)), 0);
        return;
    }
    F.big_added = 0;
    snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", STREAM_BIG);
    assert_int_equal(bufferevent_write(bev, head, strlen(head)), 0);
    sraw_big_fill(bev, NULL);
}

static void sraw_on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        sraw_close(bev);
}

static void sraw_on_conn(struct bufferevent *bev)
{
    for (size_t i = 0; i < MAX_RAW; i++) {
        if (F.sraw_conns[i] == NULL) {
            F.sraw_conns[i] = bev;
            F.sraw_accepted++;
            bufferevent_setwatermark(bev, EV_WRITE, 64 * 1024, 0);
            bufferevent_setcb(bev, sraw_on_read, sraw_big_fill, sraw_on_event, NULL);
            assert_int_equal(bufferevent_enable(bev, EV_READ), 0);
            return;
        }
    }
    fail_msg("too many streaming connections");
}

/* More of the answer under way. */
static void stream_write(const char *data)
{
    assert_non_null(F.sraw_bev);
    assert_int_equal(bufferevent_write(F.sraw_bev, data, strlen(data)), 0);
}

static void sraw_on_written_close(struct bufferevent *bev, void *arg)
{
    (void)arg;
    sraw_close(bev);
}

/* The last bytes of the answer under way, then the close. */
static void stream_write_close(const char *data)
{
    assert_non_null(F.sraw_bev);
    bufferevent_setcb(F.sraw_bev, NULL, sraw_on_written_close, sraw_on_event, NULL);
    bufferevent_setwatermark(F.sraw_bev, EV_WRITE, 0, 0);
    stream_write(data);
}

/* The server resets the connection of the answer under way (RST, not FIN). */
static void stream_reset(void)
{
    struct linger lg = {1, 0};

    assert_non_null(F.sraw_bev);
    assert_int_equal(setsockopt(bufferevent_getfd(F.sraw_bev), SOL_SOCKET, SO_LINGER, &lg,
                                sizeof(lg)), 0);
    sraw_close(F.sraw_bev);
}

/* ---- fixture ------------------------------------------------------------ */

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof(F));
    F.base = event_base_new();
    assert_non_null(F.base);
    TAILQ_INIT(&F.got_headers);
    F.got_body = evbuffer_new();
    assert_non_null(F.got_body);
    fx_results_init(F.res, MAX_RESULTS);
    http_start();
    raw_start();
    F.sraw_port = fx_listen(&F.sraw, F.base, sraw_on_conn, 16);
    F.up = sl_upstream_new(F.base, 8);
    assert_non_null(F.up);
    memset(&S, 0, sizeof(S));
    S.take = SL_TAKE_STREAM;
    S.got = evbuffer_new();
    assert_non_null(S.got);
    return 0;
}

static int setup_curl(void **state)
{
    setup(state);
    sl_upstream_set_native_http(F.up, false);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sl_upstream_free(F.up);
    evhttp_free(F.http);
    for (size_t i = 0; i < MAX_SLOW; i++)
        event_free(F.slow[i].timer);
    for (size_t i = 0; i < MAX_RAW; i++)
        if (F.raw_conns[i] != NULL)
            bufferevent_free(F.raw_conns[i]);
    evconnlistener_free(F.raw.lev);
    for (size_t i = 0; i < MAX_RAW; i++)
        if (F.sraw_conns[i] != NULL)
            bufferevent_free(F.sraw_conns[i]);
    evconnlistener_free(F.sraw.lev);
    evbuffer_free(S.got);
    fx_results_free(F.res, MAX_RESULTS);
    evhttp_clear_headers(&F.got_headers);
    evbuffer_free(F.got_body);
    event_base_free(F.base);
    return 0;
}

/* ---- tests: URL --------------------------------------------------------- */

static void test_url(void **state)
{
    (void)state;
    char buf[64];

    assert_int_equal(sl_upstream_url("http://h:1/base", "/p?q", buf, sizeof(buf)), SL_OK);
    assert_string_equal(buf, "http://h:1/base/p?q");
    assert_int_equal(sl_upstream_url("http://h:1", "/p", buf, sizeof(buf)), SL_OK);
    assert_string_equal(buf, "http://h:1/p");
    assert_int_equal(sl_upstream_url("http://h:1/", "/p", buf, sizeof(buf)), SL_OK);
    assert_string_equal(buf, "http://h:1/p");
    assert_int_equal(sl_upstream_url("https://h/base/", "/", buf, sizeof(buf)), SL_OK);
    assert_string_equal(buf, "https://h/base/");
    assert_int_equal(sl_upstream_url("http://h:1", "/a%2F//b?x=%20", buf, sizeof(buf)), SL_OK);
    assert_string_equal(buf, "http://h:1/a%2F//b?x=%20");

    assert_int_equal(sl_upstream_url("http://h:1", "p", buf, sizeof(buf)), SL_ERR);
    assert_int_equal(sl_upstream_url("http://h:1", "", buf, sizeof(buf)), SL_ERR);
    assert_int_equal(sl_upstream_url("http://h:1", "*", buf, sizeof(buf)), SL_ERR);
    /* 12 characters + NUL: 13 fits, 12 does not */
    assert_int_equal(sl_upstream_url("http://h:1", "/p", buf, 13), SL_OK);
    assert_string_equal(buf, "http://h:1/p");
    assert_int_equal(sl_upstream_url("http://h:1", "/p", buf, 12), SL_ERR);
    assert_int_equal(sl_upstream_url("http://h:1", "/p", buf, 0), SL_ERR);
}

/* ---- tests: forwarding -------------------------------------------------- */

static void test_get_forwarded_exactly(void **state)
{
    (void)state;
    struct evkeyvalq h;
    char host[32];

    TAILQ_INIT(&h);
    evhttp_add_header(&h, "Accept", "text/plain");
    evhttp_add_header(&h, "X-Empty", "");
    evhttp_add_header(&h, "X-Dup", "1");
    evhttp_add_header(&h, "x-dup", "2");
    evhttp_add_header(&h, "User-Agent", "t/1");
    struct fx_result *r = call_once("GET", "/echo/a%20b//c?x=1&y=%2F&z", &h, NULL, 0);
    evhttp_clear_headers(&h);

    assert_int_equal(r->error, SL_UPSTREAM_OK);
    assert_int_equal(r->status, 200);
    assert_string_equal(F.method, "GET");
    assert_string_equal(F.uri, "/echo/a%20b//c?x=1&y=%2F&z");
    snprintf(host, sizeof(host), "127.0.0.1:%d", F.port);
    fx_expect_headers(&F.got_headers,
                   (const char *const[]){"Host", host, "Accept", "text/plain", "X-Empty", "",
                                         "X-Dup", "1", "x-dup", "2", "User-Agent", "t/1", NULL});
    fx_body_equals(F.got_body, NULL, 0);
}

static void test_no_accept_added(void **state)
{
    (void)state;
    char host[32];

    struct fx_result *r = call_once("DELETE", "/echo/x", NULL, NULL, 0);
    assert_int_equal(r->status, 200);
    assert_string_equal(F.method, "DELETE");
    snprintf(host, sizeof(host), "127.0.0.1:%d", F.port);
    fx_expect_headers(&F.got_headers, (const char *const[]){"Host", host, NULL});
}

static void test_post_body(void **state)
{
    (void)state;
    struct evkeyvalq h;

    TAILQ_INIT(&h);
    evhttp_add_header(&h, "Content-Type", "application/json");
    struct fx_result *r = call_once("POST", "/echo", &h, "{\"a\":1}", 7);
    evhttp_clear_headers(&h);

    assert_int_equal(r->status, 200);
    assert_string_equal(F.method, "POST");
    assert_string_equal(fx_header_value(&F.got_headers, "Content-Length"), "7");
    assert_string_equal(fx_header_value(&F.got_headers, "Content-Type"), "application/json");
    assert_null(fx_header_value(&F.got_headers, "Expect"));
    fx_body_equals(F.got_body, "{\"a\":1}", 7);
    fx_body_equals(r->body, "{\"a\":1}", 7);
}

static void test_post_empty_body(void **state)
{
    (void)state;
    char host[32];

    struct fx_result *r = call_once("POST", "/echo", NULL, NULL, 0);
    assert_int_equal(r->status, 200);
    assert_string_equal(F.method, "POST");
    snprintf(host, sizeof(host), "127.0.0.1:%d", F.port);
    fx_expect_headers(&F.got_headers, (const char *const[]){"Host", host, "Content-Length", "0", NULL});
    fx_body_equals(F.got_body, NULL, 0);
}

static void test_put_patch_with_bodies(void **state)
{
    (void)state;
    static const char *const methods[] = {"PUT", "PATCH", "OPTIONS"};

    for (size_t i = 0; i < SL_ARRAY_LEN(methods); i++) {
        F.res[i].calls = 0;
        start((int)i, methods[i], "/echo", NULL, "xyz", 3, 5 * SL_USEC_PER_SEC);
        fx_run_until(F.base, fx_result_done, &F.res[i]);
        assert_int_equal(F.res[i].status, 200);
        assert_string_equal(F.method, methods[i]);
        assert_string_equal(fx_header_value(&F.got_headers, "Content-Length"), "3");
        assert_null(fx_header_value(&F.got_headers, "Content-Type"));
        fx_body_equals(F.got_body, "xyz", 3);
    }
}

static void test_large_request_body_no_expect(void **state)
{
    (void)state;
    size_t len = BIG_LEN + 1;
    char *data = malloc(len);

    assert_non_null(data);
    for (size_t i = 0; i < len; i++)
        data[i] = (char)('a' + i % 26);
    struct fx_result *r = call_once("POST", "/echo", NULL, data, len);
    assert_int_equal(r->status, 200);
    assert_null(fx_header_value(&F.got_headers, "Expect"));
    fx_body_equals(F.got_body, data, len);
    fx_body_equals(r->body, data, len);
    free(data);
}

/* ---- tests: responses --------------------------------------------------- */

static void test_response_captured(void **state)
{
    (void)state;
    struct fx_result *r = call_once("GET", "/echo", NULL, NULL, 0);

    assert_int_equal(r->error, SL_UPSTREAM_OK);
    assert_string_equal(r->detail, "");
    assert_string_equal(fx_header_value(&r->headers, "X-Echo-Method"), "GET");
    assert_string_equal(fx_header_value(&r->headers, "X-Empty-Resp"), "");
    assert_string_equal(fx_header_value(&r->headers, "Content-Length"), "0");

    /* duplicates kept, in order */
    const struct evkeyval *h;
    int seen = 0;
    TAILQ_FOREACH(h, &r->headers, next)
        if (strcmp(h->key, "X-Multi") == 0)
            assert_string_equal(h->value, seen++ == 0 ? "a" : "b");
    assert_int_equal(seen, 2);
    assert_true(r->duration_us > 0);
}

static void test_big_response(void **state)
{
    (void)state;
    struct fx_result *r = call_once("GET", "/big", NULL, NULL, 0);
    unsigned char *want = malloc(BIG_LEN);

    assert_non_null(want);
    for (size_t i = 0; i < BIG_LEN; i++)
        want[i] = (unsigned char)(i * 31 + 7);
    assert_int_equal(r->status, 200);
    fx_body_equals(r->body, want, BIG_LEN);
    free(want);
}

static void test_head(void **state)
{
    (void)state;
    struct fx_result *r = call_once("HEAD", "/echo", NULL, NULL, 0);

    assert_int_equal(r->error, SL_UPSTREAM_OK);
    assert_int_equal(r->status, 200);
    assert_string_equal(F.method, "HEAD");
    assert_string_equal(fx_header_value(&r->headers, "X-Echo-Method"), "HEAD");
    fx_body_equals(r->body, NULL, 0);
}

static void test_429_and_redirect(void **state)
{
    (void)state;
    struct fx_result *r = call_once("GET", "/429", NULL, NULL, 0);

    assert_int_equal(r->error, SL_UPSTREAM_OK);
    assert_int_equal(r->status, 429);
    assert_string_equal(r->reason, "Too Many Requests");
    assert_string_equal(fx_header_value(&r->headers, "Retry-After"), "7");

    r->calls = 0;
    evhttp_clear_headers(&r->headers);
    call_once("GET", "/redirect", NULL, NULL, 0);
    assert_int_equal(r->status, 302);
    assert_string_equal(fx_header_value(&r->headers, "Location"), "/echo");
    assert_int_equal(F.received, 2); /* not followed */
}

/* Raw answer: two interim responses, a folded field and a trailer. */
static const char interim_reply[] =
    "HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
    "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
    "HTTP/1.1 201 Made It\r\nX-Final: yes\r\nX-Folded: a\r\n  b\r\n"
    "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    "2\r\nok\r\n0\r\nX-Trailer: t\r\n\r\n";

static void test_interim_responses_skipped(void **state)
{
    (void)state;
    char buf[64];
    const struct sl_upstream_request req = {
        .method = "GET", .url = buf, .timeout_us = 5 * SL_USEC_PER_SEC,
    };

    snprintf(buf, sizeof(buf), "http://127.0.0.1:%d/x", F.raw_port);
    F.raw_reply = interim_reply;
    assert_non_null(sl_upstream_start(F.up, &req, fx_on_done, &F.res[0]));
    fx_run_until(F.base, fx_result_done, &F.res[0]);

    struct fx_result *r = &F.res[0];
    assert_int_equal(r->error, SL_UPSTREAM_OK);
    assert_int_equal(r->status, 201);
    /* The final answer's own reason phrase, not an interim one's nor the standard one. */
    assert_string_equal(r->reason, "Made It");
    fx_expect_headers(&r->headers,
                   (const char *const[]){"X-Final", "yes", "X-Folded", "a b",
                                         "Transfer-Encoding", "chunked", "Connection", "close",
                                         NULL});
    fx_body_equals(r->body, "ok", 2);
}

/* ---- tests: failures ---------------------------------------------------- */

static void test_timeout(void **state)
{
    (void)state;
    start(0, "GET", "/slow", NULL, NULL, 0, 200 * SL_USEC_PER_MSEC);
    fx_run_until(F.base, fx_result_done, &F.res[0]);

    struct fx_result *r = &F.res[0];
    assert_int_equal(r->calls, 1);
    assert_int_equal(r->error, SL_UPSTREAM_TIMEOUT);
    assert_int_equal(r->status, 0);
    assert_true(strlen(r->detail) > 0);
    assert_true(r->duration_us >= 190 * SL_USEC_PER_MSEC);
    assert_true(r->duration_us < 1900 * SL_USEC_PER_MSEC);
    assert_int_equal(F.received, 1);
}

/* A port nobody listens on: bind, read the port, close. */
static int closed_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    int port = fx_bound_port(fd);
    close(fd);
    return port;
}

static void test_connect_refused(void **state)
{
    (void)state;
    char buf[64];
    const struct sl_upstream_request req = {
        .method = "GET", .url = buf, .timeout_us = 5 * SL_USEC_PER_SEC,
    };

    snprintf(buf, sizeof(buf), "http://127.0.0.1:%d/x", closed_port());
    assert_non_null(sl_upstream_start(F.up, &req, fx_on_done, &F.res[0]));
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    assert_int_equal(F.res[0].error, SL_UPSTREAM_CONNECT);
    assert_int_equal(F.res[0].status, 0);
    assert_true(strlen(F.res[0].detail) > 0);
}

/*
 * A listener whose accept queue is full drops new SYNs, so the connect hangs
 * and the timeout strikes before anything was sent.
 */
static int full_listener(int *clients, size_t n, int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(fd, 0), 0);
    *port = fx_bound_port(fd);
    sin.sin_port = htons((uint16_t)*port);
    for (size_t i = 0; i < n; i++) {
        clients[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        assert_true(clients[i] >= 0);
        (void)connect(clients[i], (struct sockaddr *)&sin, sizeof(sin));
    }
    return fd;
}

static void test_connect_timeout_is_connect(void **state)
{
    (void)state;
    char buf[64];
    int clients[3], port;
    int fd = full_listener(clients, SL_ARRAY_LEN(clients), &port);
    const struct sl_upstream_request req = {
        .method = "GET", .url = buf, .timeout_us = 200 * SL_USEC_PER_MSEC,
    };

    snprintf(buf, sizeof(buf), "http://127.0.0.1:%d/x", port);
    assert_non_null(sl_upstream_start(F.up, &req, fx_on_done, &F.res[0]));
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    assert_int_equal(F.res[0].error, SL_UPSTREAM_CONNECT);
    assert_true(F.res[0].duration_us >= 190 * SL_USEC_PER_MSEC);
    for (size_t i = 0; i < SL_ARRAY_LEN(clients); i++)
        close(clients[i]);
    close(fd);
}

static void raw_error_case(const char *reply, enum sl_upstream_error want)
{
    char buf[64];
    const struct sl_upstream_request req = {
        .method = "GET", .url = buf, .timeout_us = 5 * SL_USEC_PER_SEC,
    };

    snprintf(buf, sizeof(buf), "http://127.0.0.1:%d/x", F.raw_port);
    F.raw_reply = reply;
    F.res[0].calls = 0;
    assert_non_null(sl_upstream_start(F.up, &req, fx_on_done, &F.res[0]));
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    assert_int_equal(F.res[0].error, want);
    assert_int_equal(F.res[0].status, 0);
    assert_true(strlen(F.res[0].detail) > 0);
}

static void test_protocol_errors(void **state)
{
    (void)state;
    /* Both paths: closed with no answer is its own kind (the caller may resend). */
    raw_error_case(NULL, SL_UPSTREAM_CLOSED);                          /* empty reply */
    raw_error_case("SSH-2.0-OpenSSH\r\n\r\n", SL_UPSTREAM_PROTOCOL); /* not HTTP */
    raw_error_case("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                   SL_UPSTREAM_PROTOCOL);                              /* cut short */
}

static int sent_count;

static void count_sent(void *arg)
{
    (void)arg;
    sent_count++;
}

/*
 * The dispatch instant is real on both paths (issue 13 item 2): `sent`
 * runs once per call, after the connect, before the answer.
 */
static void test_sent_reported_once(void **state)
{
    char buf[512];
    const struct sl_upstream_request req = {
        .method = "GET", .url = url("/sent", buf, sizeof(buf)),
        .timeout_us = 5 * SL_USEC_PER_SEC, .sent = count_sent,
    };

    (void)state;
    for (int i = 0; i < 3; i++) {
        sent_count = 0;
        F.res[0].calls = 0;
        assert_non_null(sl_upstream_start(F.up, &req, fx_on_done, &F.res[0]));
        fx_run_until(F.base, fx_result_done, &F.res[0]);
        assert_int_equal(F.res[0].status, 200);
        assert_int_equal(sent_count, 1);
    }
}

/* What an upstream must not send, and the detail each path gives for it. */
static void malformed_case(const char *reply, const char *detail_part)
{
    raw_error_case(reply, SL_UPSTREAM_PROTOCOL);
    if (strstr(F.res[0].detail, detail_part) == NULL)
        fail_msg("detail \"%s\" does not say \"%s\"", F.res[0].detail, detail_part);
}

/* Both paths refuse the same answers, at once, saying why (issue 16 item 6). */
static void test_malformed_answers_alike(void **state)
{
    static char many[400 * 16 + 64];
    size_t off;

    (void)state;
    malformed_case("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
                   "Content-Length");
    malformed_case("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\n\r\n",
                   "101");
    off = (size_t)snprintf(many, sizeof(many), "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < 400; i++)
        off += (size_t)snprintf(many + off, sizeof(many) - off, "X-F%03d: v\r\n", i);
    snprintf(many + off, sizeof(many) - off, "Content-Length: 0\r\n\r\n");
    malformed_case(many, "fields");
    /* A status line ended by a CR alone: no line feed. */
    malformed_case("HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n", "bare CR");
}

/* ---- tests: cancel, concurrency, teardown ------------------------------- */

static void test_cancel(void **state)
{
    (void)state;
    struct sl_upstream_call *early = start(1, "GET", "/slow", NULL, NULL, 0, SL_USEC_PER_SEC);
    struct sl_upstream_call *late = start(2, "GET", "/slow", NULL, NULL, 0, SL_USEC_PER_SEC);

    assert_int_equal(sl_upstream_active(F.up), 2);
    sl_upstream_cancel(early); /* before anything was sent */
    assert_int_equal(sl_upstream_active(F.up), 1);
    int one = 1;
    fx_run_until(F.base, n_received, &one);
    sl_upstream_cancel(late); /* while the server holds the request */
    assert_int_equal(sl_upstream_active(F.up), 0);

    call_once("GET", "/echo", NULL, NULL, 0);
    assert_int_equal(F.res[0].status, 200);
    assert_int_equal(F.res[1].calls, 0);
    assert_int_equal(F.res[2].calls, 0);
    assert_int_equal(F.received, 2);
}

static void test_concurrent_50(void **state)
{
    (void)state;
    int n = 50;
    static char targets[50][32]; /* bodies are borrowed until done */

    for (int i = 0; i < n; i++) {
        snprintf(targets[i], sizeof(targets[i]), "/echo?i=%d", i);
        start(i, "POST", targets[i], NULL, targets[i], strlen(targets[i]), 5 * SL_USEC_PER_SEC);
    }
    assert_int_equal(sl_upstream_active(F.up), (size_t)n);
    fx_run_until_results(F.base, F.res, n);
    for (int i = 0; i < n; i++) {
        assert_int_equal(F.res[i].calls, 1);
        assert_int_equal(F.res[i].status, 200);
        fx_body_equals(F.res[i].body, targets[i], strlen(targets[i]));
    }
    assert_int_equal(sl_upstream_active(F.up), 0);
    assert_int_equal(F.received, n);
}

/* A done callback starts a new call and cancels another one. */
static struct sl_upstream_call *victim, *self;

static void on_done_chain(struct sl_upstream_response *resp, void *arg)
{
    fx_on_done(resp, arg);
    sl_upstream_cancel(self); /* a no-op: it is freed after this returns */
    sl_upstream_cancel(victim);
    start(3, "GET", "/echo?chained", NULL, NULL, 0, 5 * SL_USEC_PER_SEC);
}

static void test_done_may_start_and_cancel(void **state)
{
    (void)state;
    char buf[64];
    const struct sl_upstream_request req = {
        .method = "GET", .url = url("/echo?first", buf, sizeof(buf)),
        .timeout_us = 5 * SL_USEC_PER_SEC,
    };

    victim = start(1, "GET", "/slow", NULL, NULL, 0, 5 * SL_USEC_PER_SEC);
    self = sl_upstream_start(F.up, &req, on_done_chain, &F.res[0]);
    assert_non_null(self);
    fx_run_until(F.base, fx_result_done, &F.res[3]);
    assert_int_equal(F.res[0].calls, 1);
    assert_int_equal(F.res[1].calls, 0);
    assert_int_equal(F.res[3].status, 200);
    assert_string_equal(F.uri, "/echo?chained");
    assert_int_equal(sl_upstream_active(F.up), 0);
}

static void test_free_with_calls_under_way(void **state)
{
    (void)state;
    int three = 3;

    for (int i = 0; i < 3; i++)
        start(i, "GET", "/slow", NULL, NULL, 0, 5 * SL_USEC_PER_SEC);
    fx_run_until(F.base, n_received, &three);
    start(3, "POST", "/echo", NULL, "abc", 3, 5 * SL_USEC_PER_SEC); /* not even sent */
    assert_int_equal(sl_upstream_active(F.up), 4);
    sl_upstream_free(F.up);
    F.up = NULL;
    (void)event_base_loop(F.base, EVLOOP_NONBLOCK);
    for (int i = 0; i < 4; i++)
        assert_int_equal(F.res[i].calls, 0);
}

/* https:// never takes the native path: curl's own wording proves who failed. */
static void test_https_goes_to_curl(void **state)
{
    (void)state;
    char buf[64], want[32];
    int port = closed_port();
    const struct sl_upstream_request req = {
        .method = "GET", .url = buf, .timeout_us = 5 * SL_USEC_PER_SEC,
    };

    snprintf(buf, sizeof(buf), "https://127.0.0.1:%d/x", port);
    assert_non_null(sl_upstream_start(F.up, &req, fx_on_done, &F.res[0]));
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    assert_int_equal(F.res[0].error, SL_UPSTREAM_CONNECT);
    snprintf(want, sizeof(want), "127.0.0.1 port %d", port);
    assert_non_null(strstr(F.res[0].detail, want));

    snprintf(buf, sizeof(buf), "http://127.0.0.1:%d/x", port);
    assert_non_null(sl_upstream_start(F.up, &req, fx_on_done, &F.res[1]));
    fx_run_until(F.base, fx_result_done, &F.res[1]);
    assert_int_equal(F.res[1].error, SL_UPSTREAM_CONNECT);
    snprintf(want, sizeof(want), "127.0.0.1:%d: ", port);
    assert_non_null(strstr(F.res[1].detail, want));
}

/* A listener that never accepts: the kernel completes the TCP handshake, no one answers. */
static int silent_listener(int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(fd, 8), 0);
    *port = fx_bound_port(fd);
    return fd;
}

/* One https:// call to `port` with these TLS settings, run to completion in F.res[0]. */
static struct fx_result *https_once(int port, const struct sl_tls_config *tls, int64_t timeout_us)
{
    char buf[64];
    const struct sl_upstream_request req = {
        .method = "GET", .url = buf, .timeout_us = timeout_us, .tls = tls,
    };

    snprintf(buf, sizeof(buf), "https://127.0.0.1:%d/x", port);
    F.res[0].calls = 0;
    assert_non_null(sl_upstream_start(F.up, &req, fx_on_done, &F.res[0]));
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    assert_int_equal(F.res[0].calls, 1);
    assert_int_equal(F.res[0].status, 0);
    return &F.res[0];
}

/* A TLS handshake that never ends sent nothing: a connect failure, not a timeout. */
static void test_tls_handshake_timeout_is_connect(void **state)
{
    (void)state;
    int port, fd = silent_listener(&port);
    struct fx_result *r = https_once(port, NULL, 200 * SL_USEC_PER_MSEC);

    assert_int_equal(r->error, SL_UPSTREAM_CONNECT);
    assert_true(r->duration_us >= 190 * SL_USEC_PER_MSEC);
    close(fd);
}

/* A server that does not speak TLS (the plain HTTP one) breaks the handshake off:
 * retryable like a refused connect, and said to be TLS. */
static void test_tls_handshake_failure(void **state)
{
    (void)state;
    struct fx_result *r = https_once(F.port, NULL, 5 * SL_USEC_PER_SEC);

    assert_int_equal(r->error, SL_UPSTREAM_CONNECT);
    assert_true(strncmp(r->detail, "TLS: ", 5) == 0);
}

/* The route's files reach curl; one it cannot use is a TLS refusal, not retryable. */
static void test_tls_files_refused(void **state)
{
    (void)state;
    static struct sl_tls_config tls; /* 3 KiB: not on the stack */
    int port, fd = silent_listener(&port);
    struct fx_result *r;

    tls.verify = true;
    snprintf(tls.ca_file, sizeof(tls.ca_file), "/nonexistent/ca.pem");
    r = https_once(port, &tls, 5 * SL_USEC_PER_SEC);
    assert_int_equal(r->error, SL_UPSTREAM_TLS);
    assert_true(strncmp(r->detail, "TLS: ", 5) == 0);
    assert_non_null(strstr(r->detail, "/nonexistent/ca.pem"));

    tls.ca_file[0] = '\0';
    snprintf(tls.client_cert, sizeof(tls.client_cert), "/nonexistent/client.pem");
    snprintf(tls.client_key, sizeof(tls.client_key), "/nonexistent/client.key");
    r = https_once(port, &tls, 5 * SL_USEC_PER_SEC);
    assert_int_equal(r->error, SL_UPSTREAM_TLS);
    assert_non_null(strstr(r->detail, "/nonexistent/client.pem"));
    close(fd);
}

static void test_start_rejects_bad_input(void **state)
{
    (void)state;
    const struct sl_upstream_request no_url = {.method = "GET", .url = NULL};
    const struct sl_upstream_request req = {.method = "GET", .url = "http://127.0.0.1:1/"};

    assert_null(sl_upstream_start(F.up, &no_url, fx_on_done, NULL));
    assert_null(sl_upstream_start(F.up, &req, NULL, NULL));
    assert_null(sl_upstream_start(NULL, &req, fx_on_done, NULL));
    assert_int_equal(sl_upstream_active(F.up), 0);
    sl_upstream_cancel(NULL);
    sl_upstream_free(NULL);
}

/* ---- tests: streamed answers (backend.h: head, body_chunk, resume) ------ */

static void stream_error(const char *what)
{
    if (S.error[0] == '\0')
        snprintf(S.error, sizeof(S.error), "%s", what);
}

static void check_stream(void)
{
    if (S.error[0] != '\0')
        fail_msg("stream callback: %s", S.error);
}

static enum sl_upstream_take on_head(struct sl_upstream_response *resp, void *arg)
{
    if (S.in_start)
        stream_error("head called from inside sl_upstream_start");
    if (((struct fx_result *)arg)->calls > 0)
        stream_error("head called after done");
    S.heads++;
    S.head_status = resp->status;
    S.content_length = resp->content_length;
    return S.take;
}

static bool on_chunk(struct sl_upstream_response *resp, void *arg)
{
    size_t n = evbuffer_get_length(resp->body);

    if (S.in_start)
        stream_error("body_chunk called from inside sl_upstream_start");
    if (((struct fx_result *)arg)->calls > 0)
        stream_error("body_chunk called after done");
    if (S.heads != 1 || S.take != SL_TAKE_STREAM)
        stream_error("body_chunk without a head that took the stream");
    if (n == 0)
        stream_error("body_chunk with no bytes");
    S.chunks++;
    if (S.pattern) {
        unsigned char buf[4096];
        int k;

        while ((k = evbuffer_remove(resp->body, buf, sizeof(buf))) > 0) {
            for (int i = 0; i < k; i++)
                if (buf[i] != big_byte(S.total + (size_t)i))
                    stream_error("body_chunk bytes differ from the body sent");
            S.total += (size_t)k;
        }
    } else {
        S.total += n;
        if (evbuffer_add_buffer(S.got, resp->body) != 0)
            stream_error("out of memory");
    }
    return S.chunks != S.pause_at;
}

/* Conditions that also hold once the call ended, so that an early end fails at once. */
static bool heads_n(void *arg)
{
    return S.heads >= *(int *)arg || F.res[0].calls > 0;
}

static bool chunks_n(void *arg)
{
    return S.chunks >= *(int *)arg || F.res[0].calls > 0;
}

/* The call is under way: not ended (yet), or say how it ended. */
static void expect_under_way(void)
{
    if (F.res[0].calls > 0)
        fail_msg("the call ended: error %d (%s), status %d", F.res[0].error, F.res[0].detail,
                 F.res[0].status);
}

static bool flag_set(void *arg)
{
    return *(bool *)arg;
}

static void on_flag_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

/* Turn the loop for `ms` milliseconds. */
static void run_for_ms(int ms)
{
    bool fired = false;
    struct event *t = evtimer_new(F.base, on_flag_timer, &fired);
    struct timeval tv = {0, ms * 1000};

    assert_non_null(t);
    assert_int_equal(evtimer_add(t, &tv), 0);
    fx_run_until(F.base, flag_set, &fired);
    event_free(t);
}

/* A streaming call into F.res[slot], to the streaming server (or the evhttp one). */
static struct sl_upstream_call *start_stream(int slot, int port, const char *target,
                                             size_t max_body)
{
    char buf[128];
    struct sl_upstream_call *call;

    snprintf(buf, sizeof(buf), "http://127.0.0.1:%d%s", port, target);
    const struct sl_upstream_request req = {
        .method = "GET", .url = buf, .timeout_us = 5 * SL_USEC_PER_SEC,
        .head = on_head, .body_chunk = on_chunk, .max_body = max_body,
    };

    F.res[slot].calls = 0;
    evhttp_clear_headers(&F.res[slot].headers);
    evbuffer_drain(F.res[slot].body, evbuffer_get_length(F.res[slot].body));
    S.in_start = true;
    call = sl_upstream_start(F.up, &req, fx_on_done, &F.res[slot]);
    S.in_start = false;
    assert_non_null(call);
    return call;
}

/* Done's body, after what body_chunk took, is `want`. */
static void expect_streamed(const char *want)
{
    assert_int_equal(evbuffer_add_buffer(S.got, F.res[0].body), 0);
    fx_body_equals(S.got, want, strlen(want));
}

/* An answer that arrives whole goes straight to done: no head, no body_chunk. */
static void test_stream_whole_answer_skips_head(void **state)
{
    (void)state;
    start_stream(0, F.port, "/echo", 0);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    check_stream();
    assert_int_equal(F.res[0].error, SL_UPSTREAM_OK);
    assert_int_equal(F.res[0].status, 200);
    assert_int_equal(S.heads, 0);
    assert_int_equal(S.chunks, 0);
}

/*
 * Head once with its Content-Length, the bytes that came through
 * body_chunk, the last ones with done; the connection is reused. A
 * streamed body is not held to max_body (that cap is for bodies taken
 * whole), even when its first bytes come with the head.
 */
static void test_stream_content_length(void **state)
{
    int one = 1;

    (void)state;
    F.sraw_reply = "HTTP/1.1 201 Made\r\nContent-Length: 10\r\nX-A: b\r\n\r\nhello";
    start_stream(0, F.sraw_port, "/cl", 4);
    fx_run_until(F.base, chunks_n, &one);
    expect_under_way();
    check_stream();
    assert_int_equal(S.heads, 1);
    assert_int_equal(S.head_status, 201);
    assert_int_equal(S.content_length, 10);
    fx_body_equals(S.got, "hello", 5);
    assert_int_equal(F.res[0].calls, 0);

    stream_write("world");
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    check_stream();
    assert_int_equal(F.res[0].error, SL_UPSTREAM_OK);
    assert_int_equal(F.res[0].status, 201);
    assert_string_equal(F.res[0].reason, "Made");
    assert_string_equal(fx_header_value(&F.res[0].headers, "X-A"), "b");
    assert_int_equal(S.heads, 1);
    expect_streamed("helloworld");

    /* The connection was kept: the next call takes it. */
    F.sraw_reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    start_stream(0, F.sraw_port, "/again", 0);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    assert_int_equal(F.res[0].status, 200);
    assert_int_equal(F.sraw_accepted, 1);
    assert_int_equal(F.sraw_requests, 2);
}

/* Chunked and close-delimited bodies have no length (-1). */
static void test_stream_unknown_length(void **state)
{
    int one = 1;

    (void)state;
    F.sraw_reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    start_stream(0, F.sraw_port, "/chunked", 0);
    fx_run_until(F.base, chunks_n, &one);
    expect_under_way();
    check_stream();
    assert_int_equal(S.heads, 1);
    assert_int_equal(S.content_length, -1);
    stream_write("6\r\n world\r\n0\r\n\r\n");
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    check_stream();
    assert_int_equal(F.res[0].error, SL_UPSTREAM_OK);
    assert_int_equal(S.heads, 1);
    expect_streamed("hello world");

    S.heads = S.chunks = 0;
    S.total = 0;
    evbuffer_drain(S.got, evbuffer_get_length(S.got));
    F.sraw_reply = "HTTP/1.1 200 OK\r\nX-A: b\r\n\r\nhello";
    start_stream(0, F.sraw_port, "/eof", 0);
    fx_run_until(F.base, chunks_n, &one);
    expect_under_way();
    check_stream();
    assert_int_equal(S.heads, 1);
    assert_int_equal(S.content_length, -1);
    stream_write_close(" world");
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    check_stream();
    assert_int_equal(F.res[0].error, SL_UPSTREAM_OK);
    assert_int_equal(F.res[0].status, 200);
    expect_streamed("hello world");
}

/*
 * body_chunk returning false pauses the call: nothing more is handed over
 * and the upstream's writes back up, until resume; then the rest comes,
 * byte for byte.
 */
static void test_stream_pause_resume(void **state)
{
    int one = 1;
    size_t total;
    struct sl_upstream_call *call;

    (void)state;
    F.sraw_big = true;
    S.pattern = true;
    S.pause_at = 1;
    call = start_stream(0, F.sraw_port, "/big", 0);
    fx_run_until(F.base, chunks_n, &one);
    expect_under_way();
    check_stream();
    assert_int_equal(S.content_length, STREAM_BIG);

    run_for_ms(100);
    check_stream();
    assert_int_equal(S.chunks, 1);
    assert_int_equal(F.res[0].calls, 0);
    total = S.total;
    /* The socket buffers are full: the server cannot write the rest. */
    assert_non_null(F.sraw_bev);
    assert_true(evbuffer_get_length(bufferevent_get_output(F.sraw_bev)) > 0);
    assert_true(F.big_added - evbuffer_get_length(bufferevent_get_output(F.sraw_bev)) <
                STREAM_BIG);
    run_for_ms(20);
    assert_int_equal(S.chunks, 1);
    assert_int_equal(S.total, total);

    sl_upstream_resume(call);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    check_stream();
    assert_int_equal(F.res[0].error, SL_UPSTREAM_OK);
    assert_int_equal(F.res[0].status, 200);
    assert_true(S.chunks > 1);
    /* The last bytes may come with done. */
    for (size_t i = 0, n = evbuffer_get_length(F.res[0].body); i < n; i++)
        assert_int_equal(evbuffer_pullup(F.res[0].body, -1)[i], big_byte(S.total + i));
    assert_int_equal(S.total + evbuffer_get_length(F.res[0].body), STREAM_BIG);
}

/* SL_TAKE_NONE: the call ends at once with its head, OK; the half-read connection goes. */
static void test_stream_take_none(void **state)
{
    (void)state;
    F.sraw_reply = "HTTP/1.1 503 Busy\r\nContent-Length: 100\r\nX-A: b\r\n\r\nhello";
    S.take = SL_TAKE_NONE;
    start_stream(0, F.sraw_port, "/none", 0);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    check_stream();
    assert_int_equal(S.heads, 1);
    assert_int_equal(S.chunks, 0);
    assert_int_equal(F.res[0].error, SL_UPSTREAM_OK);
    assert_int_equal(F.res[0].status, 503);
    assert_string_equal(fx_header_value(&F.res[0].headers, "X-A"), "b");
    fx_body_equals(F.res[0].body, NULL, 0);
    assert_int_equal(sl_upstream_active(F.up), 0);

    /* Not reused: the next call opens a new connection. */
    F.sraw_reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    start_stream(0, F.sraw_port, "/after", 0);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    assert_int_equal(F.res[0].status, 200);
    assert_int_equal(F.sraw_accepted, 2);
}

/*
 * SL_TAKE_WHOLE holds the body for done under max_body: over it the call
 * ends SL_UPSTREAM_TOO_LARGE, whether the first bytes (with the head), the
 * next ones or the last ones pass it; under it the whole body comes with done.
 */
static void test_stream_take_whole_capped(void **state)
{
    static const char first[] = "HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n"
                                "0123456789012345678901234567890123456789012"; /* 43 */
    static char tail[300];
    size_t caps[] = {20, 150, 299};
    int one = 1;

    (void)state;
    S.take = SL_TAKE_WHOLE;
    F.sraw_reply = first;
    for (size_t i = 0; i < SL_ARRAY_LEN(caps); i++) {
        S.heads = 0;
        start_stream(0, F.sraw_port, "/over", caps[i]);
        fx_run_until(F.base, heads_n, &one);
        if (caps[i] != 20)
            expect_under_way();
        if (caps[i] == 150) {
            memset(tail, 'x', 150);
            tail[150] = '\0';
            stream_write(tail); /* 193 bytes of 300 */
        } else if (caps[i] == 299) {
            memset(tail, 'x', 257);
            tail[257] = '\0';
            stream_write(tail); /* all 300 */
        }
        fx_run_until(F.base, fx_result_done, &F.res[0]);
        if (F.res[0].error != SL_UPSTREAM_TOO_LARGE)
            fail_msg("cap %zu: error %d (%s)", caps[i], F.res[0].error, F.res[0].detail);
        assert_int_equal(F.res[0].status, 0);
        assert_true(strlen(F.res[0].detail) > 0);
    }
    assert_int_equal(F.sraw_accepted, 3);

    /* At the cap: the whole body with done. */
    S.heads = 0;
    start_stream(0, F.sraw_port, "/under", 300);
    fx_run_until(F.base, heads_n, &one);
    expect_under_way();
    memset(tail, 'x', 257);
    tail[257] = '\0';
    stream_write(tail);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    check_stream();
    assert_int_equal(F.res[0].error, SL_UPSTREAM_OK);
    assert_int_equal(evbuffer_get_length(F.res[0].body), 300);
    assert_int_equal(S.chunks, 0);
}

/* Without streaming, max_body caps every body, one that arrives whole too. */
static void test_max_body_without_streaming(void **state)
{
    char buf[512];
    const struct sl_upstream_request req = {
        .method = "POST", .url = url("/echo", buf, sizeof(buf)), .body = "0123456789",
        .body_len = 10, .timeout_us = 5 * SL_USEC_PER_SEC, .max_body = 9,
    };

    (void)state;
    assert_non_null(sl_upstream_start(F.up, &req, fx_on_done, &F.res[0]));
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    assert_int_equal(F.res[0].error, SL_UPSTREAM_TOO_LARGE);

    F.res[0].calls = 0;
    call_once("GET", "/big", NULL, NULL, 0); /* no cap */
    assert_int_equal(F.res[0].error, SL_UPSTREAM_OK);
}

/* A reset after the head and some body were handed over: done with an error. */
static void test_stream_reset_mid_body(void **state)
{
    int one = 1;

    (void)state;
    F.sraw_reply = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello";
    start_stream(0, F.sraw_port, "/reset", 0);
    fx_run_until(F.base, chunks_n, &one);
    expect_under_way();
    fx_body_equals(S.got, "hello", 5);
    stream_reset();
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    check_stream();
    if (F.res[0].error != SL_UPSTREAM_PROTOCOL)
        fail_msg("error %d (%s)", F.res[0].error, F.res[0].detail);
    assert_true(strlen(F.res[0].detail) > 0);
    fx_body_equals(F.res[0].body, NULL, 0);
    assert_int_equal(S.heads, 1);
    assert_int_equal(S.chunks, 1);
    assert_int_equal(sl_upstream_active(F.up), 0);
}

/* Each case on the native client, then on libcurl. */
#define T(fn)                                                         \
    cmocka_unit_test_setup_teardown(fn, setup, teardown),             \
    {#fn " (curl)", fn, setup_curl, teardown, NULL}

int main(void)
{
    /* A write to a peer that already closed must fail, not kill the test. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url),
        T(test_get_forwarded_exactly),
        T(test_no_accept_added),
        T(test_post_body),
        T(test_post_empty_body),
        T(test_put_patch_with_bodies),
        T(test_large_request_body_no_expect),
        T(test_response_captured),
        T(test_big_response),
        T(test_head),
        T(test_429_and_redirect),
        T(test_interim_responses_skipped),
        T(test_timeout),
        T(test_connect_refused),
        T(test_connect_timeout_is_connect),
        T(test_protocol_errors),
        T(test_malformed_answers_alike),
        T(test_sent_reported_once),
        T(test_cancel),
        T(test_concurrent_50),
        T(test_done_may_start_and_cancel),
        T(test_free_with_calls_under_way),
        T(test_start_rejects_bad_input),
        T(test_stream_whole_answer_skips_head),
        T(test_stream_content_length),
        T(test_stream_unknown_length),
        T(test_stream_pause_resume),
        T(test_stream_take_none),
        T(test_stream_take_whole_capped),
        T(test_max_body_without_streaming),
        T(test_stream_reset_mid_body),
        cmocka_unit_test_setup_teardown(test_https_goes_to_curl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_handshake_timeout_is_connect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_handshake_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_files_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
