/*
 * proxy.c - the running instance: wiring, signals, drain and shutdown.
 */
#include "proxy.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#ifdef SLUICE_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "admin.h"
#include "clock.h"
#include "dispatcher.h"
#include "frontend.h"
#include "log.h"
#include "reload.h"
#include "request.h"
#include "sluice.h"
#include "upstream.h"

/* After the last request, give responses this long to reach their clients. */
#define PROXY_FLUSH_SEC 2

static void notify(const char *state)
{
#ifdef SLUICE_HAVE_SYSTEMD
    /* Not under systemd (no NOTIFY_SOCKET) is not an error. */
    (void)sd_notify(0, state);
#else
    (void)state;
#endif
}

/* STATUS= for `systemctl status`: what happened last and what is parked. */
static void notify_status(const struct sl_proxy *p, const char *what)
{
    char s[256];

    snprintf(s, sizeof(s), "STATUS=%s; %zu routes, %zu parked, %zu requests live", what,
             p->routes.n, p->totals.depth, p->n_requests);
    notify(s);
}

/* WATCHDOG=1 at half the interval systemd asked for (WatchdogSec=). */
static void proxy_on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    notify("WATCHDOG=1");
}

static int proxy_watchdog(struct sl_proxy *p)
{
#ifdef SLUICE_HAVE_SYSTEMD
    uint64_t usec = 0;
    struct timeval tv;

    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
        return SL_OK;
    p->watchdog = event_new(p->base, -1, EV_PERSIST, proxy_on_watchdog, p);
    if (p->watchdog == NULL)
        return SL_ERR;
    /* Highest priority: a busy loop must not starve the keep-alive. */
    (void)event_priority_set(p->watchdog, 0);
    tv = sl_clock_timeval((int64_t)(usec / 2));
    sl_log_info("systemd watchdog enabled", "interval_ms=%llu", (unsigned long long)(usec / 1000));
    return event_add(p->watchdog, &tv) == 0 ? SL_OK : SL_ERR;
#else
    (void)p;
    (void)proxy_on_watchdog;
    return SL_OK;
#endif
}

/* --- frontend callbacks -------------------------------------------------- */

static void proxy_on_request(struct sl_conn *conn, struct sl_http_msg *msg, void *arg)
{
    sl_request_intake(arg, conn, msg);
}

static void proxy_on_gone(struct sl_conn *conn, void *owner, void *arg)
{
    (void)conn;
    (void)arg;
    sl_request_client_gone(owner);
}

static void proxy_on_refused(struct sl_conn *conn, enum sl_outcome o, const char *detail,
                             void *arg)
{
    struct sl_proxy *p = arg;

    sl_request_refuse(p, conn, &p->unrouted, o, detail, true);
}

static void proxy_on_idle(void *arg)
{
    sl_proxy_check_drained(arg);
}

static const struct sl_frontend_callbacks proxy_frontend_cb = {
    .request = proxy_on_request,
    .gone = proxy_on_gone,
    .refused = proxy_on_refused,
    .idle = proxy_on_idle,
};

/* --- drain --------------------------------------------------------------- */

/*
 * Frozen routes dispatch nothing: finishing an in-flight request kicks its
 * route, which would otherwise send (and maybe free) parked requests while
 * finish_all() walks the list - and send requests whose clients are then
 * told they were not processed.
 */
static void freeze_routes(struct sl_proxy *p)
{
    for (size_t i = 0; i < p->routes.n; i++)
        p->routes.routes[i]->frozen = true;
}

/* Finish every request in `state` (or every request when state < 0) as draining. */
static void finish_all(struct sl_proxy *p, int state)
{
    struct sl_request *r, *next;

    for (r = TAILQ_FIRST(&p->requests); r != NULL; r = next) {
        next = TAILQ_NEXT(r, link);
        if (state < 0 || (int)r->state == state)
            sl_request_finish(r, SL_OUTCOME_DRAINING, NULL,
                              "sluice is shutting down and the drain time is over");
    }
}

