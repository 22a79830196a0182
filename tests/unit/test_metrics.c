/*
 * test_metrics.c - outcome table, histogram bucketing, and the Prometheus
 * exposition checked line by line and by a small text-format validator.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "clock.h"
#include "metrics.h"
#include "queue.h"
#include "sluice.h"

/* test_metrics links metrics.c without queue.c: this stands in for the real one. */
const char *sl_lane_name(enum sl_lane lane)
{
    static const char *const names[] = {"high", "normal", "low"};
    return (unsigned)lane < SL_LANE_COUNT ? names[lane] : "?";
}

#define MAX_LINES 4096
#define MAX_FAMILIES 64

/* ---- helpers ----------------------------------------------------------- */

static char *render(const struct sl_metrics_route *routes, size_t n,
                    const struct sl_route_stats *unrouted, const struct sl_metrics_global *g)
{
    struct evbuffer *buf = evbuffer_new();
    assert_non_null(buf);
    assert_int_equal(sl_metrics_write(buf, routes, n, unrouted, g), SL_OK);
    size_t len = evbuffer_get_length(buf);
    char *text = malloc(len + 1);
    assert_non_null(text);
    assert_int_equal(evbuffer_remove(buf, text, len), (int)len);
    text[len] = '\0';
    evbuffer_free(buf);
    return text;
}

/* Split in place into lines; the text must end in '\n'. Returns the count. */
static size_t split_lines(char *text, char **lines)
{
    size_t n = 0;
    char *p = text;

    assert_true(*text != '\0');
    assert_int_equal(text[strlen(text) - 1], '\n');
    while (*p != '\0') {
        char *nl = strchr(p, '\n');
        assert_non_null(nl);
        assert_true(n < MAX_LINES);
        *nl = '\0';
        lines[n++] = p;
        p = nl + 1;
    }
    return n;
}

static bool has_line(char **lines, size_t n, const char *want)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(lines[i], want) == 0)
            return true;
    return false;
}

static void expect_line(char **lines, size_t n, const char *want)
{
    if (!has_line(lines, n, want))
        fail_msg("missing line: %s", want);
}

static size_t count_prefix(char **lines, size_t n, const char *prefix)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += strncmp(lines[i], prefix, strlen(prefix)) == 0;
    return c;
}

/* ---- text format 0.0.4 validator -------------------------------------- */

struct family_seen {
    char name[128];
    char type[16];
    bool help, typed;
};

static bool is_name_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
}

static const char *parse_name(const char *p, char *out, size_t size)
{
    size_t len = 0;
    while (is_name_char(p[len], len == 0))
        len++;
    if (len == 0 || len >= size)
        return NULL;
    memcpy(out, p, len);
    out[len] = '\0';
    return p + len;
}

/* {k="v",...}: only \\ \" \n escapes, no raw newline. Returns past '}' or NULL. */
static const char *parse_labels(const char *p)
{
    char key[128];

    if (*p != '{')
        return p;
    p++;
    for (int i = 0; i < 32; i++) {
        p = parse_name(p, key, sizeof(key));
        if (p == NULL || strchr(key, ':') != NULL || p[0] != '=' || p[1] != '"')
            return NULL;
        p += 2;
        while (*p != '"') {
            if (*p == '\0' || *p == '\n')
                return NULL;
            if (*p == '\\' && strchr("\\\"n", p[1]) == NULL)
                return NULL;
            p += *p == '\\' ? 2 : 1;
        }
        p++;
        if (*p == '}')
            return p + 1;
        if (*p != ',')
            return NULL;
        p++;
    }
    return NULL;
}

static bool valid_value(const char *p)
{
    char *end;

    if (strcmp(p, "+Inf") == 0 || strcmp(p, "-Inf") == 0 || strcmp(p, "NaN") == 0)
        return true;
    if (*p == '\0' || *p == ' ')
        return false;
    strtod(p, &end);
    return *end == '\0';
}

static struct family_seen *family_get(struct family_seen *fam, size_t *n_fam, const char *name)
{
    for (size_t i = 0; i < *n_fam; i++)
        if (strcmp(fam[i].name, name) == 0)
            return &fam[i];
    assert_true(*n_fam < MAX_FAMILIES);
    memset(&fam[*n_fam], 0, sizeof(fam[0]));
    snprintf(fam[*n_fam].name, sizeof(fam[0].name), "%s", name);
    return &fam[(*n_fam)++];
}

static bool valid_comment(const char *line, struct family_seen *fam, size_t *n_fam,
                          struct family_seen **cur)
{
    char name[128];
    bool is_type = strncmp(line, "# TYPE ", 7) == 0;

    if (!is_type && strncmp(line, "# HELP ", 7) != 0)
        return false;
    const char *p = parse_name(line + 7, name, sizeof(name));
    if (p == NULL || *p != ' ' || p[1] == '\0')
        return false;
    struct family_seen *f = family_get(fam, n_fam, name);
    if (is_type) {
        static const char *const types[] = {"counter", "gauge", "histogram", "summary",
                                            "untyped"};
        bool known = false;
        for (size_t i = 0; i < SL_ARRAY_LEN(types); i++)
            known |= strcmp(p + 1, types[i]) == 0;
        if (!known || f->typed)
            return false;
        f->typed = true;
        snprintf(f->type, sizeof(f->type), "%s", p + 1);
    } else {
        if (f->help)
            return false;
        f->help = true;
    }
    *cur = f;
    return true;
}

