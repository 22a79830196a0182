/*
 * dispatcher.h - releases parked requests to the upstream, per route, no
 * faster than the limiter, the route's pause and max_in_flight allow.
 *
 * The dispatcher decides; the owner of the parked things acts. It knows
 * queue items, never what contains them: when the head may go, it pops it,
 * takes the limiter's token, counts the call in flight and hands the item to
 * ops->dispatch; when the head's deadline has passed, it hands it to
 * ops->expire, which must take it out of the queue (no token is used).
 *
 * One timer per route, armed for the exact next eligible instant (never
 * polling). With limit_key the head of each key's flow is judged by its
 * key's limits (keys.h): a key that may not go yet waits aside in the
 * queue, so another key's head goes meanwhile; a second timer evicts idle
 * keys once their windows have passed. sl_dispatcher_kick() re-evaluates a route now; it may be called
 * from anywhere, also from inside ops->dispatch or ops->expire (the running
 * pass of that route then goes round once more). After DISPATCH_BATCH
 * dispatches a pass yields to the loop and continues from a zero timer.
 *
 * Ownership: the dispatcher creates and frees each route's timer
 * (route->sched), and builds and frees whole route tables with timers.
 */
#ifndef SL_DISPATCHER_H
#define SL_DISPATCHER_H

#include <stdbool.h>
#include <stdint.h>

#include "route.h"

struct event_base;
struct sl_config;
struct sl_queue_item;
struct sl_queue_totals;
struct sl_shlimit;
struct sl_shlimit_route;

struct sl_dispatch_ops {
    /* Popped, token taken, counted in flight: send it (may finish it at once). */
    void (*dispatch)(struct sl_route *route, struct sl_queue_item *item, int64_t now, void *arg);
    /* Still parked at the head and past its deadline: take it out of the queue. */
    void (*expire)(struct sl_route *route, struct sl_queue_item *item, void *arg);
};

/* Dispatches per pass before yielding to the loop (fairness between routes). */
#define SL_DISPATCH_BATCH 256

/* Create the route's timer at dispatch priority. Returns SL_OK, SL_ERR or SL_ENOMEM. */
int sl_dispatcher_attach(struct sl_route *r, struct event_base *base,
                         const struct sl_dispatch_ops *ops, void *arg);

/* Free the route's timer: nothing more is dispatched from it. */
void sl_dispatcher_detach(struct sl_route *r);

/*
 * Build a route table from cfg (every queue sharing `totals`) with a timer
 * per route. Returns SL_OK, or SL_ERR/SL_ENOMEM with nothing built.
 */
int sl_dispatcher_table_init(struct sl_route_table *t, const struct sl_config *cfg,
                             struct sl_queue_totals *totals, struct event_base *base,
                             const struct sl_dispatch_ops *ops, void *arg);

/* Detach every route of the table and free it. */
void sl_dispatcher_table_fini(struct sl_route_table *t);

/* Dispatch what the route may dispatch now; arm its timer for the rest. */
void sl_dispatcher_kick(struct sl_route *r);

/* Stop for good: nothing more is dispatched from the route (stopping now). */
void sl_dispatcher_freeze(struct sl_route *r);

/*
 * Would a head of `units` from key slot `slot` (SL_KEYS_NO_SLOT: the route's
 * limiter) be dispatched at `now`? The same test sl_dispatcher_kick()
 * applies (frozen or detached, in-flight cap, pause, limiter).
 */
bool sl_dispatcher_ready(const struct sl_route *r, int64_t now, uint32_t units, uint32_t slot);

/* Keyed routes: make sure a sweep is due for the idle keys (after a key went idle). */
void sl_dispatcher_sweep(struct sl_route *r);

/*
 * [redis] shared_limit: every route of `t` takes its decisions from
 * `shared` (borrowed; NULL: its own memory limiter). A shared route asks
 * Redis for up to as many dispatches as its backlog and in-flight cap can
 * use, sleeps until its next turn, and dispatches nothing while Redis is
 * down.
 */
void sl_dispatcher_share(struct sl_route_table *t, struct sl_shlimit *shared);

/* The shared limiter's hooks (shlimit.h): a reply came for a route's state. */
void sl_dispatcher_shared_answered(struct sl_shlimit_route *st, void *arg);

/* Redis came up (kick every shared route) or went down (drop their grants). */
void sl_dispatcher_shared_state(struct sl_route_table *t, bool up);

/* When the route will next dispatch (0 = not scheduled), for /status. */
int64_t sl_dispatcher_next(const struct sl_route *r);

#endif
