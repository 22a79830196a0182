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

#include "config.h"
#include "queue.h"
#include "recent.h"

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
    X(RESPONSE_TOO_LARGE, "response_too_large", 502)       \
    X(UPSTREAM_BROKEN, "upstream_broken", 502)             \
    X(CLIENT_GONE, "client_gone", 499)                     \
    X(INTERNAL_ERROR, "internal_error", 500)               \
    X(JOB_NOT_FOUND, "job_not_found", 404)                 \
    X(REDIS_UNAVAILABLE, "redis_unavailable", 503)         \
    X(NOT_IMPLEMENTED, "not_implemented", 501)

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

/* X(ENUM, "label") - how a batch (POST /_sluice/batch) ended. */
#define SL_BATCH_OUTCOMES(X)              \
    X(ANSWERED, "answered")               \
    X(BAD_REQUEST, "bad_request")         \
    X(CLIENT_GONE, "client_gone")         \
    X(DRAINING, "draining")               \
    X(INTERNAL_ERROR, "internal_error")

enum sl_batch_outcome {
#define SL_BATCH_OUTCOME_ENUM(e, label) SL_BATCH_##e,
    SL_BATCH_OUTCOMES(SL_BATCH_OUTCOME_ENUM)
#undef SL_BATCH_OUTCOME_ENUM
    SL_BATCH_OUTCOME_COUNT
};

const char *sl_batch_outcome_name(enum sl_batch_outcome o);

/*
 * Batches of the instance, and their items by how each ended (an item is a
 * request: it is also counted in its route's sl_route_stats).
 */
struct sl_batch_stats {
    uint64_t batches[SL_BATCH_OUTCOME_COUNT];
    uint64_t items[SL_OUTCOME_COUNT];
};

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

/* X(ENUM, "label") - where an async job is (GET /_sluice/jobs/{id}). */
#define SL_JOB_STATES(X)      \
    X(QUEUED, "queued")       \
    X(RUNNING, "running")     \
    X(DONE, "done")           \
    X(FAILED, "failed")

enum sl_job_state {
#define SL_JOB_STATE_ENUM(e, label) SL_JOB_##e,
    SL_JOB_STATES(SL_JOB_STATE_ENUM)
#undef SL_JOB_STATE_ENUM
    SL_JOB_STATE_COUNT
};

const char *sl_job_state_name(enum sl_job_state s);
/* X(ENUM, "label") - how a shared-limit decision ended ([redis] shared_limit, shlimit.h). */
#define SL_SHARED_RESULTS(X) \
    X(GO, "go")              \
    X(WAIT, "wait")          \
    X(ERROR, "error")        \
    X(LATE, "late")

enum sl_shared_result {
#define SL_SHARED_RESULT_ENUM(e, label) SL_SHARED_##e,
    SL_SHARED_RESULTS(SL_SHARED_RESULT_ENUM)
#undef SL_SHARED_RESULT_ENUM
    SL_SHARED_RESULT_COUNT
};

/* X(ENUM, "label") - why a route is paused (the pause that lasts longest wins). */
#define SL_PAUSE_REASONS(X)             \
    X(RETRY_AFTER, "retry_after")       \
    X(BUDGET, "budget")                 \
    X(BACKOFF, "backoff")

enum sl_pause_reason {
#define SL_PAUSE_REASON_ENUM(e, label) SL_PAUSED_BY_##e,
    SL_PAUSE_REASONS(SL_PAUSE_REASON_ENUM)
#undef SL_PAUSE_REASON_ENUM
    SL_PAUSE_REASON_COUNT
};

/* "retry_after": a Retry-After; "budget": RateLimit headers; "backoff": our own wait. */
const char *sl_pause_reason_name(enum sl_pause_reason r);

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
    uint64_t tls_handshakes;                        /* new TLS connections to the upstream */
    struct sl_histogram queue_wait[SL_LANE_COUNT];  /* seconds parked, by lane */
    struct sl_histogram upstream_duration;          /* seconds per attempt */
    struct sl_recent recent_dispatched;             /* tokens taken, per second */
    struct sl_recent_set recent_outcomes;           /* finished requests, per second and outcome */
};

/*
 * Add every counter and histogram of `src` into `dst`: a route removed by a
 * reload leaves its totals in the unrouted block (route=""), so that the sum
 * over routes never goes down.
 */
void sl_route_stats_add(struct sl_route_stats *dst, const struct sl_route_stats *src);

_Static_assert(SL_OUTCOME_COUNT <= SL_RECENT_SET_WIDTH, "one recent counter per outcome");

/*
 * Count one finished request (outcome, and its queue wait in `lane` when
 * >= 0), in the totals and in the current second of recent_outcomes.
 */
void sl_route_stats_finish(struct sl_route_stats *s, enum sl_outcome o, enum sl_lane lane,
                           double wait_seconds);

/* Count one dispatch (a token taken) at `now`. */
void sl_route_stats_dispatch(struct sl_route_stats *s, int64_t now);

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
    /* durable jobs: the route's streams as last polled */
    bool has_streams;
    uint64_t stream_length;
    uint64_t stream_pending;
    uint64_t dead_letter_length;
    enum sl_pause_reason pause_reason;  /* while paused */
    unsigned max_in_flight;
    double oldest_wait_seconds;         /* of the oldest parked request; 0 = none */
    const struct sl_route_config *cfg;  /* limits; NULL = none exported */
};

struct sl_metrics_global {
    size_t queue_depth;
    size_t queue_bytes;
    size_t connections;
    uint64_t connections_accepted;
    uint64_t write_errors;
    bool draining;
    uint64_t reloads;
    double start_time_seconds; /* wall clock */
    /* async jobs (jobs.h) */
    uint64_t jobs[SL_JOB_STATE_COUNT]; /* held now, by state */
    uint64_t jobs_accepted;            /* 202s given */
    uint64_t jobs_expired;             /* results gone after result_ttl */
    uint64_t jobs_evicted;             /* results dropped early by the caps */
    /* Redis (durable jobs); nothing is written without it */
    bool has_redis;
    bool redis_up;
    uint64_t jobs_dead_lettered;       /* by this instance */
    uint64_t redis_reconnects;         /* connections made again after a loss */
    uint64_t redis_timeouts;           /* commands not answered in time */
    const struct sl_histogram *redis_rtt; /* command round trips */
    /* [redis] shared_limit (shlimit.h); nothing is written without it */
    bool has_shared;
    bool shared_up;
    uint64_t shared_decisions[SL_SHARED_RESULT_COUNT]; /* go, wait (reserved or not), error, late */
    double shared_blocked_seconds;     /* routes waiting on Redis: replies and outages */
    uint64_t shared_reconnects;
    uint64_t shared_timeouts;
    uint64_t shared_records;           /* dispatches recorded again after a slow send */
    const struct sl_histogram *shared_rtt; /* decision round trips */
    const struct sl_batch_stats *batches; /* NULL: none */
};

/*
 * Append the whole exposition to `out`. `unrouted` counts requests that
 * matched no route (exported with route=""). Returns SL_OK or SL_ENOMEM.
 */
int sl_metrics_write(struct evbuffer *out, const struct sl_metrics_route *routes,
                     size_t n_routes, const struct sl_route_stats *unrouted,
                     const struct sl_metrics_global *g);

#endif
