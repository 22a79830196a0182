/*
 * test_h1client.c - the native HTTP/1.1 client against a scripted TCP server
 * in this process (same event_base): connection reuse, the keep-alive race,
 * body framings, the idle pool and its cap, header limits, exact request
 * bytes. The shared upstream contract is tested in test_upstream.c.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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
#include "h1client.h"
#include "http_fixture.h"
#include "sluice.h"

#define MAX_RESULTS 8
#define MAX_CONNS 16
#define BIG_BODY (16 * 1024 * 1024)

/* How the server treats each complete request. */
enum srv_mode {
    SRV_REPLY,         /* answer with F.reply, keep the connection */
    SRV_REPLY_CLOSE,   /* answer, then close */
    SRV_HANGUP,        /* close without answering */
    SRV_STALL,         /* never answer */
    SRV_TRICKLE,       /* answer one byte per loop turn */
    SRV_EARLY,         /* answer as soon as the head is in, never read the body */
    SRV_STREAM,        /* answer with F.reply, then the test writes (stream_write) */
    SRV_BIG,           /* a STREAM_BIG-byte pattern body, written as the socket takes it */
};

struct fixture {
    struct event_base *base;
    struct sl_h1client *h1;
    struct fx_listener srv;
    int port;
    struct bufferevent *conns[MAX_CONNS];
    int accepted;
    int client_closed;                 /* connections the client closed */
    int requests;
    enum srv_mode mode;
    const char *reply;
    struct evbuffer *last_request;     /* raw bytes, body included */
    struct event *trickle;
    struct bufferevent *trickle_bev;
    size_t trickle_pos;
    struct fx_result res[MAX_RESULTS];
    bool in_start;
    struct bufferevent *stream_bev;    /* SRV_STREAM, SRV_BIG: the answering connection */
    size_t big_added;                  /* SRV_BIG: body bytes put in its output so far */
};

static struct fixture F;

/* What the streaming callbacks (backend.h: head, body_chunk) saw. */
struct stream {
    enum sl_upstream_take take;        /* what the head callback answers */
    int pause_at;                      /* body_chunk number that returns false (0: none) */
    bool pattern;                      /* check the bytes against big_byte(), keep none */
    int heads;
    int head_status;
    int64_t content_length;
    int chunks;
    size_t total;                      /* body bytes handed to body_chunk */
    struct evbuffer *got;              /* ...and the bytes, unless `pattern` */
    char error[128];                   /* what a callback found wrong */
};

static struct stream S;

/* ---- helpers ------------------------------------------------------------ */

static void on_done(struct sl_upstream_response *resp, void *arg)
{
    struct fx_result *r = arg;

    if (F.in_start)
        fail_msg("done called from inside sl_h1client_start");
    evbuffer_drain(r->body, evbuffer_get_length(r->body)); /* the last answer only */
    fx_on_done(resp, r);
}

static bool client_closed_n(void *arg)
{
    return F.client_closed >= *(int *)arg;
}

static bool requests_n(void *arg)
{
    return F.requests >= *(int *)arg;
}

static bool pool_empty(void *arg)
{
    (void)arg;
    return sl_h1client_idle(F.h1) == 0;
}

static void reset_result(struct fx_result *r)
{
    r->calls = 0;
    r->error = SL_UPSTREAM_OK;
    r->status = 0;
    r->detail[0] = '\0';
    r->duration_us = 0;
    evhttp_clear_headers(&r->headers);
    evbuffer_drain(r->body, evbuffer_get_length(r->body));
}

/* Start a call into F.res[slot]; done must not run before this returns. */
static void start_url(int slot, const char *method, const char *url,
                      const struct evkeyvalq *hdrs, const void *body, size_t len,
                      int64_t timeout_us)
{
    const struct sl_upstream_request req = {
        .method = method, .url = url, .headers = hdrs,
        .body = body, .body_len = len, .timeout_us = timeout_us,
    };

    reset_result(&F.res[slot]);
    F.in_start = true;
    struct sl_h1call *call = sl_h1client_start(F.h1, &req, on_done, &F.res[slot]);
    F.in_start = false;
    assert_non_null(call);
}

static void start(int slot, const char *method, const char *target)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", F.port, target);
    start_url(slot, method, url, NULL, NULL, 0, 5 * SL_USEC_PER_SEC);
}

/* One call to completion; returns its result. */
static struct fx_result *call_once(const char *method, const char *target)
{
    start(0, method, target);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    assert_int_equal(F.res[0].calls, 1);
    return &F.res[0];
}

static void expect_ok(const struct fx_result *r, int status, const char *body)
{
    assert_int_equal(r->calls, 1);
    if (r->error != SL_UPSTREAM_OK)
        fail_msg("error %d: %s", r->error, r->detail);
    assert_int_equal(r->status, status);
    fx_body_equals(r->body, body, strlen(body));
}

/* ---- the scripted server ------------------------------------------------ */

static int conn_slot(struct bufferevent *bev)
{
    for (int i = 0; i < MAX_CONNS; i++)
        if (F.conns[i] == bev)
            return i;
    return -1;
}

