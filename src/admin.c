/*
 * admin.c - /health, /metrics, /status and the status page on the admin listener.
 *
 * The page (GET /) is one static HTML file with its script and styles
 * inline; it reads /status every second. Its Content-Security-Policy lets
 * it talk to this listener only.
 */
#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <jansson.h>

#include "clock.h"
#include "dispatcher.h"
#include "jobcodec.h"
#include "jobs.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "queue.h"
#include "redis.h"
#include "shlimit.h"
#include "route.h"
#include "sluice.h"
#include "status_page.h"

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
    } else if (v->shared != NULL && !sl_shlimit_up(v->shared)) {
        /* Strictness first: shared routes dispatch nothing without Redis. */
        snprintf(reason, sizeof(reason),
                 "redis unreachable (shared_limit: nothing is dispatched): %s",
                 sl_shlimit_error(v->shared));
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

/* enqueued_us of the route's oldest parked request, INT64_MAX when none. */
static int64_t route_oldest(const struct sl_route *r)
{
    int64_t oldest = INT64_MAX;

    for (int l = 0; l < SL_LANE_COUNT; l++) {
        int64_t t = sl_queue_oldest(&r->queue, (enum sl_lane)l);

        if (t < oldest)
            oldest = t;
    }
    return oldest;
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
        int64_t now = sl_clock_now(), oldest = route_oldest(r);

        views[i].name = r->cfg.name;
        views[i].stats = &r->stats;
        for (int l = 0; l < SL_LANE_COUNT; l++)
            views[i].lane_depth[l] = sl_queue_lane_depth(&r->queue, (enum sl_lane)l);
        views[i].in_flight = r->in_flight;
        views[i].paused = r->paused_until_us > now;
        views[i].pause_reason = r->pause_reason;
        views[i].max_in_flight = r->cfg.max_in_flight;
        views[i].oldest_wait_seconds = oldest < now ? (double)(now - oldest) / 1e6 : 0;
        views[i].cfg = &r->cfg;
        streams_view(v->jobs, &views[i]);
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
    g.connections_accepted = v->connections_accepted;
    g.write_errors = v->write_errors;
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
    if (v->shared != NULL) {
        struct sl_shlimit_stats ss;

        sl_shlimit_stats(v->shared, &ss);
        g.has_shared = true;
        g.shared_up = ss.up;
        memcpy(g.shared_decisions, ss.decisions, sizeof(g.shared_decisions));
        g.shared_blocked_seconds = ss.blocked_seconds;
        g.shared_reconnects = reconnects(ss.redis);
        g.shared_timeouts = ss.redis->timeouts;
        g.shared_records = ss.records;
        g.shared_rtt = &ss.redis->rtt;
    }
    g.batches = v->batches;
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

/* The route's streams (durable jobs), or null. */
static json_t *route_streams_json(const struct sl_jobs *jobs, const char *name)
{
    struct sl_jobs_route jr;

    if (jobs == NULL || !sl_jobs_route(jobs, name, &jr))
        return json_null();
    return json_pack("{s:I,s:I,s:I}", "stream_length", (json_int_t)jr.length, "pending",
                     (json_int_t)jr.pending, "dead_letter", (json_int_t)jr.dead);
}

/* Milliseconds since a monotonic instant; null for INT64_MAX (nothing parked). */
static json_t *age_ms(int64_t since, int64_t now)
{
    return since == INT64_MAX ? json_null()
                              : json_real((double)(now > since ? now - since : 0) / 1000.0);
}

/*
 * What the status page shows beyond the totals: the oldest parked request,
 * the pause's reason and end, dispatch rates over the last 10 s and 60 s
 * (complete seconds; fewer while sluice is younger than that) and each of
 * the last SL_RECENT_SECONDS - 1 complete seconds, and the last minute's
 * outcomes.
 */
static void route_recent_json(json_t *o, const struct sl_route *r, int64_t now, double wall,
                              double uptime)
{
    static const unsigned windows[] = {10, 60};
    json_t *by_lane = json_object(), *rates = json_object(), *history = json_array();
    json_t *outcomes = json_object();
    bool paused = r->paused_until_us > now;

    for (int l = 0; l < SL_LANE_COUNT; l++)
        json_object_set_new(by_lane, sl_lane_name((enum sl_lane)l),
                            age_ms(sl_queue_oldest(&r->queue, (enum sl_lane)l), now));
    for (size_t i = 0; i < SL_ARRAY_LEN(windows); i++) {
        char key[8];
        double span = uptime < windows[i] ? (uptime >= 1 ? (double)(int64_t)uptime : 1)
                                          : windows[i];

        snprintf(key, sizeof(key), "%us", windows[i]);
        json_object_set_new(
            rates, key,
            json_real((double)sl_recent_sum(&r->stats.recent_dispatched, now, 1, windows[i]) /
                      span));
    }
    for (unsigned ago = SL_RECENT_SECONDS - 1; ago >= 1; ago--)
        json_array_append_new(history,
                              json_integer(sl_recent_at(&r->stats.recent_dispatched, now, ago)));
    for (int k = 0; k < SL_OUTCOME_COUNT; k++)
        json_object_set_new(outcomes, sl_outcome_name((enum sl_outcome)k),
                            json_integer((json_int_t)sl_recent_set_sum(
                                &r->stats.recent_outcomes, now, (unsigned)k, 0,
                                SL_RECENT_SET_SECONDS)));
    json_object_set_new(o, "max_in_flight", json_integer((json_int_t)r->cfg.max_in_flight));
    json_object_set_new(o, "oldest_wait_ms", age_ms(route_oldest(r), now));
    json_object_set_new(o, "oldest_wait_ms_by_lane", by_lane);
    json_object_set_new(o, "paused_until",
                        paused ? json_real(wall + (double)(r->paused_until_us - now) / 1e6)
                               : json_null());
    json_object_set_new(o, "pause_reason",
                        paused ? json_string(sl_pause_reason_name(r->pause_reason))
                               : json_null());
    json_object_set_new(o, "dispatch_rate", rates);
    json_object_set_new(o, "dispatch_history", history);
    json_object_set_new(o, "outcomes_60s", outcomes);
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
    /* Batch jobs belong to no route: their stream is shown here. */
    json_object_set_new(o, "batch_stream", route_streams_json(jobs, SL_JOB_BATCH_STREAM));
    json_object_set_new(o, "consumer", json_string(js.consumer));
    json_object_set_new(o, "redis",
                        json_pack("{s:s,s:b,s:s,s:I,s:I,s:I}", "addr", js.redis_addr, "up",
                                  js.redis_up, "error", js.redis_error, "connects",
                                  (json_int_t)js.redis->connects, "failures",
                                  (json_int_t)js.redis->failures, "timeouts",
                                  (json_int_t)js.redis->timeouts));
    return o;
}

/* [redis] shared_limit: where the limits are decided, and how that goes; null when in memory. */
static json_t *shared_json(const struct sl_shlimit *shared)
{
    struct sl_shlimit_stats ss;
    json_t *o, *d;

    if (shared == NULL)
        return json_null();
    sl_shlimit_stats(shared, &ss);
    d = json_pack("{s:I,s:I,s:I,s:I}", "go", (json_int_t)ss.decisions[SL_SHARED_GO], "wait",
                  (json_int_t)ss.decisions[SL_SHARED_WAIT], "error",
                  (json_int_t)ss.decisions[SL_SHARED_ERROR], "late",
                  (json_int_t)ss.decisions[SL_SHARED_LATE]);
    o = json_pack("{s:s,s:b,s:s,s:o,s:f}", "addr", sl_shlimit_addr(shared), "up", ss.up,
                  "error", sl_shlimit_error(shared), "decisions", d, "blocked_seconds",
                  ss.blocked_seconds);
    return o != NULL ? o : json_null();
}

static void admin_status(const struct sl_admin_view *v, struct evhttp_request *req)
{
    int64_t now = sl_clock_now();
    double wall = (double)sl_clock_wall() / 1e6;
    json_t *routes = json_array(), *codes = json_object(), *doc;

    for (size_t i = 0; i < v->n_routes; i++) {
        json_t *r = route_json(v->routes[i], now);

        if (r != NULL) {
            route_recent_json(r, v->routes[i], now, wall, wall - v->start_time);
            json_object_set_new(r, "jobs", route_streams_json(v->jobs, v->routes[i]->cfg.name));
        }
        json_array_append_new(routes, r);
    }
    for (int k = 0; k < SL_OUTCOME_COUNT; k++)
        json_object_set_new(codes, sl_outcome_name((enum sl_outcome)k),
                            json_integer(sl_outcome_status((enum sl_outcome)k)));
    doc = json_pack("{s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:o}", "version", SLUICE_VERSION, "draining",
                    v->draining, "queue_depth", (json_int_t)v->totals->depth, "queue_bytes",
                    (json_int_t)v->totals->bytes, "queue_max_depth",
                    (json_int_t)v->totals->max_depth, "connections", (json_int_t)v->connections,
                    "reloads", (json_int_t)v->reloads, "routes", routes);
    if (doc != NULL) {
        json_object_set_new(doc, "now", json_real(wall));
        json_object_set_new(doc, "start_time", json_real(v->start_time));
        json_object_set_new(doc, "last_reload",
                            v->last_reload > 0 ? json_real(v->last_reload) : json_null());
        json_object_set_new(doc, "reload_refused", json_boolean(v->reload_refused));
        json_object_set_new(doc, "retired_routes", json_integer((json_int_t)v->n_retired));
        json_object_set_new(doc, "outcome_status", codes);
        json_object_set_new(doc, "jobs", jobs_json(v->jobs));
        json_object_set_new(doc, "shared_limit", shared_json(v->shared));
    } else {
        json_decref(codes);
    }
    reply_json(req, 200, doc);
}

/* What the page may load and talk to: itself, and this listener's /status. */
#define PAGE_POLICY                                                                        \
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "          \
    "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "             \
    "frame-ancestors 'none'"

static void page_headers(struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    evhttp_add_header(h, "Content-Security-Policy", PAGE_POLICY);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "Referrer-Policy", "no-referrer");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
}

static void admin_page(struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();

    if (b == NULL || evbuffer_add_reference(b, sl_status_page, sl_status_page_len, NULL,
                                            NULL) != 0) {
        if (b != NULL)
            evbuffer_free(b);
        evhttp_send_error(req, 500, NULL);
        return;
    }
    page_headers(req);
    reply(req, 200, "text/html; charset=utf-8", b);
    evbuffer_free(b);
}

/* A browser cannot send a bearer token by itself: ask for it. */
static const char token_form[] =
    "<!doctype html><meta charset=utf-8><title>sluice: token</title>"
    "<link rel=icon href=\"data:,\">"
    "<body style=\"font:15px system-ui,sans-serif;margin:3em\">"
    "<p>This sluice wants its <code>admin_token</code>.</p>"
    "<form method=get action=\"/\"><input type=password name=token autofocus "
    "autocomplete=current-password aria-label=token> <button>Open</button></form>\n";

/* Constant time in the token's bytes: response timing must not reveal a matching prefix. */
static bool token_equal(const char *given, const char *token)
{
    size_t gl = strlen(given), tl = strlen(token);
    unsigned char diff = gl != tl;

    for (size_t i = 0; i < tl; i++)
        diff |= (unsigned char)(token[i] ^ given[i < gl ? i : 0]);
    return diff == 0;
}

/* ?token=TOKEN in the query, for the page only. */
static bool query_token(const char *token, const struct evhttp_uri *uri)
{
    const char *query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
    struct evkeyvalq params;
    const char *given;
    bool ok;

    if (query == NULL || evhttp_parse_query_str(query, &params) != 0)
        return false;
    given = evhttp_find_header(&params, "token");
    ok = given != NULL && token_equal(given, token);
    evhttp_clear_headers(&params);
    return ok;
}

static bool authorized(const char *token, struct evhttp_request *req, bool page)
{
    const char *auth;

    if (token == NULL || token[0] == '\0')
        return true;
    auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (auth != NULL && strncmp(auth, "Bearer ", 7) == 0 && token_equal(auth + 7, token))
        return true;
    return page && query_token(token, evhttp_request_get_evhttp_uri(req));
}

static void admin_on_request(struct evhttp_request *req, void *arg)
{
    struct sl_admin *a = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    struct sl_admin_view v;

    bool page = path != NULL && strcmp(path, "/") == 0;

    memset(&v, 0, sizeof(v));
    a->view(&v, a->view_arg);
    if (!authorized(v.token, req, page)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
        if (page) {
            page_headers(req);
            reply_text(req, 401, "text/html; charset=utf-8", token_form);
        } else {
            reply_text(req, 401, "application/json", "{\"error\":\"unauthorized\"}\n");
        }
    } else if (path == NULL) {
        reply_text(req, 400, "application/json", "{\"error\":\"bad_request\"}\n");
    } else if (strcmp(path, "/health") == 0) {
        admin_health(&v, req);
    } else if (strcmp(path, "/metrics") == 0) {
        admin_metrics(&v, req);
    } else if (strcmp(path, "/status") == 0) {
        admin_status(&v, req);
    } else if (page) {
        admin_page(req);
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
