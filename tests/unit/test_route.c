/*
 * test_route.c - route table building, longest-prefix match, lookup by name.
 *
 * Configs are filled by hand (the config parser is tested on its own), so
 * this links config.c and metrics.c but calls neither.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "log.h"
#include "retry.h"
#include "route.h"
#include "sluice.h"

#define SEC INT64_C(1000000)

struct fixture {
    struct sl_config cfg;
    struct sl_route_config routes[8];
    struct sl_queue_totals totals;
    struct sl_route_table table;
};

/* A config with one route per (name, match) pair, 10/s burst 1. */
static void make(struct fixture *f, const char *const *names, const char *const *matches,
                 size_t n)
{
    memset(f, 0, sizeof(*f));
    f->totals.max_depth = 100;
    f->totals.max_bytes = 1000;
    f->cfg.routes = f->routes;
    f->cfg.n_routes = n;
    for (size_t i = 0; i < n; i++) {
        struct sl_route_config *rc = &f->routes[i];

        snprintf(rc->name, sizeof(rc->name), "%s", names[i]);
        snprintf(rc->match, sizeof(rc->match), "%s", matches[i]);
        snprintf(rc->upstream, sizeof(rc->upstream), "http://127.0.0.1:1");
        rc->rate.n = 10;
        rc->rate.period_us = SEC;
        rc->burst = 1;
        rc->max_in_flight = 32;
    }
}

static const char *match_host(const struct sl_route_table *t, const char *host,
                              const char *path)
{
    const struct sl_route *r = sl_route_match(t, host, path);

    return r != NULL ? r->cfg.name : "(none)";
}

static const char *match_name(const struct sl_route_table *t, const char *path)
{
    return match_host(t, NULL, path);
}

static void test_longest_prefix_wins(void **state)
{
    /* Config order deliberately not sorted. */
    static const char *const names[] = {"v2", "default", "api"};
    static const char *const matches[] = {"/api/v2", "/", "/api"};
    struct fixture f;

    (void)state;
    make(&f, names, matches, 3);
    assert_int_equal(sl_route_table_init(&f.table, &f.cfg, &f.totals), SL_OK);
    assert_int_equal(f.table.n, 3);
    assert_string_equal(f.table.routes[0]->cfg.name, "v2");
    assert_string_equal(f.table.by_prefix[0]->cfg.name, "v2");
    assert_string_equal(f.table.by_prefix[1]->cfg.name, "api");
    assert_string_equal(f.table.by_prefix[2]->cfg.name, "default");

    assert_string_equal(match_name(&f.table, "/api/v2/users"), "v2");
    assert_string_equal(match_name(&f.table, "/api/v2"), "v2");
    assert_string_equal(match_name(&f.table, "/api/v1/users"), "api");
    assert_string_equal(match_name(&f.table, "/api"), "api");
    assert_string_equal(match_name(&f.table, "/apix"), "api"); /* plain string prefix */
    assert_string_equal(match_name(&f.table, "/api/v"), "api");
    assert_string_equal(match_name(&f.table, "/"), "default");
    assert_string_equal(match_name(&f.table, "/other"), "default");
    assert_string_equal(match_name(&f.table, "/API"), "default"); /* case matters */
    assert_string_equal(match_name(&f.table, ""), "(none)");
    assert_string_equal(match_name(&f.table, "api"), "(none)");
    assert_null(sl_route_match(&f.table, NULL, NULL));
    sl_route_table_fini(&f.table);
    assert_int_equal(f.table.n, 0);
    assert_null(f.table.routes);
}

