/*
 * config.h - the parsed configuration file (SPEC section 3).
 *
 * sl_config_load() parses an INI file with inih through a declarative option
 * table, validates it in stages (syntax, each key, cross-key) and reports
 * every error as "FILE:LINE: key: message". A struct sl_config is immutable
 * once loaded; a reload builds a new one and swaps it in.
 *
 * Ownership: sl_config_load() returns a config owned by the caller, freed
 * with sl_config_free(); it owns its routes array. Strings are fixed-size
 * arrays inside the structs so that they need no separate frees.
 */
#ifndef SL_CONFIG_H
#define SL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "log.h"

#define SL_CONFIG_MAX_LISTEN 16
#define SL_CONFIG_MAX_QUOTAS 8
#define SL_CONFIG_MAX_ROUTES 256
#define SL_CONFIG_ADDR_LEN 128   /* "host:port", IPv6 as "[::1]:8080" */
#define SL_CONFIG_NAME_LEN 64
#define SL_CONFIG_PATH_LEN 512   /* route match prefix */
#define SL_CONFIG_URL_LEN 1024
#define SL_CONFIG_TOKEN_LEN 256
#define SL_CONFIG_HEADER_LEN 128
#define SL_CONFIG_HOST_LEN 256     /* a DNS name, optionally with ":port" */
#define SL_CONFIG_FILE_LEN 1024  /* a file path, after joining the config's directory */

#define SL_CONFIG_DEFAULT_PATH "/etc/sluice/sluice.conf"

enum sl_overflow {
    SL_OVERFLOW_BACKPRESSURE = 0,
    SL_OVERFLOW_REJECT,
};

/* What a parked request becomes when its client stops sending (a FIN). */
enum sl_half_close {
    SL_HALF_CLOSE_ABANDON = 0,         /* the client is gone: leave without a token */
    SL_HALF_CLOSE_WAIT,                /* it may still read: stay parked, answer it */
};

/*
 * One limit "N/P": at most n dispatches in any half-open window of period_us.
 * n may be fractional as written (0.5/s); the limiter normalises it.
 */
struct sl_limit {
    double n;
    int64_t period_us;
};

/* Where a route's limit_key comes from (SPEC section 3). */
enum sl_key_source {
    SL_KEY_NONE = 0,
    SL_KEY_HEADER,                     /* header:NAME */
    SL_KEY_QUERY,                      /* query:NAME */
    SL_KEY_CLIENT_IP,                  /* client_ip */
};

struct sl_limit_key {
    enum sl_key_source source;
    char name[SL_CONFIG_HEADER_LEN];   /* header or query parameter name; "" otherwise */
};

/*
 * A route's TLS settings for an https:// upstream. Only the upstream
 * backends read them (through struct sl_upstream_request); http:// routes
 * ignore them. The files were readable when the config was loaded.
 */
struct sl_tls_config {
    char ca_file[SL_CONFIG_FILE_LEN];     /* CA bundle; "" = the system's */
    char client_cert[SL_CONFIG_FILE_LEN]; /* PEM; with client_key (both or neither) */
    char client_key[SL_CONFIG_FILE_LEN];  /* PEM, unencrypted */
    bool verify;                          /* default on; off is logged as a warning */
};

/* One [route NAME] section. */
struct sl_route_config {
    char name[SL_CONFIG_NAME_LEN];
    char match[SL_CONFIG_PATH_LEN];    /* path prefix, starts with '/' */
    char host[SL_CONFIG_HOST_LEN];     /* only requests with this Host (lowercase); "" = any */
    bool strip_prefix;                 /* default off: the upstream path keeps the match */
    char upstream[SL_CONFIG_URL_LEN];  /* scheme://host[:port][/base], no trailing '/' */
    struct sl_limit rate;              /* required */
    unsigned burst;                    /* >= 1, default 1 */
    unsigned cost;                     /* units a dispatch takes, default 1 */
    unsigned max_cost;                 /* most a request may ask with X-Sluice-Cost, default 1 */
    struct sl_limit quotas[SL_CONFIG_MAX_QUOTAS];
    size_t n_quotas;
    unsigned max_in_flight;            /* default 32 */
    int64_t timeout_us;                /* default 30s */
    unsigned retries;                  /* default 2 */
    bool honor_retry_after;            /* default on */
    bool preserve_host;                /* default off */
    int64_t window_guard_us;           /* default 3ms: extra age past each window */
    bool jitter_proof;                 /* default off: date dispatches by their answers */
    bool rewrite_redirects;            /* default on: Location into the client's view */
    char fair_key[SL_CONFIG_HEADER_LEN]; /* header name of "header:NAME", "" = none */
    struct sl_limit_key limit_key;     /* one strict limiter per key value; none by default */
    size_t max_keys;                   /* live keys per route, default 100000 */
    size_t max_response_size;          /* default 64m: stored answers (batch items, jobs) */
    struct sl_tls_config tls;
    int line;                          /* line of the [route NAME] header */
    int limit_key_line;                /* of limit_key (else the header), for cross-section errors */
    int jitter_proof_line;             /* of jitter_proof (else the header) */
    int window_guard_line;             /* of window_guard (else the header) */
};

