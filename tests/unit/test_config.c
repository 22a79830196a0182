/*
 * test_config.c - the config loader: every key, every default, every error
 * message exactly as an operator sees it, and the value parsers at their
 * edges. Files are written to a private temp dir, which is also the working
 * directory, so that error lines read "t.conf:LINE: ...".
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "sluice.h"

#define T_CONF "t.conf"
#define T_DIR "dir.d"

/* A valid route, 4 lines, for files that test something else. */
#define ROUTE_A "[route a]\nmatch = /\nupstream = http://127.0.0.1:8081\nrate = 10/s\n"

static char tmpdir[] = "/tmp/sluice-test-config-XXXXXX";
static char oldcwd[4096];
static char sample_conf[4096];
static char errs[16384];

/* ---- helpers ----------------------------------------------------------- */

static int setup(void **state)
{
    const char *slash = strrchr(__FILE__, '/');
    int n;

    (void)state;
    if (getcwd(oldcwd, sizeof(oldcwd)) == NULL || mkdtemp(tmpdir) == NULL)
        return -1;
    /* tests/unit/test_config.c -> conf/sluice.conf, resolved before the chdir. */
    n = snprintf(sample_conf, sizeof(sample_conf), "%s%s%.*s/../../conf/sluice.conf",
                 __FILE__[0] == '/' ? "" : oldcwd, __FILE__[0] == '/' ? "" : "/",
                 slash != NULL ? (int)(slash - __FILE__) : 1, slash != NULL ? __FILE__ : ".");
    if (n < 0 || (size_t)n >= sizeof(sample_conf))
        return -1;
    return chdir(tmpdir);
}

static int teardown(void **state)
{
    (void)state;
    unlink(T_CONF);
    rmdir(T_DIR);
    if (chdir(oldcwd) != 0)
        return -1;
    return rmdir(tmpdir);
}

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Load `path`; the error text lands in errs. */
static struct sl_config *load_path(const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *err = open_memstream(&buf, &len);
    struct sl_config *cfg;

    assert_non_null(err);
    cfg = sl_config_load(path, err);
    assert_int_equal(fclose(err), 0);
    assert_true(len < sizeof(errs));
    memcpy(errs, buf, len + 1);
    free(buf);
    return cfg;
}

static struct sl_config *load(const char *text)
{
    write_file(T_CONF, text, strlen(text));
    return load_path(T_CONF);
}

/* The file must load with no error output. */
static struct sl_config *load_ok(const char *text)
{
    struct sl_config *cfg = load(text);

    assert_string_equal(errs, "");
    assert_non_null(cfg);
    return cfg;
}

/* The file must be refused with exactly `expected` on the error stream. */
static void expect_errors(const char *text, const char *expected)
{
    struct sl_config *cfg = load(text);

    assert_string_equal(errs, expected);
    assert_null(cfg);
}

/* One key in one section next to a valid route: exactly one error line. */
static void expect_key_error(const char *section, const char *kv, const char *message)
{
    char text[4096], expected[4096];

    if (strcmp(section, "route") == 0) {
        snprintf(text, sizeof(text), ROUTE_A "%s\n", kv);
        snprintf(expected, sizeof(expected), "t.conf:5: %s\n", message);
    } else {
        snprintf(text, sizeof(text), "[%s]\n%s\n" ROUTE_A, section, kv);
        snprintf(expected, sizeof(expected), "t.conf:2: %s\n", message);
    }
    expect_errors(text, expected);
}

/* ---- valid files ------------------------------------------------------- */

static void test_full_file(void **state)
{
    const char *text = "; every key, none at its default\n"
                       "[server]\n"
                       "listen = 0.0.0.0:80, [::1]:8080 ; two of them\n"
                       "admin_listen =\n"
                       "admin_token = s3cr=t;x\n"
                       "max_connections = 500\n"
                       "client_timeout = 1.5s\n"
                       "max_header_size = 32K\n"
                       "max_body_size = 0\n"
                       "max_batch_items = 50\n"
                       "drain_timeout = 0\n"
                       "log_level = debug\n"
                       "access_log = no\n"
                       "\n"
                       "[queue]\n"
                       "max_depth = 7\n"
                       "max_bytes = 1g\n"
                       "overflow = reject\n"
                       "timeout = 0\n"
                       "\n"
                       "[route api]\n"
                       "match = /v1/\n"
                       "upstream = HTTPS://api.example.com:8443/base/\n"
                       "rate = 0.5/s\n"
                       "burst = 5\n"
                       "quota = 100/m, 1000/h,5000/d\n"
                       "max_in_flight = 100000\n"
                       "timeout = 250ms\n"
                       "retries = 0\n"
                       "honor_retry_after = false\n"
                       "preserve_host = TRUE\n"
                       "fair_key = header:X-Api-Key\n"
                       "max_response_size = 1m\n"
                       "# a second route\n"
                       "[route b.2_x-y]\n"
                       "match = /\n"
                       "upstream = http://[::1]:9000\n"
                       "rate = 3/h\n";
    struct sl_config *cfg = load_ok(text);
    const struct sl_route_config *r;

    (void)state;
    assert_string_equal(cfg->path, "t.conf");
    assert_int_equal(cfg->n_listen, 2);
    assert_string_equal(cfg->listen[0], "0.0.0.0:80");
    assert_string_equal(cfg->listen[1], "[::1]:8080");
    assert_string_equal(cfg->admin_listen, "");
    assert_string_equal(cfg->admin_token, "s3cr=t;x");
    assert_int_equal(cfg->max_connections, 500);
    assert_int_equal(cfg->client_timeout_us, 1500000);
    assert_int_equal(cfg->max_header_size, 32768);
    assert_int_equal(cfg->max_body_size, 0);
    assert_int_equal(cfg->max_batch_items, 50);
    assert_int_equal(cfg->drain_timeout_us, 0);
    assert_int_equal(cfg->log_level, SL_LOG_DEBUG);
    assert_false(cfg->access_log);
    assert_int_equal(cfg->queue_max_depth, 7);
    assert_int_equal(cfg->queue_max_bytes, 1u << 30);
    assert_int_equal(cfg->overflow, SL_OVERFLOW_REJECT);
    assert_int_equal(cfg->queue_timeout_us, 0);
    assert_false(cfg->has_redis);

    assert_int_equal(cfg->n_routes, 2);
    r = &cfg->routes[0];
    assert_string_equal(r->name, "api");
    assert_int_equal(r->line, 21);
    assert_string_equal(r->match, "/v1/");
    assert_string_equal(r->upstream, "https://api.example.com:8443/base");
    assert_true(r->rate.n == 0.5);
    assert_int_equal(r->rate.period_us, 1000000);
    assert_int_equal(r->burst, 5);
    assert_int_equal(r->n_quotas, 3);
    assert_true(r->quotas[0].n == 100);
    assert_int_equal(r->quotas[0].period_us, 60 * 1000000LL);
    assert_true(r->quotas[1].n == 1000);
    assert_int_equal(r->quotas[1].period_us, 3600 * 1000000LL);
    assert_true(r->quotas[2].n == 5000);
    assert_int_equal(r->quotas[2].period_us, 86400 * 1000000LL);
    assert_int_equal(r->max_in_flight, 100000);
    assert_int_equal(r->timeout_us, 250000);
    assert_int_equal(r->retries, 0);
    assert_false(r->honor_retry_after);
    assert_true(r->preserve_host);
    assert_string_equal(r->fair_key, "X-Api-Key");
    assert_int_equal(r->max_response_size, 1024 * 1024);

    r = &cfg->routes[1];
    assert_string_equal(r->name, "b.2_x-y");
    assert_int_equal(r->line, 35);
    assert_string_equal(r->match, "/");
    assert_string_equal(r->upstream, "http://[::1]:9000");
    assert_true(r->rate.n == 3);
    assert_int_equal(r->rate.period_us, 3600 * 1000000LL);
    assert_int_equal(r->n_quotas, 0);
    sl_config_free(cfg);
}