/* Host routes before host-less ones; inside a host, the longest prefix. */
static void test_host_routes(void **state)
{
    static const char *const names[] = {"default", "gh", "gh-repos", "port", "v6"};
    static const char *const matches[] = {"/", "/", "/repos", "/", "/"};
    struct fixture f;

    (void)state;
    make(&f, names, matches, 5);
    snprintf(f.cfg.routes[1].host, sizeof(f.cfg.routes[1].host), "api.github.com");
    snprintf(f.cfg.routes[2].host, sizeof(f.cfg.routes[2].host), "api.github.com");
    snprintf(f.cfg.routes[3].host, sizeof(f.cfg.routes[3].host), "local:8080");
    snprintf(f.cfg.routes[4].host, sizeof(f.cfg.routes[4].host), "[::1]");
    assert_int_equal(sl_route_table_init(&f.table, &f.cfg, &f.totals), SL_OK);
    assert_string_equal(match_host(&f.table, "api.github.com", "/repos/x"), "gh-repos");
    assert_string_equal(match_host(&f.table, "API.GitHub.com:443", "/users"), "gh");
    assert_string_equal(match_host(&f.table, "api.github.com.evil", "/repos"), "default");
    assert_string_equal(match_host(&f.table, "local:8080", "/x"), "port");
    assert_string_equal(match_host(&f.table, "local:8081", "/x"), "default");
    assert_string_equal(match_host(&f.table, "local", "/x"), "default");
    assert_string_equal(match_host(&f.table, "[::1]:9", "/x"), "v6");
    assert_string_equal(match_host(&f.table, NULL, "/repos"), "default");
    sl_route_table_fini(&f.table);
}

static void test_no_default_route(void **state)
{
    static const char *const names[] = {"api", "billing"};
    static const char *const matches[] = {"/api/", "/billing"};
    struct fixture f;

    (void)state;
    make(&f, names, matches, 2);
    assert_int_equal(sl_route_table_init(&f.table, &f.cfg, &f.totals), SL_OK);
    assert_string_equal(match_name(&f.table, "/api/x"), "api");
    assert_string_equal(match_name(&f.table, "/api/"), "api");
    assert_string_equal(match_name(&f.table, "/api"), "(none)");
    assert_string_equal(match_name(&f.table, "/billing"), "billing");
    assert_string_equal(match_name(&f.table, "/billing/invoices"), "billing");
    assert_string_equal(match_name(&f.table, "/bill"), "(none)");
    assert_string_equal(match_name(&f.table, "/"), "(none)");
    assert_string_equal(match_name(&f.table, "/other"), "(none)");
    sl_route_table_fini(&f.table);
}

static void test_ties_keep_config_order(void **state)
{
    static const char *const names[] = {"short", "first", "second", "third"};
    static const char *const matches[] = {"/a", "/abc", "/abc", "/abd"};
    struct fixture f;

    (void)state;
    make(&f, names, matches, 4);
    assert_int_equal(sl_route_table_init(&f.table, &f.cfg, &f.totals), SL_OK);
    assert_string_equal(f.table.by_prefix[0]->cfg.name, "first");
    assert_string_equal(f.table.by_prefix[1]->cfg.name, "second");
    assert_string_equal(f.table.by_prefix[2]->cfg.name, "third");
    assert_string_equal(f.table.by_prefix[3]->cfg.name, "short");
    assert_string_equal(match_name(&f.table, "/abc/1"), "first");
    assert_string_equal(match_name(&f.table, "/abd"), "third");
    assert_string_equal(match_name(&f.table, "/ab"), "short");
    sl_route_table_fini(&f.table);
}

static void test_find_and_state(void **state)
{
    static const char *const names[] = {"default", "api"};
    static const char *const matches[] = {"/", "/api"};
    struct fixture f;
    struct sl_route *api;
    struct sl_queue_item item;

    (void)state;
    make(&f, names, matches, 2);
    f.routes[1].rate.n = 2.5; /* normalised to 5 per 2 s */
    f.routes[1].burst = 3;
    f.routes[1].quotas[0].n = 100;
    f.routes[1].quotas[0].period_us = 60 * SEC;
    f.routes[1].n_quotas = 1;
    assert_int_equal(sl_route_table_init(&f.table, &f.cfg, &f.totals), SL_OK);
    /* The route owns a copy of its config. */
    snprintf(f.routes[1].name, sizeof(f.routes[1].name), "changed");
    api = sl_route_find(&f.table, "api");
    assert_non_null(api);
    assert_ptr_equal(api, f.table.routes[1]);
    assert_ptr_equal(sl_route_find(&f.table, "default"), f.table.routes[0]);
    assert_null(sl_route_find(&f.table, "changed"));
    assert_null(sl_route_find(&f.table, "ap"));
    assert_null(sl_route_find(&f.table, NULL));
    /* Limiter built from the route's limits. */
    assert_int_equal(api->limiter.n_logs, 2);
    assert_int_equal(api->limiter.logs[0].n, 5);
    assert_int_equal(api->limiter.logs[0].window_us, 2 * SEC);
    assert_int_equal(api->limiter.tolerance_us, 2 * api->limiter.interval_us);
    assert_int_equal(api->limiter.logs[1].n, 100);
    /* Runtime state starts clear. */
    assert_int_equal(api->in_flight, 0);
    assert_int_equal(api->paused_until_us, 0);
    assert_int_equal(api->sched.timer_at_us, 0);
    assert_null(api->sched.timer);
    assert_int_equal(api->stats.dispatched, 0);
    /* The queue counts into the shared totals; fini takes it off again. */
    memset(&item, 0, sizeof(item));
    assert_int_equal(sl_queue_push(&api->queue, &item, SL_LANE_NORMAL, NULL, 40, 0, false),
                     SL_OK);
    assert_int_equal(f.totals.depth, 1);
    assert_int_equal(f.totals.bytes, 40);
    sl_route_table_fini(&f.table);
    assert_int_equal(f.totals.depth, 0);
    assert_int_equal(f.totals.bytes, 0);
    assert_null(item.flow);
}

