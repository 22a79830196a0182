/*
 * dispatcher.c - per-route release of parked requests at the limit.
 *
 * The timer is armed for the exact instant the limiter (or a pause) names,
 * so a route with a backlog dispatches on schedule without polling; a route
 * blocked only by max_in_flight waits for a completion to kick it.
 *
 * With limit_key each key has its own limiter: a head whose key may not go
 * yet sends its flow to the queue's waiting heap (sl_queue_block) and the
 * pass goes on with the next flow, so no key waits behind another's
 * backlog; the timer is armed for the earliest waiting flow. Idle keys are
 * evicted by a second timer, a bounded number per event.
 *
 * With [redis] shared_limit the route's limits are decided in Redis
 * instead (shlimit.h): the head goes on a grant in hand, or the route asks
 * and waits for the reply, or sleeps until its next turn.
 */
#include "dispatcher.h"

#include <stddef.h>

#include <event2/event.h>

#include "clock.h"
#include "config.h"
#include "keys.h"
#include "limiter.h"
#include "queue.h"
#include "shlimit.h"
#include "sluice.h"

static void arm(struct sl_route *r, int64_t at, int64_t now)
{
    struct sl_route_sched *s = &r->sched;
    struct timeval tv;

    if (s->timer == NULL) /* detached (retired by a reload): nothing left to dispatch */
        return;
    if (s->timer_at_us == at && evtimer_pending(s->timer, NULL))
        return;
    tv = sl_clock_timeval(at - now);
    /* evtimer_add re-schedules a pending timer; it fails only on bad input. */
    if (evtimer_add(s->timer, &tv) == 0)
        s->timer_at_us = at;
}

static void disarm(struct sl_route *r)
{
    struct sl_route_sched *s = &r->sched;

    if (s->timer != NULL && s->timer_at_us != 0) {
        evtimer_del(s->timer);
        s->timer_at_us = 0;
    }
}

/* Evictions per sweep event, and how long a sweep waits to gather more. */
#define SWEEP_BATCH 1024
#define SWEEP_SLACK_US (20 * SL_USEC_PER_MSEC)

/* The limit that applies to a dispatch of `units` from key slot `slot`. */
static int64_t limit_next(const struct sl_route *r, uint32_t slot, int64_t now, uint32_t units)
{
    if (r->keys != NULL && slot != SL_KEYS_NO_SLOT)
        return sl_keys_next(r->keys, slot, now, units);
    return sl_limiter_next_units(&r->limiter, now, units);
}

bool sl_dispatcher_ready(const struct sl_route *r, int64_t now, uint32_t units, uint32_t slot)
{
    /* Shared limits are decided in Redis: never "at once" from here. */
    if (r->sched.shared != NULL)
        return false;
    return !r->sched.frozen && r->sched.timer != NULL && r->in_flight < r->cfg.max_in_flight &&
           r->paused_until_us <= now && limit_next(r, slot, now, units) <= now;
}

static uint32_t units_of(const struct sl_queue_item *it)
{
    return it->units > 0 ? it->units : 1;
}

/* Wait for `next` (a limit's instant): arm the timer, or only an answer frees it. */
static void wait_until(struct sl_route *r, int64_t next, int64_t now)
{
    if (next >= SL_LIMITER_UNANSWERED)
        disarm(r); /* waiting for an answer to date a dispatch: its completion kicks us */
    else
        arm(r, next, now);
}

/*
 * May the route dispatch at all now (in-flight cap, pause)? Otherwise arm
 * for when it may (or disarm when only a completion can free it).
 */
static bool route_may_go(struct sl_route *r, int64_t now)
{
    if (r->in_flight >= r->cfg.max_in_flight) {
        disarm(r); /* a completion kicks us */
        return false;
    }
    if (r->paused_until_us > now) {
        arm(r, r->paused_until_us, now);
        return false;
    }
    return true;
}

/* Nothing ready: wait for the earliest waiting flow, if any. */
static void wait_for_flows(struct sl_route *r, int64_t now)
{
    int64_t at = sl_queue_wake_at(&r->queue);

    if (at == 0)
        disarm(r);
    else
        wait_until(r, at, now);
}

enum head { HEAD_GO, HEAD_NEXT, HEAD_STOP };

/*
 * The head's limit: take it (HEAD_GO), or let its flow wait for its key and
 * look at the next head (HEAD_NEXT), or wait with the whole route (HEAD_STOP).
 */
static enum head head_limit(struct sl_route *r, struct sl_queue_item *it, int64_t now)
{
    uint32_t units = units_of(it);
    int64_t next;

