/*
 * test_limiter.c - the strict limiter against a fake clock (plain integers).
 *
 * The property tests drive the limiter with random schedules and check the
 * recorded dispatches with an independent sliding-window count, so they fail
 * if any half-open window of length P ever holds more than N dispatches.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <math.h>

#include <cmocka.h>

#include "limiter.h"
#include "sluice.h"

/* The guard for windows of 1 s and more (min(window/300, 3 ms)). */
#define GUARD INT64_C(3000)
#define SEC INT64_C(1000000)
#define MIN (60 * SEC)
#define DAY (86400 * SEC)

static uint64_t rng_state;

static uint64_t xorshift(void)
{
    uint64_t x = rng_state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return x;
}

static int64_t rnd(int64_t bound)
{
    return bound <= 0 ? 0 : (int64_t)(xorshift() % (uint64_t)bound);
}

/* A limit as the test expects it normalised: n per window. */
struct expect {
    uint32_t n;
    int64_t window_us;
};

struct limit_case {
    const char *name;
    struct sl_limit rate;
    unsigned burst;
    struct sl_limit quotas[2];
    size_t n_quotas;
    struct expect windows[3]; /* rate then quotas, normalised by hand */
};

static const struct limit_case cases[] = {
    {"50/s b1", {50, SEC}, 1, {{0, 0}}, 0, {{50, SEC}}},
    {"10/s b5", {10, SEC}, 5, {{0, 0}}, 0, {{10, SEC}}},
    {"2.5/s", {2.5, SEC}, 1, {{0, 0}}, 0, {{5, 2 * SEC}}},
    {"0.5/s", {0.5, SEC}, 1, {{0, 0}}, 0, {{1, 2 * SEC}}},
    {"3/s+100/m", {3, SEC}, 2, {{100, MIN}}, 1, {{3, SEC}, {100, MIN}}},
    {"1000/s", {1000, SEC}, 1, {{0, 0}}, 0, {{1000, SEC}}},
    {"20/s b20+30/5s+50/m", {20, SEC}, 20, {{30, 5 * SEC}, {50, MIN}}, 2,
     {{20, SEC}, {30, 5 * SEC}, {50, MIN}}},
};

/*
 * Independent check, O(n): takes[i + n] - takes[i] < window means n + 1
 * dispatches in one half-open window. Returns the number of such windows
 * and sets *first to the first one's index.
 */
static size_t count_violations(const int64_t *takes, size_t count, const struct expect *e,
                               size_t *first)
{
    size_t bad = 0;

    for (size_t i = 0; i + e->n < count; i++) {
        if (takes[i + e->n] - takes[i] < e->window_us && bad++ == 0)
            *first = i;
    }
    return bad;
}

/* Next try instant: same-instant bursts, small steps, idle gaps, or at next(). */
static int64_t next_try(const struct sl_limiter *l, int64_t t)
{
    int64_t r = rnd(100);
    int64_t T = l->interval_us;

    if (r < 3)
        return t + rnd(4 * T * (l->tolerance_us / T + 1)); /* idle */
    if (r < 30)
        return t; /* a burst of arrivals */
    if (r < 60) {
        int64_t at = sl_limiter_next(l, t) + rnd(3) - 1; /* around the edge */

        return at > t ? at : t;
    }
    return t + rnd(T / 2 + 1);
}

static void run_property(const struct limit_case *c, uint64_t seed)
{
    enum { STEPS = 100000 };
    struct sl_limiter l;
    int64_t *takes = malloc(STEPS * sizeof(*takes));
    size_t count = 0;
    int64_t t = 0;

    assert_non_null(takes);
    rng_state = seed;
    assert_int_equal(sl_limiter_init(&l, &c->rate, c->burst, c->quotas, c->n_quotas), SL_OK);
    for (int step = 0; step < STEPS; step++) {
        t = next_try(&l, t);
        if (sl_limiter_take(&l, t) == SL_OK)
            takes[count++] = t;
    }
    /* Enough dispatches happened for the check to mean something. */
    assert_true(count > STEPS / 20);
    for (size_t i = 0; i <= c->n_quotas; i++) {
        const struct expect *e = &c->windows[i];
        size_t first = 0;

        if (count_violations(takes, count, e, &first) != 0)
            fail_msg("%s seed %llu: %u+1 dispatches within %lld us, from %lld to %lld", c->name,
                     (unsigned long long)seed, e->n, (long long)e->window_us,
                     (long long)takes[first], (long long)takes[first + e->n]);
    }
    sl_limiter_fini(&l);
    free(takes);
}

