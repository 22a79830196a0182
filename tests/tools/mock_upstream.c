/*
 * mock_upstream - a stand-in for a rate-limited third-party HTTP API.
 *
 * Used by the integration tests, the demo and bench/. Every request is
 * answered with a JSON echo of what arrived, unless the mock was told (by
 * flags, request headers or POST /_mock/config) to enforce a strict sliding
 * window, an IETF RateLimit budget, latency, failures or hangs. Counters are
 * read with GET /_mock/stats. It shares no code with sluice on purpose: a bug
 * in sluice must not be able to hide in the tool that checks it.
 *
 * Order of decisions for one arrival: strict --rate window (429, not counted),
 * then the --ratelimit-budget window (429), then hang_next, then fail_next,
 * then X-Mock-Status / echo. Every run is bounded by --max-seconds.
 *
 * Large generated bodies (X-Mock-Body-Size over 64 MiB, X-Mock-Chunked,
 * X-Mock-Endless, X-Mock-Rate, X-Mock-Reset-After, X-Mock-Close-After) are
 * written as they go (struct stream): a piece of at most STREAM_PIECE bytes
 * is queued only once the connection's output buffer has drained, so the
 * mock never holds more than that, whatever the size, and a slow reader
 * slows the writing. Each such body ends with a line in --stream-log.
 *
 * With --tls-cert and --tls-key it speaks HTTPS instead (OpenSSL bufferevents
 * under evhttp), with every behaviour above unchanged; --tls-client-ca also
 * demands a client certificate signed by that CA (mutual TLS). The TLS
 * connections accepted and the handshakes completed are counted in
 * /_mock/stats.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "toolutil.h"

#define MAX_BODY_SIZE ((int64_t)64 << 20)      /* held whole, with X-Mock-Body-Sha */
#define MAX_STREAM_SIZE ((int64_t)4 << 30)     /* generated as written */
#define STREAM_PIECE ((size_t)256 << 10)       /* queued per drained output buffer */
#define MAX_STREAM_RATE ((int64_t)1 << 40)
#define MAX_RATE_N 10000000
#define NSTATUS 1000
#define LISTEN_BACKLOG 4096
#define US_PER_S INT64_C(1000000)

/* Command-line settings; the run-time knobs are copied into struct behaviour. */
struct options {
    const char *listen;
    const char *port_file;
    const char *log_path;
    const char *stream_log_path;
    int64_t rate_n;             /* 0: no strict window */
    int64_t rate_period_us;
    int64_t latency_ms;
    int64_t fail_first;
    int64_t fail_status;
    int64_t retry_after;        /* -1: do not send Retry-After on failures */
    int64_t budget;             /* 0: no RateLimit budget */
    int64_t budget_window_s;
    int64_t hang_first;
    double max_seconds;
    const char *tls_cert;       /* with tls_key: serve HTTPS */
    const char *tls_key;
    const char *tls_client_ca;  /* require a client certificate signed by this CA */
};

/* What POST /_mock/config may change while running. */
struct behaviour {
    int64_t latency_ms;
    int64_t fail_next;
    int64_t fail_status;
    int64_t retry_after;
    int64_t hang_next;
    int64_t drop_next;          /* read the request, close without a byte of answer */
};

/* Strict limit: ring of the instants of the last N admitted arrivals. */
struct window {
    int64_t *t;
    size_t cap, head, len;
    int64_t period;
};

/* Admitted arrival instants kept for max_in_window: everything from lo on is
 * younger than one period; older entries are compacted away. */
struct history {
    int64_t *t;
    size_t lo, len, cap;
    int64_t max;
};

/* Fixed-window budget advertised with the RateLimit headers. */
struct budget {
    int64_t limit, window_us, epoch, index, used;
};

/* A response waiting for its latency timer, or (timer NULL) a request that
 * is never answered. The request stays valid until we reply: evhttp detaches
 * rather than frees an incoming request the user has not finished. */
struct held {
    struct evhttp_request *req;
    struct event *timer;
    struct evbuffer *body;
    int status;
    struct mock *m;
    TAILQ_ENTRY(held) link;
};
TAILQ_HEAD(held_list, held);

/* How a generated body ended, in --stream-log. */
enum stream_end { END_COMPLETE, END_PEER_CLOSED, END_RESET, END_CLOSED };

/* A generated body being written with flow control: the next piece is
 * queued only when the previous one has left the output buffer (or, with a
 * rate, when the rate allows it). Instants are tool_now_us(), the mock's
 * monotonic clock (CLOCK_MONOTONIC, as the --log instants). */
struct stream {
    struct mock *m;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    struct event *timer;        /* latency, rate pacing, the deferred cut */
    struct evbuffer *piece;
    uint64_t arrival;
    char seq[64];
    char *uri;
    int status;
    int64_t limit;              /* body bytes to write: -1 endless */
    int64_t rate;               /* bytes per second, 0: as fast as it drains */
    int cut;                    /* after limit: 0 end normally, 1 RST, 2 close */
    int64_t queued;             /* body bytes handed to evhttp */
    int64_t t_head, t_first, t_last, t_rate0;
    int started, draining, cutting;
    TAILQ_ENTRY(stream) link;
};
TAILQ_HEAD(stream_list, stream);

struct mock {
    struct event_base *base;
    struct evhttp *http;
    FILE *log;
    struct behaviour cfg;
    struct window win;
    struct history hist;
    struct budget bud;
    uint64_t arrivals;
    uint64_t by_status[NSTATUS];
    struct held_list held;
    struct stream_list streams;
    FILE *stream_log;
    uint64_t streams_started;
    int64_t stream_bytes_done; /* body bytes written by streams that ended */
    struct evconnlistener *listener;
    struct event *resume;       /* re-enables accepting after a pause */
    int64_t accept_warned_at;
    SSL_CTX *tls;               /* NULL: plain HTTP */
    uint64_t tls_connections;   /* TLS connections accepted (handshakes begun) */
    uint64_t tls_handshakes;    /* ...and completed */
};

enum kind { K_HANG, K_DROP, K_ERROR, K_ECHO };

/* The decision for one arrival, made before anything is logged or sent. */
struct verdict {
    enum kind kind;
    int status;
    int64_t retry_after;        /* -1: none */
    const char *error;          /* K_ERROR: error code in the body */
    int64_t body_size;          /* K_ECHO: -1 echo JSON, else pattern bytes */
    int stream;                 /* K_ECHO: a generated body written as it goes */
    int chunked;                /* ...without Content-Length */
    int endless;                /* ...never ending (chunked) */
    int64_t rate;               /* ...at most this many bytes per second (0: no bound) */
    int64_t cut_after;          /* ...-1, or end the connection after this many bytes */
    int cut_rst;                /* ...with a reset (else a plain close) */
};

static const char pattern_alphabet[] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
#define PATTERN_PERIOD 62
/* The body pattern, a whole number of periods so that chunks stay aligned. */
static char pattern[PATTERN_PERIOD * 1024];

static void usage(FILE *out)
{
    fprintf(out,
        "usage: mock_upstream --listen HOST:PORT [--port-file FILE] [--rate N/P]\n"
        "         [--latency MS] [--fail-first K] [--fail-status CODE]\n"
        "         [--retry-after S] [--ratelimit-budget B] [--ratelimit-window S]\n"
        "         [--hang-first K] [--log FILE] [--stream-log FILE] [--max-seconds S]\n"
        "         [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]\n");
}

static _Noreturn void die_usage(const char *what, const char *arg)
{
    tool_die_usage("mock_upstream", usage, what, arg);
}

