/*
 * test_frontend.c - the client-side connection state machine (frontend.h)
 * against raw loopback sockets, so that the exact bytes on the wire are
 * checked: keep-alive, pipelining (one request at a time, responses in
 * order), Expect: 100-continue, HTTP/1.0 keep-alive, response heads and
 * bodies larger than one write, a client hanging up while its request is
 * held, requests the frontend refuses itself, and the connection caps.
 *
 * The "owner" is this file: the callbacks record what they are given and
 * answer at once, from a timer, or when the test says so. The client side
 * is a non-blocking socket read after every turn of the loop; the loop is
 * turned with EVLOOP_ONCE | EVLOOP_NONBLOCK until a condition holds,
 * bounded by PUMP_GUARD_US. Callbacks never assert (a longjmp out of
 * event_base_loop would leave the base running): they note what went
 * wrong in F.error, which every pump checks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>

#include "config.h"
#include "frontend.h"
#include "log.h"
#include "metrics.h"
#include "sluice.h"

#define PUMP_GUARD_US (5 * 1000 * 1000) /* a condition that takes longer fails the test */
#define QUIET_TURNS 50                  /* turns that must change nothing */
#define MAX_SEEN 16
#define MAX_CLIENTS 4
#define FIXED_DATE "Thu, 01 Jan 2026 00:00:00 GMT"
#define BIG_FIELDS 100                  /* 100 fields of 80 bytes: an 8 KiB head */
#define BIG_FIELD_LINE 80
#define BIG_BODY (1024 * 1024)

/* How the owner answers each request. */
enum mode {
    ANSWER_NOW,     /* from inside the request callback */
    ANSWER_TIMER,   /* from a timer, a few milliseconds later */
    HOLD,           /* when the test calls answer() */
    STREAM,         /* adopted through the sink; the test streams the answer */
};

/* One request as the `request` callback saw it. */
struct seen {
    /* First: the owner a sink adopts is this request (streamed answers). */
    struct sl_sink_owner sink_owner;
    int drained;                /* its `drained` calls */
    int index;
    struct sl_conn *conn;
    struct sl_http_msg *msg;    /* ours until answered (or gone) */
    char method[16];
    char target[256];
    char fields[2048];          /* "Name: value\n" for each field, in order */
    char *body;                 /* malloc'd copy, NULL when msg->body was NULL */
    size_t body_len;
    size_t header_bytes;
    bool head;
    int outstanding_before;     /* requests held (all connections) at delivery */
    size_t rx_at[MAX_CLIENTS];  /* bytes each client had received at delivery */
    struct event *timer;
    bool answered, gone;
};

struct client {
    int fd;
    bool stalled;               /* reads nothing (a client that does not read) */
    struct evbuffer *rx;        /* everything received */
    bool eof;                   /* end of stream or an error seen */
    int err;                    /* errno of the error, 0 at a clean end */
};

static struct fixture {
    char dir[64];
    char conf[128];
    struct event_base *base;
    struct sl_config *cfg;
    struct sl_frontend *fe;
    int port;

    enum mode mode;
    bool close;                 /* the owner asks to close after its answers */
    int status;                 /* answer with this status (0: 200)... */
    const char *reason;         /* ...and this reason phrase (NULL: the standard one) */
    unsigned big_fields;        /* extra fields in each answer */
    size_t huge_field;          /* ...and one field with a value this long */
    size_t big_body;            /* answer with this many pattern bytes instead */

    struct seen seen[MAX_SEEN];
    int n_seen;
    int outstanding;
    int overlap;                /* requests delivered while another one of the same conn was held */

    int refused;
    enum sl_outcome refused_outcome;
    char refused_detail[128];
    int gone;
    void *gone_owner;
    struct sl_conn *gone_conn;
    int eof;                    /* `eof` calls */
    bool eof_keep;              /* what the owner answers to them */
    int idle;
    bool in_respond;            /* inside the owner's sl_conn_respond() */

    const char *stream_length; /* a streamed answer's Content-Length field (NULL: none) */

    struct client cl[MAX_CLIENTS];
    int n_cl;
    struct evbuffer *want;      /* what a client is to receive, built by the test */

    char error[256];            /* first thing a callback found wrong */
} F;

/* ---- small helpers ------------------------------------------------------ */

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void note_error(const char *what)
{
    if (F.error[0] == '\0')
        snprintf(F.error, sizeof(F.error), "%s", what);
}

static void check_no_error(void)
{
    if (F.error[0] != '\0')
        fail_msg("callback: %s", F.error);
}

/* The start of b as a string, in buf (nothing is allocated: a failing check leaks nothing). */
static const char *text(struct evbuffer *b, char *buf, size_t size)
{
    ev_ssize_t n = evbuffer_copyout(b, buf, size - 1);

    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

/* ---- the client side ---------------------------------------------------- */

static void clients_read(void)
{
    char buf[16384];

    for (int i = 0; i < F.n_cl; i++) {
        struct client *c = &F.cl[i];

        while (c->fd >= 0 && !c->eof && !c->stalled) {
            ssize_t n = recv(c->fd, buf, sizeof(buf), 0);

            if (n > 0) {
                if (evbuffer_add(c->rx, buf, (size_t)n) != 0)
                    note_error("client buffer");
            } else if (n == 0) {
                c->eof = true;
            } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            } else if (errno != EINTR) {
                c->eof = true;
                c->err = errno;
            }
        }
    }
}

/* One turn of the loop, then read what the clients were sent. */
static void pump_once(void)
{
    assert_true(event_base_loop(F.base, EVLOOP_ONCE | EVLOOP_NONBLOCK) >= 0);
    clients_read();
    check_no_error();
}

/* Turn the loop until `cond` holds; fail after PUMP_GUARD_US. */
#define PUMP_UNTIL(cond)                                                 \
    do {                                                                 \
        int64_t deadline_ = now_us() + PUMP_GUARD_US;                    \
        pump_once();                                                     \
        while (!(cond)) {                                                \
            if (now_us() > deadline_)                                    \
                fail_msg("timed out waiting for %s", #cond);             \
            pump_once();                                                 \
        }                                                                \
    } while (0)

/* Turns in which nothing is expected to happen (everything is in the kernel already). */
static void pump_quiet(void)
{
    for (int i = 0; i < QUIET_TURNS; i++)
        pump_once();
}

/* For `ms` milliseconds of turns (timeouts). */
static void pump_for_ms(int ms)
{
    int64_t until = now_us() + (int64_t)ms * 1000;

    while (now_us() < until)
        pump_once();
}

/* A new client connected to the frontend (accepted or not: the kernel completes it). */
static int client_connect(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)F.port)};
    struct client *c;
    int fd;

    assert_true(F.n_cl < MAX_CLIENTS);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
    c = &F.cl[F.n_cl];
    c->fd = fd;
    c->rx = evbuffer_new();
    assert_non_null(c->rx);
    c->eof = false;
    c->err = 0;
    return F.n_cl++;
}

/* Connect and wait until the frontend has accepted: it then has `n` connections. */
static int client_accepted(size_t n)
{
    int i = client_connect();

    PUMP_UNTIL(sl_frontend_connections(F.fe) == n);
    return i;
}

/* Write all of data[0..len), turning the loop whenever the socket is full. */
static void client_send_n(int i, const void *data, size_t len)
{
    const char *p = data;
    int64_t deadline = now_us() + PUMP_GUARD_US;

    while (len > 0) {
        ssize_t n = send(F.cl[i].fd, p, len, MSG_NOSIGNAL);

        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        assert_true(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
        if (now_us() > deadline)
            fail_msg("client %d: the frontend stopped reading", i);
        pump_once();
    }
}

static void client_send(int i, const char *s)
{
    client_send_n(i, s, strlen(s));
}

static void client_close(int i)
{
    assert_int_equal(close(F.cl[i].fd), 0);
    F.cl[i].fd = -1;
}

static size_t rx_len(int i)
{
    return evbuffer_get_length(F.cl[i].rx);
}

/* Client i has received exactly `want` (pass NULL to compare with nothing). */
static void expect_rx(int i, struct evbuffer *want)
{
    size_t n = want != NULL ? evbuffer_get_length(want) : 0;

    if (rx_len(i) != n || (n > 0 && memcmp(evbuffer_pullup(F.cl[i].rx, -1),
                                           evbuffer_pullup(want, -1), n) != 0)) {
        static char got[16384], exp[16384];

        /* Large buffers are printed only by length. */
        if (n < sizeof(exp) && rx_len(i) < sizeof(got))
            print_error("client %d received:\n[%s]\nexpected:\n[%s]\n", i,
                        text(F.cl[i].rx, got, sizeof(got)),
                        want != NULL ? text(want, exp, sizeof(exp)) : "");
        fail_msg("client %d: %zu bytes received, %zu expected or different", i, rx_len(i), n);
    }
}

/* Where `needle` starts in b, or NULL. */
static const char *rx_search(struct evbuffer *b, const char *needle)
{
    struct evbuffer_ptr p = evbuffer_search(b, needle, strlen(needle), NULL);

    return p.pos < 0 ? NULL : (const char *)evbuffer_pullup(b, -1) + p.pos;
}

static void expect_rx_str(int i, const char *want)
{
    static char got[4096];
    size_t n = strlen(want);

    if (rx_len(i) != n || memcmp(evbuffer_pullup(F.cl[i].rx, -1), want, n) != 0)
        fail_msg("client %d received:\n[%s]\nexpected:\n[%s]", i,
                 text(F.cl[i].rx, got, sizeof(got)), want);
}

/* ---- the owner side ----------------------------------------------------- */

/* The fields of every answer: a fixed Date (so the bytes are exact), the sequence number,
 * then F.big_fields fields of BIG_FIELD_LINE bytes each. */
static int reply_fields(sl_header_fn emit, void *emit_arg, void *arg)
{
    const struct seen *s = arg;
    char name[32], value[BIG_FIELD_LINE];
    int rc;

    snprintf(value, sizeof(value), "%d", s->index);
    if ((rc = emit("Date", FIXED_DATE, emit_arg)) != SL_OK ||
        (rc = emit("X-Seq", value, emit_arg)) != SL_OK)
        return rc;
    for (unsigned i = 0; i < F.big_fields; i++) {
        /* "X-Field-NNN: " + value + CRLF = 13 + 65 + 2 bytes. */
        snprintf(name, sizeof(name), "X-Field-%03u", i);
        for (size_t k = 0; k < 65; k++)
            value[k] = (char)('a' + (i + k) % 26);
        value[65] = '\0';
        if ((rc = emit(name, value, emit_arg)) != SL_OK)
            return rc;
    }
    if (F.huge_field > 0) {
        char *v = malloc(F.huge_field + 1);

        if (v == NULL)
            return SL_ENOMEM;
        memset(v, 'h', F.huge_field);
        v[F.huge_field] = '\0';
        rc = emit("X-Huge", v, emit_arg);
        free(v);
    }
    return rc;
}

static char pattern_byte(size_t k)
{
    return (char)('A' + k % 23 + (k / 4096) % 3);
}

/* The owner's body: "METHOD TARGET\n" and the request body, or F.big_body pattern bytes. */
static void reply_body(struct evbuffer *b, const char *method, const char *target,
                       const char *body, size_t body_len)
{
    if (F.big_body > 0) {
        char chunk[4096];

        for (size_t off = 0; off < F.big_body; off += sizeof(chunk)) {
            size_t n = F.big_body - off < sizeof(chunk) ? F.big_body - off : sizeof(chunk);

            for (size_t k = 0; k < n; k++)
                chunk[k] = pattern_byte(off + k);
            evbuffer_add(b, chunk, n);
        }
        return;
    }
    evbuffer_add_printf(b, "%s %s\n", method, target);
    if (body_len > 0)
        evbuffer_add(b, body, body_len);
}

/* Answer a held request (the owner's sl_conn_respond). */
static void answer(struct seen *s)
{
    struct evbuffer *body = evbuffer_new();

    if (s->answered || s->gone || body == NULL) {
        note_error(s->gone ? "answer after gone" : "answered twice");
        if (body != NULL)
            evbuffer_free(body);
        return;
    }
    reply_body(body, s->method, s->target, s->body, s->body_len);
    s->answered = true;
    F.outstanding--;
    sl_http_msg_free(s->msg);
    s->msg = NULL;
    F.in_respond = true;
    sl_conn_respond(s->conn, F.status != 0 ? F.status : 200, F.reason, reply_fields, s, body,
                    false, F.close);
    F.in_respond = false;
    if (evbuffer_get_length(body) != 0)
        note_error("sl_conn_respond left the body undrained");
    evbuffer_free(body);
}

static void on_answer_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    answer(arg);
}

