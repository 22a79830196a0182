/*
 * metrics.c - outcome table, histograms and the Prometheus text writer.
 *
 * The writer walks a table of metric families in a fixed order; each family
 * prints its # HELP / # TYPE header once and then its samples through one
 * small emitter. It reads the caller's views only, keeps no state between
 * scrapes and allocates nothing but the evbuffer's own chains. The work is
 * linear in routes x (outcomes + lanes + buckets + status codes).
 *
 * Output choices: every route gets every outcome (zeros included) so that
 * rate() sees a series from the start; the unrouted block (route="") does
 * too, as no_route / bad_request / too_large are exactly what lands there,
 * and so do the totals of routes a reload removed (sl_route_stats_add).
 * Upstream codes are sparse: only codes seen at least once, plus
 * code="error" always. On SL_ENOMEM the buffer may hold a partial
 * exposition: the caller should discard it and answer 500.
 */
#include "metrics.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "clock.h"
#include "sluice.h"

static const struct {
    const char *name;
    int status;
} outcomes[SL_OUTCOME_COUNT] = {
#define SL_OUTCOME_ROW(e, label, status) [SL_OUTCOME_##e] = {label, status},
    SL_OUTCOMES(SL_OUTCOME_ROW)
#undef SL_OUTCOME_ROW
};

static const double bounds[] = SL_HISTOGRAM_BOUNDS;
_Static_assert(SL_ARRAY_LEN(bounds) == SL_HISTOGRAM_BUCKETS,
               "SL_HISTOGRAM_BUCKETS must match SL_HISTOGRAM_BOUNDS");

const char *sl_outcome_name(enum sl_outcome o)
{
    return (unsigned)o < SL_OUTCOME_COUNT ? outcomes[o].name : "unknown";
}

int sl_outcome_status(enum sl_outcome o)
{
    return (unsigned)o < SL_OUTCOME_COUNT ? outcomes[o].status : 500;
}

/* NaN is dropped: it would poison _sum forever and fits no bucket. */
void sl_histogram_observe(struct sl_histogram *h, double seconds)
{
    if (isnan(seconds))
        return;
    for (size_t i = 0; i < SL_HISTOGRAM_BUCKETS; i++) {
        if (seconds <= bounds[i]) {
            h->buckets[i]++;
            break;
        }
    }
    h->count++;
    h->sum += seconds;
}

/* Label i of a table of n, or "unknown" for a value out of range. */
static const char *label_of(const char *const *table, size_t n, unsigned i)
{
    return i < n ? table[i] : "unknown";
}

static const char *const batch_outcomes[SL_BATCH_OUTCOME_COUNT] = {
#define SL_BATCH_OUTCOME_ROW(e, label) [SL_BATCH_##e] = label,
    SL_BATCH_OUTCOMES(SL_BATCH_OUTCOME_ROW)
#undef SL_BATCH_OUTCOME_ROW
};

const char *sl_batch_outcome_name(enum sl_batch_outcome o)
{
    return label_of(batch_outcomes, SL_BATCH_OUTCOME_COUNT, (unsigned)o);
}

static const char *const retry_reasons[SL_RETRY_REASON_COUNT] = {
#define SL_RETRY_REASON_ROW(e, label) [SL_RETRY_##e] = label,
    SL_RETRY_REASONS(SL_RETRY_REASON_ROW)
#undef SL_RETRY_REASON_ROW
};

const char *sl_retry_reason_name(enum sl_retry_reason r)
{
    return label_of(retry_reasons, SL_RETRY_REASON_COUNT, (unsigned)r);
}

static const char *const job_states[SL_JOB_STATE_COUNT] = {
#define SL_JOB_STATE_ROW(e, label) [SL_JOB_##e] = label,
    SL_JOB_STATES(SL_JOB_STATE_ROW)
#undef SL_JOB_STATE_ROW
};

const char *sl_job_state_name(enum sl_job_state s)
{
    return label_of(job_states, SL_JOB_STATE_COUNT, (unsigned)s);
}

static const char *const pause_reasons[SL_PAUSE_REASON_COUNT] = {
#define SL_PAUSE_REASON_ROW(e, label) [SL_PAUSED_BY_##e] = label,
    SL_PAUSE_REASONS(SL_PAUSE_REASON_ROW)
#undef SL_PAUSE_REASON_ROW
};

