/*
 * config.c - load and validate the INI config file (SPEC section 3).
 *
 * inih does the tokenising; everything else is ours. Debian's libinih has
 * no line numbers in the handler, truncates section names to 49 characters
 * and never reports an empty section, so we feed it the file one line at a
 * time through our own reader and classify each line there, the way inih
 * will: the reader knows the line number, the full section name, and every
 * syntax error (inih itself only returns the first one).
 *
 * Validation is staged: syntax (reader), each key (option table), then
 * cross-key checks once the whole file is read. Every error is reported as
 * "FILE:LINE: key: message" and parsing goes on, so one run shows them all.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice.h"

#define MAX_FILE_SIZE (4u << 20) /* far above any sane config; bounds the read */
#define MAX_LIMIT_N 10000000u    /* the limiter's ring size per limit */
#define NO_MAX UINT64_MAX

#define USEC_MS INT64_C(1000)
#define USEC_S INT64_C(1000000)
#define USEC_M (60 * USEC_S)
#define USEC_H (60 * USEC_M)
#define USEC_D (24 * USEC_H)
#define MAX_DURATION ((uint64_t)(365 * USEC_D))

enum section_kind {
    SEC_NONE,    /* before the first section header */
    SEC_SERVER,
    SEC_QUEUE,
    SEC_REDIS,
    SEC_ROUTE,
    SEC_SKIP,    /* a bad section header, already reported: ignore its keys */
};

static const char *const section_names[] = {"", "server", "queue", "redis", "route", ""};

enum opt_type {
    OPT_STRING,   /* `size` bytes with NUL; min = shortest length */
    OPT_BOOL,
    OPT_UINT,     /* unsigned or size_t, told apart by `size` */
    OPT_SIZE,
    OPT_DURATION, /* min and max in microseconds */
    OPT_ENUM,     /* one of `names`, stored as the index */
    OPT_LIMIT,
    OPT_LIMITS,   /* comma-separated, count at `count_off` */
    OPT_ADDR,     /* one host:port, or empty */
    OPT_ADDRS,    /* comma-separated, at least one, count at `count_off` */
    OPT_MATCH,
    OPT_UPSTREAM,
    OPT_FAIR_KEY,
    OPT_LIMIT_KEY,
    OPT_HOST,     /* a Host value to route on: name[:port], stored lowercase */
    OPT_FILE,     /* a readable file, or empty; relative to the config's directory */
    OPT_REDIS_URL,
};

/*
 * One key of one section kind. Offsets are into struct sl_config, or into
 * struct sl_route_config for SEC_ROUTE. Defaults are written as in the file
 * and go through the same parser, so a default can never be out of range;
 * a NULL default makes the key required. `reloadable` marks what SIGHUP may
 * change in place; the others need a restart (SPEC section 3).
 */
struct option {
    enum section_kind section;
    const char *key;
    enum opt_type type;
    size_t offset;
    size_t size;
    size_t count_off;
    uint64_t min;
    uint64_t max;
    const char *def;
    const char *const *names;
    bool reloadable;
};

static const char *const overflow_names[] = {"backpressure", "reject", NULL};
static const char *const half_close_names[] = {"abandon", "wait", NULL};

#define CFG(f) offsetof(struct sl_config, f), sizeof(((struct sl_config *)0)->f)
#define RT(f) offsetof(struct sl_route_config, f), sizeof(((struct sl_route_config *)0)->f)
#define CFG_N(f) offsetof(struct sl_config, f)
#define RT_N(f) offsetof(struct sl_route_config, f)

static const struct option options[] = {
    {SEC_SERVER, "listen", OPT_ADDRS, CFG(listen), CFG_N(n_listen), 0, 0, "127.0.0.1:8080", NULL, false},
    {SEC_SERVER, "admin_listen", OPT_ADDR, CFG(admin_listen), 0, 0, 0, "127.0.0.1:9090", NULL, false},
    {SEC_SERVER, "admin_token", OPT_STRING, CFG(admin_token), 0, 0, 0, "", NULL, true},
    {SEC_SERVER, "max_connections", OPT_UINT, CFG(max_connections), 0, 1, 1000000, "10000", NULL, true},
    {SEC_SERVER, "client_timeout", OPT_DURATION, CFG(client_timeout_us), 0, USEC_MS, MAX_DURATION, "60s", NULL, true},
    {SEC_SERVER, "client_header_timeout", OPT_DURATION, CFG(client_header_timeout_us), 0, USEC_MS, MAX_DURATION, "10s", NULL, true},
    {SEC_SERVER, "client_body_timeout", OPT_DURATION, CFG(client_body_timeout_us), 0, USEC_MS, MAX_DURATION, "60s", NULL, true},
    {SEC_SERVER, "max_batch_items", OPT_UINT, CFG(max_batch_items), 0, 1, 100000, "1000", NULL, true},
    {SEC_SERVER, "max_header_size", OPT_SIZE, CFG(max_header_size), 0, 1024, NO_MAX, "16k", NULL, true},
    {SEC_SERVER, "max_body_size", OPT_SIZE, CFG(max_body_size), 0, 0, NO_MAX, "8m", NULL, true},
    {SEC_SERVER, "stream_buffer", OPT_SIZE, CFG(stream_buffer), 0, 16 * 1024, 64 * 1024 * 1024, "256k", NULL, true},
    {SEC_SERVER, "drain_timeout", OPT_DURATION, CFG(drain_timeout_us), 0, 0, MAX_DURATION, "30s", NULL, true},
    {SEC_SERVER, "log_level", OPT_ENUM, CFG(log_level), 0, 0, 0, "info", sl_log_level_names, true},
    {SEC_SERVER, "access_log", OPT_BOOL, CFG(access_log), 0, 0, 0, "on", NULL, true},
    {SEC_SERVER, "half_close", OPT_ENUM, CFG(half_close), 0, 0, 0, "abandon", half_close_names, true},

    {SEC_QUEUE, "max_depth", OPT_UINT, CFG(queue_max_depth), 0, 1, 100000000, "100000", NULL, true},
    {SEC_QUEUE, "max_bytes", OPT_SIZE, CFG(queue_max_bytes), 0, 1024, NO_MAX, "256m", NULL, true},
    {SEC_QUEUE, "overflow", OPT_ENUM, CFG(overflow), 0, 0, 0, "backpressure", overflow_names, true},
    {SEC_QUEUE, "timeout", OPT_DURATION, CFG(queue_timeout_us), 0, 0, MAX_DURATION, "300s", NULL, true},

    {SEC_REDIS, "url", OPT_REDIS_URL, CFG(redis_url), 0, 0, 0, "redis://127.0.0.1:6379/0", NULL, false},
    {SEC_REDIS, "prefix", OPT_STRING, CFG(redis_prefix), 0, 1, 0, "sluice:", NULL, false},
    {SEC_REDIS, "jobs", OPT_BOOL, CFG(redis_jobs), 0, 0, 0, "on", NULL, false},
    {SEC_REDIS, "shared_limit", OPT_BOOL, CFG(redis_shared_limit), 0, 0, 0, "off", NULL, false},
    {SEC_REDIS, "result_ttl", OPT_DURATION, CFG(redis_result_ttl_us), 0, USEC_S, MAX_DURATION, "1h", NULL, true},
    {SEC_REDIS, "max_deliveries", OPT_UINT, CFG(redis_max_deliveries), 0, 1, 1000, "5", NULL, true},
    {SEC_REDIS, "claim_after", OPT_DURATION, CFG(redis_claim_after_us), 0, USEC_S, MAX_DURATION, "30s", NULL, true},

    {SEC_ROUTE, "match", OPT_MATCH, RT(match), 0, 0, 0, NULL, NULL, true},
    {SEC_ROUTE, "host", OPT_HOST, RT(host), 0, 0, 0, "", NULL, true},
    {SEC_ROUTE, "strip_prefix", OPT_BOOL, RT(strip_prefix), 0, 0, 0, "off", NULL, true},
    {SEC_ROUTE, "upstream", OPT_UPSTREAM, RT(upstream), 0, 0, 0, NULL, NULL, true},
    {SEC_ROUTE, "rate", OPT_LIMIT, RT(rate), 0, 0, 0, NULL, NULL, true},
    {SEC_ROUTE, "burst", OPT_UINT, RT(burst), 0, 1, 1000000, "1", NULL, true},
    {SEC_ROUTE, "cost", OPT_UINT, RT(cost), 0, 1, 1000000, "1", NULL, true},
    {SEC_ROUTE, "max_cost", OPT_UINT, RT(max_cost), 0, 1, 1000000, "1", NULL, true},
    {SEC_ROUTE, "quota", OPT_LIMITS, RT(quotas), RT_N(n_quotas), 0, 0, "", NULL, true},
    {SEC_ROUTE, "max_in_flight", OPT_UINT, RT(max_in_flight), 0, 1, 100000, "32", NULL, true},
    {SEC_ROUTE, "timeout", OPT_DURATION, RT(timeout_us), 0, USEC_MS, MAX_DURATION, "30s", NULL, true},
    {SEC_ROUTE, "retries", OPT_UINT, RT(retries), 0, 0, 100, "2", NULL, true},
    {SEC_ROUTE, "honor_retry_after", OPT_BOOL, RT(honor_retry_after), 0, 0, 0, "on", NULL, true},
    {SEC_ROUTE, "preserve_host", OPT_BOOL, RT(preserve_host), 0, 0, 0, "off", NULL, true},
    {SEC_ROUTE, "window_guard", OPT_DURATION, RT(window_guard_us), 0, 0, 60 * USEC_S, "5ms", NULL, true},
    {SEC_ROUTE, "jitter_proof", OPT_BOOL, RT(jitter_proof), 0, 0, 0, "off", NULL, true},
    {SEC_ROUTE, "rewrite_redirects", OPT_BOOL, RT(rewrite_redirects), 0, 0, 0, "on", NULL, true},
    {SEC_ROUTE, "fair_key", OPT_FAIR_KEY, RT(fair_key), 0, 0, 0, "", NULL, true},
    {SEC_ROUTE, "limit_key", OPT_LIMIT_KEY, RT(limit_key), 0, 0, 0, "", NULL, true},
    {SEC_ROUTE, "max_keys", OPT_UINT, RT(max_keys), 0, 1, 10000000, "100000", NULL, true},
    {SEC_ROUTE, "max_response_size", OPT_SIZE, RT(max_response_size), 0, 0, NO_MAX, "64m", NULL, true},
    {SEC_ROUTE, "ca_file", OPT_FILE, RT(tls.ca_file), 0, 0, 0, "", NULL, true},
    {SEC_ROUTE, "client_cert", OPT_FILE, RT(tls.client_cert), 0, 0, 0, "", NULL, true},
    {SEC_ROUTE, "client_key", OPT_FILE, RT(tls.client_key), 0, 0, 0, "", NULL, true},
    {SEC_ROUTE, "tls_verify", OPT_BOOL, RT(tls.verify), 0, 0, 0, "on", NULL, true},
};

