/*
 * request.c - intake, dispatch, retries and the single exit of a request.
 *
 * Every accepted request ends in request_finish(): relayed upstream
 * response, or sluice's own JSON error with X-Sluice-Error, through its
 * sink. That one exit is what makes "nothing dropped, every outcome counted"
 * checkable.
 */
#include "request.h"

#include <math.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "clock.h"
#include "config.h"
#include "dispatcher.h"
#include "headers.h"
#include "http1.h"
#include "http_msg.h"
#include "keys.h"
#include "limiter.h"
#include "log.h"
#include "path.h"
#include "retry.h"
#include "route.h"
#include "shlimit.h"
#include "sluice.h"
#include "upstream.h"

#define RESERVED_PREFIX "/_sluice/"
/* The upstream URL: the route's base and the target. Checked at intake. */
#define URL_MAX (SL_CONFIG_URL_LEN + 8192)

struct sl_request {
    struct sl_queue_item item;          /* while PARKED; its deadline_us is the request's */
    TAILQ_ENTRY(sl_request) link;       /* q->live */
    struct sl_requests *q;
    struct sl_route *route;
    struct sl_sink *sink;               /* NULL once it has gone */
    struct sl_sink_owner owner;         /* what the sink's source reports its going to */
    struct sl_http_msg *msg;            /* owned */
    struct event *deadline;             /* queue timeout while PARKED; in this allocation */
    struct sl_upstream_call *call;      /* while IN_FLIGHT, owned */
    enum sl_request_state state;
    int64_t arrived_us;
    int64_t dispatched_us;              /* last dispatch (the limiter's take) */
    int64_t sent_us;                    /* when that dispatch reached the socket */
    int64_t upstream_us;                /* time spent in upstream calls */
    unsigned attempts;
    bool unanswered;                    /* dispatched, its answer not yet dated (limiter.h) */
    bool streaming;                     /* the answer's head went to the sink; its body follows */
    int stream_status;                  /* ...with this status */
    /* With limit_key: the key's table and slot (item.key_slot) it is pinned to,
     * or NULL (and SL_KEYS_NO_SLOT): the route's limiter counts it. */
    struct sl_keys *key_table;
    bool key_parked;                    /* it holds its key as parked (keys.h) */
    uint64_t key_id;
    char key_hex[17];                   /* its queue flow: the id, never the value */
    char client[46];                    /* where it came from, kept for logs and XFF */
    /* The last upstream answer of a request parked again for a retry (429,
     * 503...): what the client gets if its deadline passes first. Owned. */
    int last_status;                    /* 0 = none */
    char last_reason[SL_UPSTREAM_REASON_LEN];
    struct evkeyvalq last_headers;
    struct evbuffer *last_body;
};

static struct sl_request *request_of_item(struct sl_queue_item *it)
{
    return (struct sl_request *)(void *)((char *)it - offsetof(struct sl_request, item));
}

static struct sl_request *request_of_owner(struct sl_sink_owner *o)
{
    return (struct sl_request *)(void *)((char *)o - offsetof(struct sl_request, owner));
}

static void request_on_sink_drained(struct sl_sink_owner *o)
{
    struct sl_request *r = request_of_owner(o);

    if (r->call != NULL)
        sl_upstream_resume(r->call);
}

static void request_on_sink_gone(struct sl_sink_owner *o)
{
    sl_request_sink_gone(request_of_owner(o));
}

static bool request_on_sink_eof(struct sl_sink_owner *o)
{
    return sl_request_sink_eof(request_of_owner(o));
}

static void hook(const struct sl_requests *q, void (*fn)(void *))
{
    if (fn != NULL)
        fn(q->hooks_arg);
}

/* --- responses sluice makes itself -------------------------------------- */

static void json_escape(struct evbuffer *out, const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\')
            evbuffer_add_printf(out, "\\%c", c);
        else if (c < 0x20)
            evbuffer_add_printf(out, "\\u%04x", c);
        else
            evbuffer_add(out, s, 1);
    }
}

/* Emit sluice's timing fields for r. */
static int timing_fields(sl_header_fn emit, void *emit_arg, const struct sl_request *r)
{
    char buf[32], *v;
    int rc;
    int64_t end = r->dispatched_us != 0 ? r->dispatched_us : sl_clock_now();
    uint64_t tenths = end > r->arrived_us ? (uint64_t)(end - r->arrived_us + 50) / 100 : 0;

    /* Milliseconds with one decimal: "12.5". */
    v = sl_http1_u64(buf + sizeof(buf) - 3, tenths / 10);
    buf[sizeof(buf) - 3] = '.';
    buf[sizeof(buf) - 2] = (char)('0' + tenths % 10);
    buf[sizeof(buf) - 1] = '\0';
    if ((rc = emit("X-Sluice-Queue-Time", v, emit_arg)) != SL_OK)
        return rc;
    return emit("X-Sluice-Attempts", sl_http1_u64(buf + sizeof(buf) - 1, r->attempts), emit_arg);
}

/* A response's fields: a list as it is, then (with r) the timing fields. */
struct fields {
    const struct evkeyvalq *list;
    const struct sl_request *r;
    bool from_upstream;                 /* translate the list (an upstream answer) */
    bool keep_length;
    const struct sl_redirect_map *map;  /* an upstream answer's URLs, or NULL */
};

static int emit_fields(sl_header_fn emit, void *emit_arg, void *arg)
{
    const struct fields *f = arg;
    int rc = f->from_upstream
                 ? sl_headers_each_from_upstream(f->list, f->keep_length, f->map, emit, emit_arg)
                 : sl_headers_each(f->list, emit, emit_arg);

    return rc == SL_OK && f->r != NULL ? timing_fields(emit, emit_arg, f->r) : rc;
}

/* Seconds until the route's queue drains enough for one more request. */
static unsigned retry_after_seconds(const struct sl_route *route)
{
    double per_sec;
    double secs;

    if (route == NULL)
        return 1;
    per_sec = route->cfg.rate.n * 1e6 / (double)route->cfg.rate.period_us;
    secs = per_sec > 0 ? ceil((double)sl_queue_depth(&route->queue) / per_sec) : 1;
    return secs < 1 ? 1 : secs > 86400 ? 86400 : (unsigned)secs;
}

/* Seconds until the oldest idle key of a full keys table can be evicted. */
static unsigned key_retry_seconds(const struct sl_route *route)
{
    int64_t at = route != NULL && route->keys != NULL ? sl_keys_sweep_at(route->keys) : 0;
    int64_t now = sl_clock_now();

    if (at <= now)
        return 1;
    at = (at - now + SL_USEC_PER_SEC - 1) / SL_USEC_PER_SEC;
    return at > 86400 ? 86400 : (unsigned)at;
}

