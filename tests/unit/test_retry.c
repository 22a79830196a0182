/* test_retry.c - retry policy: limit announcements, idempotency, backoff. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <sys/queue.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "clock.h"
#include "retry.h"
#include "sluice.h"

#define S SL_USEC_PER_SEC
#define MAX_FIELDS 16
/* Sun, 06 Nov 1994 08:49:37 GMT: the RFC's own example date. */
#define RFC_DATE_S INT64_C(784111777)
/* 2030-01-01T00:00:00Z, for the two-digit-year rule. */
#define Y2030_S INT64_C(1893456000)
#define Y2090_S INT64_C(3786912000)
#define NOW_S INT64_C(1700000000)

/* A NULL-terminated list of name/value pairs: {"A", "1", "B", "2", NULL}. */
static void fill(struct evkeyvalq *q, const char *const *pairs)
{
    TAILQ_INIT(q);
    for (size_t i = 0; pairs[i] != NULL && i < 2 * MAX_FIELDS; i += 2)
        assert_int_equal(evhttp_add_header(q, pairs[i], pairs[i + 1]), 0);
}

/* sl_retry_ratelimit_exhausted over `pairs`; *pause is -7 if not touched. */
static int exhausted(const char *const *pairs, int64_t now_s, int64_t *pause)
{
    struct evkeyvalq q;
    int r;

    fill(&q, pairs);
    *pause = -7;
    r = sl_retry_ratelimit_exhausted(&q, now_s * S, pause);
    evhttp_clear_headers(&q);
    return r;
}

static void expect_pause(const char *const *pairs, int64_t now_s, int64_t want_us)
{
    int64_t pause;

    assert_int_equal(exhausted(pairs, now_s, &pause), 1);
    assert_int_equal(pause, want_us);
}

static void expect_not_spent(const char *const *pairs, int64_t now_s)
{
    int64_t pause;

    assert_int_equal(exhausted(pairs, now_s, &pause), 0);
}

static int64_t after(const char *value, int64_t now_s)
{
    int64_t d = -7;

    assert_int_equal(sl_retry_after_parse(value, now_s * S, &d), 0);
    return d;
}

static void test_after_delta(void **state)
{
    (void)state;
    assert_int_equal(after("120", NOW_S), 120 * S);
    assert_int_equal(after("0", NOW_S), 0);
    assert_int_equal(after("  7\t", NOW_S), 7 * S);
    assert_int_equal(after("007", NOW_S), 7 * S);
    assert_int_equal(after("86400", NOW_S), SL_RETRY_MAX_PAUSE_US);
    assert_int_equal(after("86401", NOW_S), SL_RETRY_MAX_PAUSE_US);
    assert_int_equal(after("99999999999999999999999999999", NOW_S), SL_RETRY_MAX_PAUSE_US);
}

static void test_after_dates(void **state)
{
    (void)state;
    /* 60 s before the date: each form gives exactly 60 s. */
    assert_int_equal(after("Sun, 06 Nov 1994 08:49:37 GMT", RFC_DATE_S - 60), 60 * S);
    assert_int_equal(after("Sunday, 06-Nov-94 08:49:37 GMT", RFC_DATE_S - 60), 60 * S);
    assert_int_equal(after("Sun Nov  6 08:49:37 1994", RFC_DATE_S - 60), 60 * S);
    assert_int_equal(after("Sun Nov 06 08:49:37 1994", RFC_DATE_S - 60), 60 * S);
    /* Past dates, and the very instant, give 0. */
    assert_int_equal(after("Sun, 06 Nov 1994 08:49:37 GMT", RFC_DATE_S + 10), 0);
    assert_int_equal(after("Sunday, 06-Nov-94 08:49:37 GMT", RFC_DATE_S + 10), 0);
    assert_int_equal(after("Sun Nov  6 08:49:37 1994", RFC_DATE_S + 10), 0);
    assert_int_equal(after("Sun, 06 Nov 1994 08:49:37 GMT", RFC_DATE_S), 0);
    /* Far future clamps; leap day; leap second. */
    assert_int_equal(after("Fri, 31 Dec 9999 23:59:59 GMT", NOW_S), SL_RETRY_MAX_PAUSE_US);
    assert_int_equal(after("Thu, 29 Feb 2024 00:00:00 GMT", 1709164800 - 5), 5 * S);
    assert_int_equal(after("Sat, 31 Dec 2016 23:59:60 GMT", 1483228800 - 10), 10 * S);
}