static void proxy_on_drain_timer(evutil_socket_t fd, short what, void *arg)
{
    struct sl_proxy *p = arg;

    (void)fd;
    (void)what;
    if (p->n_requests == 0) {
        /* The flush grace is over: stop even if a client is slow to read. */
        event_base_loopexit(p->base, NULL);
        return;
    }
    sl_log_info("drain time over", "parked=%zu", p->totals.depth);
    p->drain_expired = true;
    finish_all(p, SL_REQ_PARKED);
    sl_proxy_check_drained(p);
}

void sl_proxy_check_drained(struct sl_proxy *p)
{
    struct timeval tv = {PROXY_FLUSH_SEC, 0};

    if (!p->draining || p->n_requests != 0)
        return;
    sl_frontend_close_idle(p->frontend);
    if (sl_frontend_connections(p->frontend) == 0) {
        event_base_loopexit(p->base, NULL);
        return;
    }
    if (!p->drain_expired || !evtimer_pending(p->drain_timer, NULL)) {
        p->drain_expired = true;
        evtimer_add(p->drain_timer, &tv);
    }
}

void sl_proxy_stop(struct sl_proxy *p, bool now)
{
    struct timeval tv;

    if (!p->draining) {
        p->draining = true;
        notify("STOPPING=1");
        notify_status(p, "draining");
        sl_log_info("draining", "parked=%zu drain_timeout_ms=%lld", p->totals.depth,
                    (long long)(p->cfg->drain_timeout_us / 1000));
        sl_frontend_close_listeners(p->frontend);
        tv = sl_clock_timeval(p->cfg->drain_timeout_us);
        evtimer_add(p->drain_timer, &tv);
    }
    if (now) {
        sl_log_info("stopping now", NULL);
        p->drain_expired = true;
        freeze_routes(p);
        finish_all(p, -1);
    }
    sl_proxy_check_drained(p);
}

static void proxy_on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct sl_proxy *p = arg;

    (void)what;
    if (sig == SIGHUP) {
        (void)sl_proxy_reload(p);
        return;
    }
    /* A second SIGTERM/SIGINT means "now". */
    sl_proxy_stop(p, p->draining);
}

int sl_proxy_reload(struct sl_proxy *p)
{
    int rc;

    notify("RELOADING=1\nSTATUS=reloading");
    rc = sl_reload(p);
    notify_status(p, rc == SL_OK ? "reloaded" : "reload refused, old config in force");
    notify("READY=1");
    return rc;
}

void sl_proxy_queue_changed(struct sl_proxy *p)
{
    const struct sl_queue_totals *t = &p->totals;

    /* Resume accepting below 90% so that accept does not flap at the cap. */
    if (t->depth < t->max_depth - t->max_depth / 10 && t->bytes < t->max_bytes - t->max_bytes / 10)
        sl_frontend_resume(p->frontend, SL_PAUSE_QUEUE);
}

/* --- life ---------------------------------------------------------------- */

static int proxy_signals(struct sl_proxy *p)
{
    static const int sigs[] = {SIGHUP, SIGTERM, SIGINT};

    for (size_t i = 0; i < SL_ARRAY_LEN(sigs); i++) {
        p->signals[i] = evsignal_new(p->base, sigs[i], proxy_on_signal, p);
        if (p->signals[i] == NULL || evsignal_add(p->signals[i], NULL) != 0)
            return SL_ERR;
    }
    return SL_OK;
}

static unsigned total_in_flight(const struct sl_config *cfg)
{
    unsigned n = 0;

    for (size_t i = 0; i < cfg->n_routes; i++)
        n += cfg->routes[i].max_in_flight;
    return n;
}

static int proxy_routes(struct sl_proxy *p)
{
    if (sl_route_table_init(&p->routes, p->cfg, &p->totals) != SL_OK)
        return SL_ERR;
    for (size_t i = 0; i < p->routes.n; i++) {
        p->routes.routes[i]->owner = p;
        if (sl_dispatcher_attach(p->routes.routes[i], p->base) != SL_OK)
            return SL_ERR;
    }
    return SL_OK;
}

