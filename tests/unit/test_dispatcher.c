/*
 * test_dispatcher.c - per-route release of parked items against a fake clock.
 *
 * Routes come from sl_dispatcher_table_init() with a config filled by hand
 * (the parser is tested on its own) and a real event_base owned by the test.
 * libevent's timers run on real monotonic time, not on our fake clock, so
 * the tests assert the instant the dispatcher armed (sched.timer_at_us, the
 * same value sl_dispatcher_next() reports), move the fake clock there and
 * kick the route themselves, which is what the timer callback does. Two
 * places run the real callback: a zero timer (due at once in any clock) and
 * fire_timer(), which makes the route's timer active by hand.
 *
 * The ops record every call (route, item id, `now`, nesting depth); expire
 * takes the item out of the queue as the contract requires.
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
#include <event2/event.h>

#include "clock.h"
#include "dispatcher.h"
#include "log.h"
#include "queue.h"
#include "route.h"
#include "sluice.h"

#define SEC INT64_C(1000000)
#define MS INT64_C(1000)
/* Far from 0, which timer_at_us uses for "not armed". */
#define T0 (1000 * SEC)
#define MAX_REQS 1024
#define MAX_CALLS 2048
#define MAX_ROUTES 2

/* --- fake clock ---------------------------------------------------------- */

static int64_t fake_now;

static int64_t fake_clock(void)
{
    return fake_now;
}

/* --- fixture ------------------------------------------------------------- */

struct req {
    struct sl_queue_item item; /* first, so an item pointer is a req pointer */
    int id;
};

struct call {
    char kind; /* 'd' dispatch, 'e' expire */
    struct sl_route *route;
    int id;
    int64_t now;     /* the `now` handed to dispatch (expire: the clock) */
    unsigned depth;  /* callbacks on the stack, this one included, all routes */
};

struct fx;
typedef void (*dispatch_hook)(struct fx *f, struct sl_route *route, struct req *r);

struct fx {
    struct event_base *base;
    struct sl_config cfg;
    struct sl_route_config rcfg[MAX_ROUTES];
    struct sl_queue_totals totals;
    struct sl_route_table table;
    struct req reqs[MAX_REQS];
    int n_reqs;
    struct call calls[MAX_CALLS];
    size_t n_calls;
    unsigned depth;                      /* callbacks on the stack, all routes */
    unsigned route_depth[MAX_ROUTES];    /* dispatch callbacks on the stack, per route */
    unsigned max_route_depth[MAX_ROUTES];
    dispatch_hook on_dispatch;           /* extra behaviour inside dispatch, or NULL */
    int hook_id;                         /* which item the hook acts on (-1: every one) */
    struct sl_route *other;              /* second route, for hooks that kick it */
};

static struct req *req_of(struct sl_queue_item *it)
{
    return (struct req *)(void *)it;
}

static size_t route_index(const struct fx *f, const struct sl_route *route)
{
    for (size_t i = 0; i < f->table.n; i++) {
        if (f->table.routes[i] == route)
            return i;
    }
    fail_msg("callback for a route not in the table");
    return 0;
}

static void record(struct fx *f, char kind, struct sl_route *route, int id, int64_t now)
{
    assert_true(f->n_calls < MAX_CALLS);
    f->calls[f->n_calls++] = (struct call){kind, route, id, now, f->depth};
}

static void on_dispatch(struct sl_route *route, struct sl_queue_item *item, int64_t now,
                        void *arg)
{
    struct fx *f = arg;
    struct req *r = req_of(item);
    size_t ri = route_index(f, route);

    /* Popped, and counted in flight before the call. */
    assert_null(item->flow);
    assert_true(route->in_flight >= 1);
    f->depth++;
    if (++f->route_depth[ri] > f->max_route_depth[ri])
        f->max_route_depth[ri] = f->route_depth[ri];
    record(f, 'd', route, r->id, now);
    if (f->on_dispatch != NULL && (f->hook_id < 0 || f->hook_id == r->id))
        f->on_dispatch(f, route, r);
    f->route_depth[ri]--;
    f->depth--;
}

static void on_expire(struct sl_route *route, struct sl_queue_item *item, void *arg)
{
    struct fx *f = arg;

    assert_non_null(item->flow); /* still parked */
    f->depth++;
    record(f, 'e', route, req_of(item)->id, sl_clock_now());
    sl_queue_remove(&route->queue, item);
    f->depth--;
}

static const struct sl_dispatch_ops test_ops = {
    .dispatch = on_dispatch,
    .expire = on_expire,
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    f->base = event_base_new();
    if (f->base == NULL) {
        free(f);
        return -1;
    }
    f->totals.max_depth = SIZE_MAX;
    f->totals.max_bytes = SIZE_MAX;
    f->hook_id = -1;
    fake_now = T0;
    sl_clock_set(fake_clock);
    sl_log_set_level(SL_LOG_WARN); /* sl_route_pause logs at info */
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    /* Abandons what is still parked; the items live in f until after this. */
    sl_dispatcher_table_fini(&f->table);
    event_base_free(f->base);
    free(f);
    sl_clock_set(NULL);
    return 0;
}