    if (r->keys == NULL || it->key_slot == SL_KEYS_NO_SLOT) {
        next = sl_limiter_next_units(&r->limiter, now, units);
        if (next > now) {
            wait_until(r, next, now);
            return HEAD_STOP;
        }
        /* next <= now, so the take cannot fail. */
        (void)sl_limiter_take_units(&r->limiter, now, units);
        return HEAD_GO;
    }
    next = sl_keys_next(r->keys, it->key_slot, now, units);
    if (next <= now) {
        (void)sl_keys_take(r->keys, it->key_slot, now, units);
        return HEAD_GO;
    }
    if (sl_queue_block(&r->queue, it, next) == SL_OK)
        return HEAD_NEXT;
    wait_until(r, next, now); /* no memory for the heap: wait for this head */
    return HEAD_STOP;
}

/* Grants the shared limiter dropped as too late go to its metrics. */
static void report_late(struct sl_route *r)
{
    if (r->shared.late != 0 && r->sched.shared != NULL)
        sl_shlimit_count_late(r->sched.shared, r->shared.late);
    r->shared.late = 0;
}

/* Dispatches to ask Redis for: what the in-flight cap and the backlog can use now. */
static uint32_t ask_size(const struct sl_route *r)
{
    size_t k = r->cfg.max_in_flight - r->in_flight; /* > 0: route_may_go() passed */
    size_t depth = sl_queue_depth(&r->queue);

    if (depth < k)
        k = depth;
    if (k > SL_SHLIMIT_MAX_ASK)
        k = SL_SHLIMIT_MAX_ASK;
    return k > 0 ? (uint32_t)k : 1;
}

/* After an out-of-memory ask, try again this much later. */
#define SHARED_RETRY_US (10 * SL_USEC_PER_MSEC)

/*
 * Shared limits (shlimit.h): go on a grant in hand, sleep until the
 * route's next turn, or ask Redis; its reply kicks the route
 * (sl_dispatcher_shared_answered). While Redis is down nothing is asked
 * and nothing dispatched: the state hook kicks the route when it is back.
 */
static enum head head_shared(struct sl_route *r, struct sl_queue_item *it, int64_t now)
{
    struct sl_shlimit_limits lim;
    int64_t at = 0;
    uint32_t units = units_of(it);
    enum sl_shlimit_step step;
    int rc;

    /* More than a window holds can never go (the config refuses such costs). */
    if (units > sl_limiter_max_units(&r->limiter)) {
        disarm(r);
        return HEAD_STOP;
    }
    step = sl_shlimit_route_step(&r->shared, now, units, &at);
    report_late(r);
    switch (step) {
    case SL_SHLIMIT_STEP_GO:
        return HEAD_GO;
    case SL_SHLIMIT_STEP_SLEEP:
        arm(r, at, now);
        return HEAD_STOP;
    case SL_SHLIMIT_STEP_BUSY:
        disarm(r);
        return HEAD_STOP;
    case SL_SHLIMIT_STEP_ASK:
    default:
        break;
    }
    sl_shlimit_limits_from(&lim, &r->limiter);
    rc = sl_shlimit_ask(r->sched.shared, &r->shared, r->cfg.name, &lim, ask_size(r), units);
    if (rc == SL_ENOMEM)
        arm(r, now + SHARED_RETRY_US, now);
    else
        disarm(r); /* the reply, or Redis coming back, kicks the route */
    return HEAD_STOP;
}

/* One pass: returns true if it stopped only because of the batch bound. */
static bool dispatch_pass(struct sl_route *r)
{
    const struct sl_route_sched *s = &r->sched;

    if (s->frozen || s->timer == NULL) {
        disarm(r);
        return false;
    }
    for (int i = 0; i < SL_DISPATCH_BATCH; i++) {
        int64_t now = sl_clock_now();
        struct sl_queue_item *it;
        enum head h;

        if (r->keys != NULL)
            (void)sl_queue_wake(&r->queue, now, SL_DISPATCH_BATCH);
        it = sl_queue_peek(&r->queue);
        /* A callback may have frozen or detached the route. */
        if (s->frozen || s->timer == NULL)
            return false;
        if (it == NULL) {
            wait_for_flows(r, now);
            return false;
        }
        /* Past its deadline: it leaves without a token. */
        if (it->deadline_us != 0 && now >= it->deadline_us) {
            s->ops->expire(r, it, s->ops_arg);
            continue;
        }
        if (!route_may_go(r, now))
            return false;
        h = s->shared != NULL ? head_shared(r, it, now) : head_limit(r, it, now);
        if (h == HEAD_NEXT)
            continue;
        if (h == HEAD_STOP)
            return false;
        (void)sl_queue_pop(&r->queue);
        sl_route_stats_dispatch(&r->stats, now);
        r->stats.units += units_of(it);
        sl_route_flight_begin(r);
        s->ops->dispatch(r, it, now, s->ops_arg);
    }
    return true;
}

