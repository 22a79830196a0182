/*
 * request.h - one client request from intake to its single exit.
 *
 * A request's state is where it is: NEW (being admitted), PARKED (in its
 * route's queue), IN_FLIGHT (an upstream call under way). It moves only
 * through the functions here, and ends only in sl_request_finish(), which
 * answers the client (if still there), counts the outcome, writes the access
 * log line and frees the request.
 *
 * Ownership: the proxy's request list holds every live request; a request
 * owns its parsed message, its timer and its upstream call; its headers are
 * translated for the upstream only while they are written. It borrows its
 * connection (NULL once the client has gone) and its route.
 */
#ifndef SL_REQUEST_H
#define SL_REQUEST_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/keyvalq_struct.h>

#include "metrics.h"
#include "queue.h"

struct evbuffer;
struct event;
struct sl_conn;
struct sl_http_msg;
struct sl_proxy;
struct sl_route;
struct sl_upstream_call;
struct sl_upstream_response;

enum sl_request_state {
    SL_REQ_NEW = 0,
    SL_REQ_PARKED,
    SL_REQ_IN_FLIGHT,
};

struct sl_request {
    struct sl_queue_item item;          /* while PARKED */
    TAILQ_ENTRY(sl_request) link;       /* proxy->requests */
    struct sl_proxy *proxy;
    struct sl_route *route;
    struct sl_conn *conn;               /* NULL once the client hung up */
    struct sl_http_msg *msg;            /* owned */
    struct event *deadline;             /* queue timeout while PARKED; in this allocation */
    struct sl_upstream_call *call;      /* while IN_FLIGHT, owned */
    enum sl_request_state state;
    int64_t arrived_us;
    int64_t deadline_us;                /* 0 = none */
    int64_t dispatched_us;              /* last dispatch (the limiter's take) */
    int64_t sent_us;                    /* when that dispatch reached the socket */
    int64_t upstream_us;                /* time spent in upstream calls */
    unsigned attempts;
    bool client_gone;
    char client[46];                    /* the client's address, kept for logs and XFF */
    /* The last upstream answer of a request parked again for a retry (429,
     * 503...): what the client gets if its deadline passes first. Owned. */
    int last_status;                    /* 0 = none */
    struct evkeyvalq last_headers;
    struct evbuffer *last_body;
};

/* Admit a parsed request from `conn` (frontend callback). */
void sl_request_intake(struct sl_proxy *p, struct sl_conn *conn, struct sl_http_msg *msg);

/* The client of `r` hung up (frontend callback). */
void sl_request_client_gone(struct sl_request *r);

/*
 * The deadline of a parked request passed: it leaves without a token, with
 * the last upstream response if it had one (a retried 429), else 504.
 */
void sl_request_expire(struct sl_request *r);

/* Send a popped request to its upstream (dispatcher). */
void sl_request_dispatch(struct sl_request *r, int64_t now);

/*
 * The single exit: answer with an upstream response (outcome RELAYED, resp
 * non-NULL) or with sluice's own error for `o` (detail is the human sentence).
 */
void sl_request_finish(struct sl_request *r, enum sl_outcome o,
                       struct sl_upstream_response *resp, const char *detail);

/*
 * Answer `conn` with sluice's JSON error for `o` and X-Sluice-Error (used for
 * requests that never became a struct sl_request). Counts it in `stats`.
 */
void sl_request_refuse(struct sl_proxy *p, struct sl_conn *conn, struct sl_route_stats *stats,
                       enum sl_outcome o, const char *detail, bool close);

static inline struct sl_request *sl_request_of_item(struct sl_queue_item *it)
{
    return (struct sl_request *)((char *)it - __builtin_offsetof(struct sl_request, item));
}

#endif