const char *sl_pause_reason_name(enum sl_pause_reason r)
{
    return label_of(pause_reasons, SL_PAUSE_REASON_COUNT, (unsigned)r);
}

/* An out-of-range outcome is a bug, but still counted: nothing goes uncounted. */
static void add_counts(uint64_t *dst, const uint64_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] += src[i];
}

static void histogram_add(struct sl_histogram *dst, const struct sl_histogram *src)
{
    add_counts(dst->buckets, src->buckets, SL_HISTOGRAM_BUCKETS);
    dst->count += src->count;
    dst->sum += src->sum;
}

void sl_route_stats_add(struct sl_route_stats *dst, const struct sl_route_stats *src)
{
    add_counts(dst->outcomes, src->outcomes, SL_OUTCOME_COUNT);
    add_counts(dst->upstream_codes, src->upstream_codes, SL_METRICS_MAX_STATUS);
    add_counts(dst->retries, src->retries, SL_RETRY_REASON_COUNT);
    dst->upstream_errors += src->upstream_errors;
    dst->client_gone += src->client_gone;
    dst->dispatched += src->dispatched;
    dst->units += src->units;
    dst->pauses += src->pauses;
    dst->tls_handshakes += src->tls_handshakes;
    for (int l = 0; l < SL_LANE_COUNT; l++)
        histogram_add(&dst->queue_wait[l], &src->queue_wait[l]);
    histogram_add(&dst->upstream_duration, &src->upstream_duration);
}

void sl_route_stats_finish(struct sl_route_stats *s, enum sl_outcome o, enum sl_lane lane,
                           double wait_seconds)
{
    if ((unsigned)o >= SL_OUTCOME_COUNT)
        o = SL_OUTCOME_INTERNAL_ERROR;
    if ((unsigned)lane >= SL_LANE_COUNT)
        lane = SL_LANE_NORMAL;
    s->outcomes[o]++;
    sl_recent_set_add(&s->recent_outcomes, sl_clock_now(), (unsigned)o, 1);
    if (wait_seconds >= 0)
        sl_histogram_observe(&s->queue_wait[lane], wait_seconds);
}

void sl_route_stats_dispatch(struct sl_route_stats *s, int64_t now)
{
    s->dispatched++;
    sl_recent_add(&s->recent_dispatched, now, 1);
}

/* ---- number formatting ------------------------------------------------ */

#define NUM_LEN 32

static const char *fmt_u64(char *buf, uint64_t v)
{
    snprintf(buf, NUM_LEN, "%" PRIu64, v);
    return buf;
}

/* Shortest of %.15g / %.17g that reads back exactly: "0.005", not 0.00500000000000000010. */
static const char *fmt_double(char *buf, double v)
{
    if (isnan(v))
        return "NaN";
    if (isinf(v))
        return v > 0 ? "+Inf" : "-Inf";
    snprintf(buf, NUM_LEN, "%.15g", v);
    if (strtod(buf, NULL) != v)
        snprintf(buf, NUM_LEN, "%.17g", v);
    return buf;
}

/* ---- sample lines ----------------------------------------------------- */

/* Failure is sticky so emitters need no error plumbing; checked once at the end. */
struct writer {
    struct evbuffer *out;
    const struct sl_metrics_route *routes;
    size_t n_routes;
    const struct sl_route_stats *unrouted;
    const struct sl_metrics_global *g;
    char le[SL_HISTOGRAM_BUCKETS][NUM_LEN];
    bool failed;
};

struct label {
    const char *key;
    const char *value;
};

static void put(struct writer *w, const char *s, size_t len)
{
    if (!w->failed && len > 0 && evbuffer_add(w->out, s, len) != 0)
        w->failed = true;
}

static void puts_(struct writer *w, const char *s)
{
    put(w, s, strlen(s));
}

/* Label value escaping of the text format: backslash, quote, newline. */
static void put_escaped(struct writer *w, const char *s)
{
    for (;;) {
        size_t span = strcspn(s, "\\\"\n");
        put(w, s, span);
        s += span;
        if (*s == '\0')
            return;
        puts_(w, *s == '\n' ? "\\n" : *s == '"' ? "\\\"" : "\\\\");
        s++;
    }
}

