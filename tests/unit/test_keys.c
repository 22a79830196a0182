/*
 * test_keys.c - per-key limiters on a fake clock: SipHash, strictness per
 * key in units (property tests against every window), eviction, the cap,
 * the default bucket, memory per key, the seed and reconfiguration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "hash.h"
#include "keys.h"
#include "limiter.h"
#include "sluice.h"

#define SEC INT64_C(1000000)
#define MS INT64_C(1000)
#define T0 (1000 * SEC)

static const struct sl_hash_key seed_a = {UINT64_C(0x0706050403020100), UINT64_C(0x0f0e0d0c0b0a0908)};
static const struct sl_hash_key seed_b = {UINT64_C(0x1111111111111111), UINT64_C(0x2222222222222222)};

static struct sl_route_config cfg_of(double n, int64_t period_us, unsigned burst,
                                     unsigned max_cost, size_t max_keys)
{
    struct sl_route_config c;

    memset(&c, 0, sizeof(c));
    c.rate.n = n;
    c.rate.period_us = period_us;
    c.burst = burst;
    c.cost = 1;
    c.max_cost = max_cost;
    c.max_keys = max_keys;
    c.window_guard_us = 3 * MS;
    c.limit_key.source = SL_KEY_HEADER;
    strcpy(c.limit_key.name, "X-Key");
    return c;
}

static uint64_t id_of(const struct sl_keys *k, const char *value)
{
    return sl_keys_id(k, value, strlen(value));
}

static uint32_t acquire_ok(struct sl_keys *k, const char *value, int64_t now)
{
    uint32_t slot = SL_KEYS_NO_SLOT;

    assert_int_equal(sl_keys_acquire(k, id_of(k, value), now, &slot), SL_OK);
    assert_int_not_equal(slot, SL_KEYS_NO_SLOT);
    return slot;
}

/* One dispatch of `units` at `now` from a key: park, take, answer. */
static void send_once(struct sl_keys *k, const char *value, int64_t now, uint32_t units)
{
    uint32_t s = acquire_ok(k, value, now);

    assert_true(sl_keys_next(k, s, now, units) <= now);
    assert_int_equal(sl_keys_take(k, s, now, units), SL_OK);
    sl_keys_answered(k, s, now, units);
}

/* --- ids ------------------------------------------------------------------- */

/* An id is hash.h's SipHash-2-4 of the value under the table's seed (tested there). */
static void test_id_is_siphash(void **state)
{
    struct sl_route_config c = cfg_of(10, SEC, 1, 1, 1000);
    struct sl_keys *k = sl_keys_new(&c, &seed_a);
    unsigned char msg[64];

    (void)state;
    assert_non_null(k);
    for (unsigned i = 0; i < sizeof(msg); i++)
        msg[i] = (unsigned char)i;
    /* The paper's vectors: key 00..0f, messages 00..(len-1). */
    assert_true(sl_keys_id(k, msg, 15) == UINT64_C(0xa129ca6149be45e5));
    assert_true(sl_keys_id(k, msg, 63) == UINT64_C(0x958a324ceb064572));
    assert_true(sl_keys_id(k, "key-1", 5) == sl_hash(&seed_a, "key-1", 5));
    sl_keys_free(k);
}

/* The seed decides every id: the same value gets unrelated ids under two seeds. */
static void test_seed(void **state)
{
    struct sl_route_config c = cfg_of(10, SEC, 1, 1, 1000);
    struct sl_keys *a = sl_keys_new(&c, &seed_a);
    struct sl_keys *a2 = sl_keys_new(&c, &seed_a);
    struct sl_keys *b = sl_keys_new(&c, &seed_b);
    char v[32];
    int same = 0;

    (void)state;
    assert_non_null(a);
    assert_non_null(b);
    for (int i = 0; i < 1000; i++) {
        snprintf(v, sizeof(v), "key-%d", i);
        assert_true(id_of(a, v) == id_of(a2, v));
        assert_true(id_of(a, v) != SL_KEYS_DEFAULT_ID);
        same += id_of(a, v) == id_of(b, v);
    }
    assert_int_equal(same, 0);
    sl_keys_free(a);
    sl_keys_free(a2);
    sl_keys_free(b);
}