#define N_OPTIONS SL_ARRAY_LEN(options)

/* Enums are stored through an int pointer. */
_Static_assert(sizeof(enum sl_overflow) == sizeof(int), "enum size");
_Static_assert(sizeof(enum sl_log_level) == sizeof(int), "enum size");
_Static_assert(sizeof(enum sl_half_close) == sizeof(int), "enum size");

/* Parsing state: the input, the current section and what it has set. */
struct parser {
    const char *path;
    FILE *err;
    struct sl_config *cfg;
    size_t route_cap;
    int n_errors;
    bool oom;

    char *buf;                 /* the whole file, owned */
    size_t len;
    size_t pos;
    int lineno;                /* of the line last handed to inih */
    int first_syntax_line;     /* the first error inih will return, 0 if none */
    bool prev_key;             /* inih would take an indented line as a continuation */
    bool continuation;         /* the current line is one */

    enum section_kind sec;
    int sec_line;
    int seen_section[SEC_SKIP];
    int key_line[N_OPTIONS];   /* line each key was set on, 0 = not set */
};

static void report(struct parser *p, int line, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static const struct option *find_option(enum section_kind sec, const char *key);

/* One error line; `line` 0 means the file as a whole, `key` NULL none. */
static void report(struct parser *p, int line, const char *key, const char *fmt, ...)
{
    va_list ap;

    if (line > 0)
        fprintf(p->err, "%s:%d: ", p->path, line);
    else
        fprintf(p->err, "%s: ", p->path);
    if (key != NULL)
        fprintf(p->err, "%s: ", key);
    va_start(ap, fmt);
    vfprintf(p->err, fmt, ap);
    va_end(ap);
    fputc('\n', p->err);
    p->n_errors++;
}

/* ---- value parsers shared with the rest of the program ---- */

/* Digits only, no sign; -1 on garbage or overflow past `max`. */
static int parse_digits(const char **sp, uint64_t max, uint64_t *out)
{
    const char *s = *sp;
    uint64_t v = 0;

    if (!isdigit((unsigned char)*s))
        return -1;
    for (; isdigit((unsigned char)*s); s++) {
        unsigned d = (unsigned)(*s - '0');

        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *sp = s;
    *out = v;
    return 0;
}

/* Optional ".ddd" (1 to max_digits digits), scaled to `max_digits` places. */
static int parse_fraction(const char **sp, unsigned max_digits, uint64_t *out)
{
    const char *s = *sp;
    uint64_t v = 0;
    unsigned n = 0;

    *out = 0;
    if (*s != '.')
        return 0;
    for (s++; isdigit((unsigned char)*s); s++) {
        if (++n > max_digits)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    if (n == 0)
        return -1;
    for (; n < max_digits; n++)
        v *= 10;
    *sp = s;
    *out = v;
    return 0;
}

static int64_t duration_unit(const char *u)
{
    static const struct {
        const char *name;
        int64_t us;
    } units[] = {{"", USEC_S}, {"ms", USEC_MS}, {"s", USEC_S}, {"m", USEC_M},
                 {"h", USEC_H}, {"d", USEC_D}};

    for (size_t i = 0; i < SL_ARRAY_LEN(units); i++) {
        if (strcmp(u, units[i].name) == 0)
            return units[i].us;
    }
    return -1;
}

int sl_config_parse_duration(const char *s, int64_t *out_us)
{
    uint64_t whole, frac;
    int64_t unit, part;

    if (s == NULL || parse_digits(&s, UINT64_MAX, &whole) != 0 ||
        parse_fraction(&s, 6, &frac) != 0)
        return -1;
    unit = duration_unit(s);
    if (unit <= 0 || whole > (uint64_t)(INT64_MAX / unit))
        return -1;
    /* frac < 10^6 and unit <= 1d in µs, so this product fits easily. */
    part = (int64_t)(frac * (uint64_t)unit / 1000000u);
    if ((int64_t)whole * unit > INT64_MAX - part)
        return -1;
    *out_us = (int64_t)whole * unit + part;
    return 0;
}

int sl_config_parse_size(const char *s, size_t *out)
{
    uint64_t v, mult = 1;

    if (s == NULL || parse_digits(&s, UINT64_MAX, &v) != 0)
        return -1;
    switch (tolower((unsigned char)*s)) {
    case '\0': break;
    case 'k': mult = UINT64_C(1) << 10; s++; break;
    case 'm': mult = UINT64_C(1) << 20; s++; break;
    case 'g': mult = UINT64_C(1) << 30; s++; break;
    default: return -1;
    }
    if (*s != '\0' || v > SIZE_MAX / mult)
        return -1;
    *out = (size_t)(v * mult);
    return 0;
}

int sl_config_parse_limit(const char *s, struct sl_limit *out)
{
    static const char periods[] = "smhd";
    static const int64_t period_us[] = {USEC_S, USEC_M, USEC_H, USEC_D};
    uint64_t whole, milli;
    const char *p;

    if (s == NULL || parse_digits(&s, MAX_LIMIT_N, &whole) != 0 ||
        parse_fraction(&s, 3, &milli) != 0)
        return -1;
    if (s[0] != '/' || s[1] == '\0' || s[2] != '\0' || (p = strchr(periods, s[1])) == NULL)
        return -1;
    if (whole == 0 && milli == 0)
        return -1;
    out->n = (double)(whole * 1000 + milli) / 1000.0;
    out->period_us = period_us[p - periods];
    return 0;
}

/* Did option o's value differ between a and b (struct sl_config)? */
static bool option_differs(const struct option *o, const char *a, const char *b)
{
    if (o->type == OPT_ADDRS) {
        size_t n = *(const size_t *)(a + o->count_off);

        if (n != *(const size_t *)(b + o->count_off))
            return true;
        for (size_t i = 0; i < n; i++)
            if (strcmp(a + o->offset + i * SL_CONFIG_ADDR_LEN, b + o->offset + i * SL_CONFIG_ADDR_LEN) != 0)
                return true;
        return false;
    }
    if (o->type == OPT_ADDR || o->type == OPT_STRING || o->type == OPT_REDIS_URL)
        return strcmp(a + o->offset, b + o->offset) != 0;
    return memcmp(a + o->offset, b + o->offset, o->size) != 0;
}

void sl_config_keep_restart_keys(struct sl_config *cfg, const struct sl_config *old,
                                 void (*changed)(const char *key, void *arg), void *arg)
{
    /* Adding or removing [redis] changes where jobs live: a restart. */
    if (cfg->has_redis != old->has_redis && changed != NULL)
        changed("[redis]", arg);
    cfg->has_redis = old->has_redis;
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct option *o = &options[i];
        char *dst = (char *)cfg;
        const char *src = (const char *)old;

        if (o->reloadable || o->section == SEC_ROUTE)
            continue;
        if (option_differs(o, dst, src) && changed != NULL)
            changed(o->key, arg);
        memcpy(dst + o->offset, src + o->offset, o->size);
        if (o->count_off != 0)
            memcpy(dst + o->count_off, src + o->count_off, sizeof(size_t));
    }
}

int sl_config_find_route(const struct sl_config *cfg, const char *name)
{
    if (cfg == NULL || name == NULL)
        return -1;
    for (size_t i = 0; i < cfg->n_routes; i++) {
        if (strcmp(cfg->routes[i].name, name) == 0)
            return (int)i;
    }
    return -1;
}

/* ---- typed option setters: 0, or -1 after reporting ---- */

/* A duration or size bound as an operator would write it. */
static const char *format_bound(enum opt_type type, uint64_t v, char *buf, size_t size)
{
    static const struct {
        uint64_t div;
        const char *suffix;
    } dur[] = {{USEC_D, "d"}, {USEC_H, "h"}, {USEC_M, "m"}, {USEC_S, "s"}, {USEC_MS, "ms"}},
      sz[] = {{1u << 30, "g"}, {1u << 20, "m"}, {1u << 10, "k"}};
    size_t n = type == OPT_DURATION ? SL_ARRAY_LEN(dur) : SL_ARRAY_LEN(sz);

    for (size_t i = 0; i < n && v != 0; i++) {
        uint64_t div = type == OPT_DURATION ? dur[i].div : sz[i].div;

        if (v % div == 0) {
            snprintf(buf, size, "%llu%s", (unsigned long long)(v / div),
                     type == OPT_DURATION ? dur[i].suffix : sz[i].suffix);
            return buf;
        }
    }
    snprintf(buf, size, "%llu", (unsigned long long)v);
    return buf;
}

/* Reports `v` outside [min, max] in the option's own units. */
static int check_range(struct parser *p, const struct option *o, uint64_t v, const char *value)
{
    char lo[32], hi[32];

    if (v >= o->min && v <= o->max)
        return 0;
    format_bound(o->type, o->min, lo, sizeof(lo));
    if (o->max == NO_MAX)
        report(p, p->lineno, o->key, "must be at least %s, got \"%s\"", lo, value);
    else
        report(p, p->lineno, o->key, "must be between %s and %s, got \"%s\"", lo,
               format_bound(o->type, o->max, hi, sizeof(hi)), value);
    return -1;
}

static int set_string(struct parser *p, const struct option *o, void *field, const char *v)
{
    size_t n = strlen(v);

    if (n < o->min) {
        report(p, p->lineno, o->key, "must not be empty");
        return -1;
    }
    if (n >= o->size) {
        report(p, p->lineno, o->key, "too long (max %zu characters)", o->size - 1);
        return -1;
    }
    memcpy(field, v, n + 1);
    return 0;
}

static int set_bool(struct parser *p, const struct option *o, void *field, const char *v)
{
    static const char *const yes[] = {"on", "yes", "true", "1"};
    static const char *const no[] = {"off", "no", "false", "0"};

    for (size_t i = 0; i < SL_ARRAY_LEN(yes); i++) {
        if (strcasecmp(v, yes[i]) == 0 || strcasecmp(v, no[i]) == 0) {
            *(bool *)field = strcasecmp(v, yes[i]) == 0;
            return 0;
        }
    }
    report(p, p->lineno, o->key, "expected on, off, yes, no, true, false, 1 or 0, got \"%s\"", v);
    return -1;
}

static int set_uint(struct parser *p, const struct option *o, void *field, const char *v)
{
    const char *s = v;
    uint64_t n;

    if (parse_digits(&s, UINT64_MAX, &n) != 0 || *s != '\0' || n < o->min || n > o->max) {
        report(p, p->lineno, o->key, "expected an integer from %llu to %llu, got \"%s\"",
               (unsigned long long)o->min, (unsigned long long)o->max, v);
        return -1;
    }
    if (o->size == sizeof(unsigned))
        *(unsigned *)field = (unsigned)n;
    else
        *(size_t *)field = (size_t)n;
    return 0;
}

static int set_size(struct parser *p, const struct option *o, void *field, const char *v)
{
    size_t n;

    if (sl_config_parse_size(v, &n) != 0) {
        report(p, p->lineno, o->key, "expected a size like 512, 16k, 8m or 1g, got \"%s\"", v);
        return -1;
    }
    if (check_range(p, o, n, v) != 0)
        return -1;
    *(size_t *)field = n;
    return 0;
}

static int set_duration(struct parser *p, const struct option *o, void *field, const char *v)
{
    int64_t us;

    if (sl_config_parse_duration(v, &us) != 0) {
        report(p, p->lineno, o->key,
               "expected a duration like 250ms, 30s, 5m, 1h or 1d, got \"%s\"", v);
        return -1;
    }
    if (check_range(p, o, (uint64_t)us, v) != 0)
        return -1;
    *(int64_t *)field = us;
    return 0;
}

static int set_enum(struct parser *p, const struct option *o, void *field, const char *v)
{
    char expected[128] = "";
    size_t n = 0;

    while (o->names[n] != NULL)
        n++;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v, o->names[i]) == 0) {
            *(int *)field = (int)i;
            return 0;
        }
    }
    for (size_t i = 0; i < n; i++) {
        size_t used = strlen(expected);

        snprintf(expected + used, sizeof(expected) - used, "%s%s",
                 i == 0 ? "" : i + 1 == n ? " or " : ", ", o->names[i]);
    }
    report(p, p->lineno, o->key, "expected %s, got \"%s\"", expected, v);
    return -1;
}