static void answer_later(struct seen *s, int ms)
{
    struct timeval tv = {0, ms * 1000};

    if (s->timer == NULL)
        s->timer = evtimer_new(F.base, on_answer_timer, s);
    if (s->timer == NULL || evtimer_add(s->timer, &tv) != 0)
        note_error("cannot arm the answer timer");
}

static void copy_msg(struct seen *s, const struct sl_http_msg *msg)
{
    const struct evkeyval *kv;
    size_t off = 0;

    snprintf(s->method, sizeof(s->method), "%s", msg->method);
    snprintf(s->target, sizeof(s->target), "%s", msg->target);
    TAILQ_FOREACH(kv, &msg->headers, next) {
        int n = snprintf(s->fields + off, sizeof(s->fields) - off, "%s: %s\n", kv->key,
                         kv->value);

        if (n < 0 || (size_t)n >= sizeof(s->fields) - off) {
            note_error("request fields too long for the test");
            break;
        }
        off += (size_t)n;
    }
    s->header_bytes = msg->header_bytes;
    s->head = msg->head;
    if (msg->body != NULL) {
        s->body_len = evbuffer_get_length(msg->body);
        s->body = malloc(s->body_len + 1);
        if (s->body == NULL) {
            note_error("out of memory");
            return;
        }
        evbuffer_copyout(msg->body, s->body, s->body_len);
        s->body[s->body_len] = '\0';
    }
}

/* A streamed answer's sink has room again. */
static void on_drained(struct sl_sink_owner *owner)
{
    struct seen *s = (struct seen *)(void *)owner;

    if (s < F.seen || s >= F.seen + F.n_seen || s->answered || s->gone)
        note_error("drained for an owner that is not streaming");
    else
        s->drained++;
}

static void on_request(struct sl_conn *conn, struct sl_http_msg *msg, void *arg)
{
    struct seen *s;

    (void)arg;
    if (F.in_respond)
        note_error("request delivered from inside sl_conn_respond");
    clients_read(); /* what the clients had received by now */
    if (F.n_seen == MAX_SEEN) {
        note_error("too many requests");
        sl_http_msg_free(msg);
        return;
    }
    s = &F.seen[F.n_seen];
    s->index = F.n_seen++;
    s->conn = conn;
    s->msg = msg;
    copy_msg(s, msg);
    for (int i = 0; i < F.n_cl; i++)
        s->rx_at[i] = rx_len(i);
    s->outstanding_before = F.outstanding;
    for (int i = 0; i < s->index; i++)
        if (F.seen[i].conn == conn && !F.seen[i].answered && !F.seen[i].gone)
            F.overlap++;
    F.outstanding++;
    switch (F.mode) {
    case ANSWER_NOW:
        answer(s);
        break;
    case ANSWER_TIMER:
        sl_conn_set_owner(conn, s);
        answer_later(s, 2);
        break;
    case HOLD:
        sl_conn_set_owner(conn, s);
        break;
    case STREAM:
        s->sink_owner.drained = on_drained;
        sl_conn_sink(conn)->ops->adopt(sl_conn_sink(conn), &s->sink_owner);
        break;
    }
}

static void on_gone(struct sl_conn *conn, void *owner, void *arg)
{
    struct seen *s = owner;

    (void)arg;
    if (F.in_respond)
        note_error("gone called from inside sl_conn_respond");
    F.gone++;
    F.gone_owner = owner;
    F.gone_conn = conn;
    if (s < F.seen || s >= F.seen + F.n_seen) {
        note_error("gone with an owner that was never set");
        return;
    }
    if (s->conn != conn)
        note_error("gone for another connection than the owner's");
    if (s->answered)
        note_error("gone after the answer");
    /* The connection is no more: the owner drops the request without answering. */
    s->gone = true;
    F.outstanding--;
    if (s->timer != NULL)
        evtimer_del(s->timer);
    sl_http_msg_free(s->msg);
    s->msg = NULL;
}

/* The outcomes the frontend refuses with, as sluice answers them (SPEC section 6). */
static const char *outcome_name(enum sl_outcome o)
{
    switch (o) {
    case SL_OUTCOME_BAD_REQUEST: return "bad_request";
    case SL_OUTCOME_BODY_TOO_LARGE: return "body_too_large";
    case SL_OUTCOME_HEADERS_TOO_LARGE: return "headers_too_large";
    case SL_OUTCOME_INTERNAL_ERROR: return "internal_error";
    default: return "unexpected";
    }
}

static int outcome_status(enum sl_outcome o)
{
    switch (o) {
    case SL_OUTCOME_BAD_REQUEST: return 400;
    case SL_OUTCOME_BODY_TOO_LARGE: return 413;
    case SL_OUTCOME_HEADERS_TOO_LARGE: return 431;
    default: return 500;
    }
}

static int refused_fields(sl_header_fn emit, void *emit_arg, void *arg)
{
    return emit("X-Sluice-Error", outcome_name(*(enum sl_outcome *)arg), emit_arg);
}

/* Like the proxy: count it and answer with close. */
static void on_refused(struct sl_conn *conn, enum sl_outcome o, const char *detail, void *arg)
{
    struct evbuffer *body = evbuffer_new();

    (void)arg;
    if (F.in_respond)
        note_error("refused called from inside sl_conn_respond");
    F.refused++;
    F.refused_outcome = o;
    snprintf(F.refused_detail, sizeof(F.refused_detail), "%s", detail != NULL ? detail : "");
    if (body != NULL)
        evbuffer_add_printf(body, "refused: %s\n", outcome_name(o));
    sl_conn_respond(conn, outcome_status(o), NULL, refused_fields, &o, body, false, true);
    if (body != NULL)
        evbuffer_free(body);
}

static void on_idle(void *arg)
{
    (void)arg;
    F.idle++;
    if (sl_frontend_connections(F.fe) != 0)
        note_error("idle with connections left");
}

/* The client sent its FIN while a request was held: keep it, or let go like `gone`. */
static bool on_eof(struct sl_conn *conn, void *owner, void *arg)
{
    struct seen *s = owner;

    (void)arg;
    F.eof++;
    if (s < F.seen || s >= F.seen + F.n_seen || s->conn != conn || s->answered || s->gone) {
        note_error("eof with an owner that is not a held request of that connection");
        return false;
    }
    if (F.eof_keep)
        return true;
    s->gone = true;
    F.outstanding--;
    if (s->timer != NULL)
        evtimer_del(s->timer);
    sl_http_msg_free(s->msg);
    s->msg = NULL;
    return false;
}

static const struct sl_frontend_callbacks callbacks = {
    .request = on_request,
    .gone = on_gone,
    .eof = on_eof,
    .refused = on_refused,
    .idle = on_idle,
};

/* Append to `want` the bytes of the owner's answer to request number `index` (see answer()). */
static void expect_answer(struct evbuffer *want, int index, const char *method,
                          const char *target, const char *body, const char *connection)
{
    struct evbuffer *b = evbuffer_new();
    bool head = strcmp(method, "HEAD") == 0;

    assert_non_null(b);
    reply_body(b, method, target, body, body != NULL ? strlen(body) : 0);
    evbuffer_add_printf(want, "HTTP/1.1 200 OK\r\nDate: " FIXED_DATE "\r\nX-Seq: %d\r\n", index);
    for (unsigned i = 0; i < F.big_fields; i++) {
        char value[66];

        for (size_t k = 0; k < 65; k++)
            value[k] = (char)('a' + (i + k) % 26);
        value[65] = '\0';
        evbuffer_add_printf(want, "X-Field-%03u: %s\r\n", i, value);
    }
    if (F.huge_field > 0) {
        evbuffer_add_printf(want, "X-Huge: ");
        for (size_t k = 0; k < F.huge_field; k++)
            evbuffer_add(want, "h", 1);
        evbuffer_add(want, "\r\n", 2);
    }
    evbuffer_add_printf(want, "Content-Length: %zu\r\n", evbuffer_get_length(b));
    if (connection != NULL)
        evbuffer_add_printf(want, "Connection: %s\r\n", connection);
    evbuffer_add(want, "\r\n", 2);
    if (!head)
        evbuffer_add_buffer(want, b);
    evbuffer_free(b);
}