static void test_property_strict(void **state)
{
    (void)state;
    for (size_t i = 0; i < SL_ARRAY_LEN(cases); i++) {
        for (uint64_t seed = 1; seed <= 3; seed++)
            run_property(&cases[i], seed * 0x9E3779B97F4A7C15u);
    }
}

/* The checker itself must catch an overshoot (so the property can fail). */
static void test_checker_detects_overshoot(void **state)
{
    const int64_t takes[] = {0, 100, 200, 999999};
    const struct expect three = {3, SEC};
    const struct expect four = {4, SEC};
    size_t first = 99;

    (void)state;
    assert_int_equal(count_violations(takes, 4, &four, &first), 0);
    assert_int_equal(count_violations(takes, 4, &three, &first), 1);
    assert_int_equal(first, 0);
}

/* Timer-driven dispatch with 0..200 us lateness over 60 simulated seconds. */
static void run_utilisation(double rate, unsigned burst)
{
    const struct sl_limit lim = {rate, SEC};
    const int64_t duration = 60 * SEC;
    struct sl_limiter l;
    int64_t t = 0;
    long count = 0;

    assert_int_equal(sl_limiter_init(&l, &lim, burst, NULL, 0), SL_OK);
    for (long guard = 0; guard < 10000000; guard++) {
        t = sl_limiter_next(&l, t) + rnd(201);
        if (t >= duration)
            break;
        assert_int_equal(sl_limiter_take(&l, t), SL_OK);
        count++;
    }
    if ((double)count < 0.995 * rate * 60.0)
        fail_msg("rate %g burst %u: %ld dispatches in 60 s", rate, burst, count);
    /* And strict, of course. */
    assert_true((double)count <= rate * 60.0);
    sl_limiter_fini(&l);
}

static void test_utilisation(void **state)
{
    (void)state;
    rng_state = 42;
    run_utilisation(50, 1);
    run_utilisation(100, 1);
    run_utilisation(1000, 1);
    run_utilisation(10, 5);
}

static void test_burst(void **state)
{
    const struct sl_limit r10 = {10, SEC};
    const struct sl_limit r50 = {50, SEC};
    const int64_t T = 100000;
    struct sl_limiter l;

    (void)state;
    assert_int_equal(sl_limiter_init(&l, &r10, 5, NULL, 0), SL_OK);
    assert_int_equal(l.interval_us, T);
    assert_int_equal(l.tolerance_us, 4 * T);
    for (int i = 0; i < 5; i++)
        assert_int_equal(sl_limiter_take(&l, 0), SL_OK);
    assert_int_equal(sl_limiter_take(&l, 0), SL_EAGAIN);
    /* Then spaced by T until the 1 s log of 10 is full... */
    for (int i = 1; i <= 5; i++) {
        assert_int_equal(sl_limiter_next(&l, 0), i * T);
        assert_int_equal(sl_limiter_take(&l, i * T - 1), SL_EAGAIN);
        assert_int_equal(sl_limiter_take(&l, i * T), SL_OK);
    }
    /* ...which then waits for the oldest to be window + guard (3 ms) old. */
    assert_int_equal(sl_limiter_next(&l, 5 * T), SEC + GUARD);
    sl_limiter_fini(&l);

    assert_int_equal(sl_limiter_init(&l, &r50, 1, NULL, 0), SL_OK);
    assert_int_equal(sl_limiter_take(&l, 0), SL_OK);
    assert_int_equal(sl_limiter_take(&l, 0), SL_EAGAIN);
    for (int64_t i = 1; i <= 40; i++) {
        assert_int_equal(sl_limiter_next(&l, (i - 1) * 20000), i * 20000);
        assert_int_equal(sl_limiter_take(&l, i * 20000), SL_OK);
    }
    sl_limiter_fini(&l);
}

