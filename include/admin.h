/*
 * admin.h - the admin listener: GET /health, /metrics, /status, and the
 * status page at GET / (src/status_page.html, embedded at build time).
 *
 * Served by libevent's evhttp on its own address: the admin side sees a
 * handful of requests from trusted scrapers, so evhttp's limits (see
 * frontend.h) do not matter here. Handlers only read; they never block the
 * loop. What they read comes from the instance through one callback that
 * fills a struct sl_admin_view per request, so the admin knows nothing of
 * the instance's own structure. With a token in the view, every request
 * needs "Authorization: Bearer TOKEN" (401 otherwise); the page, which a
 * browser opens by its address, may carry it as "/?token=TOKEN" instead.
 *
 * Ownership: the admin owns its evhttp. A view borrows everything it points
 * at for the duration of one request's handler.
 */
#ifndef SL_ADMIN_H
#define SL_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct sl_admin;
struct sl_jobs;
struct sl_shlimit;
struct sl_queue_totals;
struct sl_route;
struct sl_batch_stats;
struct sl_route_stats;

/* What the instance shows, as of now. */
struct sl_admin_view {
    const char *token;                   /* "" = no token needed */
    struct sl_route *const *routes;      /* in config order */
    size_t n_routes;
    struct sl_route *const *retired;     /* removed by a reload, calls still under way */
    size_t n_retired;
    const struct sl_route_stats *unrouted;
    const struct sl_batch_stats *batches;
    const struct sl_queue_totals *totals;
    size_t connections;
    uint64_t connections_accepted;
    uint64_t write_errors;               /* responses the frontend could not deliver */
    bool draining;
    uint64_t reloads;
    double start_time;                   /* wall clock seconds */
    double last_reload;                  /* wall clock seconds of the last SIGHUP; 0 = none */
    bool reload_refused;                 /* ...and its file was refused (old config in force) */
    const struct sl_jobs *jobs;          /* async jobs */
    const struct sl_shlimit *shared;     /* [redis] shared_limit; NULL = limits in memory */
};

typedef void (*sl_admin_view_fn)(struct sl_admin_view *view, void *arg);

/* Listen on `addr` ("host:port"). NULL (logged) if it cannot. */
struct sl_admin *sl_admin_new(struct event_base *base, const char *addr, sl_admin_view_fn view,
                              void *arg);

void sl_admin_free(struct sl_admin *a);

#endif
