/*
 * frontend.c - listeners and a small HTTP/1.1 server on bufferevents.
 *
 * A connection moves READING -> SERVING -> WRITING -> READING (keep-alive)
 * or is freed. While SERVING, the socket stays readable so that a hang-up is
 * seen at once; bytes of a pipelined next request simply wait in the input
 * buffer (a high watermark stops reading if a client floods it).
 */
#include "frontend.h"

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "clock.h"
#include "headers.h"
#include "log.h"
#include "sluice.h"
#include "strbuf.h"
#include "wire.h"

#define FRONTEND_BACKLOG 4096
#define FRONTEND_PIPELINE_MAX (64 * 1024)   /* buffered bytes of a next request */
#define FRONTEND_ACCEPT_RETRY_MS 100
#define FRONTEND_PEEK_VECS 16
#define FRONTEND_LINGER_SEC 2

enum conn_state {
    CONN_READING,
    CONN_SERVING,
    CONN_WRITING,
    CONN_LINGERING,   /* response sent, write side shut, draining input before close */
};

struct sl_conn {
    TAILQ_ENTRY(sl_conn) link;
    struct sl_frontend *fe;
    struct bufferevent *bev;            /* owns the socket */
    http_parser parser;
    enum conn_state state;
    struct sl_http_msg *msg;            /* being parsed, owned */
    struct sl_strbuf url, field, value;    /* parse scratch, owned */
    bool in_value;                      /* last header callback was a value */
    bool complete;                      /* msg fully parsed */
    bool keep_alive;                    /* of the request being served */
    bool http10;
    bool head;                          /* the request being served is HEAD */
    bool close_after_write;
    enum sl_outcome error;              /* parse-time refusal, or RELAYED = none */
    const char *error_detail;
    void *owner;
    char peer[INET6_ADDRSTRLEN];
};

struct sl_listener {
    struct evconnlistener *lev;
};

struct sl_frontend {
    struct event_base *base;
    const struct sl_config *cfg;
    struct sl_frontend_callbacks cb;
    void *arg;
    struct sl_listener listeners[SL_CONFIG_MAX_LISTEN];
    size_t n_listeners;
    unsigned paused;                    /* enum sl_frontend_pause bits */
    struct event *retry_accept;
    TAILQ_HEAD(, sl_conn) conns;
    size_t n_conns;
    unsigned max_connections;
    struct timeval client_timeout;
    size_t max_body_size;
};

static http_parser_settings parser_settings;

static void conn_free(struct sl_conn *c);
static void conn_parse(struct sl_conn *c);

/* --- small helpers ------------------------------------------------------ */

void sl_http_msg_free(struct sl_http_msg *msg)
{
    if (msg == NULL)
        return;
    free(msg->target);
    sl_headers_clear(&msg->headers);
    if (msg->body != NULL)
        evbuffer_free(msg->body);
    free(msg);
}

static struct sl_http_msg *msg_new(void)
{
    struct sl_http_msg *m = calloc(1, sizeof(*m));

    if (m == NULL)
        return NULL;
    TAILQ_INIT(&m->headers);
    m->body = evbuffer_new();
    if (m->body == NULL) {
        free(m);
        return NULL;
    }
    return m;
}

/* Mark the message refused; parsing stops and the refusal is answered. */
static int refuse(struct sl_conn *c, enum sl_outcome o, const char *detail)
{
    c->error = o;
    c->error_detail = detail;
    return -1;
}

/* --- http-parser callbacks ---------------------------------------------- */

static int on_message_begin(http_parser *p)
{
    struct sl_conn *c = p->data;

    c->msg = msg_new();
    if (c->msg == NULL)
        return refuse(c, SL_OUTCOME_INTERNAL_ERROR, "out of memory");
    c->url.len = c->field.len = c->value.len = 0;
    c->in_value = false;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct sl_conn *c = p->data;

    if (sl_strbuf_append(&c->url, at, n) != 0)
        return refuse(c, SL_OUTCOME_INTERNAL_ERROR, "out of memory");
    return 0;
}