static void test_idle_resets_schedule(void **state)
{
    const struct sl_limit r10 = {10, SEC};
    const int64_t T = 100000;
    struct sl_limiter l;

    (void)state;
    assert_int_equal(sl_limiter_init(&l, &r10, 1, NULL, 0), SL_OK);
    assert_int_equal(sl_limiter_take(&l, 0), SL_OK);
    /* A little late (<= min(T/4, 5 ms)): the schedule keeps its phase. */
    assert_int_equal(sl_limiter_take(&l, T + 5000), SL_OK);
    assert_int_equal(sl_limiter_next(&l, T + 5000), 2 * T);
    /* Later than that: the schedule restarts from now. */
    assert_int_equal(sl_limiter_take(&l, 3 * T + 5001), SL_OK);
    assert_int_equal(sl_limiter_next(&l, 3 * T + 5001), 4 * T + 5001);
    /* A long idle gives no catch-up burst. */
    assert_int_equal(sl_limiter_take(&l, 100 * SEC), SL_OK);
    assert_int_equal(sl_limiter_take(&l, 100 * SEC + 1), SL_EAGAIN);
    assert_int_equal(sl_limiter_next(&l, 100 * SEC), 100 * SEC + T);
    sl_limiter_fini(&l);
}

/* The state a refused take must not change: schedule, and each log's shape and contents. */
static void snapshot(const struct sl_limiter *l, int64_t *out)
{
    size_t k = 0;

    out[k++] = l->tat_us;
    out[k++] = l->started;
    for (size_t i = 0; i < l->n_logs; i++) {
        const struct sl_limiter_log *lg = &l->logs[i];
        int64_t sum = 0;

        for (uint32_t j = 0; j < lg->count; j++)
            sum += lg->ring[j] * (int64_t)(j + 1);
        out[k++] = lg->count;
        out[k++] = lg->head;
        out[k++] = sum;
    }
}

static void test_sent_moves_the_instant_later(void **state)
{
    const struct sl_limit r3 = {3, SEC};
    struct sl_limiter l;

    (void)state;
    assert_int_equal(sl_limiter_init(&l, &r3, 3, NULL, 0), SL_OK);
    assert_int_equal(sl_limiter_take(&l, 0), SL_OK);
    assert_int_equal(sl_limiter_take(&l, 10), SL_OK);
    assert_int_equal(sl_limiter_take(&l, 20), SL_OK);
    assert_int_equal(sl_limiter_next(&l, 20), SEC + GUARD);
    /* The first really left at 15 (after a connect): order is kept. */
    sl_limiter_sent(&l, 0, 15);
    static const int64_t want[] = {10, 15, 20};
    for (uint32_t j = 0; j < 3; j++)
        assert_int_equal(l.logs[0].ring[(l.logs[0].head + j) % 3], want[j]);
    assert_int_equal(sl_limiter_next(&l, 20), SEC + GUARD + 10);
    /* Unknown instants and earlier "sent" change nothing. */
    sl_limiter_sent(&l, 5, 50);
    sl_limiter_sent(&l, 20, 19);
    assert_int_equal(sl_limiter_next(&l, 20), SEC + GUARD + 10);
    sl_limiter_fini(&l);

    /* 1/s: the window starts when the request left, not when it was decided. */
    const struct sl_limit r1 = {1, SEC};
    assert_int_equal(sl_limiter_init(&l, &r1, 1, NULL, 0), SL_OK);
    assert_int_equal(sl_limiter_take(&l, 0), SL_OK);
    sl_limiter_sent(&l, 0, 400);
    assert_int_equal(sl_limiter_next(&l, 500), 400 + SEC + GUARD);
    assert_int_equal(sl_limiter_take(&l, SEC + GUARD), SL_EAGAIN);
    sl_limiter_fini(&l);
}