static int set_limit(struct parser *p, const struct option *o, void *field, const char *v)
{
    if (sl_config_parse_limit(v, field) != 0) {
        report(p, p->lineno, o->key, "expected N/s, N/m, N/h or N/d, got \"%s\"", v);
        return -1;
    }
    return 0;
}

/*
 * Split a comma-separated value into trimmed items, in place in `copy`.
 * Returns the number of items (an empty value has none), or -1 past `max`.
 */
static int split_list(char *copy, char **items, size_t max)
{
    size_t n = 0;
    char *s = copy;

    if (*s == '\0')
        return 0;
    for (;;) {
        char *comma = strchr(s, ',');
        char *end;

        if (n == max)
            return -1;
        if (comma != NULL)
            *comma = '\0';
        while (isspace((unsigned char)*s))
            s++;
        end = s + strlen(s);
        while (end > s && isspace((unsigned char)end[-1]))
            *--end = '\0';
        items[n++] = s;
        if (comma == NULL)
            return (int)n;
        s = comma + 1;
    }
}

static int set_limits(struct parser *p, const struct option *o, void *base, const char *v)
{
    struct sl_limit parsed[SL_CONFIG_MAX_QUOTAS];
    char *items[SL_CONFIG_MAX_QUOTAS];
    char *copy = strdup(v);
    int n, rc = -1;

    if (copy == NULL) {
        p->oom = true;
        return -1;
    }
    n = split_list(copy, items, SL_CONFIG_MAX_QUOTAS);
    if (n < 0) {
        report(p, p->lineno, o->key, "at most %d limits allowed", SL_CONFIG_MAX_QUOTAS);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        if (sl_config_parse_limit(items[i], &parsed[i]) != 0) {
            report(p, p->lineno, o->key, "expected N/s, N/m, N/h or N/d, got \"%s\"", items[i]);
            goto out;
        }
    }
    memcpy((char *)base + o->offset, parsed, (size_t)n * sizeof(parsed[0]));
    *(size_t *)((char *)base + o->count_off) = (size_t)n;
    rc = 0;
out:
    free(copy);
    return rc;
}