static void sample(struct writer *w, const char *name, const char *suffix,
                   const struct label *labels, size_t n, const char *value)
{
    puts_(w, name);
    puts_(w, suffix);
    for (size_t i = 0; i < n; i++) {
        puts_(w, i == 0 ? "{" : ",");
        puts_(w, labels[i].key);
        puts_(w, "=\"");
        put_escaped(w, labels[i].value);
        puts_(w, "\"");
    }
    puts_(w, n > 0 ? "} " : " ");
    puts_(w, value);
    puts_(w, "\n");
}

static void sample_u64(struct writer *w, const char *name, const struct label *labels,
                       size_t n, uint64_t v)
{
    char buf[NUM_LEN];

    sample(w, name, "", labels, n, fmt_u64(buf, v));
}

/* ---- families --------------------------------------------------------- */

struct family;
typedef void (*emit_fn)(struct writer *w, const struct family *f);

struct family {
    const char *name;
    const char *type;
    const char *help;
    emit_fn emit;
    /* At most one of these is set, for the generic emitters. */
    uint64_t (*route_value)(const struct sl_metrics_route *r);
    bool (*only)(const struct sl_metrics_route *r); /* routes to export; NULL = all */
    double (*global_value)(const struct sl_metrics_global *g);
    size_t hist_offset; /* of a struct sl_histogram in struct sl_route_stats */
};

static const struct sl_route_stats zero_stats;

static const struct sl_route_stats *stats_of(const struct sl_metrics_route *r)
{
    return r->stats != NULL ? r->stats : &zero_stats;
}

static const char *name_of(const struct sl_metrics_route *r)
{
    return r->name != NULL ? r->name : "";
}

static void outcomes_for(struct writer *w, const struct family *f, const char *route,
                         const struct sl_route_stats *s)
{
    for (size_t o = 0; o < SL_OUTCOME_COUNT; o++) {
        struct label l[] = {{"route", route}, {"outcome", outcomes[o].name}};
        sample_u64(w, f->name, l, 2, s->outcomes[o]);
    }
}

static void emit_requests(struct writer *w, const struct family *f)
{
    for (size_t i = 0; i < w->n_routes; i++)
        outcomes_for(w, f, name_of(&w->routes[i]), stats_of(&w->routes[i]));
    if (w->unrouted != NULL)
        outcomes_for(w, f, "", w->unrouted);
}

static void emit_lanes(struct writer *w, const struct family *f)
{
    for (size_t i = 0; i < w->n_routes; i++) {
        for (size_t lane = 0; lane < SL_LANE_COUNT; lane++) {
            struct label l[] = {{"route", name_of(&w->routes[i])},
                                {"lane", sl_lane_name((enum sl_lane)lane)}};
            sample_u64(w, f->name, l, 2, w->routes[i].lane_depth[lane]);
        }
    }
}

static void emit_upstream_codes(struct writer *w, const struct family *f)
{
    char code[NUM_LEN];

    for (size_t i = 0; i < w->n_routes; i++) {
        const struct sl_route_stats *s = stats_of(&w->routes[i]);
        struct label l[] = {{"route", name_of(&w->routes[i])}, {"code", code}};

        for (unsigned c = 0; c < SL_METRICS_MAX_STATUS; c++) {
            if (s->upstream_codes[c] == 0)
                continue;
            snprintf(code, sizeof(code), "%u", c);
            sample_u64(w, f->name, l, 2, s->upstream_codes[c]);
        }
        l[1].value = "error";
        sample_u64(w, f->name, l, 2, s->upstream_errors);
    }
}

/* `l` holds the series' labels and one spare slot for "le"; n excludes it. */
static void histogram(struct writer *w, const char *name, struct label *l, size_t n,
                      const struct sl_histogram *h)
{
    char num[NUM_LEN];
    uint64_t cumulative = 0;

    l[n].key = "le";
    for (size_t b = 0; b < SL_HISTOGRAM_BUCKETS; b++) {
        cumulative += h->buckets[b];
        l[n].value = w->le[b];
        sample(w, name, "_bucket", l, n + 1, fmt_u64(num, cumulative));
    }
    l[n].value = "+Inf";
    sample(w, name, "_bucket", l, n + 1, fmt_u64(num, h->count));
    sample(w, name, "_sum", l, n, fmt_double(num, h->sum));
    sample(w, name, "_count", l, n, fmt_u64(num, h->count));
}