/* Write sluice's own error response for `o` to sink. `r` adds timing headers. */
static void respond_error(struct sl_sink *sink, const struct sl_request *r,
                          const struct sl_route *route, enum sl_outcome o, const char *detail,
                          bool close)
{
    struct evkeyvalq h;
    struct evbuffer *body = evbuffer_new();
    const char *code = sl_outcome_name(o);
    char v[32];

    TAILQ_INIT(&h);
    (void)sl_headers_add(&h, "Content-Type", "application/json");
    (void)sl_headers_add(&h, "X-Sluice-Error", code);
    if (o == SL_OUTCOME_QUEUE_FULL || o == SL_OUTCOME_TOO_MANY_KEYS) {
        snprintf(v, sizeof(v), "%u", o == SL_OUTCOME_QUEUE_FULL ? retry_after_seconds(route)
                                                                : key_retry_seconds(route));
        (void)sl_headers_add(&h, "Retry-After", v);
    }
    if (body != NULL) {
        evbuffer_add_printf(body, "{\"error\":\"%s\",\"detail\":\"", code);
        json_escape(body, detail != NULL ? detail : "");
        evbuffer_add(body, "\"}\n", 3);
    }
    sink->ops->respond(sink, sl_outcome_status(o), NULL, emit_fields,
                       &(struct fields){&h, r, false, false, NULL}, body, false, close);
    sl_headers_clear(&h);
    if (body != NULL)
        evbuffer_free(body);
}

static void access_log(const struct sl_requests *q, const char *route, const char *method,
                       const char *target, int status, enum sl_outcome o, double queue_ms,
                       double upstream_ms, unsigned attempts, const char *client)
{
    char qpath[512], qroute[96];
    char path[400];
    size_t n;

    if (!q->cfg->access_log || sl_log_get_level() < SL_LOG_INFO)
        return;
    /* The query string may carry credentials: log the path only. */
    n = target != NULL ? strcspn(target, "?") : 0;
    if (n >= sizeof(path))
        n = sizeof(path) - 1;
    memcpy(path, target != NULL ? target : "", n);
    path[n] = '\0';
    sl_log(SL_LOG_INFO, "request",
           "route=%s method=%s path=%s status=%d outcome=%s queue_ms=%.1f upstream_ms=%.1f "
           "attempts=%u client=%s",
           sl_log_quote(route, qroute, sizeof(qroute)), method != NULL ? method : "-",
           sl_log_quote(path, qpath, sizeof(qpath)), status, sl_outcome_name(o), queue_ms,
           upstream_ms, attempts, client != NULL ? client : "-");
}

/* Answer a request that never became a struct sl_request; count it in `stats`. */
static void refuse(struct sl_requests *q, struct sl_sink *sink, const char *client,
                   struct sl_route_stats *stats, enum sl_outcome o, const char *detail,
                   bool close)
{
    sl_route_stats_finish(stats, o, SL_LANE_NORMAL, -1);
    access_log(q, "", NULL, NULL, sl_outcome_status(o), o, 0, 0, 0, client);
    respond_error(sink, NULL, NULL, o, detail, close);
}

void sl_request_refuse(struct sl_requests *q, struct sl_sink *sink, const char *client,
                       enum sl_outcome o, const char *detail, bool close)
{
    refuse(q, sink, client, &q->unrouted, o, detail, close);
}

void sl_request_respond_error(struct sl_sink *sink, enum sl_outcome o, const char *detail,
                              bool close)
{
    respond_error(sink, NULL, NULL, o, detail, close);
}

/* --- the single exit ---------------------------------------------------- */

/*
 * The answer's fields are translated while the head is written (no copy).
 * Redirects stay behind the limit: the upstream's URLs in Location and
 * Content-Location become the client's (headers.h), unless the route says
 * rewrite_redirects = off. The upstream path is the client's path under the
 * upstream's base, less the match prefix when the route strips it: that
 * prefix is put back.
 */
static struct fields upstream_fields(const struct sl_request *r, const struct evkeyvalq *headers,
                                     bool keep_length, struct sl_redirect_map *map)
{
    const struct sl_route_config *cfg = &r->route->cfg;

    *map = (struct sl_redirect_map){cfg->upstream, "http", &r->msg->headers,
                                    cfg->strip_prefix ? cfg->match : ""};
    return (struct fields){headers, r, true, keep_length, cfg->rewrite_redirects ? map : NULL};
}

static void relay(struct sl_request *r, int status, const char *reason,
                  struct evkeyvalq *headers, struct evbuffer *body)
{
    bool keep_length = r->msg->head || status == 304;
    struct sl_redirect_map map;
    struct fields f = upstream_fields(r, headers, keep_length, &map);

    r->sink->ops->respond(r->sink, status, reason, emit_fields, &f, body, keep_length, false);
}

/* The head of a streamed answer; its Content-Length stands when it had one. */
static bool relay_begin(struct sl_request *r, struct sl_upstream_response *resp)
{
    struct sl_redirect_map map;
    struct fields f = upstream_fields(r, &resp->headers, resp->content_length >= 0, &map);

    return r->sink->ops->begin(r->sink, resp->status, resp->reason, emit_fields, &f,
                               resp->content_length);
}

/* Keep an upstream answer for the client in case the retry cannot happen in time. */
static int keep_last(struct sl_request *r, struct sl_upstream_response *resp)
{
    const struct evkeyval *h;

    sl_headers_clear(&r->last_headers);
    r->last_status = 0;
    if (r->last_body == NULL && (r->last_body = evbuffer_new()) == NULL)
        return SL_ENOMEM;
    evbuffer_drain(r->last_body, evbuffer_get_length(r->last_body));
    TAILQ_FOREACH(h, &resp->headers, next) {
        if (sl_headers_add(&r->last_headers, h->key, h->value) != SL_OK)
            return SL_ENOMEM;
    }
    if (evbuffer_add_buffer(r->last_body, resp->body) != 0)
        return SL_ENOMEM;
    r->last_status = resp->status;
    memcpy(r->last_reason, resp->reason, sizeof(r->last_reason));
    return SL_OK;
}

/* A request pinned to its key as parked lets go (it leaves without a dispatch). */
static void key_unpin(struct sl_request *r)
{
    if (!r->key_parked)
        return;
    r->key_parked = false;
    sl_keys_release(r->key_table, r->item.key_slot, sl_clock_now());
    if (r->route->keys == r->key_table)
        sl_dispatcher_sweep(r->route);
}

/* Forget the key pin (its table is going away): the route's limiter counts it now. */
static void key_forget(struct sl_request *r)
{
    r->key_table = NULL;
    r->key_parked = false;
    r->item.key_slot = SL_KEYS_NO_SLOT;
    r->key_hex[0] = '\0';
}

static void request_free(struct sl_request *r)
{
    struct sl_requests *q = r->q;

    key_unpin(r);
    TAILQ_REMOVE(&q->live, r, link);
    q->n_live--;
    event_del(r->deadline);
    sl_headers_clear(&r->last_headers);
    if (r->last_body != NULL)
        evbuffer_free(r->last_body);
    sl_http_msg_free(r->msg);
    free(r);
}

/*
 * The dispatch's answer came, or it ended without one: a jitter-proof
 * limiter dates it now (a no-op otherwise). Exactly once per dispatch.
 */
static void date_answer(struct sl_request *r)
{
    uint32_t units = r->item.units > 0 ? r->item.units : 1;

    if (!r->unanswered)
        return;
    r->unanswered = false;
    if (r->key_table == NULL) {
        sl_limiter_answered(&r->route->limiter, sl_clock_now(), units);
        return;
    }
    sl_keys_answered(r->key_table, r->item.key_slot, sl_clock_now(), units);
    /* Dated by answers, the key's next dispatch may have come earlier. */
    if (r->route->cfg.jitter_proof && r->route->keys == r->key_table)
        sl_queue_unblock_key(&r->route->queue, r->key_hex);
}

