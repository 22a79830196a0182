/*
 * reload.h - apply a re-read config file to the running routes (SIGHUP).
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
 *  - keys that need a restart (listen, admin_listen: the option table says
 *    which) are logged when changed and keep their running values.
 * An invalid file changes nothing; its errors are logged with FILE:LINE.
 *
 * Ownership: the caller owns the route tables and the retired list; a
 * retired route is freed by sl_reload_reap() once its calls have ended.
 */
#ifndef SL_RELOAD_H
#define SL_RELOAD_H

#include <stdbool.h>
#include <stddef.h>

struct sl_config;
struct sl_requests;
struct sl_route;
struct sl_route_stats;
struct sl_route_table;

/* Routes removed by a reload whose calls are still under way. */
struct sl_retired {
    struct sl_route **v;           /* owned, with each route */
    size_t n;
    struct sl_route_stats *keep;   /* borrowed: where a freed route's totals go (or NULL) */
};

/*
 * Read `old->path` again. Returns the new config with the restart keys of
 * `old` kept, or NULL (errors logged, nothing changed).
 */
struct sl_config *sl_reload_load(const struct sl_config *old);

/*
 * Make `next` (built with sl_dispatcher_table_init) the running table `cur`:
 * requests and route state move over as described above; old routes are
 * freed or retired. Cannot fail. `next` is empty afterwards.
 */
void sl_reload_swap(struct sl_route_table *cur, struct sl_route_table *next,
                    struct sl_retired *retired, struct sl_requests *q);

/* Free retired routes whose calls have all ended (all with `force`), keeping their totals. */
void sl_reload_reap(struct sl_retired *retired, bool force);

#endif