/* The sample's name must belong to the family whose header came last. */
static bool belongs(const char *name, const struct family_seen *f)
{
    size_t len = strlen(f->name);

    if (strcmp(name, f->name) == 0)
        return strcmp(f->type, "histogram") != 0;
    if (strcmp(f->type, "histogram") != 0 || strncmp(name, f->name, len) != 0)
        return false;
    return strcmp(name + len, "_bucket") == 0 || strcmp(name + len, "_sum") == 0 ||
           strcmp(name + len, "_count") == 0;
}

/*
 * Every line is a HELP/TYPE comment (each at most once per family) or
 * `name{labels} value` of the current family. Returns the number of
 * families, failing the test on the first bad line.
 */
static size_t validate(char **lines, size_t n)
{
    struct family_seen fam[MAX_FAMILIES];
    struct family_seen *cur = NULL;
    size_t n_fam = 0;
    char name[128];

    for (size_t i = 0; i < n; i++) {
        const char *line = lines[i];
        if (line[0] == '#') {
            if (!valid_comment(line, fam, &n_fam, &cur))
                fail_msg("bad comment line %zu: %s", i + 1, line);
            continue;
        }
        const char *p = parse_name(line, name, sizeof(name));
        if (p != NULL)
            p = parse_labels(p);
        if (p == NULL || *p != ' ' || !valid_value(p + 1))
            fail_msg("bad sample line %zu: %s", i + 1, line);
        if (cur == NULL || !cur->typed || !belongs(name, cur))
            fail_msg("sample outside its family, line %zu: %s", i + 1, line);
    }
    for (size_t i = 0; i < n_fam; i++)
        if (!fam[i].help || !fam[i].typed)
            fail_msg("family %s lacks HELP or TYPE", fam[i].name);
    return n_fam;
}

/*
 * For each histogram series in `hist`: buckets non-decreasing, le="+Inf"
 * last and equal to _count. Relies on the writer keeping a series together.
 * Returns the number of series checked.
 */
static size_t check_histograms(char **lines, size_t n, const char *hist)
{
    char bucket[128], count[128];
    size_t series = 0;
    unsigned long long prev = 0, inf = 0;
    bool in_series = false;

    snprintf(bucket, sizeof(bucket), "%s_bucket{", hist);
    snprintf(count, sizeof(count), "%s_count{", hist);
    for (size_t i = 0; i < n; i++) {
        const char *value = strrchr(lines[i], ' ');
        if (strncmp(lines[i], bucket, strlen(bucket)) == 0) {
            unsigned long long v = strtoull(value + 1, NULL, 10);
            if (in_series && v < prev)
                fail_msg("bucket decreases: %s", lines[i]);
            prev = v;
            in_series = true;
            if (strstr(lines[i], ",le=\"+Inf\"} ") != NULL)
                inf = v;
        } else if (strncmp(lines[i], count, strlen(count)) == 0) {
            assert_true(in_series);
            assert_int_equal(strtoull(value + 1, NULL, 10), inf);
            in_series = false;
            prev = inf = 0;
            series++;
        }
    }
    assert_false(in_series);
    return series;
}

/* ---- outcomes and histograms ------------------------------------------ */

static void test_outcome_table(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int status;
    } want[] = {
#define ROW(e, label, status) {label, status},
        SL_OUTCOMES(ROW)
#undef ROW
    };

    assert_int_equal(SL_ARRAY_LEN(want), SL_OUTCOME_COUNT);
    for (int o = 0; o < SL_OUTCOME_COUNT; o++) {
        assert_string_equal(sl_outcome_name((enum sl_outcome)o), want[o].name);
        assert_int_equal(sl_outcome_status((enum sl_outcome)o), want[o].status);
        for (int p = 0; p < o; p++)
            assert_string_not_equal(want[p].name, want[o].name);
    }
    assert_string_equal(sl_outcome_name(SL_OUTCOME_RELAYED), "relayed");
    assert_int_equal(sl_outcome_status(SL_OUTCOME_RELAYED), 0);
    assert_string_equal(sl_outcome_name(SL_OUTCOME_QUEUE_TIMEOUT), "queue_timeout");
    assert_string_equal(sl_outcome_name(SL_OUTCOME_RESPONSE_TOO_LARGE), "response_too_large");
    assert_int_equal(sl_outcome_status(SL_OUTCOME_RESPONSE_TOO_LARGE), 502);
    assert_int_equal(sl_outcome_status(SL_OUTCOME_QUEUE_TIMEOUT), 504);
    assert_int_equal(sl_outcome_status(SL_OUTCOME_CLIENT_GONE), 499);
    assert_int_equal(sl_outcome_status(SL_OUTCOME_QUEUE_FULL), 503);
    assert_string_equal(sl_outcome_name(SL_OUTCOME_COUNT), "unknown");
    assert_int_equal(sl_outcome_status(SL_OUTCOME_COUNT), 500);
}