/* Route i of the config: rate n per second, burst, max_in_flight. */
static void route_cfg(struct fx *f, size_t i, double rate, unsigned burst,
                      unsigned max_in_flight)
{
    struct sl_route_config *rc = &f->rcfg[i];

    memset(rc, 0, sizeof(*rc));
    snprintf(rc->name, sizeof(rc->name), "r%zu", i);
    snprintf(rc->match, sizeof(rc->match), "/r%zu", i);
    snprintf(rc->upstream, sizeof(rc->upstream), "http://127.0.0.1:1");
    rc->rate.n = rate;
    rc->rate.period_us = SEC;
    rc->burst = burst;
    rc->max_in_flight = max_in_flight;
}

/* Build the table from routes 0..n-1 and return route 0. */
static struct sl_route *start(struct fx *f, size_t n)
{
    f->cfg.routes = f->rcfg;
    f->cfg.n_routes = n;
    assert_int_equal(sl_dispatcher_table_init(&f->table, &f->cfg, &f->totals, f->base,
                                              &test_ops, f),
                     SL_OK);
    assert_int_equal(f->table.n, n);
    for (size_t i = 0; i < n; i++) {
        assert_non_null(f->table.routes[i]->sched.timer);
        assert_int_equal(f->table.routes[i]->sched.timer_at_us, 0);
    }
    return f->table.routes[0];
}

/* Park a new item (id = its index) at the tail; deadline 0 = none. */
static int park(struct fx *f, struct sl_route *route, int64_t deadline_us)
{
    struct req *r;

    assert_true(f->n_reqs < MAX_REQS);
    r = &f->reqs[f->n_reqs];
    r->id = f->n_reqs++;
    assert_int_equal(sl_queue_push(&route->queue, &r->item, SL_LANE_NORMAL, NULL, 1, fake_now,
                                   false),
                     SL_OK);
    r->item.deadline_us = deadline_us;
    return r->id;
}

static size_t count_kind(const struct fx *f, char kind, const struct sl_route *route)
{
    size_t n = 0;

    for (size_t i = 0; i < f->n_calls; i++)
        n += f->calls[i].kind == kind && f->calls[i].route == route;
    return n;
}

static size_t dispatched(const struct fx *f, const struct sl_route *route)
{
    return count_kind(f, 'd', route);
}

static bool timer_pending(const struct sl_route *route)
{
    return route->sched.timer != NULL && evtimer_pending(route->sched.timer, NULL);
}

/* The route's timer is armed for `at` (and libevent agrees it is pending). */
static void assert_armed(const struct sl_route *route, int64_t at)
{
    assert_int_equal(route->sched.timer_at_us, at);
    assert_int_equal(sl_dispatcher_next(route), at);
    assert_true(timer_pending(route));
}

static void assert_disarmed(const struct sl_route *route)
{
    assert_int_equal(route->sched.timer_at_us, 0);
    assert_int_equal(sl_dispatcher_next(route), 0);
    assert_false(timer_pending(route));
}

static void assert_call(const struct fx *f, size_t i, char kind, const struct sl_route *route,
                        int id, int64_t now)
{
    assert_true(i < f->n_calls);
    assert_int_equal(f->calls[i].kind, kind);
    assert_ptr_equal(f->calls[i].route, route);
    assert_int_equal(f->calls[i].id, id);
    assert_int_equal(f->calls[i].now, now);
}

/*
 * Run the route's own timer callback at the fake instant it was armed for:
 * make the event active by hand (its real-time timeout may be far off) and
 * run the loop once.
 */
static void fire_timer(struct fx *f, struct sl_route *route)
{
    assert_true(timer_pending(route));
    fake_now = route->sched.timer_at_us;
    event_active(route->sched.timer, EV_TIMEOUT, 1);
    assert_int_equal(event_base_loop(f->base, EVLOOP_NONBLOCK | EVLOOP_ONCE), 0);
}

/* --- 1. rate ------------------------------------------------------------- */

static void test_rate_spacing(void **state)
{
    struct fx *f = *state;
    struct sl_route *r;

    route_cfg(f, 0, 10, 1, 32);
    r = start(f, 1);
    for (int i = 0; i < 5; i++)
        park(f, r, 0);

    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 1);
    assert_call(f, 0, 'd', r, 0, T0);
    assert_int_equal(r->in_flight, 1);
    assert_armed(r, T0 + 100 * MS);

    /* Kicks before the instant change nothing. */
    sl_dispatcher_kick(r);
    fake_now = T0 + 100 * MS - 1;
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 1);
    assert_armed(r, T0 + 100 * MS);

    for (int i = 1; i < 5; i++) {
        int64_t at = r->sched.timer_at_us;

        assert_int_equal(at, T0 + i * 100 * MS);
        fake_now = at;
        sl_dispatcher_kick(r);
        assert_int_equal(f->n_calls, (size_t)i + 1);
        assert_call(f, (size_t)i, 'd', r, i, at); /* FIFO, one per instant */
        if (i < 4)
            assert_armed(r, at + 100 * MS);
    }
    /* Queue empty: nothing left to wait for. */
    assert_int_equal(sl_queue_depth(&r->queue), 0);
    assert_disarmed(r);
    assert_int_equal(r->in_flight, 5);
    assert_int_equal(r->stats.dispatched, 5);
}