static void test_init_failure_frees_all(void **state)
{
    static const char *const names[] = {"a", "b", "c"};
    static const char *const matches[] = {"/a", "/b", "/c"};
    struct fixture f;
    FILE *devnull = fopen("/dev/null", "w");

    (void)state;
    assert_non_null(devnull);
    sl_log_set_stream(devnull); /* the refusal is logged; keep test output clean */

    make(&f, names, matches, 3);
    f.routes[1].rate.n = 0;
    memset(&f.table, 0xA5, sizeof(f.table)); /* init must not trust the old contents */
    assert_int_equal(sl_route_table_init(&f.table, &f.cfg, &f.totals), SL_ERR);
    assert_int_equal(f.table.n, 0);
    assert_null(f.table.routes);
    assert_null(f.table.by_prefix);

    make(&f, names, matches, 3);
    f.routes[2].quotas[0].n = 0.0001; /* not representable */
    f.routes[2].quotas[0].period_us = SEC;
    f.routes[2].n_quotas = 1;
    assert_int_equal(sl_route_table_init(&f.table, &f.cfg, &f.totals), SL_ERR);
    assert_int_equal(f.table.n, 0);

    make(&f, names, matches, 3);
    f.routes[0].burst = 0;
    assert_int_equal(sl_route_table_init(&f.table, &f.cfg, &f.totals), SL_ERR);
    assert_null(f.table.routes);
    /* ASan's leak check covers what the failed builds allocated. */

    sl_log_set_stream(NULL);
    fclose(devnull);
}

static void test_empty_config(void **state)
{
    struct fixture f;

    (void)state;
    make(&f, NULL, NULL, 0);
    assert_int_equal(sl_route_table_init(&f.table, &f.cfg, &f.totals), SL_OK);
    assert_null(sl_route_match(&f.table, NULL, "/"));
    assert_null(sl_route_find(&f.table, "default"));
    sl_route_table_fini(&f.table);
}