static void srv_close(struct bufferevent *bev)
{
    int i = conn_slot(bev);
    if (i >= 0)
        F.conns[i] = NULL;
    if (F.stream_bev == bev)
        F.stream_bev = NULL;
    if (F.trickle_bev == bev) {
        evtimer_del(F.trickle);
        F.trickle_bev = NULL;
    }
    bufferevent_free(bev);
}

/* The server hangs up on every connection, as an idle timeout would. */
static void srv_close_all(void)
{
    for (int i = 0; i < MAX_CONNS; i++)
        if (F.conns[i] != NULL)
            srv_close(F.conns[i]);
}

/* Bytes of the first complete request in `in` (head + Content-Length), or 0. */
static size_t request_length(struct evbuffer *in)
{
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0)
        return 0;
    size_t head = (size_t)end.pos + 4;
    char *text = (char *)evbuffer_pullup(in, (ev_ssize_t)head);
    size_t body = 0;
    for (size_t i = 0; i + 16 < head; i++)
        if (strncasecmp(text + i, "\r\nContent-Length:", 17) == 0)
            body = strtoul(text + i + 17, NULL, 10);
    return evbuffer_get_length(in) >= head + body ? head + body : 0;
}

static void srv_on_written_close(struct bufferevent *bev, void *arg)
{
    (void)arg;
    srv_close(bev);
}

static void srv_on_trickle(evutil_socket_t fd, short what, void *arg)
{
    const struct timeval zero = {0, 0};
    (void)fd;
    (void)what;
    (void)arg;
    if (F.trickle_bev == NULL || F.reply[F.trickle_pos] == '\0')
        return;
    assert_int_equal(send(bufferevent_getfd(F.trickle_bev), F.reply + F.trickle_pos++, 1, 0), 1);
    assert_int_equal(evtimer_add(F.trickle, &zero), 0);
}

#define STREAM_BIG (16 * 1024 * 1024) /* more than loopback's socket buffers hold */

static unsigned char big_byte(size_t i)
{
    return (unsigned char)(i % 251 + i / 65536);
}

/* SRV_BIG: keep 256 KiB queued until the whole body was queued. */
static void srv_big_fill(struct bufferevent *bev, void *arg)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    unsigned char block[16384];

    (void)arg;
    while (evbuffer_get_length(out) < 256 * 1024 && F.big_added < STREAM_BIG) {
        size_t n = STREAM_BIG - F.big_added < sizeof(block) ? STREAM_BIG - F.big_added
                                                             : sizeof(block);

        for (size_t k = 0; k < n; k++)
            block[k] = big_byte(F.big_added + k);
        assert_int_equal(evbuffer_add(out, block, n), 0);
        F.big_added += n;
    }
}

/* Body bytes the SRV_BIG server's socket took (the rest waits in its output). */
static size_t big_sent(void)
{
    assert_non_null(F.stream_bev);
    return F.big_added - evbuffer_get_length(bufferevent_get_output(F.stream_bev));
}

/* More of an SRV_STREAM answer. */
static void stream_write(const char *data)
{
    assert_non_null(F.stream_bev);
    assert_int_equal(bufferevent_write(F.stream_bev, data, strlen(data)), 0);
}

/* The SRV_STREAM server writes its last bytes, then closes. */
static void stream_write_close(const char *data)
{
    assert_non_null(F.stream_bev);
    bufferevent_setcb(F.stream_bev, NULL, srv_on_written_close, NULL, NULL);
    stream_write(data);
}

/* The SRV_STREAM server resets its connection (RST, not FIN). */
static void stream_reset(void)
{
    struct linger lg = {1, 0};

    assert_non_null(F.stream_bev);
    assert_int_equal(setsockopt(bufferevent_getfd(F.stream_bev), SOL_SOCKET, SO_LINGER, &lg,
                                sizeof(lg)), 0);
    srv_close(F.stream_bev);
}

static void srv_on_read(struct bufferevent *bev, void *arg);
static void srv_on_event(struct bufferevent *bev, short what, void *arg);

static void srv_answer(struct bufferevent *bev)
{
    char head[128];

    const struct timeval zero = {0, 0};

    switch (F.mode) {
    case SRV_REPLY:
        assert_int_equal(bufferevent_write(bev, F.reply, strlen(F.reply)), 0);
        break;
    case SRV_REPLY_CLOSE:
        bufferevent_setcb(bev, NULL, srv_on_written_close, NULL, NULL);
        assert_int_equal(bufferevent_write(bev, F.reply, strlen(F.reply)), 0);
        break;
    case SRV_HANGUP:
        srv_close(bev);
        break;
    case SRV_STREAM:
        F.stream_bev = bev;
        assert_int_equal(bufferevent_write(bev, F.reply, strlen(F.reply)), 0);
        break;
    case SRV_BIG:
        F.stream_bev = bev;
        F.big_added = 0;
        snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", STREAM_BIG);
        assert_int_equal(bufferevent_write(bev, head, strlen(head)), 0);
        bufferevent_setwatermark(bev, EV_WRITE, 64 * 1024, 0);
        bufferevent_setcb(bev, srv_on_read, srv_big_fill, srv_on_event, NULL);
        srv_big_fill(bev, NULL);
        break;
    case SRV_TRICKLE:
        F.trickle_bev = bev;
        F.trickle_pos = 0;
        assert_int_equal(evtimer_add(F.trickle, &zero), 0);
        break;
    default:
        break;
    }
}