/* --- 2. max_in_flight ---------------------------------------------------- */

static void test_max_in_flight(void **state)
{
    struct fx *f = *state;
    struct sl_route *r;

    route_cfg(f, 0, 1000, 1000, 2);
    r = start(f, 1);
    for (int i = 0; i < 5; i++)
        park(f, r, 0);

    /* Have the timer armed first (a short pause), so the cap must disarm it. */
    assert_true(sl_route_pause(r, T0, 10 * MS, SL_PAUSED_BY_RETRY_AFTER));
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 0);
    assert_armed(r, T0 + 10 * MS);

    fake_now = T0 + 10 * MS;
    sl_dispatcher_kick(r);
    assert_int_equal(dispatched(f, r), 2);
    assert_call(f, 0, 'd', r, 0, fake_now);
    assert_call(f, 1, 'd', r, 1, fake_now);
    assert_int_equal(r->in_flight, 2);
    /* Only a completion frees a slot: no timer. */
    assert_disarmed(r);

    /* The limiter would allow more; the cap alone holds them. */
    fake_now += SEC;
    sl_dispatcher_kick(r);
    assert_int_equal(dispatched(f, r), 2);
    assert_disarmed(r);

    sl_route_flight_end(r);
    assert_int_equal(r->in_flight, 1);
    sl_dispatcher_kick(r);
    assert_int_equal(dispatched(f, r), 3);
    assert_call(f, 2, 'd', r, 2, fake_now);
    assert_int_equal(r->in_flight, 2);
    assert_disarmed(r);
    assert_int_equal(sl_queue_depth(&r->queue), 2);
}

/* --- 3. pause ------------------------------------------------------------ */

static void test_pause(void **state)
{
    struct fx *f = *state;
    struct sl_route *r;

    route_cfg(f, 0, 1000, 1000, 32);
    r = start(f, 1);
    for (int i = 0; i < 3; i++)
        park(f, r, 0);

    assert_true(sl_route_pause(r, T0, 500 * MS, SL_PAUSED_BY_RETRY_AFTER));
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 0);
    assert_armed(r, T0 + 500 * MS);

    assert_int_equal(r->pause_reason, SL_PAUSED_BY_RETRY_AFTER);

    /* A shorter pause changes nothing, its reason included. */
    assert_false(sl_route_pause(r, T0 + 100 * MS, 100 * MS, SL_PAUSED_BY_BACKOFF));
    assert_int_equal(r->pause_reason, SL_PAUSED_BY_RETRY_AFTER);

    /* A later pause wins, with its reason, and moves the timer. */
    fake_now = T0 + 200 * MS;
    assert_true(sl_route_pause(r, fake_now, 500 * MS, SL_PAUSED_BY_BUDGET));
    assert_int_equal(r->pause_reason, SL_PAUSED_BY_BUDGET);
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 0);
    assert_armed(r, T0 + 700 * MS);

    fake_now = T0 + 700 * MS - 1;
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 0);
    assert_armed(r, T0 + 700 * MS);

    /* The timer's own callback, at the pause's end, resumes dispatch. */
    fire_timer(f, r);
    assert_int_equal(fake_now, T0 + 700 * MS);
    assert_int_equal(dispatched(f, r), 3);
    for (int i = 0; i < 3; i++)
        assert_call(f, (size_t)i, 'd', r, i, T0 + 700 * MS);
    assert_disarmed(r);
}

/* --- 4. deadline expiry at the head -------------------------------------- */

static void test_deadline_at_head(void **state)
{
    struct fx *f = *state;
    struct sl_route *r;
    int late, soon, plain, head, behind, last;

    route_cfg(f, 0, 10, 1, 32);
    r = start(f, 1);
    late = park(f, r, T0 - 1);  /* past */
    soon = park(f, r, T0 + 1);  /* not yet */
    plain = park(f, r, 0);      /* none */

    /* The expired head takes no token: the next one still goes at once. */
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 2);
    assert_call(f, 0, 'e', r, late, T0);
    assert_call(f, 1, 'd', r, soon, T0);
    assert_int_equal(r->in_flight, 1);           /* expire is not a call */
    assert_int_equal(r->stats.dispatched, 1);
    assert_int_equal(r->limiter.logs[0].count, 1);
    assert_armed(r, T0 + 100 * MS);              /* one token's spacing */
    assert_int_equal(sl_queue_depth(&r->queue), 1);

    fake_now = T0 + 100 * MS;
    sl_dispatcher_kick(r);
    assert_call(f, 2, 'd', r, plain, fake_now);

    /* An item behind a held head is not the dispatcher's to expire. */
    fake_now = T0 + SEC;
    assert_true(sl_route_pause(r, fake_now, 500 * MS, SL_PAUSED_BY_RETRY_AFTER));
    head = park(f, r, 0);
    behind = park(f, r, fake_now + 10 * MS);
    last = park(f, r, 0);
    fake_now += 20 * MS; /* behind's deadline has passed */
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 3);
    assert_non_null(f->reqs[behind].item.flow); /* still parked */
    assert_int_equal(sl_queue_depth(&r->queue), 3);
    assert_armed(r, T0 + SEC + 500 * MS);

    /* Once it is the head it expires in the same pass, without a token. */
    fake_now = T0 + SEC + 500 * MS;
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 5);
    assert_call(f, 3, 'd', r, head, fake_now);
    assert_call(f, 4, 'e', r, behind, fake_now);
    assert_null(f->reqs[behind].item.flow);
    assert_int_equal(r->limiter.logs[0].count, 3);
    assert_armed(r, fake_now + 100 * MS);
    assert_non_null(f->reqs[last].item.flow);
}