/* 200,000 keys that differ in one position spread evenly over the buckets. */
static void test_chains_stay_short(void **state)
{
    struct sl_route_config c = cfg_of(10, SEC, 1, 1, 200000);
    struct sl_keys *k = sl_keys_new(&c, &seed_b);
    char v[32];

    (void)state;
    for (int i = 0; i < 200000; i++) {
        snprintf(v, sizeof(v), "%08d", i);
        (void)acquire_ok(k, v, T0);
    }
    assert_int_equal(sl_keys_live(k), 200000);
    /* Load <= 1: a fair hash gives chains of a dozen at most. */
    assert_true(sl_keys_longest_chain(k) <= 16);
    sl_keys_free(k);
}

/* --- strictness -------------------------------------------------------------- */

struct dispatch {
    int key;
    int64_t at;
    uint32_t units;
};

/* Largest sum of units in any half-open window [t, t + w) of one key's dispatches. */
static uint32_t max_units_in_window(const struct dispatch *d, size_t n, int key, int64_t w)
{
    uint32_t best = 0;

    for (size_t i = 0; i < n; i++) {
        uint32_t sum = 0;

        if (d[i].key != key)
            continue;
        for (size_t j = i; j < n && d[j].at < d[i].at + w; j++)
            sum += d[j].key == key ? d[j].units : 0;
        if (sum > best)
            best = sum;
    }
    return best;
}

static uint64_t rng_state = 88172645463325252u;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

/*
 * Keys with backlogs of random costs on a fake clock: every instant the
 * earliest `next` of any key, each key dispatches as soon as allowed. For
 * every key, no window of P + guard holds more than N units (so no window of
 * P does, with up to `guard` of jitter), and the keys do not slow each other.
 */
static void run_property(const struct sl_route_config *c, int n_keys, int per_key,
                         uint32_t n_units, int64_t window_us, size_t *out_n)
{
    struct sl_keys *k = sl_keys_new(c, &seed_a);
    struct dispatch *d = calloc((size_t)n_keys * (size_t)per_key, sizeof(*d));
    uint32_t slot[16];
    uint32_t units[16];
    int left[16];
    int64_t now = T0;
    size_t n = 0;
    char v[16];

    assert_non_null(k);
    assert_non_null(d);
    assert_true(n_keys <= 16);
    for (int i = 0; i < n_keys; i++) {
        snprintf(v, sizeof(v), "k%d", i);
        slot[i] = acquire_ok(k, v, now);
        units[i] = 1 + rnd(c->max_cost);
        left[i] = per_key;
    }
    for (;;) {
        int64_t soonest = INT64_MAX;
        int busy = 0;

        for (int i = 0; i < n_keys; i++) {
            int64_t next;

            if (left[i] == 0)
                continue;
            busy++;
            next = sl_keys_next(k, slot[i], now, units[i]);
            if (next > now) {
                if (next < soonest)
                    soonest = next;
                assert_int_equal(sl_keys_take(k, slot[i], now, units[i]), SL_EAGAIN);
                continue;
            }
            assert_int_equal(sl_keys_take(k, slot[i], now, units[i]), SL_OK);
            d[n++] = (struct dispatch){i, now, units[i]};
            /* Answered a little later, or at once. */
            sl_keys_answered(k, slot[i], now + rnd(2) * rnd(5 * MS), units[i]);
            if (--left[i] > 0)
                sl_keys_hold(k, slot[i]);
            units[i] = 1 + rnd(c->max_cost);
            soonest = now;
        }
        if (busy == 0)
            break;
        /* A timer fires on time or up to 2 ms late. */
        now = soonest > now ? soonest + rnd(3) * rnd(1000) : now;
    }
    for (int i = 0; i < n_keys; i++)
        assert_true(max_units_in_window(d, n, i, window_us) <= n_units);
    *out_n = n;
    free(d);
    sl_keys_free(k);
}