/* Store the header gathered so far (fields and values arrive in pieces). */
static int header_commit(struct sl_conn *c)
{
    if (c->field.len == 0)
        return 0;
    int rc = sl_headers_add(&c->msg->headers, c->field.s, c->value.len ? c->value.s : "");

    if (rc == SL_ENOMEM)
        return refuse(c, SL_OUTCOME_INTERNAL_ERROR, "out of memory");
    if (rc != SL_OK)
        return refuse(c, SL_OUTCOME_BAD_REQUEST, "invalid header value");
    /* "Name: value\r\n": what the queue's byte cap accounts for. */
    c->msg->header_bytes += c->field.len + c->value.len + 4;
    c->field.len = c->value.len = 0;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct sl_conn *c = p->data;

    if (c->in_value) {
        if (header_commit(c) != 0)
            return -1;
        c->in_value = false;
    }
    if (sl_strbuf_append(&c->field, at, n) != 0)
        return refuse(c, SL_OUTCOME_INTERNAL_ERROR, "out of memory");
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct sl_conn *c = p->data;

    c->in_value = true;
    if (sl_strbuf_append(&c->value, at, n) != 0)
        return refuse(c, SL_OUTCOME_INTERNAL_ERROR, "out of memory");
    return 0;
}

static bool method_allowed(enum http_method m)
{
    switch (m) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_POST:
    case HTTP_PUT:
    case HTTP_PATCH:
    case HTTP_DELETE:
    case HTTP_OPTIONS:
        return true;
    default:
        return false;
    }
}

static bool expects_continue(const struct evkeyvalq *h)
{
    const char *e = evhttp_find_header(h, "Expect");

    return e != NULL && strcasecmp(e, "100-continue") == 0;
}

/* The client waits for this before sending its body. */
static void send_continue(struct sl_conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);

    if (evbuffer_add(out, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 0)
        return;
    if (evbuffer_write(out, bufferevent_getfd(c->bev)) < 0 || evbuffer_get_length(out) > 0)
        bufferevent_enable(c->bev, EV_WRITE);
}

