/*
 * test_shlimit.c - the shared limiter's pure parts: the script's arguments
 * (from a route's limiter), its answers, and a route's decision
 * bookkeeping against a fake clock (grants used only within the budget;
 * turns; what a pass or an outage leaves). The script itself runs against a real Redis
 * in tests/integration/test_shared_limit.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "limiter.h"
#include "shlimit.h"
#include "sluice.h"

#define SEC INT64_C(1000000)
#define MS INT64_C(1000)
#define T0 (1000 * SEC)

static struct sl_shlimit_limits limits_30s_600m(unsigned burst)
{
    struct sl_limit rate = {30, SEC};
    struct sl_limit quota = {600, 60 * SEC};
    struct sl_limiter l;
    struct sl_shlimit_limits out;

    assert_int_equal(sl_limiter_init(&l, &rate, burst, &quota, 1), SL_OK);
    sl_limiter_set_dating(&l, 5 * MS, 0);
    sl_shlimit_limits_from(&out, &l);
    sl_limiter_fini(&l);
    return out;
}

static void test_limits_from_limiter(void **state)
{
    struct sl_shlimit_limits lim = limits_30s_600m(3);

    (void)state;
    assert_int_equal(lim.interval_us, 33334); /* P/N rounded up, as in memory */
    assert_int_equal(lim.tolerance_us, 2 * 33334);
    assert_int_equal(lim.catchup_us, 5000); /* min(T/4, 5 ms) */
    assert_int_equal(lim.n_logs, 2);
    assert_int_equal(lim.n[0], 30);
    assert_int_equal(lim.window_us[0], SEC);
    assert_int_equal(lim.n[1], 600);
    assert_int_equal(lim.window_us[1], 60 * SEC);
    assert_int_equal(lim.guard_us[0], 5 * MS);
    assert_int_equal(lim.guard_us[1], 5 * MS);
    assert_int_equal(sl_shlimit_span(&lim), 60 * SEC + 5 * MS);
}

static void assert_arg(const struct sl_shlimit_cmd *c, int i, const char *want)
{
    assert_true(i < c->argc);
    assert_int_equal(c->lens[i], strlen(want));
    assert_memory_equal(c->argv[i], want, strlen(want));
}

static void test_encode(void **state)
{
    struct sl_shlimit_limits lim = limits_30s_600m(1);
    struct sl_shlimit_question q = {1234567, 5, 2, 0xabcdef};
    struct sl_shlimit_cmd c;

    (void)state;
    assert_int_equal(sl_shlimit_encode(&c, "abc123", "p:", "api", &lim, &q), SL_OK);
    assert_int_equal(c.argc, 16 + 3 * 2);
    assert_arg(&c, 0, "EVALSHA");
    assert_arg(&c, 1, "abc123");
    assert_arg(&c, 2, "3");
    /* One hash tag per route: its keys share one cluster slot. */
    assert_arg(&c, 3, "p:{api}:limit");
    assert_arg(&c, 4, "p:{api}:log");
    assert_arg(&c, 5, "p:{api}:turns");
    assert_arg(&c, 6, "1234567");
    assert_arg(&c, 7, "5");
    assert_arg(&c, 8, "2");
    assert_arg(&c, 9, "33334");
    assert_arg(&c, 10, "0");
    assert_arg(&c, 11, "5000");
    assert_arg(&c, 12, "50000");
    assert_arg(&c, 13, "86400000"); /* the hash outlives a quiet day (the epoch) */
    assert_arg(&c, 14, "0000000000abcdef");
    assert_arg(&c, 15, "2");
    assert_arg(&c, 16, "30");
    assert_arg(&c, 17, "1000000");
    assert_arg(&c, 18, "5000");
    assert_arg(&c, 19, "600");
    assert_arg(&c, 20, "60000000");
    assert_arg(&c, 21, "5000");

    /* No SHA yet (or NOSCRIPT): the script goes whole with EVAL. */
    q.units = 0; /* counts as 1 */
    assert_int_equal(sl_shlimit_encode(&c, NULL, "p:", "api", &lim, &q), SL_OK);
    assert_arg(&c, 0, "EVAL");
    assert_int_equal(c.lens[1], sl_shlimit_lua_len);
    assert_memory_equal(c.argv[1], sl_shlimit_script(), sl_shlimit_lua_len);
    assert_non_null(strstr(sl_shlimit_script(), "redis.call('TIME')"));
    assert_arg(&c, 8, "1");
    assert_int_equal(sl_shlimit_encode(&c, "", "p:", "api", &lim, &q), SL_OK);
    assert_arg(&c, 0, "EVAL");

    /* k = 0: record a late send. */
    q.k = 0;
    assert_int_equal(sl_shlimit_encode(&c, "abc", "p:", "api", &lim, &q), SL_OK);
    assert_arg(&c, 7, "0");

    lim.n_logs = 0;
    assert_int_equal(sl_shlimit_encode(&c, "abc", "p:", "api", &lim, &q), SL_ERR);
}