static bool is_host_char(char c)
{
    return isalnum((unsigned char)c) || c == '.' || c == '-' || c == '_';
}

/* "[v6]" or a name or IPv4 literal; `host` is not NUL-terminated. */
static bool valid_host(const char *host, size_t len)
{
    char buf[SL_CONFIG_ADDR_LEN];
    unsigned char addr[16];
    bool numeric = true;

    if (len == 0 || len >= sizeof(buf))
        return false;
    if (host[0] == '[') {
        if (len < 3 || host[len - 1] != ']')
            return false;
        memcpy(buf, host + 1, len - 2);
        buf[len - 2] = '\0';
        return inet_pton(AF_INET6, buf, addr) == 1;
    }
    for (size_t i = 0; i < len; i++) {
        if (!is_host_char(host[i]))
            return false;
        numeric = numeric && (isdigit((unsigned char)host[i]) || host[i] == '.');
    }
    if (!numeric)
        return true;
    memcpy(buf, host, len);
    buf[len] = '\0';
    return inet_pton(AF_INET, buf, addr) == 1;
}

/* "1".."65535", nothing else. */
static bool valid_port(const char *s)
{
    uint64_t port;

    return *s != '0' && parse_digits(&s, 65535, &port) == 0 && *s == '\0' && port >= 1;
}

/* host:port with the port required; [v6]:port for IPv6. */
static bool valid_address(const char *a)
{
    const char *colon = strrchr(a, ':');

    if (strlen(a) >= SL_CONFIG_ADDR_LEN || colon == NULL || !valid_port(colon + 1))
        return false;
    return valid_host(a, (size_t)(colon - a));
}

static void bad_address(struct parser *p, const struct option *o, const char *a)
{
    report(p, p->lineno, o->key,
           "expected host:port or [v6]:port with port 1-65535, got \"%s\"", a);
}

static int set_addr(struct parser *p, const struct option *o, void *field, const char *v)
{
    if (*v != '\0' && !valid_address(v)) {
        bad_address(p, o, v);
        return -1;
    }
    snprintf(field, o->size, "%s", v);
    return 0;
}

static int check_addrs(struct parser *p, const struct option *o, char **items, int n)
{
    if (n == 0) {
        report(p, p->lineno, o->key, "at least one address is required");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (!valid_address(items[i])) {
            bad_address(p, o, items[i]);
            return -1;
        }
        for (int j = 0; j < i; j++) {
            if (strcmp(items[i], items[j]) == 0) {
                report(p, p->lineno, o->key, "duplicate address \"%s\"", items[i]);
                return -1;
            }
        }
    }
    return 0;
}

static int set_addrs(struct parser *p, const struct option *o, void *base, const char *v)
{
    char *items[SL_CONFIG_MAX_LISTEN];
    char(*out)[SL_CONFIG_ADDR_LEN] = (void *)((char *)base + o->offset);
    char *copy = strdup(v);
    int n, rc = -1;

    if (copy == NULL) {
        p->oom = true;
        return -1;
    }
    n = split_list(copy, items, SL_CONFIG_MAX_LISTEN);
    if (n < 0)
        report(p, p->lineno, o->key, "at most %d addresses allowed", SL_CONFIG_MAX_LISTEN);
    else if (check_addrs(p, o, items, n) == 0) {
        for (int i = 0; i < n; i++)
            snprintf(out[i], SL_CONFIG_ADDR_LEN, "%s", items[i]);
        *(size_t *)((char *)base + o->count_off) = (size_t)n;
        rc = 0;
    }
    free(copy);
    return rc;
}

/* Printable, no spaces: what may appear in a URL path. */
static bool is_path_text(const char *s)
{
    for (; *s != '\0'; s++) {
        if (!isgraph((unsigned char)*s))
            return false;
    }
    return true;
}

static int set_match(struct parser *p, const struct option *o, void *field, const char *v)
{
    const struct sl_config *cfg = p->cfg;

    if (v[0] != '/' || !is_path_text(v) || strlen(v) >= o->size) {
        report(p, p->lineno, o->key,
               "expected a path prefix starting with '/' (max %zu characters), got \"%s\"",
               o->size - 1, v);
        return -1;
    }
    (void)cfg; /* unique per host: checked when the section closes */
    memcpy(field, v, strlen(v) + 1);
    return 0;
}

/* scheme://host[:port][/base-path]: no credentials, query or fragment. */
static bool valid_upstream(const char *v)
{
    const char *auth, *path, *host_end;

    if (strncasecmp(v, "http://", 7) == 0)
        auth = v + 7;
    else if (strncasecmp(v, "https://", 8) == 0)
        auth = v + 8;
    else
        return false;
    path = auth + strcspn(auth, "/");
    if (!is_path_text(path) || strpbrk(path, "?#") != NULL)
        return false;
    /* An IPv6 literal has colons of its own: the port follows the ']'. */
    if (auth[0] == '[')
        host_end = memchr(auth, ']', (size_t)(path - auth));
    else
        host_end = memchr(auth, ':', (size_t)(path - auth));
    if (host_end == NULL)
        host_end = path;
    else if (auth[0] == '[')
        host_end++;
    if (host_end < path) {
        char port[8];
        size_t n = (size_t)(path - host_end - 1);

        if (*host_end != ':' || n == 0 || n >= sizeof(port))
            return false;
        memcpy(port, host_end + 1, n);
        port[n] = '\0';
        if (!valid_port(port))
            return false;
    }
    return valid_host(auth, (size_t)(host_end - auth));
}

