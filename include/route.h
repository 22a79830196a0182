/*
 * route.h - the route table: one struct sl_route per [route NAME] section,
 * longest-prefix matching, and each route's runtime state (queue, limiter,
 * counters, in-flight count, pause).
 *
 * Matching is a plain string prefix on the request path (without query),
 * as nginx's prefix locations: "/api" matches "/api", "/api/x" and "/apix".
 *
 * Ownership: the table owns its routes; a route owns its queue, limiter and
 * config copy. `timer` is created and freed by the dispatcher, which must
 * free it before sl_route_table_fini().
 */
#ifndef SL_ROUTE_H
#define SL_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "limiter.h"
#include "metrics.h"
#include "queue.h"

struct event;

struct sl_route {
    struct sl_route_config cfg;    /* copy; a reload replaces it in place */
    struct sl_queue queue;
    struct sl_limiter limiter;
    struct sl_route_stats stats;
    unsigned in_flight;
    int64_t paused_until_us;       /* monotonic; 0 = not paused */
    int64_t timer_at_us;           /* when the dispatch timer fires; 0 = not armed */
    struct event *timer;           /* the dispatcher's */
    bool retired;                  /* removed by a reload; only its calls under way remain */
    bool frozen;                   /* stopping now: nothing more is dispatched */
    void *owner;                   /* back pointer for callbacks (the proxy) */
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

/* The route whose match is the longest prefix of `path`, or NULL. */
struct sl_route *sl_route_match(const struct sl_route_table *t, const char *path);

/* The route named `name`, or NULL. */
struct sl_route *sl_route_find(const struct sl_route_table *t, const char *name);

#endif