/* --- answers ------------------------------------------------------------- */

static redisReply int_reply(long long v)
{
    redisReply r;

    memset(&r, 0, sizeof(r));
    r.type = REDIS_REPLY_INTEGER;
    r.integer = v;
    return r;
}

static int decode3(long long granted, long long wait, long long epoch,
                   struct sl_shlimit_answer *a)
{
    redisReply e[4] = {int_reply(granted), int_reply(wait), int_reply(epoch),
                       int_reply(1700000000000000)};
    redisReply *ep[4] = {&e[0], &e[1], &e[2], &e[3]};
    redisReply arr;
    bool noscript = true;
    int rc;

    memset(&arr, 0, sizeof(arr));
    arr.type = REDIS_REPLY_ARRAY;
    arr.elements = 4;
    arr.element = ep;
    rc = sl_shlimit_decode(&arr, a, &noscript);
    assert_false(noscript);
    return rc;
}

static void test_decode(void **state)
{
    struct sl_shlimit_answer a;
    redisReply err, arr;
    bool noscript;

    (void)state;
    assert_int_equal(decode3(3, 0, 77, &a), SL_OK);
    assert_int_equal(a.granted, 3);
    assert_int_equal(a.wait_us, 0);
    assert_int_equal(a.epoch, 77);
    assert_int_equal(a.redis_now_us, 1700000000000000);
    /* Granted, and the next turn. */
    assert_int_equal(decode3(1, 33000, 77, &a), SL_OK);
    assert_int_equal(a.granted, 1);
    assert_int_equal(a.wait_us, 33000);
    assert_int_equal(decode3(0, 40 * SEC, 77, &a), SL_OK);
    assert_int_equal(a.granted, 0);
    /* Nonsense is an error, never a grant. */
    assert_int_equal(decode3(0, 0, 77, &a), SL_ERR);
    assert_int_equal(decode3(-1, 0, 77, &a), SL_ERR);
    assert_int_equal(decode3(1, -5, 77, &a), SL_ERR);
    assert_int_equal(decode3(1, 0, 0, &a), SL_ERR);
    assert_int_equal(decode3(SL_SHLIMIT_MAX_ASK + 1, 0, 7, &a), SL_ERR);

    assert_int_equal(sl_shlimit_decode(NULL, &a, &noscript), SL_ERR);
    assert_false(noscript);
    memset(&err, 0, sizeof(err));
    err.type = REDIS_REPLY_ERROR;
    err.str = "NOSCRIPT No matching script. Please use EVAL.";
    err.len = strlen(err.str);
    assert_int_equal(sl_shlimit_decode(&err, &a, &noscript), SL_ERR);
    assert_true(noscript);
    err.str = "ERR Error running script";
    assert_int_equal(sl_shlimit_decode(&err, &a, &noscript), SL_ERR);
    assert_false(noscript);
    memset(&arr, 0, sizeof(arr));
    arr.type = REDIS_REPLY_ARRAY;
    arr.elements = 0;
    assert_int_equal(sl_shlimit_decode(&arr, &a, &noscript), SL_ERR);
}

/* --- a route's bookkeeping ----------------------------------------------- */

static struct sl_shlimit_answer answer(uint32_t granted, int64_t wait)
{
    struct sl_shlimit_answer a = {granted, wait, 42, 0};

    return a;
}

/* Grants go at once, within 3/4 of the guard after the ask left. */
static void test_route_grants(void **state)
{
    struct sl_shlimit_route st;
    struct sl_shlimit_answer a = answer(2, 0);
    int64_t at = 0;

    (void)state;
    sl_shlimit_route_init(&st, 5 * MS);
    assert_int_equal(st.budget_us, 3750);
    assert_int_equal(sl_shlimit_route_step(&st, T0, 1, &at), SL_SHLIMIT_STEP_ASK);
    st.phase = SL_SHLIMIT_ASKING; /* what sl_shlimit_ask() does */
    assert_int_equal(sl_shlimit_route_step(&st, T0, 1, &at), SL_SHLIMIT_STEP_BUSY);
    sl_shlimit_route_answer(&st, &a, 1, T0, T0 + 400);
    assert_int_equal(st.epoch, 42);
    assert_int_equal(st.phase, SL_SHLIMIT_IDLE); /* no turn held: all it asked for */
    assert_int_equal(sl_shlimit_route_step(&st, T0 + 500, 1, &at), SL_SHLIMIT_STEP_GO);
    assert_int_equal(sl_shlimit_route_step(&st, T0 + 3750, 1, &at), SL_SHLIMIT_STEP_GO);
    assert_int_equal(sl_shlimit_route_step(&st, T0 + 3760, 1, &at), SL_SHLIMIT_STEP_ASK);
    assert_int_equal(st.late, 0);

    /* A reply slower than the budget: its instant may be too old to use. */
    sl_shlimit_route_answer(&st, &a, 1, T0, T0 + 3800);
    assert_int_equal(sl_shlimit_route_step(&st, T0 + 3800, 1, &at), SL_SHLIMIT_STEP_ASK);
    assert_int_equal(st.late, 1);
    assert_int_equal(st.credit, 0);

    assert_int_equal(sl_shlimit_record_after(&st), 625); /* guard / 8 */

    /* Units: 2 dispatches of 3 units are 6 entries at one instant. */
    sl_shlimit_route_answer(&st, &a, 3, T0, T0 + 100);
    assert_int_equal(st.credit, 6);
    assert_int_equal(sl_shlimit_route_step(&st, T0 + 200, 4, &at), SL_SHLIMIT_STEP_GO);
    /* 2 left, the next head costs 3: dropped, asked again. */
    assert_int_equal(sl_shlimit_route_step(&st, T0 + 200, 3, &at), SL_SHLIMIT_STEP_ASK);
    assert_int_equal(st.credit, 0);
}