static void test_defaults(void **state)
{
    struct sl_config *cfg = load_ok("[route only]\nmatch = /x\nupstream = http://h/\nrate = 1/d\n");
    const struct sl_route_config *r = &cfg->routes[0];

    (void)state;
    assert_int_equal(cfg->n_listen, 1);
    assert_string_equal(cfg->listen[0], "127.0.0.1:8080");
    assert_string_equal(cfg->admin_listen, "127.0.0.1:9090");
    assert_string_equal(cfg->admin_token, "");
    assert_int_equal(cfg->max_connections, 10000);
    assert_int_equal(cfg->client_timeout_us, 60 * 1000000LL);
    assert_int_equal(cfg->max_header_size, 16 * 1024);
    assert_int_equal(cfg->max_body_size, 8 * 1024 * 1024);
    assert_int_equal(cfg->max_batch_items, 1000);
    assert_int_equal(cfg->drain_timeout_us, 30 * 1000000LL);
    assert_int_equal(cfg->log_level, SL_LOG_INFO);
    assert_true(cfg->access_log);
    assert_int_equal(cfg->queue_max_depth, 100000);
    assert_int_equal(cfg->queue_max_bytes, 256u << 20);
    assert_int_equal(cfg->overflow, SL_OVERFLOW_BACKPRESSURE);
    assert_int_equal(cfg->queue_timeout_us, 300 * 1000000LL);
    assert_false(cfg->has_redis);
    assert_string_equal(cfg->redis_url.text, "redis://127.0.0.1:6379/0");
    assert_string_equal(cfg->redis_url.host, "127.0.0.1");
    assert_int_equal(cfg->redis_url.port, 6379);
    assert_int_equal(cfg->redis_max_deliveries, 5);
    assert_int_equal(cfg->redis_claim_after_us, 30 * 1000000LL);
    assert_int_equal(r->max_response_size, 64u << 20);
    assert_string_equal(cfg->redis_prefix, "sluice:");
    assert_true(cfg->redis_jobs);
    assert_false(cfg->redis_shared_limit);
    assert_int_equal(cfg->redis_result_ttl_us, 3600 * 1000000LL);

    assert_int_equal(cfg->n_routes, 1);
    assert_string_equal(r->name, "only");
    assert_int_equal(r->line, 1);
    assert_string_equal(r->match, "/x");
    assert_string_equal(r->upstream, "http://h");
    assert_true(r->rate.n == 1);
    assert_int_equal(r->rate.period_us, 86400 * 1000000LL);
    assert_int_equal(r->burst, 1);
    assert_int_equal(r->n_quotas, 0);
    assert_int_equal(r->max_in_flight, 32);
    assert_int_equal(r->timeout_us, 30 * 1000000LL);
    assert_int_equal(r->retries, 2);
    assert_true(r->honor_retry_after);
    assert_false(r->preserve_host);
    assert_string_equal(r->fair_key, "");
    assert_int_equal(r->max_response_size, 64 * 1024 * 1024);
    assert_string_equal(r->tls.ca_file, "");
    assert_string_equal(r->tls.client_cert, "");
    assert_string_equal(r->tls.client_key, "");
    assert_true(r->tls.verify);
    sl_config_free(cfg);
}

static void test_sample_conf_loads(void **state)
{
    struct sl_config *cfg = load_path(sample_conf);

    (void)state;
    assert_string_equal(errs, "");
    assert_non_null(cfg);
    assert_int_equal(cfg->n_routes, 1);
    assert_string_equal(cfg->routes[0].name, "default");
    assert_string_equal(cfg->routes[0].match, "/");
    assert_string_equal(cfg->routes[0].upstream, "http://127.0.0.1:8081");
    assert_true(cfg->routes[0].rate.n == 10);
    assert_int_equal(cfg->routes[0].rate.period_us, 1000000);
    assert_false(cfg->has_redis);
    assert_string_equal(cfg->listen[0], "127.0.0.1:8080");
    assert_string_equal(cfg->admin_listen, "127.0.0.1:9090");
    sl_config_free(cfg);
}