/* limit_key across a reload: the keys table moves; limit_key added or removed waits a window. */
static void test_carry_over_keys(void **state)
{
    static const char *const names[] = {"a"};
    static const char *const matches[] = {"/"};
    struct fixture old, nxt;
    struct sl_keys *table;
    uint32_t slot;
    int64_t t0 = 1000 * SEC;

    (void)state;
    make(&old, names, matches, 1);
    old.routes[0].limit_key.source = SL_KEY_CLIENT_IP;
    old.routes[0].max_keys = 10;
    old.routes[0].max_cost = 1;
    assert_int_equal(sl_route_table_init(&old.table, &old.cfg, &old.totals), SL_OK);
    table = old.table.routes[0]->keys;
    assert_non_null(table);
    assert_int_equal(sl_keys_acquire(table, sl_keys_id(table, "x", 1), t0, &slot), SL_OK);
    assert_int_equal(sl_keys_take(table, slot, t0, 1), SL_OK);

    /* Same limits, another max_keys: the very table (and slot) goes on. */
    make(&nxt, names, matches, 1);
    nxt.routes[0].limit_key.source = SL_KEY_CLIENT_IP;
    nxt.routes[0].max_keys = 20;
    nxt.routes[0].max_cost = 1;
    assert_int_equal(sl_route_table_init(&nxt.table, &nxt.cfg, &nxt.totals), SL_OK);
    sl_route_carry_over(nxt.table.routes[0], old.table.routes[0], t0);
    assert_ptr_equal(nxt.table.routes[0]->keys, table);
    assert_null(old.table.routes[0]->keys);
    assert_int_equal(table->max_keys, 20);
    assert_true(sl_keys_next(table, slot, t0, 1) > t0);
    sl_route_table_fini(&old.table);

    /* limit_key removed: the route's limit starts once the keys' last dispatch left its window. */
    make(&old, names, matches, 1);
    assert_int_equal(sl_route_table_init(&old.table, &old.cfg, &old.totals), SL_OK);
    sl_route_carry_over(old.table.routes[0], nxt.table.routes[0], t0 + 10);
    assert_null(old.table.routes[0]->keys);
    assert_int_equal(sl_limiter_next(&old.table.routes[0]->limiter, t0 + 10),
                     t0 + SEC); /* window_guard = 0 here */
    sl_route_table_fini(&nxt.table);

    /* limit_key added: every key waits for the route's last dispatch to leave its window. */
    assert_int_equal(sl_limiter_take(&old.table.routes[0]->limiter, t0 + 2 * SEC), SL_OK);
    make(&nxt, names, matches, 1);
    nxt.routes[0].limit_key.source = SL_KEY_CLIENT_IP;
    nxt.routes[0].max_keys = 20;
    nxt.routes[0].max_cost = 1;
    assert_int_equal(sl_route_table_init(&nxt.table, &nxt.cfg, &nxt.totals), SL_OK);
    sl_route_carry_over(nxt.table.routes[0], old.table.routes[0], t0 + 2 * SEC);
    table = nxt.table.routes[0]->keys;
    assert_int_equal(sl_keys_acquire(table, sl_keys_id(table, "y", 1), t0 + 2 * SEC, &slot),
                     SL_OK);
    assert_int_equal(sl_keys_next(table, slot, t0 + 2 * SEC, 1), t0 + 3 * SEC);
    sl_route_table_fini(&old.table);
    sl_route_table_fini(&nxt.table);
}


/* An announced limit is compared with what the route's limits allow in its window. */
static void test_learn_budget(void **state)
{
    static const char *const names[] = {"a"};
    static const char *const matches[] = {"/"};
    struct sl_retry_policy within[] = {{1000, 60 * SEC}};
    struct sl_retry_policy both[] = {{1000, 60 * SEC}, {500, 60 * SEC}};
    struct sl_retry_policy per_sec[] = {{5, SEC}};
    struct fixture f;
    struct sl_route *r;

    (void)state;
    make(&f, names, matches, 1);
    assert_int_equal(sl_route_table_init(&f.table, &f.cfg, &f.totals), SL_OK);
    r = f.table.routes[0];
    assert_false(r->budget.known);
    assert_true(sl_route_learn_budget(r, within, 1));
    assert_true(r->budget.known);
    assert_false(r->budget.above);
    assert_true(r->budget.allows == 600);
    /* The first policy our limits exceed is the one kept; the same again changes nothing. */
    assert_true(sl_route_learn_budget(r, both, 2));
    assert_true(r->budget.above);
    assert_true(r->budget.n == 500);
    assert_false(sl_route_learn_budget(r, both, 2));
    assert_true(sl_route_learn_budget(r, per_sec, 1));
    assert_true(r->budget.above);
    assert_true(r->budget.allows == 10);
    assert_true(sl_route_learn_budget(r, within, 1));
    assert_false(r->budget.above);
    assert_false(sl_route_learn_budget(r, within, 0));
    sl_route_table_fini(&f.table);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_longest_prefix_wins),
        cmocka_unit_test(test_host_routes),
        cmocka_unit_test(test_no_default_route),
        cmocka_unit_test(test_ties_keep_config_order),
        cmocka_unit_test(test_find_and_state),
        cmocka_unit_test(test_init_failure_frees_all),
        cmocka_unit_test(test_empty_config),
        cmocka_unit_test(test_carry_over_keys),
        cmocka_unit_test(test_learn_budget),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