static void srv_on_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    (void)arg;

    if (F.mode == SRV_EARLY) {
        if (evbuffer_search(in, "\r\n\r\n", 4, NULL).pos < 0)
            return;
        F.requests++;
        assert_int_equal(bufferevent_disable(bev, EV_READ), 0);
        assert_int_equal(bufferevent_write(bev, F.reply, strlen(F.reply)), 0);
        return;
    }
    for (int i = 0; i < 16; i++) {
        size_t n = request_length(in);
        if (n == 0)
            return;
        F.requests++;
        evbuffer_drain(F.last_request, evbuffer_get_length(F.last_request));
        assert_int_equal(evbuffer_remove_buffer(in, F.last_request, n), (int)n);
        srv_answer(bev);
        if (conn_slot(bev) < 0 || F.mode == SRV_REPLY_CLOSE)
            return; /* closed, or closing */
    }
}

static void srv_on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        F.client_closed++;
        srv_close(bev);
    }
}

static void srv_on_conn(struct bufferevent *bev)
{
    int i = conn_slot(NULL);

    if (i < 0)
        fail_msg("too many server connections");
    F.conns[i] = bev;
    F.accepted++;
    bufferevent_setcb(bev, srv_on_read, NULL, srv_on_event, NULL);
    assert_int_equal(bufferevent_enable(bev, EV_READ), 0);
}

static void srv_start(void)
{
    F.port = fx_listen(&F.srv, F.base, srv_on_conn, 64);
    F.trickle = evtimer_new(F.base, srv_on_trickle, NULL);
    assert_non_null(F.trickle);
}

/* ---- fixture ------------------------------------------------------------ */

static const char ok_reply[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof(F));
    F.base = event_base_new();
    assert_non_null(F.base);
    F.last_request = evbuffer_new();
    assert_non_null(F.last_request);
    fx_results_init(F.res, MAX_RESULTS);
    srv_start();
    F.mode = SRV_REPLY;
    F.reply = ok_reply;
    F.h1 = sl_h1client_new(F.base, 8);
    assert_non_null(F.h1);
    memset(&S, 0, sizeof(S));
    S.take = SL_TAKE_STREAM;
    S.got = evbuffer_new();
    assert_non_null(S.got);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sl_h1client_free(F.h1);
    srv_close_all();
    event_free(F.trickle);
    evconnlistener_free(F.srv.lev);
    fx_results_free(F.res, MAX_RESULTS);
    evbuffer_free(F.last_request);
    evbuffer_free(S.got);
    event_base_free(F.base);
    return 0;
}

/* ---- tests: URLs and request bytes -------------------------------------- */

/*
 * Each URL twice, with a good one in between: the client caches the last
 * authority it parsed, and a cached answer must equal a fresh one.
 */
static void handles(struct sl_h1client *c, const char *url, bool want)
{
    for (int i = 0; i < 2; i++) {
        if (sl_h1client_handles(c, url) != want)
            fail_msg("%s: handled %s on try %d", url, want ? "false" : "true", i + 1);
        assert_true(sl_h1client_handles(c, "http://other:9/"));
    }
}

static void test_handles(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct sl_h1client *c = sl_h1client_new(base, 1);

    assert_non_null(c);
    handles(c, "http://h:1/p", true);
    handles(c, "HTTP://h", true);
    handles(c, "http://h?q", true);
    handles(c, "http://[::1]:8080/x", true);
    handles(c, "http://h:65535/", true);
    assert_false(sl_h1client_handles(c, NULL));
    handles(c, "https://h/", false);
    handles(c, "ftp://h/", false);
    handles(c, "http://u:p@h/", false);
    handles(c, "http:///p", false);
    handles(c, "http://h:0/", false);
    handles(c, "http://h:65536/", false);
    handles(c, "http://h:/", false);
    handles(c, "http://h:8x/", false);
    handles(c, "http://[::1/", false);
    handles(c, "http://[::1]x/", false);
    handles(c, "http://[fe80::1%25eth0]/", false);
    handles(c, "http://h h/", false);
    sl_h1client_free(c);
    event_base_free(base);
}

static void expect_request(const char *want)
{
    size_t len = evbuffer_get_length(F.last_request);
    char *got = (char *)evbuffer_pullup(F.last_request, -1);

    if (len != strlen(want) || memcmp(got, want, len) != 0)
        fail_msg("request was:\n%.*s\nwanted:\n%s", (int)len, got, want);
}

