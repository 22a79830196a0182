/*
 * proxy.c - the running instance: wiring, signals, drain and shutdown.
 */
#include "proxy.h"

#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#ifdef SLUICE_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "admin.h"
#include "batch.h"
#include "clock.h"
#include "config.h"
#include "dispatcher.h"
#include "frontend.h"
#include "jobs.h"
#include "log.h"
#include "queue.h"
#include "reload.h"
#include "request.h"
#include "route.h"
#include "shlimit.h"
#include "sluice.h"
#include "upstream.h"

/* After the last request, give responses this long to reach their clients. */
#define PROXY_FLUSH_SEC 2
#define DRAIN_DETAIL "sluice is shutting down and the drain time is over"

struct sl_proxy {
    struct event_base *base;
    struct sl_config *cfg;              /* owned */
    struct sl_route_table routes;       /* owned, with their timers */
    struct sl_retired retired;          /* removed by a reload, calls still under way */
    struct sl_queue_totals totals;
    struct sl_frontend *frontend;       /* owned */
    struct sl_upstream *upstream;       /* owned */
    struct sl_admin *admin;             /* owned */
    struct sl_jobs *jobs;               /* owned: async jobs */
    struct sl_shlimit *shared;          /* owned: [redis] shared_limit; NULL = limits in memory */
    struct sl_requests requests;        /* every live request */
    struct sl_batch_stats batches;      /* POST /_sluice/batch, counted */
    struct event *signals[4];
    struct event *drain_timer;          /* drain_timeout, then the exit check */
    struct event *watchdog;             /* systemd WATCHDOG=1, when asked for */
    bool draining;
    bool drain_expired;
    uint64_t reloads;
    double start_time;                  /* wall clock seconds */
    double last_reload;                 /* wall clock seconds; 0 = none */
    bool reload_refused;                /* the last reload kept the old config */
    int exit_code;
};

static void proxy_check_drained(struct sl_proxy *p);

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
             p->routes.n, p->totals.depth, p->requests.n_live);
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
    struct sl_proxy *p = arg;

    /* The jobs first: a batch with Prefer: respond-async is one job. */
    if (sl_jobs_take(p->jobs, sl_conn_sink(conn), msg, sl_conn_peer(conn)))
        return;
    if (sl_batch_is_endpoint(msg))
        sl_batch_submit(&p->requests, &p->batches, sl_conn_sink(conn), msg, sl_conn_peer(conn));
    else
        sl_request_submit(&p->requests, sl_conn_sink(conn), msg, sl_conn_peer(conn));
}

/* The owner is whoever adopted the connection's sink: a request or a batch. */
static void proxy_on_gone(struct sl_conn *conn, void *owner, void *arg)
{
    struct sl_sink_owner *o = owner;

    (void)conn;
    (void)arg;
    o->gone(o);
}

/* A FIN while the owner is served: the owner decides whether it still answers. */
static bool proxy_on_eof(struct sl_conn *conn, void *owner, void *arg)
{
    struct sl_sink_owner *o = owner;

    (void)conn;
    (void)arg;
    if (o->eof != NULL)
        return o->eof(o);
    o->gone(o);
    return false;
}

static void proxy_on_refused(struct sl_conn *conn, enum sl_outcome o, const char *detail,
                             void *arg)
{
    struct sl_proxy *p = arg;

    sl_request_refuse(&p->requests, sl_conn_sink(conn), sl_conn_peer(conn), o, detail, true);
}

static void proxy_on_idle(void *arg)
{
    proxy_check_drained(arg);
}

static const struct sl_frontend_callbacks proxy_frontend_cb = {
    .request = proxy_on_request,
    .gone = proxy_on_gone,
    .eof = proxy_on_eof,
    .refused = proxy_on_refused,
    .idle = proxy_on_idle,
};

/* --- request hooks ------------------------------------------------------- */

static void proxy_on_queue_full(void *arg)
{
    struct sl_proxy *p = arg;

    sl_frontend_pause(p->frontend, SL_PAUSE_QUEUE);
}

/* A request left the queue: re-evaluate backpressure. */
static void proxy_on_queue_changed(void *arg)
{
    struct sl_proxy *p = arg;
    const struct sl_queue_totals *t = &p->totals;

    /* Resume accepting below 90% so that accept does not flap at the cap. */
    if (t->depth < t->max_depth - t->max_depth / 10 && t->bytes < t->max_bytes - t->max_bytes / 10)
        sl_frontend_resume(p->frontend, SL_PAUSE_QUEUE);
}

