/*
 * admin.c - /health, /metrics and /status on the admin listener.
 */
#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <jansson.h>

#include "clock.h"
#include "dispatcher.h"
#include "jobs.h"
#include "log.h"
#include "metrics.h"
#include "queue.h"
#include "redis.h"
#include "route.h"
#include "sluice.h"

struct sl_admin {
    struct evhttp *http;
    sl_admin_view_fn view;
    void *view_arg;
};

static void reply(struct evhttp_request *req, int status, const char *type,
                  struct evbuffer *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
    evhttp_send_reply(req, status, NULL, body);
}

static void reply_text(struct evhttp_request *req, int status, const char *type, const char *text)
{
    struct evbuffer *b = evbuffer_new();

    if (b == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add(b, text, strlen(text));
    reply(req, status, type, b);
    evbuffer_free(b);
}

static void reply_json(struct evhttp_request *req, int status, json_t *j)
{
    char *s = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    if (s == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    reply_text(req, status, "application/json", s);
    free(s);
}

static void admin_health(const struct sl_admin_view *v, struct evhttp_request *req)
{
    const char *why = NULL;
    char reason[256];

    if (v->draining) {
        reply_json(req, 503, json_pack("{s:s,s:s}", "status", "draining", "reason",
                                       "shutting down"));
    } else if (v->jobs != NULL && !sl_jobs_healthy(v->jobs, &why)) {
        snprintf(reason, sizeof(reason), "redis unreachable: %s", why);
        reply_json(req, 503, json_pack("{s:s,s:s}", "status", "redis_unavailable", "reason",
                                       reason));
    } else {
        reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
    }
}

static uint64_t reconnects(const struct sl_redis_stats *s)
{
    return s->connects > 0 ? s->connects - 1 : 0;
}

static void streams_view(const struct sl_jobs *jobs, struct sl_metrics_route *m)
{
    struct sl_jobs_route jr;

    if (jobs == NULL || !sl_jobs_route(jobs, m->name, &jr))
        return;
    m->has_streams = true;
    m->stream_length = jr.length > 0 ? (uint64_t)jr.length : 0;
    m->stream_pending = jr.pending > 0 ? (uint64_t)jr.pending : 0;
    m->dead_letter_length = jr.dead > 0 ? (uint64_t)jr.dead : 0;
}

static void admin_metrics(const struct sl_admin_view *v, struct evhttp_request *req)
{
    size_t n = v->n_routes + v->n_retired;
    struct sl_metrics_route *views = calloc(n + 1, sizeof(*views));
    struct sl_metrics_global g;
    struct evbuffer *b = evbuffer_new();

    if (views == NULL || b == NULL)
        goto fail;
    /* Retired routes (removed by a reload, calls still under way) count too. */
    for (size_t i = 0; i < n; i++) {
        const struct sl_route *r = i < v->n_routes ? v->routes[i] : v->retired[i - v->n_routes];

        views[i].name = r->cfg.name;
        views[i].stats = &r->stats;
        for (int l = 0; l < SL_LANE_COUNT; l++)
            views[i].lane_depth[l] = sl_queue_lane_depth(&r->queue, (enum sl_lane)l);
        views[i].in_flight = r->in_flight;
        views[i].paused = r->paused_until_us > sl_clock_now();
        streams_view(v->jobs, &views[i]);
    }
    memset(&g, 0, sizeof(g));
    g.queue_depth = v->totals->depth;
    g.queue_bytes = v->totals->bytes;
    g.connections = v->connections;
    g.draining = v->draining;
    g.reloads = v->reloads;
    g.start_time_seconds = v->start_time;
    if (v->jobs != NULL) {
        struct sl_jobs_stats js;

        sl_jobs_stats(v->jobs, &js);
        for (int s = 0; s < SL_JOB_STATE_COUNT; s++)
            g.jobs[s] = js.by_state[s];
        g.jobs_accepted = js.accepted;
        g.jobs_expired = js.expired;
        g.jobs_evicted = js.evicted;
        if (js.durable) {
            g.has_redis = true;
            g.redis_up = js.redis_up;
            g.jobs_dead_lettered = js.dead_lettered;
            g.redis_reconnects = reconnects(js.redis) + reconnects(js.reader);
            g.redis_timeouts = js.redis->timeouts + js.reader->timeouts;
            g.redis_rtt = &js.redis->rtt;
        }
    }
    if (sl_metrics_write(b, views, n, v->unrouted, &g) != SL_OK)
        goto fail;
    reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", b);
    evbuffer_free(b);
    free(views);
    return;
fail:
    if (b != NULL)
        evbuffer_free(b);
    free(views);
    evhttp_send_error(req, 500, NULL);
}

static json_t *limit_json(const struct sl_limit *l)
{
    return json_pack("{s:f,s:f}", "n", l->n, "period_s", (double)l->period_us / 1e6);
}

/* The route's streams (durable jobs), or null. */
static json_t *route_streams_json(const struct sl_jobs *jobs, const char *name)
{
    struct sl_jobs_route jr;

    if (jobs == NULL || !sl_jobs_route(jobs, name, &jr))
        return json_null();
    return json_pack("{s:I,s:I,s:I}", "stream_length", (json_int_t)jr.length, "pending",
                     (json_int_t)jr.pending, "dead_letter", (json_int_t)jr.dead);
}

static json_t *route_json(const struct sl_route *r, int64_t now)
{
    json_t *quotas = json_array();
    json_t *outcomes = json_object();
    json_t *depth = json_object();
    int64_t next = sl_dispatcher_next(r);

    for (size_t i = 0; i < r->cfg.n_quotas; i++)
        json_array_append_new(quotas, limit_json(&r->cfg.quotas[i]));
    for (int o = 0; o < SL_OUTCOME_COUNT; o++)
        json_object_set_new(outcomes, sl_outcome_name((enum sl_outcome)o),
                            json_integer((json_int_t)r->stats.outcomes[o]));
    for (int l = 0; l < SL_LANE_COUNT; l++)
        json_object_set_new(depth, sl_lane_name((enum sl_lane)l),
                            json_integer((json_int_t)sl_queue_lane_depth(&r->queue,
                                                                         (enum sl_lane)l)));
    return json_pack("{s:s,s:s,s:s,s:o,s:i,s:o,s:I,s:o,s:o,s:o,s:I,s:o}", "name", r->cfg.name,
                     "match", r->cfg.match, "upstream", r->cfg.upstream, "rate",
                     limit_json(&r->cfg.rate), "burst", (int)r->cfg.burst, "quotas", quotas,
                     "in_flight", (json_int_t)r->in_flight, "depth", depth,
                     "next_dispatch_in_ms",
                     next > 0 ? json_real((double)(next - now) / 1000.0) : json_null(),
                     "paused_for_ms",
                     r->paused_until_us > now ? json_real((double)(r->paused_until_us - now) / 1000.0)
                                              : json_null(),
                     "dispatched", (json_int_t)r->stats.dispatched, "outcomes", outcomes);
}

static json_t *jobs_json(const struct sl_jobs *jobs)
{
    struct sl_jobs_stats js;
    json_t *o;

    if (jobs == NULL)
        return json_null();
    sl_jobs_stats(jobs, &js);
    o = json_pack("{s:s,s:b,s:I,s:I,s:I,s:I,s:I}", "mode", js.durable ? "redis" : "memory",
                  "durable", js.durable, "accepted", (json_int_t)js.accepted, "expired",
                  (json_int_t)js.expired, "evicted", (json_int_t)js.evicted, "too_large",
                  (json_int_t)js.too_large, "stored_bytes", (json_int_t)js.stored_bytes);
    if (o == NULL)
        return NULL;
    for (int s = 0; s < SL_JOB_STATE_COUNT; s++)
        json_object_set_new(o, sl_job_state_name((enum sl_job_state)s),
                            json_integer((json_int_t)js.by_state[s]));
    if (!js.durable) {
        json_object_set_new(o, "note", json_string("memory mode: jobs are not durable, they "
                                                   "are lost when sluice stops"));
        return o;
    }
    json_object_set_new(o, "held", json_integer((json_int_t)js.held));
    json_object_set_new(o, "dead_lettered", json_integer((json_int_t)js.dead_lettered));
    json_object_set_new(o, "consumer", json_string(js.consumer));
    json_object_set_new(o, "redis",
                        json_pack("{s:s,s:b,s:s,s:I,s:I,s:I}", "addr", js.redis_addr, "up",
                                  js.redis_up, "error", js.redis_error, "connects",
                                  (json_int_t)js.redis->connects, "failures",
                                  (json_int_t)js.redis->failures, "timeouts",
                                  (json_int_t)js.redis->timeouts));
    return o;
}

static void admin_status(const struct sl_admin_view *v, struct evhttp_request *req)
{
    int64_t now = sl_clock_now();
    json_t *routes = json_array();

    for (size_t i = 0; i < v->n_routes; i++) {
        json_t *rj = route_json(v->routes[i], now);

        json_object_set_new(rj, "jobs", route_streams_json(v->jobs, v->routes[i]->cfg.name));
        json_array_append_new(routes, rj);
    }
    reply_json(req, 200,
               json_pack("{s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:o,s:o}", "version", SLUICE_VERSION,
                         "draining", v->draining, "queue_depth", (json_int_t)v->totals->depth,
                         "queue_bytes", (json_int_t)v->totals->bytes, "queue_max_depth",
                         (json_int_t)v->totals->max_depth, "connections",
                         (json_int_t)v->connections, "reloads", (json_int_t)v->reloads,
                         "routes", routes, "jobs", jobs_json(v->jobs)));
}

/* Constant time in the token's bytes: response timing must not reveal a matching prefix. */
static bool token_equal(const char *given, const char *token)
{
    size_t gl = strlen(given), tl = strlen(token);
    unsigned char diff = gl != tl;

    for (size_t i = 0; i < tl; i++)
        diff |= (unsigned char)(token[i] ^ given[i < gl ? i : 0]);
    return diff == 0;
}

static bool authorized(const char *token, struct evhttp_request *req)
{
    const char *auth;

    if (token == NULL || token[0] == '\0')
        return true;
    auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    return auth != NULL && strncmp(auth, "Bearer ", 7) == 0 && token_equal(auth + 7, token);
}

static void admin_on_request(struct evhttp_request *req, void *arg)
{
    struct sl_admin *a = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    struct sl_admin_view v;

    memset(&v, 0, sizeof(v));
    a->view(&v, a->view_arg);
    if (!authorized(v.token, req)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
        reply_text(req, 401, "application/json", "{\"error\":\"unauthorized\"}\n");
    } else if (path == NULL) {
        reply_text(req, 400, "application/json", "{\"error\":\"bad_request\"}\n");
    } else if (strcmp(path, "/health") == 0) {
        admin_health(&v, req);
    } else if (strcmp(path, "/metrics") == 0) {
        admin_metrics(&v, req);
    } else if (strcmp(path, "/status") == 0) {
        admin_status(&v, req);
    } else {
        reply_text(req, 404, "application/json", "{\"error\":\"not_found\"}\n");
    }
}

struct sl_admin *sl_admin_new(struct event_base *base, const char *addr, sl_admin_view_fn view,
                              void *arg)
{
    struct sl_admin *a = calloc(1, sizeof(*a));
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    struct evconnlistener *lev;

    if (a == NULL)
        return NULL;
    a->view = view;
    a->view_arg = arg;
    a->http = evhttp_new(base);
    if (a->http == NULL)
        goto fail;
    if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss, &len) != 0) {
        sl_log_error("cannot parse admin_listen", "addr=%s", addr);
        goto fail;
    }
    lev = evconnlistener_new_bind(base, NULL, NULL,
                                  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC |
                                      LEV_OPT_REUSEABLE,
                                  128, (struct sockaddr *)&ss, len);
    if (lev == NULL) {
        sl_log_error("cannot listen", "addr=%s reason=\"%s\"", addr,
                     evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        goto fail;
    }
    if (evhttp_bind_listener(a->http, lev) == NULL) {
        evconnlistener_free(lev);
        goto fail;
    }
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_timeout(a->http, 10);
    evhttp_set_max_headers_size(a->http, 16384);
    evhttp_set_max_body_size(a->http, 4096);
    evhttp_set_gencb(a->http, admin_on_request, a);
    sl_log_info("admin listening", "addr=%s", addr);
    return a;
fail:
    if (a->http != NULL)
        evhttp_free(a->http);
    free(a);
    return NULL;
}

void sl_admin_free(struct sl_admin *a)
{
    if (a == NULL)
        return;
    evhttp_free(a->http);
    free(a);
}
