/*
 * route.c - the route table: building it from a config, prefix matching.
 *
 * Routes are few (at most SL_CONFIG_MAX_ROUTES), so matching is a scan of
 * by_prefix, which is ordered longest match first: the first hit is the
 * longest matching prefix. Ties keep config order (a stable sort).
 */
#include "route.h"

#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "log.h"
#include "retry.h"
#include "sluice.h"

/*
 * The secret seed of every keys table (keys.h), drawn once per process so
 * that a reload keeps each key's id. A client cannot choose values that
 * share a hash chain without it.
 */
static const struct sl_hash_key *key_seed(void)
{
    static struct sl_hash_key seed;
    static bool drawn;

    if (!drawn) {
        sl_hash_key_random(&seed);
        drawn = true;
    }
    return &seed;
}

/* One route with its queue and limiter; SL_ERR (bad limit) or SL_ENOMEM. */
static int route_new(const struct sl_route_config *cfg, struct sl_queue_totals *totals,
                     struct sl_route **out)
{
    struct sl_route *r = calloc(1, sizeof(*r));
    int rc;

    if (r == NULL)
        return SL_ENOMEM;
    r->cfg = *cfg;
    rc = sl_queue_init(&r->queue, totals);
    if (rc != SL_OK)
        goto fail;
    rc = sl_limiter_init(&r->limiter, &cfg->rate, cfg->burst, cfg->quotas, cfg->n_quotas);
    if (rc != SL_OK) {
        sl_queue_fini(&r->queue);
        goto fail;
    }
    sl_limiter_set_dating(&r->limiter, cfg->window_guard_us, cfg->jitter_proof);
    sl_shlimit_route_init(&r->shared, r->limiter.logs[0].guard_us);
    if (cfg->limit_key.source != SL_KEY_NONE &&
        (r->keys = sl_keys_new(cfg, key_seed())) == NULL) {
        sl_queue_fini(&r->queue);
        sl_limiter_fini(&r->limiter);
        rc = SL_ENOMEM;
        goto fail;
    }
    *out = r;
    return SL_OK;

fail:
    free(r);
    return rc;
}

void sl_route_free(struct sl_route *r)
{
    if (r == NULL)
        return;
    sl_shlimit_route_fini(&r->shared);
    sl_queue_fini(&r->queue);
    sl_limiter_fini(&r->limiter);
    sl_keys_free(r->keys);
    free(r);
}

/* Insertion sort by match length, longest first; stable, n is small. */
static void sort_by_prefix(struct sl_route **v, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        struct sl_route *r = v[i];
        size_t len = strlen(r->cfg.match);
        size_t j = i;

        for (; j > 0 && strlen(v[j - 1]->cfg.match) < len; j--)
            v[j] = v[j - 1];
        v[j] = r;
    }
}

static void log_route_error(const struct sl_route_config *cfg, int rc)
{
    char name[SL_CONFIG_NAME_LEN * 4 + 3];

    sl_log_error(rc == SL_ENOMEM ? "out of memory building route" : "route limit refused",
                 "route=%s", sl_log_quote(cfg->name, name, sizeof(name)));
}

int sl_route_table_init(struct sl_route_table *t, const struct sl_config *cfg,
                        struct sl_queue_totals *totals)
{
    int rc = SL_ENOMEM;

    memset(t, 0, sizeof(*t));
    if (cfg->n_routes == 0)
        return SL_OK;
    t->routes = calloc(cfg->n_routes, sizeof(*t->routes));
    t->by_prefix = calloc(cfg->n_routes, sizeof(*t->by_prefix));
    if (t->routes == NULL || t->by_prefix == NULL)
        goto fail;
    for (size_t i = 0; i < cfg->n_routes; i++) {
        rc = route_new(&cfg->routes[i], totals, &t->routes[i]);
        if (rc != SL_OK) {
            log_route_error(&cfg->routes[i], rc);
            goto fail;
        }
        t->n = i + 1;
    }
    memcpy(t->by_prefix, t->routes, t->n * sizeof(*t->routes));
    sort_by_prefix(t->by_prefix, t->n);
    return SL_OK;

fail:
    sl_route_table_fini(t);
    return rc;
}