/* CRLF line ends, a UTF-8 BOM, tabs, ':' as separator and inline comments. */
static void test_file_forms(void **state)
{
    static const char text[] = "\xEF\xBB\xBF[server]\r\n"
                               "\tlog_level\t=\twarn\t; comment\r\n"
                               "access_log: off\r\n"
                               "[ route  r ]   ; header comment\r\n"
                               "match = /a;b\r\n"
                               "upstream = http://h:1/p\r\n"
                               "rate = 2/m";
    struct sl_config *cfg = load_ok(text);

    (void)state;
    assert_int_equal(cfg->log_level, SL_LOG_WARN);
    assert_false(cfg->access_log);
    assert_string_equal(cfg->routes[0].name, "r");
    assert_string_equal(cfg->routes[0].match, "/a;b");
    assert_string_equal(cfg->routes[0].upstream, "http://h:1/p");
    sl_config_free(cfg);
}

/* inih keeps only 49 characters of a section name; we must not. */
static void test_long_route_names(void **state)
{
    char name1[64], name2[64], text[1024];
    struct sl_config *cfg;

    (void)state;
    memset(name1, 'n', 63);
    name1[63] = '\0';
    memcpy(name2, name1, sizeof(name2));
    name2[62] = 'z';
    snprintf(text, sizeof(text),
             "[route %s]\nmatch = /1\nupstream = http://h\nrate = 1/s\n"
             "[route %s]\nmatch = /2\nupstream = http://h\nrate = 1/s\n",
             name1, name2);
    cfg = load_ok(text);
    assert_int_equal(cfg->n_routes, 2);
    assert_string_equal(cfg->routes[0].name, name1);
    assert_string_equal(cfg->routes[1].name, name2);
    assert_int_equal(sl_config_find_route(cfg, name2), 1);
    sl_config_free(cfg);
}

static void test_find_route_and_free(void **state)
{
    struct sl_config *cfg = load_ok(ROUTE_A "[route b]\nmatch = /b\nupstream = http://h\nrate = 1/s\n");

    (void)state;
    assert_int_equal(sl_config_find_route(cfg, "a"), 0);
    assert_int_equal(sl_config_find_route(cfg, "b"), 1);
    assert_int_equal(sl_config_find_route(cfg, "c"), -1);
    assert_int_equal(sl_config_find_route(cfg, ""), -1);
    assert_int_equal(sl_config_find_route(NULL, "a"), -1);
    sl_config_free(cfg);
    sl_config_free(NULL);
}

/* A 198-character line is fine; 199 is refused and its tail not parsed. */
static void test_line_length(void **state)
{
    char line[256], text[1024];
    struct sl_config *cfg;

    (void)state;
    memset(line, 'a', sizeof(line));
    memcpy(line, "admin_token = ", 14);
    line[198] = '\0';
    snprintf(text, sizeof(text), "[server]\n%s\n" ROUTE_A, line);
    cfg = load_ok(text);
    assert_int_equal(strlen(cfg->admin_token), 198 - 14);
    sl_config_free(cfg);

    /* 199 characters: one too many. */
    memset(line, 'a', sizeof(line));
    memcpy(line, "admin_token = ", 14);
    line[199] = '\0';
    snprintf(text, sizeof(text), "[server]\n%s\n" ROUTE_A, line);
    expect_errors(text, "t.conf:2: line too long (max 198 characters)\n");
    /* Split at inih's buffer size, the tail would read as a line of its own. */
    memcpy(line + 199, "bogus = 1", 10);
    snprintf(text, sizeof(text), "[server]\n%s\n" ROUTE_A, line);
    expect_errors(text, "t.conf:2: line too long (max 198 characters)\n");
    memset(line, 'c', 199);
    line[199] = '\0';
    line[0] = '[';
    snprintf(text, sizeof(text), "[server]\n%s]\nlisten = x\n" ROUTE_A, line);
    expect_errors(text, "t.conf:2: line too long (max 198 characters)\n"
                        "t.conf:3: listen: expected host:port or [v6]:port with port 1-65535, "
                        "got \"x\"\n");
}

/* ---- errors ------------------------------------------------------------ */

static void test_unreadable(void **state)
{
    struct sl_config *cfg;

    (void)state;
    cfg = load_path("nope.conf");
    assert_null(cfg);
    assert_string_equal(errs, "nope.conf: cannot read: No such file or directory\n");
    assert_int_equal(mkdir(T_DIR, 0700), 0);
    cfg = load_path(T_DIR);
    assert_null(cfg);
    assert_string_equal(errs, "dir.d: cannot read: Is a directory\n");
}

static void test_sections(void **state)
{
    (void)state;
    expect_errors("[srv]\nlisten = x\n" ROUTE_A, "t.conf:1: [srv]: unknown section\n");
    expect_errors("[]\n" ROUTE_A, "t.conf:1: []: unknown section\n");
    expect_errors("[routes]\n" ROUTE_A, "t.conf:1: [routes]: unknown section\n");
    expect_errors("[Server]\n" ROUTE_A, "t.conf:1: [Server]: unknown section\n");
    expect_errors("[queue]\n[queue]\nmax_depth = 0\n" ROUTE_A,
                  "t.conf:2: [queue]: duplicate section (first at line 1)\n");
    expect_errors("listen = 1.2.3.4:5\n" ROUTE_A, "t.conf:1: listen: key outside any section\n");
    expect_errors("[server]\n", "t.conf: at least one [route NAME] section is required\n");
    expect_errors("", "t.conf: at least one [route NAME] section is required\n");
}

static void test_route_sections(void **state)
{
    char text[512];

    (void)state;
    expect_errors(ROUTE_A ROUTE_A, "t.conf:5: [route a]: duplicate route name (first at line 1)\n");
    expect_errors("[route a/b]\nmatch = /\n" ROUTE_A,
                  "t.conf:1: [route a/b]: route name must be 1-63 characters of "
                  "A-Z a-z 0-9 _ . -\n");
    expect_errors("[route]\n" ROUTE_A,
                  "t.conf:1: [route]: route name must be 1-63 characters of A-Z a-z 0-9 _ . -\n");
    expect_errors("[route a b]\n" ROUTE_A, "t.conf:1: [route a b]: route name must be 1-63 "
                                           "characters of A-Z a-z 0-9 _ . -\n");
    snprintf(text, sizeof(text), "[route %064d]\n" ROUTE_A, 0);
    expect_errors(text, "t.conf:1: [route 0000000000000000000000000000000000000000000000000000000"
                        "000000000]: route name must be 1-63 characters of A-Z a-z 0-9 _ . -\n");
    expect_errors("[route x]\n\n" ROUTE_A "[route y]\nrate = 1/s\n",
                  "t.conf:1: route x: match: required\n"
                  "t.conf:1: route x: upstream: required\n"
                  "t.conf:1: route x: rate: required\n"
                  "t.conf:7: route y: match: required\n"
                  "t.conf:7: route y: upstream: required\n");
    expect_errors(ROUTE_A "[route b]\nmatch = /\nupstream = http://h\nrate = 1/s\n",
                  "t.conf:6: match: \"/\" is already the match of route a\n");
}