/* RFC 9110: a two-digit year more than 50 years ahead is in the past. */
static void test_after_rfc850_century(void **state)
{
    (void)state;
    assert_int_equal(after("Tuesday, 01-Jan-30 00:01:00 GMT", Y2030_S), 60 * S);
    assert_int_equal(after("Friday, 01-Jan-99 00:00:00 GMT", Y2030_S), 0);
    /* 2070 is 40 years ahead: still the future (clamped to a day). */
    assert_int_equal(after("Wednesday, 01-Jan-70 00:00:00 GMT", Y2030_S), SL_RETRY_MAX_PAUSE_US);
    /* Late in a century, "01" is the next one's: 2101, 11 years ahead. */
    assert_int_equal(after("Saturday, 01-Jan-01 00:00:00 GMT", Y2090_S), SL_RETRY_MAX_PAUSE_US);
    assert_int_equal(after("Sunday, 01-Jan-90 00:00:10 GMT", Y2090_S), 10 * S);
}

static void test_after_malformed(void **state)
{
    static const char *const bad[] = {
        "", "   ", "-1", "1.5", "+5", "12a", "1 2", "soon",
        "Sun, 06 Foo 1994 08:49:37 GMT",  /* bad month */
        "Sun, 06 nov 1994 08:49:37 GMT",  /* month names are case-sensitive */
        "sun, 06 Nov 1994 08:49:37 GMT",  /* day names too */
        "Sux, 06 Nov 1994 08:49:37 GMT",  /* no such day */
        "Sun, 06 Nov 1994 08:49:37 PST",  /* GMT only */
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 06 Nov 1994 08:49:37 GMT x",
        "Sun, 6 Nov 1994 08:49:37 GMT",   /* IMF day is two digits */
        "Sun, 31 Feb 1994 08:49:37 GMT",  /* no such date */
        "Sun, 29 Feb 1900 08:49:37 GMT",  /* 1900 is not a leap year */
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:37 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sunday, 06 Nov 1994 08:49:37 GMT", /* long name with IMF layout */
        "Sun, 06-Nov-94 08:49:37 GMT",    /* short name with RFC 850 layout */
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",        /* asctime pads with a space */
        "Sun Nov  6 08:49:37 94",
        "Sun Nov  6 08:49:37 1994 GMT",
    };
    int64_t d = -7;

    (void)state;
    for (size_t i = 0; i < SL_ARRAY_LEN(bad); i++)
        if (sl_retry_after_parse(bad[i], NOW_S * S, &d) != -1)
            fail_msg("accepted \"%s\" as %lld us", bad[i], (long long)d);
    assert_int_equal(sl_retry_after_parse(NULL, NOW_S * S, &d), -1);
}

static void test_ietf_one_policy(void **state)
{
    (void)state;
    expect_pause((const char *[]){"RateLimit", "\"default\";r=0;t=5", NULL}, NOW_S, 5 * S);
    expect_pause((const char *[]){"ratelimit", "default;r=0;t=5", NULL}, NOW_S, 5 * S);
    expect_pause((const char *[]){"RateLimit", "\"d\";r=-1;t=2", NULL}, NOW_S, 2 * S);
    expect_pause((const char *[]){"RateLimit", "\"d\";r=0;t=0", NULL}, NOW_S, 0);
    expect_not_spent((const char *[]){"RateLimit", "\"default\";r=1;t=5", NULL}, NOW_S);
    /* Whitespace, parameter order, unknown parameters of every type. */
    expect_pause((const char *[]){"RateLimit", "  \"a\" ; t = 7 ;r= 0  ", NULL}, NOW_S, 7 * S);
    expect_pause((const char *[]){"RateLimit",
                                  "\"a\";pk=:cGFydA==:;q=\"x, y\";t=3;w=1.5;f=?1;z;x=tok;r=0",
                                  NULL},
                 NOW_S, 3 * S);
    /* The last duplicate parameter wins. */
    expect_pause((const char *[]){"RateLimit", "\"a\";r=5;r=0;t=4", NULL}, NOW_S, 4 * S);
    expect_pause((const char *[]){"RateLimit", "\"a\";r=0;t=999999999999999", NULL}, NOW_S,
                 SL_RETRY_MAX_PAUSE_US);
}

