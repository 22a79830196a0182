/*
 * route.h - the route table: one struct sl_route per [route NAME] section,
 * longest-prefix matching, and each route's runtime state (queue, limiter,
 * counters, in-flight count, pause).
 *
 * Matching is a plain string prefix on the request path (without query),
 * as nginx's prefix locations: "/api" matches "/api", "/api/x" and "/apix".
 *
 * Ownership: the table owns its routes; a route owns its queue, limiter,
 * keys table (with limit_key) and config copy. `sched.timer` is created and freed by the dispatcher, which
 * must free it before sl_route_table_fini().
 */
#ifndef SL_ROUTE_H
#define SL_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "keys.h"
#include "limiter.h"
#include "metrics.h"
#include "queue.h"
#include "shlimit.h"

struct event;
struct sl_dispatch_ops;
struct sl_retry_policy;

/*
 * The limit the upstream announces in its answers (RateLimit-Policy...),
 * against what the route's limits (per key with limit_key) allow in the
 * same window. Learned, reported, never applied: sluice never raises (nor
 * lowers) a configured limit on the upstream's word.
 */
struct sl_route_budget {
    bool known;                    /* an answer announced a usable limit */
    double n;                      /* announced: n per window */
    int64_t window_us;
    double allows;                 /* what the route's limits allow in that window */
    bool above;                    /* allows > n: the configured limits are too high */
};

/* The dispatcher's per-route state (dispatcher.h); nothing else writes it. */
struct sl_route_sched {
    struct event *timer;
    int64_t timer_at_us;           /* when the timer fires; 0 = not armed */
    const struct sl_dispatch_ops *ops;
    void *ops_arg;
    bool in_pass;                  /* a pass of this route is running */
    bool again;                    /* ...and was kicked meanwhile: go round once more */
    bool frozen;                   /* stopping now: nothing more is dispatched */
    struct sl_shlimit *shared;     /* [redis] shared_limit: decisions in Redis (borrowed); NULL = memory */
    struct event *sweep;           /* keyed routes: evicts idle keys whose windows passed */
};

/*
 * in_flight, paused_until_us and pause_reason change only through the functions below;
 * cfg, queue, limiter and stats belong to whoever the comments name.
 */
struct sl_route {
    struct sl_route_config cfg;    /* copy; a reload replaces it in place */
    struct sl_queue queue;
    struct sl_limiter limiter;     /* taken by the dispatcher, dated by the request */
    struct sl_shlimit_route shared; /* with sched.shared: the limits are decided in Redis instead */
    struct sl_keys *keys;          /* limit_key: the limits per key instead (limiter unused) */
    struct sl_route_stats stats;
    unsigned in_flight;
    int64_t paused_until_us;       /* monotonic; 0 = not paused */
    struct sl_route_budget budget; /* changes only through sl_route_learn_budget() */
    enum sl_pause_reason pause_reason; /* of the pause that set paused_until_us */
    struct sl_route_sched sched;
    bool retired;                  /* removed by a reload; only its calls under way remain */
};

struct sl_route_table {
    struct sl_route **routes;      /* owned, in config order */
    struct sl_route **by_prefix;   /* same routes, longest match first (owned array) */
    size_t n;
};

/*
 * Build a table from cfg's routes, every queue sharing `totals`.
 * Returns SL_OK, SL_ERR (a limit the limiter refuses) or SL_ENOMEM; on
 * failure the table holds nothing.
 */
int sl_route_table_init(struct sl_route_table *t, const struct sl_config *cfg,
                        struct sl_queue_totals *totals);

void sl_route_table_fini(struct sl_route_table *t);

/* Forget the routes without freeing them: the caller now owns each one. */
void sl_route_table_release(struct sl_route_table *t);

/* Free one route taken out of a table (NULL is fine). */
void sl_route_free(struct sl_route *r);

/*
 * The route for a request: among the routes whose `host` takes the request's
 * Host (NULL: none), the longest match prefix of `path`; failing that, the
 * same among the routes for any host. NULL if none matches.
 */
struct sl_route *sl_route_match(const struct sl_route_table *t, const char *host,
                                const char *path);

/* The same for a request target ("/path?query"): matched on its path, not its query. */
struct sl_route *sl_route_match_target(const struct sl_route_table *t, const char *host,
                                       const char *target);

/* The route named `name`, or NULL. */
struct sl_route *sl_route_find(const struct sl_route_table *t, const char *name);

/* A call of this route started / ended (max_in_flight is counted here). */
void sl_route_flight_begin(struct sl_route *r);
void sl_route_flight_end(struct sl_route *r);

/* A call of `from` now counts against `to` (a reload moved it). */
void sl_route_flight_move(struct sl_route *from, struct sl_route *to);

/*
 * Hold every request of the route until now + pause_us, because of `why`; a
 * later pause wins (with its reason), a shorter one changes nothing. Returns
 * true if the pause was extended (counted in stats.pauses and logged).
 */
bool sl_route_pause(struct sl_route *r, int64_t now, int64_t pause_us, enum sl_pause_reason why);

/*
 * An answer announced these limits (retry.h). Keeps the first one the
 * route's limits exceed, else the first; logs a warning when the route
 * starts to exceed an announced limit and a note when it stops, once per
 * change. Returns true if what is kept changed.
 */
bool sl_route_learn_budget(struct sl_route *r, const struct sl_retry_policy *p, size_t n);

/*
 * `to` replaces `from` (same name, new config): it takes over the limiter's
 * history (so a reload never lets a burst through), the counters and the
 * pause. With limit_key on both, `to` takes over `from`'s keys table,
 * reconfigured (keys.h), so that every slot held by a request stays valid;
 * when limit_key comes or goes, the new limits start after the old ones'
 * last dispatch has left their windows. Parked and in-flight requests are
 * their owner's to move.
 */
void sl_route_carry_over(struct sl_route *to, struct sl_route *from, int64_t now);

#endif
