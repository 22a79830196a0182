/*
 * h1client.c - HTTP/1.1 calls to http:// upstreams over pooled bufferevents.
 *
 * A call serializes its request head once, at start (a few memcpy's, no
 * printf per field), takes the most recently used idle connection of its
 * origin or opens one, writes the head plus the borrowed body, and feeds the
 * answer to http1.h's parser. A complete keep-alive answer puts the connection
 * back in the pool before the done callback runs, so a call started from the
 * callback can reuse it.
 *
 * Every completion comes from an event callback (read, event, or the call's
 * timer), so done never runs inside sl_h1client_start(): a failure found
 * while a connection is being opened is parked in the call and reported from
 * a 0-timeout timer.
 */
#include "h1client.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "clock.h"
#include "sluice.h"
#include "http1.h"
#include "wire.h"

#define H1_HOST_MAX 256                  /* a DNS name has at most 253 */
#define H1_ORIGIN_MAX (H1_HOST_MAX + 8)  /* "[host]:65535" */
#define H1_HEADERS_MAX (64 * 1024)       /* status line and fields of an answer */
#define H1_MAX_FIELDS 256                /* fields of an answer */
#define H1_SPARE_BODIES 16
#define H1_IDLE_MAX_US (60 * SL_USEC_PER_SEC)
#define H1_ORIGINS_MAX 64
#define H1_DEFAULT_PORT 80
#define H1_STREAM_READ (128 * 1024)      /* one read of a streamed body */

TAILQ_HEAD(h1_conn_list, h1_conn);

/* The idle connections to one "host:port", most recently used first. */
struct h1_origin {
    TAILQ_ENTRY(h1_origin) link;
    struct h1_conn_list idle;
    char key[H1_ORIGIN_MAX];
};

/*
 * One TCP connection: idle in the pool, or serving exactly one call. The
 * bufferevent connects and writes what a direct send left over; once
 * connected, the socket is read with a plain event into `in` (sl_wire_read:
 * no ioctl per read).
 */
struct h1_conn {
    TAILQ_ENTRY(h1_conn) olink;         /* origin->idle, while idle */
    TAILQ_ENTRY(h1_conn) glink;         /* client->idle, while idle */
    struct sl_h1client *c;
    struct h1_origin *origin;           /* non-NULL while idle */
    struct sl_h1call *call;             /* non-NULL while serving */
    struct bufferevent *bev;            /* owns the socket */
    struct event *rd;                   /* EV_READ | EV_PERSIST once connected; in this block */
    struct evbuffer *in;                /* what was read and not parsed yet */
    bool connected;
    bool reused;                        /* taken from the pool: the keep-alive race applies */
    int64_t idle_since;
};

struct sl_h1call {
    struct sl_backend_call base;        /* first: how upstream.c cancels it */
    TAILQ_ENTRY(sl_h1call) link;
    struct sl_h1client *c;
    struct h1_conn *conn;               /* NULL only when a failure is deferred */
    struct event *timer;                /* timeout, or the deferred failure; in this allocation */
    sl_upstream_done_fn done;
    sl_upstream_sent_fn sent;           /* optional; see backend.h */
    sl_upstream_head_fn head_fn;        /* optional, with body_fn; see backend.h */
    sl_upstream_body_fn body_fn;
    void *arg;
    size_t max_body;                    /* a body taken whole: its cap (0: none) */
    enum sl_upstream_take take;         /* once head_reported */
    int64_t started_us;
    int64_t timeout_us;
    const void *body;                   /* borrowed until done/cancel */
    size_t body_len;
    int port;
    bool is_head;                       /* HEAD: the answer has no body */
    bool opening;                       /* inside call_connect(): failures are deferred */
    bool deferred;                      /* resp holds a failure for the timer to report */
    bool got_bytes;                     /* any byte of an answer on this connection */
    bool headers_done;                  /* the final answer's header block was parsed */
    bool until_close;                   /* ...and its body ends when the connection does */
    bool chunked;                       /* ...or it is chunked */
    bool complete, keep_alive;
    bool finishing;                     /* its callback runs: cancel is a no-op */
    bool head_reported;                 /* head_fn was asked how to take the body */
    bool paused;                        /* body_fn asked to wait: not reading */
    const char *why;                    /* reason the answer was refused */
    size_t scanned;                     /* input bytes searched for the head's end */
    uint64_t body_left;                 /* Content-Length bytes still to read */
    struct sl_http1_chunked chunk;
    const char *host;                   /* for DNS, without brackets; in this allocation */
    const char *origin;                 /* pool key; in this allocation */
    struct sl_upstream_response resp;
    size_t head_len;
    char head[];                        /* "METHOD /path HTTP/1.1\r\n...\r\n\r\n" */
};

/* Where a URL's authority leads: parsed once per distinct authority (see origin_of()). */
struct h1_dest {
    char authority[H1_ORIGIN_MAX];      /* as written in the URL */
    size_t authority_len;               /* 0: nothing cached */
    char host[H1_HOST_MAX];             /* for DNS, without brackets */
    char origin[H1_ORIGIN_MAX];         /* pool key: "host:port" or "[v6]:port" */
    size_t host_value_len;              /* Host field: the origin without a default ":80" */
    int port;
};

