/*
 * proxy.h - the running instance: one event_base and everything on it.
 *
 * The proxy owns the config, the route table, the frontend, the upstream
 * client, the admin listener and every live request. It handles signals:
 * SIGHUP reloads, SIGTERM/SIGINT drain (a second one stops at once).
 *
 * Ownership: sl_proxy_new() takes the config; sl_proxy_free() frees all.
 */
#ifndef SL_PROXY_H
#define SL_PROXY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "config.h"
#include "metrics.h"
#include "queue.h"
#include "route.h"

struct event;
struct event_base;
struct sl_admin;
struct sl_frontend;
struct sl_request;
struct sl_upstream;

TAILQ_HEAD(sl_request_list, sl_request);

struct sl_proxy {
    struct event_base *base;
    struct sl_config *cfg;              /* owned */
    struct sl_route_table routes;
    struct sl_route **retired;          /* removed by a reload, calls still under way; owned */
    size_t n_retired;
    struct sl_route_stats unrouted;     /* requests that matched no route */
    struct sl_queue_totals totals;
    struct sl_frontend *frontend;
    struct sl_upstream *upstream;
    struct sl_admin *admin;
    struct sl_request_list requests;    /* every live request */
    size_t n_requests;
    struct event *signals[4];
    struct event *drain_timer;          /* drain_timeout, then the exit check */
    struct event *watchdog;             /* systemd WATCHDOG=1, when asked for */
    bool draining;
    bool drain_expired;
    uint64_t reloads;
    double start_time;                  /* wall clock seconds */
    int exit_code;
};

/* Build the instance on a new event_base; takes cfg. NULL on failure (cfg freed). */
struct sl_proxy *sl_proxy_new(struct sl_config *cfg);

/* Bind listeners (SL_ERR if one cannot be bound), then run until stopped. Returns the exit code. */
int sl_proxy_run(struct sl_proxy *p);

void sl_proxy_free(struct sl_proxy *p);

/* Start a graceful drain (as on SIGTERM); `now` stops without draining. */
void sl_proxy_stop(struct sl_proxy *p, bool now);

/* Re-read the config file; the old config stays on error. Returns SL_OK or SL_ERR. */
int sl_proxy_reload(struct sl_proxy *p);

/* Accounting after a request left the queue (re-evaluates backpressure). */
void sl_proxy_queue_changed(struct sl_proxy *p);

/* Called when the last request finished; finishes a drain. */
void sl_proxy_check_drained(struct sl_proxy *p);

#endif