static void test_histogram_edges(void **state)
{
    (void)state;
    struct sl_histogram h;
    memset(&h, 0, sizeof(h));

    sl_histogram_observe(&h, 0);       /* bucket 0 (<= 0.001) */
    sl_histogram_observe(&h, 0.001);   /* exactly on the first bound */
    sl_histogram_observe(&h, 0.0011);  /* next bucket (0.005) */
    sl_histogram_observe(&h, 2.5);     /* exactly on a middle bound: index 9 */
    sl_histogram_observe(&h, 300);     /* exactly on the last bound */
    sl_histogram_observe(&h, 300.5);   /* above the last: +Inf only */
    sl_histogram_observe(&h, -1);      /* clock step backwards: lowest bucket */
    sl_histogram_observe(&h, 0.0 / 0.0); /* NaN: ignored */

    uint64_t want[SL_HISTOGRAM_BUCKETS] = {[0] = 3, [1] = 1, [9] = 1, [15] = 1};
    for (size_t b = 0; b < SL_HISTOGRAM_BUCKETS; b++)
        assert_int_equal(h.buckets[b], want[b]);
    assert_int_equal(h.count, 7);
    assert_float_equal(h.sum, 0 + 0.001 + 0.0011 + 2.5 + 300 + 300.5 - 1, 1e-9);
}

static void test_route_stats_finish(void **state)
{
    (void)state;
    struct sl_route_stats s;
    memset(&s, 0, sizeof(s));

    sl_route_stats_finish(&s, SL_OUTCOME_RELAYED, SL_LANE_NORMAL, 0.02);
    sl_route_stats_finish(&s, SL_OUTCOME_RELAYED, SL_LANE_HIGH, 0);
    sl_route_stats_finish(&s, SL_OUTCOME_BAD_REQUEST, SL_LANE_NORMAL, -1);     /* never parked */
    sl_route_stats_finish(&s, (enum sl_outcome)99, (enum sl_lane)7, -1);        /* bug: still counted */

    assert_int_equal(s.outcomes[SL_OUTCOME_RELAYED], 2);
    assert_int_equal(s.outcomes[SL_OUTCOME_BAD_REQUEST], 1);
    assert_int_equal(s.outcomes[SL_OUTCOME_INTERNAL_ERROR], 1);
    assert_int_equal(s.queue_wait[SL_LANE_NORMAL].count, 1);
    assert_int_equal(s.queue_wait[SL_LANE_HIGH].count, 1);
    assert_int_equal(s.queue_wait[SL_LANE_LOW].count, 0);
    assert_int_equal(s.queue_wait[SL_LANE_HIGH].buckets[0], 1);
    assert_int_equal(s.queue_wait[SL_LANE_NORMAL].buckets[3], 1); /* 0.02 <= 0.025 */
    assert_float_equal(s.queue_wait[SL_LANE_NORMAL].sum, 0.02, 1e-12);
    assert_int_equal(s.upstream_duration.count, 0);
}

static int64_t fake_now;

static int64_t fake_clock(void)
{
    return fake_now;
}

/* The last minute's outcomes and the dispatches per second, on a fake clock. */
static void test_route_stats_recent(void **state)
{
    struct sl_route_stats s;
    int64_t sec = 1000000;

    (void)state;
    memset(&s, 0, sizeof(s));
    sl_clock_set(fake_clock);
    fake_now = 50 * sec;
    sl_route_stats_finish(&s, SL_OUTCOME_RELAYED, SL_LANE_NORMAL, 0.1);
    sl_route_stats_finish(&s, SL_OUTCOME_QUEUE_TIMEOUT, SL_LANE_NORMAL, 30);
    fake_now = 80 * sec;
    sl_route_stats_finish(&s, SL_OUTCOME_RELAYED, SL_LANE_NORMAL, 0.1);
    sl_route_stats_dispatch(&s, 80 * sec);
    sl_route_stats_dispatch(&s, 80 * sec + 1);
    sl_route_stats_dispatch(&s, 81 * sec);
    sl_clock_set(NULL);
    assert_int_equal(s.dispatched, 3);
    assert_int_equal(sl_recent_sum(&s.recent_dispatched, 82 * sec, 1, 10), 3);
    assert_int_equal(sl_recent_at(&s.recent_dispatched, 82 * sec, 2), 2);
    assert_int_equal(sl_recent_set_sum(&s.recent_outcomes, 80 * sec, SL_OUTCOME_RELAYED, 0, 60),
                     2);
    assert_int_equal(
        sl_recent_set_sum(&s.recent_outcomes, 80 * sec, SL_OUTCOME_QUEUE_TIMEOUT, 0, 60), 1);
    /* A minute after the first ones, only the later relayed one is left. */
    assert_int_equal(sl_recent_set_sum(&s.recent_outcomes, 110 * sec, SL_OUTCOME_RELAYED, 0, 60),
                     1);
    assert_int_equal(
        sl_recent_set_sum(&s.recent_outcomes, 110 * sec, SL_OUTCOME_QUEUE_TIMEOUT, 0, 60), 0);
    /* The totals do not forget. */
    assert_int_equal(s.outcomes[SL_OUTCOME_QUEUE_TIMEOUT], 1);
}

