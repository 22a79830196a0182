/*
 * http_fixture.c - shared scaffolding of the loopback HTTP unit tests; see
 * http_fixture.h.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "http_fixture.h"

/* ---- results ------------------------------------------------------------ */

void fx_results_init(struct fx_result *res, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        TAILQ_INIT(&res[i].headers);
        res[i].body = evbuffer_new();
        assert_non_null(res[i].body);
    }
}

void fx_results_free(struct fx_result *res, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        evhttp_clear_headers(&res[i].headers);
        evbuffer_free(res[i].body);
    }
}

void fx_on_done(struct sl_upstream_response *resp, void *arg)
{
    struct fx_result *r = arg;

    r->calls++;
    r->error = resp->error;
    r->status = resp->status;
    r->duration_us = resp->duration_us;
    snprintf(r->reason, sizeof(r->reason), "%s", resp->reason);
    snprintf(r->detail, sizeof(r->detail), "%s", resp->detail);
    fx_copy_headers(&resp->headers, &r->headers);
    assert_int_equal(evbuffer_add_buffer(r->body, resp->body), 0);
}

bool fx_result_done(void *arg)
{
    return ((struct fx_result *)arg)->calls > 0;
}

/* ---- the loop ----------------------------------------------------------- */

static bool guard_fired;

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    guard_fired = true;
}

void fx_run_until(struct event_base *base, bool (*cond)(void *), void *arg)
{
    struct event *guard = evtimer_new(base, on_guard, NULL);
    struct timeval tv = {FX_GUARD_SECONDS, 0};

    assert_non_null(guard);
    guard_fired = false;
    assert_int_equal(evtimer_add(guard, &tv), 0);
    for (long i = 0; i < 10000000 && !cond(arg) && !guard_fired; i++)
        assert_true(event_base_loop(base, EVLOOP_ONCE) >= 0);
    event_free(guard);
    if (!cond(arg))
        fail_msg("condition not reached in %d s", FX_GUARD_SECONDS);
}

struct results_span {
    struct fx_result *res;
    int n;
};

static bool results_done(void *arg)
{
    const struct results_span *s = arg;
    for (int i = 0; i < s->n; i++)
        if (s->res[i].calls == 0)
            return false;
    return true;
}

void fx_run_until_results(struct event_base *base, struct fx_result *res, int n)
{
    struct results_span s = {res, n};
    fx_run_until(base, results_done, &s);
}

/* ---- headers and bodies ------------------------------------------------- */

const char *fx_header_value(const struct evkeyvalq *q, const char *name)
{
    const struct evkeyval *h;
    TAILQ_FOREACH(h, q, next)
        if (strcasecmp(h->key, name) == 0)
            return h->value;
    return NULL;
}

void fx_copy_headers(const struct evkeyvalq *from, struct evkeyvalq *to)
{
    const struct evkeyval *h;
    evhttp_clear_headers(to);
    TAILQ_FOREACH(h, from, next)
        assert_int_equal(evhttp_add_header(to, h->key, h->value), 0);
}

void fx_expect_headers(const struct evkeyvalq *q, const char *const *pairs)
{
    const struct evkeyval *h = TAILQ_FIRST(q);
    for (size_t i = 0; pairs[i] != NULL && i < 64; i += 2) {
        if (h == NULL)
            fail_msg("missing field %s", pairs[i]);
        assert_string_equal(h->key, pairs[i]);
        assert_string_equal(h->value, pairs[i + 1]);
        h = TAILQ_NEXT(h, next);
    }
    if (h != NULL)
        fail_msg("unexpected field %s: %s", h->key, h->value);
}

void fx_body_equals(struct evbuffer *b, const void *data, size_t len)
{
    assert_int_equal(evbuffer_get_length(b), len);
    if (len > 0)
        assert_memory_equal(evbuffer_pullup(b, -1), data, len);
}

/* ---- sockets ------------------------------------------------------------ */

int fx_bound_port(evutil_socket_t fd)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);

    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    return ntohs(sin.sin_port);
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    const struct fx_listener *l = arg;
    (void)sa;
    (void)salen;
    struct bufferevent *bev =
        bufferevent_socket_new(evconnlistener_get_base(lev), fd, BEV_OPT_CLOSE_ON_FREE);

    assert_non_null(bev);
    l->on_conn(bev);
}

int fx_listen(struct fx_listener *l, struct event_base *base, fx_conn_fn on_conn, int backlog)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    l->on_conn = on_conn;
    l->lev = evconnlistener_new_bind(base, on_accept, l, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                     backlog, (struct sockaddr *)&sin, sizeof(sin));
    assert_non_null(l->lev);
    return fx_bound_port(evconnlistener_get_fd(l->lev));
}
