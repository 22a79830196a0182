/*
 * admin.c - /health, /metrics and /status on the admin listener.
 */
#include "admin.h"

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
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "queue.h"
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
    if (v->draining)
        reply_json(req, 503, json_pack("{s:s,s:s}", "status", "draining", "reason",
                                       "shutting down"));
    else
        reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
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
        if (r->keys != NULL) {
            views[i].keyed = true;
            views[i].keys_live = sl_keys_live(r->keys);
            views[i].keys_evicted = r->keys->evictions;
            views[i].keys_bytes = sl_keys_bytes(r->keys);
        }
        if (r->budget.known) {
            views[i].announced = true;
            views[i].announced_n = r->budget.n;
            views[i].announced_window_s = (double)r->budget.window_us / 1e6;
            views[i].allows = r->budget.allows;
            views[i].above = r->budget.above;
        }
    }
    memset(&g, 0, sizeof(g));
    g.queue_depth = v->totals->depth;
    g.queue_bytes = v->totals->bytes;
    g.connections = v->connections;
    g.draining = v->draining;
    g.reloads = v->reloads;
    g.start_time_seconds = v->start_time;
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

/* Keys shown by digest in /status, busiest first. */
#define STATUS_TOP_KEYS 10

static const char *const key_sources[] = {"", "header", "query", "client_ip"};

/* limit_key in /status: counts and the busiest keys by digest (never a value). */
static json_t *keys_json(const struct sl_route *r)
{
    struct sl_keys_top top[STATUS_TOP_KEYS];
    size_t n = sl_keys_busiest(r->keys, top, STATUS_TOP_KEYS);
    json_t *busiest = json_array();
    const struct sl_limit_key *lk = &r->cfg.limit_key;
    char source[SL_CONFIG_HEADER_LEN + 16];
    char digest[9];

    snprintf(source, sizeof(source), "%s%s%s", key_sources[lk->source],
             lk->name[0] != '\0' ? ":" : "", lk->name);
    for (size_t i = 0; i < n; i++) {
        snprintf(digest, sizeof(digest), "%08x", top[i].digest);
        json_array_append_new(busiest, json_pack("{s:s,s:I,s:I,s:I}", "digest", digest,
                                                 "units", (json_int_t)top[i].units, "parked",
                                                 (json_int_t)top[i].parked, "in_flight",
                                                 (json_int_t)top[i].in_flight));
    }
    return json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:b,s:o}", "limit_key", source, "live",
                     (json_int_t)sl_keys_live(r->keys), "max", (json_int_t)r->keys->max_keys,
                     "evictions", (json_int_t)r->keys->evictions, "refused",
                     (json_int_t)r->keys->refused, "bytes", (json_int_t)sl_keys_bytes(r->keys),
                     "compact", r->keys->compact, "busiest", busiest);
}

/* What the upstream announces against what the route allows, or null. */
static json_t *budget_json(const struct sl_route *r)
{
    const struct sl_route_budget *b = &r->budget;

    if (!b->known)
        return json_null();
    return json_pack("{s:f,s:f,s:f,s:b}", "n", b->n, "period_s", (double)b->window_us / 1e6,
                     "configured_allows", b->allows, "configured_above", b->above);
}

static json_t *route_json(const struct sl_route *r, int64_t now)
{
    json_t *j;
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
    j = json_pack("{s:s,s:s,s:s,s:o,s:i,s:o,s:I,s:o,s:o,s:o,s:I,s:o}", "name", r->cfg.name,
              "match", r->cfg.match, "upstream", r->cfg.upstream, "rate",
              limit_json(&r->cfg.rate), "burst", (int)r->cfg.burst, "quotas", quotas,
              "in_flight", (json_int_t)r->in_flight, "depth", depth,
              "next_dispatch_in_ms",
              next > 0 ? json_real((double)(next - now) / 1000.0) : json_null(),
              "paused_for_ms",
              r->paused_until_us > now ? json_real((double)(r->paused_until_us - now) / 1000.0)
                                       : json_null(),
              "dispatched", (json_int_t)r->stats.dispatched, "outcomes", outcomes);
    if (j == NULL)
        return NULL;
    json_object_set_new(j, "upstream_limit", budget_json(r));
    if (r->keys != NULL)
        json_object_set_new(j, "keys", keys_json(r));
    return j;
}

static void admin_status(const struct sl_admin_view *v, struct evhttp_request *req)
{
    int64_t now = sl_clock_now();
    json_t *routes = json_array();

    for (size_t i = 0; i < v->n_routes; i++)
        json_array_append_new(routes, route_json(v->routes[i], now));
    reply_json(req, 200,
               json_pack("{s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:o}", "version", SLUICE_VERSION,
                         "draining", v->draining, "queue_depth", (json_int_t)v->totals->depth,
                         "queue_bytes", (json_int_t)v->totals->bytes, "queue_max_depth",
                         (json_int_t)v->totals->max_depth, "connections",
                         (json_int_t)v->connections, "reloads", (json_int_t)v->reloads,
                         "routes", routes));
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
