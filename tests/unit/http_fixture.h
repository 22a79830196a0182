/*
 * http_fixture.h - scaffolding shared by the unit tests that make real HTTP
 * calls over loopback on one event_base (test_upstream.c, test_h1client.c):
 * what a done callback saw, header and body checks, a loopback listener, and
 * running the loop until a condition holds, bounded by a timer.
 *
 * Everything here fails the current cmocka test on error; include
 * <setjmp.h>, <stdarg.h>, <stddef.h>, <stdint.h> and <cmocka.h> before use.
 */
#ifndef SL_TEST_HTTP_FIXTURE_H
#define SL_TEST_HTTP_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "upstream.h"

/* How long fx_run_until waits before it fails the test. */
#define FX_GUARD_SECONDS 10

/* What one done callback saw. */
struct fx_result {
    int calls;
    enum sl_upstream_error error;
    int status;
    char reason[64];
    char detail[256];
    struct evkeyvalq headers;
    struct evbuffer *body;
    int64_t duration_us;
};

/* Empty headers and a fresh body for each of res[0..n); fx_results_free undoes it. */
void fx_results_init(struct fx_result *res, size_t n);
void fx_results_free(struct fx_result *res, size_t n);

/* A done callback (sl_upstream_done_fn) that counts one call into the
 * struct fx_result *arg: error, status, duration, detail, headers (replaced)
 * and the body (appended to its body). */
void fx_on_done(struct sl_upstream_response *resp, void *arg);

/* Conditions for fx_run_until: a struct fx_result * has been called back. */
bool fx_result_done(void *arg);

/* Run the loop until cond(arg) holds; fail after FX_GUARD_SECONDS. */
void fx_run_until(struct event_base *base, bool (*cond)(void *), void *arg);

/* fx_run_until every one of res[0..n) has been called back. */
void fx_run_until_results(struct event_base *base, struct fx_result *res, int n);

/* The first field called `name` (any case), or NULL. */
const char *fx_header_value(const struct evkeyvalq *q, const char *name);

/* `to` becomes a copy of `from`, fields in order. */
void fx_copy_headers(const struct evkeyvalq *from, struct evkeyvalq *to);

/* Exactly these fields in this order ({"A", "1", ..., NULL}). */
void fx_expect_headers(const struct evkeyvalq *q, const char *const *pairs);

/* b holds exactly these len bytes. */
void fx_body_equals(struct evbuffer *b, const void *data, size_t len);

/* The local port a socket is bound to. */
int fx_bound_port(evutil_socket_t fd);

/* Called with each accepted connection: a bufferevent on the listener's base
 * that closes its socket when freed; it is the callee's from then on. */
typedef void (*fx_conn_fn)(struct bufferevent *bev);

struct fx_listener {
    struct evconnlistener *lev;        /* evconnlistener_free() it */
    fx_conn_fn on_conn;
};

/* Listen on 127.0.0.1 at a port of the kernel's choice; returns the port. */
int fx_listen(struct fx_listener *l, struct event_base *base, fx_conn_fn on_conn, int backlog);

#endif /* SL_TEST_HTTP_FIXTURE_H */