/* "N/P" with P one of s m h d. */
static int parse_rate(const char *s, int64_t *n, int64_t *period_us)
{
    static const char units[] = "smhd";
    static const int64_t secs[] = { 1, 60, 3600, 86400 };
    const char *slash = strchr(s, '/');
    const char *u;
    char num[32];
    size_t len;

    if (slash == NULL || (len = (size_t)(slash - s)) == 0 || len >= sizeof num)
        return -1;
    memcpy(num, s, len);
    num[len] = '\0';
    if (tool_parse_int(num, 1, MAX_RATE_N, n) != 0)
        return -1;
    if (slash[1] == '\0' || slash[2] != '\0' || (u = strchr(units, slash[1])) == NULL)
        return -1;
    *period_us = secs[u - units] * US_PER_S;
    return 0;
}

static void parse_args(int argc, char **argv, struct options *o)
{
    enum { O_LISTEN = 256, O_PORT_FILE, O_RATE, O_LATENCY, O_FAIL_FIRST,
           O_FAIL_STATUS, O_RETRY_AFTER, O_BUDGET, O_BUDGET_WINDOW,
           O_HANG_FIRST, O_LOG, O_MAX_SECONDS, O_TLS_CERT, O_TLS_KEY,
           O_TLS_CLIENT_CA, O_STREAM_LOG, O_HELP };
    static const struct option longs[] = {
        { "listen", required_argument, NULL, O_LISTEN },
        { "port-file", required_argument, NULL, O_PORT_FILE },
        { "rate", required_argument, NULL, O_RATE },
        { "latency", required_argument, NULL, O_LATENCY },
        { "fail-first", required_argument, NULL, O_FAIL_FIRST },
        { "fail-status", required_argument, NULL, O_FAIL_STATUS },
        { "retry-after", required_argument, NULL, O_RETRY_AFTER },
        { "ratelimit-budget", required_argument, NULL, O_BUDGET },
        { "ratelimit-window", required_argument, NULL, O_BUDGET_WINDOW },
        { "hang-first", required_argument, NULL, O_HANG_FIRST },
        { "log", required_argument, NULL, O_LOG },
        { "stream-log", required_argument, NULL, O_STREAM_LOG },
        { "max-seconds", required_argument, NULL, O_MAX_SECONDS },
        { "tls-cert", required_argument, NULL, O_TLS_CERT },
        { "tls-key", required_argument, NULL, O_TLS_KEY },
        { "tls-client-ca", required_argument, NULL, O_TLS_CLIENT_CA },
        { "help", no_argument, NULL, O_HELP },
        { NULL, 0, NULL, 0 },
    };
    int c, bad;

    memset(o, 0, sizeof *o);
    o->fail_status = 503;
    o->retry_after = -1;
    o->budget_window_s = 1;
    o->max_seconds = 600;
    for (int guard = 0; guard <= argc; guard++) {
        if ((c = getopt_long(argc, argv, "", longs, NULL)) == -1)
            break;
        bad = 0;
        switch (c) {
        case O_LISTEN: o->listen = optarg; break;
        case O_PORT_FILE: o->port_file = optarg; break;
        case O_LOG: o->log_path = optarg; break;
        case O_STREAM_LOG: o->stream_log_path = optarg; break;
        case O_RATE: bad = parse_rate(optarg, &o->rate_n, &o->rate_period_us); break;
        case O_LATENCY: bad = tool_parse_int(optarg, 0, 3600000, &o->latency_ms); break;
        case O_FAIL_FIRST: bad = tool_parse_int(optarg, 0, INT64_MAX, &o->fail_first); break;
        case O_FAIL_STATUS: bad = tool_parse_int(optarg, 200, 599, &o->fail_status); break;
        case O_RETRY_AFTER: bad = tool_parse_int(optarg, 0, 86400 * 365, &o->retry_after); break;
        case O_BUDGET: bad = tool_parse_int(optarg, 1, INT32_MAX, &o->budget); break;
        case O_BUDGET_WINDOW: bad = tool_parse_int(optarg, 1, 86400, &o->budget_window_s); break;
        case O_HANG_FIRST: bad = tool_parse_int(optarg, 0, INT64_MAX, &o->hang_first); break;
        case O_MAX_SECONDS: bad = tool_parse_seconds(optarg, &o->max_seconds); break;
        case O_TLS_CERT: o->tls_cert = optarg; break;
        case O_TLS_KEY: o->tls_key = optarg; break;
        case O_TLS_CLIENT_CA: o->tls_client_ca = optarg; break;
        case O_HELP: usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
        if (bad)
            die_usage("invalid value", optarg);
    }
    if (optind < argc)
        die_usage("unexpected argument", argv[optind]);
    if (o->listen == NULL)
        die_usage("--listen is required", "");
    if ((o->tls_cert == NULL) != (o->tls_key == NULL))
        die_usage("--tls-cert and --tls-key go together", "");
    if (o->tls_client_ca != NULL && o->tls_cert == NULL)
        die_usage("--tls-client-ca needs --tls-cert and --tls-key", o->tls_client_ca);
}

/* Thousands of concurrent connections need more than the default 1024 fds:
 * ask for WANT_NOFILE (granted only if privileged), else soft = hard. */
#define WANT_NOFILE 65536
static void raise_nofile(void)
{
    if (tool_raise_nofile(WANT_NOFILE) < WANT_NOFILE && errno != 0)
        perror("mock_upstream: setrlimit");
}

/* ---- windows ---------------------------------------------------------- */

/* Admits t if fewer than N admitted arrivals lie in (t - P, t]; else sets
 * *wait_us to the time until the oldest one leaves the window. */
static int window_admit(struct window *w, int64_t t, int64_t *wait_us)
{
    int64_t oldest;

    if (w->cap == 0)
        return 1;
    if (w->len < w->cap) {
        w->t[(w->head + w->len) % w->cap] = t;
        w->len++;
        return 1;
    }
    oldest = w->t[w->head];
    if (t - oldest >= w->period) {
        w->t[w->head] = t;
        w->head = (w->head + 1) % w->cap;
        return 1;
    }
    *wait_us = oldest + w->period - t;
    return 0;
}

/* Records an admitted arrival and updates the largest count seen in any
 * window (t - P, t]. Compacts only when half the array is stale, so each
 * entry is moved O(1) times. Returns -1 if memory ran out. */
static int history_add(struct history *h, int64_t t, int64_t period)
{
    if (h->len == h->cap && h->lo > 0 && h->lo >= h->len / 2) {
        memmove(h->t, h->t + h->lo, (h->len - h->lo) * sizeof *h->t);
        h->len -= h->lo;
        h->lo = 0;
    }
    if (h->len == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 1024;
        int64_t *nt = realloc(h->t, cap * sizeof *nt);

        if (nt == NULL)
            return -1;
        h->t = nt;
        h->cap = cap;
    }
    h->t[h->len++] = t;
    while (h->lo < h->len && h->t[h->lo] <= t - period)
        h->lo++;
    if ((int64_t)(h->len - h->lo) > h->max)
        h->max = (int64_t)(h->len - h->lo);
    return 0;
}

static void budget_roll(struct budget *b, int64_t t)
{
    int64_t index = (t - b->epoch) / b->window_us;

    if (index != b->index) {
        b->index = index;
        b->used = 0;
    }
}

/* Whole seconds (rounded up, at least 1) until the budget window resets. */
static int64_t budget_reset_s(const struct budget *b, int64_t t)
{
    int64_t left = b->epoch + (b->index + 1) * b->window_us - t;
    int64_t s = (left + US_PER_S - 1) / US_PER_S;

    return s < 1 ? 1 : s;
}

static void counters_reset(struct mock *m)
{
    int64_t t = tool_now_us();

    m->arrivals = 0;
    memset(m->by_status, 0, sizeof m->by_status);
    m->win.head = m->win.len = 0;
    m->hist.lo = m->hist.len = 0;
    m->hist.max = 0;
    m->bud.epoch = t;
    m->bud.index = 0;
    m->bud.used = 0;
    m->tls_connections = 0;
    m->tls_handshakes = 0;
    m->streams_started = 0;
    m->stream_bytes_done = 0;
}

/* ---- JSON ------------------------------------------------------------- */

/* Appends the escaped characters of s, without quotes. Bytes >= 0x80 are
 * escaped one by one, i.e. read as Latin-1, so any header bytes give valid
 * JSON. */
static void json_chars(struct evbuffer *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            evbuffer_add_printf(b, "\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f)
            evbuffer_add_printf(b, "\\u%04x", *p);
        else
            evbuffer_add(b, p, 1);
    }
}

static void json_str(struct evbuffer *b, const char *s)
{
    evbuffer_add(b, "\"", 1);
    json_chars(b, s);
    evbuffer_add(b, "\"", 1);
}

static uint64_t fnv1a(const unsigned char *p, size_t len)
{
    uint64_t h = UINT64_C(14695981039346656037);

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= UINT64_C(1099511628211);
    }
    return h;
}

