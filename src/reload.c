/*
 * reload.c - apply a re-read config to the running routes without losing a
 * parked request. Everything that can fail (parsing, building the new route
 * table and its timers) happens before the first change (the caller builds
 * the table); after that point the swap cannot fail.
 */
#include "reload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "config.h"
#include "dispatcher.h"
#include "log.h"
#include "metrics.h"
#include "request.h"
#include "route.h"
#include "sluice.h"

/* Log every line the config loader wrote; a reload has no terminal. */
static void log_errors(char *text)
{
    char *save = NULL;

    for (char *line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char q[512];

        sl_log_error("reload refused", "error=%s", sl_log_quote(line, q, sizeof(q)));
    }
}

static void log_restart_key(const char *key, void *arg)
{
    (void)arg;
    sl_log_warn("key changed; restart sluice to apply it", "key=%s", key);
}

struct sl_config *sl_reload_load(const struct sl_config *old)
{
    char *text = NULL;
    size_t len = 0;
    FILE *err = open_memstream(&text, &len);
    struct sl_config *cfg;

    if (err == NULL)
        return NULL;
    cfg = sl_config_load(old->path, err);
    fclose(err);
    if (cfg == NULL && text != NULL)
        log_errors(text);
    free(text);
    if (cfg != NULL)
        sl_config_keep_restart_keys(cfg, old, log_restart_key, NULL);
    return cfg;
}

/* Free a removed route; its totals stay in the unrouted block. */
static void free_removed(struct sl_retired *retired, struct sl_route *old)
{
    if (retired->keep != NULL)
        sl_route_stats_add(retired->keep, &old->stats);
    sl_route_free(old);
}

/* Keep a route removed by a reload until its calls under way have ended. */
static void retire(struct sl_retired *retired, struct sl_route *old)
{
    struct sl_route **v;

    sl_dispatcher_detach(old);
    old->retired = true;
    if (old->in_flight == 0) {
        free_removed(retired, old);
        return;
    }
    /* Calls under way still point here; the array grows by one, rarely. */
    v = realloc(retired->v, (retired->n + 1) * sizeof(*v));
    if (v == NULL) {
        sl_log_error("cannot keep a retired route; leaking it", "route=%s", old->cfg.name);
        return;
    }
    retired->v = v;
    retired->v[retired->n++] = old;
}

void sl_reload_reap(struct sl_retired *retired, bool force)
{
    size_t kept = 0;

    for (size_t i = 0; i < retired->n; i++) {
        if (force || retired->v[i]->in_flight == 0)
            free_removed(retired, retired->v[i]);
        else
            retired->v[kept++] = retired->v[i];
    }
    retired->n = kept;
    if (kept == 0) {
        free(retired->v);
        retired->v = NULL;
    }
}

void sl_reload_swap(struct sl_route_table *cur, struct sl_route_table *next,
                    struct sl_retired *retired, struct sl_requests *q)
{
    struct sl_route_table old = *cur;

    sl_reload_reap(retired, false);
    /* Same name: the new route takes over. Parked requests move before any
     * removed route's, so that theirs queue behind them. */
    for (size_t i = 0; i < old.n; i++) {
        struct sl_route *route = sl_route_find(next, old.routes[i]->cfg.name);

        if (route != NULL) {
            sl_route_carry_over(route, old.routes[i], sl_clock_now());
            sl_requests_move_route(q, old.routes[i], route, next);
        }
    }
    for (size_t i = 0; i < old.n; i++) {
        struct sl_route *o = old.routes[i];

        if (sl_route_find(next, o->cfg.name) != NULL) {
            sl_dispatcher_detach(o);
            sl_route_free(o);
        } else {
            sl_requests_move_route(q, o, NULL, next);
            retire(retired, o);
        }
    }
    sl_route_table_release(&old);
    *cur = *next;
    memset(next, 0, sizeof(*next));
}