/* host and strip_prefix: one match per host, host names checked and lowercased. */
static void test_route_host(void **state)
{
    struct sl_config *cfg;

    (void)state;
    cfg = load_ok(ROUTE_A "[route b]\nmatch = /\nhost = API.Example.com:8443\n"
                  "strip_prefix = on\nupstream = http://h\nrate = 1/s\n");
    assert_string_equal(cfg->routes[0].host, "");
    assert_false(cfg->routes[0].strip_prefix);
    assert_string_equal(cfg->routes[1].host, "api.example.com:8443");
    assert_true(cfg->routes[1].strip_prefix);
    sl_config_free(cfg);
    expect_errors(ROUTE_A "[route b]\nhost = a.b\nmatch = /\nupstream = http://h\nrate = 1/s\n"
                  "[route c]\nmatch = /\nupstream = http://h\nrate = 1/s\nhost = A.B\n",
                  "t.conf:11: match: \"/\" is already the match of route b for host a.b\n");
    expect_errors(ROUTE_A "[route b]\nmatch = /\nhost = a b\nupstream = http://h\nrate = 1/s\n",
                  "t.conf:7: host: expected a host name, optionally with :port, got \"a b\"\n");
    expect_errors(ROUTE_A "[route b]\nmatch = /\nhost = a:x1\nupstream = http://h\nrate = 1/s\n",
                  "t.conf:7: host: expected a host name, optionally with :port, got \"a:x1\"\n");
}

/* cost and max_cost: max_cost follows cost unless set lower; both fit the limits. */
static void test_route_cost(void **state)
{
    struct sl_config *cfg;

    (void)state;
    cfg = load_ok(ROUTE_A "cost = 3\n");
    assert_int_equal(cfg->routes[0].cost, 3);
    assert_int_equal(cfg->routes[0].max_cost, 3);
    sl_config_free(cfg);
    cfg = load_ok(ROUTE_A "max_cost = 10\n");
    assert_int_equal(cfg->routes[0].cost, 1);
    assert_int_equal(cfg->routes[0].max_cost, 10);
    sl_config_free(cfg);
    expect_errors(ROUTE_A "cost = 3\nmax_cost = 2\n",
                  "t.conf:6: max_cost: 2 is less than cost (3)\n");
    expect_errors(ROUTE_A "max_cost = 11\n",
                  "t.conf:5: max_cost: 11 units would never fit the rate of 10 per window\n");
    expect_errors(ROUTE_A "quota = 100/h, 4/m\ncost = 5\n",
                  "t.conf:6: cost: 5 units would never fit the quota of 4 per window\n");
}

/* limit_key: a header, a query parameter or the client address; max_keys. */
static void test_route_limit_key(void **state)
{
    struct sl_config *cfg;

    (void)state;
    cfg = load_ok(ROUTE_A);
    assert_int_equal(cfg->routes[0].limit_key.source, SL_KEY_NONE);
    assert_int_equal(cfg->routes[0].max_keys, 100000);
    sl_config_free(cfg);
    cfg = load_ok(ROUTE_A "limit_key = header:X-Api-Key\nmax_keys = 5\n");
    assert_int_equal(cfg->routes[0].limit_key.source, SL_KEY_HEADER);
    assert_string_equal(cfg->routes[0].limit_key.name, "X-Api-Key");
    assert_int_equal(cfg->routes[0].max_keys, 5);
    sl_config_free(cfg);
    cfg = load_ok(ROUTE_A "limit_key = query:api_key\n");
    assert_int_equal(cfg->routes[0].limit_key.source, SL_KEY_QUERY);
    assert_string_equal(cfg->routes[0].limit_key.name, "api_key");
    sl_config_free(cfg);
    cfg = load_ok(ROUTE_A "limit_key = client_ip\n");
    assert_int_equal(cfg->routes[0].limit_key.source, SL_KEY_CLIENT_IP);
    assert_string_equal(cfg->routes[0].limit_key.name, "");
    sl_config_free(cfg);
    expect_errors(ROUTE_A "limit_key = cookie:x\n",
                  "t.conf:5: limit_key: expected header:NAME, query:NAME, client_ip or nothing, "
                  "got \"cookie:x\"\n");
    expect_errors(ROUTE_A "limit_key = header:\n",
                  "t.conf:5: limit_key: expected header:NAME, query:NAME, client_ip or nothing, "
                  "got \"header:\"\n");
    expect_errors(ROUTE_A "limit_key = query:a b\n",
                  "t.conf:5: limit_key: expected header:NAME, query:NAME, client_ip or nothing, "
                  "got \"query:a b\"\n");
    expect_errors(ROUTE_A "max_keys = 0\n",
                  "t.conf:5: max_keys: expected an integer from 1 to 10000000, got \"0\"\n");
    expect_errors(ROUTE_A "fair_key = header:X-A\nlimit_key = header:X-B\n",
                  "t.conf:5: fair_key: limit_key already serves its keys round robin; set one of "
                  "the two\n");
}

static void test_too_many_routes(void **state)
{
    size_t cap = (SL_CONFIG_MAX_ROUTES + 1) * 64;
    char *text = malloc(cap);
    char expected[128];
    size_t len = 0;

    (void)state;
    assert_non_null(text);
    for (int i = 0; i <= SL_CONFIG_MAX_ROUTES; i++)
        len += (size_t)snprintf(text + len, cap - len,
                                "[route r%d]\nmatch = /%d\nupstream = http://h\nrate = 1/s\n", i, i);
    snprintf(expected, sizeof(expected), "t.conf:%d: [route r%d]: too many routes (max %d)\n",
             4 * SL_CONFIG_MAX_ROUTES + 1, SL_CONFIG_MAX_ROUTES, SL_CONFIG_MAX_ROUTES);
    expect_errors(text, expected);
    free(text);
}