/* True if a header with the same name (any case) comes before h. */
static int seen_before(struct evkeyvalq *hs, const struct evkeyval *h)
{
    for (struct evkeyval *p = TAILQ_FIRST(hs); p != h; p = TAILQ_NEXT(p, next))
        if (evutil_ascii_strcasecmp(p->key, h->key) == 0)
            return 1;
    return 0;
}

/* All request headers, later duplicates joined with ", " under the spelling
 * of the first occurrence. */
static void json_headers(struct evbuffer *b, struct evkeyvalq *hs)
{
    struct evkeyval *h, *d;
    const char *sep = "";

    evbuffer_add(b, "{", 1);
    TAILQ_FOREACH(h, hs, next) {
        if (seen_before(hs, h))
            continue;
        evbuffer_add_printf(b, "%s", sep);
        sep = ",";
        json_str(b, h->key);
        evbuffer_add(b, ":\"", 2);
        json_chars(b, h->value);
        for (d = TAILQ_NEXT(h, next); d != NULL; d = TAILQ_NEXT(d, next)) {
            if (evutil_ascii_strcasecmp(d->key, h->key) != 0)
                continue;
            evbuffer_add(b, ", ", 2);
            json_chars(b, d->value);
        }
        evbuffer_add(b, "\"", 1);
    }
    evbuffer_add(b, "}", 1);
}

static void echo_body(struct evbuffer *b, struct evhttp_request *req, uint64_t n)
{
    struct evkeyvalq *hs = evhttp_request_get_input_headers(req);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    const char *seq = evhttp_find_header(hs, "X-Seq");
    size_t len = evbuffer_get_length(in);
    unsigned char *data = len ? evbuffer_pullup(in, -1) : NULL;

    evbuffer_add_printf(b, "{\"arrival\":%" PRIu64 ",\"seq\":", n);
    if (seq != NULL)
        json_str(b, seq);
    else
        evbuffer_add(b, "null", 4);
    evbuffer_add_printf(b, ",\"method\":\"%s\",\"uri\":",
                        tool_method_name((int)evhttp_request_get_command(req)));
    json_str(b, evhttp_request_get_uri(req));
    evbuffer_add(b, ",\"headers\":", 11);
    json_headers(b, hs);
    evbuffer_add_printf(b, ",\"body_len\":%zu,\"body_sha\":\"%016" PRIx64 "\"}",
                        len, fnv1a(data, data ? len : 0));
}

/* N bytes of the pattern, added by reference: no copy of large bodies. */
static int pattern_body(struct evbuffer *b, int64_t n)
{
    for (int64_t left = n; left > 0;) {
        size_t chunk = left < (int64_t)sizeof pattern ? (size_t)left : sizeof pattern;

        if (evbuffer_add_reference(b, pattern, chunk, NULL, NULL) != 0)
            return -1;
        left -= (int64_t)chunk;
    }
    return 0;
}

static uint64_t pattern_sha(int64_t n)
{
    uint64_t h = UINT64_C(14695981039346656037);

    for (int64_t i = 0; i < n; i++) {
        h ^= (unsigned char)pattern_alphabet[i % PATTERN_PERIOD];
        h *= UINT64_C(1099511628211);
    }
    return h;
}

/* ---- replies ---------------------------------------------------------- */

/* Phrases evhttp 2.1's table lacks; NULL lets evhttp pick. */
static const char *reason(int status)
{
    switch (status) {
    case 308: return "Permanent Redirect";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 429: return "Too Many Requests";
    }
    return NULL;
}

/* X-Mock-Reason: the reason phrase to answer with, instead of the standard one. */
static void reply(struct evhttp_request *req, int status, struct evbuffer *body)
{
    const char *r = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Mock-Reason");

    evhttp_send_reply(req, status, r != NULL ? r : reason(status), body);
}

static void send_json(struct evhttp_request *req, int status, struct evbuffer *b)
{
    evhttp_add_header(evhttp_request_get_output_headers(req),
                      "Content-Type", "application/json");
    reply(req, status, b);
}

static void send_error_json(struct evhttp_request *req, int status, const char *msg)
{
    struct evbuffer *b = evbuffer_new();

    if (b == NULL) {
        evhttp_send_error(req, status, NULL);
        return;
    }
    evbuffer_add_printf(b, "{\"error\":");
    json_str(b, msg);
    evbuffer_add(b, "}", 1);
    send_json(req, status, b);
    evbuffer_free(b);
}

static void held_free(struct held *h)
{
    TAILQ_REMOVE(&h->m->held, h, link);
    if (h->timer != NULL)
        event_free(h->timer);
    if (h->body != NULL)
        evbuffer_free(h->body);
    free(h);
}

static void on_held_timer(evutil_socket_t fd, short what, void *arg)
{
    struct held *h = arg;

    (void)fd;
    (void)what;
    reply(h->req, h->status, h->body);
    held_free(h);
}

/* Sends now, or after the latency; takes ownership of body (may be NULL,
 * which with no latency means the request is hung). */
static void deliver(struct mock *m, struct evhttp_request *req, int status,
                    struct evbuffer *body, int64_t latency_ms, int hang)
{
    struct held *h;
    struct timeval tv = { (time_t)(latency_ms / 1000), (suseconds_t)(latency_ms % 1000) * 1000 };

    if (!hang && latency_ms == 0) {
        reply(req, status, body);
        evbuffer_free(body);
        return;
    }
    if ((h = calloc(1, sizeof *h)) == NULL)
        goto fail;
    h->m = m;
    h->req = req;
    h->body = body;
    h->status = status;
    TAILQ_INSERT_TAIL(&m->held, h, link);
    if (hang)
        return;
    if ((h->timer = evtimer_new(m->base, on_held_timer, h)) == NULL ||
        evtimer_add(h->timer, &tv) != 0) {
        h->body = NULL;
        held_free(h);
        goto fail;
    }
    return;
fail:
    /* out of memory: answer at once rather than leak the request */
    reply(req, hang ? 503 : status, body);
    if (body != NULL)
        evbuffer_free(body);
}

/* ---- one arrival ------------------------------------------------------ */