/*
 * A [redis] url, parsed at load: redis://[:password@]host[:port][/db] with an
 * IP literal host ("localhost" is resolved to 127.0.0.1 here: hiredis 0.14
 * would resolve names with a blocking getaddrinfo on the loop), or
 * unix:/path[?db=N[&password=P]].
 */
struct sl_redis_url {
    char text[SL_CONFIG_URL_LEN];      /* as written; holds the password: never log it */
    char host[48];                     /* IP literal; "" for a unix socket */
    unsigned port;                     /* default 6379 */
    char path[108];                    /* unix socket path, "" for TCP */
    char password[256];                /* "" = no AUTH */
    unsigned db;                       /* SELECT on connect when > 0 */
};

struct sl_config {
    char path[SL_CONFIG_URL_LEN];      /* the file it was read from */

    /* [server] */
    char listen[SL_CONFIG_MAX_LISTEN][SL_CONFIG_ADDR_LEN];
    size_t n_listen;                   /* >= 1 */
    char admin_listen[SL_CONFIG_ADDR_LEN]; /* "" disables */
    char admin_token[SL_CONFIG_TOKEN_LEN]; /* "" = no token */
    unsigned max_connections;          /* default 10000 */
    int64_t client_timeout_us;         /* default 60s: idle between requests */
    int64_t client_header_timeout_us;  /* default 10s: a whole request head */
    int64_t client_body_timeout_us;    /* default 60s: a whole request body */
    size_t max_batch_items;            /* default 1000: items in one POST /_sluice/batch */
    size_t max_header_size;            /* default 16k */
    size_t max_body_size;              /* default 8m */
    size_t stream_buffer;              /* default 256k: a streamed answer's bytes held
                                        * for one client before the upstream waits */
    int64_t drain_timeout_us;          /* default 30s */
    enum sl_log_level log_level;       /* default info */
    bool access_log;                   /* default on */
    enum sl_half_close half_close;     /* default abandon */

    /* [queue] */
    size_t queue_max_depth;            /* default 100000 */
    size_t queue_max_bytes;            /* default 256m */
    enum sl_overflow overflow;         /* default backpressure */
    int64_t queue_timeout_us;          /* default 300s; 0 = no limit */

    /* [redis]: absent = memory only. result_ttl also applies to memory jobs. */
    bool has_redis;
    struct sl_redis_url redis_url;
    char redis_prefix[SL_CONFIG_NAME_LEN];
    bool redis_jobs;                   /* default on (with a [redis] section) */
    bool redis_shared_limit;           /* default off: route limits decided in Redis (shlimit.h); restart to change */
    int64_t redis_result_ttl_us;       /* default 1h */
    unsigned redis_max_deliveries;     /* default 5 */
    int64_t redis_claim_after_us;      /* default 30s */

    struct sl_route_config *routes;    /* owned; n_routes >= 1 */
    size_t n_routes;
};

/*
 * Load and validate `path`. On success returns the config (caller owns it).
 * On failure writes one line per error to `err` ("FILE:LINE: key: message",
 * FILE as given in `path`) and returns NULL.
 */
struct sl_config *sl_config_load(const char *path, FILE *err);

void sl_config_free(struct sl_config *cfg);

/* "250ms 30s 5m 1h 1d" (a bare number is seconds). 0 on success, -1 if bad. */
int sl_config_parse_duration(const char *s, int64_t *out_us);

/* "512 16k 8m 1g" (binary multiples). 0 on success, -1 if bad. */
int sl_config_parse_size(const char *s, size_t *out);

/*
 * Parse a [redis] url (struct sl_redis_url). 0 on success; -1 with *detail
 * set to what is wrong.
 */
int sl_config_parse_redis_url(const char *s, struct sl_redis_url *out, const char **detail);

/* Are Redis-backed jobs in use (a [redis] section with jobs = on)? */
bool sl_config_redis_jobs(const struct sl_config *cfg);

/* "10/s", "0.5/s", "5000/h", "100000/d". 0 on success, -1 if bad. */
int sl_config_parse_limit(const char *s, struct sl_limit *out);

/*
 * Keys the option table marks as needing a restart (listen, admin_listen,
 * [redis] url...) keep their values from `old`; `changed` (may be NULL) is
 * told the name of each one whose value differed.
 */
void sl_config_keep_restart_keys(struct sl_config *cfg, const struct sl_config *old,
                                 void (*changed)(const char *key, void *arg), void *arg);

/* Index of the route named `name`, or -1. */
int sl_config_find_route(const struct sl_config *cfg, const char *name);

#endif