static int on_headers_complete(http_parser *p)
{
    struct sl_conn *c = p->data;
    struct sl_frontend *fe = c->fe;

    if (header_commit(c) != 0)
        return -1;
    /* Request line: method, target, " HTTP/1.1\r\n". */
    c->msg->header_bytes += strlen(http_method_str((enum http_method)p->method)) + c->url.len + 12;
    c->msg->method = http_method_str((enum http_method)p->method);
    c->msg->head = p->method == HTTP_HEAD;
    c->head = c->msg->head;
    if (!method_allowed((enum http_method)p->method))
        return refuse(c, SL_OUTCOME_BAD_REQUEST, "method not supported");
    if (c->url.len == 0 || c->url.s[0] != '/')
        return refuse(c, SL_OUTCOME_BAD_REQUEST, "request target must be an absolute path");
    c->msg->target = strdup(c->url.s);
    if (c->msg->target == NULL)
        return refuse(c, SL_OUTCOME_INTERNAL_ERROR, "out of memory");
    if (!(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX &&
        p->content_length > fe->max_body_size)
        return refuse(c, SL_OUTCOME_BODY_TOO_LARGE, "request body exceeds max_body_size");
    if (expects_continue(&c->msg->headers) && p->http_major == 1 && p->http_minor >= 1)
        send_continue(c);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct sl_conn *c = p->data;

    if (evbuffer_get_length(c->msg->body) + n > c->fe->max_body_size)
        return refuse(c, SL_OUTCOME_BODY_TOO_LARGE, "request body exceeds max_body_size");
    if (evbuffer_add(c->msg->body, at, n) != 0)
        return refuse(c, SL_OUTCOME_INTERNAL_ERROR, "out of memory");
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct sl_conn *c = p->data;

    c->complete = true;
    c->keep_alive = http_should_keep_alive(p) != 0;
    c->http10 = p->http_major == 1 && p->http_minor == 0;
    /* Stop here: a pipelined request waits until this one is answered. */
    http_parser_pause(p, 1);
    return 0;
}

static void parser_settings_init(void)
{
    http_parser_settings_init(&parser_settings);
    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_url = on_url;
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;
}

/* --- responses ---------------------------------------------------------- */

static const char *status_reason(int status)
{
    const char *r;

    switch (status) {
    case 431:
        return "Request Header Fields Too Large";
    case 499:
        return "Client Closed Request";
    default:
        break;
    }
    r = http_status_str((enum http_status)status);
    return strcmp(r, "<unknown>") == 0 ? "Unknown" : r;
}

static bool status_has_body(int status)
{
    return !(status < 200 || status == 204 || status == 304);
}

/* The Date header value, formatted once per second. */
static const char *http_date(void)
{
    static char date[40];
    static time_t cached = -1;
    time_t now = time(NULL);
    struct tm tm;

    if (now != cached) {
        gmtime_r(&now, &tm);
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached = now;
    }
    return date;
}

/*
 * Response head assembled in one buffer, sent with the body in one sendmsg.
 * A head too large for it spills into `out` (the bufferevent's output),
 * which then carries the whole response.
 */
struct head {
    struct evbuffer *out;               /* set once something spilled */
    char buf[4096];
    size_t len;
    int rc;
};

static int head_flush(struct head *h, struct evbuffer *out)
{
    if (h->len > 0 && evbuffer_add(out, h->buf, h->len) != 0)
        h->rc = -1;
    h->len = 0;
    return h->rc;
}

static void head_put(struct head *h, struct evbuffer *out, const char *s, size_t n)
{
    if (h->len + n > sizeof(h->buf)) {
        h->out = out;
        head_flush(h, out);
    }
    if (n > sizeof(h->buf)) {
        if (evbuffer_add(out, s, n) != 0)
            h->rc = -1;
        return;
    }
    memcpy(h->buf + h->len, s, n);
    h->len += n;
}

static void head_field(struct head *h, struct evbuffer *out, const char *name, size_t name_len,
                       const char *value)
{
    head_put(h, out, name, name_len);
    head_put(h, out, ": ", 2);
    head_put(h, out, value, strlen(value));
    head_put(h, out, "\r\n", 2);
}

/* Status line and fields into h; returns 0, or -1 if the output could not grow. */
static int write_head(struct head *h, struct sl_conn *c, int status,
                      const struct evkeyvalq *headers, size_t body_len, bool keep_length,
                      bool head)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    const struct evkeyval *f;
    bool has_length = false, has_date = false;
    const char *reason = status_reason(status);
    char line[64];

    /* Statuses are three digits (the parsers guarantee it for relayed ones). */
    memcpy(line, "HTTP/1.1 000 ", 13);
    line[9] = (char)('0' + status / 100 % 10);
    line[10] = (char)('0' + status / 10 % 10);
    line[11] = (char)('0' + status % 10);
    head_put(h, out, line, 13);
    head_put(h, out, reason, strlen(reason));
    head_put(h, out, "\r\n", 2);
    if (headers != NULL) {
        TAILQ_FOREACH(f, headers, next) {
            size_t nl = strlen(f->key);

            if (nl == 14 && strcasecmp(f->key, "Content-Length") == 0) {
                if (!keep_length)
                    continue;
                has_length = true;
            } else if (nl == 4 && strcasecmp(f->key, "Date") == 0) {
                has_date = true;
            }
            head_field(h, out, f->key, nl, f->value);
        }
    }
    if (!has_date)
        head_field(h, out, "Date", 4, http_date());
    if (!has_length && status_has_body(status) && !(head && keep_length))
        head_field(h, out, "Content-Length", 14, sl_strbuf_u64(line + sizeof(line) - 1, body_len));
    if (c->close_after_write)
        head_field(h, out, "Connection", 10, "close");
    else if (c->http10)
        head_field(h, out, "Connection", 10, "keep-alive");
    head_put(h, out, "\r\n", 2);
    return h->rc;
}