static void test_request_bytes(void **state)
{
    (void)state;
    char url[128], want[512];
    struct evkeyvalq h;

    TAILQ_INIT(&h);
    evhttp_add_header(&h, "X-A", "1");
    evhttp_add_header(&h, "X-Empty", "");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/base/p%%20q?x=%%2F&y#frag", F.port);
    start_url(0, "POST", url, &h, "abc", 3, 5 * SL_USEC_PER_SEC);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    expect_ok(&F.res[0], 200, "ok");
    snprintf(want, sizeof(want),
             "POST /base/p%%20q?x=%%2F&y HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-A: 1\r\n"
             "X-Empty:\r\nContent-Length: 3\r\n\r\nabc", F.port);
    expect_request(want);

    /* preserve_host: the client's Host is the only one; an empty path is "/" */
    evhttp_clear_headers(&h);
    evhttp_add_header(&h, "Host", "client.example");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d?q=1", F.port);
    start_url(0, "GET", url, &h, NULL, 0, 5 * SL_USEC_PER_SEC);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    expect_ok(&F.res[0], 200, "ok");
    expect_request("GET /?q=1 HTTP/1.1\r\nHost: client.example\r\n\r\n");
    evhttp_clear_headers(&h);

    /* PUT without a body still states its length; DELETE does not */
    start(0, "PUT", "/r");
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    snprintf(want, sizeof(want), "PUT /r HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 0\r\n\r\n",
             F.port);
    expect_request(want);
    start(0, "DELETE", "/r");
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    snprintf(want, sizeof(want), "DELETE /r HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", F.port);
    expect_request(want);
    assert_int_equal(F.accepted, 1);
}

/* ---- tests: the pool ---------------------------------------------------- */

static void test_sequential_calls_share_one_connection(void **state)
{
    (void)state;
    for (int i = 0; i < 5; i++) {
        expect_ok(call_once("GET", "/seq"), 200, "ok");
        assert_int_equal(sl_h1client_idle(F.h1), 1);
    }
    assert_int_equal(F.accepted, 1);
    assert_int_equal(F.requests, 5);
    assert_int_equal(sl_h1client_active(F.h1), 0);
}

/*
 * The server closes an idle connection just as the next request goes out:
 * the client does not send it again on its own (a resend is a dispatch the
 * caller must count); it says the connection closed before an answer.
 */
static void test_keepalive_race_is_reported_not_resent(void **state)
{
    (void)state;
    expect_ok(call_once("GET", "/first"), 200, "ok");
    srv_close_all(); /* FIN on its way; the client's loop has not seen it */
    assert_int_equal(sl_h1client_idle(F.h1), 1);

    struct fx_result *r = call_once("GET", "/second");
    assert_int_equal(r->error, SL_UPSTREAM_CLOSED);
    assert_int_equal(r->status, 0);
    assert_non_null(strstr(r->detail, "closed the connection before answering"));
    assert_int_equal(F.accepted, 1);
    assert_int_equal(sl_h1client_idle(F.h1), 0);
    /* The next call opens a fresh connection. */
    expect_ok(call_once("GET", "/third"), 200, "ok");
    assert_int_equal(F.accepted, 2);
}

static void test_hangup_after_the_request_is_closed(void **state)
{
    (void)state;
    F.mode = SRV_HANGUP; /* reads the request, closes without a byte */

    struct fx_result *r = call_once("GET", "/x");
    assert_int_equal(r->error, SL_UPSTREAM_CLOSED);
    assert_int_equal(r->status, 0);
    assert_int_equal(F.accepted, 1);
    assert_int_equal(F.requests, 1);
    assert_int_equal(sl_h1client_idle(F.h1), 0);
}

static void test_idle_close_noticed(void **state)
{
    (void)state;
    expect_ok(call_once("GET", "/first"), 200, "ok");
    srv_close_all();
    fx_run_until(F.base, pool_empty, NULL);

    expect_ok(call_once("GET", "/second"), 200, "ok");
    assert_int_equal(F.accepted, 2);
}

static void test_pool_cap(void **state)
{
    (void)state;
    int two = 2;

    sl_h1client_free(F.h1);
    F.h1 = sl_h1client_new(F.base, 2);
    assert_non_null(F.h1);
    for (int i = 0; i < 4; i++)
        start(i, "GET", "/cap");
    assert_int_equal(sl_h1client_active(F.h1), 4);
    fx_run_until_results(F.base, F.res, 4);
    for (int i = 0; i < 4; i++)
        expect_ok(&F.res[i], 200, "ok");
    assert_int_equal(F.accepted, 4);
    assert_int_equal(sl_h1client_idle(F.h1), 2);
    fx_run_until(F.base, client_closed_n, &two); /* the two over the cap were closed */

    for (int i = 0; i < 4; i++)
        start(i, "GET", "/cap");
    fx_run_until_results(F.base, F.res, 4);
    assert_int_equal(F.accepted, 6); /* two reused, two new */
    assert_int_equal(sl_h1client_idle(F.h1), 2);
}

static void test_no_pool_keeps_nothing(void **state)
{
    (void)state;
    int one = 1;

    sl_h1client_free(F.h1);
    F.h1 = sl_h1client_new(F.base, 0);
    assert_non_null(F.h1);
    expect_ok(call_once("GET", "/a"), 200, "ok");
    assert_int_equal(sl_h1client_idle(F.h1), 0);
    fx_run_until(F.base, client_closed_n, &one);
}

/* ---- tests: framings ---------------------------------------------------- */

