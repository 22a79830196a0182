/*
 * dispatcher.c - per-route release of parked requests at the limit.
 *
 * The timer is armed for the exact instant the limiter (or a pause) names,
 * so a route with a backlog dispatches on schedule without polling; a route
 * blocked only by max_in_flight waits for a completion to kick it.
 */
#include "dispatcher.h"

#include <event2/event.h>

#include "clock.h"
#include "config.h"
#include "limiter.h"
#include "queue.h"
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

bool sl_dispatcher_ready(const struct sl_route *r, int64_t now, uint32_t units)
{
    return !r->sched.frozen && r->sched.timer != NULL && r->in_flight < r->cfg.max_in_flight &&
           r->paused_until_us <= now && sl_limiter_next_units(&r->limiter, now, units) <= now;
}

static uint32_t units_of(const struct sl_queue_item *it)
{
    return it->units > 0 ? it->units : 1;
}

/*
 * The head may go now? Otherwise arm for when it may (or disarm when only a
 * completion can free it) and return false.
 */
static bool head_may_go(struct sl_route *r, int64_t now, uint32_t units)
{
    int64_t next;

    if (r->in_flight >= r->cfg.max_in_flight) {
        disarm(r); /* a completion kicks us */
        return false;
    }
    if (r->paused_until_us > now) {
        arm(r, r->paused_until_us, now);
        return false;
    }
    next = sl_limiter_next_units(&r->limiter, now, units);
    if (next >= SL_LIMITER_UNANSWERED) {
        disarm(r); /* waiting for an answer to date a dispatch: its completion kicks us */
        return false;
    }
    if (next > now) {
        arm(r, next, now);
        return false;
    }
    return true;
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
        struct sl_queue_item *it = sl_queue_peek(&r->queue);

        /* A callback may have frozen or detached the route. */
        if (s->frozen || s->timer == NULL)
            return false;
        if (it == NULL) {
            disarm(r);
            return false;
        }
        /* Past its deadline: it leaves without a token. */
        if (it->deadline_us != 0 && now >= it->deadline_us) {
            s->ops->expire(r, it, s->ops_arg);
            continue;
        }
        if (!head_may_go(r, now, units_of(it)))
            return false;
        (void)sl_queue_pop(&r->queue);
        /* head_may_go saw next <= now, so the take cannot fail. */
        (void)sl_limiter_take_units(&r->limiter, now, units_of(it));
        sl_route_stats_dispatch(&r->stats, now);
        r->stats.units += units_of(it);
        sl_route_flight_begin(r);
        s->ops->dispatch(r, it, now, s->ops_arg);
    }
    return true;
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
    /* Dispatch before client I/O (see upstream.h on priorities). */
    return event_priority_set(s->timer, 0) == 0 ? SL_OK : SL_ERR;
}

void sl_dispatcher_detach(struct sl_route *r)
{
    struct sl_route_sched *s = &r->sched;

    if (s->timer != NULL)
        event_free(s->timer);
    s->timer = NULL;
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

int64_t sl_dispatcher_next(const struct sl_route *r)
{
    return r->sched.timer_at_us;
}