static int set_upstream(struct parser *p, const struct option *o, void *field, const char *v)
{
    size_t n = strlen(v);

    if (n >= o->size || !valid_upstream(v)) {
        report(p, p->lineno, o->key,
               "expected http://host[:port][/base-path] or https://..., got \"%s\"", v);
        return -1;
    }
    /* A base path is joined with the request path, which brings its own '/'. */
    while (n > 0 && v[n - 1] == '/')
        n--;
    memcpy(field, v, n);
    ((char *)field)[n] = '\0';
    /* Lower-case the scheme so that users of the URL need not compare cases. */
    for (char *c = field; *c != ':'; c++)
        *c = (char)tolower((unsigned char)*c);
    return 0;
}

/* RFC 9110 token characters, as allowed in a header field name. */
static bool is_token(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        if (!isalnum((unsigned char)*s) && strchr("!#$%&'*+-.^_`|~", *s) == NULL)
            return false;
    }
    return true;
}

static int set_fair_key(struct parser *p, const struct option *o, void *field, const char *v)
{
    static const char prefix[] = "header:";
    const char *name;

    if (*v == '\0') {
        *(char *)field = '\0';
        return 0;
    }
    name = strncmp(v, prefix, sizeof(prefix) - 1) == 0 ? v + sizeof(prefix) - 1 : "";
    if (!is_token(name) || strlen(name) >= o->size) {
        report(p, p->lineno, o->key, "expected header:NAME or nothing, got \"%s\"", v);
        return -1;
    }
    memcpy(field, name, strlen(name) + 1);
    return 0;
}

/* header:NAME, query:NAME, client_ip, or nothing. */
static int set_limit_key(struct parser *p, const struct option *o, void *field, const char *v)
{
    struct sl_limit_key *lk = field;
    const char *name = "";

    (void)o;
    memset(lk, 0, sizeof(*lk));
    if (*v == '\0')
        return 0;
    if (strcmp(v, "client_ip") == 0) {
        lk->source = SL_KEY_CLIENT_IP;
        return 0;
    }
    if (strncmp(v, "header:", 7) == 0) {
        lk->source = SL_KEY_HEADER;
        name = v + 7;
    } else if (strncmp(v, "query:", 6) == 0) {
        lk->source = SL_KEY_QUERY;
        name = v + 6;
    }
    /* A query parameter name is matched as written: token characters keep it unambiguous. */
    if (lk->source == SL_KEY_NONE || !is_token(name) || strlen(name) >= sizeof(lk->name)) {
        report(p, p->lineno, "limit_key",
               "expected header:NAME, query:NAME, client_ip or nothing, got \"%s\"", v);
        memset(lk, 0, sizeof(*lk));
        return -1;
    }
    memcpy(lk->name, name, strlen(name) + 1);
    return 0;
}

/* A decimal number in [0, max] that ends the text or at `*end`. */
static int url_number(const char *s, size_t len, uint64_t max, unsigned *out)
{
    char buf[16];
    const char *p = buf;
    uint64_t v;

    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (parse_digits(&p, max, &v) != 0 || *p != '\0')
        return -1;
    *out = (unsigned)v;
    return 0;
}

/* unix:/path[?db=N[&password=P]] */
static int parse_unix_url(const char *s, struct sl_redis_url *u, const char **detail)
{
    const char *q = strchr(s, '?');
    size_t n = q != NULL ? (size_t)(q - s) : strlen(s);

    if (n < 2 || s[0] != '/' || n >= sizeof(u->path)) {
        *detail = "expected unix:/absolute/path (at most 107 characters)";
        return -1;
    }
    memcpy(u->path, s, n);
    u->path[n] = '\0';
    while (q != NULL) {
        const char *item = q + 1;
        const char *amp = strchr(item, '&');
        size_t len = amp != NULL ? (size_t)(amp - item) : strlen(item);

        if (len > 3 && strncmp(item, "db=", 3) == 0) {
            if (url_number(item + 3, len - 3, 1000000, &u->db) != 0) {
                *detail = "db must be a number";
                return -1;
            }
        } else if (len > 9 && strncmp(item, "password=", 9) == 0 &&
                   len - 9 < sizeof(u->password)) {
            memcpy(u->password, item + 9, len - 9);
            u->password[len - 9] = '\0';
        } else {
            *detail = "unix: urls take only ?db=N and &password=P";
            return -1;
        }
        q = amp;
    }
    return 0;
}

/* host[:port]: an IP literal ([v6] for IPv6) or localhost. */
static int parse_redis_host(const char *s, size_t len, struct sl_redis_url *u,
                            const char **detail)
{
    const char *end = s + len, *colon = NULL;
    char host[SL_CONFIG_ADDR_LEN];
    unsigned char addr[16];
    size_t hlen;

    if (len > 0 && s[0] == '[') {
        const char *rb = memchr(s, ']', len);

        if (rb == NULL)
            goto bad;
        colon = rb + 1 < end ? rb + 1 : NULL;
        if (colon != NULL && *colon != ':')
            goto bad;
        hlen = (size_t)(rb - s - 1);
        s++;
    } else {
        colon = memchr(s, ':', len);
        hlen = colon != NULL ? (size_t)(colon - s) : len;
    }
    if (hlen == 0 || hlen >= sizeof(u->host))
        goto bad;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    u->port = 6379;
    if (colon != NULL) {
        if (url_number(colon + 1, (size_t)(end - colon - 1), 65535, &u->port) != 0 ||
            u->port == 0) {
            *detail = "the port must be 1-65535";
            return -1;
        }
    }
    if (strcasecmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    if (inet_pton(AF_INET, host, addr) != 1 && inet_pton(AF_INET6, host, addr) != 1) {
        *detail = "the host must be an IP address or localhost (a name would be resolved "
                  "with a blocking lookup)";
        return -1;
    }
    memcpy(u->host, host, strlen(host) + 1);
    return 0;
bad:
    *detail = "expected host:port with an IP address, [v6] or localhost";
    return -1;
}

int sl_config_parse_redis_url(const char *s, struct sl_redis_url *out, const char **detail)
{
    struct sl_redis_url u;
    const char *auth, *at, *slash;

    memset(&u, 0, sizeof(u));
    *detail = "expected redis://[:password@]host:port/db or unix:/path?db=N";
    if (s == NULL || strlen(s) >= sizeof(u.text))
        return -1;
    memcpy(u.text, s, strlen(s) + 1);
    if (strncmp(s, "unix:", 5) == 0) {
        s += 5;
        if (strncmp(s, "//", 2) == 0)
            s += 2;
        if (parse_unix_url(s, &u, detail) != 0)
            return -1;
        *out = u;
        return 0;
    }
    if (strncasecmp(s, "redis://", 8) != 0)
        return -1;
    auth = s + 8;
    slash = auth + strcspn(auth, "/");
    at = memrchr(auth, '@', (size_t)(slash - auth));
    if (at != NULL) {
        size_t n = (size_t)(at - auth);

        /* ":password@"; a user name (Redis 6 ACL) is not supported. */
        if (n < 2 || auth[0] != ':' || n - 1 >= sizeof(u.password)) {
            *detail = "credentials must be written :password@ (no user name)";
            return -1;
        }
        memcpy(u.password, auth + 1, n - 1);
        u.password[n - 1] = '\0';
        auth = at + 1;
    }
    if (parse_redis_host(auth, (size_t)(slash - auth), &u, detail) != 0)
        return -1;
    if (*slash == '/' && slash[1] != '\0' &&
        url_number(slash + 1, strlen(slash + 1), 1000000, &u.db) != 0) {
        *detail = "the database must be a number: redis://host:port/0";
        return -1;
    }
    *out = u;
    return 0;
}

bool sl_config_redis_jobs(const struct sl_config *cfg)
{
    return cfg->has_redis && cfg->redis_jobs;
}

static int set_redis_url(struct parser *p, const struct option *o, void *field, const char *v)
{
    const char *detail;

    if (sl_config_parse_redis_url(v, field, &detail) != 0) {
        report(p, p->lineno, o->key, "%s, got \"%s\"", detail, v);
        return -1;
    }
    return 0;
}

/* "api.example.com", "localhost:8080", "[::1]:8080", or nothing. */
static int set_host(struct parser *p, const struct option *o, void *field, const char *v)
{
    size_t n = strlen(v);
    const char *colon = strrchr(v, ':');
    bool ok = n < o->size;

    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)v[i]) || strchr(".-:[]", v[i]) != NULL;
    /* A port, if any, is digits only (a bracketed IPv6 has colons inside). */
    if (ok && colon != NULL && strchr(v, ']') < colon)
        ok = colon[1] != '\0' && strspn(colon + 1, "0123456789") == strlen(colon + 1);
    if (!ok) {
        report(p, p->lineno, o->key, "expected a host name, optionally with :port, got \"%s\"",
               v);
        /* Not "" either: the route is not a duplicate of a host-less one. */
        snprintf(field, o->size, "%s", v);
        return -1;
    }
    for (size_t i = 0; i <= n; i++)
        ((char *)field)[i] = (char)tolower((unsigned char)v[i]);
    return 0;
}