static void conn_write_done(struct sl_conn *c);

void sl_conn_respond(struct sl_conn *c, int status, const struct evkeyvalq *headers,
                     struct evbuffer *body, bool keep_length, bool close)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t body_len = body != NULL ? evbuffer_get_length(body) : 0;
    bool head = c->head, queued = true;
    struct head h;
    int rc;

    /* Not `= {0}`: clearing the 4 KiB buffer cost more than writing the head. */
    h.out = NULL;
    h.len = 0;
    h.rc = 0;

    c->close_after_write = close || !c->keep_alive;
    c->owner = NULL;
    if (body != NULL && (head || !status_has_body(status))) {
        evbuffer_drain(body, body_len);
        body = NULL;
    }
    rc = write_head(&h, c, status, headers, body_len, keep_length, head);
    /*
     * Straight to the socket (wire.h); the write callback only runs for what
     * it refused. Finishing at once would re-enter the parser on pipelined
     * input, so with input waiting everything goes through the callback.
     */
    if (rc == 0 && h.out == NULL && evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
        rc = sl_wire_send(c->bev, h.buf, h.len, body, NULL, 0, &queued);
    else if (rc == 0)
        rc = head_flush(&h, out) | (body != NULL ? evbuffer_add_buffer(out, body) : 0);
    sl_http_msg_free(c->msg);
    c->msg = NULL;
    if (rc != 0) {
        conn_free(c);
        return;
    }
    c->state = CONN_WRITING;
    if (!queued)
        conn_write_done(c);
    else
        bufferevent_enable(c->bev, EV_WRITE);
}

/* --- connection life ---------------------------------------------------- */

static void conn_reset_parser(struct sl_conn *c)
{
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->complete = false;
    c->head = false;
    c->error = SL_OUTCOME_RELAYED;
    c->error_detail = NULL;
}

static void conn_set_reading(struct sl_conn *c)
{
    c->state = CONN_READING;
    /* Reading is normally still on (hang-ups are watched while serving):
     * enabling it again would cost an event_add per request. */
    if (!(bufferevent_get_enabled(c->bev) & EV_READ))
        bufferevent_enable(c->bev, EV_READ);
}

static void frontend_check_idle(struct sl_frontend *fe)
{
    if (fe->n_conns == 0 && fe->cb.idle != NULL)
        fe->cb.idle(fe->arg);
}

static void conn_free(struct sl_conn *c)
{
    struct sl_frontend *fe = c->fe;

    TAILQ_REMOVE(&fe->conns, c, link);
    fe->n_conns--;
    bufferevent_free(c->bev);
    sl_http_msg_free(c->msg);
    sl_strbuf_free(&c->url);
    sl_strbuf_free(&c->field);
    sl_strbuf_free(&c->value);
    free(c);
    if (fe->n_conns < fe->max_connections)
        sl_frontend_resume(fe, SL_PAUSE_CONNECTIONS);
    frontend_check_idle(fe);
}

/* Answer a request the frontend refused; the connection closes after it. */
static void conn_refuse(struct sl_conn *c, enum sl_outcome o, const char *detail)
{
    struct sl_frontend *fe = c->fe;

    /* The callback answers through sl_conn_respond(..., close = true). */
    c->state = CONN_SERVING;
    c->keep_alive = false;
    if (c->msg == NULL)
        c->msg = msg_new();
    fe->cb.refused(c, o, detail, fe->arg);
}

/* Hand a complete request to the owner; reading continues only to see hang-ups. */
static void conn_serve(struct sl_conn *c)
{
    struct sl_frontend *fe = c->fe;
    struct sl_http_msg *msg = c->msg;

    c->state = CONN_SERVING;
    c->msg = NULL;
    fe->cb.request(c, msg, fe->arg);
}