static void verdict_error(struct verdict *v, int status, const char *error,
                          int64_t retry_after)
{
    v->kind = K_ERROR;
    v->status = status;
    v->error = error;
    v->retry_after = retry_after;
}

/* "N", "Nk" or "Nm" (KiB, MiB) in [min, max]; 0 on success. */
static int parse_bytes(const char *s, int64_t min, int64_t max, int64_t *out)
{
    char num[32];
    size_t len = strlen(s);
    int64_t unit = 1, v;

    if (len == 0 || len >= sizeof num)
        return -1;
    memcpy(num, s, len + 1);
    if (num[len - 1] == 'k' || num[len - 1] == 'K')
        unit = 1024;
    else if (num[len - 1] == 'm' || num[len - 1] == 'M')
        unit = 1024 * 1024;
    if (unit > 1)
        num[len - 1] = '\0';
    if (tool_parse_int(num, 0, max / unit, &v) != 0 || v * unit < min)
        return -1;
    *out = v * unit;
    return 0;
}

/* The echo (or pattern) answer, steered by X-Mock-Status / X-Mock-Body-Size,
 * and for a generated body written as it goes by X-Mock-Chunked,
 * X-Mock-Endless, X-Mock-Rate, X-Mock-Reset-After and X-Mock-Close-After. */
static void verdict_echo(struct verdict *v, struct evkeyvalq *hs)
{
    const char *st = evhttp_find_header(hs, "X-Mock-Status");
    const char *sz = evhttp_find_header(hs, "X-Mock-Body-Size");
    const char *ch = evhttp_find_header(hs, "X-Mock-Chunked");
    const char *en = evhttp_find_header(hs, "X-Mock-Endless");
    const char *ra = evhttp_find_header(hs, "X-Mock-Rate");
    const char *rs = evhttp_find_header(hs, "X-Mock-Reset-After");
    const char *cl = evhttp_find_header(hs, "X-Mock-Close-After");
    int64_t code = 200;

    v->kind = K_ECHO;
    if (st != NULL && tool_parse_int(st, 200, 599, &code) != 0) {
        verdict_error(v, 400, "bad X-Mock-Status", -1);
        return;
    }
    if (sz != NULL && tool_parse_int(sz, 0, MAX_STREAM_SIZE, &v->body_size) != 0) {
        verdict_error(v, 400, "bad X-Mock-Body-Size", -1);
        return;
    }
    if ((ch != NULL && strcmp(ch, "1") != 0 && strcmp(ch, "0") != 0) ||
        (en != NULL && strcmp(en, "1") != 0 && strcmp(en, "0") != 0)) {
        verdict_error(v, 400, "bad X-Mock-Chunked or X-Mock-Endless (1 or 0)", -1);
        return;
    }
    v->chunked = ch != NULL && ch[0] == '1';
    v->endless = en != NULL && en[0] == '1';
    if (ra != NULL && parse_bytes(ra, 1, MAX_STREAM_RATE, &v->rate) != 0) {
        verdict_error(v, 400, "bad X-Mock-Rate", -1);
        return;
    }
    if ((rs != NULL && cl != NULL) ||
        (rs != NULL && tool_parse_int(rs, 0, MAX_STREAM_SIZE, &v->cut_after) != 0) ||
        (cl != NULL && tool_parse_int(cl, 0, MAX_STREAM_SIZE, &v->cut_after) != 0)) {
        verdict_error(v, 400, "bad X-Mock-Reset-After or X-Mock-Close-After", -1);
        return;
    }
    v->cut_rst = rs != NULL;
    if (v->endless) {
        v->chunked = 1;
        v->body_size = 0;
    }
    v->stream = v->chunked || v->endless || v->rate > 0 || v->cut_after >= 0 ||
                v->body_size > MAX_BODY_SIZE;
    if (v->stream && sz == NULL && !v->endless) {
        verdict_error(v, 400, "a generated body needs X-Mock-Body-Size or X-Mock-Endless", -1);
        return;
    }
    v->status = (int)code;
}

static void decide(struct mock *m, struct evhttp_request *req, int64_t t,
                   struct verdict *v)
{
    struct behaviour *c = &m->cfg;
    int64_t wait_us;

    memset(v, 0, sizeof *v);
    v->retry_after = -1;
    v->body_size = -1;
    v->cut_after = -1;
    if (m->bud.limit > 0)
        budget_roll(&m->bud, t);
    if (!window_admit(&m->win, t, &wait_us)) {
        int64_t s = (wait_us + US_PER_S - 1) / US_PER_S;
        verdict_error(v, 429, "rate_limited", s < 1 ? 1 : s);
    } else if (m->win.cap > 0 && history_add(&m->hist, t, m->win.period) != 0) {
        verdict_error(v, 500, "mock_out_of_memory", -1);
    } else if (m->bud.limit > 0 && m->bud.used >= m->bud.limit) {
        verdict_error(v, 429, "budget_exhausted", budget_reset_s(&m->bud, t));
    } else {
        if (m->bud.limit > 0)
            m->bud.used++;
        if (c->hang_next > 0) {
            c->hang_next--;
            v->kind = K_HANG;
        } else if (c->drop_next > 0) {
            c->drop_next--;
            v->kind = K_DROP;
        } else if (c->fail_next > 0) {
            c->fail_next--;
            verdict_error(v, (int)c->fail_status, "mock_failure",
                          c->fail_status == 429 || c->fail_status == 503
                              ? c->retry_after : -1);
        } else {
            verdict_echo(v, evhttp_request_get_input_headers(req));
        }
    }
}

static void log_arrival(struct mock *m, struct evhttp_request *req, int64_t t, int status)
{
    const char *seq = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Seq");
    char s[64];
    size_t i;

    if (m->log == NULL)
        return;
    /* keep the line splittable on whitespace */
    for (i = 0; seq != NULL && seq[i] != '\0' && i < sizeof s - 1; i++)
        s[i] = (seq[i] <= ' ' || seq[i] == 0x7f) ? '_' : seq[i];
    s[i] = '\0';
    fprintf(m->log, "%" PRId64 " %s %s %d %s\n", t, i ? s : "-",
            tool_method_name((int)evhttp_request_get_command(req)), status,
            evhttp_request_get_uri(req));
    fflush(m->log);
}

static void add_budget_headers(struct mock *m, struct evkeyvalq *out, int64_t t)
{
    const struct budget *b = &m->bud;
    int64_t r = b->limit - b->used, reset = budget_reset_s(b, t);
    char v[128];

    snprintf(v, sizeof v, "\"default\";q=%" PRId64 ";w=%" PRId64,
             b->limit, b->window_us / US_PER_S);
    evhttp_add_header(out, "RateLimit-Policy", v);
    snprintf(v, sizeof v, "\"default\";r=%" PRId64 ";t=%" PRId64, r, reset);
    evhttp_add_header(out, "RateLimit", v);
    snprintf(v, sizeof v, "%" PRId64, b->limit);
    evhttp_add_header(out, "X-RateLimit-Limit", v);
    snprintf(v, sizeof v, "%" PRId64, r);
    evhttp_add_header(out, "X-RateLimit-Remaining", v);
    snprintf(v, sizeof v, "%" PRId64, reset);
    evhttp_add_header(out, "X-RateLimit-Reset", v);
}

/* Each X-Mock-Header: "Name: value" is copied to the response. */
static void add_mock_header(struct evhttp_request *req, struct evkeyvalq *out)
{
    struct evkeyval *h;

    TAILQ_FOREACH(h, evhttp_request_get_input_headers(req), next) {
        const char *spec = h->value, *colon, *value;
        char name[128];
        size_t len;

        if (strcasecmp(h->key, "X-Mock-Header") != 0 || (colon = strchr(spec, ':')) == NULL)
            continue;
        len = (size_t)(colon - spec);
        if (len == 0 || len >= sizeof name)
            continue;
        memcpy(name, spec, len);
        name[len] = '\0';
        for (value = colon + 1; *value == ' ' || *value == '\t'; value++)
            continue;
        evhttp_add_header(out, name, value);
    }
}

