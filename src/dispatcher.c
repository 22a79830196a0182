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
#include "limiter.h"
#include "request.h"
#include "route.h"
#include "sluice.h"

/* Dispatches per pass before yielding to the loop (fairness between routes). */
#define DISPATCH_BATCH 256

/* Re-entrancy guard: a kick during a pass of the same route asks for one more pass. */
static struct sl_route *dispatching;
static int kick_again;

static void arm(struct sl_route *r, int64_t at, int64_t now)
{
    if (r->timer == NULL) /* retired by a reload: nothing left to dispatch */
        return;
    struct timeval tv = sl_clock_timeval(at - now);

    if (r->timer_at_us == at && evtimer_pending(r->timer, NULL))
        return;
    /* evtimer_add re-schedules a pending timer; it fails only on bad input. */
    if (evtimer_add(r->timer, &tv) == 0)
        r->timer_at_us = at;
}

static void disarm(struct sl_route *r)
{
    if (r->timer != NULL && r->timer_at_us != 0) {
        evtimer_del(r->timer);
        r->timer_at_us = 0;
    }
}

/* Is the head request past its deadline? Then it leaves without a token. */
static int expire_head(struct sl_request *req, int64_t now)
{
    if (req->deadline_us == 0 || now < req->deadline_us)
        return 0;
    sl_request_expire(req);
    return 1;
}

bool sl_dispatcher_ready(const struct sl_route *r, int64_t now)
{
    return r->in_flight < r->cfg.max_in_flight && r->paused_until_us <= now &&
           sl_limiter_next(&r->limiter, now) <= now;
}

/* One pass: returns 1 if it stopped only because of the batch bound. */
static int dispatch_pass(struct sl_route *r)
{
    if (r->frozen || r->retired) {
        disarm(r);
        return 0;
    }
    for (int i = 0; i < DISPATCH_BATCH; i++) {
        int64_t now = sl_clock_now();
        struct sl_queue_item *it = sl_queue_peek(&r->queue);
        struct sl_request *req;
        int64_t next;

        if (it == NULL) {
            disarm(r);
            return 0;
        }
        req = sl_request_of_item(it);
        if (expire_head(req, now))
            continue;
        if (r->in_flight >= r->cfg.max_in_flight) {
            disarm(r); /* a completion kicks us */
            return 0;
        }
        if (r->paused_until_us > now) {
            arm(r, r->paused_until_us, now);
            return 0;
        }
        next = sl_limiter_next(&r->limiter, now);
        if (next > now) {
            arm(r, next, now);
            return 0;
        }
        (void)sl_queue_pop(&r->queue);
        /* next <= now, so the take cannot fail. */
        (void)sl_limiter_take(&r->limiter, now);
        r->stats.dispatched++;
        sl_request_dispatch(req, now);
    }
    return 1;
}

void sl_dispatcher_kick(struct sl_route *r)
{
    struct sl_route *outer = dispatching;
    int outer_again = kick_again;
    int more;

    if (dispatching == r) {
        kick_again = 1;
        return;
    }
    dispatching = r;
    do {
        kick_again = 0;
        more = dispatch_pass(r);
    } while (kick_again && !more);
    dispatching = outer;
    kick_again = outer_again;
    if (more)
        arm(r, sl_clock_now(), sl_clock_now());
}

static void dispatcher_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct sl_route *r = arg;

    (void)fd;
    (void)what;
    r->timer_at_us = 0;
    sl_dispatcher_kick(r);
}

int sl_dispatcher_attach(struct sl_route *r, struct event_base *base)
{
    r->timer = evtimer_new(base, dispatcher_on_timer, r);
    r->timer_at_us = 0;
    if (r->timer == NULL)
        return SL_ENOMEM;
    /* Dispatch before client I/O (see upstream.h on priorities). */
    return event_priority_set(r->timer, 0) == 0 ? SL_OK : SL_ERR;
}

void sl_dispatcher_detach(struct sl_route *r)
{
    if (r->timer != NULL)
        event_free(r->timer);
    r->timer = NULL;
    r->timer_at_us = 0;
}

int64_t sl_dispatcher_next(const struct sl_route *r)
{
    return r->timer_at_us;
}