struct sl_h1client {
    struct sl_backend backend;          /* first: this client behind backend.h */
    struct event_base *base;
    struct h1_dest last;                /* the last authority seen: routes reuse theirs */
    struct evbuffer *spare[H1_SPARE_BODIES]; /* empty answer buffers, see body_get() */
    size_t n_spare;
    struct evdns_base *dns;             /* created at the first name to resolve */
    unsigned max_idle;
    size_t n_idle;
    struct h1_conn_list idle;           /* every idle connection, most recent first */
    TAILQ_HEAD(, h1_origin) origins;
    size_t n_origins;
    TAILQ_HEAD(, sl_h1call) calls;
    size_t active;
    int64_t common_us;                  /* the last timeout turned into a common one */
    const struct timeval *common_tv;
};

static const struct sl_backend_ops h1client_ops;
static void conn_free(struct h1_conn *conn);
static void fail(struct sl_h1call *call, enum sl_upstream_error e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- small helpers ------------------------------------------------------ */

/* ---- URLs --------------------------------------------------------------- */

/* The parts of an http:// URL this client needs; pointers into the URL. */
struct h1_url {
    const char *host;                   /* without brackets */
    size_t host_len;
    bool v6;
    int port;
    const char *path;                   /* "/...", "?..." or empty; no fragment */
    size_t path_len;
};

static bool parse_port(const char *s, size_t n, int *port)
{
    long v = 0;

    if (n == 0 || n > 5)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return false;
    *port = (int)v;
    return true;
}

/* "host[:port]" or "[v6][:port]"; userinfo and zone ids are left to curl. */
static bool parse_authority(const char *a, size_t n, struct h1_url *u)
{
    const char *port = NULL;

    for (size_t i = 0; i < n; i++)
        if ((unsigned char)a[i] <= ' ' || a[i] == 0x7f || a[i] == '@' || a[i] == '%')
            return false;
    if (n > 0 && a[0] == '[') {
        const char *close = memchr(a, ']', n);
        if (close == NULL || (close + 1 < a + n && close[1] != ':'))
            return false;
        u->host = a + 1;
        u->host_len = (size_t)(close - u->host);
        u->v6 = true;
        port = close + 1 < a + n ? close + 2 : NULL;
    } else {
        const char *colon = memchr(a, ':', n);
        u->host = a;
        u->host_len = colon != NULL ? (size_t)(colon - a) : n;
        u->v6 = false;
        port = colon != NULL ? colon + 1 : NULL;
    }
    if (u->host_len == 0 || u->host_len >= H1_HOST_MAX)
        return false;
    u->port = H1_DEFAULT_PORT;
    return port == NULL || parse_port(port, (size_t)(a + n - port), &u->port);
}

/* Split an http:// URL into its authority and path; parse_authority() checks the former. */
static bool split_url(const char *url, const char **auth, size_t *auth_len, struct h1_url *u)
{
    if (url == NULL || strncasecmp(url, "http://", 7) != 0)
        return false;
    *auth = url + 7;
    *auth_len = strcspn(*auth, "/?#");
    u->path = *auth + *auth_len;
    u->path_len = strcspn(u->path, "#"); /* a fragment is never sent */
    return true;
}


/* ---- the request head --------------------------------------------------- */

/* Appends to `p`, or only counts when `p` is NULL: one routine sizes and writes. */
struct writer {
    char *p;
    size_t len;
};

static void put(struct writer *w, const char *s, size_t n)
{
    if (w->p != NULL)
        memcpy(w->p + w->len, s, n);
    w->len += n;
}

static void put_str(struct writer *w, const char *s)
{
    put(w, s, strlen(s));
}

static int put_field(const char *name, const char *value, void *arg)
{
    struct writer *w = arg;

    put_str(w, name);
    put(w, ":", 1);
    if (value[0] != '\0') {
        put(w, " ", 1);
        put_str(w, value);
    }
    put(w, "\r\n", 2);
    return SL_OK;
}

/*
 * The upstream sees exactly the translated fields, in order, plus Host when
 * they carry none (preserve_host off) and the framing of our body. No
 * Connection (1.1 is persistent), no Expect, no Accept, no User-Agent.
 */
static void write_head(struct writer *w, const struct sl_upstream_request *req,
                       const struct h1_url *u, const char *host, size_t host_len,
                       const char *length)
{
    const struct evkeyval *h;

    put_str(w, req->method);
    put(w, " ", 1);
    if (u->path_len == 0 || u->path[0] != '/')
        put(w, "/", 1);
    put(w, u->path, u->path_len);
    put(w, " HTTP/1.1\r\n", 11);
    if (host != NULL) {
        put(w, "Host: ", 6);
        put(w, host, host_len);
        put(w, "\r\n", 2);
    }
    if (req->headers != NULL && req->forward != NULL) {
        /* A visitor cannot fail here: put() only measures or copies. */
        (void)sl_headers_each_to_upstream(req->headers, req->forward, put_field, w);
    } else if (req->headers != NULL) {
        TAILQ_FOREACH(h, req->headers, next)
            (void)put_field(h->key, h->value, w);
    }
    if (length != NULL) {
        put(w, "Content-Length: ", 16);
        put_str(w, length);
        put(w, "\r\n", 2);
    }
    put(w, "\r\n", 2);
}

static bool has_host(const struct evkeyvalq *hdrs)
{
    const struct evkeyval *h;

    if (hdrs == NULL)
        return false;
    TAILQ_FOREACH(h, hdrs, next)
        if (strcasecmp(h->key, "Host") == 0)
            return true;
    return false;
}

/* Like curl: POST, PUT and PATCH always state their length, even 0. */
static bool needs_length(const char *method, size_t body_len)
{
    return body_len > 0 || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
           strcmp(method, "PATCH") == 0;
}

/* ---- calls: construction and the single exit ---------------------------- */

/*
 * Answer bodies: the callback moves a body's chains away, which leaves an
 * empty buffer that the next call can use instead of a new one.
 */
static struct evbuffer *body_get(struct sl_h1client *c)
{
    return c->n_spare > 0 ? c->spare[--c->n_spare] : evbuffer_new();
}

static void body_put(struct sl_h1client *c, struct evbuffer *b)
{
    if (c->n_spare < H1_SPARE_BODIES && evbuffer_drain(b, evbuffer_get_length(b)) == 0)
        c->spare[c->n_spare++] = b;
    else
        evbuffer_free(b);
}

static void call_free(struct sl_h1call *call)
{
    if (call->timer != NULL)
        event_del(call->timer);
    sl_headers_clear(&call->resp.headers);
    if (call->resp.body != NULL)
        body_put(call->c, call->resp.body);
    free(call);
}

static void call_on_timer(evutil_socket_t fd, short what, void *arg);

/* "host:port" or "[v6]:port" (the pool key), and the Host value's length. */
static void format_origin(const struct h1_url *u, struct h1_dest *d)
{
    char port[8];
    char *p = d->origin;

    if (u->v6)
        *p++ = '[';
    memcpy(p, u->host, u->host_len);
    p += u->host_len;
    if (u->v6)
        *p++ = ']';
    d->host_value_len = u->port == H1_DEFAULT_PORT ? (size_t)(p - d->origin) : 0;
    *p++ = ':';
    p = stpcpy(p, sl_http1_u64(port + sizeof(port) - 1, (uint64_t)u->port));
    if (d->host_value_len == 0)
        d->host_value_len = (size_t)(p - d->origin);
}

/*
 * The destination of `url`, or NULL if this client does not take it. A
 * route sends every call to one authority: it is parsed and formatted once
 * and reused while the next URL names the same one.
 */
static const struct h1_dest *dest_of(struct sl_h1client *c, const char *url, struct h1_url *u)
{
    struct h1_dest *d = &c->last;
    const char *a;
    size_t n;

    if (!split_url(url, &a, &n, u))
        return NULL;
    if (n == d->authority_len && n > 0 && memcmp(a, d->authority, n) == 0)
        return d;
    d->authority_len = 0;
    if (n >= sizeof(d->authority) || !parse_authority(a, n, u))
        return NULL;
    memcpy(d->host, u->host, u->host_len);
    d->host[u->host_len] = '\0';
    d->port = u->port;
    format_origin(u, d);
    memcpy(d->authority, a, n);
    d->authority_len = n;
    return d;
}

/* One allocation holds the call and its serialized head. */
static struct sl_h1call *call_new(struct sl_h1client *c, const struct sl_upstream_request *req,
                                  const struct h1_url *u, const struct h1_dest *d)
{
    char length[24];
    /* Translation drops the client's Host unless preserve_host keeps it. */
    bool keeps_host = has_host(req->headers) &&
                      (req->forward == NULL || req->forward->preserve_host);
    const char *host = keeps_host ? NULL : d->origin;
    const char *len = NULL;
    struct writer w = {NULL, 0};
    size_t body_len = req->body != NULL ? req->body_len : 0;

    if (needs_length(req->method, body_len))
        len = sl_http1_u64(length + sizeof(length) - 1, body_len);
    write_head(&w, req, u, host, d->host_value_len, len);

    /*
     * One allocation (small enough for malloc's thread cache): the call, its
     * head, its origin and host, then its timer (event_assign, no event_new).
     */
    size_t origin_len = strlen(d->origin) + 1, host_len = strlen(d->host) + 1;
    size_t timer_at = (sizeof(struct sl_h1call) + w.len + origin_len + host_len + 15) &
                      ~(size_t)15;
    struct sl_h1call *call = sl_zalloc(timer_at + event_get_struct_event_size());
    if (call == NULL)
        return NULL;
    call->base.ops = &h1client_ops;
    call->c = c;
    w = (struct writer){call->head, 0};
    write_head(&w, req, u, host, d->host_value_len, len);
    call->head_len = w.len;
    call->origin = memcpy(call->head + w.len, d->origin, origin_len);
    call->host = memcpy(call->head + w.len + origin_len, d->host, host_len);
    call->port = d->port;
    call->body = req->body;
    call->body_len = body_len;
    call->timeout_us = req->timeout_us;
    call->is_head = strcmp(req->method, "HEAD") == 0;
    TAILQ_INIT(&call->resp.headers);
    call->resp.body = body_get(c);
    if (evtimer_assign((struct event *)((char *)call + timer_at), c->base, call_on_timer, call) ==
        0)
        call->timer = (struct event *)((char *)call + timer_at);
    if (call->resp.body == NULL || call->timer == NULL || event_priority_set(call->timer, 0) != 0) {
        call_free(call);
        return NULL;
    }
    return call;
}

/* The one way a call that was not cancelled ends: its callback, then free. */
static void call_end(struct sl_h1call *call)
{
    struct sl_h1client *c = call->c;

    TAILQ_REMOVE(&c->calls, call, link);
    c->active--;
    call->resp.duration_us = sl_clock_now() - call->started_us;
    call->finishing = true;
    call->done(&call->resp, call->arg);
    call_free(call);
}

/* Record a failure (any partial answer is dropped, as the curl path does). */
static void set_error(struct sl_h1call *call, enum sl_upstream_error e, const char *fmt,
                      va_list ap)
{
    call->resp.error = e;
    call->resp.status = 0;
    call->resp.reason[0] = '\0';
    vsnprintf(call->resp.detail, sizeof(call->resp.detail), fmt, ap);
    sl_headers_clear(&call->resp.headers);
    evbuffer_drain(call->resp.body, evbuffer_get_length(call->resp.body));
}

/* Fail the call now, or from its timer when inside call_connect(). */
static void fail(struct sl_h1call *call, enum sl_upstream_error e, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    set_error(call, e, fmt, ap);
    va_end(ap);
    if (call->opening) {
        call->deferred = true;
        return;
    }
    if (call->conn != NULL) {
        conn_free(call->conn);
        call->conn = NULL;
    }
    call_end(call);
}

static int arm_now(struct sl_h1call *call)
{
    const struct timeval zero = {0, 0};
    return evtimer_add(call->timer, &zero) == 0 ? SL_OK : SL_ERR;
}

/* Many calls share a route's timeout: a common timeout queue makes them O(1). */
static int arm_timeout(struct sl_h1call *call)
{
    struct sl_h1client *c = call->c;
    struct timeval tv = {
        .tv_sec = (time_t)(call->timeout_us / SL_USEC_PER_SEC),
        .tv_usec = (suseconds_t)(call->timeout_us % SL_USEC_PER_SEC),
    };

    if (call->timeout_us <= 0)
        return SL_OK;
    if (c->common_tv == NULL || c->common_us != call->timeout_us) {
        c->common_tv = event_base_init_common_timeout(c->base, &tv);
        c->common_us = call->timeout_us;
    }
    return evtimer_add(call->timer, c->common_tv != NULL ? c->common_tv : &tv) == 0 ? SL_OK
                                                                                     : SL_ERR;
}

/* ---- the pool ----------------------------------------------------------- */

static struct h1_origin *origin_find(struct sl_h1client *c, const char *key)
{
    struct h1_origin *o;

    TAILQ_FOREACH(o, &c->origins, link)
        if (strcmp(o->key, key) == 0)
            return o;
    return NULL;
}

/* Origins outlive their connections (no churn); prune empty ones past a cap. */
static void origins_prune(struct sl_h1client *c)
{
    struct h1_origin *o, *next;

    for (o = TAILQ_FIRST(&c->origins); o != NULL; o = next) {
        next = TAILQ_NEXT(o, link);
        if (TAILQ_EMPTY(&o->idle)) {
            TAILQ_REMOVE(&c->origins, o, link);
            c->n_origins--;
            free(o);
        }
    }
}

static struct h1_origin *origin_get(struct sl_h1client *c, const char *key)
{
    struct h1_origin *o = origin_find(c, key);

    if (o != NULL)
        return o;
    if (c->n_origins >= H1_ORIGINS_MAX)
        origins_prune(c);
    o = calloc(1, sizeof(*o));
    if (o == NULL)
        return NULL;
    TAILQ_INIT(&o->idle);
    snprintf(o->key, sizeof(o->key), "%s", key);
    TAILQ_INSERT_HEAD(&c->origins, o, link);
    c->n_origins++;
    return o;
}

static void pool_unlink(struct h1_conn *conn)
{
    struct sl_h1client *c = conn->c;

    TAILQ_REMOVE(&conn->origin->idle, conn, olink);
    TAILQ_REMOVE(&c->idle, conn, glink);
    c->n_idle--;
    conn->origin = NULL;
}

static void conn_on_idle_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    conn_free(arg);
}

