/*
 * test_recent.c - per-second rings against a fake clock.
 *
 * `now` is passed in, so the clock is a plain variable: seconds move on
 * when the test says so. The property test replays random adds (mostly
 * forward, sometimes a little back, sometimes a long gap) against a
 * reference model that keeps every second's count forever.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "recent.h"

#define SEC INT64_C(1000000)
#define MS INT64_C(1000)

static void test_empty(void **state)
{
    struct sl_recent r;

    (void)state;
    memset(&r, 0, sizeof(r));
    for (unsigned ago = 0; ago < SL_RECENT_SECONDS + 2; ago++)
        assert_int_equal(sl_recent_at(&r, 1000 * SEC, ago), 0);
    assert_int_equal(sl_recent_sum(&r, 0, 0, SL_RECENT_SECONDS), 0);
}

static void test_seconds_move_on(void **state)
{
    struct sl_recent r;
    int64_t t0 = 5000 * SEC; /* a monotonic clock some time after boot */

    (void)state;
    memset(&r, 0, sizeof(r));
    sl_recent_add(&r, t0, 1);
    sl_recent_add(&r, t0 + 999 * MS, 2);
    assert_int_equal(sl_recent_at(&r, t0 + 500 * MS, 0), 3);
    assert_int_equal(sl_recent_at(&r, t0, 1), 0);
    /* The next second: what was current is now one second ago. */
    assert_int_equal(sl_recent_at(&r, t0 + SEC, 0), 0);
    assert_int_equal(sl_recent_at(&r, t0 + SEC, 1), 3);
    sl_recent_add(&r, t0 + SEC, 4);
    /* Three idle seconds: the skipped ones read 0, history stays. */
    sl_recent_add(&r, t0 + 4 * SEC + 10 * MS, 7);
    assert_int_equal(sl_recent_at(&r, t0 + 4 * SEC, 0), 7);
    assert_int_equal(sl_recent_at(&r, t0 + 4 * SEC, 1), 0);
    assert_int_equal(sl_recent_at(&r, t0 + 4 * SEC, 2), 0);
    assert_int_equal(sl_recent_at(&r, t0 + 4 * SEC, 3), 4);
    assert_int_equal(sl_recent_at(&r, t0 + 4 * SEC, 4), 3);
    assert_int_equal(sl_recent_sum(&r, t0 + 4 * SEC, 1, 10), 7);
    assert_int_equal(sl_recent_sum(&r, t0 + 4 * SEC, 0, 10), 14);
    /* Read later without writing: the ring is as it was, seen from further away. */
    assert_int_equal(sl_recent_at(&r, t0 + 10 * SEC, 6), 7);
    assert_int_equal(sl_recent_at(&r, t0 + 10 * SEC, 10), 3);
    assert_int_equal(sl_recent_sum(&r, t0 + 10 * SEC, 1, 10), 14);
}

static void test_rate_over_windows(void **state)
{
    struct sl_recent r;
    int64_t t0 = 100 * SEC;

    (void)state;
    memset(&r, 0, sizeof(r));
    /* 10/s for two minutes, evenly spaced. */
    for (int64_t t = t0; t < t0 + 120 * SEC; t += 100 * MS)
        sl_recent_add(&r, t, 1);
    assert_int_equal(sl_recent_sum(&r, t0 + 120 * SEC, 1, 10), 100);
    assert_int_equal(sl_recent_sum(&r, t0 + 120 * SEC, 1, 60), 600);
    /* Then nothing for 30 s: the 10 s window is empty, the minute half full. */
    assert_int_equal(sl_recent_sum(&r, t0 + 150 * SEC, 1, 10), 0);
    assert_int_equal(sl_recent_sum(&r, t0 + 150 * SEC, 1, 60), 300);
    /* A sum does not read past the ring. */
    assert_int_equal(sl_recent_sum(&r, t0 + 120 * SEC, 1, 100000), 1200);
}

static void test_old_seconds_leave(void **state)
{
    struct sl_recent r;
    int64_t t0 = 0; /* a fake clock may start at 0 */

    (void)state;
    memset(&r, 0, sizeof(r));
    sl_recent_add(&r, t0, 9);
    assert_int_equal(sl_recent_at(&r, t0 + (SL_RECENT_SECONDS - 1) * SEC, SL_RECENT_SECONDS - 1),
                     9);
    /* A second further it is more than the ring's length ago: 0, written or not. */
    assert_int_equal(sl_recent_at(&r, t0 + SL_RECENT_SECONDS * SEC, SL_RECENT_SECONDS), 0);
    sl_recent_add(&r, t0 + SL_RECENT_SECONDS * SEC, 1);
    assert_int_equal(sl_recent_sum(&r, t0 + SL_RECENT_SECONDS * SEC, 0, SL_RECENT_SECONDS), 1);
    /* A long gap clears everything at once. */
    sl_recent_add(&r, t0 + 10 * SL_RECENT_SECONDS * SEC, 2);
    assert_int_equal(sl_recent_sum(&r, t0 + 10 * SL_RECENT_SECONDS * SEC, 0, SL_RECENT_SECONDS),
                     2);
}