/* Leave the queue or the in-flight set; returns 1 if a dispatch slot was freed. */
static int request_detach(struct sl_request *r)
{
    if (r->state == SL_REQ_PARKED) {
        sl_queue_remove(&r->route->queue, &r->item);
        hook(r->q, r->q->hooks.queue_changed);
    } else if (r->state == SL_REQ_IN_FLIGHT) {
        if (r->call != NULL)
            sl_upstream_cancel(r->call);
        r->call = NULL;
        date_answer(r);
        sl_route_flight_end(r->route);
        return 1;
    }
    return 0;
}

/* Is the answer for a sink that keeps it whole (sink.h) over the route's cap? */
static bool too_large_to_store(const struct sl_request *r,
                               const struct sl_upstream_response *resp)
{
    const struct evbuffer *body = resp != NULL ? resp->body : r->last_body;

    return r->sink != NULL && r->sink->ops->stores && body != NULL &&
           evbuffer_get_length(body) > r->route->cfg.max_response_size;
}

/*
 * The single exit: answer with an upstream response (outcome RELAYED, resp
 * non-NULL, or the kept last answer) or with sluice's own error for `o`.
 */
static void request_finish(struct sl_request *r, enum sl_outcome o,
                           struct sl_upstream_response *resp, const char *detail)
{
    struct sl_requests *q = r->q;
    struct sl_route *route = r->route;
    int64_t end = r->dispatched_us != 0 ? r->dispatched_us : sl_clock_now();
    double wait = (double)(end - r->arrived_us) / 1e6;
    int status;
    int freed_slot = request_detach(r);

    if (o == SL_OUTCOME_RELAYED && too_large_to_store(r, resp)) {
        o = SL_OUTCOME_RESPONSE_TOO_LARGE;
        detail = "the upstream response is larger than max_response_size";
    }
    /* A streamed answer's status went out, whatever happened after. */
    status = r->streaming && o != SL_OUTCOME_CLIENT_GONE ? r->stream_status
             : o != SL_OUTCOME_RELAYED                  ? sl_outcome_status(o)
             : resp != NULL                             ? resp->status
                                                        : r->last_status;

    r->state = SL_REQ_NEW;
    sl_route_stats_finish(&route->stats, o, r->item.lane, wait);
    access_log(q, route->cfg.name, r->msg->method, r->msg->target, status, o, wait * 1000.0,
               (double)r->upstream_us / 1000.0, r->attempts, r->client);
    if (r->sink != NULL) {
        if (r->streaming)
            r->sink->ops->end(r->sink, o == SL_OUTCOME_RELAYED);
        else if (o == SL_OUTCOME_RELAYED && resp != NULL)
            relay(r, resp->status, resp->reason, &resp->headers, resp->body);
        else if (o == SL_OUTCOME_RELAYED && r->last_status != 0)
            relay(r, r->last_status, r->last_reason, &r->last_headers, r->last_body);
        else
            respond_error(r->sink, r, route, o, detail, o == SL_OUTCOME_DRAINING);
    }
    request_free(r);
    if (freed_slot)
        sl_dispatcher_kick(route);
    if (q->n_live == 0)
        hook(q, q->hooks.idle);
}

/* --- intake ------------------------------------------------------------- */

/*
 * The deadline of a parked request passed: it leaves without a token, with
 * the last upstream response if it had one (a retried 429), else 504.
 */
static void request_expire(struct sl_request *r)
{
    if (r->last_status != 0)
        request_finish(r, SL_OUTCOME_RELAYED, NULL, NULL);
    else
        request_finish(r, SL_OUTCOME_QUEUE_TIMEOUT, NULL,
                       "the request was not dispatched before its deadline");
}

static void request_on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct sl_request *r = arg;

    (void)fd;
    (void)what;
    if (r->state == SL_REQ_PARKED)
        request_expire(r);
}

/* Lane and deadline from the request's own headers; detail set on error. */
/* What a request asks of sluice in its own headers (SPEC section 4). */
struct controls {
    enum sl_lane lane;
    int64_t timeout_us;                 /* its queue timeout; 0 = none */
    uint32_t units;                     /* what its dispatch costs */
};

/* X-Sluice-Cost: whole units, 1 to the route's max_cost; else the route's cost. */
static int read_cost(const struct sl_route *route, const char *v, uint32_t *units)
{
    char *end;
    unsigned long n;

    *units = route->cfg.cost;
    if (v == NULL)
        return SL_OK;
    n = strtoul(v, &end, 10);
    if (end == v || *end != '\0' || v[0] == '-' || v[0] == '+' || n < 1 ||
        n > route->cfg.max_cost)
        return SL_ERR;
    *units = (uint32_t)n;
    return SL_OK;
}

static int read_controls(const struct sl_requests *q, const struct sl_route *route,
                         const struct sl_http_msg *msg, struct controls *c, const char **detail)
{
    const char *v = evhttp_find_header(&msg->headers, "X-Sluice-Priority");
    int64_t limit = q->cfg->queue_timeout_us;

    c->lane = SL_LANE_NORMAL;
    if (v != NULL && sl_lane_parse(v, &c->lane) != 0) {
        *detail = "X-Sluice-Priority must be high, normal or low";
        return SL_ERR;
    }
    c->timeout_us = limit;
    v = evhttp_find_header(&msg->headers, "X-Sluice-Deadline");
    if (v != NULL) {
        int64_t d;

        if (sl_config_parse_duration(v, &d) != 0 || d <= 0) {
            *detail = "X-Sluice-Deadline must be a positive duration such as 5s or 250ms";
            return SL_ERR;
        }
        c->timeout_us = limit == 0 || d < limit ? d : limit;
    }
    if (read_cost(route, evhttp_find_header(&msg->headers, "X-Sluice-Cost"), &c->units) !=
        SL_OK) {
        *detail = "X-Sluice-Cost must be a whole number from 1 to the route's max_cost";
        return SL_ERR;
    }
    return SL_OK;
}

static struct sl_request *request_new(struct sl_requests *q, struct sl_sink *sink,
                                      const char *client, struct sl_http_msg *msg,
                                      struct sl_route *route)
{
    /* The deadline timer lives in the same allocation (event_assign). */
    struct sl_request *r = sl_zalloc(sizeof(*r) + event_get_struct_event_size());

    if (r == NULL)
        return NULL;
    r->deadline = (struct event *)(r + 1);
    if (event_assign(r->deadline, q->base, -1, 0, request_on_deadline, r) != 0) {
        free(r);
        return NULL;
    }
    TAILQ_INIT(&r->last_headers);
    r->item.lane = SL_LANE_NORMAL;
    r->item.key_slot = SL_KEYS_NO_SLOT;
    /* Addresses are at most INET6_ADDRSTRLEN (46) with the NUL. */
    strncpy(r->client, client != NULL ? client : "-", sizeof(r->client) - 1);
    r->q = q;
    r->route = route;
    r->sink = sink;
    r->owner.gone = request_on_sink_gone;
    r->owner.eof = request_on_sink_eof;
    r->owner.drained = request_on_sink_drained;
    r->msg = msg;
    r->arrived_us = sl_clock_now();
    TAILQ_INSERT_TAIL(&q->live, r, link);
    q->n_live++;
    return r;
}