/* Keep a connection whose answer was complete; the least recently used goes at the cap. */
static void pool_put(struct sl_h1client *c, struct h1_conn *conn, const char *key, int64_t now)
{
    struct h1_origin *o = c->max_idle > 0 ? origin_get(c, key) : NULL;

    if (o == NULL) {
        conn_free(conn);
        return;
    }
    if (c->n_idle >= c->max_idle)
        conn_free(TAILQ_LAST(&c->idle, h1_conn_list));
    conn->call = NULL;
    conn->origin = o;
    conn->idle_since = now;
    TAILQ_INSERT_HEAD(&o->idle, conn, olink);
    TAILQ_INSERT_HEAD(&c->idle, conn, glink);
    c->n_idle++;
    bufferevent_setcb(conn->bev, NULL, NULL, conn_on_idle_event, conn);
    if (bufferevent_get_enabled(conn->bev) & EV_WRITE)
        (void)bufferevent_disable(conn->bev, EV_WRITE);
}

/* The freshest idle connection to `key`; stale ones are closed on the way. */
static struct h1_conn *pool_take(struct sl_h1client *c, const char *key, int64_t now)
{
    struct h1_origin *o = origin_find(c, key);
    struct h1_conn *conn;

    while (o != NULL && (conn = TAILQ_FIRST(&o->idle)) != NULL) {
        pool_unlink(conn);
        if (now - conn->idle_since < H1_IDLE_MAX_US) {
            conn->reused = true;
            return conn;
        }
        conn_free(conn);
    }
    return NULL;
}