/* ---- exposition ------------------------------------------------------- */

static const char *const family_order[] = {
    "sluice_requests_total", "sluice_queue_depth", "sluice_queue_bytes",
    "sluice_queue_depth_total", "sluice_queue_oldest_seconds", "sluice_queue_wait_seconds",
    "sluice_upstream_requests_total", "sluice_upstream_duration_seconds",
    "sluice_upstream_tls_handshakes_total", "sluice_in_flight", "sluice_route_max_in_flight",
    "sluice_route_paused", "sluice_route_paused_reason", "sluice_route_pauses_total",
    "sluice_retries_total", "sluice_client_gone_total",
    "sluice_dispatched_total", "sluice_units_dispatched_total", "sluice_batches_total",
    "sluice_batch_items_total", "sluice_route_rate_limit_per_second", "sluice_route_limit",
    "sluice_route_burst", "sluice_keys", "sluice_key_evictions_total", "sluice_keys_bytes",
    "sluice_upstream_limit", "sluice_upstream_limit_window_seconds", "sluice_limit_allows",
    "sluice_limit_above_upstream", "sluice_connections", "sluice_connections_accepted_total",
    "sluice_client_write_errors_total", "sluice_draining",
    "sluice_config_reloads_total", "sluice_start_time_seconds", "sluice_build_info",
    "sluice_jobs", "sluice_jobs_accepted_total", "sluice_jobs_expired_total",
    "sluice_jobs_evicted_total", "sluice_jobs_stream_length", "sluice_jobs_stream_pending",
    "sluice_jobs_dead_letter_length", "sluice_jobs_dead_lettered_total", "sluice_redis_up",
    "sluice_redis_reconnects_total", "sluice_redis_timeouts_total",
    "sluice_redis_roundtrip_seconds",
    "sluice_shared_limit_up",
    "sluice_shared_limit_decisions_total",
    "sluice_shared_limit_roundtrip_seconds",
    "sluice_shared_limit_blocked_seconds_total",
    "sluice_shared_limit_reconnects_total",
    "sluice_shared_limit_timeouts_total",
    "sluice_shared_limit_late_sends_total",
};

static void check_family_order(char **lines, size_t n)
{
    size_t next = 0;
    char want[160];

    for (size_t i = 0; i < n; i++) {
        if (strncmp(lines[i], "# TYPE ", 7) != 0)
            continue;
        assert_true(next < SL_ARRAY_LEN(family_order));
        snprintf(want, sizeof(want), "# TYPE %s ", family_order[next]);
        assert_true(strncmp(lines[i], want, strlen(want)) == 0);
        /* HELP directly precedes its TYPE. */
        assert_true(i > 0);
        snprintf(want, sizeof(want), "# HELP %s ", family_order[next]);
        assert_true(strncmp(lines[i - 1], want, strlen(want)) == 0);
        next++;
    }
    assert_int_equal(next, SL_ARRAY_LEN(family_order));
}

static const struct sl_metrics_global test_global = {
    .queue_depth = 6,
    .queue_bytes = 4096,
    .connections = 17,
    .connections_accepted = 170,
    .write_errors = 3,
    .draining = true,
    .reloads = 2,
    .start_time_seconds = 1700000000.5,
};