/* The Host the client asked for (routes may match on it), or NULL. */
static const char *request_host(const struct sl_http_msg *msg)
{
    return evhttp_find_header(&msg->headers, "Host");
}

/*
 * Normalise the target in place (path.h: the upstream gets the form that
 * was routed, so no spelling of a path reaches another route's), then find
 * the route. On a refusal returns NULL with *o and *detail set, and
 * *counted the route whose stats count it (NULL: the unrouted ones).
 */
static struct sl_route *route_target(struct sl_requests *q, struct sl_http_msg *msg,
                                     enum sl_outcome *o, const char **detail,
                                     struct sl_route **counted)
{
    char *target = msg->target;
    size_t len = strlen(target);
    struct sl_route *route;

    *counted = NULL;
    *o = SL_OUTCOME_NO_ROUTE;
    if (sl_path_normalize(target, len, target, len + 1, detail) != SL_OK) {
        *o = SL_OUTCOME_BAD_REQUEST;
        return NULL;
    }
    /* After normalising: "//_sluice/" and "/%5Fsluice/" are reserved too. */
    if (strncmp(target, RESERVED_PREFIX, strlen(RESERVED_PREFIX)) == 0) {
        *detail = "no such endpoint under the reserved prefix /_sluice/";
        return NULL;
    }
    route = sl_route_match_target(q->routes, request_host(msg), target);
    if (route == NULL) {
        *detail = "no route matches the path";
    } else if (strlen(route->cfg.upstream) + strlen(target) >= URL_MAX) {
        /* Refused now: at dispatch it would have cost a token (and a wait). */
        *o = SL_OUTCOME_URI_TOO_LONG;
        *detail = "the request target is too long for the upstream URL";
        *counted = route;
        route = NULL;
    }
    return route;
}

/* The route of msg; or answer the request and return NULL. */
static struct sl_route *intake_route(struct sl_requests *q, struct sl_sink *sink,
                                     const char *client, struct sl_http_msg *msg)
{
    struct sl_route *route, *counted;
    const char *detail = NULL;
    enum sl_outcome o;

    route = route_target(q, msg, &o, &detail, &counted);
    if (route == NULL)
        refuse(q, sink, client, counted != NULL ? &counted->stats : &q->unrouted, o, detail,
               false);
    return route;
}

#define KEY_AMBIGUOUS "the route's limit key appears more than once with different values"

static int key_id_of(const struct sl_route *route, const struct sl_http_msg *msg,
                     const char *client, uint64_t *id);

struct sl_route *sl_request_check(struct sl_requests *q, struct sl_http_msg *msg,
                                  enum sl_outcome *o, const char **detail)
{
    struct sl_route *route, *counted;
    struct controls c;
    uint64_t id;

    *detail = NULL;
    if (q->refuse_new) {
        *o = SL_OUTCOME_DRAINING;
        *detail = "sluice is shutting down";
        return NULL;
    }
    route = route_target(q, msg, o, detail, &counted);
    if (route != NULL && read_controls(q, route, msg, &c, detail) != SL_OK) {
        *o = SL_OUTCOME_BAD_REQUEST;
        route = NULL;
    } else if (route != NULL && route->keys != NULL && key_id_of(route, msg, NULL, &id) != SL_OK) {
        *o = SL_OUTCOME_BAD_REQUEST;
        *detail = KEY_AMBIGUOUS;
        route = NULL;
    }
    return route;
}

/* Does an Upgrade field of msg offer a protocol other than h2c? */
static bool wants_tunnel(const struct sl_http_msg *msg)
{
    const struct evkeyval *h;

    TAILQ_FOREACH(h, &msg->headers, next) {
        const char *p = h->value;

        if (strcasecmp(h->key, "Upgrade") != 0)
            continue;
        while (*p != '\0') {
            size_t n;

            p += strspn(p, " \t,");
            n = strcspn(p, ",");
            while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
                n--;
            if (n > 0 && !(n == 3 && strncasecmp(p, "h2c", 3) == 0))
                return true;
            p += strcspn(p, ",");
        }
    }
    return false;
}

/*
 * What sluice cannot do, refused before the request is parked (no token is
 * ever spent on it): SL_OUTCOME_RELAYED when there is nothing to refuse,
 * else the outcome with *detail.
 *
 * Upgrade (RFC 9110 7.8): a server may ignore it and answer in HTTP/1.1.
 * That is right for h2c (RFC 9113 3.1 deprecates it; the client takes the
 * HTTP/1.1 answer), but a WebSocket client reads a plain answer as a failed
 * handshake after the upstream spent a call on it: 501 until sluice can
 * tunnel.
 */
static enum sl_outcome intake_refusal(const struct sl_http_msg *msg, const char **detail)
{
    if (wants_tunnel(msg)) {
        *detail = "protocol upgrades (WebSocket) are not supported";
        return SL_OUTCOME_NOT_IMPLEMENTED;
    }
    return SL_OUTCOME_RELAYED;
}

/* The value of the route's fair_key header (borrowed from msg), or the key's id, or NULL. */
static const char *fair_key(const struct sl_request *r)
{
    const char *name = r->route->cfg.fair_key;

    if (r->key_table != NULL)
        return r->key_hex;
    return name[0] != '\0' ? evhttp_find_header(&r->msg->headers, name) : NULL;
}

/* --- limit_key ------------------------------------------------------------ */

/* Longest key value hashed whole; longer decoded query values share their first bytes. */
#define KEY_VALUE_MAX 1024

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/*
 * Decode one form-encoded query component [p, end) ('+' is a space, %XX a
 * byte; a stray '%' stays as it is) into out (at most size bytes kept).
 * Returns the decoded length kept.
 */
static size_t query_decode(const char *p, const char *end, char *out, size_t size)
{
    size_t n = 0;

    for (; p < end; p++) {
        char c = *p;

        if (c == '+') {
            c = ' ';
        } else if (c == '%' && end - p >= 3 && hex_digit(p[1]) >= 0 && hex_digit(p[2]) >= 0) {
            c = (char)(hex_digit(p[1]) * 16 + hex_digit(p[2]));
            p += 2;
        }
        if (n < size)
            out[n++] = c;
    }
    return n;
}

/*
 * The value of query parameter `name` in `target`, decoded as the upstream
 * will read it, into buf. Returns 1 (found, *len set), 0 (absent) or -1
 * (present twice with different values: which one the upstream counts is
 * its choice, so the request is refused).
 */
static int query_value(const char *target, const char *name, char *buf, size_t *len)
{
    const char *p = strchr(target, '?');
    char key[SL_CONFIG_HEADER_LEN], other[KEY_VALUE_MAX];
    size_t nlen = strlen(name);
    int found = 0;

    if (p == NULL)
        return 0;
    for (p++; *p != '\0' && *p != '#';) {
        size_t span = strcspn(p, "&#");
        const char *eq = memchr(p, '=', span);
        const char *kend = eq != NULL ? eq : p + span;
        size_t kn = query_decode(p, kend, key, sizeof(key));

        if (kn == nlen && memcmp(key, name, nlen) == 0) {
            const char *v = eq != NULL ? eq + 1 : p + span;
            size_t vn = query_decode(v, p + span, found ? other : buf, KEY_VALUE_MAX);

            if (found && (vn != *len || memcmp(other, buf, vn) != 0))
                return -1;
            *len = vn;
            found = 1;
        }
        p += span;
        if (*p == '&')
            p++;
    }
    return found;
}