static void add_headers(struct mock *m, struct evhttp_request *req,
                        const struct verdict *v, uint64_t n, int64_t t)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    char num[32];

    snprintf(num, sizeof num, "%" PRIu64, n);
    evhttp_add_header(out, "X-Mock-Arrival", num);
    if (v->retry_after >= 0) {
        snprintf(num, sizeof num, "%" PRId64, v->retry_after);
        evhttp_add_header(out, "Retry-After", num);
    }
    if (m->bud.limit > 0)
        add_budget_headers(m, out, t);
    add_mock_header(req, out);
    evhttp_add_header(out, "Content-Type", v->kind == K_ECHO && v->body_size >= 0
                      ? "application/octet-stream" : "application/json");
}

/* Fills body for v; for HEAD, 204 and 304 sends no body (evhttp would send
 * whatever it is given) but HEAD keeps the Content-Length a GET would get. */
static int build_body(struct evhttp_request *req, const struct verdict *v,
                      uint64_t n, struct evbuffer *b)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    int head = evhttp_request_get_command(req) == EVHTTP_REQ_HEAD;
    int bodyless = head || v->status == 204 || v->status == 304;
    int64_t len;
    char num[32];

    if (v->kind == K_ERROR) {
        evbuffer_add_printf(b, "{\"error\":\"%s\",\"arrival\":%" PRIu64 "}", v->error, n);
    } else if (v->body_size < 0) {
        echo_body(b, req, n);
    } else {
        if (v->body_size <= MAX_BODY_SIZE && !v->endless) {
            snprintf(num, sizeof num, "%016" PRIx64, pattern_sha(v->body_size));
            evhttp_add_header(out, "X-Mock-Body-Sha", num);
        }
        if (!bodyless && pattern_body(b, v->body_size) != 0)
            return -1;
    }
    len = v->body_size >= 0 && v->kind == K_ECHO
        ? v->body_size : (int64_t)evbuffer_get_length(b);
    if (head && !v->endless && !v->chunked) {
        snprintf(num, sizeof num, "%" PRId64, len);
        evhttp_add_header(out, "Content-Length", num);
    }
    if (bodyless)
        evbuffer_drain(b, evbuffer_get_length(b));
    return 0;
}

/* ---- generated bodies written as they go ------------------------------ */

static void stream_pump(struct stream *s);

/* n bytes of the pattern from body offset off, by reference. */
static int pattern_range(struct evbuffer *b, int64_t off, size_t n)
{
    while (n > 0) {
        size_t start = (size_t)(off % PATTERN_PERIOD);
        size_t len = sizeof pattern - start;

        if (len > n)
            len = n;
        if (evbuffer_add_reference(b, pattern + start, len, NULL, NULL) != 0)
            return -1;
        off += (int64_t)len;
        n -= len;
    }
    return 0;
}

/* Body bytes that have left the output buffer (to within chunk framing). */
static int64_t stream_written(const struct stream *s)
{
    struct bufferevent *bev = s->evcon ? evhttp_connection_get_bufferevent(s->evcon) : NULL;
    int64_t pending = bev ? (int64_t)evbuffer_get_length(bufferevent_get_output(bev)) : 0;

    return s->queued > pending ? s->queued - pending : 0;
}

static void put_instant(FILE *f, int64_t t)
{
    if (t > 0)
        fprintf(f, " %" PRId64, t);
    else
        fputs(" -", f);
}

/* Logs how s ended and frees it. The request is left to the caller. */
static void stream_end(struct stream *s, enum stream_end how, int64_t bytes)
{
    static const char *const names[] = { "complete", "peer_closed", "reset", "closed" };
    struct mock *m = s->m;

    if (m->stream_log != NULL) {
        fprintf(m->stream_log, "%" PRId64 " %" PRIu64 " %s %s %" PRId64, tool_now_us(),
                s->arrival, s->seq[0] ? s->seq : "-", names[how], bytes);
        put_instant(m->stream_log, s->t_head);
        put_instant(m->stream_log, s->t_first);
        put_instant(m->stream_log, s->t_last);
        fprintf(m->stream_log, " %s\n", s->uri);
        fflush(m->stream_log);
    }
    m->stream_bytes_done += bytes;
    if (s->evcon != NULL)
        evhttp_connection_set_closecb(s->evcon, NULL, NULL);
    TAILQ_REMOVE(&m->streams, s, link);
    event_free(s->timer);
    evbuffer_free(s->piece);
    free(s->uri);
    free(s);
}

/* The connection went away under the stream (peer closed or reset, or the
 * mock is exiting). evhttp has detached the request if it was failing. */
static void on_stream_conn_close(struct evhttp_connection *evcon, void *arg)
{
    struct stream *s = arg;
    struct evhttp_request *req = s->req;
    int64_t bytes = stream_written(s);

    (void)evcon;
    if (s->t_last == 0 && s->queued > 0 && bytes >= s->queued)
        s->t_last = tool_now_us();
    s->evcon = NULL;
    stream_end(s, END_PEER_CLOSED, bytes);
    if (evhttp_request_get_connection(req) == NULL)
        evhttp_request_free(req);
}

static void on_stream_drained(struct evhttp_connection *evcon, void *arg)
{
    struct stream *s = arg;

    (void)evcon;
    s->draining = 0;
    stream_pump(s);
}

/* All bytes written: the terminator (chunked) and evhttp's keep-alive. */
static void stream_finish(struct stream *s)
{
    struct evhttp_request *req = s->req;

    stream_end(s, END_COMPLETE, s->queued);
    evhttp_send_reply_end(req);
}

/* X-Mock-Reset-After / X-Mock-Close-After: the connection ends here. A
 * connect() to AF_UNSPEC disconnects a TCP socket with a reset (Linux
 * tcp_disconnect), leaving the descriptor for evhttp to close; freeing the
 * connection alone would shut it with a FIN. */
static void stream_cut(struct stream *s)
{
    struct evhttp_connection *evcon = s->evcon;
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    struct sockaddr sa;

    if (s->cut == 1) {
        memset(&sa, 0, sizeof sa);
        sa.sa_family = AF_UNSPEC;
        (void)connect(bufferevent_getfd(bev), &sa, sizeof sa);
    }
    stream_end(s, s->cut == 1 ? END_RESET : END_CLOSED, s->queued);
    evhttp_connection_free(evcon);      /* frees the request too */
}

static void stream_later(struct stream *s, int64_t us)
{
    struct timeval tv = { (time_t)(us / US_PER_S), (suseconds_t)(us % US_PER_S) };

    evtimer_add(s->timer, &tv);
}

static void stream_begin(struct stream *s)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(s->evcon);
    const char *r = evhttp_find_header(evhttp_request_get_input_headers(s->req),
                                       "X-Mock-Reason");

    /* Larger writes than libevent's 16 KiB default, and no evhttp timeouts
     * while streaming to a slow reader (--max-seconds bounds the run). */
    bufferevent_set_max_single_write(bev, STREAM_PIECE);
    bufferevent_set_timeouts(bev, NULL, NULL);
    s->started = 1;
    s->t_head = s->t_rate0 = tool_now_us();
    evhttp_send_reply_start(s->req, s->status, r != NULL ? r : reason(s->status));
    stream_pump(s);
}