/* ---- parsing the answer ------------------------------------------------- */

static int refuse(struct sl_h1call *call, const char *why)
{
    call->why = why;
    return -1;
}

/* The final answer's head: its fields and how its body is framed. */
static int take_final_head(struct sl_h1call *call, const struct sl_http1_head *h)
{
    size_t n = h->reason_len < SL_UPSTREAM_REASON_LEN ? h->reason_len : SL_UPSTREAM_REASON_LEN - 1;

    call->headers_done = true;
    call->resp.status = h->status;
    call->resp.content_length = h->chunked ? -1 : h->content_length;
    memcpy(call->resp.reason, h->reason, n);
    call->resp.reason[n] = '\0';
    if (sl_headers_add_parsed(&call->resp.headers, h->fields, h->n_fields) != SL_OK)
        return refuse(call, "out of memory");
    /* HEAD, 204 and 304 answers have no body whatever their framing says. */
    if (call->is_head || h->status == 204 || h->status == 304) {
        call->complete = true;
    } else if (h->chunked) {
        call->chunked = true;
        sl_http1_chunked_init(&call->chunk);
    } else if (h->content_length >= 0) {
        call->body_left = (uint64_t)h->content_length;
        call->complete = call->body_left == 0;
    } else {
        call->until_close = true;
    }
    call->keep_alive = sl_http1_keep_alive(h) && !call->until_close;
    return 0;
}