static void test_late_now(void **state)
{
    struct sl_recent r;
    int64_t t0 = 1000 * SEC;

    (void)state;
    memset(&r, 0, sizeof(r));
    sl_recent_add(&r, t0 + 5 * SEC, 1);
    /* A caller whose `now` was taken a little earlier counts into its own second. */
    sl_recent_add(&r, t0 + 4 * SEC, 2);
    assert_int_equal(sl_recent_at(&r, t0 + 5 * SEC, 0), 1);
    assert_int_equal(sl_recent_at(&r, t0 + 5 * SEC, 1), 2);
    /* One from before the ring is dropped, not counted into a wrong second. */
    sl_recent_add(&r, t0 + 5 * SEC - SL_RECENT_SECONDS * SEC, 50);
    assert_int_equal(sl_recent_sum(&r, t0 + 5 * SEC, 0, SL_RECENT_SECONDS), 3);
}

static void test_set(void **state)
{
    struct sl_recent_set s;
    int64_t t0 = 7 * SEC;

    (void)state;
    memset(&s, 0, sizeof(s));
    sl_recent_set_add(&s, t0, 0, 3);
    sl_recent_set_add(&s, t0, 5, 1);
    sl_recent_set_add(&s, t0 + 30 * SEC, 5, 2);
    sl_recent_set_add(&s, t0, SL_RECENT_SET_WIDTH, 100); /* out of range: ignored */
    assert_int_equal(sl_recent_set_sum(&s, t0 + 30 * SEC, 0, 0, 60), 3);
    assert_int_equal(sl_recent_set_sum(&s, t0 + 30 * SEC, 5, 0, 60), 3);
    assert_int_equal(sl_recent_set_sum(&s, t0 + 30 * SEC, 5, 0, 1), 2);
    assert_int_equal(sl_recent_set_sum(&s, t0 + 30 * SEC, 1, 0, 60), 0);
    assert_int_equal(sl_recent_set_sum(&s, t0 + 30 * SEC, SL_RECENT_SET_WIDTH, 0, 60), 0);
    /* The last minute is the current second and the 59 before it. */
    assert_int_equal(sl_recent_set_sum(&s, t0 + 59 * SEC, 0, 0, SL_RECENT_SET_SECONDS), 3);
    assert_int_equal(sl_recent_set_sum(&s, t0 + 60 * SEC, 0, 0, SL_RECENT_SET_SECONDS), 0);
    assert_int_equal(sl_recent_set_sum(&s, t0 + 60 * SEC, 5, 0, SL_RECENT_SET_SECONDS), 2);
    /* Moving on clears every counter of a skipped second. */
    sl_recent_set_add(&s, t0 + 90 * SEC + SL_RECENT_SET_SECONDS * SEC, 0, 1);
    assert_int_equal(sl_recent_set_sum(&s, t0 + 90 * SEC + SL_RECENT_SET_SECONDS * SEC, 5, 0,
                                       SL_RECENT_SET_SECONDS),
                     0);
}

/* ---- property test against a reference model ---- */

#define MODEL_SECONDS 4000

static uint64_t rng_state = 0x853c49e6748fea9bu;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

static void test_property(void **state)
{
    static uint32_t model[MODEL_SECONDS];
    struct sl_recent r;
    int64_t now = 3 * SEC, newest = 0;

    (void)state;
    memset(&r, 0, sizeof(r));
    memset(model, 0, sizeof(model));
    for (int step = 0; step < 20000; step++) {
        uint32_t what = rnd(100);
        int64_t at = now;
        uint32_t n = 1 + rnd(3);

        if (what < 70)
            now += rnd(300) * MS;
        else if (what < 72)
            now += (int64_t)rnd(2 * SL_RECENT_SECONDS) * SEC;
        if (now / SEC >= MODEL_SECONDS - 1)
            break;
        at = what >= 95 && now > 3 * SEC ? now - (int64_t)rnd(3000) * MS : now;
        sl_recent_add(&r, at, n);
        if (at / SEC > newest)
            newest = at / SEC;
        if (at / SEC > newest - SL_RECENT_SECONDS)
            model[at / SEC] += n;
        /* Read from a moment at or after the newest second written. */
        for (unsigned ago = 0; ago < SL_RECENT_SECONDS + 3; ago += 1 + rnd(7)) {
            int64_t sec = now / SEC - (int64_t)ago;
            uint32_t want = ago < SL_RECENT_SECONDS && sec >= 0 && sec > newest - SL_RECENT_SECONDS
                               ? model[sec]
                               : 0;

            assert_int_equal(sl_recent_at(&r, now, ago), want);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_seconds_move_on),
        cmocka_unit_test(test_rate_over_windows),
        cmocka_unit_test(test_old_seconds_leave),
        cmocka_unit_test(test_late_now),
        cmocka_unit_test(test_set),
        cmocka_unit_test(test_property),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