static void test_keys(void **state)
{
    (void)state;
    expect_key_error("server", "listen_addr = x", "listen_addr: unknown key in [server]");
    expect_key_error("queue", "Max_depth = 1", "Max_depth: unknown key in [queue]");
    expect_key_error("route", "bogus = 1", "bogus: unknown key in [route a]");
    expect_key_error("route", "rate = 5/s", "rate: duplicate key");
    expect_key_error("route", "= 5", "syntax error");
    /* An indented line continues the previous value: a second value for it. */
    expect_errors("[server]\nlisten = 127.0.0.1:1\n\n  127.0.0.1:2\n" ROUTE_A,
                  "t.conf:4: listen: duplicate key\n");
}

static void test_syntax(void **state)
{
    (void)state;
    expect_errors("[server\nlisten = x\n" ROUTE_A, "t.conf:1: syntax error\n");
    expect_errors("[route b ; c]\nmatch = /\n" ROUTE_A, "t.conf:1: syntax error\n");
    expect_errors("[server] junk\nlisten = x\n" ROUTE_A, "t.conf:1: syntax error\n");
    expect_errors("[server]\njust words\n" ROUTE_A, "t.conf:2: syntax error\n");
    expect_errors("[server]\nkey ; = comment\n" ROUTE_A, "t.conf:2: syntax error\n");
    {
        static const char nul[] = "[server]\nbad\0line = 1\n" ROUTE_A;

        write_file(T_CONF, nul, sizeof(nul) - 1);
        assert_null(load_path(T_CONF));
        assert_string_equal(errs, "t.conf:2: syntax error\n");
    }
}

static void test_durations_sizes(void **state)
{
    (void)state;
    expect_key_error("server", "client_timeout = 10x",
                     "client_timeout: expected a duration like 250ms, 30s, 5m, 1h or 1d, "
                     "got \"10x\"");
    expect_key_error("server", "drain_timeout = -1s",
                     "drain_timeout: expected a duration like 250ms, 30s, 5m, 1h or 1d, "
                     "got \"-1s\"");
    expect_key_error("server", "client_timeout = 0",
                     "client_timeout: must be between 1ms and 365d, got \"0\"");
    expect_key_error("queue", "timeout = 366d", "timeout: must be between 0 and 365d, got \"366d\"");
    expect_key_error("route", "timeout = 0.5ms",
                     "timeout: must be between 1ms and 365d, got \"0.5ms\"");
    expect_key_error("server", "max_body_size = 8mb",
                     "max_body_size: expected a size like 512, 16k, 8m or 1g, got \"8mb\"");
    expect_key_error("server", "max_header_size = 1023",
                     "max_header_size: must be at least 1k, got \"1023\"");
    expect_key_error("queue", "max_bytes = 99999999999999999999",
                     "max_bytes: expected a size like 512, 16k, 8m or 1g, "
                     "got \"99999999999999999999\"");
}

static void test_limits(void **state)
{
    static const char *const bad[] = {"10 per sec", "0/s", "-1/s", "10/x", "1.2345/s", ""};
    char text[256], expected[256];

    (void)state;
    for (size_t i = 0; i < SL_ARRAY_LEN(bad); i++) {
        snprintf(text, sizeof(text), "[route a]\nmatch = /\nupstream = http://h\nrate = %s\n",
                 bad[i]);
        snprintf(expected, sizeof(expected),
                 "t.conf:4: rate: expected N/s, N/m, N/h or N/d, got \"%s\"\n", bad[i]);
        expect_errors(text, expected);
    }
    expect_key_error("route", "quota = 1/s, 10/sec",
                     "quota: expected N/s, N/m, N/h or N/d, got \"10/sec\"");
    expect_key_error("route", "quota = 1/s,",
                     "quota: expected N/s, N/m, N/h or N/d, got \"\"");
    expect_key_error("route", "quota = 1/s,2/s,3/s,4/s,5/s,6/s,7/s,8/s,9/s",
                     "quota: at most 8 limits allowed");
}

static void test_enums_bools_numbers(void **state)
{
    (void)state;
    expect_key_error("server", "access_log = maybe",
                     "access_log: expected on, off, yes, no, true, false, 1 or 0, got \"maybe\"");
    expect_key_error("route", "preserve_host =",
                     "preserve_host: expected on, off, yes, no, true, false, 1 or 0, got \"\"");
    expect_key_error("queue", "overflow = drop",
                     "overflow: expected backpressure or reject, got \"drop\"");
    expect_key_error("server", "log_level = INFO",
                     "log_level: expected error, warn, info or debug, got \"INFO\"");
    expect_key_error("server", "max_connections = 0",
                     "max_connections: expected an integer from 1 to 1000000, got \"0\"");
    expect_key_error("server", "max_batch_items = 0",
                     "max_batch_items: expected an integer from 1 to 100000, got \"0\"");
    expect_key_error("route", "max_response_size = 1x",
                     "max_response_size: expected a size like 512, 16k, 8m or 1g, got \"1x\"");
    expect_key_error("route", "retries = 101",
                     "retries: expected an integer from 0 to 100, got \"101\"");
    expect_key_error("route", "max_in_flight = 12abc",
                     "max_in_flight: expected an integer from 1 to 100000, got \"12abc\"");
    expect_key_error("route", "max_in_flight = 100001",
                     "max_in_flight: expected an integer from 1 to 100000, got \"100001\"");
    expect_key_error("route", "burst = 0",
                     "burst: expected an integer from 1 to 1000000, got \"0\"");
    expect_key_error("route", "burst = -1",
                     "burst: expected an integer from 1 to 1000000, got \"-1\"");
    expect_key_error("queue", "max_depth = 18446744073709551616",
                     "max_depth: expected an integer from 1 to 100000000, "
                     "got \"18446744073709551616\"");
}