static void on_stream_timer(evutil_socket_t fd, short what, void *arg)
{
    struct stream *s = arg;

    (void)fd;
    (void)what;
    if (!s->started)
        stream_begin(s);
    else
        stream_pump(s);
}

/* Queues the next piece once the last one has drained, within the rate. */
static void stream_pump(struct stream *s)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(s->evcon);
    int64_t now, n = (int64_t)STREAM_PIECE;

    if (s->draining)
        return;                 /* on_stream_drained calls again */
    now = tool_now_us();
    if (s->limit >= 0 && s->queued >= s->limit) {
        if (s->t_last == 0 && s->queued > 0)
            s->t_last = now;
        if (s->cut == 0) {
            stream_finish(s);
        } else if (s->cutting && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
            stream_cut(s);      /* from the timer: outside evhttp's callbacks */
        } else {
            s->cutting = 1;     /* the head may still be queued (K = 0) */
            stream_later(s, s->queued > 0 ? 0 : 1000);
        }
        return;
    }
    if (s->limit >= 0 && s->limit - s->queued < n)
        n = s->limit - s->queued;
    if (s->rate > 0) {
        int64_t burst = s->rate / 100 + 1;
        int64_t allowed = (int64_t)((double)s->rate * (double)(now - s->t_rate0) / 1e6) +
                          (burst < n ? burst : n) - s->queued;

        if (allowed <= 0) {
            int64_t wait = (int64_t)((double)(1 - allowed) * 1e6 / (double)s->rate);

            stream_later(s, wait < 1000 ? 1000 : wait > 100000 ? 100000 : wait);
            return;
        }
        if (n > allowed)
            n = allowed;
    }
    if (pattern_range(s->piece, s->queued, (size_t)n) != 0) {
        stream_later(s, 10000); /* out of memory: try again shortly */
        return;
    }
    if (s->t_first == 0)
        s->t_first = now;
    s->queued += n;
    s->draining = 1;
    evhttp_send_reply_chunk_with_cb(s->req, s->piece, on_stream_drained, s);
}

/* Answers req with a generated body written as it goes; headers are set. */
static void stream_start(struct mock *m, struct evhttp_request *req,
                         const struct verdict *v, uint64_t n, int64_t latency_ms)
{
    const char *seq = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Seq");
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    struct stream *s = calloc(1, sizeof *s);
    size_t i;
    char num[32];

    if (s == NULL || (s->timer = evtimer_new(m->base, on_stream_timer, s)) == NULL ||
        (s->piece = evbuffer_new()) == NULL ||
        (s->uri = strdup(evhttp_request_get_uri(req))) == NULL) {
        if (s != NULL) {
            if (s->timer != NULL)
                event_free(s->timer);
            if (s->piece != NULL)
                evbuffer_free(s->piece);
            free(s);
        }
        send_error_json(req, 500, "mock_out_of_memory");
        return;
    }
    s->m = m;
    s->req = req;
    s->evcon = evhttp_request_get_connection(req);
    s->arrival = n;
    for (i = 0; seq != NULL && seq[i] != '\0' && i < sizeof s->seq - 1; i++)
        s->seq[i] = (seq[i] <= ' ' || seq[i] == 0x7f) ? '_' : seq[i];
    for (i = 0; s->uri[i] != '\0'; i++)
        if (s->uri[i] <= ' ' || s->uri[i] == 0x7f)
            s->uri[i] = '_';
    s->status = v->status;
    s->limit = v->endless ? -1 : v->body_size;
    if (v->cut_after >= 0 && (s->limit < 0 || v->cut_after < s->limit)) {
        s->limit = v->cut_after;
        s->cut = v->cut_rst ? 1 : 2;
    }
    s->rate = v->rate;
    if (!v->chunked) {
        snprintf(num, sizeof num, "%" PRId64, v->body_size);
        evhttp_add_header(out, "Content-Length", num);
    }
    TAILQ_INSERT_TAIL(&m->streams, s, link);
    m->streams_started++;
    evhttp_connection_set_closecb(s->evcon, on_stream_conn_close, s);
    if (latency_ms > 0)
        stream_later(s, latency_ms * 1000);
    else
        stream_begin(s);
}

static void on_arrival(struct mock *m, struct evhttp_request *req)
{
    int64_t t = tool_now_us();
    uint64_t n = ++m->arrivals;
    struct evbuffer *body = NULL;
    struct verdict v;

    decide(m, req, t, &v);
    log_arrival(m, req, t, v.kind == K_HANG || v.kind == K_DROP ? 0 : v.status);
    m->by_status[v.kind == K_HANG || v.kind == K_DROP ? 0 : v.status]++;
    if (v.kind == K_DROP) {
        /* Held like a hang (evhttp frees it with the connection), and the
         * socket shut: the client sees the connection end with no answer. */
        struct bufferevent *bev =
            evhttp_connection_get_bufferevent(evhttp_request_get_connection(req));

        deliver(m, req, 0, NULL, 0, 1);
        if (bev != NULL)
            (void)shutdown(bufferevent_getfd(bev), SHUT_RDWR);
        return;
    }
    if (v.kind == K_HANG) {
        deliver(m, req, 0, NULL, 0, 1);
        return;
    }
    add_headers(m, req, &v, n, t);
    if (v.kind == K_ECHO && v.stream && evhttp_request_get_command(req) != EVHTTP_REQ_HEAD &&
        v.status != 204 && v.status != 304) {
        if (v.body_size <= MAX_BODY_SIZE && !v.endless) {
            char sha[32];

            snprintf(sha, sizeof sha, "%016" PRIx64, pattern_sha(v.body_size));
            evhttp_add_header(evhttp_request_get_output_headers(req), "X-Mock-Body-Sha", sha);
        }
        stream_start(m, req, &v, n, m->cfg.latency_ms);
        return;
    }
    if ((body = evbuffer_new()) == NULL || build_body(req, &v, n, body) != 0) {
        if (body != NULL)
            evbuffer_free(body);
        send_error_json(req, 500, "mock_out_of_memory");
        return;
    }
    deliver(m, req, v.status, body, m->cfg.latency_ms, 0);
}

/* ---- control endpoints ------------------------------------------------ */