/* Keyed routes: a sweep for when the oldest idle key's windows pass. */
static void arm_sweep(struct sl_route *r, int64_t now)
{
    struct sl_route_sched *s = &r->sched;
    struct timeval tv;
    int64_t at;

    if (r->keys == NULL || s->sweep == NULL || evtimer_pending(s->sweep, NULL))
        return;
    at = sl_keys_sweep_at(r->keys);
    if (at == 0)
        return;
    /* A little later than due, so that one event evicts many keys. */
    tv = sl_clock_timeval((at > now ? at - now : 0) + SWEEP_SLACK_US);
    (void)evtimer_add(s->sweep, &tv);
}

static void dispatcher_on_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct sl_route *r = arg;
    int64_t now = sl_clock_now();

    (void)fd;
    (void)what;
    if (r->keys == NULL)
        return;
    (void)sl_keys_sweep(r->keys, now, SWEEP_BATCH);
    arm_sweep(r, now);
}

void sl_dispatcher_sweep(struct sl_route *r)
{
    if (r->keys != NULL)
        arm_sweep(r, sl_clock_now());
}

void sl_dispatcher_kick(struct sl_route *r)
{
    struct sl_route_sched *s = &r->sched;
    bool more;

    if (s->in_pass) {
        s->again = true;
        return;
    }
    s->in_pass = true;
    do {
        s->again = false;
        more = dispatch_pass(r);
    } while (s->again && !more);
    s->in_pass = false;
    if (more)
        arm(r, sl_clock_now(), sl_clock_now());
    if (r->keys != NULL)
        arm_sweep(r, sl_clock_now());
}

void sl_dispatcher_freeze(struct sl_route *r)
{
    r->sched.frozen = true;
    disarm(r);
}

static void dispatcher_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct sl_route *r = arg;

    (void)fd;
    (void)what;
    r->sched.timer_at_us = 0;
    sl_dispatcher_kick(r);
}

int sl_dispatcher_attach(struct sl_route *r, struct event_base *base,
                         const struct sl_dispatch_ops *ops, void *arg)
{
    struct sl_route_sched *s = &r->sched;

    s->ops = ops;
    s->ops_arg = arg;
    s->timer_at_us = 0;
    s->timer = evtimer_new(base, dispatcher_on_timer, r);
    if (s->timer == NULL)
        return SL_ENOMEM;
    if (r->keys != NULL && (s->sweep = evtimer_new(base, dispatcher_on_sweep, r)) == NULL)
        return SL_ENOMEM;
    /* Dispatch before client I/O (see upstream.h on priorities). */
    return event_priority_set(s->timer, 0) == 0 ? SL_OK : SL_ERR;
}

void sl_dispatcher_detach(struct sl_route *r)
{
    struct sl_route_sched *s = &r->sched;

    if (s->timer != NULL)
        event_free(s->timer);
    if (s->sweep != NULL)
        event_free(s->sweep);
    s->timer = NULL;
    s->sweep = NULL;
    s->timer_at_us = 0;
}

int sl_dispatcher_table_init(struct sl_route_table *t, const struct sl_config *cfg,
                             struct sl_queue_totals *totals, struct event_base *base,
                             const struct sl_dispatch_ops *ops, void *arg)
{
    int rc = sl_route_table_init(t, cfg, totals);

    for (size_t i = 0; rc == SL_OK && i < t->n; i++)
        rc = sl_dispatcher_attach(t->routes[i], base, ops, arg);
    if (rc != SL_OK)
        sl_dispatcher_table_fini(t);
    return rc;
}

void sl_dispatcher_table_fini(struct sl_route_table *t)
{
    for (size_t i = 0; t->routes != NULL && i < t->n; i++)
        sl_dispatcher_detach(t->routes[i]);
    sl_route_table_fini(t);
}

void sl_dispatcher_share(struct sl_route_table *t, struct sl_shlimit *shared)
{
    for (size_t i = 0; i < t->n; i++)
        t->routes[i]->sched.shared = shared;
}

void sl_dispatcher_shared_answered(struct sl_shlimit_route *st, void *arg)
{
    struct sl_route *r = (struct sl_route *)(void *)((char *)st - offsetof(struct sl_route, shared));

    (void)arg;
    sl_dispatcher_kick(r);
    /* Grants are for this pass: their recorded instant ages from now on. */
    sl_shlimit_route_settle(&r->shared);
    report_late(r);
}

void sl_dispatcher_shared_state(struct sl_route_table *t, bool up)
{
    for (size_t i = 0; i < t->n; i++) {
        struct sl_route *r = t->routes[i];

        if (r->sched.shared == NULL)
            continue;
        if (up)
            sl_dispatcher_kick(r);
        else
            sl_shlimit_route_reset(&r->shared);
    }
}

int64_t sl_dispatcher_next(const struct sl_route *r)
{
    return r->sched.timer_at_us;
}