/*
 * Parse a head once its end may have arrived: 1 while incomplete, 0 once
 * one was taken from `in` (an interim 1xx is skipped: the final one
 * follows), -1 on error.
 */
static int read_head(struct sl_h1call *call, struct evbuffer *in)
{
    struct sl_http1_field fields[H1_MAX_FIELDS];
    struct sl_http1_head h = {.fields = fields, .max_fields = H1_MAX_FIELDS};
    size_t n;
    char *buf;
    int rc = sl_wire_head(in, H1_HEADERS_MAX, &call->scanned, &buf, &n);

    if (rc != 0)
        return rc < 0 ? refuse(call, "out of memory") : 1;
    rc = sl_http1_parse_response(buf, n, H1_HEADERS_MAX, &h);
    if (rc == SL_HTTP1_PARTIAL)
        return 1;
    if (rc == SL_HTTP1_TOO_LARGE)
        return refuse(call, h.error != NULL && strstr(h.error, "fields") != NULL
                                ? "response has too many header fields (over 256)"
                                : "response headers exceed 64 KiB");
    if (rc != SL_HTTP1_DONE)
        return refuse(call, h.error);
    if (h.status == 101)
        return refuse(call, "unexpected 101 Switching Protocols");
    rc = h.status >= 200 ? take_final_head(call, &h) : 0;
    evbuffer_drain(in, h.head_len);
    call->scanned = 0;
    return rc;
}

static int append_body(void *arg, const char *data, size_t len)
{
    struct sl_h1call *call = arg;

    return evbuffer_add(call->resp.body, data, len);
}

/* Decode what arrived of a chunked body; -1 on error. */
static int read_chunked(struct sl_h1call *call, struct evbuffer *in)
{
    if (sl_wire_dechunk(in, &call->chunk, append_body, call) != 0)
        return refuse(call, call->chunk.error);
    call->complete = call->chunk.done;
    return 0;
}

/* Move what arrived of the body into the answer (whole chains, no copy); -1 on error. */
static int read_body(struct sl_h1call *call, struct evbuffer *in)
{
    size_t n = evbuffer_get_length(in);

    if (call->chunked)
        return read_chunked(call, in);
    if (!call->until_close && n > call->body_left)
        n = (size_t)call->body_left;
    if (n > 0 && evbuffer_remove_buffer(in, call->resp.body, n) != (int)n)
        return refuse(call, "out of memory");
    if (!call->until_close) {
        call->body_left -= n;
        call->complete = call->body_left == 0;
    }
    return 0;
}

/* Parse what arrived. Returns SL_OK (the answer may be complete) or SL_ERR. */
static int conn_parse(struct h1_conn *conn)
{
    struct evbuffer *in = conn->in;
    struct sl_h1call *call = conn->call;
    int rc = 0;

    /* Heads until the final one (interim 1xx answers are skipped). */
    while (!call->headers_done && rc == 0 && evbuffer_get_length(in) > 0)
        rc = read_head(call, in);
    if (rc < 0)
        return SL_ERR;
    if (call->headers_done && !call->complete && read_body(call, in) != 0)
        return SL_ERR;
    return SL_OK;
}

/* ---- connections -------------------------------------------------------- */

static void conn_free(struct h1_conn *conn)
{
    if (conn->origin != NULL)
        pool_unlink(conn);
    if (conn->connected)
        event_del(conn->rd);
    if (conn->bev != NULL)
        bufferevent_free(conn->bev);
    if (conn->in != NULL)
        evbuffer_free(conn->in);
    free(conn);
}

/* The answer is complete: keep the connection if both directions are clean. */
static void call_succeed(struct sl_h1call *call)
{
    struct h1_conn *conn = call->conn;
    bool clean = call->keep_alive && evbuffer_get_length(conn->in) == 0 &&
                 evbuffer_get_length(bufferevent_get_output(conn->bev)) == 0;

    call->conn = NULL;
    conn->call = NULL;
    if (clean)
        pool_put(call->c, conn, call->origin, sl_clock_now());
    else
        conn_free(conn);
    call->resp.error = SL_UPSTREAM_OK;
    call_end(call);
}

