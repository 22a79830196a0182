/*
 * reload.c - apply a re-read config to the running proxy without losing a
 * parked request. Everything that can fail (parsing, building the new route
 * table and its timers) happens before the first change; after that point
 * the swap cannot fail.
 */
#include "reload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dispatcher.h"
#include "frontend.h"
#include "log.h"
#include "proxy.h"
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

static struct sl_config *load(const char *path)
{
    char *text = NULL;
    size_t len = 0;
    FILE *err = open_memstream(&text, &len);
    struct sl_config *cfg;

    if (err == NULL)
        return NULL;
    cfg = sl_config_load(path, err);
    fclose(err);
    if (cfg == NULL && text != NULL)
        log_errors(text);
    free(text);
    return cfg;
}

/* Sockets are bound once: keep the running addresses and say so. */
static void keep_restart_keys(const struct sl_config *old, struct sl_config *cfg)
{
    bool listen_changed = old->n_listen != cfg->n_listen;

    for (size_t i = 0; !listen_changed && i < cfg->n_listen; i++)
        listen_changed = strcmp(old->listen[i], cfg->listen[i]) != 0;
    if (listen_changed)
        sl_log_warn("listen changed; restart sluice to apply it", NULL);
    if (strcmp(old->admin_listen, cfg->admin_listen) != 0)
        sl_log_warn("admin_listen changed; restart sluice to apply it", NULL);
    memcpy(cfg->listen, old->listen, sizeof(cfg->listen));
    cfg->n_listen = old->n_listen;
    memcpy(cfg->admin_listen, old->admin_listen, sizeof(cfg->admin_listen));
}

/* Path of a request without its query, for matching (as at intake). */
static struct sl_route *rematch(const struct sl_route_table *t, const struct sl_request *r)
{
    char path[SL_CONFIG_PATH_LEN + 1];
    size_t len = strcspn(r->msg->target, "?#");

    if (len > SL_CONFIG_PATH_LEN)
        len = SL_CONFIG_PATH_LEN;
    memcpy(path, r->msg->target, len);
    path[len] = '\0';
    return sl_route_match(t, path);
}

/* Move every parked request of `from` to the tail of its lane in `to`, in order. */
static void move_parked(struct sl_route *from, struct sl_route *to)
{
    struct sl_queue_item *it;

    while ((it = sl_queue_pop(&from->queue)) != NULL) {
        struct sl_request *r = sl_request_of_item(it);
        int64_t since = it->enqueued_us;

        /* Forced and into an existing lane: pop just returned the capacity. */
        if (sl_queue_push(&to->queue, it, it->lane, it->key, it->bytes, since, true) != SL_OK) {
            r->state = SL_REQ_NEW;
            sl_request_finish(r, SL_OUTCOME_INTERNAL_ERROR, NULL, "out of memory during reload");
            continue;
        }
        it->enqueued_us = since;
        r->route = to;
    }
}

/* In-flight requests of `from` now count against `to`. */
static void move_in_flight(struct sl_proxy *p, struct sl_route *from, struct sl_route *to)
{
    struct sl_request *r;

    TAILQ_FOREACH(r, &p->requests, link) {
        if (r->route == from && r->state == SL_REQ_IN_FLIGHT) {
            r->route = to;
            from->in_flight--;
            to->in_flight++;
        }
    }
}

static void carry_over(struct sl_proxy *p, struct sl_route *old, struct sl_route *route)
{
    sl_limiter_inherit(&route->limiter, &old->limiter);
    route->stats = old->stats;
    route->paused_until_us = old->paused_until_us;
    move_parked(old, route);
    move_in_flight(p, old, route);
}