static void test_compact_strict_in_units(void **state)
{
    struct sl_route_config c = cfg_of(5, SEC, 1, 3, 1000);
    size_t n;

    (void)state;
    run_property(&c, 8, 60, 5, SEC + 3 * MS, &n);
    assert_int_equal(n, 8 * 60);
}

static void test_compact_unit_cost_is_plain_spacing(void **state)
{
    struct sl_route_config c = cfg_of(5, SEC, 1, 1, 1000);
    struct sl_keys *k = sl_keys_new(&c, &seed_a);
    uint32_t s = acquire_ok(k, "a", T0);
    int64_t now = T0;

    (void)state;
    assert_true(k->compact);
    /* (1 s + 3 ms guard) / 5 */
    assert_int_equal(k->interval_us, 200600);
    for (int i = 0; i < 50; i++) {
        int64_t next = sl_keys_next(k, s, now, 1);

        assert_int_equal(next, T0 + i * 200600);
        now = next;
        assert_int_equal(sl_keys_take(k, s, now, 1), SL_OK);
        sl_keys_hold(k, s);
    }
    sl_keys_free(k);
}

static void test_full_strict_with_burst_and_quota(void **state)
{
    struct sl_route_config c = cfg_of(5, SEC, 3, 2, 1000);
    size_t n;

    (void)state;
    c.quotas[0].n = 12;
    c.quotas[0].period_us = 5 * SEC;
    c.n_quotas = 1;
    run_property(&c, 6, 40, 5, SEC + 3 * MS, &n);
    assert_int_equal(n, 6 * 40);
    c.burst = 1; /* a quota alone also needs the logs */
    run_property(&c, 3, 30, 12, 5 * SEC + 3 * MS, &n);
}

/* A key with a backlog never delays another: each runs at its own rate. */
static void test_keys_are_independent(void **state)
{
    struct sl_route_config c = cfg_of(10, SEC, 1, 1, 1000);
    struct sl_keys *k = sl_keys_new(&c, &seed_a);
    uint32_t a = acquire_ok(k, "a", T0), b;

    (void)state;
    for (int i = 0; i < 5; i++) {
        int64_t at = sl_keys_next(k, a, T0, 1);

        assert_int_equal(sl_keys_take(k, a, at, 1), SL_OK);
        sl_keys_hold(k, a);
    }
    b = acquire_ok(k, "b", T0);
    assert_int_equal(sl_keys_next(k, b, T0, 1), T0);
    assert_true(sl_keys_next(k, a, T0, 1) > T0 + 400 * MS);
    sl_keys_free(k);
}

/* --- eviction ---------------------------------------------------------------- */

static void test_evicted_once_windows_passed(void **state)
{
    struct sl_route_config c = cfg_of(10, SEC, 1, 1, 1000);
    struct sl_keys *k = sl_keys_new(&c, &seed_a);
    int64_t interval;

    (void)state;
    interval = k->interval_us;
    send_once(k, "a", T0, 1);
    send_once(k, "b", T0 + 10 * MS, 1);
    assert_int_equal(sl_keys_live(k), 2);
    assert_int_equal(sl_keys_sweep_at(k), T0 + interval);
    /* Not before its window has passed. */
    assert_int_equal(sl_keys_sweep(k, T0 + interval - 1, 100), 0);
    assert_int_equal(sl_keys_sweep(k, T0 + interval, 100), 1);
    assert_int_equal(sl_keys_live(k), 1);
    assert_int_equal(sl_keys_sweep_at(k), T0 + 10 * MS + interval);
    assert_int_equal(sl_keys_sweep(k, T0 + 10 * SEC, 100), 1);
    assert_int_equal(sl_keys_live(k), 0);
    assert_int_equal(sl_keys_sweep_at(k), 0);
    assert_int_equal(k->evictions, 2);
    /* An evicted key comes back as new: the same state as a known idle one. */
    send_once(k, "a", T0 + 10 * SEC, 1);
    assert_int_equal(sl_keys_live(k), 1);
    sl_keys_free(k);
}