/* --- 5. the yield after a long pass -------------------------------------- */

static void test_batch_yield(void **state)
{
    struct fx *f = *state;
    struct sl_route *r;
    const int n = 2 * SL_DISPATCH_BATCH + 88;

    route_cfg(f, 0, 100000, 100000, 100000);
    r = start(f, 1);
    for (int i = 0; i < n; i++)
        park(f, r, 0);

    sl_dispatcher_kick(r);
    assert_int_equal(dispatched(f, r), SL_DISPATCH_BATCH);
    assert_armed(r, T0); /* a zero timer: continue as soon as the loop has run */

    sl_dispatcher_kick(r); /* the next kick continues where the pass stopped */
    assert_int_equal(dispatched(f, r), 2 * SL_DISPATCH_BATCH);
    assert_armed(r, T0);

    /* The zero timer is due in real time too: one loop turn runs its callback. */
    assert_int_equal(event_base_loop(f->base, EVLOOP_NONBLOCK | EVLOOP_ONCE), 0);
    assert_int_equal(dispatched(f, r), (size_t)n);
    assert_disarmed(r);

    for (int i = 0; i < n; i++)
        assert_call(f, (size_t)i, 'd', r, i, T0);
    assert_int_equal(r->in_flight, (unsigned)n);
}

/* --- 6. re-entrant kicks ------------------------------------------------- */

/* A synchronous failure: the call ends at once and kicks its route. */
static void fail_at_once(struct fx *f, struct sl_route *route, struct req *r)
{
    (void)f;
    (void)r;
    sl_route_flight_end(route);
    sl_dispatcher_kick(route);
}

static void test_reentrant_same_route(void **state)
{
    struct fx *f = *state;
    struct sl_route *r;

    route_cfg(f, 0, 1000, 1000, 1);
    r = start(f, 1);
    for (int i = 0; i < 3; i++)
        park(f, r, 0);
    f->on_dispatch = fail_at_once;
    f->hook_id = 0; /* only the first call fails */

    sl_dispatcher_kick(r);
    /* Not re-entered, yet the freed slot was used within this kick. */
    assert_int_equal(f->max_route_depth[0], 1);
    assert_int_equal(dispatched(f, r), 2);
    assert_call(f, 0, 'd', r, 0, T0);
    assert_call(f, 1, 'd', r, 1, T0);
    assert_int_equal(f->calls[1].depth, 1);
    assert_int_equal(r->in_flight, 1);
    assert_false(r->sched.in_pass);
    assert_false(r->sched.again);
    assert_disarmed(r); /* capped again */

    /* Every call failing at once: all of them go in one kick, never nested. */
    f->hook_id = -1;
    sl_route_flight_end(r);
    park(f, r, 0);
    park(f, r, 0);
    sl_dispatcher_kick(r);
    assert_int_equal(dispatched(f, r), 5);
    assert_int_equal(f->max_route_depth[0], 1);
    assert_int_equal(r->in_flight, 0);
    assert_int_equal(sl_queue_depth(&r->queue), 0);
}

/* Dispatching on route 0 kicks route 1, whose calls kick route 0 back. */
static void kick_other(struct fx *f, struct sl_route *route, struct req *r)
{
    (void)r;
    sl_dispatcher_kick(route == f->other ? f->table.routes[0] : f->other);
}

static void test_reentrant_other_route(void **state)
{
    struct fx *f = *state;
    struct sl_route *a, *b;
    int a0, a1, b0;

    route_cfg(f, 0, 1000, 1000, 32);
    route_cfg(f, 1, 1000, 1000, 32);
    a = start(f, 2);
    b = f->table.routes[1];
    f->other = b;
    a0 = park(f, a, 0);
    a1 = park(f, a, 0);
    b0 = park(f, b, 0);
    f->on_dispatch = kick_other;

    sl_dispatcher_kick(a);
    assert_int_equal(f->n_calls, 3);
    /* b's pass ran at once, nested inside a's first call... */
    assert_call(f, 0, 'd', a, a0, T0);
    assert_int_equal(f->calls[0].depth, 1);
    assert_call(f, 1, 'd', b, b0, T0);
    assert_int_equal(f->calls[1].depth, 2);
    /* ...its kick of a did not re-enter a, whose pass went on. */
    assert_call(f, 2, 'd', a, a1, T0);
    assert_int_equal(f->calls[2].depth, 1);
    assert_int_equal(f->max_route_depth[0], 1);
    assert_int_equal(f->max_route_depth[1], 1);
    assert_false(a->sched.in_pass);
    assert_false(b->sched.in_pass);
    assert_disarmed(a);
    assert_disarmed(b);
}