static void test_chunked(void **state)
{
    (void)state;
    F.reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n";
    struct fx_result *r = call_once("GET", "/chunked");
    expect_ok(r, 200, "hello world");
    fx_expect_headers(&r->headers, (const char *const[]){"Transfer-Encoding", "chunked", NULL});

    F.reply = ok_reply;
    expect_ok(call_once("GET", "/after"), 200, "ok");
    assert_int_equal(F.accepted, 1);
}

static void test_read_until_close(void **state)
{
    (void)state;
    F.mode = SRV_REPLY_CLOSE;
    F.reply = "HTTP/1.1 200 OK\r\nX-A: b\r\n\r\nuntil the end";
    struct fx_result *r = call_once("GET", "/eof");
    expect_ok(r, 200, "until the end");
    fx_expect_headers(&r->headers, (const char *const[]){"X-A", "b", NULL});
    assert_int_equal(sl_h1client_idle(F.h1), 0);
}

static void test_connection_close_not_pooled(void **state)
{
    (void)state;
    int one = 1, two = 2;

    F.reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    expect_ok(call_once("GET", "/a"), 200, "ok");
    assert_int_equal(sl_h1client_idle(F.h1), 0);
    fx_run_until(F.base, client_closed_n, &one); /* the client closed, not the server */

    /* HTTP/1.0 without keep-alive: the same */
    F.reply = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
    expect_ok(call_once("GET", "/b"), 200, "ok");
    assert_int_equal(sl_h1client_idle(F.h1), 0);
    fx_run_until(F.base, client_closed_n, &two);

    /* HTTP/1.0 that asks for keep-alive is kept */
    F.reply = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok";
    expect_ok(call_once("GET", "/c"), 200, "ok");
    assert_int_equal(sl_h1client_idle(F.h1), 1);
    assert_int_equal(F.accepted, 3);
}

/* HEAD, 204 and 304 have no body even when their fields announce one. */
static void test_bodiless_answers_keep_framing(void **state)
{
    (void)state;
    F.reply = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
    struct fx_result *r = call_once("HEAD", "/h");
    expect_ok(r, 200, "");
    assert_string_equal(fx_header_value(&r->headers, "Content-Length"), "5");

    F.reply = "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n";
    expect_ok(call_once("GET", "/304"), 304, "");
    F.reply = "HTTP/1.1 204 No Content\r\n\r\n";
    expect_ok(call_once("DELETE", "/204"), 204, "");
    F.reply = ok_reply;
    expect_ok(call_once("GET", "/after"), 200, "ok");
    assert_int_equal(F.accepted, 1);
}

/* Every field and chunk split across reads, one byte at a time. */
static void test_trickled_answer(void **state)
{
    (void)state;
    F.mode = SRV_TRICKLE;
    F.reply = "HTTP/1.1 200 OK\r\nX-Folded: a\r\n  b\r\nX-Empty:\r\nX-Sp: v  \r\n"
              "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    struct fx_result *r = call_once("GET", "/slowly");
    expect_ok(r, 200, "abc");
    fx_expect_headers(&r->headers,
                   (const char *const[]){"X-Folded", "a b", "X-Empty", "", "X-Sp", "v",
                                         "Transfer-Encoding", "chunked", NULL});
    assert_int_equal(sl_h1client_idle(F.h1), 1);
}

/* The upstream answered before taking the whole body: never reuse that. */
static void test_early_answer_not_pooled(void **state)
{
    (void)state;
    char *big = calloc(1, BIG_BODY);
    char url[64];

    assert_non_null(big);
    F.mode = SRV_EARLY;
    F.reply = "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n";
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/upload", F.port);
    start_url(0, "POST", url, NULL, big, BIG_BODY, 5 * SL_USEC_PER_SEC);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    expect_ok(&F.res[0], 413, "");
    assert_int_equal(sl_h1client_idle(F.h1), 0);
    free(big);
}

/* ---- tests: limits and failures ----------------------------------------- */

static char big_reply[128 * 1024];

/* An answer with n fields "X-Big-i" of `len` bytes each. */
static const char *reply_with_fields(int n, size_t len)
{
    size_t pos = (size_t)snprintf(big_reply, sizeof(big_reply), "HTTP/1.1 200 OK\r\n");

    for (int i = 0; i < n; i++) {
        pos += (size_t)snprintf(big_reply + pos, sizeof(big_reply) - pos, "X-Big-%d: ", i);
        assert_true(pos + len + 64 < sizeof(big_reply));
        memset(big_reply + pos, 'a' + i % 26, len);
        pos += len;
        pos += (size_t)snprintf(big_reply + pos, sizeof(big_reply) - pos, "\r\n");
    }
    snprintf(big_reply + pos, sizeof(big_reply) - pos, "Content-Length: 2\r\n\r\nok");
    return big_reply;
}

static void test_header_cap(void **state)
{
    (void)state;
    F.reply = reply_with_fields(70, 1000); /* ~70 KiB */
    struct fx_result *r = call_once("GET", "/huge");
    assert_int_equal(r->error, SL_UPSTREAM_PROTOCOL);
    assert_int_equal(r->status, 0);
    assert_non_null(strstr(r->detail, "64 KiB"));
    assert_int_equal(sl_h1client_idle(F.h1), 0);
}

