/*
 * dispatcher.h - releases parked requests to the upstream, per route, no
 * faster than the limiter and max_in_flight allow.
 *
 * One timer per route, armed for the exact next eligible instant (never
 * polling). sl_dispatcher_kick() re-evaluates a route now; it is safe to
 * call from anywhere, including from inside a dispatch (it then just asks
 * the running dispatch to go round once more).
 *
 * Ownership: the dispatcher creates and frees each route's timer.
 */
#ifndef SL_DISPATCHER_H
#define SL_DISPATCHER_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct sl_route;

/* Create the route's timer. Returns SL_OK or SL_ENOMEM. */
int sl_dispatcher_attach(struct sl_route *r, struct event_base *base);

/* Free the route's timer. */
void sl_dispatcher_detach(struct sl_route *r);

/* Dispatch what the route may dispatch now; arm its timer for the rest. */
void sl_dispatcher_kick(struct sl_route *r);

/*
 * Would the head of the route's queue be dispatched at `now`? The same test
 * sl_dispatcher_kick() applies (in-flight cap, pause, limiter).
 */
bool sl_dispatcher_ready(const struct sl_route *r, int64_t now);

/* When the route will next dispatch (0 = not scheduled), for /status. */
int64_t sl_dispatcher_next(const struct sl_route *r);

#endif