/* --- 7. freeze and detach ------------------------------------------------ */

static void test_freeze(void **state)
{
    struct fx *f = *state;
    struct sl_route *r;

    route_cfg(f, 0, 10, 1, 32);
    r = start(f, 1);
    for (int i = 0; i < 3; i++)
        park(f, r, 0);
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 1);
    assert_armed(r, T0 + 100 * MS);

    sl_dispatcher_freeze(r);
    assert_disarmed(r);
    fake_now = T0 + SEC;
    sl_dispatcher_kick(r);
    sl_route_flight_end(r); /* a completion kicks too */
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 1);
    assert_disarmed(r);
    assert_int_equal(sl_queue_depth(&r->queue), 2);
}

static void test_detach(void **state)
{
    struct fx *f = *state;
    struct sl_route *r;

    route_cfg(f, 0, 10, 1, 32);
    r = start(f, 1);
    for (int i = 0; i < 3; i++)
        park(f, r, 0);
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 1);
    assert_armed(r, T0 + 100 * MS);

    sl_dispatcher_detach(r);
    assert_null(r->sched.timer);
    assert_int_equal(sl_dispatcher_next(r), 0);
    fake_now = T0 + SEC;
    sl_dispatcher_kick(r);
    sl_route_flight_end(r);
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 1);
    assert_int_equal(sl_dispatcher_next(r), 0);
    assert_int_equal(sl_queue_depth(&r->queue), 2);
    /* Nothing of it is left in the loop. */
    assert_int_equal(event_base_get_num_events(f->base, EVENT_BASE_COUNT_ADDED), 0);
}

/* --- 8. sl_dispatcher_ready agrees with a kick --------------------------- */

/* ready() says `expect` now, and a kick dispatches iff it said true. */
static void ready_agrees(struct fx *f, struct sl_route *r, bool expect)
{
    bool ready = sl_dispatcher_ready(r, fake_now, 1, SL_KEYS_NO_SLOT);
    size_t before = dispatched(f, r);

    assert_int_equal(ready, expect);
    assert_true(sl_queue_depth(&r->queue) > 0);
    sl_dispatcher_kick(r);
    assert_int_equal(dispatched(f, r) > before, ready);
}

static void test_ready(void **state)
{
    struct fx *f = *state;
    struct sl_route *r;

    route_cfg(f, 0, 10, 1, 2);
    r = start(f, 1);
    for (int i = 0; i < 6; i++)
        park(f, r, 0);

    ready_agrees(f, r, true);
    /* Limiter: not before T0 + 100 ms, whatever the clock says later. */
    ready_agrees(f, r, false);
    assert_false(sl_dispatcher_ready(r, T0 + 100 * MS - 1, 1, SL_KEYS_NO_SLOT));
    assert_true(sl_dispatcher_ready(r, T0 + 100 * MS, 1, SL_KEYS_NO_SLOT));

    fake_now = T0 + 100 * MS;
    ready_agrees(f, r, true);
    assert_int_equal(r->in_flight, 2);

    /* In-flight cap: the limiter would allow it. */
    fake_now = T0 + SEC;
    assert_true(sl_limiter_next(&r->limiter, fake_now) <= fake_now);
    ready_agrees(f, r, false);

    /* Pause: a slot is free and the limiter allows it. */
    sl_route_flight_end(r);
    assert_true(sl_route_pause(r, fake_now, 50 * MS, SL_PAUSED_BY_RETRY_AFTER));
    ready_agrees(f, r, false);
    assert_true(sl_dispatcher_ready(r, fake_now + 50 * MS, 1, SL_KEYS_NO_SLOT));

    fake_now += 50 * MS;
    ready_agrees(f, r, true);
    assert_int_equal(r->in_flight, 2);
    assert_int_equal(dispatched(f, r), 3);
}


/* --- 8b. shared limits: decisions from Redis ------------------------------ */

/*
 * A shared limiter whose Redis never comes up (a port nobody listens on;
 * the loop is not run, so it stays "connecting"): every ask is refused.
 */
static struct sl_shlimit *shared_down(struct fx *f)
{
    struct sl_redis_url url;
    struct sl_shlimit_hooks hooks = {sl_dispatcher_shared_answered, NULL};
    struct sl_shlimit *s;

    memset(&url, 0, sizeof(url));
    snprintf(url.host, sizeof(url.host), "127.0.0.1");
    url.port = 1;
    s = sl_shlimit_new(f->base, &url, "t:", &hooks, f);
    assert_non_null(s);
    assert_false(sl_shlimit_up(s));
    return s;
}

static struct sl_route *start_shared(struct fx *f, struct sl_shlimit *s, unsigned max_in_flight)
{
    struct sl_route *r;