static enum sl_outcome parse_error_outcome(enum http_errno e)
{
    return e == HPE_HEADER_OVERFLOW ? SL_OUTCOME_HEADERS_TOO_LARGE : SL_OUTCOME_BAD_REQUEST;
}

/* Feed buffered input to the parser until one request is complete. */
static void conn_parse(struct sl_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);

    while (c->state == CONN_READING && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec vec[FRONTEND_PEEK_VECS];
        int n = evbuffer_peek(in, -1, NULL, vec, FRONTEND_PEEK_VECS);
        size_t used = 0;
        enum http_errno err = HPE_OK;

        if (n > FRONTEND_PEEK_VECS)
            n = FRONTEND_PEEK_VECS;
        for (int i = 0; i < n && err == HPE_OK && !c->complete; i++) {
            size_t k = http_parser_execute(&c->parser, &parser_settings, vec[i].iov_base,
                                           vec[i].iov_len);
            used += k;
            err = HTTP_PARSER_ERRNO(&c->parser);
        }
        evbuffer_drain(in, used);
        if (c->error != SL_OUTCOME_RELAYED) {
            conn_refuse(c, c->error, c->error_detail);
            return;
        }
        if (err != HPE_OK && err != HPE_PAUSED) {
            conn_refuse(c, parse_error_outcome(err), http_errno_description(err));
            return;
        }
        if (c->complete) {
            http_parser_pause(&c->parser, 0);
            conn_serve(c);
            return;
        }
    }
}

static void conn_on_read(struct bufferevent *bev, void *arg)
{
    struct sl_conn *c = arg;

    if (c->state == CONN_LINGERING)
        evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
    else if (c->state == CONN_READING)
        conn_parse(c);
}

/*
 * Closing right after the response would reset the connection if the client
 * is still sending (a refused body), and the reset can destroy the response
 * before the client reads it. Shut our side, then read and discard until the
 * client closes or a short timeout, like nginx's lingering close.
 */
static void conn_linger(struct sl_conn *c)
{
    struct timeval tv = {FRONTEND_LINGER_SEC, 0};

    if (shutdown(bufferevent_getfd(c->bev), SHUT_WR) != 0) {
        conn_free(c);
        return;
    }
    c->state = CONN_LINGERING;
    evbuffer_drain(bufferevent_get_input(c->bev), evbuffer_get_length(bufferevent_get_input(c->bev)));
    bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
    bufferevent_set_timeouts(c->bev, &tv, NULL);
    bufferevent_enable(c->bev, EV_READ);
    bufferevent_disable(c->bev, EV_WRITE);
}

/* The response is out: close, or read the next request on this connection. */
static void conn_write_done(struct sl_conn *c)
{
    /* Armed only for a response the socket could not take at once. */
    if (bufferevent_get_enabled(c->bev) & EV_WRITE)
        bufferevent_disable(c->bev, EV_WRITE);
    if (c->close_after_write) {
        conn_linger(c);
        return;
    }
    conn_reset_parser(c);
    conn_set_reading(c);
    conn_parse(c);
}

static void conn_on_write(struct bufferevent *bev, void *arg)
{
    struct sl_conn *c = arg;

    (void)bev;
    if (c->state == CONN_WRITING)
        conn_write_done(c);
}

static void conn_on_event(struct bufferevent *bev, short what, void *arg)
{
    struct sl_conn *c = arg;
    struct sl_frontend *fe = c->fe;

    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)))
        return;
    /*
     * Waiting for a parked request, or downloading its answer, is not
     * idleness: a read timeout then only re-arms reading (kept on to see
     * hang-ups); a stalled download is the write timeout's business. Timeouts are
     * set once per connection, as re-setting them costs event_add calls.
     */
    if ((c->state == CONN_SERVING || c->state == CONN_WRITING) &&
        what == (BEV_EVENT_TIMEOUT | BEV_EVENT_READING)) {
        bufferevent_enable(bev, EV_READ);
        return;
    }
    if (c->state == CONN_SERVING && c->owner != NULL)
        fe->cb.gone(c, c->owner, fe->arg);
    conn_free(c);
}