/* The one value of header `name`; -1 if it is repeated with different values. */
static int header_value(const struct evkeyvalq *headers, const char *name, const char **value)
{
    const struct evkeyval *h;

    *value = NULL;
    TAILQ_FOREACH(h, headers, next) {
        if (strcasecmp(h->key, name) != 0)
            continue;
        if (*value != NULL && strcmp(*value, h->value) != 0)
            return -1;
        *value = h->value;
    }
    return 0;
}

/*
 * The id of the request's limit_key value in `route`'s keys: the default
 * bucket's when it has none (or an empty one). SL_ERR when the value is
 * ambiguous (repeated with different values).
 */
static int key_id_of(const struct sl_route *route, const struct sl_http_msg *msg,
                     const char *client, uint64_t *id)
{
    const struct sl_limit_key *lk = &route->cfg.limit_key;
    char buf[KEY_VALUE_MAX];
    const char *value = NULL;
    size_t len = 0;
    int rc;

    *id = SL_KEYS_DEFAULT_ID;
    if (lk->source == SL_KEY_HEADER) {
        if (header_value(&msg->headers, lk->name, &value) != 0)
            return SL_ERR;
        len = value != NULL ? strlen(value) : 0;
    } else if (lk->source == SL_KEY_QUERY) {
        rc = query_value(msg->target, lk->name, buf, &len);
        if (rc < 0)
            return SL_ERR;
        value = rc > 0 ? buf : NULL;
    } else if (lk->source == SL_KEY_CLIENT_IP) {
        value = client;
        len = client != NULL ? strlen(client) : 0;
    }
    if (value != NULL && len > 0)
        *id = sl_keys_id(route->keys, value, len);
    return SL_OK;
}

static void set_key_hex(struct sl_request *r)
{
    if (r->key_id == SL_KEYS_DEFAULT_ID)
        r->key_hex[0] = '\0';
    else
        snprintf(r->key_hex, sizeof(r->key_hex), "%016llx", (unsigned long long)r->key_id);
}

/*
 * Pin r to its key in its route's keys table (intake, or a move by a
 * reload). SL_OK (also when the route has no limit_key), SL_EAGAIN (the
 * table is at max_keys), SL_ENOMEM.
 */
static int key_pin(struct sl_request *r)
{
    struct sl_route *route = r->route;
    uint32_t slot;
    int rc;

    key_forget(r);
    if (route->keys == NULL)
        return SL_OK;
    rc = sl_keys_acquire(route->keys, r->key_id, sl_clock_now(), &slot);
    if (rc != SL_OK)
        return rc;
    r->key_table = route->keys;
    r->key_parked = true;
    r->item.key_slot = slot;
    set_key_hex(r);
    return SL_OK;
}

/* A request of r's key parks again (a retry): the same pin, or a new one after a reload. */
static int key_repin(struct sl_request *r)
{
    if (r->key_table != NULL && r->key_table == r->route->keys) {
        sl_keys_hold(r->key_table, r->item.key_slot);
        r->key_parked = true;
        return SL_OK;
    }
    if (r->route->keys != NULL &&
        key_id_of(r->route, r->msg, r->client, &r->key_id) != SL_OK)
        r->key_id = SL_KEYS_DEFAULT_ID;
    /* A retry is never refused for the cap: it shares the default bucket then. */
    if (key_pin(r) == SL_EAGAIN) {
        r->key_id = SL_KEYS_DEFAULT_ID;
        return key_pin(r);
    }
    return r->route->keys == NULL || r->key_table != NULL ? SL_OK : SL_ENOMEM;
}

/* Park r in its route's queue: SL_OK, SL_EAGAIN (full, reject mode) or SL_ENOMEM. */
static int intake_park(struct sl_request *r, enum sl_lane lane, size_t bytes)
{
    struct sl_requests *q = r->q;
    bool fits = sl_queue_fits(q->totals, bytes);
    int rc;

    if (!fits && q->cfg->overflow == SL_OVERFLOW_REJECT)
        return SL_EAGAIN;
    /* Backpressure: park anyway (at most one per open connection) and stop accepting. */
    rc = sl_queue_push(&r->route->queue, &r->item, lane, fair_key(r), bytes, r->arrived_us, true);
    if (rc != SL_OK)
        return rc;
    r->state = SL_REQ_PARKED;
    /* Reject mode keeps accepting: the client gets its 503 now, not after a wait. */
    if (q->cfg->overflow == SL_OVERFLOW_BACKPRESSURE && !sl_queue_fits(q->totals, 0))
        hook(q, q->hooks.queue_full);
    return SL_OK;
}

static void arm_deadline(struct sl_request *r)
{
    struct timeval tv = sl_clock_timeval(r->item.deadline_us - sl_clock_now());

    if (r->item.deadline_us == 0)
        return;
    evtimer_add(r->deadline, &tv);
}

void sl_request_submit(struct sl_requests *q, struct sl_sink *sink, struct sl_http_msg *msg,
                       const char *client)
{
    struct sl_route *route = NULL;
    struct sl_request *r;
    const char *detail = NULL;
    struct controls c;
    enum sl_outcome o;
    uint64_t key_id = SL_KEYS_DEFAULT_ID;
    bool at_once;
    int rc;

    if (q->refuse_new)
        sl_request_refuse(q, sink, client, SL_OUTCOME_DRAINING, "sluice is shutting down", true);
    else if ((route = intake_route(q, sink, client, msg)) == NULL)
        ;
    else if ((o = intake_refusal(msg, &detail)) != SL_OUTCOME_RELAYED)
        /* A client that asked to switch protocols gets no other request on it. */
        refuse(q, sink, client, &route->stats, o, detail, o == SL_OUTCOME_NOT_IMPLEMENTED);
    else if (read_controls(q, route, msg, &c, &detail) != SL_OK)
        refuse(q, sink, client, &route->stats, SL_OUTCOME_BAD_REQUEST, detail, false);
    else if (route->keys != NULL && key_id_of(route, msg, client, &key_id) != SL_OK)
        refuse(q, sink, client, &route->stats, SL_OUTCOME_BAD_REQUEST,
               KEY_AMBIGUOUS, false);
    else if ((r = request_new(q, sink, client, msg, route)) == NULL)
        refuse(q, sink, client, &route->stats, SL_OUTCOME_INTERNAL_ERROR, "out of memory", true);
    else
        goto admitted;
    sl_http_msg_free(msg);
    return;

admitted:
    r->item.deadline_us = c.timeout_us > 0 ? r->arrived_us + c.timeout_us : 0;
    r->item.units = c.units;
    r->key_id = key_id;
    rc = key_pin(r);
    if (rc != SL_OK) {
        request_finish(r, rc == SL_EAGAIN ? SL_OUTCOME_TOO_MANY_KEYS : SL_OUTCOME_INTERNAL_ERROR,
                       NULL, rc == SL_EAGAIN ? "the route tracks max_keys keys already"
                                             : "out of memory");
        return;
    }
    /* Alone in its queue and the route is ready: the kick below dispatches it. */
    at_once = sl_queue_depth(&route->queue) == 0 &&
              sl_dispatcher_ready(route, r->arrived_us, c.units, r->item.key_slot);
    rc = intake_park(r, c.lane, msg->header_bytes + sl_http_msg_body_len(msg));
    if (rc != SL_OK) {
        request_finish(r, rc == SL_EAGAIN ? SL_OUTCOME_QUEUE_FULL : SL_OUTCOME_INTERNAL_ERROR,
                       NULL, rc == SL_EAGAIN ? "the queue is full" : "out of memory");
        return;
    }
    sink->ops->adopt(sink, &r->owner);
    /* A request dispatched at once needs no timer (saves a heap insert and removal). */
    if (!at_once)
        arm_deadline(r);
    sl_dispatcher_kick(route);
}

