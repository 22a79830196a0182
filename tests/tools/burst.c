/*
 * burst - fires N HTTP/1.1 requests over C keep-alive connections and
 * reports what came back.
 *
 * Used by the integration tests, the demo and bench/. Each connection slot
 * owns one evhttp_connection and carries one request at a time; a slot timer
 * bounds each request (--timeout, --abandon-*), and --max-seconds bounds the
 * run. Timed-out and abandoned requests are ended by freeing the slot's
 * connection from the timer: evhttp then frees the pending request without
 * calling its callback, so nothing touches freed state, and the slot opens a
 * fresh connection for its next request.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>

#include "toolutil.h"

#define MAX_HEADERS 64
#define MAX_N 1000000
#define MAX_C 20000
#define US_PER_S INT64_C(1000000)

/* Outcome codes below 1; HTTP statuses are stored as themselves. */
enum { R_PENDING = 0, R_TIMEOUT = -1, R_ERROR = -2, R_ABANDONED = -3 };

/* Response headers copied to --results, in column order. */
enum { H_ERROR, H_RETRY_AFTER, H_QUEUE_TIME, H_ATTEMPTS, NHDR };
static const char *const hdr_names[NHDR] = {
    "X-Sluice-Error", "Retry-After", "X-Sluice-Queue-Time", "X-Sluice-Attempts",
};

struct options {
    char host[INET_ADDRSTRLEN];
    char host_header[300];
    int port;
    char target[8192];          /* path?query as sent */
    int64_t n, c;
    enum evhttp_cmd_type method;
    char *hname[MAX_HEADERS];   /* each points into its own strdup'd copy */
    const char *hvalue[MAX_HEADERS];
    int nheaders;
    const char *body;
    int seq, json;
    int64_t interval_us;
    int64_t timeout_us;
    int64_t abandon_from;       /* -1: never abandon */
    int64_t abandon_after_us;
    const char *results;
    int64_t max_us;
};

struct outcome {
    int64_t lat_us;
    int code;
};

struct burst;

/* One connection slot: at most one request in flight. */
struct slot {
    struct burst *b;
    struct evhttp_connection *con;  /* NULL until needed, or after a kill */
    struct event *timer;
    int64_t idx;                    /* request carried; -1 when idle */
    int64_t start;
};

struct burst {
    const struct options *o;
    struct event_base *base;
    struct slot *slots;
    size_t nslots;
    size_t *idle;                   /* stack of idle slot numbers */
    size_t nidle;
    struct outcome *out;
    char **hdrs;                    /* NHDR per request, only with --results */
    int64_t next, done;
    int64_t next_start_at;
    struct event *pace;
    int64_t t0, t_end;
};

static struct timeval us_to_tv(int64_t us)
{
    struct timeval tv;

    if (us < 0)
        us = 0;
    tv.tv_sec = (time_t)(us / US_PER_S);
    tv.tv_usec = (suseconds_t)(us % US_PER_S);
    return tv;
}

/* ---- command line ----------------------------------------------------- */

static void usage(FILE *out)
{
    fprintf(out,
        "usage: burst --url http://HOST:PORT/path[?q] -n N -c C [-m METHOD]\n"
        "         [-H \"Name: value\"]... [-d BODY] [--seq] [--interval-us U]\n"
        "         [--timeout S] [--abandon-from K --abandon-after-ms T]\n"
        "         [--results FILE] [--json] [--max-seconds S]\n");
}

static _Noreturn void die_usage(const char *what, const char *arg)
{
    tool_die_usage("burst", usage, what, arg);
}

/* Seconds (fractions allowed) to microseconds. */
static int parse_seconds_us(const char *s, int64_t *out_us)
{
    double v;

    if (tool_parse_seconds(s, &v) != 0)
        return -1;
    *out_us = (int64_t)(v * 1e6);
    return *out_us > 0 ? 0 : -1;
}