    route_cfg(f, 0, 10, 1, max_in_flight);
    f->rcfg[0].window_guard_us = 5 * MS;
    r = start(f, 1);
    sl_dispatcher_share(&f->table, s);
    assert_ptr_equal(r->sched.shared, s);
    return r;
}

/* Redis unreachable: nothing goes (no local fallback) and nothing polls. */
static void test_shared_down_dispatches_nothing(void **state)
{
    struct fx *f = *state;
    struct sl_shlimit *s = shared_down(f);
    struct sl_route *r = start_shared(f, s, 4);
    struct sl_shlimit_stats st;

    for (int i = 0; i < 5; i++)
        park(f, r, 0);
    assert_false(sl_dispatcher_ready(r, fake_now, 1, SL_KEYS_NO_SLOT));
    sl_dispatcher_kick(r);
    assert_int_equal(dispatched(f, r), 0);
    assert_disarmed(r);
    assert_int_equal(r->shared.phase, SL_SHLIMIT_IDLE);
    /* Deadlines still apply: a head past its own leaves without a token. */
    f->reqs[0].item.deadline_us = fake_now + 10 * MS;
    fake_now += 10 * MS;
    sl_dispatcher_kick(r);
    assert_int_equal(count_kind(f, 'e', r), 1);
    assert_int_equal(dispatched(f, r), 0);
    /* The time the backlog waited on Redis is counted. */
    fake_now += SEC;
    sl_shlimit_stats(s, &st);
    assert_false(st.up);
    assert_true(st.blocked_seconds >= 1.0);
    sl_dispatcher_table_fini(&f->table);
    sl_shlimit_free(s);
}

/* An answer kicks the route: grants go in that pass, what is left is dropped. */
static void test_shared_grants_and_turns(void **state)
{
    struct fx *f = *state;
    struct sl_shlimit *s = shared_down(f);
    struct sl_route *r = start_shared(f, s, 4);
    struct sl_shlimit_answer go = {3, 0, 7, 0};
    struct sl_shlimit_answer turn = {1, 100 * MS, 7, 0};
    struct sl_shlimit_stats st;

    for (int i = 0; i < 2; i++)
        park(f, r, 0);
    /* 3 granted, 2 parked: both go at once, the third grant is dropped. */
    sl_shlimit_route_answer(&r->shared, &go, 1, fake_now - 200, fake_now);
    sl_dispatcher_shared_answered(&r->shared, NULL);
    assert_int_equal(dispatched(f, r), 2);
    assert_call(f, 0, 'd', r, 0, fake_now);
    assert_call(f, 1, 'd', r, 1, fake_now);
    assert_int_equal(r->shared.credit, 0);
    sl_shlimit_stats(s, &st);
    assert_int_equal(st.decisions[SL_SHARED_LATE], 1);

    /* One granted and the next turn: one goes, the timer is armed for the turn. */
    park(f, r, 0);
    park(f, r, 0);
    sl_shlimit_route_answer(&r->shared, &turn, 1, fake_now - 200, fake_now);
    sl_dispatcher_shared_answered(&r->shared, NULL);
    assert_int_equal(dispatched(f, r), 3);
    assert_call(f, 2, 'd', r, 2, fake_now);
    assert_armed(r, fake_now + 100 * MS);
    /* At the turn the head asks (refused: Redis is down) and waits disarmed. */
    fake_now += 100 * MS;
    sl_dispatcher_kick(r);
    assert_int_equal(dispatched(f, r), 3);
    assert_disarmed(r);
    assert_int_equal(sl_queue_depth(&r->queue), 1);
    sl_dispatcher_table_fini(&f->table);
    sl_shlimit_free(s);
}

/* --- 9. limit_key: one limiter per key ------------------------------------ */

static void keyed_cfg(struct fx *f, size_t i, double rate, unsigned max_in_flight)
{
    route_cfg(f, i, rate, 1, max_in_flight);
    f->rcfg[i].max_cost = 1;
    f->rcfg[i].max_keys = 1000;
    f->rcfg[i].window_guard_us = 0;
    f->rcfg[i].limit_key.source = SL_KEY_HEADER;
    strcpy(f->rcfg[i].limit_key.name, "X-Key");
}

/* Park an item of key `key` (NULL: the default bucket) in `lane`, pinned as intake does. */
static int park_key(struct fx *f, struct sl_route *route, const char *key, enum sl_lane lane)
{
    uint64_t id = key != NULL ? sl_keys_id(route->keys, key, strlen(key)) : SL_KEYS_DEFAULT_ID;
    struct req *r;
    uint32_t slot;

    assert_true(f->n_reqs < MAX_REQS);
    r = &f->reqs[f->n_reqs];
    r->id = f->n_reqs++;
    assert_int_equal(sl_keys_acquire(route->keys, id, fake_now, &slot), SL_OK);
    assert_int_equal(sl_queue_push(&route->queue, &r->item, lane, key, 1, fake_now, false),
                     SL_OK);
    r->item.key_slot = slot;
    return r->id;
}

static int call_id(const struct fx *f, size_t i)
{
    assert_true(i < f->n_calls);
    return f->calls[i].id;
}