void sl_request_sink_gone(struct sl_request *r)
{
    r->sink = NULL;
    r->route->stats.client_gone++;
    /*
     * Parked: leave without a token. In flight: the token is spent; let the
     * answer's head land (a 429 still pauses the route). Streaming: nobody
     * reads the rest, so the upstream transfer stops now.
     */
    if (r->state == SL_REQ_PARKED)
        request_finish(r, SL_OUTCOME_CLIENT_GONE, NULL, "the client closed the connection");
    else if (r->streaming)
        request_finish(r, SL_OUTCOME_CLIENT_GONE, NULL,
                       "the client closed the connection during the answer");
}

bool sl_request_sink_eof(struct sl_request *r)
{
    if (r->state != SL_REQ_PARKED || r->q->cfg->half_close == SL_HALF_CLOSE_WAIT)
        return true;
    sl_request_sink_gone(r);
    return false;
}

/* --- upstream ----------------------------------------------------------- */

static void count_upstream(struct sl_route *route, const struct sl_upstream_response *resp)
{
    sl_histogram_observe(&route->stats.upstream_duration, (double)resp->duration_us / 1e6);
    route->stats.tls_handshakes += resp->tls_handshakes;
    if (resp->error == SL_UPSTREAM_OK && resp->status > 0 &&
        resp->status < SL_METRICS_MAX_STATUS)
        route->stats.upstream_codes[resp->status]++;
    else
        route->stats.upstream_errors++;
}

/* Backoff between attempts after failures the upstream did not time for us. */
#define BACKOFF_BASE_US (100 * SL_USEC_PER_MSEC)
#define BACKOFF_CAP_US (10 * SL_USEC_PER_SEC)
/* 429 without Retry-After: the upstream's window is usually a second or more. */
#define BACKOFF_429_BASE_US SL_USEC_PER_SEC
#define BACKOFF_429_CAP_US (60 * SL_USEC_PER_SEC)
/* 429s are retried until the deadline; with no deadline, this many attempts. */
#define MAX_ATTEMPTS 100

static uint64_t jitter_state;

static uint64_t *jitter(void)
{
    if (jitter_state == 0)
        jitter_state = (uint64_t)sl_clock_wall() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15u;
    return &jitter_state;
}

/* Any RateLimit* or X-RateLimit* field? A cheap test before the full parse. */
static bool has_ratelimit_fields(const struct evkeyvalq *headers)
{
    const struct evkeyval *h;

    TAILQ_FOREACH(h, headers, next) {
        const char *k = h->key;

        if ((k[0] == 'x' || k[0] == 'X') && k[1] == '-')
            k += 2;
        if (strncasecmp(k, "RateLimit", 9) == 0)
            return true;
    }
    return false;
}

/*
 * A 429 or a spent budget: with limit_key the upstream counts per key, so
 * only r's key waits (the others go on); otherwise the route pauses.
 */
static void pause_limit(struct sl_request *r, int64_t now, int64_t pause_us,
                        enum sl_pause_reason why)
{
    struct sl_route *route = r->route;

    if (r->key_table == NULL || r->key_table != route->keys) {
        (void)sl_route_pause(route, now, pause_us, why);
        return;
    }
    if (pause_us <= 0)
        return;
    sl_keys_pause(r->key_table, r->item.key_slot, now + pause_us);
    sl_log_debug("key paused", "route=%s key=%08x pause_ms=%lld reason=%s", route->cfg.name,
                 sl_keys_digest(r->key_id), (long long)(pause_us / 1000),
                 sl_pause_reason_name(why));
}

/* What the upstream says about its own budget pauses the route before it has to 429. */
static void heed_upstream(struct sl_request *r, const struct sl_upstream_response *resp,
                          int64_t now)
{
    struct sl_route *route = r->route;
    int64_t pause = 0;
    struct sl_retry_policy policies[4];
    size_t n;

    if (resp->error != SL_UPSTREAM_OK)
        return;
    if (has_ratelimit_fields(&resp->headers) &&
        (n = sl_retry_ratelimit_policies(&resp->headers, policies, 4)) > 0)
        (void)sl_route_learn_budget(route, policies, n);
    if (!route->cfg.honor_retry_after)
        return;
    if (resp->status == 429 || resp->status == 503) {
        const char *ra = evhttp_find_header(&resp->headers, "Retry-After");

        if (ra != NULL && sl_retry_after_parse(ra, sl_clock_wall(), &pause) == 0) {
            if (resp->status == 429)
                pause_limit(r, now, pause, SL_PAUSED_BY_RETRY_AFTER);
            else /* unavailable: all keys */
                (void)sl_route_pause(route, now, pause, SL_PAUSED_BY_RETRY_AFTER);
        }
    }
    if (has_ratelimit_fields(&resp->headers) &&
        sl_retry_ratelimit_exhausted(&resp->headers, sl_clock_wall(), &pause) == 1)
        pause_limit(r, now, pause, SL_PAUSED_BY_BUDGET);
}

/*
 * Should this answer be retried, and after how long? Returns 1 and sets
 * *reason, *wait_us and *why (the upstream's Retry-After, or our backoff),
 * or 0 to give the client this answer.
 */
static int retry_plan(const struct sl_request *r, const struct sl_upstream_response *resp,
                      enum sl_retry_reason *reason, int64_t *wait_us, enum sl_pause_reason *why)
{
    const struct sl_route_config *cfg = &r->route->cfg;
    bool idem = sl_retry_idempotent(r->msg->method, &r->msg->headers);
    bool budget = r->attempts <= cfg->retries;
    const char *ra;