/*
 * A file read later (a CA bundle, a certificate, a key): it must be a
 * readable regular file now, so that a typo fails the load and not the
 * first request. A relative path is taken from the config file's directory.
 */
static int set_file(struct parser *p, const struct option *o, void *field, const char *v)
{
    const char *slash = strrchr(p->path, '/');
    int dir_len = v[0] != '/' && slash != NULL ? (int)(slash - p->path) + 1 : 0;
    char path[SL_CONFIG_FILE_LEN];
    const char *why = NULL;
    struct stat st;
    int n, fd;

    if (*v == '\0') {
        *(char *)field = '\0';
        return 0;
    }
    n = snprintf(path, sizeof(path), "%.*s%s", dir_len, p->path, v);
    if (n < 0 || (size_t)n >= o->size) {
        report(p, p->lineno, o->key, "path too long (max %zu characters)", o->size - 1);
        return -1;
    }
    /* O_NONBLOCK: opening a FIFO must not hang the load. */
    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0)
        why = strerror(errno);
    else if (!S_ISREG(st.st_mode))
        why = "not a regular file";
    if (fd >= 0)
        close(fd);
    if (why != NULL) {
        report(p, p->lineno, o->key, "cannot read \"%s\": %s", path, why);
        return -1;
    }
    memcpy(field, path, (size_t)n + 1);
    return 0;
}

/* Parse `v` into the option's field of `base` (a config or a route). */
static int set_option(struct parser *p, const struct option *o, void *base, const char *v)
{
    void *field = (char *)base + o->offset;

    switch (o->type) {
    case OPT_STRING: return set_string(p, o, field, v);
    case OPT_BOOL: return set_bool(p, o, field, v);
    case OPT_UINT: return set_uint(p, o, field, v);
    case OPT_SIZE: return set_size(p, o, field, v);
    case OPT_DURATION: return set_duration(p, o, field, v);
    case OPT_ENUM: return set_enum(p, o, field, v);
    case OPT_LIMIT: return set_limit(p, o, field, v);
    case OPT_LIMITS: return set_limits(p, o, base, v);
    case OPT_ADDR: return set_addr(p, o, field, v);
    case OPT_ADDRS: return set_addrs(p, o, base, v);
    case OPT_MATCH: return set_match(p, o, field, v);
    case OPT_UPSTREAM: return set_upstream(p, o, field, v);
    case OPT_FAIR_KEY: return set_fair_key(p, o, field, v);
    case OPT_LIMIT_KEY: return set_limit_key(p, o, field, v);
    case OPT_HOST: return set_host(p, o, field, v);
    case OPT_FILE: return set_file(p, o, field, v);
    case OPT_REDIS_URL: return set_redis_url(p, o, field, v);
    }
    return -1;
}

/* ---- sections ---- */

static struct sl_route_config *current_route(struct parser *p)
{
    return &p->cfg->routes[p->cfg->n_routes - 1];
}

/* Defaults of one section kind into `base`. */
static void apply_defaults(struct parser *p, enum section_kind sec, void *base)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (options[i].section == sec && options[i].def != NULL)
            set_option(p, &options[i], base, options[i].def);
    }
}

static const struct option *find_option(enum section_kind sec, const char *key);

/* Line of a key of the current section, 0 if not set. */
static int line_of(const struct parser *p, const char *key)
{
    const struct option *o = find_option(p->sec, key);

    return o != NULL ? p->key_line[o - options] : 0;
}

/* Mutual TLS takes a certificate and its key: one alone is an error. */
static void check_client_cert(struct parser *p)
{
    const struct sl_tls_config *tls = &current_route(p)->tls;
    bool cert = tls->client_cert[0] != '\0', key = tls->client_key[0] != '\0';

    if (cert && !key)
        report(p, line_of(p, "client_cert"), "client_cert", "client_key is required with it");
    else if (key && !cert)
        report(p, line_of(p, "client_key"), "client_key", "client_cert is required with it");
}

/* Close the current section: report the required keys it lacks. */
/* Whole dispatches one window of `l` holds (a fractional N over a longer window holds 1). */
static double limit_units(const struct sl_limit *l)
{
    return l->n >= 1.0 ? floor(l->n + 1e-9) : 1.0;
}

/*
 * cost and max_cost: max_cost is at least cost unless set lower (an error),
 * and no request may cost more than a window of every limit holds (it
 * could never go).
 */
static void check_cost(struct parser *p, struct sl_route_config *r)
{
    int cost_line = p->key_line[find_option(SEC_ROUTE, "cost") - options];
    int max_line = p->key_line[find_option(SEC_ROUTE, "max_cost") - options];

    if (r->max_cost < r->cost && max_line != 0)
        report(p, max_line, "max_cost", "%u is less than cost (%u)", r->max_cost, r->cost);
    if (r->max_cost < r->cost)
        r->max_cost = r->cost;
    for (size_t i = 0; i <= r->n_quotas; i++) {
        const struct sl_limit *l = i == 0 ? &r->rate : &r->quotas[i - 1];

        if (l->n > 0 && (double)r->max_cost > limit_units(l)) {
            report(p, max_line != 0 ? max_line : cost_line != 0 ? cost_line : p->sec_line,
                   max_line != 0 ? "max_cost" : "cost",
                   "%u units would never fit the %s of %g per window", r->max_cost,
                   i == 0 ? "rate" : "quota", l->n);
            return;
        }
    }
}