static void control_stats(struct mock *m, struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();
    int64_t bytes = m->stream_bytes_done;
    size_t active = 0;
    struct stream *st;
    int first = 1;

    TAILQ_FOREACH(st, &m->streams, link) {
        active++;
        bytes += stream_written(st);
    }
    if (b == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add_printf(b, "{\"arrivals\":%" PRIu64 ",\"status\":{", m->arrivals);
    for (int s = 0; s < NSTATUS; s++) {
        if (m->by_status[s] == 0)
            continue;
        evbuffer_add_printf(b, "%s\"%d\":%" PRIu64, first ? "" : ",", s, m->by_status[s]);
        first = 0;
    }
    evbuffer_add_printf(b, "},\"max_in_window\":%" PRId64, m->hist.max);
    evbuffer_add_printf(b, ",\"tls_connections\":%" PRIu64 ",\"tls_handshakes\":%" PRIu64,
                        m->tls_connections, m->tls_handshakes);
    evbuffer_add_printf(b, ",\"streams\":{\"started\":%" PRIu64 ",\"active\":%zu"
                        ",\"body_bytes\":%" PRId64 "}}", m->streams_started, active, bytes);
    send_json(req, 200, b);
    evbuffer_free(b);
}

static void send_config(struct mock *m, struct evhttp_request *req)
{
    const struct behaviour *c = &m->cfg;
    struct evbuffer *b = evbuffer_new();

    if (b == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add_printf(b, "{\"latency\":%" PRId64 ",\"fail_next\":%" PRId64
                        ",\"fail_status\":%" PRId64 ",\"retry_after\":%" PRId64
                        ",\"hang_next\":%" PRId64 ",\"drop_next\":%" PRId64 "}",
                        c->latency_ms, c->fail_next, c->fail_status,
                        c->retry_after, c->hang_next, c->drop_next);
    send_json(req, 200, b);
    evbuffer_free(b);
}

/* Applies one query parameter to c; -1 if unknown or out of range. */
static int config_param(struct behaviour *c, const char *key, const char *val)
{
    if (strcmp(key, "latency") == 0)
        return tool_parse_int(val, 0, 3600000, &c->latency_ms);
    if (strcmp(key, "fail_next") == 0)
        return tool_parse_int(val, 0, INT64_MAX, &c->fail_next);
    if (strcmp(key, "fail_status") == 0)
        return tool_parse_int(val, 200, 599, &c->fail_status);
    if (strcmp(key, "retry_after") == 0)
        return tool_parse_int(val, -1, 86400 * 365, &c->retry_after);
    if (strcmp(key, "hang_next") == 0)
        return tool_parse_int(val, 0, INT64_MAX, &c->hang_next);
    if (strcmp(key, "drop_next") == 0)
        return tool_parse_int(val, 0, INT64_MAX, &c->drop_next);
    return -1;
}

/* All parameters are checked before any is applied. */
static void control_config(struct mock *m, struct evhttp_request *req)
{
    const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    struct behaviour next = m->cfg;
    struct evkeyvalq kv;
    struct evkeyval *p;
    int bad = 0;

    TAILQ_INIT(&kv);
    if (q != NULL && evhttp_parse_query_str(q, &kv) != 0)
        bad = 1;
    TAILQ_FOREACH(p, &kv, next)
        if (!bad && config_param(&next, p->key, p->value) != 0)
            bad = 1;
    evhttp_clear_headers(&kv);
    if (bad) {
        send_error_json(req, 400, "bad config parameter");
        return;
    }
    m->cfg = next;
    send_config(m, req);
}

static void control_reset(struct mock *m, struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();

    counters_reset(m);
    if (b == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add_printf(b, "{\"ok\":true}");
    send_json(req, 200, b);
    evbuffer_free(b);
}

/* /_mock/ endpoints: never rate limited, never logged, never counted. */
static void control(struct mock *m, struct evhttp_request *req, const char *path)
{
    static const struct {
        const char *path;
        enum evhttp_cmd_type method;
        void (*fn)(struct mock *, struct evhttp_request *);
    } routes[] = {
        { "/_mock/stats", EVHTTP_REQ_GET, control_stats },
        { "/_mock/config", EVHTTP_REQ_POST, control_config },
        { "/_mock/reset", EVHTTP_REQ_POST, control_reset },
    };

    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(path, routes[i].path) != 0)
            continue;
        if (evhttp_request_get_command(req) != routes[i].method) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                              tool_method_name((int)routes[i].method));
            send_error_json(req, 405, "method not allowed");
            return;
        }
        routes[i].fn(m, req);
        return;
    }
    send_error_json(req, 404, "unknown control endpoint");
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct mock *m = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;

    if (path != NULL && strncmp(path, "/_mock/", 7) == 0)
        control(m, req, path);
    else
        on_arrival(m, req);
}

/* ---- TLS -------------------------------------------------------------- */

static int tls_done_index = -1; /* SSL ex_data: this handshake was counted */

/* Counts each connection's first completed handshake once (TLS 1.3 may
 * report "done" again after the session tickets). */
static void on_tls_info(const SSL *ssl, int where, int ret)
{
    struct mock *m = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));

    (void)ret;
    if (!(where & SSL_CB_HANDSHAKE_DONE) || SSL_get_ex_data(ssl, tls_done_index) != NULL)
        return;
    SSL_set_ex_data((SSL *)ssl, tls_done_index, m);
    m->tls_handshakes++;
}

/* evhttp's bevcb: every accepted connection gets a server-side TLS
 * bufferevent. A NULL here would make evhttp serve plain HTTP on the TLS
 * port, so failing to make one stops the mock. */
static struct bufferevent *on_tls_connection(struct event_base *base, void *arg)
{
    struct mock *m = arg;
    SSL *ssl = SSL_new(m->tls);
    struct bufferevent *bev = NULL;