    *why = SL_PAUSED_BY_RETRY_AFTER;
    if (resp->error == SL_UPSTREAM_OK && resp->status == 429 && cfg->honor_retry_after) {
        *reason = SL_RETRY_STATUS_429;
        ra = evhttp_find_header(&resp->headers, "Retry-After");
        if (ra == NULL || sl_retry_after_parse(ra, sl_clock_wall(), wait_us) != 0) {
            *why = SL_PAUSED_BY_BACKOFF;
            *wait_us = sl_retry_backoff(r->attempts, BACKOFF_429_BASE_US, BACKOFF_429_CAP_US,
                                        jitter());
        }
        return r->attempts < MAX_ATTEMPTS;
    }
    /* SL_UPSTREAM_TLS (a certificate refused) is never retried: it would fail again. */
    if (resp->error == SL_UPSTREAM_CONNECT && budget) {
        *reason = SL_RETRY_CONNECT;
    } else if (resp->error == SL_UPSTREAM_CLOSED && budget && idem) {
        /* Most often the keep-alive race: a fresh connection goes at once,
         * as a new dispatch with its own token. */
        *reason = SL_RETRY_CLOSED;
        *wait_us = 0;
        return 1;
    } else if (resp->error == SL_UPSTREAM_TIMEOUT && budget && idem) {
        *reason = SL_RETRY_TIMEOUT;
    } else if (resp->error == SL_UPSTREAM_OK && budget && idem &&
               sl_retry_status_retryable(resp->status)) {
        *reason = resp->status == 502   ? SL_RETRY_STATUS_502
                  : resp->status == 503 ? SL_RETRY_STATUS_503
                                        : SL_RETRY_STATUS_504;
        ra = evhttp_find_header(&resp->headers, "Retry-After");
        if (resp->status == 503 && ra != NULL && cfg->honor_retry_after &&
            sl_retry_after_parse(ra, sl_clock_wall(), wait_us) == 0)
            return 1;
    } else {
        return 0;
    }
    *why = SL_PAUSED_BY_BACKOFF;
    *wait_us = sl_retry_backoff(r->attempts, BACKOFF_BASE_US, BACKOFF_CAP_US, jitter());
    return 1;
}

static void requeue(struct sl_request *r)
{
    struct sl_route *route = r->route;

    sl_route_flight_end(route);
    r->state = SL_REQ_NEW;
    /* Its key (or, after a reload, its new route's key or fair key) again. */
    if (key_repin(r) != SL_OK) {
        request_finish(r, SL_OUTCOME_INTERNAL_ERROR, NULL, "out of memory");
        return;
    }
    r->item.key = fair_key(r);
    if (sl_queue_push_head(&route->queue, &r->item) != SL_OK) {
        request_finish(r, SL_OUTCOME_INTERNAL_ERROR, NULL, "out of memory");
        return;
    }
    r->state = SL_REQ_PARKED;
    arm_deadline(r);
    sl_dispatcher_kick(route);
}

/* Will this answer be retried? retry_plan, where a retry can happen at all. */
static bool retry_allowed(const struct sl_request *r, const struct sl_upstream_response *resp,
                          int64_t now, enum sl_retry_reason *reason, int64_t *wait_us,
                          enum sl_pause_reason *why)
{
    /* A retired route (removed by a reload) has no queue that is served. */
    if (r->sink == NULL || r->q->no_retry || r->route->retired ||
        !retry_plan(r, resp, reason, wait_us, why))
        return false;
    /* A retry that cannot happen before the deadline is no retry: answer now. */
    return r->item.deadline_us == 0 || now + *wait_us < r->item.deadline_us;
}

/* Park the request again at the head of its lane, behind a route pause. */
static int try_retry(struct sl_request *r, struct sl_upstream_response *resp, int64_t now)
{
    enum sl_retry_reason reason;
    enum sl_pause_reason why;
    int64_t wait_us = 0;

    if (!retry_allowed(r, resp, now, &reason, &wait_us, &why))
        return 0;
    if (resp->error == SL_UPSTREAM_OK && keep_last(r, resp) != SL_OK)
        return 0;
    r->route->stats.retries[reason]++;
    if (reason == SL_RETRY_STATUS_429)
        pause_limit(r, now, wait_us, why);
    else
        (void)sl_route_pause(r->route, now, wait_us, why);
    sl_log_debug("retrying", "route=%s attempt=%u reason=%s wait_ms=%lld", r->route->cfg.name,
                 r->attempts, sl_retry_reason_name(reason), (long long)(wait_us / 1000));
    requeue(r);
    return 1;
}

/*
 * The head of an answer whose body is still coming: decided here, before a
 * byte reaches the client. An answer to retry, or for a sink that keeps it
 * whole, is gathered (under max_response_size); the rest streams, so a
 * large body never sits in memory. Nobody to answer: the transfer stops.
 */
static enum sl_upstream_take request_on_head(struct sl_upstream_response *resp, void *arg)
{
    struct sl_request *r = arg;
    struct sl_sink *sink = r->sink;
    int64_t now = sl_clock_now();
    enum sl_retry_reason reason;
    enum sl_pause_reason why;
    int64_t wait_us = 0;

    date_answer(r);
    if (sink == NULL)
        return SL_TAKE_NONE;
    if (sink->ops->begin == NULL || sink->ops->stores ||
        retry_allowed(r, resp, now, &reason, &wait_us, &why))
        return SL_TAKE_WHOLE;
    heed_upstream(r, resp, now);
    if (!relay_begin(r, resp)) {
        /* The head could not go: the client is as good as gone. */
        sink->ops->adopt(sink, NULL);
        r->sink = NULL;
        r->route->stats.client_gone++;
        return SL_TAKE_NONE;
    }
    r->streaming = true;
    r->stream_status = resp->status;
    return SL_TAKE_STREAM;
}

/* More of a streamed body: on to the client, until its buffer is full. */
static bool request_on_body(struct sl_upstream_response *resp, void *arg)
{
    struct sl_request *r = arg;

    return r->sink->ops->write(r->sink, resp->body);
}

/*
 * A streamed answer ended. Cut short, it is never retried (its head went
 * out): the client sees an incomplete answer, counted as upstream_broken.
 */
static void stream_done(struct sl_request *r, struct sl_upstream_response *resp)
{
    if (resp->error != SL_UPSTREAM_OK) {
        sl_log_debug("answer cut short", "route=%s status=%d detail=%s", r->route->cfg.name,
                     r->stream_status, resp->detail);
        request_finish(r, SL_OUTCOME_UPSTREAM_BROKEN, NULL, resp->detail);
        return;
    }
    if (evbuffer_get_length(resp->body) > 0)
        (void)r->sink->ops->write(r->sink, resp->body);
    request_finish(r, SL_OUTCOME_RELAYED, resp, NULL);
}

static void request_on_upstream(struct sl_upstream_response *resp, void *arg)
{
    struct sl_request *r = arg;
    int64_t now = sl_clock_now();

    r->call = NULL;
    date_answer(r);
    r->upstream_us += resp->duration_us;
    count_upstream(r->route, resp);
    if (r->streaming) {
        stream_done(r, resp);
        return;
    }
    heed_upstream(r, resp, now);
    if (try_retry(r, resp, now))
        return;
    if (r->sink == NULL)
        request_finish(r, SL_OUTCOME_CLIENT_GONE, NULL, "the client closed the connection");
    else if (resp->error == SL_UPSTREAM_OK)
        request_finish(r, SL_OUTCOME_RELAYED, resp, NULL);
    else if (resp->error == SL_UPSTREAM_TIMEOUT)
        request_finish(r, SL_OUTCOME_UPSTREAM_TIMEOUT, NULL, "the upstream did not answer in time");
    else if (resp->error == SL_UPSTREAM_TOO_LARGE)
        request_finish(r, SL_OUTCOME_RESPONSE_TOO_LARGE, NULL,
                       "the upstream response is larger than max_response_size");
    else
        request_finish(r, SL_OUTCOME_UPSTREAM_UNREACHABLE, NULL, resp->detail);
}

/*
 * Shared limits: Redis dated the dispatch when it granted it. One that left
 * much later (a new connection first) is recorded again at Redis's now.
 */