static void end_section(struct parser *p)
{
    struct sl_route_config *r;

    if (p->sec != SEC_ROUTE)
        return;
    r = current_route(p);
    check_cost(p, r);
    r->limit_key_line = p->key_line[find_option(SEC_ROUTE, "limit_key") - options];
    r->jitter_proof_line = p->key_line[find_option(SEC_ROUTE, "jitter_proof") - options];
    r->window_guard_line = p->key_line[find_option(SEC_ROUTE, "window_guard") - options];
    if (r->window_guard_line == 0)
        r->window_guard_line = p->sec_line;
    if (r->limit_key_line == 0)
        r->limit_key_line = p->sec_line;
    if (r->jitter_proof_line == 0)
        r->jitter_proof_line = p->sec_line;
    if (r->limit_key.source != SL_KEY_NONE && r->fair_key[0] != '\0')
        report(p, p->key_line[find_option(SEC_ROUTE, "fair_key") - options], "fair_key",
               "limit_key already serves its keys round robin; set one of the two");
    /* The route being closed is the last one; compare with the earlier ones. */
    for (size_t i = 0; i + 1 < p->cfg->n_routes; i++) {
        const struct sl_route_config *o = &p->cfg->routes[i];

        if (r->match[0] != '\0' && strcmp(o->match, r->match) == 0 &&
            strcmp(o->host, r->host) == 0) {
            report(p, p->key_line[find_option(SEC_ROUTE, "match") - options], "match",
                   "\"%s\" is already the match of route %s%s%s", r->match, o->name,
                   r->host[0] != '\0' ? " for host " : "", r->host);
            break;
        }
    }
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (options[i].section == SEC_ROUTE && options[i].def == NULL && p->key_line[i] == 0)
            report(p, p->sec_line, NULL, "route %s: %s: required", current_route(p)->name,
                   options[i].key);
    }
    check_client_cert(p);
}

static bool valid_route_name(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n >= SL_CONFIG_NAME_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)name[i]) && strchr("_.-", name[i]) == NULL)
            return false;
    }
    return true;
}

/* Room for one more route; false (and p->oom) if out of memory. */
static bool grow_routes(struct parser *p)
{
    struct sl_config *cfg = p->cfg;
    struct sl_route_config *r;
    size_t cap;

    if (cfg->n_routes < p->route_cap)
        return true;
    cap = p->route_cap == 0 ? 4 : p->route_cap * 2;
    r = realloc(cfg->routes, cap * sizeof(*r));
    if (r == NULL) {
        p->oom = true;
        return false;
    }
    cfg->routes = r;
    p->route_cap = cap;
    return true;
}

/* [route NAME]: SEC_ROUTE with defaults applied, or SEC_SKIP after reporting. */
static enum section_kind begin_route(struct parser *p, const char *header, const char *name)
{
    struct sl_config *cfg = p->cfg;
    struct sl_route_config *r;
    int dup;

    if (!valid_route_name(name)) {
        report(p, p->lineno, header, "route name must be 1-%d characters of A-Z a-z 0-9 _ . -",
               SL_CONFIG_NAME_LEN - 1);
        return SEC_SKIP;
    }
    dup = sl_config_find_route(cfg, name);
    if (dup >= 0) {
        report(p, p->lineno, header, "duplicate route name (first at line %d)",
               cfg->routes[dup].line);
        return SEC_SKIP;
    }
    if (cfg->n_routes == SL_CONFIG_MAX_ROUTES) {
        report(p, p->lineno, header, "too many routes (max %d)", SL_CONFIG_MAX_ROUTES);
        return SEC_SKIP;
    }
    if (!grow_routes(p))
        return SEC_SKIP;
    r = &cfg->routes[cfg->n_routes++];
    memset(r, 0, sizeof(*r));
    snprintf(r->name, sizeof(r->name), "%s", name);
    r->line = p->lineno;
    apply_defaults(p, SEC_ROUTE, r);
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (options[i].section == SEC_ROUTE)
            p->key_line[i] = 0;
    }
    return SEC_ROUTE;
}

/* A fixed section; each may appear once. */
static enum section_kind begin_fixed(struct parser *p, const char *header, enum section_kind k)
{
    if (p->seen_section[k] != 0) {
        report(p, p->lineno, header, "duplicate section (first at line %d)",
               p->seen_section[k]);
        return SEC_SKIP;
    }
    p->seen_section[k] = p->lineno;
    if (k == SEC_REDIS)
        p->cfg->has_redis = true;
    return k;
}

/* `name` is the trimmed text between the brackets. */
static void begin_section(struct parser *p, const char *name)
{
    char header[256];

    end_section(p);
    p->sec_line = p->lineno;
    snprintf(header, sizeof(header), "[%s]", name);
    if (strncmp(name, "route", 5) == 0 && (name[5] == '\0' || isspace((unsigned char)name[5]))) {
        const char *rname = name + 5;

        while (isspace((unsigned char)*rname))
            rname++;
        p->sec = begin_route(p, header, rname);
        return;
    }
    for (int k = SEC_SERVER; k < SEC_ROUTE; k++) {
        if (strcmp(name, section_names[k]) == 0) {
            p->sec = begin_fixed(p, header, (enum section_kind)k);
            return;
        }
    }
    report(p, p->lineno, header, "unknown section");
    p->sec = SEC_SKIP;
}

/* ---- the inih side: reader and handler ---- */

/* inih's inline comment rule: ';' preceded by whitespace. */
static const char *find_or_comment(const char *s, const char *chars)
{
    bool was_space = false;

    for (; *s != '\0' && strchr(chars, *s) == NULL; s++) {
        if (was_space && *s == ';')
            break;
        was_space = isspace((unsigned char)*s);
    }
    return s;
}

/* A syntax error; keys up to the next good header belong to no section. */
static void syntax_error(struct parser *p, bool section_lost)
{
    report(p, p->lineno, NULL, "syntax error");
    if (section_lost) {
        end_section(p);
        p->sec = SEC_SKIP;
    }
}

/* A "[...]" line (start trimmed): begin the section, or report it. */
static void classify_section(struct parser *p, char *start)
{
    char *end = (char *)find_or_comment(start + 1, "]");
    const char *rest;
    char *name = start + 1;

    if (*end != ']') {
        if (p->first_syntax_line == 0) /* inih rejects this line too */
            p->first_syntax_line = p->lineno;
        syntax_error(p, true);
        return;
    }
    p->prev_key = false;
    rest = end + 1;
    while (isspace((unsigned char)*rest))
        rest++;
    /* inih ignores anything after ']'; we only allow a comment there. */
    if (*rest != '\0' && *rest != ';' && *rest != '#') {
        syntax_error(p, true);
        return;
    }
    *end = '\0';
    while (end > name && isspace((unsigned char)end[-1]))
        *--end = '\0';
    while (isspace((unsigned char)*name))
        name++;
    begin_section(p, name);
}

/*
 * Classify one line before inih sees it, mirroring inih's rules: comment,
 * continuation of the previous key, section header, name=value, or a syntax
 * error. Only section headers and syntax errors are handled here; values
 * reach config_on_value() through inih. `line` is a scratch copy.
 */
static void classify(struct parser *p, char *line)
{
    char *start = line, *end;

    p->continuation = false;
    if (p->lineno == 1 && strncmp(line, "\xEF\xBB\xBF", 3) == 0)
        start += 3;
    while (isspace((unsigned char)*start))
        start++;
    end = start + strlen(start);
    while (end > start && isspace((unsigned char)end[-1]))
        *--end = '\0';
    if (*start == '\0' || *start == ';' || *start == '#')
        return;
    if (p->prev_key && start > line) {
        p->continuation = true;
        return;
    }
    if (*start == '[') {
        classify_section(p, start);
        return;
    }
    end = (char *)find_or_comment(start, "=:");
    if (*end == '\0' || *end == ';') {
        if (p->first_syntax_line == 0) /* inih rejects this line too */
            p->first_syntax_line = p->lineno;
        syntax_error(p, false);
        return;
    }
    p->prev_key = end > start; /* inih keeps no name for "=value" */
}

/*
 * inih's reader: hand over the next line, as fgets would. A line that does
 * not fit inih's buffer is reported and replaced by an empty line, so that
 * its tail is never parsed as a line of its own.
 */
