/*
 * reload.h - apply a re-read config file to the running proxy (SIGHUP).
 *
 * Limits, quotas, bursts, routes, upstreams and timeouts change in place and
 * no parked request is lost:
 *  - a route that keeps its name keeps its parked requests (in order), its
 *    in-flight requests, its counters, its pause and its limiter history
 *    (the new limits apply to the old dispatch instants, so a reload never
 *    lets a burst through);
 *  - a removed route's parked requests move to the route that now matches
 *    their path, or are answered 404 no_route when none does; its in-flight
 *    requests finish normally (the route is kept, retired, until they have);
 *  - listen and admin_listen need a restart: a change is logged and ignored.
 * An invalid file changes nothing; its errors are logged with FILE:LINE.
 */
#ifndef SL_RELOAD_H
#define SL_RELOAD_H

struct sl_proxy;

/* Re-read p->cfg->path and apply it. Returns SL_OK, or SL_ERR (nothing changed). */
int sl_reload(struct sl_proxy *p);

/* Free retired routes whose in-flight requests have all finished (all with `force`). */
void sl_reload_reap(struct sl_proxy *p, int force);

#endif