static void test_next_is_exact(void **state)
{
    const struct sl_limit r5 = {5, SEC};
    struct sl_limiter l;

    (void)state;
    /* The log decides: 5 at 0, then nothing until 1 s + 3 ms. */
    assert_int_equal(sl_limiter_init(&l, &r5, 5, NULL, 0), SL_OK);
    for (int i = 0; i < 5; i++)
        assert_int_equal(sl_limiter_take(&l, 0), SL_OK);
    assert_int_equal(sl_limiter_next(&l, 0), SEC + GUARD);
    assert_int_equal(sl_limiter_take(&l, SEC + GUARD - 1), SL_EAGAIN);
    assert_int_equal(sl_limiter_take(&l, SEC + GUARD), SL_OK);
    sl_limiter_fini(&l);

    /* Random walks over every case: next - 1 fails and changes nothing. */
    rng_state = 7;
    for (size_t c = 0; c < SL_ARRAY_LEN(cases); c++) {
        int64_t t = 0, before[32], after[32];

        assert_int_equal(sl_limiter_init(&l, &cases[c].rate, cases[c].burst, cases[c].quotas,
                                         cases[c].n_quotas), SL_OK);
        for (int step = 0; step < 5000; step++) {
            int64_t nx = sl_limiter_next(&l, t);

            assert_true(nx >= t);
            if (nx > t) {
                snapshot(&l, before);
                assert_int_equal(sl_limiter_take(&l, nx - 1), SL_EAGAIN);
                snapshot(&l, after);
                assert_memory_equal(before, after, (2 + 3 * l.n_logs) * sizeof(int64_t));
            }
            assert_int_equal(sl_limiter_take(&l, nx), SL_OK);
            t = nx + (rnd(4) == 0 ? rnd(3 * l.interval_us) : 0);
        }
        sl_limiter_fini(&l);
    }
}

static void expect_norm(double n, int64_t period, uint32_t want_n, int64_t want_w)
{
    const struct sl_limit lim = {n, period};
    uint32_t got_n = 0;
    int64_t got_w = 0;

    if (sl_limiter_normalize(&lim, &got_n, &got_w) != 0)
        fail_msg("%g per %lld refused", n, (long long)period);
    assert_int_equal(got_n, want_n);
    assert_int_equal(got_w, want_w);
}

static void expect_refused(double n, int64_t period)
{
    const struct sl_limit lim = {n, period};
    uint32_t got_n = 0;
    int64_t got_w = 0;

    if (sl_limiter_normalize(&lim, &got_n, &got_w) != -1)
        fail_msg("%g per %lld accepted as %u per %lld", n, (long long)period, got_n,
                 (long long)got_w);
}

static void test_normalize(void **state)
{
    (void)state;
    expect_norm(10, SEC, 10, SEC);
    expect_norm(0.5, SEC, 1, 2 * SEC);
    expect_norm(2.5, SEC, 5, 2 * SEC);
    expect_norm(0.001, SEC, 1, 1000 * SEC);
    expect_norm(0.333, SEC, 333, 1000 * SEC);
    expect_norm(1.25, MIN, 5, 4 * MIN);
    expect_norm(1.0 / 3.0, SEC, 1, 3 * SEC);
    expect_norm(100000, DAY, 100000, DAY);
    expect_norm(SL_LIMITER_MAX_N, SEC, SL_LIMITER_MAX_N, SEC);

    expect_refused(0, SEC);
    expect_refused(-1, SEC);
    expect_refused(NAN, SEC);
    expect_refused(INFINITY, SEC);
    expect_refused(0.0001, SEC);          /* needs k = 10000 */
    expect_refused(0.1234, SEC);          /* needs k = 5000 */
    expect_refused(sqrt(2.0), SEC);       /* never whole */
    expect_refused(SL_LIMITER_MAX_N + 1.0, SEC);
    expect_refused(10, 0);
    expect_refused(10, -SEC);
    expect_refused(0.5, INT64_MAX / 2);   /* window overflows */
}

static void test_init_refuses(void **state)
{
    const struct sl_limit good = {10, SEC};
    const struct sl_limit bad = {0, SEC};
    const struct sl_limit quotas[2] = {{100, MIN}, {0.0001, SEC}};
    struct sl_limiter l;

    (void)state;
    assert_int_equal(sl_limiter_init(&l, &bad, 1, NULL, 0), SL_ERR);
    assert_int_equal(l.n_logs, 0);
    assert_int_equal(sl_limiter_init(&l, &good, 0, NULL, 0), SL_ERR);
    assert_int_equal(l.n_logs, 0);
    /* A bad second quota: the rings already built are freed (ASan). */
    assert_int_equal(sl_limiter_init(&l, &good, 1, quotas, 2), SL_ERR);
    assert_int_equal(l.n_logs, 0);
    assert_null(l.logs[0].ring);
    assert_int_equal(sl_limiter_init(&l, &good, 1, quotas, SL_CONFIG_MAX_QUOTAS + 1), SL_ERR);
    assert_int_equal(sl_limiter_init(&l, &good, 3, quotas, 1), SL_OK);
    assert_int_equal(l.n_logs, 2);
    assert_int_equal(l.logs[1].n, 100);
    assert_int_equal(l.logs[1].window_us, MIN);
    assert_int_equal(l.logs[1].guard_us, GUARD);
    assert_int_equal(l.logs[0].guard_us, GUARD);
    sl_limiter_fini(&l);
}