static int parse_method(const char *s, enum evhttp_cmd_type *out)
{
    static const struct { const char *name; enum evhttp_cmd_type type; } m[] = {
        { "GET", EVHTTP_REQ_GET }, { "HEAD", EVHTTP_REQ_HEAD },
        { "POST", EVHTTP_REQ_POST }, { "PUT", EVHTTP_REQ_PUT },
        { "PATCH", EVHTTP_REQ_PATCH }, { "DELETE", EVHTTP_REQ_DELETE },
        { "OPTIONS", EVHTTP_REQ_OPTIONS }, { "TRACE", EVHTTP_REQ_TRACE },
    };

    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        if (strcmp(s, m[i].name) == 0) {
            *out = m[i].type;
            return 0;
        }
    }
    return -1;
}

/* http://HOST[:PORT][/path][?query], HOST an IPv4 literal or localhost. */
static int parse_url(const char *url, struct options *o)
{
    struct evhttp_uri *u = evhttp_uri_parse(url);
    const char *scheme, *host, *path, *query;
    struct in_addr a;
    int rc = -1, n;

    if (u == NULL)
        return -1;
    scheme = evhttp_uri_get_scheme(u);
    host = evhttp_uri_get_host(u);
    path = evhttp_uri_get_path(u);
    query = evhttp_uri_get_query(u);
    o->port = evhttp_uri_get_port(u) < 0 ? 80 : evhttp_uri_get_port(u);
    if (scheme == NULL || evutil_ascii_strcasecmp(scheme, "http") != 0 ||
        host == NULL || evhttp_uri_get_userinfo(u) != NULL || o->port == 0)
        goto out;
    if (evutil_ascii_strcasecmp(host, "localhost") == 0)
        host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &a) != 1)
        goto out;
    snprintf(o->host, sizeof o->host, "%s", host);
    snprintf(o->host_header, sizeof o->host_header, "%s:%d",
             evhttp_uri_get_host(u), o->port);
    n = snprintf(o->target, sizeof o->target, "%s%s%s",
                 path && *path ? path : "/", query ? "?" : "", query ? query : "");
    rc = n > 0 && (size_t)n < sizeof o->target ? 0 : -1;
out:
    evhttp_uri_free(u);
    return rc;
}

/* "Name: value" into the header list; the copy is freed by options_free. */
static int parse_header(const char *arg, struct options *o)
{
    char *copy, *colon, *v;

    if (o->nheaders == MAX_HEADERS || (copy = strdup(arg)) == NULL)
        return -1;
    colon = strchr(copy, ':');
    if (colon == NULL || colon == copy || strpbrk(copy, "\r\n") != NULL) {
        free(copy);
        return -1;
    }
    *colon = '\0';
    for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
        continue;
    o->hname[o->nheaders] = copy;
    o->hvalue[o->nheaders] = v;
    o->nheaders++;
    return 0;
}

static void options_free(struct options *o)
{
    for (int i = 0; i < o->nheaders; i++)
        free(o->hname[i]);
    o->nheaders = 0;
}

static int parse_option(int c, const char *arg, struct options *o)
{
    int64_t v;

    switch (c) {
    case 'u': return parse_url(arg, o);
    case 'n': return tool_parse_int(arg, 1, MAX_N, &o->n);
    case 'c': return tool_parse_int(arg, 1, MAX_C, &o->c);
    case 'm': return parse_method(arg, &o->method);
    case 'H': return parse_header(arg, o);
    case 'd': o->body = arg; return 0;
    case 's': o->seq = 1; return 0;
    case 'j': o->json = 1; return 0;
    case 'i': return tool_parse_int(arg, 0, 3600 * US_PER_S, &o->interval_us);
    case 't': return parse_seconds_us(arg, &o->timeout_us);
    case 'a': return tool_parse_int(arg, 0, MAX_N, &o->abandon_from);
    case 'A':
        if (tool_parse_int(arg, 1, 86400000, &v) != 0)
            return -1;
        o->abandon_after_us = v * 1000;
        return 0;
    case 'r': o->results = arg; return 0;
    case 'x': return parse_seconds_us(arg, &o->max_us);
    }
    return -1;
}