static void test_sweep_is_bounded(void **state)
{
    struct sl_route_config c = cfg_of(100, SEC, 1, 1, 10000);
    struct sl_keys *k = sl_keys_new(&c, &seed_a);
    char v[16];

    (void)state;
    for (int i = 0; i < 5000; i++) {
        snprintf(v, sizeof(v), "k%d", i);
        send_once(k, v, T0, 1);
    }
    assert_int_equal(sl_keys_sweep(k, T0 + SEC, 1000), 1000);
    assert_int_equal(sl_keys_live(k), 4000);
    assert_int_equal(sl_keys_sweep(k, T0 + SEC, 100000), 4000);
    assert_int_equal(sl_keys_live(k), 0);
    sl_keys_free(k);
}

/* A key with a request parked or in flight stays, whatever its windows. */
static void test_pinned_keys_stay(void **state)
{
    struct sl_route_config c = cfg_of(10, SEC, 1, 1, 1000);
    struct sl_keys *k = sl_keys_new(&c, &seed_a);
    uint32_t a = acquire_ok(k, "a", T0), b = acquire_ok(k, "b", T0);

    (void)state;
    assert_int_equal(sl_keys_take(k, b, T0, 1), SL_OK); /* b in flight, a parked */
    assert_int_equal(sl_keys_sweep(k, T0 + 100 * SEC, 100), 0);
    assert_int_equal(sl_keys_sweep_at(k), 0);
    sl_keys_answered(k, b, T0 + 50 * SEC, 1);
    sl_keys_release(k, a, T0 + 50 * SEC); /* a's client left: a never dispatched */
    assert_int_equal(sl_keys_sweep(k, T0 + 100 * SEC, 100), 2);
    sl_keys_free(k);
}

/* Full limiters: evicted once every log's window (and the guard) has passed. */
static void test_full_eviction_waits_for_the_longest_window(void **state)
{
    struct sl_route_config c = cfg_of(10, SEC, 2, 1, 1000);
    struct sl_keys *k = sl_keys_new(&c, &seed_a);

    (void)state;
    c.quotas[0].n = 100;
    c.quotas[0].period_us = 60 * SEC;
    c.n_quotas = 1;
    sl_keys_free(k);
    k = sl_keys_new(&c, &seed_a);
    assert_false(k->compact);
    send_once(k, "a", T0, 1);
    assert_int_equal(sl_keys_sweep(k, T0 + 60 * SEC + 3 * MS - 1, 10), 0);
    assert_int_equal(sl_keys_sweep(k, T0 + 60 * SEC + 3 * MS, 10), 1);
    sl_keys_free(k);
}

/* --- the cap and the default bucket -------------------------------------------- */