static void emit_histograms(struct writer *w, const struct family *f)
{
    for (size_t i = 0; i < w->n_routes; i++) {
        const char *base = (const char *)stats_of(&w->routes[i]);
        const struct sl_histogram *h = (const void *)(base + f->hist_offset);
        struct label l[2] = {{"route", name_of(&w->routes[i])}, {NULL, NULL}};

        histogram(w, f->name, l, 1, h);
    }
}

static void emit_lane_histograms(struct writer *w, const struct family *f)
{
    for (size_t i = 0; i < w->n_routes; i++) {
        for (size_t lane = 0; lane < SL_LANE_COUNT; lane++) {
            struct label l[3] = {{"route", name_of(&w->routes[i])},
                                 {"lane", sl_lane_name((enum sl_lane)lane)}, {NULL, NULL}};

            histogram(w, f->name, l, 2, &stats_of(&w->routes[i])->queue_wait[lane]);
        }
    }
}

static void emit_retries(struct writer *w, const struct family *f)
{
    for (size_t i = 0; i < w->n_routes; i++) {
        for (size_t r = 0; r < SL_RETRY_REASON_COUNT; r++) {
            struct label l[] = {{"route", name_of(&w->routes[i])}, {"reason", retry_reasons[r]}};

            sample_u64(w, f->name, l, 2, stats_of(&w->routes[i])->retries[r]);
        }
    }
}

static const struct sl_batch_stats zero_batches;

static const struct sl_batch_stats *batches_of(const struct writer *w)
{
    return w->g->batches != NULL ? w->g->batches : &zero_batches;
}

static void emit_batches(struct writer *w, const struct family *f)
{
    for (size_t o = 0; o < SL_BATCH_OUTCOME_COUNT; o++) {
        struct label l[] = {{"outcome", batch_outcomes[o]}};
        sample_u64(w, f->name, l, 1, batches_of(w)->batches[o]);
    }
}

static void emit_batch_items(struct writer *w, const struct family *f)
{
    for (size_t o = 0; o < SL_OUTCOME_COUNT; o++) {
        struct label l[] = {{"outcome", outcomes[o].name}};
        sample_u64(w, f->name, l, 1, batches_of(w)->items[o]);
    }
}

static void emit_route_value(struct writer *w, const struct family *f)
{
    for (size_t i = 0; i < w->n_routes; i++) {
        struct label l[] = {{"route", name_of(&w->routes[i])}};

        if (f->only == NULL || f->only(&w->routes[i]))
            sample_u64(w, f->name, l, 1, f->route_value(&w->routes[i]));
    }
}

static void sample_double(struct writer *w, const char *name, const struct label *labels,
                          size_t n, double v)
{
    char buf[NUM_LEN];

    sample(w, name, "", labels, n, fmt_double(buf, v));
}

static void emit_oldest(struct writer *w, const struct family *f)
{
    for (size_t i = 0; i < w->n_routes; i++) {
        struct label l[] = {{"route", name_of(&w->routes[i])}};
        sample_double(w, f->name, l, 1, w->routes[i].oldest_wait_seconds);
    }
}

static void emit_pause_reasons(struct writer *w, const struct family *f)
{
    for (size_t i = 0; i < w->n_routes; i++) {
        const struct sl_metrics_route *r = &w->routes[i];

        for (size_t k = 0; k < SL_PAUSE_REASON_COUNT; k++) {
            struct label l[] = {{"route", name_of(r)}, {"reason", pause_reasons[k]}};
            sample_u64(w, f->name, l, 2, r->paused && r->pause_reason == (enum sl_pause_reason)k);
        }
    }
}

static double per_second(const struct sl_limit *l)
{
    return l->period_us > 0 ? l->n * 1e6 / (double)l->period_us : 0;
}

static void emit_rate_limit(struct writer *w, const struct family *f)
{
    for (size_t i = 0; i < w->n_routes; i++) {
        struct label l[] = {{"route", name_of(&w->routes[i])}};

        if (w->routes[i].cfg != NULL)
            sample_double(w, f->name, l, 1, per_second(&w->routes[i].cfg->rate));
    }
}