static void test_two_routes(void **state)
{
    (void)state;
    static struct sl_route_stats api, slow, unrouted;
    memset(&api, 0, sizeof(api));
    memset(&slow, 0, sizeof(slow));
    memset(&unrouted, 0, sizeof(unrouted));

    for (int i = 0; i < 7; i++)
        sl_route_stats_finish(&api, SL_OUTCOME_RELAYED, SL_LANE_NORMAL, -1);
    sl_route_stats_finish(&slow, SL_OUTCOME_QUEUE_TIMEOUT, SL_LANE_NORMAL, 30);
    for (int i = 0; i < 3; i++)
        sl_route_stats_finish(&unrouted, SL_OUTCOME_NO_ROUTE, SL_LANE_NORMAL, -1);
    sl_histogram_observe(&api.queue_wait[SL_LANE_NORMAL], 0.003);
    sl_histogram_observe(&api.queue_wait[SL_LANE_NORMAL], 0.005);
    sl_histogram_observe(&api.queue_wait[SL_LANE_NORMAL], 0.25);
    sl_histogram_observe(&api.queue_wait[SL_LANE_NORMAL], 400);
    sl_histogram_observe(&api.upstream_duration, 0.125);
    api.retries[SL_RETRY_STATUS_429] = 3;
    api.pauses = 2;
    api.upstream_codes[200] = 5;
    api.upstream_codes[429] = 1;
    api.upstream_errors = 2;
    api.client_gone = 4;
    api.dispatched = 9;
    api.tls_handshakes = 6;

    static struct sl_route_config api_cfg;
    memset(&api_cfg, 0, sizeof(api_cfg));
    api_cfg.rate = (struct sl_limit){2.5, 1000000};
    api_cfg.burst = 4;
    api_cfg.quotas[0] = (struct sl_limit){5000, 3600 * INT64_C(1000000)};
    api_cfg.n_quotas = 1;

    struct sl_metrics_route routes[] = {
        {.name = "api", .stats = &api, .lane_depth = {1, 2, 0}, .in_flight = 3,
         .max_in_flight = 32, .oldest_wait_seconds = 1.5, .cfg = &api_cfg, .keyed = true,
         .keys_live = 12, .keys_evicted = 34, .keys_bytes = 5678},
        {.name = "slow", .stats = &slow, .lane_depth = {0, 0, 3}, .paused = true,
         .pause_reason = SL_PAUSED_BY_BUDGET, .announced = true, .announced_n = 500,
         .announced_window_s = 60, .allows = 600, .above = true},
    };
    char *text = render(routes, 2, &unrouted, &test_global);
    static char *lines[MAX_LINES];
    size_t n = split_lines(text, lines);

    assert_int_equal(validate(lines, n), SL_ARRAY_LEN(family_order));
    check_family_order(lines, n);

    /* Every route x every outcome, plus the unrouted block. */
    assert_int_equal(count_prefix(lines, n, "sluice_requests_total{"), 3 * SL_OUTCOME_COUNT);
    expect_line(lines, n, "sluice_requests_total{route=\"api\",outcome=\"relayed\"} 7");
    expect_line(lines, n, "sluice_requests_total{route=\"api\",outcome=\"queue_full\"} 0");
    expect_line(lines, n, "sluice_requests_total{route=\"slow\",outcome=\"queue_timeout\"} 1");
    expect_line(lines, n, "sluice_requests_total{route=\"\",outcome=\"no_route\"} 3");
    expect_line(lines, n, "sluice_requests_total{route=\"\",outcome=\"relayed\"} 0");

    assert_int_equal(count_prefix(lines, n, "sluice_queue_depth{"), 2 * SL_LANE_COUNT);
    expect_line(lines, n, "sluice_queue_depth{route=\"api\",lane=\"high\"} 1");
    expect_line(lines, n, "sluice_queue_depth{route=\"api\",lane=\"normal\"} 2");
    expect_line(lines, n, "sluice_queue_depth{route=\"slow\",lane=\"low\"} 3");
    expect_line(lines, n, "sluice_queue_bytes 4096");
    assert_int_equal(count_prefix(lines, n, "sluice_retries_total{"), 2 * SL_RETRY_REASON_COUNT);
    expect_line(lines, n, "sluice_retries_total{route=\"api\",reason=\"429\"} 3");
    expect_line(lines, n, "sluice_retries_total{route=\"api\",reason=\"connect\"} 0");
    expect_line(lines, n, "sluice_route_pauses_total{route=\"api\"} 2");
    /* Each lane is its own series; an idle lane is all zeros. */
    expect_line(lines, n, "sluice_queue_wait_seconds_count{route=\"api\",lane=\"high\"} 0");
    expect_line(lines, n, "sluice_queue_depth_total 6");

    /* Cumulative buckets: 0.003, 0.005 | 0.25 | 400 above the last bound. */
    expect_line(lines, n, "sluice_queue_wait_seconds_bucket{route=\"api\",lane=\"normal\",le=\"0.001\"} 0");
    expect_line(lines, n, "sluice_queue_wait_seconds_bucket{route=\"api\",lane=\"normal\",le=\"0.005\"} 2");
    expect_line(lines, n, "sluice_queue_wait_seconds_bucket{route=\"api\",lane=\"normal\",le=\"0.1\"} 2");
    expect_line(lines, n, "sluice_queue_wait_seconds_bucket{route=\"api\",lane=\"normal\",le=\"0.25\"} 3");
    expect_line(lines, n, "sluice_queue_wait_seconds_bucket{route=\"api\",lane=\"normal\",le=\"1\"} 3");
    expect_line(lines, n, "sluice_queue_wait_seconds_bucket{route=\"api\",lane=\"normal\",le=\"2.5\"} 3");
    expect_line(lines, n, "sluice_queue_wait_seconds_bucket{route=\"api\",lane=\"normal\",le=\"300\"} 3");
    expect_line(lines, n, "sluice_queue_wait_seconds_bucket{route=\"api\",lane=\"normal\",le=\"+Inf\"} 4");
    expect_line(lines, n, "sluice_queue_wait_seconds_sum{route=\"api\",lane=\"normal\"} 400.258");
    expect_line(lines, n, "sluice_queue_wait_seconds_count{route=\"api\",lane=\"normal\"} 4");
    expect_line(lines, n, "sluice_queue_wait_seconds_bucket{route=\"slow\",lane=\"normal\",le=\"10\"} 0");
    expect_line(lines, n, "sluice_queue_wait_seconds_bucket{route=\"slow\",lane=\"normal\",le=\"30\"} 1");
    expect_line(lines, n, "sluice_queue_wait_seconds_count{route=\"slow\",lane=\"normal\"} 1");
    assert_int_equal(count_prefix(lines, n, "sluice_queue_wait_seconds_bucket{route=\"api\",lane=\"normal\""),
                     SL_HISTOGRAM_BUCKETS + 1);
    assert_int_equal(check_histograms(lines, n, "sluice_queue_wait_seconds"), 2 * SL_LANE_COUNT);
    assert_int_equal(check_histograms(lines, n, "sluice_upstream_duration_seconds"), 2);
    expect_line(lines, n,
                "sluice_upstream_duration_seconds_bucket{route=\"api\",le=\"0.25\"} 1");
    expect_line(lines, n, "sluice_upstream_duration_seconds_sum{route=\"api\"} 0.125");
    expect_line(lines, n, "sluice_upstream_duration_seconds_sum{route=\"slow\"} 0");

    /* Codes are sparse; code="error" is always there. */
    expect_line(lines, n, "sluice_upstream_requests_total{route=\"api\",code=\"200\"} 5");
    expect_line(lines, n, "sluice_upstream_requests_total{route=\"api\",code=\"429\"} 1");
    expect_line(lines, n, "sluice_upstream_requests_total{route=\"api\",code=\"error\"} 2");
    expect_line(lines, n, "sluice_upstream_requests_total{route=\"slow\",code=\"error\"} 0");
    assert_int_equal(count_prefix(lines, n, "sluice_upstream_requests_total{"), 4);

    expect_line(lines, n, "sluice_in_flight{route=\"api\"} 3");
    expect_line(lines, n, "sluice_in_flight{route=\"slow\"} 0");
    expect_line(lines, n, "sluice_route_paused{route=\"api\"} 0");
    expect_line(lines, n, "sluice_route_paused{route=\"slow\"} 1");
    expect_line(lines, n, "sluice_client_gone_total{route=\"api\"} 4");
    expect_line(lines, n, "sluice_dispatched_total{route=\"api\"} 9");
    expect_line(lines, n, "sluice_dispatched_total{route=\"slow\"} 0");
    /* Per key only for keyed routes; the announced limit only where announced. */
    expect_line(lines, n, "sluice_keys{route=\"api\"} 12");
    expect_line(lines, n, "sluice_key_evictions_total{route=\"api\"} 34");
    expect_line(lines, n, "sluice_keys_bytes{route=\"api\"} 5678");
    assert_int_equal(count_prefix(lines, n, "sluice_keys{"), 1);
    expect_line(lines, n, "sluice_upstream_limit{route=\"slow\"} 500");
    expect_line(lines, n, "sluice_upstream_limit_window_seconds{route=\"slow\"} 60");
    expect_line(lines, n, "sluice_limit_allows{route=\"slow\"} 600");
    expect_line(lines, n, "sluice_limit_above_upstream{route=\"slow\"} 1");
    assert_int_equal(count_prefix(lines, n, "sluice_limit_above_upstream{"), 1);
    expect_line(lines, n, "sluice_upstream_tls_handshakes_total{route=\"api\"} 6");
    expect_line(lines, n, "sluice_upstream_tls_handshakes_total{route=\"slow\"} 0");
    expect_line(lines, n, "sluice_queue_oldest_seconds{route=\"api\"} 1.5");
    expect_line(lines, n, "sluice_queue_oldest_seconds{route=\"slow\"} 0");
    expect_line(lines, n, "sluice_route_max_in_flight{route=\"api\"} 32");
    /* One series per reason; 1 only for the reason of a pause in force. */
    assert_int_equal(count_prefix(lines, n, "sluice_route_paused_reason{"),
                     2 * SL_PAUSE_REASON_COUNT);
    expect_line(lines, n, "sluice_route_paused_reason{route=\"slow\",reason=\"budget\"} 1");
    expect_line(lines, n, "sluice_route_paused_reason{route=\"slow\",reason=\"retry_after\"} 0");
    expect_line(lines, n, "sluice_route_paused_reason{route=\"api\",reason=\"retry_after\"} 0");
    /* Limits only for a route with a config. */
    expect_line(lines, n, "sluice_route_rate_limit_per_second{route=\"api\"} 2.5");
    assert_int_equal(count_prefix(lines, n, "sluice_route_rate_limit_per_second{"), 1);
    expect_line(lines, n,
                "sluice_route_limit{route=\"api\",limit=\"rate\",period_seconds=\"1\"} 2.5");
    expect_line(lines, n,
                "sluice_route_limit{route=\"api\",limit=\"quota\",period_seconds=\"3600\"} 5000");
    assert_int_equal(count_prefix(lines, n, "sluice_route_limit{"), 2);
    expect_line(lines, n, "sluice_route_burst{route=\"api\"} 4");
    expect_line(lines, n, "sluice_connections 17");
    expect_line(lines, n, "sluice_connections_accepted_total 170");
    expect_line(lines, n, "sluice_client_write_errors_total 3");
    expect_line(lines, n, "sluice_draining 1");
    expect_line(lines, n, "sluice_config_reloads_total 2");
    expect_line(lines, n, "sluice_start_time_seconds 1700000000.5");
    expect_line(lines, n, "sluice_build_info{version=\"" SLUICE_VERSION "\"} 1");
    expect_line(lines, n, "# TYPE sluice_queue_wait_seconds histogram");
    expect_line(lines, n, "# TYPE sluice_requests_total counter");
    expect_line(lines, n, "# TYPE sluice_in_flight gauge");
    free(text);
}