/* --- admin view ---------------------------------------------------------- */

static void proxy_view(struct sl_admin_view *v, void *arg)
{
    struct sl_proxy *p = arg;

    v->token = p->cfg->admin_token;
    v->routes = p->routes.routes;
    v->n_routes = p->routes.n;
    v->retired = p->retired.v;
    v->n_retired = p->retired.n;
    v->unrouted = &p->requests.unrouted;
    v->batches = &p->batches;
    v->totals = &p->totals;
    v->connections = sl_frontend_connections(p->frontend);
    v->connections_accepted = sl_frontend_accepted(p->frontend);
    v->write_errors = sl_frontend_write_errors(p->frontend);
    v->draining = p->draining;
    v->reloads = p->reloads;
    v->start_time = p->start_time;
    v->jobs = p->jobs;
    v->shared = p->shared;
    v->last_reload = p->last_reload;
    v->reload_refused = p->reload_refused;
}

/* --- drain --------------------------------------------------------------- */

/*
 * Frozen routes dispatch nothing: finishing an in-flight request kicks its
 * route, which would otherwise send (and maybe free) parked requests while
 * every request is being finished - and send requests whose clients are then
 * told they were not processed.
 */
static void freeze_routes(struct sl_proxy *p)
{
    for (size_t i = 0; i < p->routes.n; i++)
        sl_dispatcher_freeze(p->routes.routes[i]);
}

static void proxy_on_drain_timer(evutil_socket_t fd, short what, void *arg)
{
    struct sl_proxy *p = arg;

    (void)fd;
    (void)what;
    if (p->requests.n_live == 0) {
        /* The flush grace is over: stop even if a client is slow to read. */
        event_base_loopexit(p->base, NULL);
        return;
    }
    sl_log_info("drain time over", "parked=%zu", p->totals.depth);
    p->drain_expired = true;
    p->requests.no_retry = true;
    sl_requests_finish_all(&p->requests, false, DRAIN_DETAIL);
    proxy_check_drained(p);
}

/* Called when the last request finished; finishes a drain. */
static void proxy_check_drained(struct sl_proxy *p)
{
    struct timeval tv = {PROXY_FLUSH_SEC, 0};

    if (!p->draining || p->requests.n_live != 0)
        return;
    /* Results of durable jobs still on their way to Redis, until the drain time is over. */
    if (!p->drain_expired && sl_jobs_held(p->jobs) != 0)
        return;
    sl_frontend_close_idle(p->frontend);
    if (sl_frontend_connections(p->frontend) == 0) {
        event_base_loopexit(p->base, NULL);
        return;
    }
    if (!p->drain_expired || !evtimer_pending(p->drain_timer, NULL)) {
        p->drain_expired = true;
        p->requests.no_retry = true;
        evtimer_add(p->drain_timer, &tv);
    }
}

/* Start a graceful drain (as on SIGTERM); `now` stops without draining. */
static void proxy_stop(struct sl_proxy *p, bool now)
{
    struct timeval tv;

    if (!p->draining) {
        p->draining = true;
        p->requests.refuse_new = true;
        notify("STOPPING=1");
        notify_status(p, "draining");
        sl_log_info("draining", "parked=%zu drain_timeout_ms=%lld", p->totals.depth,
                    (long long)(p->cfg->drain_timeout_us / 1000));
        sl_frontend_close_listeners(p->frontend);
        sl_jobs_drain(p->jobs);
        tv = sl_clock_timeval(p->cfg->drain_timeout_us);
        evtimer_add(p->drain_timer, &tv);
    }
    if (now) {
        sl_log_info("stopping now", NULL);
        p->drain_expired = true;
        p->requests.no_retry = true;
        freeze_routes(p);
        sl_requests_finish_all(&p->requests, true, DRAIN_DETAIL);
    }
    proxy_check_drained(p);
}

static unsigned total_in_flight(const struct sl_config *cfg)
{
    unsigned n = 0;

    for (size_t i = 0; i < cfg->n_routes; i++)
        n += cfg->routes[i].max_in_flight;
    return n;
}