static void test_cap(void **state)
{
    struct sl_route_config c = cfg_of(10, SEC, 1, 1, 2);
    struct sl_keys *k = sl_keys_new(&c, &seed_a);
    uint32_t a = acquire_ok(k, "a", T0), s;

    (void)state;
    (void)acquire_ok(k, "b", T0);
    assert_int_equal(sl_keys_acquire(k, id_of(k, "c"), T0, &s), SL_EAGAIN);
    assert_int_equal(k->refused, 1);
    /* Known keys and the default bucket still come in. */
    assert_int_equal(sl_keys_acquire(k, id_of(k, "a"), T0, &s), SL_OK);
    assert_int_equal(s, a);
    assert_int_equal(sl_keys_acquire(k, SL_KEYS_DEFAULT_ID, T0, &s), SL_OK);
    assert_int_equal(s, SL_KEYS_DEFAULT_SLOT);
    assert_int_equal(sl_keys_live(k), 2);
    /* a dispatches twice and goes idle; once its windows pass, c takes its place. */
    assert_int_equal(sl_keys_take(k, a, T0, 1), SL_OK);
    sl_keys_answered(k, a, T0, 1);
    assert_int_equal(sl_keys_take(k, a, T0 + 100300, 1), SL_OK);
    sl_keys_answered(k, a, T0 + 100300, 1);
    assert_int_equal(sl_keys_acquire(k, id_of(k, "c"), T0 + 200 * MS, &s), SL_EAGAIN);
    assert_int_equal(sl_keys_acquire(k, id_of(k, "c"), T0 + 200600, &s), SL_OK);
    assert_int_equal(s, a); /* the slot of the evicted key */
    assert_int_equal(sl_keys_live(k), 2);
    assert_int_equal(k->evictions, 1);
    sl_keys_free(k);
}

static void test_default_bucket(void **state)
{
    struct sl_route_config c = cfg_of(10, SEC, 1, 1, 10);
    struct sl_keys *k = sl_keys_new(&c, &seed_a);
    uint32_t s;

    (void)state;
    assert_int_equal(sl_keys_acquire(k, SL_KEYS_DEFAULT_ID, T0, &s), SL_OK);
    assert_int_equal(s, SL_KEYS_DEFAULT_SLOT);
    assert_int_equal(sl_keys_take(k, s, T0, 1), SL_OK);
    sl_keys_answered(k, s, T0, 1);
    /* Limited like any key, never counted, never evicted. */
    assert_int_equal(sl_keys_next(k, s, T0, 1), T0 + k->interval_us);
    assert_int_equal(sl_keys_live(k), 0);
    assert_int_equal(sl_keys_sweep_at(k), 0);
    assert_int_equal(sl_keys_sweep(k, T0 + 100 * SEC, 10), 0);
    assert_true(sl_keys_slot_id(k, s) == SL_KEYS_DEFAULT_ID);
    sl_keys_free(k);
}

/* --- memory ------------------------------------------------------------------- */

/*
 * Limiter decisions per second among 100,000 keys, printed (not asserted:
 * the machine decides): each a key's next instant and, when due, its take
 * and its answer, on keys picked at random (cache misses included).
 */
