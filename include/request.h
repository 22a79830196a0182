/*
 * request.h - one request from intake to its single exit, whatever brought
 * it in and wherever its answer goes (its reply sink, sink.h).
 *
 * A request's state is where it is: NEW (being admitted), PARKED (in its
 * route's queue), IN_FLIGHT (an upstream call under way). It moves only
 * through the functions here, and ends only in the single exit, which
 * answers through the sink (if still there), counts the outcome, writes the
 * access log line and frees the request. Intake, queueing, dispatch,
 * retries and deadlines work the same with or without a client connection.
 *
 * The requests of an instance share one struct sl_requests: what they need
 * of the instance (config, routes, queue totals, the upstream backends) and
 * the hooks by which they tell it what it must act on (the queue emptied
 * below its cap, or filled it; the last request ended).
 *
 * Ownership: struct sl_requests holds every live request; its owner (the
 * proxy) keeps the borrowed pointers valid and updates `cfg` on reload. A
 * request owns its message, its deadline timer, its upstream call and the
 * last upstream answer kept for a retry; it borrows its sink (until it
 * answers or the sink is gone) and its route.
 */
#ifndef SL_REQUEST_H
#define SL_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/keyvalq_struct.h>

#include "dispatcher.h"
#include "metrics.h"
#include "queue.h"
#include "sink.h"

struct evbuffer;
struct event;
struct event_base;
struct sl_config;
struct sl_http_msg;
struct sl_route;
struct sl_route_table;
struct sl_upstream;
struct sl_upstream_call;

enum sl_request_state {
    SL_REQ_NEW = 0,
    SL_REQ_PARKED,
    SL_REQ_IN_FLIGHT,
};

struct sl_request;

/* What the requests tell their owner; each may be NULL. */
struct sl_request_hooks {
    void (*queue_full)(void *arg);      /* backpressure: stop taking requests in */
    void (*queue_changed)(void *arg);   /* a request left a queue: maybe take more in */
    void (*idle)(void *arg);            /* the last live request ended */
};

struct sl_requests {
    struct event_base *base;
    const struct sl_config *cfg;        /* borrowed; the owner swaps it on reload */
    struct sl_route_table *routes;      /* borrowed */
    struct sl_queue_totals *totals;     /* borrowed */
    struct sl_upstream *upstream;       /* borrowed */
    struct sl_request_hooks hooks;
    void *hooks_arg;
    struct sl_route_stats unrouted;     /* requests that matched no route */
    TAILQ_HEAD(sl_request_list, sl_request) live;
    size_t n_live;
    bool refuse_new;                    /* draining: new requests get 503 draining */
    bool no_retry;                      /* drain time over: answer, do not retry */
};

/* What the dispatcher calls (dispatcher.h), with the struct sl_requests as arg. */
extern const struct sl_dispatch_ops sl_request_dispatch_ops;

/* Set up an empty set of requests on `base` (the other fields are the caller's). */
void sl_requests_init(struct sl_requests *q, struct event_base *base);

/*
 * Take in `msg` (owned from now on), to be answered through `sink`;
 * `client` is the address it came from, for logs and X-Forwarded-For.
 * Refusals (no route, bad controls, queue full, draining) are answered at
 * once through the sink; otherwise the sink is adopted by the request.
 */
void sl_request_submit(struct sl_requests *q, struct sl_sink *sink, struct sl_http_msg *msg,
                       const char *client);

/*
 * Would sl_request_submit() refuse `msg` at intake for its target or its
 * controls (a bad path, the reserved prefix, no route, a target too long,
 * a bad X-Sluice-* value, draining)? Normalises the target in place, as
 * submit would. Returns the route, or NULL with *o and *detail set; counts
 * nothing and answers nothing (see sl_request_refuse).
 */
struct sl_route *sl_request_check(struct sl_requests *q, struct sl_http_msg *msg,
                                  enum sl_outcome *o, const char **detail);

/*
 * Answer `sink` with sluice's JSON error for `o` and X-Sluice-Error, for a
 * request that never became a struct sl_request (its source refused it).
 * Counted with the unrouted requests.
 */
void sl_request_refuse(struct sl_requests *q, struct sl_sink *sink, const char *client,
                       enum sl_outcome o, const char *detail, bool close);

/*
 * Answer `sink` with sluice's JSON error for `o` and X-Sluice-Error, neither
 * counted nor logged: for a source that counts its own answers (a batch).
 */
void sl_request_respond_error(struct sl_sink *sink, enum sl_outcome o, const char *detail,
                              bool close);

/*
 * The sink of `r` went away (client hung up, batch cancelled): parked, it
 * leaves without a token; in flight, its token is spent and the call lands.
 */
void sl_request_sink_gone(struct sl_request *r);

/* Finish every parked request (or every live one with `all`) as draining. */
void sl_requests_finish_all(struct sl_requests *q, bool all, const char *detail);

/*
 * A reload replaced or removed route `from`. Its parked requests move to
 * `to` in order (to NULL: to whichever route of `t` now matches each one's
 * path; none: answered 404 no_route); its in-flight requests count against
 * `to` from now on (to NULL: they finish on `from`, which is retired).
 */
void sl_requests_move_route(struct sl_requests *q, struct sl_route *from, struct sl_route *to,
                            const struct sl_route_table *t);

#endif