    if (ssl != NULL)
        bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        fprintf(stderr, "mock_upstream: cannot make a TLS connection\n");
        exit(1);
    }
    /* Clients may close without close_notify; that is not an error here. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    m->tls_connections++;
    return bev;
}

static void tls_error(const char *what, const char *file)
{
    char buf[256];

    ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
    fprintf(stderr, "mock_upstream: %s %s: %s\n", what, file, buf);
}

/* The server context from the --tls-* files; 0, or -1 after saying why. */
static int tls_init(struct mock *m, const struct options *o)
{
    STACK_OF(X509_NAME) *names;

    if (o->tls_cert == NULL)
        return 0;
    tls_done_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    if (tls_done_index < 0 || (m->tls = SSL_CTX_new(TLS_server_method())) == NULL) {
        tls_error("cannot create a TLS context", "");
        return -1;
    }
    SSL_CTX_set_app_data(m->tls, m);
    SSL_CTX_set_info_callback(m->tls, on_tls_info);
    if (SSL_CTX_use_certificate_chain_file(m->tls, o->tls_cert) != 1) {
        tls_error("cannot load certificate", o->tls_cert);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(m->tls, o->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(m->tls) != 1) {
        tls_error("cannot load key", o->tls_key);
        return -1;
    }
    if (o->tls_client_ca != NULL) {
        if (SSL_CTX_load_verify_locations(m->tls, o->tls_client_ca, NULL) != 1 ||
            (names = SSL_load_client_CA_file(o->tls_client_ca)) == NULL) {
            tls_error("cannot load client CA", o->tls_client_ca);
            return -1;
        }
        SSL_CTX_set_client_CA_list(m->tls, names);
        SSL_CTX_set_verify(m->tls, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    evhttp_set_bevcb(m->http, on_tls_connection, m);
    return 0;
}

/* ---- setup and teardown ----------------------------------------------- */

/* Splits HOST:PORT (HOST may be [v6]); returns -1 if malformed. */
static int split_listen(const char *spec, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(spec, ':');
    const char *h = spec;
    size_t len;
    int64_t p;

    if (colon == NULL || tool_parse_int(colon + 1, 0, 65535, &p) != 0)
        return -1;
    len = (size_t)(colon - spec);
    if (len >= 2 && h[0] == '[' && h[len - 1] == ']') {
        h++;
        len -= 2;
    }
    if (len == 0 || len >= hostlen)
        return -1;
    memcpy(host, h, len);
    host[len] = '\0';
    *port = (int)p;
    return 0;
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct mock *m = arg;

    (void)fd;
    (void)what;
    evconnlistener_enable(m->listener);
}

/* The listener's user pointer belongs to evhttp, so its error callback
 * finds the mock here. */
static struct mock *listening_mock;

/* Out of descriptors: libevent would retry accept() at once, forever, on
 * the still-readable socket. Pause accepting for a moment instead. */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    static const struct timeval pause = { 0, 100000 };
    struct mock *m = listening_mock;
    int err = EVUTIL_SOCKET_ERROR();
    int64_t t = tool_now_us();

    (void)arg;
    if (t - m->accept_warned_at >= US_PER_S) {
        fprintf(stderr, "mock_upstream: accept: %s (pausing accepts)\n",
                evutil_socket_error_to_string(err));
        m->accept_warned_at = t;
    }
    evconnlistener_disable(l);
    evtimer_add(m->resume, &pause);
}

/* Binds our own listener (evhttp's backlog of 128 is too small for bursts
 * of thousands of connections); returns the bound port or -1. */
static int bind_listener(struct mock *m, const char *host, int port)
{
    struct evutil_addrinfo hints, *ai = NULL, *pick;
    struct evconnlistener *l;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char portstr[8];
    int one = 1;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = EVUTIL_AI_PASSIVE;
    snprintf(portstr, sizeof portstr, "%d", port);
    if (evutil_getaddrinfo(host, portstr, &hints, &ai) != 0 || ai == NULL) {
        fprintf(stderr, "mock_upstream: cannot resolve %s\n", host);
        return -1;
    }
    /* burst and the tests reach "localhost" as 127.0.0.1: prefer IPv4 */
    for (pick = ai; pick != NULL && pick->ai_family != AF_INET; pick = pick->ai_next)
        continue;
    if (pick == NULL)
        pick = ai;
    l = evconnlistener_new_bind(m->base, NULL, NULL,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                LEV_OPT_CLOSE_ON_EXEC, LISTEN_BACKLOG,
                                pick->ai_addr, (int)pick->ai_addrlen);
    evutil_freeaddrinfo(ai);
    if (l == NULL) {
        fprintf(stderr, "mock_upstream: cannot listen on %s:%d: %s\n", host, port,
                strerror(errno));
        return -1;
    }
    if (evhttp_bind_listener(m->http, l) == NULL) {
        evconnlistener_free(l);
        return -1;
    }
    m->listener = l;
    listening_mock = m;
    evconnlistener_set_error_cb(l, on_accept_error);
    /* Accepted sockets inherit it (Linux). Over TLS an answer leaves as
     * several records, each its own write: Nagle would hold the last one
     * until the client's delayed ACK, 40 ms later. */
    if (setsockopt(evconnlistener_get_fd(l), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        fprintf(stderr, "mock_upstream: TCP_NODELAY: %s\n", strerror(errno));
    if (getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&ss, &sl) != 0)
        return -1;
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

/* Written to FILE.tmp and renamed, so a reader never sees a partial file. */
static int write_port_file(const char *path, int port)
{
    char tmp[4096];
    FILE *f;
    int rc;

    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return -1;
    if ((f = fopen(tmp, "w")) == NULL)
        return -1;
    rc = fprintf(f, "%d\n", port) < 0;
    rc |= fclose(f) != 0;
    if (rc != 0 || rename(tmp, path) != 0) {
        remove(tmp);
        return -1;
    }
    return 0;
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

static int mock_init(struct mock *m, const struct options *o)
{
    memset(m, 0, sizeof *m);
    TAILQ_INIT(&m->held);
    TAILQ_INIT(&m->streams);
    m->cfg.latency_ms = o->latency_ms;
    m->cfg.fail_next = o->fail_first;
    m->cfg.fail_status = o->fail_status;
    m->cfg.retry_after = o->retry_after;
    m->cfg.hang_next = o->hang_first;
    m->win.period = o->rate_period_us;
    m->bud.limit = o->budget;
    m->bud.window_us = o->budget_window_s * US_PER_S;
    m->bud.epoch = tool_now_us();
    if (o->rate_n > 0) {
        if ((m->win.t = calloc((size_t)o->rate_n, sizeof *m->win.t)) == NULL)
            return -1;
        m->win.cap = (size_t)o->rate_n;
    }
    if (o->log_path != NULL && (m->log = fopen(o->log_path, "a")) == NULL) {
        fprintf(stderr, "mock_upstream: cannot open %s: %s\n", o->log_path,
                strerror(errno));
        return -1;
    }
    if (o->stream_log_path != NULL && (m->stream_log = fopen(o->stream_log_path, "a")) == NULL) {
        fprintf(stderr, "mock_upstream: cannot open %s: %s\n", o->stream_log_path,
                strerror(errno));
        return -1;
    }
    if ((m->base = tool_new_base()) == NULL || (m->http = evhttp_new(m->base)) == NULL ||
        (m->resume = evtimer_new(m->base, on_resume, m)) == NULL)
        return -1;
    evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD |
        EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_PATCH |
        EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS);
    evhttp_set_gencb(m->http, on_request, m);
    return tls_init(m, o);
}

/* Requests still held are freed here only when evhttp has detached them;
 * those still on a connection are freed by evhttp_free. */
static void mock_free(struct mock *m)
{
    struct held *h;
    struct stream *st;

    while ((h = TAILQ_FIRST(&m->held)) != NULL) {
        if (evhttp_request_get_connection(h->req) == NULL)
            evhttp_request_free(h->req);
        held_free(h);
    }
    if (m->resume != NULL)
        event_free(m->resume);
    if (m->http != NULL)
        evhttp_free(m->http);   /* ends the streams still running (peer_closed) */
    while ((st = TAILQ_FIRST(&m->streams)) != NULL) {
        st->evcon = NULL;       /* its request went with its connection */
        stream_end(st, END_PEER_CLOSED, st->queued);
    }
    if (m->tls != NULL)
        SSL_CTX_free(m->tls);
    if (m->base != NULL)
        event_base_free(m->base);
    if (m->log != NULL)
        fclose(m->log);
    if (m->stream_log != NULL)
        fclose(m->stream_log);
    free(m->win.t);
    free(m->hist.t);
}

static int run(struct mock *m, const struct options *o, const char *host, int port)
{
    struct event *ev[3] = { NULL, NULL, NULL };
    struct timeval limit = { (time_t)o->max_seconds,
        (suseconds_t)((o->max_seconds - (double)(time_t)o->max_seconds) * 1e6) };
    int rc = -1;

    ev[0] = evsignal_new(m->base, SIGTERM, on_stop, m->base);
    ev[1] = evsignal_new(m->base, SIGINT, on_stop, m->base);
    ev[2] = evtimer_new(m->base, on_stop, m->base);
    if (!ev[0] || !ev[1] || !ev[2] || event_add(ev[0], NULL) || event_add(ev[1], NULL) ||
        event_add(ev[2], &limit))
        goto out;
    fprintf(stderr, "mock_upstream listening on %s%s%s:%d%s\n",
            strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", port,
            m->tls != NULL ? " (TLS)" : "");
    if (o->port_file != NULL && write_port_file(o->port_file, port) != 0) {
        fprintf(stderr, "mock_upstream: cannot write %s\n", o->port_file);
        goto out;
    }
    rc = event_base_dispatch(m->base) < 0 ? -1 : 0;
out:
    for (int i = 0; i < 3; i++)
        if (ev[i] != NULL)
            event_free(ev[i]);
    return rc;
}

int main(int argc, char **argv)
{
    struct options o;
    struct mock m;
    char host[256];
    int port, rc = 1;

    parse_args(argc, argv, &o);
    if (split_listen(o.listen, host, sizeof host, &port) != 0)
        die_usage("--listen expects HOST:PORT", o.listen);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    for (size_t i = 0; i < sizeof pattern; i++)
        pattern[i] = pattern_alphabet[i % PATTERN_PERIOD];
    if (mock_init(&m, &o) != 0) {
        fprintf(stderr, "mock_upstream: initialisation failed\n");
    } else if ((port = bind_listener(&m, host, port)) >= 0 && run(&m, &o, host, port) == 0) {
        rc = 0;
    }
    mock_free(&m);
    return rc;
}