/* Answers have their own 64 KiB head limit, whatever the frontend's (as low as 1 KiB). */
static void test_header_limit_independent_of_frontend(void **state)
{
    (void)state;
    char name[16], want[1001];

    F.reply = reply_with_fields(20, 1000);
    struct fx_result *r = call_once("GET", "/large");
    expect_ok(r, 200, "ok");
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof(name), "X-Big-%d", i);
        memset(want, 'a' + i % 26, 1000);
        want[1000] = '\0';
        assert_non_null(fx_header_value(&r->headers, name));
        assert_string_equal(fx_header_value(&r->headers, name), want);
    }
}

static void test_localhost_resolves(void **state)
{
    (void)state;
    char url[64];

    snprintf(url, sizeof(url), "http://localhost:%d/named", F.port);
    start_url(0, "GET", url, NULL, NULL, 0, 5 * SL_USEC_PER_SEC);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    expect_ok(&F.res[0], 200, "ok");
    assert_int_equal(F.requests, 1);
    char want[64];
    snprintf(want, sizeof(want), "Host: localhost:%d\r\n", F.port);
    assert_true(evbuffer_search(F.last_request, want, strlen(want), NULL).pos > 0);
}

/* A connect that fails at once is still reported from the loop. */
static void test_immediate_connect_failure_deferred(void **state)
{
    (void)state;
    start_url(0, "GET", "http://255.255.255.255:80/", NULL, NULL, 0, 5 * SL_USEC_PER_SEC);
    assert_int_equal(F.res[0].calls, 0);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    assert_int_equal(F.res[0].error, SL_UPSTREAM_CONNECT);
    assert_true(strlen(F.res[0].detail) > 0);
    assert_int_equal(sl_h1client_active(F.h1), 0);
}

static void test_timeout_on_reused_connection(void **state)
{
    (void)state;
    char url[64];

    expect_ok(call_once("GET", "/first"), 200, "ok");
    F.mode = SRV_STALL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/stall", F.port);
    start_url(0, "GET", url, NULL, NULL, 0, 100 * SL_USEC_PER_MSEC);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    assert_int_equal(F.res[0].error, SL_UPSTREAM_TIMEOUT);
    assert_int_equal(F.accepted, 1);
    assert_int_equal(sl_h1client_idle(F.h1), 0);
}

static void test_cancel_closes_connection(void **state)
{
    (void)state;
    int one = 1;
    char url[64];
    const struct sl_upstream_request req = {.method = "GET", .url = url};

    F.mode = SRV_STALL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/stall", F.port);
    struct sl_h1call *call = sl_h1client_start(F.h1, &req, on_done, &F.res[0]);
    assert_non_null(call);
    fx_run_until(F.base, requests_n, &one);
    sl_h1client_cancel(call);
    assert_int_equal(sl_h1client_active(F.h1), 0);
    fx_run_until(F.base, client_closed_n, &one);
    assert_int_equal(F.res[0].calls, 0);
    assert_int_equal(sl_h1client_idle(F.h1), 0);
}

static void test_start_rejects_bad_input(void **state)
{
    (void)state;
    const struct sl_upstream_request https = {.method = "GET", .url = "https://127.0.0.1:1/"};
    const struct sl_upstream_request ok = {.method = "GET", .url = "http://127.0.0.1:1/"};

    assert_null(sl_h1client_start(F.h1, &https, on_done, NULL));
    assert_null(sl_h1client_start(F.h1, &ok, NULL, NULL));
    assert_null(sl_h1client_start(NULL, &ok, on_done, NULL));
    assert_int_equal(sl_h1client_active(F.h1), 0);
    sl_h1client_cancel(NULL);
    sl_h1client_free(NULL);
}

/* ---- tests: streaming (backend.h: head, body_chunk, resume) ------------ */

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
    if (F.in_start)
        stream_error("head called from inside sl_h1client_start");
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

    if (F.in_start)
        stream_error("body_chunk called from inside sl_h1client_start");
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

static bool heads_n(void *arg)
{
    return S.heads >= *(int *)arg;
}