struct sl_proxy *sl_proxy_new(struct sl_config *cfg)
{
    struct sl_proxy *p = calloc(1, sizeof(*p));
    struct event_config *ec = event_config_new();

    if (p == NULL || ec == NULL)
        goto fail;
    p->cfg = cfg;
    TAILQ_INIT(&p->requests);
    sl_log_set_level(cfg->log_level);
    /* timerfd: epoll's millisecond timeouts would cost rate at high limits. */
    event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
    p->base = event_base_new_with_config(ec);
    event_config_free(ec);
    ec = NULL;
    /* Priority 0: dispatch timers and upstream I/O; 1 (default): clients. */
    if (p->base == NULL || event_base_priority_init(p->base, 2) != 0)
        goto fail;
    p->totals.max_depth = cfg->queue_max_depth;
    p->totals.max_bytes = cfg->queue_max_bytes;
    p->start_time = (double)sl_clock_wall() / 1e6;
    if (proxy_routes(p) != SL_OK)
        goto fail;
    p->drain_timer = evtimer_new(p->base, proxy_on_drain_timer, p);
    p->frontend = sl_frontend_new(p->base, cfg, &proxy_frontend_cb, p);
    p->upstream = sl_upstream_new(p->base, total_in_flight(cfg) + 16);
    if (p->drain_timer == NULL || p->frontend == NULL || p->upstream == NULL ||
        proxy_signals(p) != SL_OK)
        goto fail;
    return p;
fail:
    if (ec != NULL)
        event_config_free(ec);
    if (p == NULL)
        sl_config_free(cfg);
    sl_proxy_free(p);
    return NULL;
}

int sl_proxy_run(struct sl_proxy *p)
{
    if (sl_frontend_listen(p->frontend) != SL_OK)
        return 2;
    if (p->cfg->admin_listen[0] != '\0') {
        p->admin = sl_admin_new(p);
        if (p->admin == NULL)
            return 2;
    }
    if (proxy_watchdog(p) != SL_OK)
        return 2;
    notify("READY=1");
    notify_status(p, "listening");
    sl_log_info("started", "version=%s routes=%zu", SLUICE_VERSION, p->routes.n);
    if (event_base_dispatch(p->base) < 0)
        return 2;
    sl_log_info("stopped", NULL);
    return p->exit_code;
}

void sl_proxy_free(struct sl_proxy *p)
{
    if (p == NULL)
        return;
    /*
     * We are stopping already: a late SIGTERM/SIGINT (a supervisor that
     * repeats itself) must not turn a clean exit into a death by signal once
     * libevent has put the default handlers back.
     */
    for (size_t i = 0; i < SL_ARRAY_LEN(p->signals); i++)
        if (p->signals[i] != NULL)
            event_free(p->signals[i]);
    memset(p->signals, 0, sizeof(p->signals));
    (void)signal(SIGTERM, SIG_IGN);
    (void)signal(SIGINT, SIG_IGN);
    (void)signal(SIGHUP, SIG_IGN);
    /* Requests first: they cancel upstream calls and answer their clients. */
    if (p->upstream != NULL && p->frontend != NULL) {
        freeze_routes(p);
        finish_all(p, -1);
    }
    sl_admin_free(p->admin);
    sl_frontend_free(p->frontend);
    for (size_t i = 0; i < p->routes.n; i++)
        sl_dispatcher_detach(p->routes.routes[i]);
    sl_route_table_fini(&p->routes);
    sl_reload_reap(p, 1);
    if (p->watchdog != NULL)
        event_free(p->watchdog);
    sl_upstream_free(p->upstream);
    if (p->drain_timer != NULL)
        event_free(p->drain_timer);
    if (p->base != NULL)
        event_base_free(p->base);
    sl_config_free(p->cfg);
    free(p);
}
