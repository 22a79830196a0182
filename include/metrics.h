/*
 * metrics.h - counters and histograms, and their Prometheus text (0.0.4).
 *
 * Every way a request can end is one outcome, declared once in SL_OUTCOMES;
 * the enum, the label values and the writer all come from that list, so an
 * outcome cannot exist without being counted and exported.
 *
 * The counters live inside the things they count (struct sl_route_stats is
 * embedded in each route, plus one for requests that matched no route);
 * the writer reads them through plain views, so it does no lookups and
 * holds no state. Ownership: nothing here allocates except the writer's
 * output, which goes into the caller's evbuffer.
 */
#ifndef SL_METRICS_H
#define SL_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue.h"

struct evbuffer;

/* X(ENUM, "label", http_status) - how a request ended. */
#define SL_OUTCOMES(X)                                     \
    X(RELAYED, "relayed", 0)                               \
    X(BAD_REQUEST, "bad_request", 400)                     \
    X(REQUEST_TIMEOUT, "request_timeout", 408)             \
    X(NO_ROUTE, "no_route", 404)                           \
    X(URI_TOO_LONG, "uri_too_long", 414)                   \
    X(BODY_TOO_LARGE, "body_too_large", 413)               \
    X(HEADERS_TOO_LARGE, "headers_too_large", 431)         \
    X(QUEUE_FULL, "queue_full", 503)                       \
    X(TOO_MANY_KEYS, "too_many_keys", 503)                 \
    X(DRAINING, "draining", 503)                           \
    X(QUEUE_TIMEOUT, "queue_timeout", 504)                 \
    X(UPSTREAM_UNREACHABLE, "upstream_unreachable", 502)   \
    X(UPSTREAM_TIMEOUT, "upstream_timeout", 504)           \
    X(CLIENT_GONE, "client_gone", 499)                     \
    X(INTERNAL_ERROR, "internal_error", 500)

enum sl_outcome {
#define SL_OUTCOME_ENUM(e, label, status) SL_OUTCOME_##e,
    SL_OUTCOMES(SL_OUTCOME_ENUM)
#undef SL_OUTCOME_ENUM
    SL_OUTCOME_COUNT
};

/* Label value ("relayed", "queue_timeout", ...) - also the X-Sluice-Error code. */
const char *sl_outcome_name(enum sl_outcome o);

/* HTTP status sluice answers with for an outcome it generates (0 for RELAYED). */
int sl_outcome_status(enum sl_outcome o);

/* X(ENUM, "label") - why an upstream attempt was repeated. */
#define SL_RETRY_REASONS(X)   \
    X(CONNECT, "connect")     \
    X(TIMEOUT, "timeout")     \
    X(CLOSED, "closed")       \
    X(STATUS_429, "429")      \
    X(STATUS_502, "502")      \
    X(STATUS_503, "503")      \
    X(STATUS_504, "504")

enum sl_retry_reason {
#define SL_RETRY_REASON_ENUM(e, label) SL_RETRY_##e,
    SL_RETRY_REASONS(SL_RETRY_REASON_ENUM)
#undef SL_RETRY_REASON_ENUM
    SL_RETRY_REASON_COUNT
};

const char *sl_retry_reason_name(enum sl_retry_reason r);

/* Upper bounds in seconds; the writer adds +Inf. */
#define SL_HISTOGRAM_BOUNDS \
    {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}
#define SL_HISTOGRAM_BUCKETS 16

struct sl_histogram {
    uint64_t buckets[SL_HISTOGRAM_BUCKETS]; /* non-cumulative; +Inf is count */
    uint64_t count;
    double sum;
};

void sl_histogram_observe(struct sl_histogram *h, double seconds);

#define SL_METRICS_MAX_STATUS 600

/* Per-route counters (embedded in struct sl_route). */
struct sl_route_stats {
    uint64_t outcomes[SL_OUTCOME_COUNT];
    uint64_t upstream_codes[SL_METRICS_MAX_STATUS]; /* by HTTP status */
    uint64_t upstream_errors;                       /* no status: connect, timeout */
    uint64_t client_gone;
    uint64_t dispatched;                            /* tokens taken */
    uint64_t units;                                 /* units taken (a dispatch's cost) */
    uint64_t retries[SL_RETRY_REASON_COUNT];        /* attempts repeated, by reason */
    uint64_t pauses;                                /* route paused by the upstream */
    struct sl_histogram queue_wait[SL_LANE_COUNT];  /* seconds parked, by lane */
    struct sl_histogram upstream_duration;          /* seconds per attempt */
};

/* Count one finished request (outcome, and its queue wait in `lane` when >= 0). */
void sl_route_stats_finish(struct sl_route_stats *s, enum sl_outcome o, enum sl_lane lane,
                           double wait_seconds);

/* What the writer needs of a route. */
struct sl_metrics_route {
    const char *name;
    const struct sl_route_stats *stats;
    size_t lane_depth[SL_LANE_COUNT];
    unsigned in_flight;
    bool paused;
    /* limit_key (keys.h): only routes with keyed set export these. */
    bool keyed;
    uint64_t keys_live;
    uint64_t keys_evicted;
    uint64_t keys_bytes;
    /* The limit the upstream announces (route.h): only when announced is set. */
    bool announced;
    double announced_n;
    double announced_window_s;
    double allows;                 /* what the route's limits allow in that window */
    bool above;
};

struct sl_metrics_global {
    size_t queue_depth;
    size_t queue_bytes;
    size_t connections;
    bool draining;
    uint64_t reloads;
    double start_time_seconds; /* wall clock */
};

/*
 * Append the whole exposition to `out`. `unrouted` counts requests that
 * matched no route (exported with route=""). Returns SL_OK or SL_ENOMEM.
 */
int sl_metrics_write(struct evbuffer *out, const struct sl_metrics_route *routes,
                     size_t n_routes, const struct sl_route_stats *unrouted,
                     const struct sl_metrics_global *g);

#endif