/*
 * Descriptors kept for everything but clients: upstream connections (in
 * flight, and as many idle in the pools), listeners, the admin side, DNS,
 * curl's own, Redis, logs.
 */
static unsigned fd_reserve(const struct sl_config *cfg)
{
    return 2 * total_in_flight(cfg) + 64;
}

/* Start only: take every descriptor the hard limit allows (as nginx's worker_rlimit_nofile). */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            sl_log_warn("cannot raise the descriptor limit", "hard=%llu",
                        (unsigned long long)rl.rlim_max);
    }
}

/*
 * Clients may not take the descriptors upstream connects need: with
 * ulimit -n 256 and max_connections = 10000, clients held them all and
 * upstream connects failed. Cap the frontend below the limit and say so.
 */
static void fit_connections(struct sl_proxy *p)
{
    const struct sl_config *cfg = p->cfg;
    unsigned reserve = fd_reserve(cfg);
    struct rlimit rl;
    unsigned long long room;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return;
    room = rl.rlim_cur > reserve ? (unsigned long long)(rl.rlim_cur - reserve) : 1;
    if (room >= cfg->max_connections)
        return;
    sl_log_warn("max_connections does not fit the descriptor limit; clients capped",
                "max_connections=%u nofile=%llu reserved=%u cap=%llu", cfg->max_connections,
                (unsigned long long)rl.rlim_cur, reserve, room);
    sl_frontend_cap_connections(p->frontend, (unsigned)room);
}

static int proxy_routes(struct sl_proxy *p, const struct sl_config *cfg,
                        struct sl_route_table *t)
{
    int rc = sl_dispatcher_table_init(t, cfg, &p->totals, p->base, &sl_request_dispatch_ops,
                                      &p->requests);

    if (rc == SL_OK)
        sl_dispatcher_share(t, p->shared);
    return rc;
}

/* The shared limiter's Redis came up or went down. */
static void proxy_on_shared_state(bool up, void *arg)
{
    struct sl_proxy *p = arg;

    sl_dispatcher_shared_state(&p->routes, up);
}

static const struct sl_shlimit_hooks proxy_shared_hooks = {
    .answered = sl_dispatcher_shared_answered,
    .state = proxy_on_shared_state,
};

/* Routes that accept any upstream certificate are named at start and on each reload. */
static void warn_tls_verify_off(const struct sl_config *cfg)
{
    for (size_t i = 0; i < cfg->n_routes; i++) {
        if (!cfg->routes[i].tls.verify)
            sl_log_warn("tls_verify = off: the upstream's certificate is not checked",
                        "route=%s", cfg->routes[i].name);
    }
}

/*
 * Make the backends the routes' upstreams need (libcurl for https:// is
 * loaded only then): at start or a reload, not at a dispatch. Returns the
 * number of routes whose calls could not be made.
 */
static int prepare_upstreams(struct sl_proxy *p, const struct sl_config *cfg)
{
    int failed = 0;

    for (size_t i = 0; i < cfg->n_routes; i++) {
        if (sl_upstream_prepare(p->upstream, cfg->routes[i].upstream) != SL_OK) {
            sl_log_error("no upstream client for this route", "route=%s upstream=%s",
                         cfg->routes[i].name, cfg->routes[i].upstream);
            failed++;
        }
    }
    return failed;
}

/* Take `cfg` (owned) into use: everything that could fail is done already. */
static void proxy_apply(struct sl_proxy *p, struct sl_config *cfg, struct sl_route_table *t)
{
    sl_reload_swap(&p->routes, t, &p->retired, &p->requests);
    p->totals.max_depth = cfg->queue_max_depth;
    p->totals.max_bytes = cfg->queue_max_bytes;
    sl_log_set_level(cfg->log_level);
    sl_frontend_configure(p->frontend, cfg);
    sl_config_free(p->cfg);
    p->cfg = cfg;
    fit_connections(p);
    p->requests.cfg = cfg;
    sl_jobs_configure(p->jobs, cfg);
    p->reloads++;
    proxy_on_queue_changed(p);
    for (size_t i = 0; i < p->routes.n; i++)
        sl_dispatcher_kick(p->routes.routes[i]);
    sl_log_info("reloaded", "file=%s routes=%zu", cfg->path, p->routes.n);
    warn_tls_verify_off(cfg);
    (void)prepare_upstreams(p, cfg);
}