/* Every limit of a route, the rate first: N per period. */
static void emit_limits(struct writer *w, const struct family *f)
{
    char period[NUM_LEN];

    for (size_t i = 0; i < w->n_routes; i++) {
        const struct sl_route_config *c = w->routes[i].cfg;
        struct label l[] = {{"route", name_of(&w->routes[i])}, {"limit", "rate"},
                            {"period_seconds", period}};

        if (c == NULL)
            continue;
        fmt_double(period, (double)c->rate.period_us / 1e6);
        sample_double(w, f->name, l, 3, c->rate.n);
        l[1].value = "quota";
        for (size_t q = 0; q < c->n_quotas; q++) {
            fmt_double(period, (double)c->quotas[q].period_us / 1e6);
            sample_double(w, f->name, l, 3, c->quotas[q].n);
        }
    }
}

static void emit_global_value(struct writer *w, const struct family *f)
{
    char buf[NUM_LEN];

    sample(w, f->name, "", NULL, 0, fmt_double(buf, f->global_value(w->g)));
}

static void emit_build_info(struct writer *w, const struct family *f)
{
    struct label l[] = {{"version", SLUICE_VERSION}};
    sample(w, f->name, "", l, 1, "1");
}

static void emit_job_states(struct writer *w, const struct family *f)
{
    for (size_t st = 0; st < SL_JOB_STATE_COUNT; st++) {
        struct label l[] = {{"state", job_states[st]}};

        sample_u64(w, f->name, l, 1, w->g->jobs[st]);
    }
}

static void emit_stream_value(struct writer *w, const struct family *f)
{
    for (size_t i = 0; i < w->n_routes; i++) {
        const struct sl_metrics_route *r = &w->routes[i];
        struct label l[] = {{"route", name_of(r)}};

        if (r->has_streams)
            sample_u64(w, f->name, l, 1, f->route_value(r));
    }
}

static void emit_redis_value(struct writer *w, const struct family *f)
{
    if (w->g->has_redis)
        emit_global_value(w, f);
}

static void emit_redis_rtt(struct writer *w, const struct family *f)
{
    struct label l[1] = {{NULL, NULL}};

    if (w->g->has_redis && w->g->redis_rtt != NULL)
        histogram(w, f->name, l, 0, w->g->redis_rtt);
}

static void emit_shared_value(struct writer *w, const struct family *f)
{
    if (w->g->has_shared)
        emit_global_value(w, f);
}

static void emit_shared_decisions(struct writer *w, const struct family *f)
{
    static const char *const results[] = {
#define SL_SHARED_RESULT_NAME(e, label) label,
        SL_SHARED_RESULTS(SL_SHARED_RESULT_NAME)
#undef SL_SHARED_RESULT_NAME
    };

    if (!w->g->has_shared)
        return;
    for (size_t i = 0; i < SL_SHARED_RESULT_COUNT; i++) {
        struct label l[] = {{"result", results[i]}};

        sample_u64(w, f->name, l, 1, w->g->shared_decisions[i]);
    }
}

static void emit_shared_rtt(struct writer *w, const struct family *f)
{
    struct label l[1] = {{NULL, NULL}};

    if (w->g->has_shared && w->g->shared_rtt != NULL)
        histogram(w, f->name, l, 0, w->g->shared_rtt);
}