static char *config_on_read(char *str, int num, void *user)
{
    struct parser *p = user;
    const char *line = p->buf + p->pos;
    const char *nl;
    size_t len, max = num > 2 ? (size_t)num - 2 : 0;

    if (p->pos >= p->len || p->oom)
        return NULL;
    nl = memchr(line, '\n', p->len - p->pos);
    len = nl != NULL ? (size_t)(nl - line) : p->len - p->pos;
    p->pos += len + (nl != NULL);
    p->lineno++;
    if (len > max || memchr(line, '\0', len) != NULL) {
        if (len > max)
            report(p, p->lineno, NULL, "line too long (max %zu characters)", max);
        else
            report(p, p->lineno, NULL, "syntax error");
        p->continuation = false;
        snprintf(str, (size_t)num, "\n");
        return str;
    }
    memcpy(str, line, len);
    str[len] = '\0';
    classify(p, str);
    /* classify() trimmed its view of the line in place: hand inih a fresh copy. */
    memcpy(str, line, len);
    str[len] = '\n';
    str[len + 1] = '\0';
    return str;
}

static const struct option *find_option(enum section_kind sec, const char *key)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (options[i].section == sec && strcmp(options[i].key, key) == 0)
            return &options[i];
    }
    return NULL;
}

static void unknown_key(struct parser *p, const char *key)
{
    if (p->sec == SEC_ROUTE)
        report(p, p->lineno, key, "unknown key in [route %s]", current_route(p)->name);
    else
        report(p, p->lineno, key, "unknown key in [%s]", section_names[p->sec]);
}

/* inih's handler: one name=value in the section our reader tracks. */
static int config_on_value(void *user, const char *section, const char *name,
                           const char *value)
{
    struct parser *p = user;
    const struct option *o;
    size_t idx;

    (void)section; /* truncated by inih; p->sec is the real one */
    if (p->sec == SEC_SKIP || p->oom)
        return 1;
    if (*name == '\0') {
        report(p, p->lineno, NULL, "syntax error");
        return 1;
    }
    if (p->sec == SEC_NONE) {
        report(p, p->lineno, name, "key outside any section");
        return 1;
    }
    if (p->continuation) {
        report(p, p->lineno, name, "duplicate key");
        return 1;
    }
    o = find_option(p->sec, name);
    if (o == NULL) {
        unknown_key(p, name);
        return 1;
    }
    idx = (size_t)(o - options);
    if (p->key_line[idx] != 0) {
        report(p, p->lineno, name, "duplicate key");
        return 1;
    }
    p->key_line[idx] = p->lineno;
    set_option(p, o, p->sec == SEC_ROUTE ? (void *)current_route(p) : (void *)p->cfg, value);
    return 1;
}

/* ---- loading ---- */

/* The whole file into p->buf, growing it up to MAX_FILE_SIZE; -1 after reporting. */
static int read_file(struct parser *p)
{
    FILE *f = fopen(p->path, "rb");
    size_t cap = 0, n;
    int rc = -1;

    if (f == NULL) {
        report(p, 0, NULL, "cannot read: %s", strerror(errno));
        return -1;
    }
    do {
        if (p->len == cap) {
            char *bigger;

            if (cap > MAX_FILE_SIZE)
                break;
            cap = cap == 0 ? 8192 : cap * 2;
            bigger = realloc(p->buf, cap);
            if (bigger == NULL) {
                report(p, 0, NULL, "out of memory");
                goto out;
            }
            p->buf = bigger;
        }
        n = fread(p->buf + p->len, 1, cap - p->len, f);
        p->len += n;
    } while (n > 0);
    if (ferror(f))
        report(p, 0, NULL, "cannot read: %s", strerror(errno));
    else if (p->len > MAX_FILE_SIZE)
        report(p, 0, NULL, "cannot read: larger than %u bytes", MAX_FILE_SIZE);
    else
        rc = 0;
out:
    fclose(f);
    return rc;
}

static int key_line(const struct parser *p, const char *key)
{
    const struct option *o = find_option(SEC_SERVER, key);

    return o != NULL ? p->key_line[o - options] : 0;
}

/* The least window_guard a shared-limit route takes (shlimit.h: its budget). */
#define SHARED_MIN_GUARD_US 1000

/* Checks that need the whole file. */
static void validate(struct parser *p)
{
    const struct sl_config *cfg = p->cfg;

    /*
     * Shared limits live in Redis as one log per route. Per-key limits
     * would need a log per key value there (a write per new key, keys an
     * attacker can mint): refused rather than half strict. Dating by
     * answers needs a second write per dispatch: refused too.
     */
    for (size_t i = 0; cfg->has_redis && cfg->redis_shared_limit && i < cfg->n_routes; i++) {
        const struct sl_route_config *r = &cfg->routes[i];

        if (r->limit_key.source != SL_KEY_NONE)
            report(p, r->limit_key_line, "limit_key",
                   "route %s: per-key limits cannot be shared: set [redis] shared_limit = off "
                   "or remove limit_key", r->name);
        /* The guard covers the Redis round trip: with none, no grant could be used. */
        if (r->window_guard_us < SHARED_MIN_GUARD_US)
            report(p, r->window_guard_line, "window_guard",
                   "route %s: at least 1ms with [redis] shared_limit = on (it covers the "
                   "round trip to Redis), got %gms", r->name, (double)r->window_guard_us / 1000.0);
        if (r->jitter_proof)
            report(p, r->jitter_proof_line, "jitter_proof",
                   "route %s: not available with [redis] shared_limit = on (the window_guard "
                   "covers the jitter)", r->name);
    }

    for (size_t i = 0; i < cfg->n_listen && cfg->admin_listen[0] != '\0'; i++) {
        if (strcmp(cfg->listen[i], cfg->admin_listen) == 0) {
            int line = key_line(p, "admin_listen");

            report(p, line != 0 ? line : key_line(p, "listen"), "admin_listen",
                   "same address as listen");
            break;
        }
    }
    if (cfg->n_routes == 0)
        report(p, 0, NULL, "at least one [route NAME] section is required");
}

/* Parse and validate everything into p->cfg; the number of errors. */
static int parse(struct parser *p)
{
    int rc;

    if (read_file(p) != 0)
        return p->n_errors;
    apply_defaults(p, SEC_SERVER, p->cfg);
    apply_defaults(p, SEC_QUEUE, p->cfg);
    apply_defaults(p, SEC_REDIS, p->cfg);
    rc = ini_parse_stream(config_on_read, p, config_on_value, p);
    if (p->oom || rc == -2) {
        report(p, 0, NULL, "out of memory");
        return p->n_errors;
    }
    end_section(p);
    /* Our reader should have seen every syntax error inih finds. */
    if (rc > 0 && rc != p->first_syntax_line)
        report(p, rc, NULL, "syntax error");
    validate(p);
    return p->n_errors;
}

struct sl_config *sl_config_load(const char *path, FILE *err)
{
    struct parser *p = calloc(1, sizeof(*p));
    struct sl_config *cfg = calloc(1, sizeof(*cfg));

    if (err == NULL)
        err = stderr;
    if (p == NULL || cfg == NULL) {
        fprintf(err, "%s: out of memory\n", path);
        goto fail;
    }
    p->path = path;
    p->err = err;
    p->cfg = cfg;
    if (strlen(path) >= sizeof(cfg->path)) {
        report(p, 0, NULL, "cannot read: path too long");
        goto fail;
    }
    memcpy(cfg->path, path, strlen(path) + 1);
    if (parse(p) != 0)
        goto fail;
    free(p->buf);
    free(p);
    return cfg;

fail:
    if (p != NULL)
        free(p->buf);
    free(p);
    sl_config_free(cfg);
    return NULL;
}

void sl_config_free(struct sl_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->routes);
    free(cfg);
}