/* Nobody wants the body: the connection goes (it is half read), the call ends now. */
static void call_drop(struct sl_h1call *call)
{
    conn_free(call->conn);
    call->conn = NULL;
    evbuffer_drain(call->resp.body, evbuffer_get_length(call->resp.body));
    call->resp.error = SL_UPSTREAM_OK;
    call_end(call);
}

/*
 * A body taken whole (no streaming asked for, or the head callback chose
 * it) is over the cap, the bytes that ended it included.
 */
static bool over_cap(const struct sl_h1call *call)
{
    bool whole = call->head_fn == NULL || (call->head_reported && call->take == SL_TAKE_WHOLE);

    return whole && call->max_body > 0 && evbuffer_get_length(call->resp.body) > call->max_body;
}

static void fail_too_large(struct sl_h1call *call)
{
    fail(call, SL_UPSTREAM_TOO_LARGE, "the response body is larger than %zu bytes",
         call->max_body);
}

/*
 * The head is in and the body is not, all of it: ask once how the caller
 * takes it, then hand over what came (streamed) or hold it under the cap.
 * An answer that arrived whole never comes here: small answers cost nothing.
 */
static void take_partial(struct sl_h1call *call)
{
    if (!call->head_reported) {
        call->head_reported = true;
        call->take = call->head_fn != NULL ? call->head_fn(&call->resp, call->arg) : SL_TAKE_WHOLE;
        if (call->take == SL_TAKE_NONE) {
            call_drop(call);
            return;
        }
    }
    if (call->take == SL_TAKE_STREAM) {
        /* A full consumer: stop reading (TCP then slows the upstream down). */
        if (evbuffer_get_length(call->resp.body) > 0 && !call->body_fn(&call->resp, call->arg) &&
            call->conn != NULL && event_del(call->conn->rd) == 0)
            call->paused = true;
    } else if (over_cap(call)) {
        fail_too_large(call);
    }
}

static void conn_on_read(struct h1_conn *conn)
{
    struct sl_h1call *call = conn->call;

    call->got_bytes = true;
    if (conn_parse(conn) != SL_OK)
        fail(call, SL_UPSTREAM_PROTOCOL, "Invalid HTTP response: %s", call->why);
    else if (call->complete && over_cap(call))
        fail_too_large(call);
    else if (call->complete)
        call_succeed(call);
    else if (call->headers_done)
        take_partial(call);
}

/* A body delimited by the close is complete at EOF. Returns true if it was. */
static bool finish_at_eof(struct h1_conn *conn)
{
    struct sl_h1call *call = conn->call;

    if (!call->until_close)
        return false;
    call->complete = true;
    call->keep_alive = false;
    call_succeed(call);
    return true;
}

/* The request has reached the socket (or its buffer in the bufferevent). */
static void report_sent(struct h1_conn *conn)
{
    struct sl_h1call *call = conn->call;

    if (call != NULL && call->sent != NULL)
        call->sent(call->arg);
}

static void conn_on_readable(evutil_socket_t fd, short what, void *arg);

static void conn_connected(struct h1_conn *conn)
{
    int one = 1;
    evutil_socket_t fd = bufferevent_getfd(conn->bev);
    struct sl_h1call *call = conn->call;

    /* The head and a body tail must not wait for an ACK (Nagle). */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (event_assign(conn->rd, conn->c->base, fd, EV_READ | EV_PERSIST, conn_on_readable, conn) !=
            0 ||
        event_priority_set(conn->rd, 0) != 0 || event_add(conn->rd, NULL) != 0) {
        fail(call, SL_UPSTREAM_CONNECT, "Failed to connect to %s: cannot watch the socket",
             call->origin);
        return;
    }
    conn->connected = true;
    /* The bufferevent writes the queued request as soon as this returns. */
    report_sent(conn);
}

static void connect_failed(struct sl_h1call *call, struct h1_conn *conn, int err)
{
    int dns = bufferevent_socket_get_dns_error(conn->bev);

    if (dns != 0)
        fail(call, SL_UPSTREAM_CONNECT, "Could not resolve host: %s (%s)", call->host,
             evutil_gai_strerror(dns));
    else
        fail(call, SL_UPSTREAM_CONNECT, "Failed to connect to %s: %s", call->origin,
             err != 0 ? evutil_socket_error_to_string(err) : "connection failed");
}

static void conn_on_event(struct bufferevent *bev, short what, void *arg)
{
    struct h1_conn *conn = arg;
    struct sl_h1call *call = conn->call;
    int err = EVUTIL_SOCKET_ERROR();

    (void)bev;
    if (call == NULL) { /* idle: see conn_on_readable() */
        conn_free(conn);
        return;
    }
    if (what & BEV_EVENT_CONNECTED) {
        conn_connected(conn);
        return;
    }
    if (!conn->connected) {
        connect_failed(call, conn, err);
        return;
    }
    if ((what & BEV_EVENT_EOF) && finish_at_eof(conn))
        return;
    /*
     * Sent and not a byte back: the upstream may have taken the request
     * (or closed an idle keep-alive connection just as it went). Sending it
     * again here would be a dispatch nobody counted: the caller decides,
     * with a token, and only where a retry is allowed.
     */
    if (!call->got_bytes)
        fail(call, SL_UPSTREAM_CLOSED,
             "the upstream closed the connection before answering%s",
             conn->reused ? " (a reused keep-alive connection)" : "");
    else if (what & BEV_EVENT_ERROR)
        fail(call, SL_UPSTREAM_PROTOCOL, "Connection error: %s",
             err != 0 ? evutil_socket_error_to_string(err) : "reset");
    else
        fail(call, SL_UPSTREAM_PROTOCOL, "Connection closed before the response was complete");
}