static uint64_t in_flight(const struct sl_metrics_route *r) { return r->in_flight; }
static uint64_t paused(const struct sl_metrics_route *r) { return r->paused ? 1 : 0; }
static uint64_t client_gone(const struct sl_metrics_route *r) { return stats_of(r)->client_gone; }
static uint64_t dispatched(const struct sl_metrics_route *r) { return stats_of(r)->dispatched; }
static uint64_t units(const struct sl_metrics_route *r) { return stats_of(r)->units; }
static uint64_t pauses(const struct sl_metrics_route *r) { return stats_of(r)->pauses; }
static uint64_t stream_length(const struct sl_metrics_route *r) { return r->stream_length; }
static uint64_t stream_pending(const struct sl_metrics_route *r) { return r->stream_pending; }
static uint64_t dead_letter(const struct sl_metrics_route *r) { return r->dead_letter_length; }
static uint64_t tls_handshakes(const struct sl_metrics_route *r)
{
    return stats_of(r)->tls_handshakes;
}
static uint64_t max_in_flight(const struct sl_metrics_route *r) { return r->max_in_flight; }
static uint64_t burst(const struct sl_metrics_route *r) { return r->cfg != NULL ? r->cfg->burst : 0; }
static uint64_t keys_live(const struct sl_metrics_route *r) { return r->keys_live; }
static uint64_t keys_evicted(const struct sl_metrics_route *r) { return r->keys_evicted; }
static uint64_t keys_bytes(const struct sl_metrics_route *r) { return r->keys_bytes; }
static uint64_t above(const struct sl_metrics_route *r) { return r->above ? 1 : 0; }
static uint64_t announced_n(const struct sl_metrics_route *r) { return (uint64_t)r->announced_n; }
static uint64_t announced_window(const struct sl_metrics_route *r)
{
    return (uint64_t)r->announced_window_s;
}
static uint64_t allows(const struct sl_metrics_route *r) { return (uint64_t)r->allows; }
static bool keyed(const struct sl_metrics_route *r) { return r->keyed; }
static bool announced(const struct sl_metrics_route *r) { return r->announced; }

static double queue_bytes(const struct sl_metrics_global *g) { return (double)g->queue_bytes; }
static double queue_depth(const struct sl_metrics_global *g) { return (double)g->queue_depth; }
static double connections(const struct sl_metrics_global *g) { return (double)g->connections; }
static double accepted(const struct sl_metrics_global *g) { return (double)g->connections_accepted; }
static double write_errors(const struct sl_metrics_global *g) { return (double)g->write_errors; }
static double draining(const struct sl_metrics_global *g) { return g->draining ? 1 : 0; }
static double reloads(const struct sl_metrics_global *g) { return (double)g->reloads; }
static double start_time(const struct sl_metrics_global *g) { return g->start_time_seconds; }
static double jobs_accepted(const struct sl_metrics_global *g) { return (double)g->jobs_accepted; }
static double jobs_expired(const struct sl_metrics_global *g) { return (double)g->jobs_expired; }
static double jobs_evicted(const struct sl_metrics_global *g) { return (double)g->jobs_evicted; }
static double dead_lettered(const struct sl_metrics_global *g) { return (double)g->jobs_dead_lettered; }
static double redis_up(const struct sl_metrics_global *g) { return g->redis_up ? 1 : 0; }
static double redis_reconnects(const struct sl_metrics_global *g) { return (double)g->redis_reconnects; }
static double redis_timeouts(const struct sl_metrics_global *g) { return (double)g->redis_timeouts; }
static double shared_up(const struct sl_metrics_global *g) { return g->shared_up ? 1 : 0; }
static double shared_blocked(const struct sl_metrics_global *g) { return g->shared_blocked_seconds; }
static double shared_reconnects(const struct sl_metrics_global *g) { return (double)g->shared_reconnects; }
static double shared_timeouts(const struct sl_metrics_global *g) { return (double)g->shared_timeouts; }
static double shared_records(const struct sl_metrics_global *g) { return (double)g->shared_records; }

#define HIST(field) .emit = emit_histograms, .hist_offset = offsetof(struct sl_route_stats, field)
#define PER_ROUTE(fn) .emit = emit_route_value, .route_value = fn
#define PER_ROUTE_IF(fn, pred) .emit = emit_route_value, .route_value = fn, .only = pred
#define GLOBAL(fn) .emit = emit_global_value, .global_value = fn
#define STREAM(fn) .emit = emit_stream_value, .route_value = fn
#define REDIS(fn) .emit = emit_redis_value, .global_value = fn
#define SHARED(fn) .emit = emit_shared_value, .global_value = fn