static bool chunks_n(void *arg)
{
    return S.chunks >= *(int *)arg;
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

/* Start a streaming call into F.res[slot]. */
static struct sl_h1call *start_stream(int slot, const char *target, size_t max_body)
{
    char url[128];
    struct sl_h1call *call;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", F.port, target);
    const struct sl_upstream_request req = {
        .method = "GET", .url = url, .timeout_us = 5 * SL_USEC_PER_SEC,
        .head = on_head, .body_chunk = on_chunk, .max_body = max_body,
    };

    reset_result(&F.res[slot]);
    F.in_start = true;
    call = sl_h1client_start(F.h1, &req, on_done, &F.res[slot]);
    F.in_start = false;
    assert_non_null(call);
    return call;
}

/* An answer that arrives whole goes straight to done: no head, no body_chunk. */
static void test_stream_whole_answer_skips_head(void **state)
{
    (void)state;
    start_stream(0, "/whole", 0);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    expect_ok(&F.res[0], 200, "ok");

    F.reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    start_stream(0, "/whole-chunked", 0);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    expect_ok(&F.res[0], 200, "hello");
    check_stream();
    assert_int_equal(S.heads, 0);
    assert_int_equal(S.chunks, 0);
    assert_int_equal(F.accepted, 1);
}

/*
 * Head once (with its Content-Length), the bytes that came through
 * body_chunk, the last ones with done; the connection is reused.
 */
static void test_stream_content_length(void **state)
{
    int one = 1;

    (void)state;
    F.mode = SRV_STREAM;
    F.reply = "HTTP/1.1 201 Made\r\nContent-Length: 10\r\nX-A: b\r\n\r\nhello";
    start_stream(0, "/cl", 0);
    fx_run_until(F.base, chunks_n, &one);
    check_stream();
    assert_int_equal(S.heads, 1);
    assert_int_equal(S.head_status, 201);
    assert_int_equal(S.content_length, 10);
    fx_body_equals(S.got, "hello", 5);
    assert_int_equal(F.res[0].calls, 0);

    stream_write("world");
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    check_stream();
    expect_ok(&F.res[0], 201, "world");
    fx_expect_headers(&F.res[0].headers,
                      (const char *const[]){"Content-Length", "10", "X-A", "b", NULL});
    assert_int_equal(S.heads, 1);
    assert_int_equal(S.chunks, 1);
    assert_int_equal(sl_h1client_idle(F.h1), 1);

    F.mode = SRV_REPLY;
    F.reply = ok_reply;
    expect_ok(call_once("GET", "/after"), 200, "ok");
    assert_int_equal(F.accepted, 1);
}

/* Chunked, one byte at a time: one head (length -1), the body through body_chunk and done. */
static void test_stream_chunked(void **state)
{
    (void)state;
    F.mode = SRV_TRICKLE;
    F.reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    start_stream(0, "/chunked", 0);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    check_stream();
    assert_int_equal(S.heads, 1);
    assert_int_equal(S.head_status, 200);
    assert_int_equal(S.content_length, -1);
    assert_true(S.chunks > 1);
    assert_int_equal(F.res[0].error, SL_UPSTREAM_OK);
    assert_int_equal(F.res[0].status, 200);
    assert_int_equal(evbuffer_add_buffer(S.got, F.res[0].body), 0);
    fx_body_equals(S.got, "hello world", 11);
    assert_int_equal(sl_h1client_idle(F.h1), 1);
}

/* Delimited by the close: length -1, the end comes with done, the connection is not kept. */
static void test_stream_until_close(void **state)
{
    int one = 1;

    (void)state;
    F.mode = SRV_STREAM;
    F.reply = "HTTP/1.1 200 OK\r\nX-A: b\r\n\r\nhello";
    start_stream(0, "/eof", 0);
    fx_run_until(F.base, chunks_n, &one);
    check_stream();
    assert_int_equal(S.heads, 1);
    assert_int_equal(S.content_length, -1);
    fx_body_equals(S.got, "hello", 5);

    stream_write_close(" world");
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    check_stream();
    assert_int_equal(F.res[0].error, SL_UPSTREAM_OK);
    assert_int_equal(F.res[0].status, 200);
    assert_int_equal(evbuffer_add_buffer(S.got, F.res[0].body), 0);
    fx_body_equals(S.got, "hello world", 11);
    assert_int_equal(S.heads, 1);
    assert_int_equal(sl_h1client_idle(F.h1), 0);
}

/*
 * body_chunk returning false stops the reading: nothing more is handed
 * over and the upstream's writes back up, until resume; then the rest
 * comes, byte for byte.
 */
static void test_stream_pause_resume(void **state)
{
    int one = 1;
    size_t sent, total;
    struct sl_h1call *call;

    (void)state;
    F.mode = SRV_BIG;
    S.pattern = true;
    S.pause_at = 1;
    call = start_stream(0, "/big", 0);
    fx_run_until(F.base, chunks_n, &one);
    check_stream();
    assert_int_equal(S.content_length, STREAM_BIG);

    run_for_ms(100);
    check_stream();
    assert_int_equal(S.chunks, 1);
    assert_int_equal(F.res[0].calls, 0);
    total = S.total;
    sent = big_sent();
    /* The socket buffers are full: the server cannot write the rest. */
    assert_true(evbuffer_get_length(bufferevent_get_output(F.stream_bev)) > 0);
    assert_true(sent < STREAM_BIG);
    run_for_ms(20);
    assert_int_equal(S.chunks, 1);
    assert_int_equal(S.total, total);

    sl_h1client_resume(call);
    sl_h1client_resume(call); /* not paused any more: a no-op */
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    check_stream();
    assert_int_equal(F.res[0].error, SL_UPSTREAM_OK);
    assert_true(S.chunks > 1);
    /* The last bytes come with done. */
    for (size_t i = 0, n = evbuffer_get_length(F.res[0].body); i < n; i++)
        assert_int_equal(evbuffer_pullup(F.res[0].body, -1)[i], big_byte(S.total + i));
    assert_int_equal(S.total + evbuffer_get_length(F.res[0].body), STREAM_BIG);
    assert_int_equal(sl_h1client_idle(F.h1), 1);
}

/* SL_TAKE_NONE: the call ends at once with its head, OK; the half-read connection goes. */
static void test_stream_take_none(void **state)
{
    int one = 1;

    (void)state;
    F.mode = SRV_STREAM;
    F.reply = "HTTP/1.1 503 Busy\r\nContent-Length: 100\r\nX-A: b\r\n\r\nhello";
    S.take = SL_TAKE_NONE;
    start_stream(0, "/none", 0);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    check_stream();
    assert_int_equal(S.heads, 1);
    assert_int_equal(S.chunks, 0);
    assert_int_equal(F.res[0].error, SL_UPSTREAM_OK);
    assert_int_equal(F.res[0].status, 503);
    assert_string_equal(fx_header_value(&F.res[0].headers, "X-A"), "b");
    fx_body_equals(F.res[0].body, NULL, 0);
    assert_int_equal(sl_h1client_active(F.h1), 0);
    assert_int_equal(sl_h1client_idle(F.h1), 0);
    fx_run_until(F.base, client_closed_n, &one);

    F.mode = SRV_REPLY;
    F.reply = ok_reply;
    expect_ok(call_once("GET", "/after"), 200, "ok");
    assert_int_equal(F.accepted, 2);
}

/*
 * SL_TAKE_WHOLE holds the body for done under max_body: over it the call
 * ends SL_UPSTREAM_TOO_LARGE, whether the bytes that pass the cap end the
 * body or not; under it the whole body comes with done.
 */
static void test_stream_take_whole_capped(void **state)
{
    static char tail[300];
    int one = 1;

    (void)state;
    memset(tail, 'x', sizeof(tail) - 1);
    F.mode = SRV_STREAM;
    S.take = SL_TAKE_WHOLE;
    F.reply = "HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n"
              "0123456789012345678901234567890123456789012";

    /* The cap passed while the body goes on. */
    start_stream(0, "/over", 150);
    fx_run_until(F.base, heads_n, &one);
    tail[150] = '\0';
    stream_write(tail);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    assert_int_equal(F.res[0].error, SL_UPSTREAM_TOO_LARGE);
    assert_non_null(strstr(F.res[0].detail, "150"));
    assert_int_equal(sl_h1client_idle(F.h1), 0);

    /* The cap passed by the bytes that end the body. */
    S.heads = 0;
    start_stream(0, "/over-at-end", 150);
    fx_run_until(F.base, heads_n, &one);
    memset(tail, 'x', sizeof(tail) - 1);
    tail[300 - 43] = '\0';
    stream_write(tail);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    assert_int_equal(F.res[0].error, SL_UPSTREAM_TOO_LARGE);
    assert_int_equal(F.res[0].status, 0);
    assert_int_equal(sl_h1client_idle(F.h1), 0);

    /* Under the cap: the whole body with done. */
    S.heads = 0;
    start_stream(0, "/under", 300);
    fx_run_until(F.base, heads_n, &one);
    stream_write(tail);
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    check_stream();
    assert_int_equal(F.res[0].error, SL_UPSTREAM_OK);
    assert_int_equal(evbuffer_get_length(F.res[0].body), 300);
    assert_int_equal(S.chunks, 0);
    assert_int_equal(sl_h1client_idle(F.h1), 1);
}

/* A reset after the head and some body were handed over: done with an error. */
static void test_stream_reset_mid_body(void **state)
{
    int one = 1;

    (void)state;
    F.mode = SRV_STREAM;
    F.reply = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello";
    start_stream(0, "/reset", 0);
    fx_run_until(F.base, chunks_n, &one);
    fx_body_equals(S.got, "hello", 5);
    stream_reset();
    fx_run_until(F.base, fx_result_done, &F.res[0]);
    check_stream();
    assert_int_equal(F.res[0].error, SL_UPSTREAM_PROTOCOL);
    assert_true(strlen(F.res[0].detail) > 0);
    fx_body_equals(F.res[0].body, NULL, 0);
    assert_int_equal(S.heads, 1);
    assert_int_equal(S.chunks, 1);
    assert_int_equal(sl_h1client_active(F.h1), 0);
    assert_int_equal(sl_h1client_idle(F.h1), 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    /* A write to a peer that already closed must fail, not kill the test. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handles),
        T(test_request_bytes),
        T(test_sequential_calls_share_one_connection),
        T(test_keepalive_race_is_reported_not_resent),
        T(test_hangup_after_the_request_is_closed),
        T(test_idle_close_noticed),
        T(test_pool_cap),
        T(test_no_pool_keeps_nothing),
        T(test_chunked),
        T(test_read_until_close),
        T(test_connection_close_not_pooled),
        T(test_bodiless_answers_keep_framing),
        T(test_trickled_answer),
        T(test_early_answer_not_pooled),
        T(test_header_cap),
        T(test_header_limit_independent_of_frontend),
        T(test_localhost_resolves),
        T(test_immediate_connect_failure_deferred),
        T(test_timeout_on_reused_connection),
        T(test_cancel_closes_connection),
        T(test_start_rejects_bad_input),
        T(test_stream_whole_answer_skips_head),
        T(test_stream_content_length),
        T(test_stream_chunked),
        T(test_stream_until_close),
        T(test_stream_pause_resume),
        T(test_stream_take_none),
        T(test_stream_take_whole_capped),
        T(test_stream_reset_mid_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