static void parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longs[] = {
        { "url", required_argument, NULL, 'u' },
        { "seq", no_argument, NULL, 's' },
        { "json", no_argument, NULL, 'j' },
        { "interval-us", required_argument, NULL, 'i' },
        { "timeout", required_argument, NULL, 't' },
        { "abandon-from", required_argument, NULL, 'a' },
        { "abandon-after-ms", required_argument, NULL, 'A' },
        { "results", required_argument, NULL, 'r' },
        { "max-seconds", required_argument, NULL, 'x' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c, have_url = 0;

    memset(o, 0, sizeof *o);
    o->method = EVHTTP_REQ_GET;
    o->timeout_us = 60 * US_PER_S;
    o->max_us = 300 * US_PER_S;
    o->abandon_from = -1;
    o->abandon_after_us = -1;
    for (int guard = 0; guard <= argc; guard++) {
        if ((c = getopt_long(argc, argv, "n:c:m:H:d:", longs, NULL)) == -1)
            break;
        if (c == 'h') {
            usage(stdout);
            exit(0);
        }
        if (c == '?' || c == ':')
            die_usage("bad option", argv[optind - 1]);
        if (parse_option(c, optarg, o) != 0)
            die_usage("invalid value", optarg);
        have_url |= c == 'u';
    }
    if (optind < argc)
        die_usage("unexpected argument", argv[optind]);
    if (!have_url || o->n == 0 || o->c == 0)
        die_usage("--url, -n and -c are required", "");
    if ((o->abandon_from < 0) != (o->abandon_after_us < 0))
        die_usage("--abandon-from and --abandon-after-ms go together", "");
}

/* Each connection is a descriptor: C up to 20000 needs more than 1024.
 * Returns how many connections the descriptor limit leaves room for. */
#define FD_RESERVE 32
static int64_t raise_nofile(int64_t conns)
{
    return tool_raise_nofile(conns + FD_RESERVE) - FD_RESERVE;
}

/* ---- requests --------------------------------------------------------- */

static void kick(struct burst *b)
{
    if (!event_pending(b->pace, EV_TIMEOUT, NULL))
        event_active(b->pace, EV_TIMEOUT, 1);
}

/* Records the outcome of the slot's request and makes the slot idle. */
static void finish(struct slot *s, int code)
{
    struct burst *b = s->b;
    int64_t t = tool_now_us();

    b->out[s->idx].code = code;
    b->out[s->idx].lat_us = t - s->start;
    evtimer_del(s->timer);
    s->idx = -1;
    b->idle[b->nidle++] = (size_t)(s - b->slots);
    b->done++;
    if (b->done == b->o->n) {
        b->t_end = t;
        event_base_loopbreak(b->base);
    } else {
        kick(b);
    }
}

static void save_headers(struct burst *b, int64_t idx, struct evhttp_request *req)
{
    struct evkeyvalq *hs = evhttp_request_get_input_headers(req);

    for (int i = 0; i < NHDR; i++) {
        const char *v = evhttp_find_header(hs, hdr_names[i]);

        /* on strdup failure the column just reads "-" */
        b->hdrs[idx * NHDR + i] = v ? strdup(v) : NULL;
    }
}

/* evhttp calls this with req NULL (or status 0) when the connection failed. */
static void on_response(struct evhttp_request *req, void *arg)
{
    struct slot *s = arg;
    int code = req ? evhttp_request_get_response_code(req) : 0;

    if (s->idx < 0)
        return;
    if (code > 0 && s->b->hdrs != NULL)
        save_headers(s->b, s->idx, req);
    finish(s, code > 0 ? code : R_ERROR);
}

/* Closes the slot's connection, dropping whatever it carries. */
static void slot_kill(struct slot *s)
{
    if (s->con != NULL) {
        evhttp_connection_free(s->con);
        s->con = NULL;
    }
}

/* Abandoning applies to idx when it comes before the plain timeout. */
static int abandonable(const struct options *o, int64_t idx)
{
    return o->abandon_from >= 0 && idx >= o->abandon_from &&
           o->abandon_after_us <= o->timeout_us;
}

static void on_slot_timer(evutil_socket_t fd, short what, void *arg)
{
    struct slot *s = arg;

    (void)fd;
    (void)what;
    slot_kill(s);
    finish(s, abandonable(s->b->o, s->idx) ? R_ABANDONED : R_TIMEOUT);
}

static int slot_connect(struct burst *b, struct slot *s)
{
    /* evhttp's own idle timeout stays longer than ours, so ours decides */
    struct timeval tv = us_to_tv(b->o->timeout_us + US_PER_S);

    if (s->con != NULL)
        return 0;
    s->con = evhttp_connection_base_new(b->base, NULL, b->o->host,
                                        (ev_uint16_t)b->o->port);
    if (s->con == NULL)
        return -1;
    evhttp_connection_set_timeout_tv(s->con, &tv);
    return 0;
}

static struct evhttp_request *new_request(struct burst *b, struct slot *s)
{
    const struct options *o = b->o;
    struct evhttp_request *req = evhttp_request_new(on_response, s);
    struct evkeyvalq *hs;
    char num[32];
    int bad = 0;

    if (req == NULL)
        return NULL;
    hs = evhttp_request_get_output_headers(req);
    for (int i = 0; i < o->nheaders; i++)
        bad |= evhttp_add_header(hs, o->hname[i], o->hvalue[i]);
    if (evhttp_find_header(hs, "Host") == NULL)
        bad |= evhttp_add_header(hs, "Host", o->host_header);
    if (o->seq) {
        snprintf(num, sizeof num, "%" PRId64, s->idx);
        bad |= evhttp_add_header(hs, "X-Seq", num);
    }
    if (o->body != NULL) {
        snprintf(num, sizeof num, "%zu", strlen(o->body));
        if (evhttp_find_header(hs, "Content-Length") == NULL)
            bad |= evhttp_add_header(hs, "Content-Length", num);
        bad |= evbuffer_add(evhttp_request_get_output_buffer(req), o->body,
                            strlen(o->body));
    }
    if (bad) {
        evhttp_request_free(req);
        return NULL;
    }
    return req;
}

/* Starts request idx on slot s. evhttp may call on_response from inside
 * evhttp_make_request (a connect that fails at once), so the slot is fully
 * set up first. */
static void start_one(struct burst *b, struct slot *s, int64_t idx)
{
    const struct options *o = b->o;
    struct timeval tv = us_to_tv(abandonable(o, idx) ? o->abandon_after_us
                                                     : o->timeout_us);
    struct evhttp_request *req;

    s->idx = idx;
    s->start = tool_now_us();
    evtimer_add(s->timer, &tv);
    if (slot_connect(b, s) != 0 || (req = new_request(b, s)) == NULL) {
        finish(s, R_ERROR);
        return;
    }
    /* -1 only when evhttp could not copy the URI; it freed req then */
    if (evhttp_make_request(s->con, req, o->method, o->target) != 0 &&
        s->idx == idx)
        finish(s, R_ERROR);
}

/* Starts whatever the idle slots and --interval-us allow. */
static void pump(struct burst *b)
{
    const struct options *o = b->o;

    for (int64_t guard = 0; guard <= o->n && b->next < o->n && b->nidle > 0; guard++) {
        int64_t t = tool_now_us();

        if (o->interval_us > 0 && t < b->next_start_at) {
            struct timeval tv = us_to_tv(b->next_start_at - t);

            evtimer_add(b->pace, &tv);
            return;
        }
        b->next_start_at = t + o->interval_us;
        start_one(b, &b->slots[b->idle[--b->nidle]], b->next++);
    }
}

static void on_pace(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pump(arg);
}

/* --max-seconds or a signal: everything unfinished counts as a timeout. */
static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct burst *b = arg;

    (void)fd;
    (void)what;
    for (size_t i = 0; i < b->nslots; i++) {
        if (b->slots[i].idx >= 0) {
            slot_kill(&b->slots[i]);
            finish(&b->slots[i], R_TIMEOUT);
        }
    }
    for (; b->next < b->o->n; b->next++)
        b->out[b->next].code = R_TIMEOUT;
    b->t_end = tool_now_us();
    event_base_loopbreak(b->base);
}