/* Exposition order; changing it is harmless but makes diffs of scrapes noisy. */
static const struct family families[] = {
    {"sluice_requests_total", "counter", "Finished requests by route and outcome.",
     .emit = emit_requests},
    {"sluice_queue_depth", "gauge", "Parked requests by route and priority lane.",
     .emit = emit_lanes},
    {"sluice_queue_bytes", "gauge", "Bytes of parked requests, all routes.", GLOBAL(queue_bytes)},
    {"sluice_queue_depth_total", "gauge", "Parked requests, all routes.", GLOBAL(queue_depth)},
    {"sluice_queue_oldest_seconds", "gauge",
     "Age of the oldest parked request of the route; 0 when none is parked.",
     .emit = emit_oldest},
    {"sluice_queue_wait_seconds", "histogram",
     "Time requests spent parked before dispatch, by route and lane.",
     .emit = emit_lane_histograms},
    {"sluice_upstream_requests_total", "counter",
     "Upstream attempts by response status; code=\"error\" had no response.",
     .emit = emit_upstream_codes},
    {"sluice_upstream_duration_seconds", "histogram", "Duration of each upstream attempt.",
     HIST(upstream_duration)},
    {"sluice_upstream_tls_handshakes_total", "counter",
     "New TLS connections to the upstream (handshakes begun); reused ones are not counted.",
     PER_ROUTE(tls_handshakes)},
    {"sluice_in_flight", "gauge", "Requests currently at the upstream.", PER_ROUTE(in_flight)},
    {"sluice_route_max_in_flight", "gauge", "Configured max_in_flight of the route.",
     PER_ROUTE(max_in_flight)},
    {"sluice_route_paused", "gauge",
     "1 while the route is paused by Retry-After, rate-limit headers or backoff.",
     PER_ROUTE(paused)},
    {"sluice_route_paused_reason", "gauge",
     "1 for the reason of the route's current pause (retry_after, budget, backoff).",
     .emit = emit_pause_reasons},
    {"sluice_route_pauses_total", "counter", "Times the upstream paused the route.",
     PER_ROUTE(pauses)},
    {"sluice_retries_total", "counter", "Upstream attempts repeated, by reason.",
     .emit = emit_retries},
    {"sluice_client_gone_total", "counter", "Clients that left while their request was parked.",
     PER_ROUTE(client_gone)},
    {"sluice_dispatched_total", "counter", "Rate-limit tokens taken, retries included.",
     PER_ROUTE(dispatched)},
    {"sluice_units_dispatched_total", "counter",
     "Limit units taken: each dispatch takes its cost (cost, X-Sluice-Cost).", PER_ROUTE(units)},
    {"sluice_batches_total", "counter", "Batches (POST /_sluice/batch) by how they ended.",
     .emit = emit_batches},
    {"sluice_batch_items_total", "counter",
     "Batch items by outcome; each is also counted in sluice_requests_total.",
     .emit = emit_batch_items},
    {"sluice_route_rate_limit_per_second", "gauge",
     "Configured rate of the route (N/P) in requests per second.", .emit = emit_rate_limit},
    {"sluice_route_limit", "gauge",
     "Configured limits of the route: N requests per period_seconds (the rate and each quota).",
     .emit = emit_limits},
    {"sluice_route_burst", "gauge", "Configured burst of the route.", PER_ROUTE(burst)},
    {"sluice_keys", "gauge", "Live keys of a route with limit_key (parked, in flight or in a window).",
     PER_ROUTE_IF(keys_live, keyed)},
    {"sluice_key_evictions_total", "counter", "Idle keys evicted once their windows had passed.",
     PER_ROUTE_IF(keys_evicted, keyed)},
    {"sluice_keys_bytes", "gauge", "Bytes held by a route's keys table.",
     PER_ROUTE_IF(keys_bytes, keyed)},
    {"sluice_upstream_limit", "gauge",
     "The limit the upstream announces (RateLimit-Policy...): requests per window.",
     PER_ROUTE_IF(announced_n, announced)},
    {"sluice_upstream_limit_window_seconds", "gauge", "The window of the announced limit.",
     PER_ROUTE_IF(announced_window, announced)},
    {"sluice_limit_allows", "gauge",
     "Requests the route's limits (per key with limit_key) allow in the announced window.",
     PER_ROUTE_IF(allows, announced)},
    {"sluice_limit_above_upstream", "gauge",
     "1 while the route's limits allow more than the upstream announces.",
     PER_ROUTE_IF(above, announced)},
    {"sluice_connections", "gauge", "Open client connections.", GLOBAL(connections)},
    {"sluice_connections_accepted_total", "counter", "Client connections accepted.",
     GLOBAL(accepted)},
    {"sluice_client_write_errors_total", "counter",
     "Responses that could not be written to their client (it had gone), or timed out.",
     GLOBAL(write_errors)},
    {"sluice_draining", "gauge", "1 while shutting down.", GLOBAL(draining)},
    {"sluice_config_reloads_total", "counter", "Successful configuration reloads.",
     GLOBAL(reloads)},
    {"sluice_start_time_seconds", "gauge", "Start time of the process since the epoch.",
     GLOBAL(start_time)},
    {"sluice_build_info", "gauge", "Always 1; the version is the label.",
     .emit = emit_build_info},
    {"sluice_jobs", "gauge", "Async jobs held now, by state.", .emit = emit_job_states},
    {"sluice_jobs_accepted_total", "counter", "Async jobs accepted (202).", GLOBAL(jobs_accepted)},
    {"sluice_jobs_expired_total", "counter", "Job results removed after result_ttl.",
     GLOBAL(jobs_expired)},
    {"sluice_jobs_evicted_total", "counter",
     "Job results dropped before result_ttl to stay within the caps.", GLOBAL(jobs_evicted)},
    {"sluice_jobs_stream_length", "gauge",
     "Entries in the route's job stream in Redis: queued and held.", STREAM(stream_length)},
    {"sluice_jobs_stream_pending", "gauge",
     "Entries of the route's job stream delivered and not acknowledged.", STREAM(stream_pending)},
    {"sluice_jobs_dead_letter_length", "gauge",
     "Entries in the route's dead-letter stream in Redis.", STREAM(dead_letter)},
    {"sluice_jobs_dead_lettered_total", "counter",
     "Jobs this instance moved to a dead-letter stream after max_deliveries.",
     REDIS(dead_lettered)},
    {"sluice_redis_up", "gauge", "1 while the Redis connection is up.", REDIS(redis_up)},
    {"sluice_redis_reconnects_total", "counter", "Redis connections made again after a loss.",
     REDIS(redis_reconnects)},
    {"sluice_redis_timeouts_total", "counter",
     "Redis commands not answered in time (the connection is dropped).", REDIS(redis_timeouts)},
    {"sluice_redis_roundtrip_seconds", "histogram", "Round trip of each Redis command.",
     .emit = emit_redis_rtt},
    {"sluice_shared_limit_up", "gauge",
     "1 while the shared limiter's Redis connection is up (shared routes dispatch only then).",
     SHARED(shared_up)},
    {"sluice_shared_limit_decisions_total", "counter",
     "Shared-limit decisions: go (granted now), wait (a reserved or later turn), error "
     "(no answer), late (a grant dropped because its recorded instant had aged).",
     .emit = emit_shared_decisions},
    {"sluice_shared_limit_roundtrip_seconds", "histogram",
     "Round trip of each shared-limit decision (one EVALSHA).", .emit = emit_shared_rtt},
    {"sluice_shared_limit_blocked_seconds_total", "counter",
     "Time shared-limit routes waited on Redis: decisions in flight and outages with a backlog.",
     SHARED(shared_blocked)},
    {"sluice_shared_limit_reconnects_total", "counter",
     "Shared limiter Redis connections made again after a loss.", SHARED(shared_reconnects)},
    {"sluice_shared_limit_timeouts_total", "counter",
     "Shared-limit decisions not answered in time (the connection is dropped).",
     SHARED(shared_timeouts)},
    {"sluice_shared_limit_late_sends_total", "counter",
     "Dispatches that left well after Redis granted them (a new connection first), "
     "recorded again at Redis's now.", SHARED(shared_records)},
};

int sl_metrics_write(struct evbuffer *out, const struct sl_metrics_route *routes,
                     size_t n_routes, const struct sl_route_stats *unrouted,
                     const struct sl_metrics_global *g)
{
    static const struct sl_metrics_global no_global;
    struct writer w = {
        .out = out,
        .routes = routes,
        .n_routes = routes != NULL ? n_routes : 0,
        .unrouted = unrouted,
        .g = g != NULL ? g : &no_global,
    };

    for (size_t b = 0; b < SL_HISTOGRAM_BUCKETS; b++)
        fmt_double(w.le[b], bounds[b]);
    for (size_t i = 0; i < SL_ARRAY_LEN(families) && !w.failed; i++) {
        const struct family *f = &families[i];

        if (evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help,
                                f->name, f->type) < 0)
            w.failed = true;
        f->emit(&w, f);
    }
    return w.failed ? SL_ENOMEM : SL_OK;
}