static void test_ietf_several_policies(void **state)
{
    (void)state;
    expect_pause((const char *[]){"RateLimit",
                                  "\"a\";r=0;t=5, \"b\";r=10;t=60, c;r=0;t=30", NULL},
                 NOW_S, 30 * S);
    /* Split across lines: one list. */
    expect_pause((const char *[]){"RateLimit", "\"a\";r=0;t=5", "X-Other", "1",
                                  "RateLimit", "\"b\";r=0;t=9", NULL},
                 NOW_S, 9 * S);
    expect_not_spent((const char *[]){"RateLimit", "\"a\";r=3;t=5, \"b\";r=1;t=9", NULL},
                     NOW_S);
    /* Items without r or t, or with non-integer ones, are ignored. */
    expect_pause((const char *[]){"RateLimit",
                                  "\"a\";r=0, \"b\";t=50, \"c\";r=0;t=1.5, \"d\";r=0;t=2", NULL},
                 NOW_S, 2 * S);
    expect_pause((const char *[]){"RateLimit", "\"a\";r=0;t=-3, \"d\";r=0;t=2", NULL},
                 NOW_S, 2 * S);
}

static void test_ietf_unusable(void **state)
{
    static const char *const bad[] = {
        "\"a\";r=0",                         /* no t */
        "\"a\";t=5",                         /* no r */
        "\"a\";r=\"0\";t=5",                 /* r not an integer */
        "\"a\";r=0;t=-3",                      /* negative reset */
        "\"a\";r=0;t=1234567890123456",        /* 16 digits: not an sf-integer */
        "limit=10, remaining=0, reset=5",    /* draft-07 dictionary */
        "garbage!!",
        "\"a\";r=0;t=5,",                    /* trailing comma */
        "\"a\";r=0;t=5 \"b\"",
        "\"unterminated;r=0;t=5",
        "\"a\";R=0;t=5",                     /* keys are lowercase */
        "\"a\";r=0;t=5, ,\"b\"",
        "",
    };
    int64_t pause;

    (void)state;
    for (size_t i = 0; i < SL_ARRAY_LEN(bad); i++) {
        const char *alone[] = {"RateLimit", bad[i], NULL};
        const char *with_x[] = {"RateLimit", bad[i], "X-RateLimit-Remaining", "0",
                                "X-RateLimit-Reset", "11", NULL};

        if (exhausted(alone, NOW_S, &pause) != 0)
            fail_msg("\"%s\" alone said spent", bad[i]);
        /* Unusable: the next form decides. */
        if (exhausted(with_x, NOW_S, &pause) != 1 || pause != 11 * S)
            fail_msg("\"%s\" did not fall through (pause %lld)", bad[i], (long long)pause);
    }
    /* A syntax error anywhere spoils the whole (joined) field. */
    expect_pause((const char *[]){"RateLimit", "\"a\";r=0;t=5", "RateLimit", "((",
                                  "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "11",
                                  NULL},
                 NOW_S, 11 * S);
}

static void test_old_draft_pair(void **state)
{
    (void)state;
    expect_pause((const char *[]){"RateLimit-Remaining", "0", "RateLimit-Reset", "5", NULL},
                  NOW_S, 5 * S);
    expect_pause((const char *[]){"ratelimit-remaining", " 0 ", "RATELIMIT-RESET", "12", NULL},
                 NOW_S, 12 * S);
    expect_pause((const char *[]){"RateLimit-Remaining", "-2", "RateLimit-Reset", "1", NULL},
                 NOW_S, 1 * S);
    expect_not_spent((const char *[]){"RateLimit-Remaining", "3", "RateLimit-Reset", "5", NULL},
                     NOW_S);
    expect_not_spent((const char *[]){"RateLimit-Remaining", "0", NULL}, NOW_S);
    expect_not_spent((const char *[]){"RateLimit-Remaining", "0", "RateLimit-Reset", "soon",
                                      NULL},
                     NOW_S);
    expect_not_spent((const char *[]){"RateLimit-Remaining", "none", "RateLimit-Reset", "5",
                                      NULL},
                     NOW_S);
    /* Repeats that disagree are unusable; agreeing repeats are fine. */
    expect_not_spent((const char *[]){"RateLimit-Remaining", "0", "RateLimit-Remaining", "4",
                                      "RateLimit-Reset", "5", NULL},
                     NOW_S);
    expect_not_spent((const char *[]){"RateLimit-Remaining", "4", "RateLimit-Remaining", "0",
                                      "RateLimit-Reset", "5", NULL},
                     NOW_S);
    expect_pause((const char *[]){"RateLimit-Remaining", "0", "RateLimit-Remaining", "0",
                                  "RateLimit-Reset", "5", NULL},
                 NOW_S, 5 * S);
}