/* ---- setup -------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    snprintf(F.dir, sizeof(F.dir), "/tmp/sluice-test-frontend-XXXXXX");
    if (mkdtemp(F.dir) == NULL)
        return -1;
    snprintf(F.conf, sizeof(F.conf), "%s/t.conf", F.dir);
    sl_log_set_level(SL_LOG_WARN);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    unlink(F.conf);
    return rmdir(F.dir);
}

static int setup(void **state)
{
    char dir[sizeof(F.dir)], conf[sizeof(F.conf)];

    (void)state;
    memcpy(dir, F.dir, sizeof(dir));
    memcpy(conf, F.conf, sizeof(conf));
    memset(&F, 0, sizeof(F));
    memcpy(F.dir, dir, sizeof(dir));
    memcpy(F.conf, conf, sizeof(conf));
    F.base = event_base_new();
    F.want = evbuffer_new();
    return F.base != NULL && F.want != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < F.n_seen; i++) {
        sl_http_msg_free(F.seen[i].msg);
        free(F.seen[i].body);
        if (F.seen[i].timer != NULL)
            event_free(F.seen[i].timer);
    }
    sl_frontend_free(F.fe);
    for (int i = 0; i < F.n_cl; i++) {
        if (F.cl[i].fd >= 0)
            close(F.cl[i].fd);
        evbuffer_free(F.cl[i].rx);
    }
    sl_config_free(F.cfg);
    evbuffer_free(F.want);
    event_base_free(F.base);
    return 0;
}

/* The config file: the test's port, `server` lines added to [server], one route. */
static void write_conf(const char *server)
{
    bool own_timeout = server != NULL && strstr(server, "client_timeout") != NULL;
    FILE *f = fopen(F.conf, "w");

    assert_non_null(f);
    fprintf(f,
            "[server]\nlisten = 127.0.0.1:%d\nadmin_listen =\n%s%s\n"
            "[route a]\nmatch = /\nupstream = http://127.0.0.1:9\nrate = 10/s\n",
            F.port, own_timeout ? "" : "client_timeout = 10s\n", server != NULL ? server : "");
    assert_int_equal(fclose(f), 0);
}

/*
 * A frontend listening on a free loopback port, configured with `server`
 * lines added to [server]. The config wants a real port: the kernel picks
 * one for a socket that keeps it reserved (SO_REUSEPORT, never listening)
 * until the frontend, which binds with SO_REUSEPORT too, listens on it.
 */
static void start(const char *server)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    int one = 1, probe = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(probe >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
    assert_int_equal(setsockopt(probe, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)), 0);
    assert_int_equal(bind(probe, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(probe, (struct sockaddr *)&sa, &len), 0);
    F.port = ntohs(sa.sin_port);

    write_conf(server);
    F.cfg = sl_config_load(F.conf, stderr);
    assert_non_null(F.cfg);
    F.fe = sl_frontend_new(F.base, F.cfg, &callbacks, NULL);
    assert_non_null(F.fe);
    assert_int_equal(sl_frontend_listen(F.fe), SL_OK);
    close(probe);
    assert_int_equal(sl_frontend_connections(F.fe), 0);
}

/* ---- keep-alive --------------------------------------------------------- */

static void test_keep_alive(void **state)
{
    static const char second[] = "POST /two?x=1 HTTP/1.1\r\nHost: example\r\n"
                                 "X-Test: two\r\nContent-Length: 5\r\n\r\n";
    struct evbuffer *want = F.want;
    int c;

    (void)state;
    start(NULL);
    c = client_accepted(1);

    client_send(c, "GET /one HTTP/1.1\r\nHost: example\r\n\r\n");
    expect_answer(want, 0, "GET", "/one", NULL, NULL);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    assert_int_equal(F.n_seen, 1);
    assert_string_equal(F.seen[0].method, "GET");
    assert_string_equal(F.seen[0].target, "/one");
    assert_null(F.seen[0].body);
    expect_rx(c, want);

    client_send(c, second);
    client_send(c, "hello");
    expect_answer(want, 1, "POST", "/two?x=1", "hello", NULL);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(c, want);

    assert_int_equal(F.n_seen, 2);
    assert_string_equal(F.seen[1].method, "POST");
    assert_string_equal(F.seen[1].target, "/two?x=1");
    assert_string_equal(F.seen[1].fields, "Host: example\nX-Test: two\nContent-Length: 5\n");
    assert_int_equal(F.seen[1].header_bytes, strlen(second));
    assert_false(F.seen[1].head);
    assert_int_equal(F.seen[1].body_len, 5);
    assert_string_equal(F.seen[1].body, "hello");

    /* Still open: no end of stream for the client, one connection for the frontend. */
    assert_false(F.cl[c].eof);
    assert_int_equal(sl_frontend_connections(F.fe), 1);
    assert_int_equal(F.gone, 0);
    assert_int_equal(F.refused, 0);
    assert_int_equal(F.idle, 0);

    /* The client leaves an idle connection: no `gone`, and the frontend is idle. */
    client_close(c);
    PUMP_UNTIL(sl_frontend_connections(F.fe) == 0);
    assert_int_equal(F.gone, 0);
    assert_int_equal(F.idle, 1);
}