static void record_late_send(struct sl_request *r, int64_t now)
{
    struct sl_route *route = r->route;
    struct sl_shlimit_limits lim;
    uint32_t units = r->item.units > 0 ? r->item.units : 1;

    if (route->sched.shared == NULL ||
        now - r->sent_us <= sl_shlimit_record_after(&route->shared))
        return;
    sl_shlimit_limits_from(&lim, &route->limiter);
    if (sl_shlimit_record(route->sched.shared, route->cfg.name, &lim, units,
                          route->shared.epoch) != SL_OK)
        sl_log_warn("shared limit: a late send could not be recorded", "route=%s",
                    route->cfg.name);
}

/* Date the dispatch by when the request left (after a connect), not when it was decided. */
static void request_on_sent(void *arg)
{
    struct sl_request *r = arg;
    int64_t now = sl_clock_now();

    record_late_send(r, now);
    if (r->key_table != NULL)
        sl_keys_sent(r->key_table, r->item.key_slot, r->sent_us, now);
    else
        sl_limiter_sent(&r->route->limiter, r->sent_us, now);
    r->sent_us = now;
}

/*
 * The upstream URL: the route's base, then the target, without the matched
 * prefix when the route strips it (a target of the prefix alone becomes
 * "/"). The target was normalised before it was routed, so no dot segment
 * can climb out of the base path.
 */
static int upstream_url(const struct sl_route *route, const char *target, char *url,
                        size_t size)
{
    char stripped[URL_MAX];
    size_t n = strlen(route->cfg.match);

    /* A reload may have moved the request to a route whose prefix it lacks. */
    if (route->cfg.strip_prefix && strncmp(target, route->cfg.match, n) == 0) {
        const char *rest = target + n;

        if (snprintf(stripped, sizeof(stripped), "%s%s", rest[0] == '/' ? "" : "/", rest) >=
            (int)sizeof(stripped))
            return SL_ERR;
        target = stripped;
    }
    return sl_upstream_url(route->cfg.upstream, target, url, size);
}

/* The dispatcher popped r, took its token and counted it in flight: send it. */
static void request_dispatch(struct sl_request *r, int64_t now)
{
    struct sl_route *route = r->route;
    struct sl_upstream_request ur = {0};
    struct sl_forward_info fwd;
    char url[URL_MAX];

    r->state = SL_REQ_IN_FLIGHT;
    r->unanswered = true;
    r->key_parked = false; /* the dispatcher's take moved its key pin in flight */
    r->attempts++;
    r->dispatched_us = now;
    r->sent_us = now;
    evtimer_del(r->deadline);
    hook(r->q, r->q->hooks.queue_changed);
    if (r->sink != NULL && r->sink->ops->dispatched != NULL)
        r->sink->ops->dispatched(r->sink, r->attempts);
    if (upstream_url(route, r->msg->target, url, sizeof(url)) != SL_OK) {
        /* Only when a reload lengthened the route's base while it was parked. */
        request_finish(r, SL_OUTCOME_URI_TOO_LONG, NULL,
                       "the request target is too long for the upstream URL");
        return;
    }
    ur.method = r->msg->method;
    ur.url = url;
    fwd.client_addr = r->client;
    fwd.proto = "http";
    fwd.preserve_host = route->cfg.preserve_host;
    ur.headers = &r->msg->headers;
    ur.forward = &fwd;
    ur.sent = request_on_sent;
    ur.body_len = sl_http_msg_body_len(r->msg);
    ur.body = ur.body_len > 0 ? evbuffer_pullup(r->msg->body, -1) : NULL;
    ur.timeout_us = route->cfg.timeout_us;
    ur.tls = &route->cfg.tls;
    ur.head = request_on_head;
    ur.body_chunk = request_on_body;
    ur.max_body = route->cfg.max_response_size;
    r->call = sl_upstream_start(r->q->upstream, &ur, request_on_upstream, r);
    if (r->call == NULL)
        request_finish(r, SL_OUTCOME_INTERNAL_ERROR, NULL, "could not start the upstream call");
}

static void requests_on_dispatch(struct sl_route *route, struct sl_queue_item *it, int64_t now,
                                 void *arg)
{
    (void)route;
    (void)arg;
    request_dispatch(request_of_item(it), now);
}

static void requests_on_expire(struct sl_route *route, struct sl_queue_item *it, void *arg)
{
    (void)route;
    (void)arg;
    request_expire(request_of_item(it));
}

const struct sl_dispatch_ops sl_request_dispatch_ops = {
    .dispatch = requests_on_dispatch,
    .expire = requests_on_expire,
};

/* --- the set of live requests ------------------------------------------- */

void sl_requests_init(struct sl_requests *q, struct event_base *base)
{
    memset(q, 0, sizeof(*q));
    q->base = base;
    TAILQ_INIT(&q->live);
}

void sl_requests_finish_all(struct sl_requests *q, bool all, const char *detail)
{
    struct sl_request *r, *next;

    for (r = TAILQ_FIRST(&q->live); r != NULL; r = next) {
        next = TAILQ_NEXT(r, link);
        if (all || r->state == SL_REQ_PARKED)
            request_finish(r, SL_OUTCOME_DRAINING, NULL, detail);
    }
}

/* Park r (popped from its old route's queue) at the tail of its lane in `to`. */
static int move_parked(struct sl_request *r, struct sl_route *to)
{
    struct sl_queue_item *it = &r->item;
    int64_t since = it->enqueued_us;

    if (to == NULL)
        return SL_ERR;
    /* Its key in the old route's table lets go; `to` may have taken that table over. */
    key_unpin(r);
    if (r->key_table != to->keys)
        key_forget(r);
    r->route = to;
    if (key_repin(r) != SL_OK)
        return SL_ERR;
    /* Forced and into an existing lane: the pop just returned the capacity. */
    if (sl_queue_push(&to->queue, it, it->lane, fair_key(r), it->bytes, since, true) != SL_OK)
        return SL_ERR;
    it->enqueued_us = since;
    return SL_OK;
}

void sl_requests_move_route(struct sl_requests *q, struct sl_route *from, struct sl_route *to,
                            const struct sl_route_table *t)
{
    struct sl_queue_item *it;
    struct sl_request *r;

    sl_queue_unblock_all(&from->queue);
    while ((it = sl_queue_pop(&from->queue)) != NULL) {
        r = request_of_item(it);
        if (move_parked(r, to != NULL ? to : sl_route_match_target(t, request_host(r->msg),
                                                                   r->msg->target)) ==
            SL_OK)
            continue;
        r->state = SL_REQ_NEW;
        request_finish(r, to != NULL ? SL_OUTCOME_INTERNAL_ERROR : SL_OUTCOME_NO_ROUTE, NULL,
                       to != NULL ? "out of memory during reload"
                                  : "the route of this request was removed by a reload");
    }
    if (to == NULL)
        return;
    TAILQ_FOREACH(r, &q->live, link) {
        if (r->route == from && r->state == SL_REQ_IN_FLIGHT) {
            r->route = to;
            sl_route_flight_move(from, to);
            /* Its key's table goes with `from`: nothing is left to date. */
            if (r->key_table != NULL && r->key_table != to->keys) {
                key_forget(r);
                r->unanswered = false;
            }
        }
    }
}