/* ---- setup ------------------------------------------------------------ */

static void burst_free(struct burst *b)
{
    for (size_t i = 0; b->slots != NULL && i < b->nslots; i++) {
        slot_kill(&b->slots[i]);
        if (b->slots[i].timer != NULL)
            event_free(b->slots[i].timer);
    }
    for (int64_t i = 0; b->hdrs != NULL && i < b->o->n * NHDR; i++)
        free(b->hdrs[i]);
    if (b->pace != NULL)
        event_free(b->pace);
    free(b->hdrs);
    free(b->out);
    free(b->idle);
    free(b->slots);
    if (b->base != NULL)
        event_base_free(b->base);
}

/* max_conns: what the descriptor limit allows (see raise_nofile). */
static int burst_init(struct burst *b, const struct options *o, int64_t max_conns)
{
    memset(b, 0, sizeof *b);
    b->o = o;
    b->nslots = (size_t)max_conns;
    if ((b->base = tool_new_base()) == NULL ||
        (b->pace = evtimer_new(b->base, on_pace, b)) == NULL ||
        (b->slots = calloc(b->nslots, sizeof *b->slots)) == NULL ||
        (b->idle = calloc(b->nslots, sizeof *b->idle)) == NULL ||
        (b->out = calloc((size_t)o->n, sizeof *b->out)) == NULL)
        return -1;
    if (o->results != NULL &&
        (b->hdrs = calloc((size_t)o->n * NHDR, sizeof *b->hdrs)) == NULL)
        return -1;
    for (size_t i = 0; i < b->nslots; i++) {
        struct slot *s = &b->slots[b->nslots - 1 - i];

        s->b = b;
        s->idx = -1;
        if ((s->timer = evtimer_new(b->base, on_slot_timer, s)) == NULL)
            return -1;
        b->idle[b->nidle++] = (size_t)(s - b->slots);
    }
    return 0;
}