/* A 1.1 client asking for close, and an owner answering with close. */
static void test_close_requested(void **state)
{
    struct evbuffer *want = F.want;
    int a, b;

    (void)state;
    start(NULL);
    a = client_accepted(1);
    client_send(a, "GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    expect_answer(want, 0, "GET", "/a", NULL, "close");
    PUMP_UNTIL(F.cl[a].eof);
    expect_rx(a, want);
    assert_int_equal(F.cl[a].err, 0);

    /* The owner's close flag closes a keep-alive connection too. */
    evbuffer_drain(want, evbuffer_get_length(want));
    F.close = true;
    b = client_accepted(2);
    client_send(b, "GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
    expect_answer(want, 1, "GET", "/b", NULL, "close");
    PUMP_UNTIL(F.cl[b].eof);
    expect_rx(b, want);

    /* Lingering connections end when their clients close. */
    client_close(a);
    client_close(b);
    PUMP_UNTIL(sl_frontend_connections(F.fe) == 0);
    assert_int_equal(F.idle, 1);
    assert_int_equal(F.gone, 0);
}

/* ---- pipelining --------------------------------------------------------- */

static const char pipeline[] = "GET /p1 HTTP/1.1\r\nHost: h\r\n\r\n"
                               "POST /p2 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody"
                               "GET /p3 HTTP/1.1\r\nHost: h\r\n\r\n";

static void expect_pipeline(struct evbuffer *want, size_t ends[3])
{
    expect_answer(want, 0, "GET", "/p1", NULL, NULL);
    ends[0] = evbuffer_get_length(want);
    expect_answer(want, 1, "POST", "/p2", "body", NULL);
    ends[1] = evbuffer_get_length(want);
    expect_answer(want, 2, "GET", "/p3", NULL, NULL);
    ends[2] = evbuffer_get_length(want);
}

static void check_pipeline_seen(const size_t ends[3])
{
    assert_int_equal(F.n_seen, 3);
    assert_string_equal(F.seen[0].target, "/p1");
    assert_null(F.seen[0].body);
    assert_string_equal(F.seen[1].method, "POST");
    assert_string_equal(F.seen[1].target, "/p2");
    assert_string_equal(F.seen[1].body, "body");
    assert_string_equal(F.seen[2].target, "/p3");
    assert_null(F.seen[2].body);
    /* Each one was delivered only once the previous response had been written whole. */
    assert_int_equal(F.seen[0].rx_at[0], 0);
    assert_int_equal(F.seen[1].rx_at[0], ends[0]);
    assert_int_equal(F.seen[2].rx_at[0], ends[1]);
    assert_int_equal(F.overlap, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(F.seen[i].outstanding_before, 0);
}

/* Three requests in one write, held and answered later from timers. */
static void test_pipelining_held(void **state)
{
    struct evbuffer *want = F.want;
    size_t ends[3];
    int c;

    (void)state;
    start(NULL);
    expect_pipeline(want, ends);
    F.mode = HOLD;
    c = client_accepted(1);
    client_send(c, pipeline);

    /* Only the first is delivered while it is held. */
    PUMP_UNTIL(F.n_seen == 1);
    pump_quiet();
    assert_int_equal(F.n_seen, 1);
    assert_int_equal(rx_len(c), 0);

    /* Answered from a timer: the second comes only after the first answer. */
    answer_later(&F.seen[0], 1);
    PUMP_UNTIL(F.n_seen == 2);
    pump_quiet();
    assert_int_equal(F.n_seen, 2);
    assert_int_equal(rx_len(c), ends[0]);

    answer_later(&F.seen[1], 1);
    PUMP_UNTIL(F.n_seen == 3);
    answer_later(&F.seen[2], 1);
    PUMP_UNTIL(rx_len(c) >= ends[2]);
    pump_quiet();
    expect_rx(c, want);
    check_pipeline_seen(ends);
    assert_false(F.cl[c].eof);
    assert_int_equal(sl_frontend_connections(F.fe), 1);
}

/* The same, answered at once from inside the request callback. */
static void test_pipelining_answered_at_once(void **state)
{
    struct evbuffer *want = F.want;
    size_t ends[3];
    int c;

    (void)state;
    start(NULL);
    expect_pipeline(want, ends);
    c = client_accepted(1);
    client_send(c, pipeline);
    PUMP_UNTIL(rx_len(c) >= ends[2]);
    pump_quiet();
    expect_rx(c, want);
    check_pipeline_seen(ends);
    assert_false(F.cl[c].eof);
    assert_int_equal(sl_frontend_connections(F.fe), 1);
}

/* Pipelined requests answered from timers, the last one asking for close. */
static void test_pipelining_then_close(void **state)
{
    struct evbuffer *want = F.want;
    int c;

    (void)state;
    start(NULL);
    F.mode = ANSWER_TIMER;
    c = client_accepted(1);
    client_send(c, "GET /x HTTP/1.1\r\nHost: h\r\n\r\n"
                   "GET /y HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
                   "GET /never HTTP/1.1\r\nHost: h\r\n\r\n");
    expect_answer(want, 0, "GET", "/x", NULL, NULL);
    expect_answer(want, 1, "GET", "/y", NULL, "close");
    PUMP_UNTIL(F.cl[c].eof);
    expect_rx(c, want);
    /* What follows a request with Connection: close is not served. */
    assert_int_equal(F.n_seen, 2);
    assert_int_equal(F.overlap, 0);
    client_close(c);
    PUMP_UNTIL(sl_frontend_connections(F.fe) == 0);
}

/* A malformed request behind a good one: the good one is answered first, then the refusal. */
static void test_pipelining_then_refused(void **state)
{
    struct evbuffer *want = F.want;
    static char rest[4096];
    size_t n;
    int c;

    (void)state;
    start(NULL);
    F.mode = ANSWER_TIMER;
    c = client_accepted(1);
    client_send(c, "GET /ok HTTP/1.1\r\nHost: h\r\n\r\nGARBAGE\r\n\r\n");
    expect_answer(want, 0, "GET", "/ok", NULL, NULL);
    n = evbuffer_get_length(want);
    PUMP_UNTIL(F.cl[c].eof);
    assert_int_equal(F.n_seen, 1);
    assert_int_equal(F.refused, 1);
    assert_int_equal(F.refused_outcome, SL_OUTCOME_BAD_REQUEST);
    assert_true(rx_len(c) > n);
    assert_memory_equal(evbuffer_pullup(F.cl[c].rx, -1), evbuffer_pullup(want, -1), n);
    evbuffer_drain(F.cl[c].rx, n);
    text(F.cl[c].rx, rest, sizeof(rest));
    if (strncmp(rest, "HTTP/1.1 400 Bad Request\r\n", 26) != 0 ||
        strstr(rest, "\r\nConnection: close\r\n") == NULL)
        fail_msg("then:\n%s", rest);
}

/* ---- Expect: 100-continue ---------------------------------------------- */

static void test_expect_continue(void **state)
{
    static const char interim[] = "HTTP/1.1 100 Continue\r\n\r\n";
    struct evbuffer *want = F.want;
    int c;

    (void)state;
    start(NULL);
    c = client_accepted(1);
    client_send(c, "PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n"
                   "Expect: 100-continue\r\n\r\n");
    PUMP_UNTIL(rx_len(c) >= strlen(interim));
    pump_quiet();
    expect_rx_str(c, interim);
    assert_int_equal(F.n_seen, 0);

    client_send(c, "hello ");
    pump_quiet();
    assert_int_equal(F.n_seen, 0);
    client_send(c, "world");
    evbuffer_add(want, interim, strlen(interim));
    expect_answer(want, 0, "PUT", "/up", "hello world", NULL);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(c, want);
    assert_int_equal(F.n_seen, 1);
    assert_string_equal(F.seen[0].method, "PUT");
    assert_int_equal(F.seen[0].body_len, 11);
    assert_string_equal(F.seen[0].body, "hello world");
    assert_int_equal(F.seen[0].rx_at[c], strlen(interim));
    assert_int_equal(sl_frontend_connections(F.fe), 1);
}

/* An HTTP/1.0 client gets no 100 Continue (RFC 9110 10.1.1). */
static void test_expect_continue_http10(void **state)
{
    struct evbuffer *want = F.want;
    int c;

    (void)state;
    start(NULL);
    c = client_accepted(1);
    client_send(c, "PUT /up HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
    pump_quiet();
    assert_int_equal(rx_len(c), 0);
    client_send(c, "ok");
    expect_answer(want, 0, "PUT", "/up", "ok", "close");
    PUMP_UNTIL(F.cl[c].eof);
    expect_rx(c, want);
}

/* ---- HTTP/1.0 ----------------------------------------------------------- */

static void test_http10_keep_alive(void **state)
{
    struct evbuffer *want = F.want;
    int c;

    (void)state;
    start(NULL);
    c = client_accepted(1);
    client_send(c, "GET /k1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    expect_answer(want, 0, "GET", "/k1", NULL, "keep-alive");
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(c, want);
    assert_false(F.cl[c].eof);
    assert_int_equal(sl_frontend_connections(F.fe), 1);

    /* The connection serves a second 1.0 keep-alive request. */
    client_send(c, "GET /k2 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    expect_answer(want, 1, "GET", "/k2", NULL, "keep-alive");
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(c, want);
    assert_false(F.cl[c].eof);
    assert_int_equal(sl_frontend_connections(F.fe), 1);

    /* Then a plain 1.0 request on it: answered, then closed. */
    client_send(c, "GET /k3 HTTP/1.0\r\n\r\n");
    expect_answer(want, 2, "GET", "/k3", NULL, "close");
    PUMP_UNTIL(F.cl[c].eof);
    expect_rx(c, want);
    assert_int_equal(F.cl[c].err, 0);
}

static void test_http10_closes(void **state)
{
    struct evbuffer *want = F.want;
    int c;

    (void)state;
    start(NULL);
    c = client_accepted(1);
    client_send(c, "GET /plain HTTP/1.0\r\nHost: h\r\n\r\n");
    expect_answer(want, 0, "GET", "/plain", NULL, "close");
    PUMP_UNTIL(F.cl[c].eof);
    expect_rx(c, want);
    assert_int_equal(F.cl[c].err, 0);
    assert_int_equal(F.n_seen, 1);
    /* The frontend keeps the connection until the client closes its side. */
    client_close(c);
    PUMP_UNTIL(sl_frontend_connections(F.fe) == 0);
    assert_int_equal(F.idle, 1);
}

/* ---- large responses ---------------------------------------------------- */

/* A head over the 4 KiB head buffer, answered at once and from a timer, then reuse. */
static void test_big_response_head(void **state)
{
    struct evbuffer *want = F.want;
    size_t first;
    int c;

    (void)state;
    start(NULL);
    F.big_fields = BIG_FIELDS;
    c = client_accepted(1);
    client_send(c, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
    expect_answer(want, 0, "GET", "/big", NULL, NULL);
    first = evbuffer_get_length(want);
    assert_true(first > BIG_FIELDS * BIG_FIELD_LINE);
    PUMP_UNTIL(rx_len(c) >= first);
    pump_quiet();
    expect_rx(c, want);

    F.mode = ANSWER_TIMER;
    client_send(c, "POST /big2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc");
    expect_answer(want, 1, "POST", "/big2", "abc", NULL);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(c, want);

    /* One field value larger than the whole head buffer. */
    F.big_fields = 0;
    F.huge_field = 6000;
    F.mode = ANSWER_NOW;
    client_send(c, "GET /huge HTTP/1.1\r\nHost: h\r\n\r\n");
    expect_answer(want, 2, "GET", "/huge", NULL, NULL);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(c, want);

    /* A small answer after the spilled ones. */
    F.huge_field = 0;
    client_send(c, "GET /small HTTP/1.1\r\nHost: h\r\n\r\n");
    expect_answer(want, 3, "GET", "/small", NULL, NULL);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(c, want);
    assert_int_equal(sl_frontend_connections(F.fe), 1);
}

/* A body far larger than the socket buffer: written in pieces, then the connection is reused. */
static void test_big_response_body(void **state)
{
    struct evbuffer *want = F.want;
    int c;

    (void)state;
    start(NULL);
    F.big_body = BIG_BODY;
    c = client_accepted(1);
    client_send(c, "GET /large HTTP/1.1\r\nHost: h\r\n\r\n");
    expect_answer(want, 0, "GET", "/large", NULL, NULL);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(c, want);

    F.big_body = 0;
    client_send(c, "GET /after HTTP/1.1\r\nHost: h\r\n\r\n");
    expect_answer(want, 1, "GET", "/after", NULL, NULL);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(c, want);
    assert_int_equal(F.n_seen, 2);
}

/*
 * Status lines: every code of IANA's registry with its standard phrase, and
 * the owner's own phrase when it gives one (a relayed answer's).
 */
static void test_status_lines(void **state)
{
    static const int iana[] = {
        100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302,
        303, 304, 305, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411,
        412, 413, 414, 415, 416, 417, 421, 422, 423, 424, 425, 426, 428, 429, 431, 451, 500,
        501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
    };
    static const struct {
        int status;
        const char *reason, *line;
    } exact[] = {
        {414, NULL, "HTTP/1.1 414 URI Too Long\r\n"},
        {416, NULL, "HTTP/1.1 416 Range Not Satisfiable\r\n"},
        {421, NULL, "HTTP/1.1 421 Misdirected Request\r\n"},
        {451, NULL, "HTTP/1.1 451 Unavailable For Legal Reasons\r\n"},
        {511, NULL, "HTTP/1.1 511 Network Authentication Required\r\n"},
        {200, "Fine Thanks", "HTTP/1.1 200 Fine Thanks\r\n"},
        {299, "Custom", "HTTP/1.1 299 Custom\r\n"},
        {404, "", "HTTP/1.1 404 Not Found\r\n"},
    };
    char line[64];
    int c;

    (void)state;
    start(NULL);
    F.mode = HOLD;
    c = client_accepted(1);
    for (size_t i = 0; i < SL_ARRAY_LEN(iana) + SL_ARRAY_LEN(exact); i++) {
        bool in_iana = i < SL_ARRAY_LEN(iana);
        size_t k = i - SL_ARRAY_LEN(iana);

        evbuffer_drain(F.cl[c].rx, rx_len(c));
        client_send(c, "GET /s HTTP/1.1\r\nHost: h\r\n\r\n");
        PUMP_UNTIL(F.n_seen == 1);
        F.status = in_iana ? iana[i] : exact[k].status;
        F.reason = in_iana ? NULL : exact[k].reason;
        answer(&F.seen[0]);
        PUMP_UNTIL(rx_search(F.cl[c].rx, "\r\n\r\n") != NULL);
        text(F.cl[c].rx, line, sizeof(line));
        line[strcspn(line, "\n") + 1] = '\0';
        if (in_iana ? strncmp(line + 13, "Unknown", 7) == 0 || line[13] == '\r'
                    : strcmp(line, exact[k].line) != 0)
            fail_msg("status %d: \"%s\"", F.status, line);
        free(F.seen[0].body);
        memset(&F.seen[0], 0, sizeof(F.seen[0]));
        F.n_seen = 0;
    }
}

/* HEAD: Content-Length of the body the owner gave, no body bytes, the connection goes on. */
static void test_head_request(void **state)
{
    struct evbuffer *want = F.want;
    int c;

    (void)state;
    start(NULL);
    c = client_accepted(1);
    client_send(c, "HEAD /h HTTP/1.1\r\nHost: h\r\n\r\nGET /g HTTP/1.1\r\nHost: h\r\n\r\n");
    /* "HEAD /h\n" would be the body: Content-Length: 8, and no body bytes. */
    expect_answer(want, 0, "HEAD", "/h", NULL, NULL);
    expect_answer(want, 1, "GET", "/g", NULL, NULL);
    assert_non_null(rx_search(want, "\r\nContent-Length: 8\r\n\r\nHTTP/1.1 200 OK\r\n"));
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(c, want);
    assert_true(F.seen[0].head);
    assert_string_equal(F.seen[0].method, "HEAD");
    assert_false(F.seen[1].head);
}

/* ---- request bodies ----------------------------------------------------- */

static void test_chunked_body(void **state)
{
    struct evbuffer *want = F.want;
    int c;

    (void)state;
    start(NULL);
    c = client_accepted(1);
    client_send(c, "POST /ch HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "5\r\nhel");
    pump_quiet();
    client_send(c, "lo\r\n6;ext=1\r\n world\r\n");
    pump_quiet();
    assert_int_equal(F.n_seen, 0);
    client_send(c, "0\r\nTrailer-Field: x\r\n\r\n");
    expect_answer(want, 0, "POST", "/ch", "hello world", NULL);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(c, want);
    assert_int_equal(F.n_seen, 1);
    assert_int_equal(F.seen[0].body_len, 11);
    assert_string_equal(F.seen[0].body, "hello world");

    /* The connection is in step for the next request. */
    client_send(c, "POST /after HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "0\r\n\r\n");
    expect_answer(want, 1, "POST", "/after", NULL, NULL);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(c, want);
    assert_int_equal(F.seen[1].body_len, 0);
}

/* A body over many reads (Content-Length), byte-correct. */
static void test_large_request_body(void **state)
{
    enum { LEN = 300 * 1024 };
    static char body[LEN];
    char head[128];
    int c;

    (void)state;
    start(NULL);
    F.mode = HOLD;
    for (size_t k = 0; k < LEN; k++)
        body[k] = pattern_byte(k * 7);
    c = client_accepted(1);
    snprintf(head, sizeof(head), "PUT /blob HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n",
             LEN);
    client_send(c, head);
    client_send_n(c, body, LEN);
    PUMP_UNTIL(F.n_seen == 1);
    assert_int_equal(F.seen[0].body_len, LEN);
    assert_memory_equal(F.seen[0].body, body, LEN);
    answer(&F.seen[0]);
    PUMP_UNTIL(rx_search(F.cl[c].rx, "\r\n\r\nPUT /blob\n") != NULL);
}

/* ---- hang-ups ----------------------------------------------------------- */

enum hangup { HANGUP_CLOSE, HANGUP_RESET, HANGUP_SHUTDOWN };

static void client_gone_while_held(enum hangup how)
{
    struct linger lg = {1, 0};
    int c, other;

    start(NULL);
    F.mode = HOLD;
    c = client_accepted(1);
    other = client_accepted(2);
    client_send(c, "POST /held HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx");
    PUMP_UNTIL(F.n_seen == 1);
    assert_int_equal(F.gone, 0);

    switch (how) {
    case HANGUP_CLOSE:
        client_close(c);
        break;
    case HANGUP_RESET:
        assert_int_equal(setsockopt(F.cl[c].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
        client_close(c);
        break;
    case HANGUP_SHUTDOWN:
        assert_int_equal(shutdown(F.cl[c].fd, SHUT_WR), 0);
        break;
    }
    if (how != HANGUP_RESET) {
        /* A FIN (close or shutdown look the same) is the owner's to judge
         * (`eof`); this one lets go: no `gone`. */
        PUMP_UNTIL(F.eof == 1);
        assert_true(F.seen[0].gone);
        assert_int_equal(sl_frontend_connections(F.fe), 1);
        pump_quiet();
        assert_int_equal(F.gone, 0);
        if (how == HANGUP_SHUTDOWN) {
            /* Nothing was written to the half-closed client before the close. */
            PUMP_UNTIL(F.cl[c].eof);
            assert_int_equal(rx_len(c), 0);
        }
    } else {
        PUMP_UNTIL(F.gone == 1);
        assert_ptr_equal(F.gone_owner, &F.seen[0]);
        assert_ptr_equal(F.gone_conn, F.seen[0].conn);
        assert_true(F.seen[0].gone);
        assert_false(F.seen[0].answered);
        assert_int_equal(sl_frontend_connections(F.fe), 1);
        pump_quiet();
        assert_int_equal(F.gone, 1);
        assert_int_equal(F.eof, 0);
    }

    /* The other connection is unaffected and serves a request. */
    F.mode = ANSWER_NOW;
    client_send(other, "GET /other HTTP/1.1\r\nHost: h\r\n\r\n");
    PUMP_UNTIL(F.n_seen == 2 && F.seen[1].answered && rx_len(other) > 0);
    client_close(other);
    PUMP_UNTIL(sl_frontend_connections(F.fe) == 0);
    assert_int_equal(F.idle, 1);
    assert_int_equal(F.gone, how == HANGUP_RESET ? 1 : 0);
    assert_int_equal(F.refused, 0);
}

static void test_gone_close(void **state)
{
    (void)state;
    client_gone_while_held(HANGUP_CLOSE);
}

static void test_gone_reset(void **state)
{
    (void)state;
    client_gone_while_held(HANGUP_RESET);
}

static void test_gone_half_close(void **state)
{
    (void)state;
    client_gone_while_held(HANGUP_SHUTDOWN);
}

/*
 * A client that sends its request and shuts down its sending side still
 * reads: an owner that keeps the request answers it, with Connection:
 * close, and the connection then closes (nothing more can come).
 */
static void test_half_close_answered(void **state)
{
    struct evbuffer *want = F.want;
    int c;

    (void)state;
    start(NULL);
    F.mode = HOLD;
    F.eof_keep = true;
    c = client_accepted(1);
    client_send(c, "POST /half HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx");
    PUMP_UNTIL(F.n_seen == 1);
    assert_int_equal(shutdown(F.cl[c].fd, SHUT_WR), 0);
    PUMP_UNTIL(F.eof == 1);
    pump_quiet();
    assert_int_equal(F.gone, 0);
    assert_false(F.seen[0].gone);
    assert_int_equal(sl_frontend_connections(F.fe), 1);
    assert_int_equal(rx_len(c), 0);

    answer(&F.seen[0]);
    expect_answer(want, 0, "POST", "/half", "x", "close");
    PUMP_UNTIL(F.cl[c].eof);
    expect_rx(c, want);
    assert_int_equal(F.cl[c].err, 0);
    PUMP_UNTIL(sl_frontend_connections(F.fe) == 0);
    assert_int_equal(sl_frontend_write_errors(F.fe), 0);
    assert_int_equal(F.gone, 0);
}

/*
 * Requests pipelined before the FIN are all answered, in order, the last
 * one with Connection: close; an incomplete one after them is dropped.
 */
static void test_half_close_pipelined(void **state)
{
    struct evbuffer *want = F.want;
    int c;

    (void)state;
    start(NULL);
    F.mode = ANSWER_TIMER;
    F.eof_keep = true;
    c = client_accepted(1);
    client_send(c, "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_int_equal(shutdown(F.cl[c].fd, SHUT_WR), 0);
    expect_answer(want, 0, "GET", "/1", NULL, NULL);
    expect_answer(want, 1, "GET", "/2", NULL, "close");
    PUMP_UNTIL(F.cl[c].eof);
    expect_rx(c, want);
    assert_int_equal(F.n_seen, 2);
    PUMP_UNTIL(sl_frontend_connections(F.fe) == 0);

    evbuffer_drain(want, evbuffer_get_length(want));
    c = client_accepted(1);
    client_send(c, "GET /3 HTTP/1.1\r\nHost: h\r\n\r\nGET /4 HTTP/1.1\r\nHo");
    assert_int_equal(shutdown(F.cl[c].fd, SHUT_WR), 0);
    expect_answer(want, 2, "GET", "/3", NULL, NULL);
    PUMP_UNTIL(F.cl[c].eof);
    expect_rx(c, want);
    PUMP_UNTIL(sl_frontend_connections(F.fe) == 0);
    assert_int_equal(F.n_seen, 3);
    assert_int_equal(F.refused, 0);
}

/* A FIN while a large answer is being written: it is written to the end. */
static void test_half_close_while_writing(void **state)
{
    struct evbuffer *want = F.want;
    int c;

    (void)state;
    start(NULL);
    F.big_body = 4 * BIG_BODY;
    c = client_accepted(1);
    client_send(c, "GET /large HTTP/1.1\r\nHost: h\r\n\r\n");
    PUMP_UNTIL(F.n_seen == 1 && rx_len(c) > 0);
    assert_int_equal(shutdown(F.cl[c].fd, SHUT_WR), 0);
    expect_answer(want, 0, "GET", "/large", NULL, NULL);
    PUMP_UNTIL(F.cl[c].eof);
    expect_rx(c, want);
    assert_int_equal(F.eof, 0);
    PUMP_UNTIL(sl_frontend_connections(F.fe) == 0);
}

/* A hang-up after the answer, or before any request, reports no `gone`. */
static void test_no_gone_when_not_serving(void **state)
{
    int c;

    (void)state;
    start(NULL);
    F.mode = HOLD;
    c = client_accepted(1);
    client_send(c, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
    PUMP_UNTIL(F.n_seen == 1);
    answer(&F.seen[0]);
    PUMP_UNTIL(rx_len(c) > 0);
    client_close(c);
    c = client_accepted(1);
    client_send(c, "POST /half HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc");
    pump_quiet();
    client_close(c);
    PUMP_UNTIL(sl_frontend_connections(F.fe) == 0);
    pump_quiet();
    assert_int_equal(F.gone, 0);
    assert_int_equal(F.n_seen, 1);
}

/* ---- refusals ----------------------------------------------------------- */

struct refusal {
    const char *request;
    enum sl_outcome outcome;
    int status;
};

static void expect_refusal(const struct refusal *r)
{
    static char got[4096];
    char want_line[64], want_error[64];
    int c = client_accepted(1);
    int before = F.refused;
    int line = (int)strcspn(r->request, "\r"); /* messages name the request by its first line */

    client_send(c, r->request);
    PUMP_UNTIL(F.cl[c].eof || F.n_seen > 0);
    if (F.n_seen > 0)
        fail_msg("\"%.*s\" (%zu bytes): delivered to `request`, expected %s", line, r->request,
                 strlen(r->request), outcome_name(r->outcome));
    if (F.refused != before + 1)
        fail_msg("\"%.*s\": not refused", line, r->request);
    if (F.refused_outcome != r->outcome)
        fail_msg("\"%.*s\": outcome %s, expected %s", line, r->request,
                 outcome_name(F.refused_outcome), outcome_name(r->outcome));
    if (F.refused_detail[0] == '\0')
        fail_msg("\"%.*s\": refused without a detail for the log", line, r->request);
    assert_int_equal(F.n_seen, 0);
    assert_int_equal(F.cl[c].err, 0);

    text(F.cl[c].rx, got, sizeof(got));
    snprintf(want_line, sizeof(want_line), "HTTP/1.1 %d ", r->status);
    snprintf(want_error, sizeof(want_error), "\r\nX-Sluice-Error: %s\r\n",
             outcome_name(r->outcome));
    if (strncmp(got, want_line, strlen(want_line)) != 0 || strstr(got, want_error) == NULL ||
        strstr(got, "\r\nConnection: close\r\n") == NULL || strstr(got, "\r\nDate: ") == NULL)
        fail_msg("\"%.*s\": answered\n%s", line, r->request, got);

    client_close(c);
    PUMP_UNTIL(sl_frontend_connections(F.fe) == 0);
    F.n_cl--;
    evbuffer_free(F.cl[c].rx);
}

static void test_malformed_refused(void **state)
{
    static const struct refusal bad[] = {
        {"GARBAGE\r\n\r\n", SL_OUTCOME_BAD_REQUEST, 400},
        {"GET / HTTP/1.1\r\nHost: h\r\nNo colon here\r\n\r\n", SL_OUTCOME_BAD_REQUEST, 400},
        {"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n", SL_OUTCOME_BAD_REQUEST, 400},
        {"BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n", SL_OUTCOME_BAD_REQUEST, 400},
        {"get / HTTP/1.1\r\nHost: h\r\n\r\n", SL_OUTCOME_BAD_REQUEST, 400},
        {"GET / HTTP/2.0\r\n\r\n", SL_OUTCOME_BAD_REQUEST, 400},
        {"GET / HTTP/1.1\r\nHost : h\r\n\r\n", SL_OUTCOME_BAD_REQUEST, 400},
        {"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\rX-B: 2\r\n\r\n", SL_OUTCOME_BAD_REQUEST, 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n", SL_OUTCOME_BAD_REQUEST,
         400},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
         SL_OUTCOME_BAD_REQUEST, 400},
        /* Framing a proxy must not guess at (request smuggling, RFC 9112 6.1 and 6.3). */
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
         "\r\n0\r\n\r\n",
         SL_OUTCOME_BAD_REQUEST, 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
         SL_OUTCOME_BAD_REQUEST, 400},
        /* A broken chunked body. */
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
         SL_OUTCOME_BAD_REQUEST, 400},
    };

    (void)state;
    start(NULL);
    for (size_t i = 0; i < SL_ARRAY_LEN(bad); i++)
        expect_refusal(&bad[i]);
    assert_int_equal(F.refused, (int)SL_ARRAY_LEN(bad));
    assert_int_equal(F.gone, 0);
}

/* "GET target HTTP/1.1" with Host and an X-Pad field: a head of exactly `size` bytes. */
static const char *head_of_size(const char *target, size_t size)
{
    static char h[4096];
    int n = snprintf(h, sizeof(h), "GET %s HTTP/1.1\r\nHost: h\r\nX-Pad: \r\n\r\n", target);

    assert_true(n > 0 && (size_t)n < size && size < sizeof(h));
    n -= 4; /* before the CRLF CRLF */
    memset(h + n, 'p', size - (size_t)n - 4);
    memcpy(h + size - 4, "\r\n\r\n", 5);
    assert_int_equal(strlen(h), size);
    return h;
}

/* "GET /fields HTTP/1.1" with Host and n-1 more fields. */
static const char *request_with_fields(int n)
{
    static char s[4096];
    int off = snprintf(s, sizeof(s), "GET /fields HTTP/1.1\r\nHost: h\r\n");

    for (int i = 1; i < n; i++)
        off += snprintf(s + off, sizeof(s) - (size_t)off, "X-F%d: v\r\n", i);
    snprintf(s + off, sizeof(s) - (size_t)off, "\r\n");
    assert_true(strlen(s) < sizeof(s) - 1);
    return s;
}

/*
 * An HTTP/1.1 request without Host, or any request with more than one Host
 * field, is refused as bad_request (SPEC section 6: "missing or repeated
 * Host"; RFC 9112 section 3.2: a server MUST answer 400).
 */
static void test_host_required(void **state)
{
    static const struct refusal bad[] = {
        {"GET / HTTP/1.1\r\n\r\n", SL_OUTCOME_BAD_REQUEST, 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", SL_OUTCOME_BAD_REQUEST, 400},
    };
    struct evbuffer *want = F.want;
    int c;

    (void)state;
    start(NULL);
    for (size_t i = 0; i < SL_ARRAY_LEN(bad); i++)
        expect_refusal(&bad[i]);
    /* HTTP/1.0 needs no Host. */
    c = client_accepted(1);
    client_send(c, "GET /old HTTP/1.0\r\n\r\n");
    expect_answer(want, 0, "GET", "/old", NULL, "close");
    PUMP_UNTIL(F.cl[c].eof);
    expect_rx(c, want);
}

/*
 * Absolute-form targets (RFC 9112 3.2.2), as clients send them to a proxy:
 * the owner gets the origin-form target, and the authority as the only
 * Host. Other forms stay refused.
 */
static void test_absolute_form(void **state)
{
    static const struct refusal bad[] = {
        {"GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n", SL_OUTCOME_BAD_REQUEST, 400},
        {"GET http://user@h/x HTTP/1.1\r\nHost: h\r\n\r\n", SL_OUTCOME_BAD_REQUEST, 400},
        {"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", SL_OUTCOME_BAD_REQUEST, 400},
        {"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", SL_OUTCOME_BAD_REQUEST, 400},
        /* Still one Host in HTTP/1.1 (RFC 9112 3.2), whatever the target says. */
        {"GET http://h/x HTTP/1.1\r\n\r\n", SL_OUTCOME_BAD_REQUEST, 400},
    };
    int c;

    (void)state;
    start(NULL);
    for (size_t i = 0; i < SL_ARRAY_LEN(bad); i++)
        expect_refusal(&bad[i]);
    F.mode = ANSWER_NOW;
    c = client_accepted(1);
    client_send(c, "GET http://Other.Example:81/abs/p?q=1 HTTP/1.1\r\nHost: h\r\n"
                   "Accept: */*\r\n\r\n"
                   "POST HTTPS://api.example?x HTTP/1.1\r\nhost: h\r\nContent-Length: 1\r\n\r\nb"
                   "GET http://[::1]:8080 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    PUMP_UNTIL(F.n_seen == 3 && F.seen[2].answered);
    assert_string_equal(F.seen[0].target, "/abs/p?q=1");
    assert_string_equal(F.seen[0].fields, "Accept: */*\nHost: Other.Example:81\n");
    assert_string_equal(F.seen[1].method, "POST");
    assert_string_equal(F.seen[1].target, "/?x");
    assert_string_equal(F.seen[1].fields, "Content-Length: 1\nHost: api.example\n");
    assert_string_equal(F.seen[1].body, "b");
    assert_string_equal(F.seen[2].target, "/");
    assert_string_equal(F.seen[2].fields, "Connection: keep-alive\nHost: [::1]:8080\n");
    assert_int_equal(F.refused, (int)SL_ARRAY_LEN(bad));
}

/* The caps the frontend enforces itself: head size, field count, body size. */
static void test_limits_refused(void **state)
{
    char big_head[3000];
    const char *fields;
    struct refusal r;
    struct evbuffer *want = F.want;
    int c;

    (void)state;
    start("max_header_size = 2k\nmax_body_size = 16\n");

    snprintf(big_head, sizeof(big_head), "GET / HTTP/1.1\r\nHost: h\r\nX-Long: %02500d\r\n\r\n",
             0);
    r = (struct refusal){big_head, SL_OUTCOME_HEADERS_TOO_LARGE, 431};
    expect_refusal(&r);
    fields = request_with_fields(101);
    assert_true(strlen(fields) < 2048);
    r = (struct refusal){fields, SL_OUTCOME_HEADERS_TOO_LARGE, 431};
    expect_refusal(&r);
    r = (struct refusal){head_of_size("/", 2049), SL_OUTCOME_HEADERS_TOO_LARGE, 431};
    expect_refusal(&r);
    r = (struct refusal){"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 17\r\n\r\n",
                         SL_OUTCOME_BODY_TOO_LARGE, 413};
    expect_refusal(&r);
    /* Refused at once: no 100 Continue first (the answer starts with the 413). */
    r = (struct refusal){"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 17\r\n"
                         "Expect: 100-continue\r\n\r\n",
                         SL_OUTCOME_BODY_TOO_LARGE, 413};
    expect_refusal(&r);
    r = (struct refusal){"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "10\r\n0123456789abcdef\r\n1\r\nx\r\n0\r\n\r\n",
                         SL_OUTCOME_BODY_TOO_LARGE, 413};
    expect_refusal(&r);
    assert_int_equal(F.n_seen, 0);

    /* At the caps: served. */
    c = client_accepted(1);
    client_send(c, "POST /ok HTTP/1.1\r\nHost: h\r\nContent-Length: 16\r\n\r\n"
                   "0123456789abcdef");
    expect_answer(want, 0, "POST", "/ok", "0123456789abcdef", NULL);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    fields = request_with_fields(100);
    client_send(c, fields);
    expect_answer(want, 1, "GET", "/fields", NULL, NULL);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    /* A head of exactly max_header_size (request line to the empty line). */
    client_send(c, head_of_size("/max", 2048));
    expect_answer(want, 2, "GET", "/max", NULL, NULL);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    assert_int_equal(F.seen[2].header_bytes, 2048);
    /* A chunked body of exactly max_body_size. */
    client_send(c, "POST /chunks HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "f\r\n0123456789abcde\r\n1\r\nf\r\n0\r\n\r\n");
    expect_answer(want, 3, "POST", "/chunks", "0123456789abcdef", NULL);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(c, want);
    assert_int_equal(F.refused, 6);
}

/* ---- accepting ---------------------------------------------------------- */

static void test_pause_resume(void **state)
{
    int c;

    (void)state;
    start(NULL);
    sl_frontend_pause(F.fe, SL_PAUSE_QUEUE);
    c = client_connect();
    client_send(c, "GET /p HTTP/1.1\r\nHost: h\r\n\r\n");
    pump_quiet();
    assert_int_equal(sl_frontend_connections(F.fe), 0);
    assert_int_equal(F.n_seen, 0);

    /* Two reasons: accepting resumes only when both are cleared. */
    sl_frontend_pause(F.fe, SL_PAUSE_DRAIN);
    sl_frontend_resume(F.fe, SL_PAUSE_QUEUE);
    pump_quiet();
    assert_int_equal(sl_frontend_connections(F.fe), 0);
    sl_frontend_resume(F.fe, SL_PAUSE_DRAIN);
    PUMP_UNTIL(rx_len(c) > 0 && F.n_seen == 1);
    assert_int_equal(sl_frontend_connections(F.fe), 1);
    assert_string_equal(F.seen[0].target, "/p");
}

static void test_max_connections(void **state)
{
    int a, b, c;

    (void)state;
    start("max_connections = 2\n");
    a = client_accepted(1);
    b = client_accepted(2);
    c = client_connect();
    client_send(c, "GET /third HTTP/1.1\r\nHost: h\r\n\r\n");
    pump_quiet();
    assert_int_equal(sl_frontend_connections(F.fe), 2);
    assert_int_equal(F.n_seen, 0);

    client_close(a);
    PUMP_UNTIL(F.n_seen == 1 && rx_len(c) > 0);
    assert_string_equal(F.seen[0].target, "/third");
    assert_int_equal(sl_frontend_connections(F.fe), 2);
    (void)b;
}

/* Drain: idle and half-read connections close, one serving a request stays until answered. */
static void test_close_idle(void **state)
{
    struct evbuffer *want = F.want;
    int idle, partial, busy;

    (void)state;
    start(NULL);
    F.mode = HOLD;
    idle = client_accepted(1);
    partial = client_accepted(2);
    busy = client_accepted(3);
    client_send(partial, "GET /partial HTTP/1.1\r\nHost:");
    client_send(busy, "GET /busy HTTP/1.1\r\nHost: h\r\n\r\n");
    PUMP_UNTIL(F.n_seen == 1);
    pump_quiet();

    sl_frontend_close_idle(F.fe);
    assert_int_equal(sl_frontend_connections(F.fe), 1);
    PUMP_UNTIL(F.cl[idle].eof && F.cl[partial].eof);
    assert_int_equal(rx_len(idle), 0);
    assert_int_equal(rx_len(partial), 0);
    assert_int_equal(F.idle, 0);
    assert_int_equal(F.gone, 0);

    answer(&F.seen[0]);
    expect_answer(want, 0, "GET", "/busy", NULL, NULL);
    PUMP_UNTIL(rx_len(busy) >= evbuffer_get_length(want));
    expect_rx(busy, want);
    sl_frontend_close_idle(F.fe);
    assert_int_equal(sl_frontend_connections(F.fe), 0);
    assert_int_equal(F.idle, 1);
    PUMP_UNTIL(F.cl[busy].eof);
}

/* sl_frontend_free drops every connection without callbacks; held messages stay the owner's. */
static void test_free_with_held(void **state)
{
    int a, b;

    (void)state;
    start(NULL);
    F.mode = HOLD;
    a = client_accepted(1);
    b = client_accepted(2);
    client_send(a, "POST /held HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi");
    PUMP_UNTIL(F.n_seen == 1);
    sl_frontend_free(F.fe);
    F.fe = NULL;
    PUMP_UNTIL(F.cl[a].eof && F.cl[b].eof);
    assert_int_equal(rx_len(a), 0);
    assert_int_equal(rx_len(b), 0);
    assert_int_equal(F.gone, 0);
    assert_int_equal(F.idle, 0);
    assert_non_null(F.seen[0].msg); /* freed by teardown, as the owner would */
}

/* sl_frontend_configure applies a new max_connections to a running frontend. */
static void test_reconfigure_max_connections(void **state)
{
    struct sl_config *before;
    int a, b;

    (void)state;
    start("max_connections = 1\n");
    a = client_accepted(1);
    b = client_connect();
    client_send(b, "GET /waiting HTTP/1.1\r\nHost: h\r\n\r\n");
    pump_quiet();
    assert_int_equal(sl_frontend_connections(F.fe), 1);

    /* A higher cap; the frontend borrows its config, so the old one is freed after. */
    before = F.cfg;
    write_conf("max_connections = 2\n");
    F.cfg = sl_config_load(F.conf, stderr);
    assert_non_null(F.cfg);
    sl_frontend_configure(F.fe, F.cfg);
    sl_config_free(before);
    PUMP_UNTIL(F.n_seen == 1 && rx_len(b) > 0);
    assert_string_equal(F.seen[0].target, "/waiting");
    assert_int_equal(sl_frontend_connections(F.fe), 2);
    (void)a;
}

/* ---- timeouts ----------------------------------------------------------- */

/* A held request outlives client_timeout; the idle connection then times out. */
static void test_held_outlives_client_timeout(void **state)
{
    struct evbuffer *want = F.want;
    int64_t t0;
    int c;

    (void)state;
    start("client_timeout = 100ms\n");
    F.mode = HOLD;
    c = client_accepted(1);
    client_send(c, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    PUMP_UNTIL(F.n_seen == 1);
    pump_for_ms(300);
    assert_int_equal(sl_frontend_connections(F.fe), 1);
    assert_false(F.cl[c].eof);
    assert_int_equal(F.gone, 0);

    answer(&F.seen[0]);
    expect_answer(want, 0, "GET", "/slow", NULL, NULL);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    expect_rx(c, want);
    /* Idle from the answer on: the timeout starts over, it does not fire at once. */
    t0 = now_us();
    PUMP_UNTIL(F.cl[c].eof);
    if (now_us() - t0 < 50 * 1000)
        fail_msg("closed %lld us after the answer; client_timeout is 100 ms",
                 (long long)(now_us() - t0));
    assert_int_equal(sl_frontend_connections(F.fe), 0);
    assert_int_equal(F.idle, 1);
    assert_int_equal(F.gone, 0);
}

/* ---- streamed answers (the sink's begin, write, end) -------------------- */

/* A streamed answer's fields: the fixed Date, the sequence number, F.stream_length. */
static int stream_fields(sl_header_fn emit, void *emit_arg, void *arg)
{
    const struct seen *s = arg;
    char value[32];
    int rc;

    snprintf(value, sizeof(value), "%d", s->index);
    if ((rc = emit("Date", FIXED_DATE, emit_arg)) != SL_OK ||
        (rc = emit("X-Seq", value, emit_arg)) != SL_OK)
        return rc;
    return F.stream_length != NULL ? emit("Content-Length", F.stream_length, emit_arg) : SL_OK;
}

static bool stream_begin(struct seen *s, int status, int64_t length)
{
    struct sl_sink *sink = sl_conn_sink(s->conn);
    bool ok;

    F.in_respond = true;
    ok = sink->ops->begin(sink, status, NULL, stream_fields, s, length);
    F.in_respond = false;
    return ok;
}

static bool stream_write(struct seen *s, const void *data, size_t len)
{
    struct sl_sink *sink = sl_conn_sink(s->conn);
    struct evbuffer *b = evbuffer_new();
    size_t left;
    bool ok;

    assert_non_null(b);
    if (evbuffer_add(b, data, len) != 0) {
        evbuffer_free(b);
        fail_msg("out of memory");
    }
    F.in_respond = true;
    ok = sink->ops->write(sink, b);
    F.in_respond = false;
    left = evbuffer_get_length(b);
    evbuffer_free(b);
    assert_int_equal(left, 0);
    return ok;
}

static void stream_end(struct seen *s, bool complete)
{
    struct sl_sink *sink = sl_conn_sink(s->conn);

    F.in_respond = true;
    sink->ops->end(sink, complete);
    F.in_respond = false;
    s->answered = true;
    F.outstanding--;
    sl_http_msg_free(s->msg);
    s->msg = NULL;
}

/* Append a streamed answer's head: status 200, the owner's fields, then `framing`. */
static void expect_stream_head(struct evbuffer *want, int index, const char *framing)
{
    evbuffer_add_printf(want, "HTTP/1.1 200 OK\r\nDate: " FIXED_DATE "\r\nX-Seq: %d\r\n%s\r\n",
                        index, framing);
}

/* A new client sends `request`; the owner adopts its sink (mode STREAM). */
static struct seen *stream_request(int c, const char *request)
{
    int n = F.n_seen;

    client_send(c, request);
    PUMP_UNTIL(F.n_seen == n + 1);
    return &F.seen[n];
}

/* With a length the upstream's Content-Length stands; the connection is kept. */
static void test_stream_content_length(void **state)
{
    struct evbuffer *want = F.want;
    struct seen *s;
    int c;

    (void)state;
    start(NULL);
    F.mode = STREAM;
    F.stream_length = "10";
    c = client_accepted(1);
    s = stream_request(c, "GET /s HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_true(stream_begin(s, 200, 10));
    assert_true(stream_write(s, "hello", 5));
    /* The first bytes go before the last ones exist. */
    expect_stream_head(want, 0, "Content-Length: 10\r\n");
    evbuffer_add(want, "hello", 5);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(c, want);

    assert_true(stream_write(s, "world", 5));
    stream_end(s, true);
    evbuffer_add(want, "world", 5);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(c, want);
    assert_false(F.cl[c].eof);

    /* Keep-alive: the next request on the connection is served. */
    F.mode = ANSWER_NOW;
    client_send(c, "GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
    expect_answer(want, 1, "GET", "/next", NULL, NULL);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(c, want);
    assert_false(F.cl[c].eof);
    assert_int_equal(sl_frontend_connections(F.fe), 1);
    assert_int_equal(F.gone, 0);
    assert_int_equal(F.seen[0].drained, 0);
}

/* A length the fields do not carry is written by the frontend (sink.h: `length`). */
static void test_stream_length_without_field(void **state)
{
    struct evbuffer *want = F.want;
    struct seen *s;
    int c;

    (void)state;
    start(NULL);
    F.mode = STREAM;
    c = client_accepted(1);
    s = stream_request(c, "GET /s HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_true(stream_begin(s, 200, 5));
    assert_true(stream_write(s, "hello", 5));
    stream_end(s, true);
    expect_stream_head(want, 0, "Content-Length: 5\r\n");
    evbuffer_add(want, "hello", 5);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(c, want);
    assert_false(F.cl[c].eof);
}

/*
 * No length, an HTTP/1.1 client: chunks with their sizes, the terminator
 * at the end; a request pipelined meanwhile waits for it, then is served.
 */
static void test_stream_chunked(void **state)
{
    struct evbuffer *want = F.want;
    char big[300];
    struct seen *s;
    int c;

    (void)state;
    start(NULL);
    F.mode = STREAM;
    c = client_accepted(1);
    s = stream_request(c, "GET /s HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_true(stream_begin(s, 200, -1));
    assert_true(stream_write(s, "hello", 5));
    memset(big, 'b', sizeof(big));
    assert_true(stream_write(s, big, sizeof(big)));
    expect_stream_head(want, 0, "Transfer-Encoding: chunked\r\n");
    evbuffer_add_printf(want, "5\r\nhello\r\n12c\r\n");
    evbuffer_add(want, big, sizeof(big));
    evbuffer_add(want, "\r\n", 2);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));

    client_send(c, "GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
    pump_quiet();
    expect_rx(c, want);
    assert_int_equal(F.n_seen, 1);

    F.mode = ANSWER_NOW;
    stream_end(s, true);
    evbuffer_add(want, "0\r\n\r\n", 5);
    expect_answer(want, 1, "GET", "/next", NULL, NULL);
    PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(c, want);
    assert_int_equal(F.n_seen, 2);
    assert_false(F.cl[c].eof);
    assert_int_equal(sl_frontend_connections(F.fe), 1);
    assert_int_equal(F.gone, 0);
}

/*
 * No length, an HTTP/1.0 client (keep-alive asked for): no length, no
 * chunks, the close ends the body. With a length, 1.0 keep-alive stands.
 */
static void test_stream_http10(void **state)
{
    struct evbuffer *want = F.want;
    struct seen *s;
    int a, b;

    (void)state;
    start(NULL);
    F.mode = STREAM;
    a = client_accepted(1);
    s = stream_request(a, "GET /s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_true(stream_begin(s, 200, -1));
    assert_true(stream_write(s, "hello", 5));
    assert_true(stream_write(s, "world", 5));
    stream_end(s, true);
    expect_stream_head(want, 0, "Connection: close\r\n");
    evbuffer_add(want, "helloworld", 10);
    PUMP_UNTIL(F.cl[a].eof);
    expect_rx(a, want);
    assert_int_equal(F.cl[a].err, 0);
    client_close(a);
    PUMP_UNTIL(sl_frontend_connections(F.fe) == 0);

    evbuffer_drain(want, evbuffer_get_length(want));
    F.stream_length = "5";
    b = client_accepted(1);
    s = stream_request(b, "GET /s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_true(stream_begin(s, 200, 5));
    assert_true(stream_write(s, "hello", 5));
    stream_end(s, true);
    expect_stream_head(want, 1, "Content-Length: 5\r\nConnection: keep-alive\r\n");
    evbuffer_add(want, "hello", 5);
    PUMP_UNTIL(rx_len(b) >= evbuffer_get_length(want));
    pump_quiet();
    expect_rx(b, want);
    assert_false(F.cl[b].eof);
    assert_int_equal(F.gone, 0);
}

/*
 * An answer cut short (end(s, false)) is closed so the client can tell: no
 * chunked terminator, a body short of its length, a reset where only the
 * close delimits the body.
 */
static void test_stream_cut_short(void **state)
{
    static const char *const requests[] = {
        "GET /chunked HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /length HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /close HTTP/1.0\r\n\r\n",
    };
    static const char *const framings[] = {
        "Transfer-Encoding: chunked\r\n",
        "Content-Length: 10\r\n",
        "Connection: close\r\n",
    };
    struct evbuffer *want = F.want;

    (void)state;
    start(NULL);
    F.mode = STREAM;
    for (int i = 0; i < 3; i++) {
        int c = client_accepted(1);
        struct seen *s = stream_request(c, requests[i]);

        F.stream_length = i == 1 ? "10" : NULL;
        assert_true(stream_begin(s, 200, i == 1 ? 10 : -1));
        assert_true(stream_write(s, "hello", 5));
        evbuffer_drain(want, evbuffer_get_length(want));
        expect_stream_head(want, i, framings[i]);
        evbuffer_add_printf(want, i == 0 ? "5\r\nhello\r\n" : "hello");
        /* Read before the cut: a reset may drop what was not read. */
        PUMP_UNTIL(rx_len(c) >= evbuffer_get_length(want));
        stream_end(s, false);
        PUMP_UNTIL(F.cl[c].eof);
        expect_rx(c, want);
        if (i == 2)
            assert_int_equal(F.cl[c].err, ECONNRESET);
        else
            assert_int_equal(F.cl[c].err, 0);
        client_close(c);
        PUMP_UNTIL(sl_frontend_connections(F.fe) == 0);
    }
    assert_int_equal(F.gone, 0);
}

#define STREAM_BLOCK 16384

/* Check client c's chunked body: `blocks` chunks of STREAM_BLOCK pattern bytes, the end. */
static void expect_block_chunks(int c, size_t head_len, size_t blocks)
{
    size_t want_len = head_len + blocks * (6 + STREAM_BLOCK + 2) + 5;
    const char *p;

    assert_int_equal(rx_len(c), want_len);
    p = (const char *)evbuffer_pullup(F.cl[c].rx, -1) + head_len;
    for (size_t i = 0; i < blocks; i++, p += 6 + STREAM_BLOCK + 2) {
        if (memcmp(p, "4000\r\n", 6) != 0 || memcmp(p + 6 + STREAM_BLOCK, "\r\n", 2) != 0)
            fail_msg("chunk %zu is not framed as 16384 bytes", i);
        for (size_t k = 0; k < STREAM_BLOCK; k++)
            if (p[6 + k] != pattern_byte(i * STREAM_BLOCK + k))
                fail_msg("chunk %zu: byte %zu differs", i, k);
    }
    assert_memory_equal(p, "0\r\n\r\n", 5);
}

/*
 * write() says "enough" once stream_buffer bytes are held; for a client
 * that does not read, the owner then waits, and `drained` comes once the
 * client reads. Nothing is lost on the way.
 */
static void test_stream_backpressure(void **state)
{
    char block[STREAM_BLOCK];
    size_t blocks = 0, head_len;
    struct seen *s;
    bool blocked = false;
    int c, drained;

    (void)state;
    start("stream_buffer = 64k\n");
    F.mode = STREAM;
    c = client_accepted(1);
    s = stream_request(c, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
    F.cl[c].stalled = true;
    assert_true(stream_begin(s, 200, -1));
    expect_stream_head(F.want, 0, "Transfer-Encoding: chunked\r\n");
    head_len = evbuffer_get_length(F.want);

    /* Nothing has gone out yet: three blocks fit in 64 KiB, the fourth does not. */
    for (int i = 0; i < 4; i++, blocks++) {
        for (size_t k = 0; k < STREAM_BLOCK; k++)
            block[k] = pattern_byte(blocks * STREAM_BLOCK + k);
        assert_true(stream_write(s, block, sizeof(block)) == (i < 3));
    }
    PUMP_UNTIL(s->drained == 1); /* into the socket buffers */

    /* Until the socket buffers are full too: then no room comes back. */
    while (!blocked && blocks < 4096) {
        for (size_t k = 0; k < STREAM_BLOCK; k++)
            block[k] = pattern_byte(blocks * STREAM_BLOCK + k);
        blocks++;
        if (stream_write(s, block, sizeof(block)))
            continue;
        drained = s->drained;
        pump_quiet();
        if (s->drained == drained) {
            pump_for_ms(20);
            blocked = s->drained == drained;
        }
        if (!blocked)
            PUMP_UNTIL(s->drained == drained + 1);
    }
    assert_true(blocked);
    drained = s->drained;
    assert_int_equal(rx_len(c), 0);

    /* The client reads: room again. */
    F.cl[c].stalled = false;
    PUMP_UNTIL(s->drained == drained + 1);
    stream_end(s, true);
    PUMP_UNTIL(rx_len(c) >= head_len + blocks * (6 + STREAM_BLOCK + 2) + 5);
    pump_quiet();
    assert_memory_equal(evbuffer_pullup(F.cl[c].rx, (ev_ssize_t)head_len),
                        evbuffer_pullup(F.want, -1), head_len);
    expect_block_chunks(c, head_len, blocks);
    assert_false(F.cl[c].eof);
    assert_int_equal(F.gone, 0);
}

/*
 * The client hangs up during the answer: its owner hears `gone` (from the
 * loop, never inside write), whether it reset with bytes unread or closed
 * after reading everything (the next writes fail).
 */
static void test_stream_client_gone(void **state)
{
    char block[STREAM_BLOCK];
    struct seen *s;
    int a, b, writes;

    (void)state;
    start("stream_buffer = 16k\n");
    F.mode = STREAM;
    memset(block, 'g', sizeof(block));

    /* Bytes left unread: the close is a reset. */
    a = client_accepted(1);
    s = stream_request(a, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
    F.cl[a].stalled = true;
    assert_true(stream_begin(s, 200, -1));
    assert_false(stream_write(s, block, sizeof(block)));
    PUMP_UNTIL(s->drained == 1);
    client_close(a);
    PUMP_UNTIL(F.gone == 1);
    assert_ptr_equal(F.gone_owner, s);
    assert_ptr_equal(F.gone_conn, s->conn);
    PUMP_UNTIL(sl_frontend_connections(F.fe) == 0);

    /* Everything read, then a close: the answer's next writes find the client gone. */
    b = client_accepted(1);
    s = stream_request(b, "GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_true(stream_begin(s, 200, -1));
    assert_true(stream_write(s, "hello", 5));
    PUMP_UNTIL(rx_len(b) > 0 && rx_search(F.cl[b].rx, "hello") != NULL);
    client_close(b);
    pump_quiet();
    for (writes = 0; F.gone == 1 && writes < 20; writes++) {
        (void)stream_write(s, "more", 4);
        pump_quiet();
    }
    assert_int_equal(F.gone, 2);
    assert_true(s->gone);
    assert_ptr_equal(F.gone_owner, s);
    PUMP_UNTIL(sl_frontend_connections(F.fe) == 0);
    assert_int_equal(F.idle, 2);
}

int main(void)
{
    /* As sluice does: a write to a client that left fails, it does not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keep_alive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_requested, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelining_held, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelining_answered_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelining_then_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelining_then_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expect_continue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expect_continue_http10, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http10_keep_alive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http10_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_response_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_response_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_request_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gone_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gone_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gone_half_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_close_answered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_close_pipelined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_close_while_writing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_gone_when_not_serving, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_required, setup, teardown),
        cmocka_unit_test_setup_teardown(test_absolute_form, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_held, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconfigure_max_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_outlives_client_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_content_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_length_without_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_chunked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_http10, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_cut_short, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_client_gone, setup, teardown),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