/* The answer, the end of the stream, or an error; an idle connection that speaks is done. */
static void conn_on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct h1_conn *conn = arg;
    struct sl_h1call *call = conn->call;
    /* A streamed body comes in bulk: large reads into the buffer itself. */
    long n = call != NULL && call->take == SL_TAKE_STREAM
                 ? sl_wire_read_bulk(fd, conn->in, H1_STREAM_READ)
                 : sl_wire_read(fd, conn->in);

    (void)what;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (conn->call == NULL)
        conn_free(conn);
    else if (n > 0)
        conn_on_read(conn);
    else
        conn_on_event(conn->bev, BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR),
                      conn);
}

/*
 * Bind a connection to a call and send the request. On a live connection
 * head and body go out with one sendmsg right here (wire.h): no write event
 * to add and remove per request; EV_WRITE only carries what did not fit. A
 * new connection holds them in its output buffer until it is connected.
 */
static int conn_attach(struct h1_conn *conn, struct sl_h1call *call)
{
    struct evbuffer *out = bufferevent_get_output(conn->bev);
    bool queued = true;
    int rc = 0;

    conn->call = call;
    call->conn = conn;
    call->got_bytes = false;
    bufferevent_setcb(conn->bev, NULL, NULL, conn_on_event, conn);
    if (conn->connected) {
        rc = sl_wire_send(conn->bev, call->head, call->head_len, NULL, call->body,
                          call->body_len, &queued);
        report_sent(conn);
    } else {
        rc |= evbuffer_add(out, call->head, call->head_len);
        if (call->body_len > 0)
            rc |= evbuffer_add_reference(out, call->body, call->body_len, NULL, NULL);
    }
    if (rc != 0)
        return SL_ENOMEM;
    if (queued)
        rc |= bufferevent_enable(conn->bev, EV_WRITE);
    return rc == 0 ? SL_OK : SL_ERR;
}

/* An IP literal needs no lookup: fill `ss` and return true. */
static bool literal_addr(const struct sl_h1call *call, struct sockaddr_storage *ss, int *len)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (evutil_inet_pton(AF_INET, call->host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)call->port);
        *len = (int)sizeof(*sin);
        return true;
    }
    if (evutil_inet_pton(AF_INET6, call->host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)call->port);
        *len = (int)sizeof(*sin6);
        return true;
    }
    return false;
}