static void test_label_escaping(void **state)
{
    (void)state;
    static struct sl_route_stats s;
    memset(&s, 0, sizeof(s));
    struct sl_metrics_route r = {.name = "we\"ird\\route\nx", .stats = &s};
    char *text = render(&r, 1, NULL, &test_global);
    static char *lines[MAX_LINES];
    size_t n = split_lines(text, lines);

    validate(lines, n);
    expect_line(lines, n, "sluice_in_flight{route=\"we\\\"ird\\\\route\\nx\"} 0");
    expect_line(lines, n,
                "sluice_requests_total{route=\"we\\\"ird\\\\route\\nx\",outcome=\"relayed\"} 0");
    /* No unrouted stats given: no route="" block. */
    assert_int_equal(count_prefix(lines, n, "sluice_requests_total{route=\"\""), 0);
    free(text);
}

static void test_zero_routes(void **state)
{
    (void)state;
    static struct sl_route_stats unrouted;
    memset(&unrouted, 0, sizeof(unrouted));
    char *text = render(NULL, 0, &unrouted, &test_global);
    static char *lines[MAX_LINES];
    size_t n = split_lines(text, lines);

    assert_int_equal(validate(lines, n), SL_ARRAY_LEN(family_order));
    check_family_order(lines, n);
    expect_line(lines, n, "sluice_requests_total{route=\"\",outcome=\"no_route\"} 0");
    assert_int_equal(count_prefix(lines, n, "sluice_requests_total{"), SL_OUTCOME_COUNT);
    assert_int_equal(count_prefix(lines, n, "sluice_queue_depth{"), 0);
    assert_int_equal(count_prefix(lines, n, "sluice_in_flight"), 0);
    expect_line(lines, n, "sluice_queue_depth_total 6");
    expect_line(lines, n, "sluice_build_info{version=\"" SLUICE_VERSION "\"} 1");
    free(text);
}