static void test_addresses(void **state)
{
    static const char *const bad[] = {"localhost", "h:0", "h:65536", "h:", ":80", "::1:80",
                                      "[::1]", "[::1]80", "[zz::1]:80", "999.1.1.1:80",
                                      "h_ost name:80", "h:080"};
    char kv[128], msg[256];

    (void)state;
    for (size_t i = 0; i < SL_ARRAY_LEN(bad); i++) {
        snprintf(kv, sizeof(kv), "listen = 127.0.0.1:1, %s", bad[i]);
        snprintf(msg, sizeof(msg),
                 "listen: expected host:port or [v6]:port with port 1-65535, got \"%s\"", bad[i]);
        expect_key_error("server", kv, msg);
    }
    expect_key_error("server", "admin_listen = x:y",
                     "admin_listen: expected host:port or [v6]:port with port 1-65535, got \"x:y\"");
    expect_key_error("server", "listen =", "listen: at least one address is required");
    expect_key_error("server", "listen = h:1, h:1", "listen: duplicate address \"h:1\"");
    expect_key_error("server", "admin_listen = 127.0.0.1:8080",
                     "admin_listen: same address as listen");
    expect_key_error("server",
                     "listen = h:1,h:2,h:3,h:4,h:5,h:6,h:7,h:8,h:9,h:10,h:11,h:12,h:13,h:14,h:15,"
                     "h:16,h:17",
                     "listen: at most 16 addresses allowed");
}

static void test_upstreams(void **state)
{
    static const char *const bad[] = {"ftp://h", "http://", "http:///x", "h:80", "http://h:0",
                                      "http://h:65536", "http://u@h", "http://h/a?b",
                                      "http://h/a#b", "http://h:/", "http://[::1", "http://h x",
                                      "http://[::1]x/", "http://h:80:81"};
    static const char *const good[][2] = {{"http://h/", "http://h"},
                                          {"https://h.example.com:443//", "https://h.example.com:443"},
                                          {"http://10.0.0.1/api/v1/", "http://10.0.0.1/api/v1"},
                                          {"http://[fe80::1]", "http://[fe80::1]"}};
    char text[512], expected[512];

    (void)state;
    for (size_t i = 0; i < SL_ARRAY_LEN(bad); i++) {
        snprintf(text, sizeof(text), "[route a]\nmatch = /\nrate = 1/s\nupstream = %s\n", bad[i]);
        snprintf(expected, sizeof(expected),
                 "t.conf:4: upstream: expected http://host[:port][/base-path] or https://..., "
                 "got \"%s\"\n", bad[i]);
        expect_errors(text, expected);
    }
    for (size_t i = 0; i < SL_ARRAY_LEN(good); i++) {
        struct sl_config *cfg;

        snprintf(text, sizeof(text), "[route a]\nmatch = /\nrate = 1/s\nupstream = %s\n",
                 good[i][0]);
        cfg = load_ok(text);
        assert_string_equal(cfg->routes[0].upstream, good[i][1]);
        sl_config_free(cfg);
    }
}

static void test_match_fair_key_strings(void **state)
{
    (void)state;
    expect_errors("[route a]\nmatch = api\nupstream = http://h\nrate = 1/s\n",
                  "t.conf:2: match: expected a path prefix starting with '/' (max 511 characters), "
                  "got \"api\"\n");
    expect_key_error("route", "fair_key = X-Api-Key",
                     "fair_key: expected header:NAME or nothing, got \"X-Api-Key\"");
    expect_key_error("route", "fair_key = header:", "fair_key: expected header:NAME or nothing, "
                                                    "got \"header:\"");
    expect_key_error("route", "fair_key = header:a b",
                     "fair_key: expected header:NAME or nothing, got \"header:a b\"");
    expect_key_error("route", "fair_key = cookie:x",
                     "fair_key: expected header:NAME or nothing, got \"cookie:x\"");
    /* admin_token's 255 cannot be reached within a line: check a shorter field. */
    expect_errors("[redis]\nprefix = 0123456789012345678901234567890123456789012345678901234567890123\n"
                  ROUTE_A,
                  "t.conf:2: prefix: too long (max 63 characters)\n");
    expect_errors("[redis]\nurl =\njobs = off\n" ROUTE_A,
                  "t.conf:2: url: expected redis://[:password@]host:port/db or unix:/path?db=N, "
                  "got \"\"\n");
}

/* TLS files are checked at load; a relative path is the config's directory's. */
static void test_tls_files(void **state)
{
    char abs_key[4200], text[8192];
    struct sl_config *cfg;
    const struct sl_tls_config *tls;

    (void)state;
    assert_true(mkdir(T_DIR, 0700) == 0 || errno == EEXIST); /* test_unreadable made it */
    write_file(T_DIR "/ca.pem", "ca", 2);
    write_file(T_DIR "/c.pem", "c", 1);
    write_file("k.pem", "k", 1);
    assert_non_null(getcwd(abs_key, sizeof(abs_key) - 8));
    strcat(abs_key, "/k.pem");
    snprintf(text, sizeof(text),
             ROUTE_A "ca_file = ca.pem\nclient_cert = ./c.pem\nclient_key = %s\ntls_verify = off\n",
             abs_key);
    write_file(T_DIR "/t.conf", text, strlen(text));
    cfg = load_path(T_DIR "/t.conf");
    assert_string_equal(errs, "");
    assert_non_null(cfg);
    tls = &cfg->routes[0].tls;
    assert_string_equal(tls->ca_file, T_DIR "/ca.pem");
    assert_string_equal(tls->client_cert, T_DIR "/./c.pem");
    assert_string_equal(tls->client_key, abs_key);
    assert_false(tls->verify);
    sl_config_free(cfg);

    /* Taken from the working directory when the config path has none. */
    cfg = load_ok(ROUTE_A "client_cert = k.pem\nclient_key = k.pem\n");
    assert_string_equal(cfg->routes[0].tls.client_key, "k.pem");
    sl_config_free(cfg);

    expect_key_error("route", "ca_file = ca.pem",
                     "ca_file: cannot read \"ca.pem\": No such file or directory");
    expect_key_error("route", "ca_file = " T_DIR, "ca_file: cannot read \"dir.d\": not a regular file");
    expect_key_error("route", "ca_file = /dev/null", "ca_file: cannot read \"/dev/null\": not a regular file");
    expect_key_error("route", "tls_verify = maybe",
                     "tls_verify: expected on, off, yes, no, true, false, 1 or 0, got \"maybe\"");
    /* Mutual TLS takes both, or neither. */
    expect_key_error("route", "client_cert = k.pem", "client_cert: client_key is required with it");
    expect_key_error("route", "client_key = k.pem", "client_key: client_cert is required with it");
    expect_errors(ROUTE_A "client_cert = k.pem\nclient_key =\n",
                  "t.conf:5: client_cert: client_key is required with it\n");

    unlink(T_DIR "/t.conf");
    unlink(T_DIR "/ca.pem");
    unlink(T_DIR "/c.pem");
    unlink("k.pem");
}