static void decisions(struct sl_keys *k)
{
    enum { N = 1000000 };
    uint32_t *slots = malloc(100000 * sizeof(*slots));
    char v[16];
    struct timespec a, b;
    int64_t now = T0 + 100 * SEC;
    size_t taken = 0;
    double secs;

    assert_non_null(slots);
    for (int i = 0; i < 100000; i++) {
        snprintf(v, sizeof(v), "k%d", i);
        slots[i] = acquire_ok(k, v, now);
    }
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < N; i++) {
        uint32_t s = slots[rnd(100000)];

        now += 1;
        if (sl_keys_next(k, s, now, 1) <= now && sl_keys_take(k, s, now, 1) == SL_OK) {
            sl_keys_answered(k, s, now, 1);
            sl_keys_hold(k, s);
            taken++;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    print_message("%d decisions among 100000 keys (%zu taken): %.1f million per second\n", N,
                  taken, N / secs / 1e6);
    assert_true(taken > 0);
    free(slots);
}

/* 100,000 idle compact keys: at most 64 bytes each, the hash table included. */
static void test_bytes_per_key(void **state)
{
    struct sl_route_config c = cfg_of(1, 60 * SEC, 1, 1, 100000);
    struct sl_keys *k = sl_keys_new(&c, &seed_a);
    char v[16];
    size_t bytes;

    (void)state;
    for (int i = 0; i < 100000; i++) {
        snprintf(v, sizeof(v), "k%d", i);
        send_once(k, v, T0, 1);
    }
    assert_int_equal(sl_keys_live(k), 100000);
    bytes = sl_keys_bytes(k);
    print_message("%zu keys: %zu bytes, %.1f per key\n", sl_keys_live(k), bytes,
                  (double)bytes / 100000.0);
    assert_true(bytes <= 64 * 100000);
    decisions(k);
    sl_keys_free(k);
}


/* The upstream paused a key: nothing of it before the instant, and it stays known until then. */
static void test_pause(void **state)
{
    for (unsigned burst = 1; burst <= 2; burst++) {
        struct sl_route_config c = cfg_of(10, SEC, burst, 3, 100);
        struct sl_keys *k = sl_keys_new(&c, &seed_a);
        uint32_t a = acquire_ok(k, "a", T0), b = acquire_ok(k, "b", T0);

        (void)state;
        assert_int_equal(sl_keys_take(k, a, T0, 1), SL_OK);
        sl_keys_answered(k, a, T0, 1);
        sl_keys_pause(k, a, T0 + 5 * SEC);
        for (uint32_t u = 1; u <= 3; u++)
            assert_true(sl_keys_next(k, a, T0 + SEC, u) >= T0 + 5 * SEC);
        /* Only that key: b goes. */
        assert_int_equal(sl_keys_next(k, b, T0, 1), T0);
        /* Idle, a waits out its pause before it can be forgotten. */
        assert_int_equal(sl_keys_sweep(k, T0 + 5 * SEC - 1, 10), 0);
        assert_int_equal(sl_keys_live(k), 2);
        assert_true(sl_keys_sweep_at(k) >= T0 + 5 * SEC);
        sl_keys_release(k, b, T0);
        sl_keys_free(k);
    }
}

/* --- /status ------------------------------------------------------------------- */

static void test_busiest(void **state)
{
    struct sl_route_config c = cfg_of(1000, SEC, 1, 1, 100);
    struct sl_keys *k = sl_keys_new(&c, &seed_a);
    struct sl_keys_top top[3];
    int64_t now = T0;
    char v[16];

    (void)state;
    for (int i = 0; i < 10; i++) {
        uint32_t s;

        snprintf(v, sizeof(v), "k%d", i);
        s = acquire_ok(k, v, now); /* stays parked: never evicted */
        for (int j = 0; j <= i; j++) {
            now += 10 * MS;
            assert_int_equal(sl_keys_take(k, s, now, 1), SL_OK);
            sl_keys_answered(k, s, now, 1);
            sl_keys_hold(k, s);
        }
    }
    assert_int_equal(sl_keys_busiest(k, top, 3), 3);
    assert_int_equal(top[0].units, 10);
    assert_int_equal(top[1].units, 9);
    assert_int_equal(top[2].units, 8);
    assert_int_equal(top[0].digest, sl_keys_digest(id_of(k, "k9")));
    sl_keys_free(k);
}

/* --- reload ------------------------------------------------------------------ */

static void test_reconfigure_same_limits_keeps_state(void **state)
{
    struct sl_route_config c = cfg_of(10, SEC, 1, 1, 100);
    struct sl_keys *k = sl_keys_new(&c, &seed_a);
    uint32_t a = acquire_ok(k, "a", T0);
    int64_t next;

    (void)state;
    assert_int_equal(sl_keys_take(k, a, T0, 1), SL_OK);
    sl_keys_hold(k, a);
    next = sl_keys_next(k, a, T0, 1);
    c.max_keys = 5;
    assert_int_equal(sl_keys_reconfigure(k, &c, T0), SL_OK);
    assert_int_equal(sl_keys_next(k, a, T0, 1), next);
    assert_int_equal(k->max_keys, 5);
    sl_keys_free(k);
}

/* A slower rate: a key that just sent waits one new window after its old one. */
static void test_reconfigure_changed_limits_holds_keys(void **state)
{
    struct sl_route_config c = cfg_of(10, SEC, 1, 1, 100);
    struct sl_keys *k = sl_keys_new(&c, &seed_a);
    uint32_t a = acquire_ok(k, "a", T0);
    int64_t old_quiet;

    (void)state;
    assert_int_equal(sl_keys_take(k, a, T0, 1), SL_OK);
    sl_keys_hold(k, a);
    old_quiet = T0 + k->interval_us;
    c = cfg_of(2, SEC, 1, 1, 100);
    assert_int_equal(sl_keys_reconfigure(k, &c, T0 + MS), SL_OK);
    assert_int_equal(sl_keys_next(k, a, T0 + MS, 1), old_quiet + SEC + 3 * MS);
    /* A key unknown so far waits one new window from the reload. */
    assert_int_equal(sl_keys_next(k, acquire_ok(k, "b", T0 + MS), T0 + MS, 1),
                     T0 + MS + SEC + 3 * MS);
    /* To full limiters (burst 2) and back: pins and counts stay. */
    c.burst = 2;
    assert_int_equal(sl_keys_reconfigure(k, &c, T0 + 2 * MS), SL_OK);
    assert_false(k->compact);
    assert_true(sl_keys_next(k, a, T0 + 2 * MS, 1) >= old_quiet + SEC);
    c.burst = 1;
    assert_int_equal(sl_keys_reconfigure(k, &c, T0 + 3 * MS), SL_OK);
    assert_true(k->compact);
    sl_keys_release(k, a, T0 + 3 * MS);
    assert_int_equal(sl_keys_live(k), 2);
    sl_keys_free(k);
}

/* Full to full: each key keeps its history (a longer quota counts what was sent). */
static void test_reconfigure_full_inherits(void **state)
{
    struct sl_route_config c = cfg_of(10, SEC, 2, 1, 100);
    struct sl_keys *k = sl_keys_new(&c, &seed_a);
    uint32_t a = acquire_ok(k, "a", T0);
    int64_t now = T0;

    (void)state;
    for (int i = 0; i < 10; i++) {
        now = sl_keys_next(k, a, now, 1);
        assert_int_equal(sl_keys_take(k, a, now, 1), SL_OK);
        sl_keys_hold(k, a);
    }
    c.quotas[0].n = 10;
    c.quotas[0].period_us = 10 * SEC;
    c.n_quotas = 1;
    assert_int_equal(sl_keys_reconfigure(k, &c, now), SL_OK);
    /* The 10 dispatches of the last second fill the new quota for 10 s. */
    assert_true(sl_keys_next(k, a, now, 1) >= T0 + 10 * SEC);
    sl_keys_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_is_siphash),
        cmocka_unit_test(test_seed),
        cmocka_unit_test(test_chains_stay_short),
        cmocka_unit_test(test_compact_strict_in_units),
        cmocka_unit_test(test_compact_unit_cost_is_plain_spacing),
        cmocka_unit_test(test_full_strict_with_burst_and_quota),
        cmocka_unit_test(test_keys_are_independent),
        cmocka_unit_test(test_evicted_once_windows_passed),
        cmocka_unit_test(test_sweep_is_bounded),
        cmocka_unit_test(test_pinned_keys_stay),
        cmocka_unit_test(test_full_eviction_waits_for_the_longest_window),
        cmocka_unit_test(test_cap),
        cmocka_unit_test(test_default_bucket),
        cmocka_unit_test(test_pause),
        cmocka_unit_test(test_bytes_per_key),
        cmocka_unit_test(test_busiest),
        cmocka_unit_test(test_reconfigure_same_limits_keeps_state),
        cmocka_unit_test(test_reconfigure_changed_limits_holds_keys),
        cmocka_unit_test(test_reconfigure_full_inherits),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