/* ---- report ----------------------------------------------------------- */

static void code_name(int code, char *buf, size_t len)
{
    switch (code) {
    case R_TIMEOUT: case R_PENDING: snprintf(buf, len, "timeout"); break;
    case R_ERROR: snprintf(buf, len, "error"); break;
    case R_ABANDONED: snprintf(buf, len, "abandoned"); break;
    default: snprintf(buf, len, "%d", code);
    }
}

/* Header values go in whitespace-separated columns: blanks become '_'. */
static void put_field(FILE *f, const char *v)
{
    if (v == NULL || *v == '\0') {
        fputs(" -", f);
        return;
    }
    fputc(' ', f);
    for (; *v; v++)
        fputc((unsigned char)*v <= ' ' ? '_' : *v, f);
}

static int write_results(const struct burst *b, const char *path)
{
    FILE *f = fopen(path, "w");
    char name[16];

    if (f == NULL)
        return -1;
    for (int64_t i = 0; i < b->o->n; i++) {
        code_name(b->out[i].code, name, sizeof name);
        fprintf(f, "%" PRId64 " %s %.3f", i, name, (double)b->out[i].lat_us / 1000.0);
        for (int h = 0; h < NHDR; h++)
            put_field(f, b->hdrs[i * NHDR + h]);
        fputc('\n', f);
    }
    return fclose(f) == 0 ? 0 : -1;
}

struct summary {
    int64_t by_status[1000];
    int64_t timeout, error, abandoned, completed;
    double elapsed_s, rate, p50, p90, p99, max;
};

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n). */
static double pct_ms(const int64_t *v, int64_t n, double p)
{
    int64_t rank = (int64_t)ceil(p * (double)n);

    if (n == 0)
        return 0;
    if (rank < 1)
        rank = 1;
    return (double)v[rank - 1] / 1000.0;
}

static int summarize(const struct burst *b, struct summary *s)
{
    int64_t *lat = malloc((size_t)b->o->n * sizeof *lat);

    if (lat == NULL)
        return -1;
    memset(s, 0, sizeof *s);
    for (int64_t i = 0; i < b->o->n; i++) {
        int code = b->out[i].code;

        if (code > 0 && code < 1000) {
            s->by_status[code]++;
            lat[s->completed++] = b->out[i].lat_us;
        } else if (code == R_ERROR || code > 0) {
            s->error++;
        } else if (code == R_ABANDONED) {
            s->abandoned++;
        } else {
            s->timeout++;
        }
    }
    qsort(lat, (size_t)s->completed, sizeof *lat, cmp_i64);
    s->elapsed_s = (double)(b->t_end - b->t0) / 1e6;
    s->rate = s->elapsed_s > 0 ? (double)s->completed / s->elapsed_s : 0;
    s->p50 = pct_ms(lat, s->completed, 0.50);
    s->p90 = pct_ms(lat, s->completed, 0.90);
    s->p99 = pct_ms(lat, s->completed, 0.99);
    s->max = s->completed ? (double)lat[s->completed - 1] / 1000.0 : 0;
    free(lat);
    return 0;
}