/* Re-read the config file (SIGHUP); the old config stays on error. */
static void proxy_reload(struct sl_proxy *p)
{
    struct sl_config *cfg;
    struct sl_route_table t;

    notify("RELOADING=1\nSTATUS=reloading");
    cfg = sl_reload_load(p->cfg);
    if (cfg != NULL && proxy_routes(p, cfg, &t) != SL_OK) {
        sl_log_error("reload refused: cannot build the routes", "file=%s", cfg->path);
        sl_config_free(cfg);
        cfg = NULL;
    }
    if (cfg != NULL)
        proxy_apply(p, cfg, &t);
    p->last_reload = (double)sl_clock_wall() / 1e6;
    p->reload_refused = cfg == NULL;
    notify_status(p, cfg != NULL ? "reloaded" : "reload refused, old config in force");
    notify("READY=1");
}

static void proxy_on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct sl_proxy *p = arg;

    (void)what;
    if (sig == SIGHUP) {
        proxy_reload(p);
        return;
    }
    /* A second SIGTERM/SIGINT means "now". */
    proxy_stop(p, p->draining);
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

struct sl_proxy *sl_proxy_new(struct sl_config *cfg)
{
    struct sl_proxy *p = calloc(1, sizeof(*p));
    struct event_config *ec = event_config_new();

    if (p == NULL || ec == NULL)
        goto fail;
    p->cfg = cfg;
    sl_log_set_level(cfg->log_level);
    warn_tls_verify_off(cfg);
    /* timerfd: epoll's millisecond timeouts would cost rate at high limits. */
    event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
    p->base = event_base_new_with_config(ec);
    event_config_free(ec);
    ec = NULL;
    /* Priority 0: dispatch timers and upstream I/O; 1 (default): clients. */
    if (p->base == NULL || event_base_priority_init(p->base, 2) != 0)
        goto fail;
    sl_requests_init(&p->requests, p->base);
    p->retired.keep = &p->requests.unrouted;
    p->requests.cfg = cfg;
    p->requests.routes = &p->routes;
    p->requests.totals = &p->totals;
    p->requests.hooks = (struct sl_request_hooks){
        .queue_full = proxy_on_queue_full,
        .queue_changed = proxy_on_queue_changed,
        .idle = proxy_on_idle,
    };
    p->requests.hooks_arg = p;
    p->totals.max_depth = cfg->queue_max_depth;
    p->totals.max_bytes = cfg->queue_max_bytes;
    p->start_time = (double)sl_clock_wall() / 1e6;
    /* Before the routes: they borrow it. shared_limit needs a restart to change. */
    if (cfg->has_redis && cfg->redis_shared_limit &&
        (p->shared = sl_shlimit_new(p->base, &cfg->redis_url, cfg->redis_prefix,
                                    &proxy_shared_hooks, p)) == NULL)
        goto fail;
    if (proxy_routes(p, cfg, &p->routes) != SL_OK)
        goto fail;
    p->drain_timer = evtimer_new(p->base, proxy_on_drain_timer, p);
    p->frontend = sl_frontend_new(p->base, cfg, &proxy_frontend_cb, p);
    p->upstream = sl_upstream_new(p->base, total_in_flight(cfg) + 16);
    p->requests.upstream = p->upstream;
    p->jobs = sl_jobs_new(p->base, &p->requests, &p->batches, cfg);
    if (p->drain_timer == NULL || p->frontend == NULL || p->upstream == NULL ||
        p->jobs == NULL || prepare_upstreams(p, cfg) != 0 || proxy_signals(p) != SL_OK)
        goto fail;
    raise_nofile();
    fit_connections(p);
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
        p->admin = sl_admin_new(p->base, p->cfg->admin_listen, proxy_view, p);
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
        sl_requests_finish_all(&p->requests, true, DRAIN_DETAIL);
    }
    sl_jobs_free(p->jobs);
    sl_admin_free(p->admin);
    sl_frontend_free(p->frontend);
    sl_dispatcher_table_fini(&p->routes);
    sl_reload_reap(&p->retired, true);
    /* After the routes: they let go of their asks in flight first. */
    sl_shlimit_free(p->shared);
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