static void test_x_ratelimit(void **state)
{
    (void)state;
    expect_pause((const char *[]){"X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "30", NULL},
                 NOW_S, 30 * S);
    expect_pause((const char *[]){"X-RateLimit-Remaining", "0", "X-RateLimit-Reset",
                                  "1000000000", NULL},
                 NOW_S, SL_RETRY_MAX_PAUSE_US); /* 10^9 itself is seconds */
    expect_pause((const char *[]){"X-RateLimit-Remaining", "0", "X-RateLimit-Reset",
                                  "1700000045", NULL},
                 NOW_S, 45 * S);
    expect_pause((const char *[]){"X-RateLimit-Remaining", "0", "X-RateLimit-Reset",
                                  "1699999000", NULL},
                 NOW_S, 0);
    expect_pause((const char *[]){"X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "1.5", NULL},
                 NOW_S, 1500000);
    expect_pause((const char *[]){"X-RateLimit-Remaining", "0", "X-RateLimit-Reset",
                                  "2.0000011", NULL},
                 NOW_S, 2000002); /* rounded up to the microsecond */
    expect_pause((const char *[]){"X-RateLimit-Remaining", "0", "X-RateLimit-Reset",
                                  "0.0000001", NULL},
                 NOW_S, 1);
    expect_pause((const char *[]){"X-RateLimit-Remaining", "0", "X-RateLimit-Reset",
                                  "1700000045.25", NULL},
                 NOW_S, 45250000);
    expect_pause((const char *[]){"X-RateLimit-Remaining", "-1", "X-RateLimit-Reset", "3", NULL},
                 NOW_S, 3 * S);
    expect_not_spent((const char *[]){"X-RateLimit-Remaining", "1", "X-RateLimit-Reset", "3",
                                      NULL},
                     NOW_S);
    expect_not_spent((const char *[]){"X-RateLimit-Remaining", "0.5", "X-RateLimit-Reset", "3",
                                      NULL},
                     NOW_S);
    static const char *const bad_reset[] = {"", "-3", "1.", ".5", "3s", "soon"};
    for (size_t i = 0; i < SL_ARRAY_LEN(bad_reset); i++)
        expect_not_spent((const char *[]){"X-RateLimit-Remaining", "0", "X-RateLimit-Reset",
                                          bad_reset[i], NULL},
                         NOW_S);
    expect_not_spent((const char *[]){NULL}, NOW_S);
}

static void test_precedence(void **state)
{
    (void)state;
    static const char *const draft[] = {"RateLimit-Remaining", "0", "RateLimit-Reset", "10"};
    static const char *const x[] = {"X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "20"};

    /* All three spent: the IETF field decides. */
    expect_pause((const char *[]){x[0], x[1], x[2], x[3], draft[0], draft[1], draft[2],
                                  draft[3], "RateLimit", "\"a\";r=0;t=5", NULL},
                 NOW_S, 5 * S);
    /* The IETF field says budget left: it decides even against the others. */
    expect_not_spent((const char *[]){x[0], x[1], x[2], x[3], draft[0], draft[1], draft[2],
                                      draft[3], "RateLimit", "\"a\";r=2;t=5", NULL},
                     NOW_S);
    /* Without a usable IETF field, the older draft pair comes next. */
    expect_pause((const char *[]){x[0], x[1], x[2], x[3], draft[0], draft[1], draft[2],
                                  draft[3], "RateLimit", "nonsense=", NULL},
                 NOW_S, 10 * S);
    expect_not_spent((const char *[]){x[0], x[1], x[2], x[3], "RateLimit-Remaining", "9",
                                      "RateLimit-Reset", "10", NULL},
                     NOW_S);
    /* An unusable draft pair falls through to X-RateLimit. */
    expect_pause((const char *[]){x[0], x[1], x[2], x[3], "RateLimit-Remaining", "0", NULL},
                 NOW_S, 20 * S);
}

static bool idem(const char *method, const char *const *pairs)
{
    struct evkeyvalq q;
    bool r;

    fill(&q, pairs);
    r = sl_retry_idempotent(method, &q);
    evhttp_clear_headers(&q);
    return r;
}

static void test_idempotent(void **state)
{
    static const struct {
        const char *method;
        const char *key; /* Idempotency-Key value, or NULL for none */
        bool want;
    } table[] = {
        {"GET", NULL, true},      {"HEAD", NULL, true},    {"PUT", NULL, true},
        {"DELETE", NULL, true},   {"OPTIONS", NULL, true}, {"TRACE", NULL, true},
        {"POST", NULL, false},    {"PATCH", NULL, false},  {"CONNECT", NULL, false},
        {"get", NULL, false},     {"", NULL, false},       {"POST", "k-123", true},
        {"PATCH", "\"abc\"", true}, {"POST", "", false},   {"PATCH", "  ", false},
    };

    (void)state;
    for (size_t i = 0; i < SL_ARRAY_LEN(table); i++) {
        const char *with[] = {"Idempotency-Key", table[i].key, NULL};
        const char *without[] = {"X-Other", "1", NULL};
        bool got = idem(table[i].method, table[i].key != NULL ? with : without);

        if (got != table[i].want)
            fail_msg("%s key=%s: got %d", table[i].method,
                     table[i].key != NULL ? table[i].key : "(none)", got);
    }
    assert_true(idem("POST", (const char *[]){"idempotency-key", "k", NULL}));
    assert_true(sl_retry_idempotent("GET", NULL));
    assert_false(sl_retry_idempotent("POST", NULL));
    assert_false(sl_retry_idempotent(NULL, NULL));
}

static void test_status_retryable(void **state)
{
    (void)state;
    for (int s = 0; s < 1000; s++)
        assert_int_equal(sl_retry_status_retryable(s), s == 502 || s == 503 || s == 504);
}

static int64_t ceiling(unsigned attempt, int64_t base, int64_t cap)
{
    int64_t d = base;

    for (unsigned i = 1; i < attempt && d < cap; i++)
        d = d > cap / 2 ? cap : d * 2;
    return d < cap ? d : cap;
}

#define DRAWS 2000

/* Every draw within [d/2, d], and the draws spread over that range. */
static void check_draws(unsigned attempt, int64_t base, int64_t cap, int64_t d, uint64_t *rng)
{
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    double sum = 0;

    for (int i = 0; i < DRAWS; i++) {
        int64_t v = sl_retry_backoff(attempt, base, cap, rng);
        if (v < d / 2 || v > d)
            fail_msg("attempt %u: %lld outside [%lld, %lld]", attempt, (long long)v,
                     (long long)(d / 2), (long long)d);
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        sum += (double)v;
    }
    /* Uniform on [d/2, d]: the extremes are approached and the mean is 3d/4. */
    assert_true(lo < d / 2 + d / 50);
    assert_true(hi > d - d / 50);
    double mean = sum / DRAWS;
    assert_true(mean > 0.72 * (double)d && mean < 0.78 * (double)d);
}

static void test_backoff_bounds(void **state)
{
    const int64_t base = 100 * SL_USEC_PER_MSEC, cap = 30 * S;
    uint64_t rng = 0x243f6a8885a308d3u;

    (void)state;
    assert_int_equal(ceiling(1, base, cap), base);
    assert_int_equal(ceiling(4, base, cap), 8 * base);
    for (unsigned a = 1; a <= 12; a++)
        check_draws(a, base, cap, ceiling(a, base, cap), &rng);
    check_draws(0, base, cap, base, &rng); /* attempt 0 counts as 1 */
    check_draws(64, base, cap, cap, &rng);
    check_draws(1000, base, cap, cap, &rng);
    check_draws(UINT32_MAX, base, cap, cap, &rng);
    check_draws(200, 1, INT64_MAX, INT64_MAX, &rng); /* no overflow near the top */
    check_draws(3, 5 * S, S, S, &rng);                /* base above cap */
}

static void test_backoff_rng(void **state)
{
    uint64_t a = 42, b = 42, zero = 0;
    int64_t first;

    (void)state;
    /* Same seed, same sequence; the state advances. */
    first = sl_retry_backoff(5, S, 60 * S, &a);
    assert_int_equal(first, sl_retry_backoff(5, S, 60 * S, &b));
    assert_int_not_equal(a, 42);
    assert_int_equal(a, b);
    /* A zero state must not stick at zero. */
    sl_retry_backoff(5, S, 60 * S, &zero);
    assert_int_not_equal(zero, 0);
    /* Degenerate inputs never go negative. */
    assert_int_equal(sl_retry_backoff(3, 0, S, &a), 0);
    assert_int_equal(sl_retry_backoff(3, -5, S, &a), 0);
    assert_int_equal(sl_retry_backoff(3, S, -1, &a), 0);
}


/* --- announced limits ------------------------------------------------------- */

static size_t policies(const char *const *pairs, struct sl_retry_policy *out, size_t max)
{
    struct evkeyvalq q;
    size_t n;

    fill(&q, pairs);
    n = sl_retry_ratelimit_policies(&q, out, max);
    evhttp_clear_headers(&q);
    return n;
}

static void test_announced_policies(void **state)
{
    struct sl_retry_policy p[4];

    (void)state;
    /* IETF: named policies with q and w. */
    assert_int_equal(policies((const char *[]){"RateLimit-Policy",
                                               "\"burst\";q=100;w=60, \"day\";q=1000;w=86400",
                                               NULL}, p, 4), 2);
    assert_true(p[0].n == 100 && p[0].window_us == 60 * S);
    assert_true(p[1].n == 1000 && p[1].window_us == 86400 * S);
    /* Older drafts: a bare quota with its window. */
    assert_int_equal(policies((const char *[]){"ratelimit-policy", "10;w=1", NULL}, p, 4), 1);
    assert_true(p[0].n == 10 && p[0].window_us == S);
    assert_int_equal(policies((const char *[]){"RateLimit-Limit", "10, 10;w=1, 50;w=60", NULL},
                              p, 4), 2);
    assert_true(p[0].n == 10 && p[1].n == 50 && p[1].window_us == 60 * S);
    assert_int_equal(policies((const char *[]){"X-RateLimit-Limit", "20, 20;w=1", NULL}, p, 4),
                     1);
    assert_true(p[0].n == 20 && p[0].window_us == S);
    /* What the mock upstream sends. */
    assert_int_equal(policies((const char *[]){"RateLimit-Policy", "\"default\";q=20;w=1",
                                               "X-RateLimit-Limit", "20", NULL}, p, 4), 1);
    assert_true(p[0].n == 20 && p[0].window_us == S);
    /* The first field with a usable policy decides. */
    assert_int_equal(policies((const char *[]){"X-RateLimit-Limit", "5;w=1", "RateLimit-Policy",
                                               "q=9", "RateLimit-Limit", "7;w=2", NULL}, p, 4), 1);
    assert_true(p[0].n == 7 && p[0].window_us == 2 * S);
    /* No window, no limit: nothing to compare. */
    assert_int_equal(policies((const char *[]){"X-RateLimit-Limit", "5000", NULL}, p, 4), 0);
    assert_int_equal(policies((const char *[]){"RateLimit-Policy", "\"x\";q=5", NULL}, p, 4), 0);
    assert_int_equal(policies((const char *[]){"RateLimit-Policy", "\"x\";q=0;w=1", NULL}, p, 4),
                     0);
    /* Malformed: nothing. */
    assert_int_equal(policies((const char *[]){"RateLimit-Policy", "\"x\";q=5;w=1,,", NULL}, p, 4),
                     0);
    assert_int_equal(policies((const char *[]){"RateLimit-Policy", "\"x;q=5;w=1", NULL}, p, 4), 0);
    assert_int_equal(policies((const char *[]){"RateLimit-Policy", "a;q=1.5;w=1", NULL}, p, 4), 0);
    /* At most max. */
    assert_int_equal(policies((const char *[]){"RateLimit-Policy", "a;q=1;w=1, b;q=2;w=2", NULL},
                              p, 1), 1);
    assert_true(p[0].n == 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_after_delta),
        cmocka_unit_test(test_after_dates),
        cmocka_unit_test(test_after_rfc850_century),
        cmocka_unit_test(test_after_malformed),
        cmocka_unit_test(test_ietf_one_policy),
        cmocka_unit_test(test_ietf_several_policies),
        cmocka_unit_test(test_ietf_unusable),
        cmocka_unit_test(test_old_draft_pair),
        cmocka_unit_test(test_x_ratelimit),
        cmocka_unit_test(test_announced_policies),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_idempotent),
        cmocka_unit_test(test_status_retryable),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_backoff_rng),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