static void set_nodelay(evutil_socket_t fd)
{
    int one = 1;

    /* Failure only costs latency; nothing to undo. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void peer_string(const struct sockaddr *sa, char *buf, size_t size)
{
    const void *addr = sa->sa_family == AF_INET6
                           ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                           : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;

    if (inet_ntop(sa->sa_family, addr, buf, (socklen_t)size) == NULL)
        snprintf(buf, size, "unknown");
}

static void frontend_on_accept(struct evconnlistener *lev, evutil_socket_t fd,
                               struct sockaddr *sa, int socklen, void *arg)
{
    struct sl_frontend *fe = arg;
    struct sl_conn *c;

    (void)lev;
    (void)socklen;
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        evutil_closesocket(fd);
        return;
    }
    c->bev = bufferevent_socket_new(fe->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        evutil_closesocket(fd);
        free(c);
        return;
    }
    c->fe = fe;
    set_nodelay(fd);
    peer_string(sa, c->peer, sizeof(c->peer));
    TAILQ_INSERT_TAIL(&fe->conns, c, link);
    fe->n_conns++;
    bufferevent_setcb(c->bev, conn_on_read, conn_on_write, conn_on_event, c);
    /* Responses are written directly; EV_WRITE only when the socket is full. */
    bufferevent_disable(c->bev, EV_WRITE);
    bufferevent_set_timeouts(c->bev, &fe->client_timeout, &fe->client_timeout);
    /* Input is drained as it is parsed: only pipelined bytes can pile up. */
    bufferevent_setwatermark(c->bev, EV_READ, 0, FRONTEND_PIPELINE_MAX);
    conn_reset_parser(c);
    conn_set_reading(c);
    if (fe->n_conns >= fe->max_connections)
        sl_frontend_pause(fe, SL_PAUSE_CONNECTIONS);
}

static void frontend_on_accept_error(struct evconnlistener *lev, void *arg)
{
    struct sl_frontend *fe = arg;
    struct timeval tv = {0, FRONTEND_ACCEPT_RETRY_MS * 1000};
    int err = EVUTIL_SOCKET_ERROR();

    (void)lev;
    sl_log_warn("accept failed", "error=%d reason=\"%s\"", err,
                evutil_socket_error_to_string(err));
    /* EMFILE and friends would spin: stop accepting for a moment. */
    sl_frontend_pause(fe, SL_PAUSE_ERROR);
    evtimer_add(fe->retry_accept, &tv);
}

static void frontend_on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sl_frontend_resume(arg, SL_PAUSE_ERROR);
}

/* --- public API --------------------------------------------------------- */

struct sl_frontend *sl_frontend_new(struct event_base *base, const struct sl_config *cfg,
                                    const struct sl_frontend_callbacks *cb, void *arg)
{
    struct sl_frontend *fe = calloc(1, sizeof(*fe));

    if (fe == NULL)
        return NULL;
    fe->retry_accept = evtimer_new(base, frontend_on_retry, fe);
    if (fe->retry_accept == NULL) {
        free(fe);
        return NULL;
    }
    if (parser_settings.on_url == NULL)
        parser_settings_init();
    fe->base = base;
    fe->cb = *cb;
    fe->arg = arg;
    TAILQ_INIT(&fe->conns);
    sl_frontend_configure(fe, cfg);
    return fe;
}

void sl_frontend_configure(struct sl_frontend *fe, const struct sl_config *cfg)
{
    fe->cfg = cfg;
    fe->max_connections = cfg->max_connections;
    fe->max_body_size = cfg->max_body_size;
    fe->client_timeout = sl_clock_timeval(cfg->client_timeout_us);
    /* http-parser's cap is process-wide; there is one frontend. */
    http_parser_set_max_header_size((uint32_t)cfg->max_header_size);
    if (fe->n_conns < fe->max_connections)
        sl_frontend_resume(fe, SL_PAUSE_CONNECTIONS);
    else
        sl_frontend_pause(fe, SL_PAUSE_CONNECTIONS);
}