static void test_batches(void **state)
{
    (void)state;
    static struct sl_batch_stats b;
    memset(&b, 0, sizeof(b));
    b.batches[SL_BATCH_ANSWERED] = 3;
    b.batches[SL_BATCH_BAD_REQUEST] = 1;
    b.items[SL_OUTCOME_RELAYED] = 29;
    b.items[SL_OUTCOME_RESPONSE_TOO_LARGE] = 2;
    struct sl_metrics_global g = test_global;
    g.batches = &b;
    char *text = render(NULL, 0, NULL, &g);
    static char *lines[MAX_LINES];
    size_t n = split_lines(text, lines);

    assert_int_equal(validate(lines, n), SL_ARRAY_LEN(family_order));
    check_family_order(lines, n);
    assert_int_equal(count_prefix(lines, n, "sluice_batches_total{"), SL_BATCH_OUTCOME_COUNT);
    assert_int_equal(count_prefix(lines, n, "sluice_batch_items_total{"), SL_OUTCOME_COUNT);
    expect_line(lines, n, "sluice_batches_total{outcome=\"answered\"} 3");
    expect_line(lines, n, "sluice_batches_total{outcome=\"bad_request\"} 1");
    expect_line(lines, n, "sluice_batches_total{outcome=\"client_gone\"} 0");
    expect_line(lines, n, "sluice_batch_items_total{outcome=\"relayed\"} 29");
    expect_line(lines, n, "sluice_batch_items_total{outcome=\"response_too_large\"} 2");
    expect_line(lines, n, "sluice_batch_items_total{outcome=\"queue_full\"} 0");
    assert_string_equal(sl_batch_outcome_name(SL_BATCH_CLIENT_GONE), "client_gone");
    assert_string_equal(sl_batch_outcome_name(SL_BATCH_OUTCOME_COUNT), "unknown");
    free(text);
    /* Without batch stats, the families still appear, all zero. */
    text = render(NULL, 0, NULL, &test_global);
    n = split_lines(text, lines);
    expect_line(lines, n, "sluice_batches_total{outcome=\"answered\"} 0");
    expect_line(lines, n, "sluice_batch_items_total{outcome=\"relayed\"} 0");
    free(text);
}

/* A frozen buffer refuses appends, as an allocation failure would. */
static void test_write_failure(void **state)
{
    (void)state;
    struct evbuffer *buf = evbuffer_new();
    assert_non_null(buf);
    assert_int_equal(evbuffer_freeze(buf, 0), 0);
    assert_int_equal(sl_metrics_write(buf, NULL, 0, NULL, &test_global), SL_ENOMEM);
    assert_int_equal(evbuffer_get_length(buf), 0);
    evbuffer_free(buf);
}