static void test_small_window_guard(void **state)
{
    const struct sl_limit lim = {2, 100000}; /* 2 per 100 ms: guard 333 us */
    struct sl_limiter l;

    (void)state;
    assert_int_equal(sl_limiter_init(&l, &lim, 2, NULL, 0), SL_OK);
    assert_int_equal(l.logs[0].guard_us, 333);
    assert_int_equal(sl_limiter_take(&l, 0), SL_OK);
    assert_int_equal(sl_limiter_take(&l, 10), SL_OK);
    assert_int_equal(sl_limiter_next(&l, 10), 100333);
    sl_limiter_fini(&l);
}

static void test_inherit_keeps_window(void **state)
{
    const struct sl_limit r10 = {10, SEC};
    const struct sl_limit r20 = {20, SEC};
    const struct sl_limit q15 = {15, MIN};
    struct sl_limiter old, l;

    (void)state;
    /* Same limit: a full window stays full across the reload. */
    assert_int_equal(sl_limiter_init(&old, &r10, 10, NULL, 0), SL_OK);
    for (int i = 0; i < 10; i++)
        assert_int_equal(sl_limiter_take(&old, 0), SL_OK);
    assert_int_equal(sl_limiter_init(&l, &r10, 10, NULL, 0), SL_OK);
    sl_limiter_inherit(&l, &old, 0);
    assert_int_equal(sl_limiter_take(&l, SEC / 2), SL_EAGAIN);
    assert_int_equal(sl_limiter_next(&l, SEC / 2), SEC + GUARD);
    sl_limiter_fini(&l);

    /* A quota added by the reload starts with the real history. */
    assert_int_equal(sl_limiter_init(&l, &r10, 10, &q15, 1), SL_OK);
    sl_limiter_inherit(&l, &old, 0);
    assert_int_equal(l.logs[1].count, 10);
    for (int i = 0; i < 5; i++)
        assert_int_equal(sl_limiter_take(&l, SEC + GUARD), SL_OK);
    assert_int_equal(sl_limiter_next(&l, SEC + GUARD), MIN + GUARD);
    sl_limiter_fini(&l);
    sl_limiter_fini(&old);

    /* A smaller n keeps the most recent instants, in order. */
    assert_int_equal(sl_limiter_init(&old, &r20, 20, NULL, 0), SL_OK);
    for (int i = 0; i < 20; i++)
        assert_int_equal(sl_limiter_take(&old, i * 10), SL_OK);
    assert_int_equal(sl_limiter_init(&l, &r10, 10, NULL, 0), SL_OK);
    sl_limiter_inherit(&l, &old, 0);
    assert_int_equal(l.logs[0].count, 10);
    for (uint32_t j = 0; j < 10; j++)
        assert_int_equal(l.logs[0].ring[(l.logs[0].head + j) % 10], 100 + 10 * j);
    assert_int_equal(sl_limiter_next(&l, 200), SEC + GUARD + 100);
    assert_int_equal(sl_limiter_take(&l, SEC + GUARD + 100), SL_OK);
    assert_int_equal(sl_limiter_next(&l, SEC + GUARD + 100), SEC + GUARD + 110);
    sl_limiter_fini(&l);
    sl_limiter_fini(&old);

    /* Nothing to inherit from an unused limiter. */
    assert_int_equal(sl_limiter_init(&old, &r10, 1, NULL, 0), SL_OK);
    assert_int_equal(sl_limiter_init(&l, &r10, 1, NULL, 0), SL_OK);
    sl_limiter_inherit(&l, &old, 0);
    assert_int_equal(l.started, 0);
    assert_int_equal(sl_limiter_next(&l, 5), 5);
    sl_limiter_fini(&l);
    sl_limiter_fini(&old);
}

/* ---- jitter-proof dating ------------------------------------------------ */

/* One dispatch of the simulation: sent at s, answered at r (the upstream saw it in [s, r]). */
struct span {
    int64_t s, r;
};

/*
 * The most dispatches an adversarial network could put in one window
 * [t, t + window): a dispatch can land there iff s < t + window and r >= t.
 * The maximum over t is reached at some t = r_j or t = s_j - window + 1.
 */