void sl_route_table_release(struct sl_route_table *t)
{
    free(t->routes);
    free(t->by_prefix);
    memset(t, 0, sizeof(*t));
}

void sl_route_table_fini(struct sl_route_table *t)
{
    for (size_t i = 0; t->routes != NULL && i < t->n; i++)
        sl_route_free(t->routes[i]);
    free(t->routes);
    free(t->by_prefix);
    memset(t, 0, sizeof(*t));
}

/*
 * Does a route's host take this Host value? A route host with a port wants
 * it exactly; one without takes the name on any port. Names compare without
 * case (the route's is stored lowercase).
 */
static bool host_matches(const char *route_host, const char *host)
{
    size_t n = strlen(route_host), hn;
    const char *colon;

    if (host == NULL)
        return false;
    hn = strlen(host);
    colon = strrchr(host, ':');
    /* "name:port" or "[v6]:port": the name part, unless the route names the port. */
    if (strchr(route_host + (route_host[0] == '[' ? strcspn(route_host, "]") : 0), ':') == NULL &&
        colon != NULL && (host[0] != '[' || colon > strchr(host, ']')))
        hn = (size_t)(colon - host);
    return hn == n && strncasecmp(host, route_host, n) == 0;
}

/* Longest prefix among the routes for `host` (host routes) or of no host (NULL). */
static struct sl_route *match_in(const struct sl_route_table *t, const char *host,
                                 const char *path)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct sl_route_config *c = &t->by_prefix[i]->cfg;

        if ((host == NULL ? c->host[0] == '\0' : host_matches(c->host, host)) &&
            strncmp(path, c->match, strlen(c->match)) == 0)
            return t->by_prefix[i];
    }
    return NULL;
}

struct sl_route *sl_route_match(const struct sl_route_table *t, const char *host,
                                const char *path)
{
    struct sl_route *r;

    if (path == NULL)
        return NULL;
    /* Host routes first, then the routes for any host. */
    if (host != NULL && (r = match_in(t, host, path)) != NULL)
        return r;
    return match_in(t, NULL, path);
}

struct sl_route *sl_route_find(const struct sl_route_table *t, const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->routes[i]->cfg.name, name) == 0)
            return t->routes[i];
    }
    return NULL;
}

struct sl_route *sl_route_match_target(const struct sl_route_table *t, const char *host,
                                       const char *target)
{
    char path[SL_CONFIG_PATH_LEN + 1];
    size_t len = strcspn(target, "?#");

    /* Routes match prefixes of at most SL_CONFIG_PATH_LEN - 1 bytes. */
    if (len > SL_CONFIG_PATH_LEN)
        len = SL_CONFIG_PATH_LEN;
    memcpy(path, target, len);
    path[len] = '\0';
    return sl_route_match(t, host, path);
}

void sl_route_flight_begin(struct sl_route *r)
{
    r->in_flight++;
}

void sl_route_flight_end(struct sl_route *r)
{
    if (r->in_flight > 0)
        r->in_flight--;
}

void sl_route_flight_move(struct sl_route *from, struct sl_route *to)
{
    sl_route_flight_end(from);
    sl_route_flight_begin(to);
}

bool sl_route_pause(struct sl_route *r, int64_t now, int64_t pause_us, enum sl_pause_reason why)
{
    int64_t until = now + pause_us;

    if (pause_us <= 0 || until <= r->paused_until_us)
        return false;
    r->paused_until_us = until;
    r->pause_reason = why;
    r->stats.pauses++;
    sl_log_info("route paused", "route=%s pause_ms=%lld reason=%s", r->cfg.name,
                (long long)(pause_us / 1000), sl_pause_reason_name(why));
    return true;
}