static void test_redis_section(void **state)
{
    struct sl_config *cfg;

    (void)state;
    /* Shared limits: per-key limits and dating by answers are refused beside them. */
    cfg = load_ok(ROUTE_A "\n[redis]\nurl = redis://10.0.0.1:6379/1\nprefix = p:\n"
                  "jobs = off\nshared_limit = on\nresult_ttl = 2h\n");
    assert_true(cfg->redis_shared_limit);
    sl_config_free(cfg);
    expect_errors(ROUTE_A "limit_key = header:X-Key\n\n[redis]\nshared_limit = on\n",
                  "t.conf:5: limit_key: route a: per-key limits cannot be shared: set [redis] "
                  "shared_limit = off or remove limit_key\n");
    expect_errors("[redis]\nshared_limit = on\n" ROUTE_A "jitter_proof = on\n",
                  "t.conf:7: jitter_proof: route a: not available with [redis] shared_limit = on "
                  "(the window_guard covers the jitter)\n");
    expect_errors("[redis]\nshared_limit = on\n" ROUTE_A "window_guard = 0\n",
                  "t.conf:7: window_guard: route a: at least 1ms with [redis] shared_limit = on "
                  "(it covers the round trip to Redis), got 0ms\n");
    expect_errors("[redis]\nresult_ttl = 0\nbogus = 1\njobs = off\nmax_deliveries = 0\n"
                  "claim_after = 10ms\n" ROUTE_A,
                  "t.conf:2: result_ttl: must be between 1s and 365d, got \"0\"\n"
                  "t.conf:3: bogus: unknown key in [redis]\n"
                  "t.conf:5: max_deliveries: expected an integer from 1 to 1000, got \"0\"\n"
                  "t.conf:6: claim_after: must be between 1s and 365d, got \"10ms\"\n");
    expect_errors("[redis]\nurl = redis://redis.example:6379/0\njobs = off\n" ROUTE_A,
                  "t.conf:2: url: the host must be an IP address or localhost (a name would be "
                  "resolved with a blocking lookup), got \"redis://redis.example:6379/0\"\n");
    cfg = load_ok("[redis]\nurl = redis://:s3cret@localhost:6380/2\njobs = off\n"
                  "result_ttl = 2s\nmax_deliveries = 3\nclaim_after = 5s\n" ROUTE_A);
    assert_true(cfg->has_redis);
    assert_false(sl_config_redis_jobs(cfg));
    assert_string_equal(cfg->redis_url.host, "127.0.0.1");
    assert_int_equal(cfg->redis_url.port, 6380);
    assert_int_equal(cfg->redis_url.db, 2);
    assert_string_equal(cfg->redis_url.password, "s3cret");
    assert_int_equal(cfg->redis_result_ttl_us, 2000000);
    assert_int_equal(cfg->redis_max_deliveries, 3);
    assert_int_equal(cfg->redis_claim_after_us, 5000000);
    sl_config_free(cfg);
}

static void test_redis_url(void **state)
{
    static const char *const bad[] = {
        "", "redis://", "redis://:@127.0.0.1", "redis://user:pw@127.0.0.1:1/0",
        "redis://127.0.0.1:0", "redis://127.0.0.1:65536", "redis://127.0.0.1:x/0",
        "redis://127.0.0.1:6379/db", "redis://[::1", "redis://[::1]x", "http://127.0.0.1",
        "redis://host.example", "unix:", "unix:relative", "unix:/s?db=x", "unix:/s?user=a",
    };
    struct sl_redis_url u;
    const char *detail;

    (void)state;
    for (size_t i = 0; i < SL_ARRAY_LEN(bad); i++) {
        detail = NULL;
        assert_int_equal(sl_config_parse_redis_url(bad[i], &u, &detail), -1);
        assert_non_null(detail);
    }
    assert_int_equal(sl_config_parse_redis_url("redis://10.1.2.3", &u, &detail), 0);
    assert_string_equal(u.host, "10.1.2.3");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.password, "");
    assert_string_equal(u.path, "");
    assert_int_equal(sl_config_parse_redis_url("redis://:p@ss:w@[::1]:7000/15", &u, &detail), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 15);
    assert_string_equal(u.password, "p@ss:w");
    assert_int_equal(sl_config_parse_redis_url("REDIS://LocalHost:1/", &u, &detail), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 1);
    assert_int_equal(sl_config_parse_redis_url("unix:/run/redis.sock?db=3&password=x", &u,
                                               &detail), 0);
    assert_string_equal(u.path, "/run/redis.sock");
    assert_string_equal(u.host, "");
    assert_int_equal(u.db, 3);
    assert_string_equal(u.password, "x");
    assert_int_equal(sl_config_parse_redis_url("unix:///tmp/r.sock", &u, &detail), 0);
    assert_string_equal(u.path, "/tmp/r.sock");
    assert_string_equal(u.text, "unix:///tmp/r.sock");
}