static int worst_window(const struct span *v, int n, int64_t window)
{
    int best = 0;

    for (int c = 0; c < 2 * n; c++) {
        int64_t t = c < n ? v[c].r : v[c - n].s - window + 1;
        int k = 0;

        for (int j = 0; j < n; j++)
            k += v[j].s < t + window && v[j].r >= t;
        if (k > best)
            best = k;
    }
    return best;
}

static void test_answer_dating_waits_for_the_answer(void **state)
{
    const struct sl_limit r2 = {2, SEC};
    struct sl_limiter l;

    (void)state;
    assert_int_equal(sl_limiter_init(&l, &r2, 2, NULL, 0), SL_OK);
    sl_limiter_set_dating(&l, 0, 1);
    assert_int_equal(sl_limiter_take(&l, 0), SL_OK);
    assert_int_equal(sl_limiter_take(&l, 0), SL_OK);
    /* Both unanswered: only an answer can date them. */
    assert_true(sl_limiter_next(&l, 10) >= SL_LIMITER_UNANSWERED);
    sl_limiter_answered(&l, 50 * 1000, 1);
    /* One dated: the window may take a new one once that answer is a window old. */
    assert_int_equal(sl_limiter_next(&l, 60 * 1000), SEC + 50 * 1000);
    sl_limiter_answered(&l, 80 * 1000, 1);
    /* The oldest answer plus the window, not the send plus the window. */
    assert_int_equal(sl_limiter_next(&l, 100 * 1000), SEC + 50 * 1000);
    assert_int_equal(sl_limiter_take(&l, SEC + 50 * 1000), SL_OK);
    assert_int_equal(sl_limiter_next(&l, SEC + 50 * 1000), SEC + 80 * 1000);
    sl_limiter_answered(&l, SEC + 90 * 1000, 1);
    /* An answer with nothing unanswered changes nothing. */
    sl_limiter_answered(&l, SEC + 95 * 1000, 1);
    assert_int_equal(l.logs[0].ring[l.logs[0].head], 80 * 1000);
    assert_int_equal(l.logs[0].ring[(l.logs[0].head + 1) % 2], SEC + 90 * 1000);
    sl_limiter_fini(&l);
}

/*
 * Property: whatever the round trips (here up to 3x the spacing, answers in
 * any order), no window on any clock between send and answer holds more
 * than n; and with dating by send the same traffic does overshoot (the
 * check can fail).
 */
static void run_jitter(int by_answer, int *worst, double *rate)
{
    enum { N = 400 };
    const struct sl_limit lim = {10, SEC};
    struct span v[N];
    int64_t due[N];
    int n = 0, open = 0;
    int64_t now = 0;
    struct sl_limiter l;

    assert_int_equal(sl_limiter_init(&l, &lim, 1, NULL, 0), SL_OK);
    sl_limiter_set_dating(&l, GUARD, by_answer);
    while (n < N || open > 0) {
        int64_t next = n < N ? sl_limiter_next(&l, now) : INT64_MAX;
        int64_t first_due = INT64_MAX;
        int who = -1;

        for (int j = 0; j < n; j++)
            if (due[j] >= 0 && due[j] < first_due)
                first_due = due[j], who = j;
        if (next < SL_LIMITER_UNANSWERED && next <= first_due) {
            now = next > now ? next : now;
            assert_int_equal(sl_limiter_take(&l, now), SL_OK);
            v[n].s = now;
            due[n] = now + rnd(300 * 1000); /* a round trip of 0-300 ms */
            n++, open++;
        } else {
            now = first_due;
            v[who].r = now;
            due[who] = -1;
            open--;
            sl_limiter_answered(&l, now, 1);
        }
    }
    *worst = worst_window(v, N, SEC);
    *rate = (double)(N - 1) * SEC / (double)(v[N - 1].s - v[0].s);
    sl_limiter_fini(&l);
}

static void test_property_answer_dating_is_strict_under_jitter(void **state)
{
    int worst;
    double rate;

    (void)state;
    for (int round = 0; round < 20; round++) {
        rng_state = 0x9e3779b97f4a7c15u + (uint64_t)round;
        run_jitter(1, &worst, &rate);
        assert_true(worst <= 10);
        /* The price: about one round trip per window (150 ms mean here). */
        assert_true(rate > 10.0 * 1000 / (1000 + 300 + 10));
    }
    rng_state = 7;
    run_jitter(0, &worst, &rate);
    assert_true(worst > 10); /* dating by send cannot hold against this network */
}