/* What `policy` means for route r: the budget to keep. */
static struct sl_route_budget budget_of(const struct sl_route *r,
                                        const struct sl_retry_policy *policy)
{
    struct sl_route_budget b;

    b.known = true;
    b.n = policy->n;
    b.window_us = policy->window_us;
    b.allows = sl_limiter_allows_in(&r->limiter, policy->window_us);
    b.above = b.allows > b.n;
    return b;
}

/* Keep b; log when the route starts or stops exceeding what the upstream announces. */
static bool keep_budget(struct sl_route *r, const struct sl_route_budget *b)
{
    struct sl_route_budget old = r->budget;

    if (old.known && old.n == b->n && old.window_us == b->window_us && old.allows == b->allows)
        return false;
    r->budget = *b;
    if (b->above && (!old.above || old.n != b->n || old.window_us != b->window_us))
        sl_log_warn("the configured limits allow more than the upstream announces",
                    "route=%s allows=%g announced=%g window_s=%g%s", r->cfg.name, b->allows, b->n,
                    (double)b->window_us / 1e6, r->keys != NULL ? " per_key=true" : "");
    else if (!b->above && old.above)
        sl_log_info("the configured limits are within what the upstream announces",
                    "route=%s allows=%g announced=%g window_s=%g", r->cfg.name, b->allows, b->n,
                    (double)b->window_us / 1e6);
    return true;
}

bool sl_route_learn_budget(struct sl_route *r, const struct sl_retry_policy *p, size_t n)
{
    struct sl_route_budget b;

    if (n == 0)
        return false;
    b = budget_of(r, &p[0]);
    for (size_t i = 1; i < n && !b.above; i++) {
        struct sl_route_budget other = budget_of(r, &p[i]);

        if (other.above)
            b = other;
    }
    return keep_budget(r, &b);
}

/* The longest window of a limiter plus its guard. */
static int64_t limiter_span(const struct sl_limiter *l)
{
    int64_t span = 0;

    for (size_t i = 0; i < l->n_logs; i++) {
        if (l->logs[i].window_us + l->logs[i].guard_us > span)
            span = l->logs[i].window_us + l->logs[i].guard_us;
    }
    return span;
}

static void carry_keys(struct sl_route *to, struct sl_route *from, int64_t now)
{
    int64_t last;

    if (from->keys != NULL && to->keys != NULL) {
        /* On failure (memory) `to` keeps its fresh table, behind a floor. */
        if (sl_keys_reconfigure(from->keys, &to->cfg, now) == SL_OK) {
            sl_keys_free(to->keys);
            to->keys = from->keys;
            from->keys = NULL;
        } else if ((last = sl_keys_last(from->keys)) != INT64_MIN) {
            sl_keys_set_floor(to->keys, last + to->keys->span_us);
        }
    } else if (to->keys != NULL) {
        /* limit_key added: any key may have sent the route's last dispatch. */
        last = sl_limiter_last(&from->limiter, now);
        if (last != INT64_MIN)
            sl_keys_set_floor(to->keys, last + to->keys->span_us);
    } else if (from->keys != NULL) {
        /* limit_key removed: the route's limit counts what every key sent. */
        last = sl_keys_last(from->keys);
        if (last != INT64_MIN)
            sl_limiter_hold_until(&to->limiter, last + limiter_span(&to->limiter));
    }
}

void sl_route_carry_over(struct sl_route *to, struct sl_route *from, int64_t now)
{
    sl_limiter_inherit(&to->limiter, &from->limiter, now);
    /* Shared limits: the history is in Redis; what we know of it is its epoch. */
    to->shared.epoch = from->shared.epoch;
    carry_keys(to, from, now);
    to->stats = from->stats;
    to->paused_until_us = from->paused_until_us;
    /* What the upstream announced still holds; how our new limits compare is new. */
    if (from->budget.known) {
        struct sl_retry_policy p = {from->budget.n, from->budget.window_us};
        struct sl_route_budget b;

        to->budget = from->budget;
        b = budget_of(to, &p);
        (void)keep_budget(to, &b);
    }
    to->pause_reason = from->pause_reason;
}