/* Parsing goes on after an error: one run shows every problem. */
static void test_many_errors(void **state)
{
    (void)state;
    expect_errors("top = 1\n"
                  "[server]\n"
                  "listen = nowhere\n"
                  "max_connections = lots\n"
                  "listen = 127.0.0.1:1\n"
                  "[nope]\n"
                  "anything = goes\n"
                  "[queue]\n"
                  "overflow = drop\n"
                  "broken line\n"
                  "[route a]\n"
                  "match = /\n"
                  "rate = 10 per sec\n"
                  "[route a]\n"
                  "[route b]\n"
                  "upstream = http://h\n"
                  "match = /\n",
                  "t.conf:1: top: key outside any section\n"
                  "t.conf:3: listen: expected host:port or [v6]:port with port 1-65535, "
                  "got \"nowhere\"\n"
                  "t.conf:4: max_connections: expected an integer from 1 to 1000000, "
                  "got \"lots\"\n"
                  "t.conf:5: listen: duplicate key\n"
                  "t.conf:6: [nope]: unknown section\n"
                  "t.conf:9: overflow: expected backpressure or reject, got \"drop\"\n"
                  "t.conf:10: syntax error\n"
                  "t.conf:13: rate: expected N/s, N/m, N/h or N/d, got \"10 per sec\"\n"
                  "t.conf:11: route a: upstream: required\n"
                  "t.conf:14: [route a]: duplicate route name (first at line 11)\n"
                  "t.conf:17: match: \"/\" is already the match of route a\n"
                  "t.conf:15: route b: rate: required\n");
}

/* ---- value parsers ----------------------------------------------------- */

static void test_parse_duration(void **state)
{
    static const struct {
        const char *s;
        int64_t us;
    } ok[] = {{"250ms", 250000}, {"30s", 30000000}, {"5m", 300000000},
              {"1h", 3600000000LL}, {"1d", 86400000000LL}, {"0", 0}, {"0ms", 0},
              {"45", 45000000}, {"1.5s", 1500000}, {"0.5ms", 500}, {"1.000001s", 1000001},
              {"2.25h", 8100000000LL}, {"106751991d", 106751991LL * 86400000000LL}};
    static const char *const bad[] = {"", "s", "-1", "-1s", "+1s", "1.", ".5", "1.5.5s",
                                      "10 s", " 1s", "1s ", "1w", "1S", "1sec", "1.0000001s",
                                      "106751992d", "9223372036855s", "18446744073709551616"};
    int64_t us;

    (void)state;
    for (size_t i = 0; i < SL_ARRAY_LEN(ok); i++) {
        us = -1;
        assert_int_equal(sl_config_parse_duration(ok[i].s, &us), 0);
        assert_int_equal(us, ok[i].us);
    }
    for (size_t i = 0; i < SL_ARRAY_LEN(bad); i++) {
        us = 7;
        assert_int_equal(sl_config_parse_duration(bad[i], &us), -1);
        assert_int_equal(us, 7);
    }
    assert_int_equal(sl_config_parse_duration(NULL, &us), -1);
}

static void test_parse_size(void **state)
{
    static const struct {
        const char *s;
        size_t n;
    } ok[] = {{"0", 0}, {"512", 512}, {"16k", 16384}, {"16K", 16384}, {"8m", 8u << 20},
              {"8M", 8u << 20}, {"1g", 1u << 30}, {"1G", 1u << 30},
              {"18446744073709551615", SIZE_MAX}, {"17179869183g", SIZE_MAX - (1u << 30) + 1}};
    static const char *const bad[] = {"", "k", "-1", "1.5m", "1kb", "1t", "1 k", "0x10",
                                      "18446744073709551616", "17179869184g", "18014398509481984k"};
    size_t n;

    (void)state;
    for (size_t i = 0; i < SL_ARRAY_LEN(ok); i++) {
        n = 1;
        assert_int_equal(sl_config_parse_size(ok[i].s, &n), 0);
        assert_int_equal(n, ok[i].n);
    }
    for (size_t i = 0; i < SL_ARRAY_LEN(bad); i++) {
        n = 7;
        assert_int_equal(sl_config_parse_size(bad[i], &n), -1);
        assert_int_equal(n, 7);
    }
}

static void test_parse_limit(void **state)
{
    static const struct {
        const char *s;
        double n;
        int64_t period_us;
    } ok[] = {{"10/s", 10, 1000000}, {"0.5/s", 0.5, 1000000}, {"5000/h", 5000, 3600000000LL},
              {"100000/d", 100000, 86400000000LL}, {"2.125/m", 2.125, 60000000},
              {"0.001/s", 0.001, 1000000}, {"10000000/s", 10000000, 1000000},
              {"7.0/m", 7, 60000000}};
    static const char *const bad[] = {"0/s", "0.000/s", "-1/s", "10 per sec", "10/x", "10/",
                                      "/s", "10", "1.2345/s", "10/ss", "10/S", "10000001/s",
                                      "1e3/s", " 10/s", "10 /s", "1./s", ".5/s", ""};
    struct sl_limit l;

    (void)state;
    for (size_t i = 0; i < SL_ARRAY_LEN(ok); i++) {
        memset(&l, 0, sizeof(l));
        assert_int_equal(sl_config_parse_limit(ok[i].s, &l), 0);
        assert_true(l.n == ok[i].n);
        assert_int_equal(l.period_us, ok[i].period_us);
    }
    for (size_t i = 0; i < SL_ARRAY_LEN(bad); i++) {
        l.n = 3;
        l.period_us = 4;
        assert_int_equal(sl_config_parse_limit(bad[i], &l), -1);
        assert_true(l.n == 3);
        assert_int_equal(l.period_us, 4);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_sample_conf_loads),
        cmocka_unit_test(test_file_forms),
        cmocka_unit_test(test_long_route_names),
        cmocka_unit_test(test_find_route_and_free),
        cmocka_unit_test(test_line_length),
        cmocka_unit_test(test_unreadable),
        cmocka_unit_test(test_sections),
        cmocka_unit_test(test_route_sections),
        cmocka_unit_test(test_too_many_routes),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_syntax),
        cmocka_unit_test(test_durations_sizes),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_enums_bools_numbers),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_upstreams),
        cmocka_unit_test(test_match_fair_key_strings),
        cmocka_unit_test(test_tls_files),
        cmocka_unit_test(test_redis_section),
        cmocka_unit_test(test_redis_url),
        cmocka_unit_test(test_many_errors),
        cmocka_unit_test(test_route_host),
        cmocka_unit_test(test_route_cost),
        cmocka_unit_test(test_route_limit_key),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_limit),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