/* Jobs and Redis: by state, per-route streams (durable mode only), the Redis connection. */
static void test_jobs_and_redis(void **state)
{
    struct sl_route_stats st = {0};
    struct sl_histogram rtt = {0};
    struct sl_metrics_route routes[] = {
        {.name = "api", .stats = &st, .has_streams = true, .stream_length = 12,
         .stream_pending = 5, .dead_letter_length = 1},
        {.name = "plain", .stats = &st},
    };
    struct sl_metrics_global g = {.jobs = {3, 2, 7, 1}, .jobs_accepted = 13, .has_redis = true,
                                  .redis_up = true, .jobs_dead_lettered = 1,
                                  .redis_reconnects = 2, .redis_timeouts = 4, .redis_rtt = &rtt};
    static char *lines[MAX_LINES];
    char *text;
    size_t n;

    (void)state;
    sl_histogram_observe(&rtt, 0.0004);
    sl_histogram_observe(&rtt, 0.02);
    text = render(routes, 2, NULL, &g);
    n = split_lines(text, lines);
    assert_int_equal(validate(lines, n), SL_ARRAY_LEN(family_order));
    expect_line(lines, n, "sluice_jobs{state=\"queued\"} 3");
    expect_line(lines, n, "sluice_jobs{state=\"failed\"} 1");
    expect_line(lines, n, "sluice_jobs_accepted_total 13");
    expect_line(lines, n, "sluice_jobs_stream_length{route=\"api\"} 12");
    expect_line(lines, n, "sluice_jobs_stream_pending{route=\"api\"} 5");
    expect_line(lines, n, "sluice_jobs_dead_letter_length{route=\"api\"} 1");
    assert_int_equal(count_prefix(lines, n, "sluice_jobs_stream_length{route=\"plain\"}"), 0);
    expect_line(lines, n, "sluice_jobs_dead_lettered_total 1");
    expect_line(lines, n, "sluice_redis_up 1");
    expect_line(lines, n, "sluice_redis_reconnects_total 2");
    expect_line(lines, n, "sluice_redis_timeouts_total 4");
    expect_line(lines, n, "sluice_redis_roundtrip_seconds_bucket{le=\"0.001\"} 1");
    expect_line(lines, n, "sluice_redis_roundtrip_seconds_bucket{le=\"+Inf\"} 2");
    expect_line(lines, n, "sluice_redis_roundtrip_seconds_count 2");
    free(text);

    /* Memory mode: the Redis families are declared, with no samples. */
    g.has_redis = false;
    routes[0].has_streams = false;
    text = render(routes, 2, NULL, &g);
    n = split_lines(text, lines);
    assert_int_equal(count_prefix(lines, n, "sluice_redis_up "), 0);
    assert_int_equal(count_prefix(lines, n, "sluice_redis_roundtrip_seconds_"), 0);
    assert_int_equal(count_prefix(lines, n, "sluice_jobs_stream_length{"), 0);
    expect_line(lines, n, "sluice_jobs{state=\"done\"} 7");
    free(text);
}

/* [redis] shared_limit: decisions by result, their round trips, time blocked. */
static void test_shared_limit(void **state)
{
    struct sl_route_stats st = {0};
    struct sl_histogram rtt = {0};
    struct sl_metrics_route routes[] = {{.name = "api", .stats = &st}};
    struct sl_metrics_global g = {.has_shared = true, .shared_up = true,
                                  .shared_decisions = {10, 20, 1, 2},
                                  .shared_blocked_seconds = 1.5, .shared_reconnects = 3,
                                  .shared_timeouts = 4, .shared_records = 5,
                                  .shared_rtt = &rtt};
    static char *lines[MAX_LINES];
    char *text;
    size_t n;

    (void)state;
    sl_histogram_observe(&rtt, 0.0004);
    text = render(routes, 1, NULL, &g);
    n = split_lines(text, lines);
    assert_int_equal(validate(lines, n), SL_ARRAY_LEN(family_order));
    expect_line(lines, n, "sluice_shared_limit_up 1");
    expect_line(lines, n, "sluice_shared_limit_decisions_total{result=\"go\"} 10");
    expect_line(lines, n, "sluice_shared_limit_decisions_total{result=\"wait\"} 20");
    expect_line(lines, n, "sluice_shared_limit_decisions_total{result=\"error\"} 1");
    expect_line(lines, n, "sluice_shared_limit_decisions_total{result=\"late\"} 2");
    expect_line(lines, n, "sluice_shared_limit_blocked_seconds_total 1.5");
    expect_line(lines, n, "sluice_shared_limit_reconnects_total 3");
    expect_line(lines, n, "sluice_shared_limit_timeouts_total 4");
    expect_line(lines, n, "sluice_shared_limit_late_sends_total 5");
    expect_line(lines, n, "sluice_shared_limit_roundtrip_seconds_bucket{le=\"0.001\"} 1");
    free(text);

    /* Limits in memory: declared, no samples. */
    g.has_shared = false;
    text = render(routes, 1, NULL, &g);
    n = split_lines(text, lines);
    assert_int_equal(count_prefix(lines, n, "sluice_shared_limit_up "), 0);
    assert_int_equal(count_prefix(lines, n, "sluice_shared_limit_decisions_total{"), 0);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outcome_table),
        cmocka_unit_test(test_histogram_edges),
        cmocka_unit_test(test_route_stats_finish),
        cmocka_unit_test(test_route_stats_recent),
        cmocka_unit_test(test_two_routes),
        cmocka_unit_test(test_jobs_and_redis),
        cmocka_unit_test(test_shared_limit),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_zero_routes),
        cmocka_unit_test(test_batches),
        cmocka_unit_test(test_write_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