/* A grant with the next turn: go now, then sleep until the turn, then ask. */
static void test_route_turns(void **state)
{
    struct sl_shlimit_route st;
    struct sl_shlimit_answer a = answer(1, 33 * MS);
    struct sl_shlimit_answer w = answer(0, 40 * SEC);
    int64_t at = 0;

    (void)state;
    sl_shlimit_route_init(&st, 5 * MS);
    st.phase = SL_SHLIMIT_ASKING;
    sl_shlimit_route_answer(&st, &a, 1, T0, T0 + 300);
    assert_int_equal(sl_shlimit_route_step(&st, T0 + 400, 1, &at), SL_SHLIMIT_STEP_GO);
    assert_int_equal(sl_shlimit_route_step(&st, T0 + 400, 1, &at), SL_SHLIMIT_STEP_SLEEP);
    /* Counted from the reply: never before Redis's instant. */
    assert_int_equal(at, T0 + 300 + 33 * MS);
    assert_int_equal(sl_shlimit_route_step(&st, at - 1, 1, &at), SL_SHLIMIT_STEP_SLEEP);
    assert_int_equal(sl_shlimit_route_step(&st, T0 + 300 + 33 * MS, 1, &at), SL_SHLIMIT_STEP_ASK);

    /* Nothing now: wait for the turn (a quota may take long). */
    st.phase = SL_SHLIMIT_ASKING;
    sl_shlimit_route_answer(&st, &w, 1, T0, T0 + 300);
    assert_int_equal(st.credit, 0);
    assert_int_equal(sl_shlimit_route_step(&st, T0 + SEC, 1, &at), SL_SHLIMIT_STEP_SLEEP);
    assert_int_equal(at, T0 + 300 + 40 * SEC);
    assert_int_equal(sl_shlimit_route_step(&st, at, 1, &at), SL_SHLIMIT_STEP_ASK);
    sl_shlimit_route_failed(&st);
    assert_int_equal(st.phase, SL_SHLIMIT_IDLE);
}

/* Grants left after their pass, and everything when Redis goes away, are dropped. */
static void test_route_settle_and_reset(void **state)
{
    struct sl_shlimit_route st;
    struct sl_shlimit_answer go = answer(3, 0);
    struct sl_shlimit_answer turn = answer(1, 50 * MS);
    int64_t at = 0;

    (void)state;
    sl_shlimit_route_init(&st, 5 * MS);
    sl_shlimit_route_answer(&st, &go, 1, T0, T0 + 100);
    assert_int_equal(sl_shlimit_route_step(&st, T0 + 200, 1, &at), SL_SHLIMIT_STEP_GO);
    sl_shlimit_route_settle(&st);
    assert_int_equal(st.credit, 0);
    assert_int_equal(st.late, 1);

    sl_shlimit_route_answer(&st, &turn, 1, T0, T0 + 100);
    sl_shlimit_route_reset(&st);
    assert_int_equal(st.phase, SL_SHLIMIT_IDLE);
    assert_int_equal(st.credit, 0);
    assert_int_equal(sl_shlimit_route_step(&st, T0 + 200, 1, &at), SL_SHLIMIT_STEP_ASK);

    /* An ask in flight stays so: its reply (or its failure) comes. */
    st.phase = SL_SHLIMIT_ASKING;
    sl_shlimit_route_reset(&st);
    assert_int_equal(st.phase, SL_SHLIMIT_ASKING);
    sl_shlimit_route_fini(&st);
    assert_null(st.pending);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits_from_limiter),
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_route_grants),
        cmocka_unit_test(test_route_turns),
        cmocka_unit_test(test_route_settle_and_reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