/* evdns reads resolv.conf and /etc/hosts, so "localhost" works without a query. */
static struct evdns_base *dns_get(struct sl_h1client *c)
{
    if (c->dns == NULL)
        c->dns = evdns_base_new(c->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                             EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    return c->dns;
}

/* Failures, even those libevent reports synchronously, end up in fail(). */
static void conn_connect(struct h1_conn *conn, struct sl_h1call *call)
{
    struct sockaddr_storage ss;
    int len = 0;
    int rc;

    if (literal_addr(call, &ss, &len)) {
        rc = bufferevent_socket_connect(conn->bev, (struct sockaddr *)&ss, len);
    } else {
        struct evdns_base *dns = dns_get(call->c);
        if (dns == NULL) {
            fail(call, SL_UPSTREAM_CONNECT, "Could not resolve host: %s (no resolver)", call->host);
            return;
        }
        rc = bufferevent_socket_connect_hostname(conn->bev, dns, AF_UNSPEC, call->host, call->port);
    }
    if (rc != 0 && !call->deferred)
        fail(call, SL_UPSTREAM_CONNECT, "Failed to connect to %s: %s", call->origin,
             evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

/*
 * Open a fresh connection for the call. A connect failure is parked for the
 * timer (call->deferred, no connection); SL_ENOMEM if nothing could be set up.
 */
static int call_connect(struct sl_h1call *call)
{
    struct h1_conn *conn = calloc(1, sizeof(*conn) + event_get_struct_event_size());

    if (conn == NULL)
        return SL_ENOMEM;
    conn->c = call->c;
    conn->rd = (struct event *)(void *)(conn + 1);
    conn->in = evbuffer_new();
    conn->bev = bufferevent_socket_new(call->c->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (conn->in == NULL || conn->bev == NULL || bufferevent_priority_set(conn->bev, 0) != 0 ||
        conn_attach(conn, call) != SL_OK) {
        conn_free(conn);
        call->conn = NULL;
        return SL_ENOMEM;
    }
    /* libevent may call conn_on_event from inside the connect calls. */
    call->opening = true;
    conn_connect(conn, call);
    call->opening = false;
    if (call->deferred) {
        conn_free(conn);
        call->conn = NULL;
    }
    return SL_OK;
}

/* ---- public API --------------------------------------------------------- */

struct sl_h1client *sl_h1client_new(struct event_base *base, unsigned max_idle)
{
    if (base == NULL)
        return NULL;

    struct sl_h1client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->backend.ops = &h1client_ops;
    c->base = base;
    c->max_idle = max_idle;
    TAILQ_INIT(&c->idle);
    TAILQ_INIT(&c->origins);
    TAILQ_INIT(&c->calls);
    return c;
}

bool sl_h1client_handles(struct sl_h1client *c, const char *url)
{
    struct h1_url u;

    return c != NULL && dest_of(c, url, &u) != NULL;
}

struct sl_h1call *sl_h1client_start(struct sl_h1client *c, const struct sl_upstream_request *req,
                                    sl_upstream_done_fn done, void *arg)
{
    struct h1_url u;
    const struct h1_dest *d;

    if (c == NULL || req == NULL || req->method == NULL || done == NULL ||
        (d = dest_of(c, req->url, &u)) == NULL)
        return NULL;
    struct sl_h1call *call = call_new(c, req, &u, d);
    if (call == NULL)
        return NULL;
    call->done = done;
    call->sent = req->sent;
    if (req->head != NULL && req->body_chunk != NULL) {
        call->head_fn = req->head;
        call->body_fn = req->body_chunk;
    }
    call->max_body = req->max_body;
    call->arg = arg;
    call->started_us = sl_clock_now();

    struct h1_conn *conn = pool_take(c, call->origin, call->started_us);
    int rc = conn != NULL ? conn_attach(conn, call) : call_connect(call);
    if (rc != SL_OK) {
        if (call->conn != NULL)
            conn_free(call->conn);
        call_free(call);
        return NULL;
    }
    TAILQ_INSERT_TAIL(&c->calls, call, link);
    c->active++;
    if ((call->deferred ? arm_now(call) : arm_timeout(call)) != SL_OK) {
        sl_h1client_cancel(call);
        return NULL;
    }
    return call;
}

void sl_h1client_cancel(struct sl_h1call *call)
{
    if (call == NULL || call->finishing)
        return;
    /* A half-used connection cannot carry another request. */
    if (call->conn != NULL)
        conn_free(call->conn);
    TAILQ_REMOVE(&call->c->calls, call, link);
    call->c->active--;
    call_free(call);
}

void sl_h1client_resume(struct sl_h1call *call)
{
    if (call == NULL || !call->paused || call->conn == NULL)
        return;
    if (event_add(call->conn->rd, NULL) != 0) {
        fail(call, SL_UPSTREAM_PROTOCOL, "cannot watch the upstream socket again");
        return;
    }
    call->paused = false;
}

static void call_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct sl_h1call *call = arg;
    long long ms = (long long)(call->timeout_us / SL_USEC_PER_MSEC);

    (void)fd;
    (void)what;
    if (call->deferred)
        call_end(call);
    else if (call->conn == NULL || !call->conn->connected)
        fail(call, SL_UPSTREAM_CONNECT, "Connection timed out after %lld milliseconds", ms);
    else
        fail(call, SL_UPSTREAM_TIMEOUT,
             "Operation timed out after %lld milliseconds with %zu bytes received", ms,
             evbuffer_get_length(call->resp.body));
}

void sl_h1client_free(struct sl_h1client *c)
{
    struct sl_h1call *call;
    struct h1_conn *conn;
    struct h1_origin *o;

    if (c == NULL)
        return;
    while ((call = TAILQ_FIRST(&c->calls)) != NULL)
        sl_h1client_cancel(call);
    while ((conn = TAILQ_FIRST(&c->idle)) != NULL)
        conn_free(conn);
    while ((o = TAILQ_FIRST(&c->origins)) != NULL) {
        TAILQ_REMOVE(&c->origins, o, link);
        free(o);
    }
    if (c->dns != NULL)
        evdns_base_free(c->dns, 0);
    while (c->n_spare > 0)
        evbuffer_free(c->spare[--c->n_spare]);
    free(c);
}

size_t sl_h1client_active(const struct sl_h1client *c)
{
    return c != NULL ? c->active : 0;
}

size_t sl_h1client_idle(const struct sl_h1client *c)
{
    return c != NULL ? c->n_idle : 0;
}

/* ---- behind backend.h --------------------------------------------------- */

static bool ops_handles(struct sl_backend *b, const char *url)
{
    return sl_h1client_handles((struct sl_h1client *)(void *)b, url);
}

static struct sl_backend_call *ops_start(struct sl_backend *b, const struct sl_upstream_request *req,
                                         sl_upstream_done_fn done, void *arg)
{
    struct sl_h1call *call = sl_h1client_start((struct sl_h1client *)(void *)b, req, done, arg);

    return call != NULL ? &call->base : NULL;
}

static void ops_cancel(struct sl_backend_call *call)
{
    sl_h1client_cancel((struct sl_h1call *)(void *)call);
}

static void ops_resume(struct sl_backend_call *call)
{
    sl_h1client_resume((struct sl_h1call *)(void *)call);
}

static size_t ops_active(const struct sl_backend *b)
{
    return sl_h1client_active((const struct sl_h1client *)(const void *)b);
}

static void ops_free(struct sl_backend *b)
{
    sl_h1client_free((struct sl_h1client *)(void *)b);
}

static const struct sl_backend_ops h1client_ops = {
    .name = "h1client",
    .handles = ops_handles,
    .start = ops_start,
    .cancel = ops_cancel,
    .resume = ops_resume,
    .active = ops_active,
    .free = ops_free,
};

struct sl_backend *sl_h1client_backend(struct sl_h1client *c)
{
    return c != NULL ? &c->backend : NULL;
}