/* Key a has a backlog; key b's request, parked after it, goes at once. */
static void test_keyed_no_key_waits_behind_another(void **state)
{
    struct fx *f = *state;
    struct sl_route *r;

    keyed_cfg(f, 0, 5, 32);
    r = start(f, 1);
    assert_non_null(r->keys);
    for (int i = 0; i < 5; i++)
        park_key(f, r, "a", SL_LANE_NORMAL);
    park_key(f, r, "b", SL_LANE_NORMAL);

    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 2);
    assert_call(f, 0, 'd', r, 0, T0);
    assert_call(f, 1, 'd', r, 5, T0); /* b did not wait behind a's four */
    assert_int_equal(sl_queue_waiting(&r->queue), 1);
    assert_armed(r, T0 + 200 * MS);
    /* a keeps its own pace. */
    for (int i = 1; i < 5; i++) {
        fake_now = r->sched.timer_at_us;
        assert_int_equal(fake_now, T0 + i * 200 * MS);
        sl_dispatcher_kick(r);
        assert_call(f, f->n_calls - 1, 'd', r, i, fake_now);
    }
    assert_int_equal(f->n_calls, 6);
    assert_disarmed(r);
    assert_int_equal(sl_queue_waiting(&r->queue), 0);
    /* The route's own limiter took nothing. */
    assert_int_equal(r->limiter.started, 0);
}

/* Keys with backlogs are served round robin, each at its own rate. */
static void test_keyed_round_robin(void **state)
{
    struct fx *f = *state;
    struct sl_route *r;

    keyed_cfg(f, 0, 10, 32);
    r = start(f, 1);
    for (int i = 0; i < 3; i++) {
        park_key(f, r, "a", SL_LANE_NORMAL); /* ids 0, 3, 6 */
        park_key(f, r, "b", SL_LANE_NORMAL); /* 1, 4, 7 */
        park_key(f, r, "c", SL_LANE_NORMAL); /* 2, 5, 8 */
    }
    sl_dispatcher_kick(r);
    for (int round = 1; round < 3; round++) {
        fake_now = r->sched.timer_at_us;
        assert_int_equal(fake_now, T0 + round * 100 * MS);
        sl_dispatcher_kick(r);
    }
    assert_int_equal(f->n_calls, 9);
    for (size_t i = 0; i < 9; i++) {
        assert_int_equal(call_id(f, i), (int)i);
        assert_int_equal(f->calls[i].now, T0 + (int64_t)(i / 3) * 100 * MS);
    }
    assert_int_equal(r->stats.dispatched, 9);
}

/* The timer is armed for the earliest waiting key; lanes still come first among ready keys. */
static void test_keyed_earliest_and_lanes(void **state)
{
    struct fx *f = *state;
    struct sl_route *r;
    uint32_t slot;
    uint64_t id;

    keyed_cfg(f, 0, 10, 32);
    r = start(f, 1);
    /* a sent 50 ms ago: ready again at T0 + 50 ms. */
    id = sl_keys_id(r->keys, "a", 1);
    assert_int_equal(sl_keys_acquire(r->keys, id, T0 - 50 * MS, &slot), SL_OK);
    assert_int_equal(sl_keys_take(r->keys, slot, T0 - 50 * MS, 1), SL_OK);
    sl_keys_answered(r->keys, slot, T0 - 50 * MS, 1);
    park_key(f, r, "a", SL_LANE_HIGH);   /* 0: waits for its key */
    park_key(f, r, "b", SL_LANE_LOW);    /* 1 */
    park_key(f, r, "c", SL_LANE_NORMAL); /* 2 */
    park_key(f, r, "c", SL_LANE_NORMAL); /* 3 */
    sl_dispatcher_kick(r);
    /* The high lane's head may not go: normal, then low, are served. */
    assert_int_equal(f->n_calls, 2);
    assert_int_equal(call_id(f, 0), 2);
    assert_int_equal(call_id(f, 1), 1);
    assert_armed(r, T0 + 50 * MS);
    fake_now = T0 + 50 * MS;
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 3);
    assert_int_equal(call_id(f, 2), 0);
    assert_armed(r, T0 + 100 * MS);
    fake_now = T0 + 100 * MS;
    sl_dispatcher_kick(r);
    assert_int_equal(call_id(f, 3), 3);
    assert_disarmed(r);
}

/* Requests without the key share the default bucket. */
static void test_keyed_default_bucket(void **state)
{
    struct fx *f = *state;
    struct sl_route *r;

    keyed_cfg(f, 0, 10, 32);
    r = start(f, 1);
    park_key(f, r, NULL, SL_LANE_NORMAL);
    park_key(f, r, NULL, SL_LANE_NORMAL);
    park_key(f, r, "a", SL_LANE_NORMAL);
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 2);
    assert_int_equal(call_id(f, 0), 0);
    assert_int_equal(call_id(f, 1), 2);
    assert_armed(r, T0 + 100 * MS);
    assert_int_equal(sl_keys_live(r->keys), 1);
}