/* A reload into a route that dates by send dates what was unanswered at the reload. */
static void test_inherit_dates_unanswered(void **state)
{
    const struct sl_limit r2 = {2, SEC};
    struct sl_limiter old, l;

    (void)state;
    assert_int_equal(sl_limiter_init(&old, &r2, 2, NULL, 0), SL_OK);
    sl_limiter_set_dating(&old, 0, 1);
    assert_int_equal(sl_limiter_take(&old, 0), SL_OK);
    sl_limiter_answered(&old, 10, 1);
    assert_int_equal(sl_limiter_take(&old, 20), SL_OK);
    assert_int_equal(sl_limiter_init(&l, &r2, 2, NULL, 0), SL_OK);
    sl_limiter_set_dating(&l, 0, 0);
    sl_limiter_inherit(&l, &old, 500);
    assert_int_equal(sl_limiter_next(&l, 600), SEC + 10);
    assert_int_equal(sl_limiter_take(&l, SEC + 10), SL_OK);
    assert_int_equal(sl_limiter_next(&l, SEC + 10), SEC + 500);
    sl_limiter_fini(&l);
    /* Into a route that dates by answers, it stays unanswered. */
    assert_int_equal(sl_limiter_init(&l, &r2, 2, NULL, 0), SL_OK);
    sl_limiter_set_dating(&l, 0, 1);
    sl_limiter_inherit(&l, &old, 500);
    assert_int_equal(sl_limiter_next(&l, 600), SEC + 10);
    sl_limiter_answered(&l, 800, 1); /* dated by its answer after the reload, not by it */
    assert_int_equal(sl_limiter_take(&l, SEC + 10), SL_OK);
    assert_int_equal(sl_limiter_next(&l, SEC + 10), SEC + 800);
    sl_limiter_answered(&l, SEC + 20, 1);
    assert_int_equal(sl_limiter_next(&l, SEC + 20), SEC + 800);
    sl_limiter_fini(&l);
    sl_limiter_fini(&old);
}

/* Property: with random costs, no window holds more than n units. */
static void test_property_units_are_strict(void **state)
{
    const struct sl_limit lim = {10, SEC};
    const struct sl_limit quota = {25, 5 * SEC};
    int64_t at[2000];
    uint32_t units[2000];
    int64_t now = 0;
    struct sl_limiter l;

    (void)state;
    rng_state = 12345;
    assert_int_equal(sl_limiter_init(&l, &lim, 3, &quota, 1), SL_OK);
    assert_int_equal(sl_limiter_max_units(&l), 10);
    assert_true(sl_limiter_next_units(&l, 0, 11) >= SL_LIMITER_UNANSWERED);
    for (int i = 0; i < 2000; i++) {
        units[i] = 1 + (uint32_t)rnd(4);
        now = sl_limiter_next_units(&l, now + rnd(30 * 1000), units[i]);
        assert_int_equal(sl_limiter_take_units(&l, now, units[i]), SL_OK);
        at[i] = now;
    }
    for (int i = 0; i < 2000; i++) {
        uint32_t sum1 = 0, sum5 = 0;

        for (int j = i; j < 2000 && at[j] < at[i] + 5 * SEC; j++) {
            sum5 += units[j];
            if (at[j] < at[i] + SEC)
                sum1 += units[j];
        }
        assert_true(sum1 <= 10);
        assert_true(sum5 <= 25);
    }
    sl_limiter_fini(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checker_detects_overshoot),
        cmocka_unit_test(test_property_strict),
        cmocka_unit_test(test_utilisation),
        cmocka_unit_test(test_burst),
        cmocka_unit_test(test_idle_resets_schedule),
        cmocka_unit_test(test_next_is_exact),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_init_refuses),
        cmocka_unit_test(test_small_window_guard),
        cmocka_unit_test(test_sent_moves_the_instant_later),
        cmocka_unit_test(test_inherit_keeps_window),
        cmocka_unit_test(test_answer_dating_waits_for_the_answer),
        cmocka_unit_test(test_property_answer_dating_is_strict_under_jitter),
        cmocka_unit_test(test_inherit_dates_unanswered),
        cmocka_unit_test(test_property_units_are_strict),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