/* A removed route: its parked requests go where their path now leads. */
static void retire(struct sl_proxy *p, struct sl_route *old, const struct sl_route_table *t)
{
    struct sl_queue_item *it;

    while ((it = sl_queue_pop(&old->queue)) != NULL) {
        struct sl_request *r = sl_request_of_item(it);
        struct sl_route *to = rematch(t, r);

        if (to == NULL ||
            sl_queue_push(&to->queue, it, it->lane, it->key, it->bytes, it->enqueued_us,
                          true) != SL_OK) {
            r->state = SL_REQ_NEW;
            sl_request_finish(r, SL_OUTCOME_NO_ROUTE, NULL,
                              "the route of this request was removed by a reload");
            continue;
        }
        r->route = to;
    }
    sl_dispatcher_detach(old);
    old->retired = true;
    if (old->in_flight == 0) {
        sl_route_free(old);
        return;
    }
    /* Calls under way still point here; the array grows by one, rarely. */
    struct sl_route **v = realloc(p->retired, (p->n_retired + 1) * sizeof(*v));
    if (v == NULL) {
        sl_log_error("cannot keep a retired route; leaking it", "route=%s", old->cfg.name);
        return;
    }
    p->retired = v;
    p->retired[p->n_retired++] = old;
}

void sl_reload_reap(struct sl_proxy *p, int force)
{
    size_t kept = 0;

    for (size_t i = 0; i < p->n_retired; i++) {
        if (force || p->retired[i]->in_flight == 0)
            sl_route_free(p->retired[i]);
        else
            p->retired[kept++] = p->retired[i];
    }
    p->n_retired = kept;
    if (kept == 0) {
        free(p->retired);
        p->retired = NULL;
    }
}

static int build_routes(struct sl_proxy *p, const struct sl_config *cfg, struct sl_route_table *t)
{
    if (sl_route_table_init(t, cfg, &p->totals) != SL_OK)
        return SL_ERR;
    for (size_t i = 0; i < t->n; i++) {
        t->routes[i]->owner = p;
        if (sl_dispatcher_attach(t->routes[i], p->base) != SL_OK) {
            for (size_t j = 0; j <= i; j++)
                sl_dispatcher_detach(t->routes[j]);
            sl_route_table_fini(t);
            return SL_ERR;
        }
    }
    return SL_OK;
}

/* Hand every request of the old table to the new one; free or retire the old routes. */
static void swap_routes(struct sl_proxy *p, struct sl_route_table *t)
{
    struct sl_route_table old = p->routes;
    struct sl_route *matched[SL_CONFIG_MAX_ROUTES] = {NULL};

    for (size_t i = 0; i < old.n; i++) {
        struct sl_route *route = sl_route_find(t, old.routes[i]->cfg.name);

        if (route != NULL) {
            carry_over(p, old.routes[i], route);
            matched[i] = route;
        }
    }
    for (size_t i = 0; i < old.n; i++) {
        if (matched[i] != NULL) {
            sl_dispatcher_detach(old.routes[i]);
            sl_route_free(old.routes[i]);
        } else {
            retire(p, old.routes[i], t);
        }
    }
    sl_route_table_release(&old);
    p->routes = *t;
}

int sl_reload(struct sl_proxy *p)
{
    struct sl_config *cfg = load(p->cfg->path);
    struct sl_route_table t;

    if (cfg == NULL)
        return SL_ERR;
    keep_restart_keys(p->cfg, cfg);
    if (build_routes(p, cfg, &t) != SL_OK) {
        sl_log_error("reload refused: cannot build the routes", "file=%s", cfg->path);
        sl_config_free(cfg);
        return SL_ERR;
    }
    sl_reload_reap(p, 0);
    swap_routes(p, &t);
    p->totals.max_depth = cfg->queue_max_depth;
    p->totals.max_bytes = cfg->queue_max_bytes;
    sl_log_set_level(cfg->log_level);
    sl_frontend_configure(p->frontend, cfg);
    sl_config_free(p->cfg);
    p->cfg = cfg;
    p->reloads++;
    sl_proxy_queue_changed(p);
    for (size_t i = 0; i < p->routes.n; i++)
        sl_dispatcher_kick(p->routes.routes[i]);
    sl_log_info("reloaded", "file=%s routes=%zu", cfg->path, p->routes.n);
    return SL_OK;
}