static void print_json(const struct summary *s, int64_t total)
{
    const char *sep = "";

    printf("{\"total\":%" PRId64 ",\"status\":{", total);
    for (int c = 0; c < 1000; c++) {
        if (s->by_status[c] == 0)
            continue;
        printf("%s\"%d\":%" PRId64, sep, c, s->by_status[c]);
        sep = ",";
    }
    printf("},\"timeout\":%" PRId64 ",\"error\":%" PRId64 ",\"abandoned\":%" PRId64
           ",\"elapsed_s\":%.6f,\"rate\":%.3f,\"latency_ms\":{\"p50\":%.3f,"
           "\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}}\n",
           s->timeout, s->error, s->abandoned, s->elapsed_s, s->rate,
           s->p50, s->p90, s->p99, s->max);
}

static void print_text(const struct summary *s, int64_t total)
{
    printf("total      %" PRId64 "\n", total);
    for (int c = 0; c < 1000; c++)
        if (s->by_status[c] != 0)
            printf("status %d %" PRId64 "\n", c, s->by_status[c]);
    printf("timeout    %" PRId64 "\nerror      %" PRId64 "\nabandoned  %" PRId64 "\n",
           s->timeout, s->error, s->abandoned);
    printf("elapsed_s  %.3f\nrate       %.1f/s\n", s->elapsed_s, s->rate);
    printf("latency_ms p50=%.3f p90=%.3f p99=%.3f max=%.3f\n",
           s->p50, s->p90, s->p99, s->max);
}

static int report(const struct burst *b)
{
    struct summary s;

    if (b->o->results != NULL && write_results(b, b->o->results) != 0) {
        fprintf(stderr, "burst: cannot write %s: %s\n", b->o->results, strerror(errno));
        return -1;
    }
    if (summarize(b, &s) != 0)
        return -1;
    if (b->o->json)
        print_json(&s, b->o->n);
    else
        print_text(&s, b->o->n);
    return fflush(stdout) == 0 ? 0 : -1;
}

/* ---- main ------------------------------------------------------------- */

static int run(struct burst *b)
{
    struct event *ev[3] = { NULL, NULL, NULL };
    struct timeval limit = us_to_tv(b->o->max_us);
    int rc = -1;

    ev[0] = evtimer_new(b->base, on_stop, b);
    ev[1] = evsignal_new(b->base, SIGINT, on_stop, b);
    ev[2] = evsignal_new(b->base, SIGTERM, on_stop, b);
    if (!ev[0] || !ev[1] || !ev[2] || event_add(ev[0], &limit) ||
        event_add(ev[1], NULL) || event_add(ev[2], NULL))
        goto out;
    b->t0 = tool_now_us();
    pump(b);
    if (b->done < b->o->n && event_base_dispatch(b->base) < 0)
        goto out;
    if (b->t_end == 0)
        b->t_end = tool_now_us();
    rc = 0;
out:
    for (int i = 0; i < 3; i++)
        if (ev[i] != NULL)
            event_free(ev[i]);
    return rc;
}

int main(int argc, char **argv)
{
    struct options o;
    struct burst b;
    int64_t conns, max_conns;
    int rc = 1;

    parse_args(argc, argv, &o);
    signal(SIGPIPE, SIG_IGN);
    conns = o.c < o.n ? o.c : o.n;
    if ((max_conns = raise_nofile(conns)) < conns) {
        /* a slot without a descriptor would fail every request it takes */
        fprintf(stderr, "burst: warning: file descriptor limit allows only %"
                PRId64 " of %" PRId64 " connections\n", max_conns, conns);
        if (max_conns < 1) {
            options_free(&o);
            return 1;
        }
    }
    if (burst_init(&b, &o, max_conns < conns ? max_conns : conns) != 0)
        fprintf(stderr, "burst: out of memory\n");
    else if (run(&b) == 0 && report(&b) == 0)
        rc = 0;
    burst_free(&b);
    options_free(&o);
    return rc;
}