/* The in-flight cap and a pause still hold the whole route. */
static void test_keyed_route_gates(void **state)
{
    struct fx *f = *state;
    struct sl_route *r;

    keyed_cfg(f, 0, 10, 1);
    r = start(f, 1);
    park_key(f, r, "a", SL_LANE_NORMAL);
    park_key(f, r, "b", SL_LANE_NORMAL);
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 1);
    assert_disarmed(r); /* a completion kicks */
    sl_route_flight_end(r);
    assert_true(sl_route_pause(r, fake_now, 30 * MS, SL_PAUSED_BY_RETRY_AFTER));
    sl_dispatcher_kick(r);
    assert_armed(r, T0 + 30 * MS);
    fake_now = T0 + 30 * MS;
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 2);
    assert_call(f, 1, 'd', r, 1, T0 + 30 * MS);
}

/* Many waiting keys: each pass touches a bounded number of flows. */
static void test_keyed_many_keys_bounded(void **state)
{
    struct fx *f = *state;
    struct sl_route *r;
    char key[16];

    keyed_cfg(f, 0, 1, 10000);
    r = start(f, 1);
    for (int i = 0; i < 400; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        park_key(f, r, key, SL_LANE_NORMAL);
        park_key(f, r, key, SL_LANE_NORMAL);
    }
    /* The first pass stops after a batch and goes on from a zero timer. */
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, SL_DISPATCH_BATCH);
    assert_armed(r, T0);
    while (r->sched.timer_at_us == T0)
        fire_timer(f, r);
    /* One head of every key went; their second requests wait in the heap. */
    assert_int_equal(f->n_calls, 400);
    assert_int_equal(sl_queue_waiting(&r->queue), 400);
    assert_armed(r, T0 + SEC);
    /* A kick before then finds nothing due: no work on the waiting keys. */
    fake_now = T0 + SEC - 1;
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 400);
    assert_int_equal(sl_queue_waiting(&r->queue), 400);
}

/* Idle keys are evicted by the sweep timer once their windows have passed. */
static void test_keyed_sweep(void **state)
{
    struct fx *f = *state;
    struct sl_route *r;

    keyed_cfg(f, 0, 10, 32);
    r = start(f, 1);
    park_key(f, r, "a", SL_LANE_NORMAL);
    park_key(f, r, "b", SL_LANE_NORMAL);
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 2);
    assert_non_null(r->sched.sweep);
    assert_false(evtimer_pending(r->sched.sweep, NULL)); /* both keys in flight: none idle */
    for (int i = 0; i < 2; i++)
        sl_keys_answered(r->keys, f->reqs[i].item.key_slot, T0, 1);
    sl_dispatcher_kick(r);
    assert_true(evtimer_pending(r->sched.sweep, NULL));
    assert_int_equal(sl_keys_live(r->keys), 2);
    fake_now = T0 + 100 * MS;
    event_active(r->sched.sweep, EV_TIMEOUT, 1);
    assert_int_equal(event_base_loop(f->base, EVLOOP_NONBLOCK | EVLOOP_ONCE), 0);
    assert_int_equal(sl_keys_live(r->keys), 0);
    assert_int_equal(r->keys->evictions, 2);
    assert_false(evtimer_pending(r->sched.sweep, NULL));
}

/* Dated by answers: a key waits for its answer (no timer), the answer lets it go. */
static void test_keyed_jitter_proof(void **state)
{
    struct fx *f = *state;
    struct sl_route *r;
    uint32_t slot;

    keyed_cfg(f, 0, 1, 32);
    f->rcfg[0].jitter_proof = true;
    r = start(f, 1);
    assert_false(r->keys->compact);
    park_key(f, r, "a", SL_LANE_NORMAL);
    park_key(f, r, "a", SL_LANE_NORMAL);
    park_key(f, r, "b", SL_LANE_NORMAL);
    sl_dispatcher_kick(r);
    /* a's first is unanswered: only its answer can let a's second go. */
    assert_int_equal(f->n_calls, 2);
    assert_int_equal(call_id(f, 0), 0);
    assert_int_equal(call_id(f, 1), 2);
    assert_int_equal(sl_queue_waiting(&r->queue), 1);
    assert_disarmed(r);
    /* The answer (what request.c does): date it, bring the key's flows back, kick. */
    fake_now = T0 + 50 * MS;
    slot = f->reqs[0].item.key_slot;
    sl_keys_answered(r->keys, slot, fake_now, 1);
    sl_queue_unblock_key(&r->queue, "a");
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 2);
    assert_armed(r, T0 + 50 * MS + SEC);
    fake_now = T0 + 50 * MS + SEC;
    sl_dispatcher_kick(r);
    assert_int_equal(f->n_calls, 3);
    assert_call(f, 2, 'd', r, 1, fake_now);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rate_spacing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_at_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_yield, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reentrant_same_route, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reentrant_other_route, setup, teardown),
        cmocka_unit_test_setup_teardown(test_freeze, setup, teardown),
        cmocka_unit_test_setup_teardown(test_detach, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_down_dispatches_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_grants_and_turns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keyed_no_key_waits_behind_another, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keyed_round_robin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keyed_earliest_and_lanes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keyed_default_bucket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keyed_route_gates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keyed_many_keys_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keyed_sweep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keyed_jitter_proof, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