static int listener_port(struct evconnlistener *lev)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(evconnlistener_get_fd(lev), (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

int sl_frontend_listen(struct sl_frontend *fe)
{
    for (size_t i = 0; i < fe->cfg->n_listen; i++) {
        const char *addr = fe->cfg->listen[i];
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        struct evconnlistener *lev;

        if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss, &len) != 0) {
            sl_log_error("cannot parse listen address", "addr=%s", addr);
            return SL_ERR;
        }
        lev = evconnlistener_new_bind(fe->base, frontend_on_accept, fe,
                                      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC |
                                          LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT,
                                      FRONTEND_BACKLOG, (struct sockaddr *)&ss, len);
        if (lev == NULL) {
            int err = EVUTIL_SOCKET_ERROR();

            sl_log_error("cannot listen", "addr=%s reason=\"%s\"", addr,
                         evutil_socket_error_to_string(err));
            return SL_ERR;
        }
        evconnlistener_set_error_cb(lev, frontend_on_accept_error);
        if (fe->paused != 0)
            evconnlistener_disable(lev);
        fe->listeners[fe->n_listeners].lev = lev;
        fe->n_listeners++;
        sl_log_info("listening", "addr=%s port=%d", addr, listener_port(lev));
    }
    return SL_OK;
}

static void frontend_apply_pause(struct sl_frontend *fe)
{
    for (size_t i = 0; i < fe->n_listeners; i++) {
        if (fe->listeners[i].lev == NULL)
            continue;
        if (fe->paused != 0)
            evconnlistener_disable(fe->listeners[i].lev);
        else
            evconnlistener_enable(fe->listeners[i].lev);
    }
}

void sl_frontend_pause(struct sl_frontend *fe, enum sl_frontend_pause why)
{
    unsigned before = fe->paused;

    fe->paused |= (unsigned)why;
    if (before == 0 && fe->paused != 0) {
        sl_log_debug("accept paused", "reason=%u", fe->paused);
        frontend_apply_pause(fe);
    }
}

void sl_frontend_resume(struct sl_frontend *fe, enum sl_frontend_pause why)
{
    unsigned before = fe->paused;

    fe->paused &= ~(unsigned)why;
    if (before != 0 && fe->paused == 0) {
        sl_log_debug("accept resumed", NULL);
        frontend_apply_pause(fe);
    }
}

void sl_frontend_close_listeners(struct sl_frontend *fe)
{
    for (size_t i = 0; i < fe->n_listeners; i++) {
        if (fe->listeners[i].lev != NULL)
            evconnlistener_free(fe->listeners[i].lev);
        fe->listeners[i].lev = NULL;
    }
}

void sl_frontend_close_idle(struct sl_frontend *fe)
{
    struct sl_conn *c, *next;

    for (c = TAILQ_FIRST(&fe->conns); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        /* A half-read request is dropped like nginx does on shutdown. */
        if (c->state == CONN_READING || c->state == CONN_LINGERING)
            conn_free(c);
        else if (c->state == CONN_WRITING)
            c->close_after_write = true;
    }
}

size_t sl_frontend_connections(const struct sl_frontend *fe)
{
    return fe->n_conns;
}

void sl_frontend_free(struct sl_frontend *fe)
{
    if (fe == NULL)
        return;
    sl_frontend_close_listeners(fe);
    fe->cb.idle = NULL;
    while (!TAILQ_EMPTY(&fe->conns))
        conn_free(TAILQ_FIRST(&fe->conns));
    event_free(fe->retry_accept);
    free(fe);
}

void sl_conn_set_owner(struct sl_conn *c, void *owner)
{
    c->owner = owner;
}

const char *sl_conn_peer(const struct sl_conn *c)
{
    return c->peer;
}
