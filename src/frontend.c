/*
 * frontend.c - listeners and a small HTTP/1.1 server on bufferevents.
 *
 * A connection moves READING -> SERVING -> WRITING -> READING (keep-alive)
 * or is freed. While SERVING, the socket stays readable so that a hang-up is
 * seen at once; bytes of a pipelined next request simply wait in the input
 * buffer (reading stops if a client floods it).
 */
#include "frontend.h"

#include <arpa/inet.h>
#include <errno.h>
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
#include "http1.h"
#include "log.h"
#include "sluice.h"
#include "wire.h"

#define FRONTEND_BACKLOG 4096
#define FRONTEND_PIPELINE_MAX (64 * 1024)   /* buffered bytes of a next request */
#define FRONTEND_ACCEPT_RETRY_MS 100
#define FRONTEND_LINGER_SEC 2
#define FRONTEND_MAX_FIELDS 100           /* per request, like Apache's LimitRequestFields */
#define FRONTEND_AUTHORITY_MAX 272        /* "[host]:port" of an absolute-form target, NUL */

/* Which deadline a request being read is under (client_header/body_timeout). */
enum conn_phase {
    PHASE_NONE,
    PHASE_HEAD,
    PHASE_BODY,
};

enum conn_state {
    CONN_READING,
    CONN_SERVING,
    CONN_WRITING,
    CONN_STREAMING,   /* an answer's head went, its body follows as it arrives */
    CONN_LINGERING,   /* response sent, write side shut, draining input before close */
};

/*
 * The socket is read with a plain event into `in` (sl_wire_read: no ioctl
 * per read); the bufferevent only writes what a direct send left over, and
 * reports write errors and timeouts.
 */
struct sl_conn {
    TAILQ_ENTRY(sl_conn) link;
    struct sl_frontend *fe;
    struct bufferevent *bev;            /* owns the socket */
    struct event *rd;                   /* EV_READ | EV_PERSIST; in this allocation */
    struct event *phase_timer;          /* the head's or body's deadline; in this allocation */
    enum conn_phase phase;
    struct evbuffer *in;                /* what was read and not parsed yet */
    int64_t linger_until;               /* LINGERING: close then, whatever still arrives */
    enum conn_state state;
    struct sl_http_msg *msg;            /* head parsed, body being read; owned */
    size_t scanned;                     /* input bytes searched for the head's end */
    uint64_t body_left;                 /* Content-Length bytes still to read */
    bool chunked;                       /* ...or the body is chunked */
    bool body_too_large;                /* the chunked body passed max_body_size */
    struct sl_http1_chunked chunk;
    bool keep_alive;                    /* of the request being served */
    bool http10;
    bool head;                          /* the request being served is HEAD */
    bool close_after_write;
    bool peer_eof;                      /* the client sent its FIN: it sends nothing more */
    bool stream_body;                   /* STREAMING: the answer has a body to send */
    bool stream_chunked;                /* ...framed in chunks by us */
    bool stream_full;                   /* ...and the owner waits for room */
    bool reset_after_write;             /* a cut close-delimited body: end with a reset */
    struct sl_sink sink;                /* this connection as a reply sink */
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
    uint64_t accepted;                  /* connections, since the start */
    uint64_t write_errors;              /* responses not delivered, since the start */
    unsigned max_connections;
    struct timeval client_timeout;
    const struct timeval *read_timeout; /* client_timeout as a common timeout (O(1) re-arm) */
    struct timeval header_timeout, body_timeout;
    const struct timeval *phase_timeout[PHASE_BODY + 1]; /* as common timeouts, by phase */
    size_t max_body_size;
    size_t max_header_size;
    size_t stream_buffer;               /* bytes of a streamed answer held for a client */
};

static const struct sl_sink_ops conn_sink_ops;
static void conn_free(struct sl_conn *c);
static void conn_parse(struct sl_conn *c);
static void conn_refuse(struct sl_conn *c, enum sl_outcome o, const char *detail);

/* --- small helpers ------------------------------------------------------ */

static bool expects_continue(const struct evkeyvalq *h)
{
    const char *e = evhttp_find_header(h, "Expect");

    return e != NULL && strcasecmp(e, "100-continue") == 0;
}

/* The client waits for this before sending its body. */
static void send_continue(struct sl_conn *c)
{
    static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
    bool queued = false;

    if (sl_wire_send(c->bev, line, sizeof(line) - 1, NULL, NULL, 0, &queued) == 0 && queued)
        bufferevent_enable(c->bev, EV_WRITE);
}

/* Copy the parsed head into a new message (h points into the input buffer). */
/* RFC 9112 3.2: one Host in HTTP/1.1, never two. NULL when it holds, else why not. */
static const char *host_problem(const struct sl_http1_head *h)
{
    unsigned hosts = 0;

    for (size_t i = 0; i < h->n_fields; i++)
        hosts += h->fields[i].name_len == 4 && strncasecmp(h->fields[i].name, "Host", 4) == 0;
    if (hosts > 1)
        return "repeated Host field";
    return hosts == 0 && h->minor >= 1 ? "missing Host field (required in HTTP/1.1)" : NULL;
}

/*
 * Absolute-form (RFC 9112 3.2.2, what a client sends to a proxy): the
 * path and query become the request's target ("http://h" and "http://h?q"
 * get their "/"), and the authority is its Host from now on: it replaces
 * the Host field (3.2.2: the server MUST ignore the one received), so host
 * routing, preserve_host and redirects see it. It never names an upstream:
 * the routes do. The message, or NULL when out of memory.
 */
static struct sl_http_msg *msg_new_origin(const char *rest, size_t n)
{
    struct sl_http_msg *msg;
    char *t;

    if (n > 0 && rest[0] == '/')
        return sl_http_msg_new(rest, n);
    if ((t = malloc(n + 1)) == NULL)
        return NULL;
    t[0] = '/';
    memcpy(t + 1, rest, n);
    msg = sl_http_msg_new(t, n + 1);
    free(t);
    return msg;
}

/* Replace the Host field (at most one: host_problem) with `authority`. */
static int replace_host(struct evkeyvalq *q, const char *authority, size_t n)
{
    char value[FRONTEND_AUTHORITY_MAX];
    struct evkeyval *e;

    if (n >= sizeof(value))
        return SL_ERR;
    memcpy(value, authority, n);
    value[n] = '\0';
    TAILQ_FOREACH(e, q, next) {
        if (strcasecmp(e->key, "Host") == 0) {
            sl_headers_remove(q, e);
            break;
        }
    }
    return sl_headers_add(q, "Host", value);
}

static enum sl_outcome msg_from_head(struct sl_conn *c, const struct sl_http1_head *h,
                                     const char **detail)
{
    const char *method = sl_http_msg_method(h->method, h->method_len);
    const char *target = h->target, *authority = NULL;
    size_t len = h->target_len, authority_len = 0;
    int rc;
    bool absolute = target[0] != '/' && sl_http1_absolute_form(h->target, h->target_len,
                                                               &authority, &authority_len,
                                                               &target, &len) == 0;

    *detail = "out of memory";
    if ((c->msg = msg_new_origin(target, len)) == NULL)
        return SL_OUTCOME_INTERNAL_ERROR;
    c->msg->header_bytes = h->head_len;
    c->msg->method = method != NULL ? method : "-";
    c->msg->head = c->head = method != NULL && strcmp(method, "HEAD") == 0;
    if (sl_headers_add_parsed(&c->msg->headers, h->fields, h->n_fields) != SL_OK)
        return SL_OUTCOME_INTERNAL_ERROR;
    if (method == NULL) {
        *detail = "method not supported";
        return SL_OUTCOME_BAD_REQUEST;
    }
    if (!absolute && target[0] != '/') {
        *detail = "request target must be an absolute path or an http:// or https:// URI";
        return SL_OUTCOME_BAD_REQUEST;
    }
    if ((*detail = host_problem(h)) != NULL)
        return SL_OUTCOME_BAD_REQUEST;
    if (absolute && (rc = replace_host(&c->msg->headers, authority, authority_len)) != SL_OK) {
        if (rc == SL_ENOMEM)
            return SL_OUTCOME_INTERNAL_ERROR;
        *detail = "host name too long in the request target";
        return SL_OUTCOME_BAD_REQUEST;
    }
    if (h->content_length > 0 && (uint64_t)h->content_length > c->fe->max_body_size) {
        *detail = "request body exceeds max_body_size";
        return SL_OUTCOME_BODY_TOO_LARGE;
    }
    return SL_OUTCOME_RELAYED;
}

/*
 * Parse the head once its end may be in the buffer. Returns 1 while it is
 * incomplete, 0 once the message exists (its head drained from `in`), -1
 * after refusing it.
 */
static int read_head(struct sl_conn *c, struct evbuffer *in)
{
    struct sl_http1_field fields[FRONTEND_MAX_FIELDS];
    struct sl_http1_head h = {.fields = fields, .max_fields = FRONTEND_MAX_FIELDS};
    size_t max = c->fe->max_header_size, n;
    const char *detail;
    char *buf;
    int rc = sl_wire_head(in, max, &c->scanned, &buf, &n);

    if (rc < 0) {
        conn_refuse(c, SL_OUTCOME_INTERNAL_ERROR, "out of memory");
        return -1;
    }
    if (rc > 0)
        return 1;
    rc = sl_http1_parse_request(buf, n, max, &h);
    if (rc == SL_HTTP1_PARTIAL)
        return 1;
    if (rc != SL_HTTP1_DONE) {
        conn_refuse(c, rc == SL_HTTP1_TOO_LARGE ? SL_OUTCOME_HEADERS_TOO_LARGE
                                                : SL_OUTCOME_BAD_REQUEST, h.error);
        return -1;
    }
    c->keep_alive = sl_http1_keep_alive(&h);
    c->http10 = h.minor == 0;
    enum sl_outcome o = msg_from_head(c, &h, &detail);
    evbuffer_drain(in, h.head_len);
    c->scanned = 0;
    if (o != SL_OUTCOME_RELAYED) {
        conn_refuse(c, o, detail);
        return -1;
    }
    c->chunked = h.chunked;
    c->body_too_large = false;
    c->body_left = h.content_length > 0 ? (uint64_t)h.content_length : 0;
    if (c->chunked)
        sl_http1_chunked_init(&c->chunk);
    /* Most requests have no body: no buffer for them. */
    if ((c->chunked || c->body_left > 0) && (c->msg->body = evbuffer_new()) == NULL) {
        conn_refuse(c, SL_OUTCOME_INTERNAL_ERROR, "out of memory");
        return -1;
    }
    if (expects_continue(&c->msg->headers) && !c->http10)
        send_continue(c);
    return 0;
}

static int append_chunk(void *arg, const char *data, size_t len)
{
    struct sl_conn *c = arg;

    if (evbuffer_get_length(c->msg->body) + len > c->fe->max_body_size) {
        c->body_too_large = true;
        return -1;
    }
    return evbuffer_add(c->msg->body, data, len);
}

/* Decode what arrived of a chunked body. Returns as read_head(). */
static int read_chunked(struct sl_conn *c, struct evbuffer *in)
{
    if (sl_wire_dechunk(in, &c->chunk, append_chunk, c) != 0) {
        if (c->body_too_large)
            conn_refuse(c, SL_OUTCOME_BODY_TOO_LARGE, "request body exceeds max_body_size");
        else
            conn_refuse(c, SL_OUTCOME_BAD_REQUEST, c->chunk.error);
        return -1;
    }
    return c->chunk.done ? 0 : 1;
}

/* Move what arrived of the body into the message. Returns as read_head(). */
static int read_body(struct sl_conn *c, struct evbuffer *in)
{
    size_t n = evbuffer_get_length(in);

    if (c->chunked)
        return read_chunked(c, in);
    if (n > c->body_left)
        n = (size_t)c->body_left;
    /* Moves whole chains: no copy for most of a large body. */
    if (n > 0 && evbuffer_remove_buffer(in, c->msg->body, n) != (int)n) {
        conn_refuse(c, SL_OUTCOME_INTERNAL_ERROR, "out of memory");
        return -1;
    }
    c->body_left -= n;
    return c->body_left > 0 ? 1 : 0;
}

/* --- responses ---------------------------------------------------------- */

/*
 * The standard phrase of every code in IANA's HTTP Status Code Registry
 * (RFC 9110 section 15 and the RFCs it lists), and nginx's 499. Relayed
 * answers carry the upstream's own phrase; this is for sluice's answers and
 * for upstreams that sent none.
 */
static const char *status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 102: return "Processing";
    case 103: return "Early Hints";
    case 104: return "Upload Resumption Supported";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 207: return "Multi-Status";
    case 208: return "Already Reported";
    case 226: return "IM Used";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 305: return "Use Proxy";
    case 306: return "Unused";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 418: return "I'm a Teapot";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 423: return "Locked";
    case 424: return "Failed Dependency";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 506: return "Variant Also Negotiates";
    case 507: return "Insufficient Storage";
    case 508: return "Loop Detected";
    case 510: return "Not Extended";
    case 511: return "Network Authentication Required";
    default: return "Unknown";
    }
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
    size_t value_len = strlen(value), need = name_len + value_len + 4;

    if (h->len + need <= sizeof(h->buf)) {
        char *p = h->buf + h->len;

        memcpy(p, name, name_len);
        p += name_len;
        memcpy(p, ": ", 2);
        memcpy(p + 2, value, value_len);
        memcpy(p + 2 + value_len, "\r\n", 2);
        h->len += need;
        return;
    }
    head_put(h, out, name, name_len);
    head_put(h, out, ": ", 2);
    head_put(h, out, value, strlen(value));
    head_put(h, out, "\r\n", 2);
}

/* How the body after a head is delimited. */
enum framing {
    FRAME_LENGTH,                       /* Content-Length: the body's, or the fields' */
    FRAME_CHUNKED,                      /* Transfer-Encoding: chunked, written by us */
    FRAME_CLOSE,                        /* the body ends when the connection does */
};

/* What write_head() learns from the fields as they are emitted. */
struct emit {
    struct head *h;
    struct evbuffer *out;
    bool keep_length;
    bool has_length, has_date;
};

static int emit_field(const char *name, const char *value, void *arg)
{
    struct emit *e = arg;
    size_t nl = strlen(name);

    if (nl == 14 && strcasecmp(name, "Content-Length") == 0) {
        if (!e->keep_length)
            return SL_OK;
        e->has_length = true;
    } else if (nl == 4 && strcasecmp(name, "Date") == 0) {
        e->has_date = true;
    }
    head_field(e->h, e->out, name, nl, value);
    return SL_OK;
}

/* Status line and fields into h; returns 0, or -1 on an error. */
static int write_head(struct head *h, struct sl_conn *c, int status, const char *reason,
                      sl_conn_fields_fn fields, void *fields_arg, size_t body_len,
                      bool keep_length, bool head, enum framing framing)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    struct emit e = {.h = h, .out = out, .keep_length = keep_length};
    char line[64];

    if (reason == NULL || reason[0] == '\0')
        reason = status_reason(status);

    /* Statuses are three digits (the parsers guarantee it for relayed ones). */
    memcpy(line, "HTTP/1.1 000 ", 13);
    line[9] = (char)('0' + status / 100 % 10);
    line[10] = (char)('0' + status / 10 % 10);
    line[11] = (char)('0' + status % 10);
    head_put(h, out, line, 13);
    head_put(h, out, reason, strlen(reason));
    head_put(h, out, "\r\n", 2);
    if (fields != NULL && fields(emit_field, &e, fields_arg) != SL_OK)
        return -1;
    if (!e.has_date)
        head_field(h, out, "Date", 4, http_date());
    if (framing == FRAME_CHUNKED)
        head_field(h, out, "Transfer-Encoding", 17, "chunked");
    else if (framing == FRAME_LENGTH && !e.has_length && status_has_body(status) &&
             !(head && keep_length))
        head_field(h, out, "Content-Length", 14, sl_http1_u64(line + sizeof(line) - 1, body_len));
    if (c->close_after_write)
        head_field(h, out, "Connection", 10, "close");
    else if (c->http10)
        head_field(h, out, "Connection", 10, "keep-alive");
    head_put(h, out, "\r\n", 2);
    return h->rc;
}

static void conn_write_done(struct sl_conn *c);

/*
 * Does the connection close after this answer? When asked to, when the
 * request was not keep-alive, or after the client's FIN with nothing
 * pipelined before it: no more requests can come.
 */
static bool conn_last_answer(const struct sl_conn *c, bool close)
{
    return close || !c->keep_alive || (c->peer_eof && evbuffer_get_length(c->in) == 0);
}

void sl_conn_respond(struct sl_conn *c, int status, const char *reason,
                     sl_conn_fields_fn fields, void *fields_arg, struct evbuffer *body,
                     bool keep_length, bool close)
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

    c->close_after_write = conn_last_answer(c, close);
    c->owner = NULL;
    if (body != NULL && (head || !status_has_body(status))) {
        evbuffer_drain(body, body_len);
        body = NULL;
    }
    rc = write_head(&h, c, status, reason, fields, fields_arg, body_len, keep_length, head,
                    FRAME_LENGTH);
    /*
     * Straight to the socket (wire.h); the write callback only runs for what
     * it refused. Finishing at once would re-enter the parser on pipelined
     * input, so with input waiting everything goes through the callback.
     */
    if (rc == 0 && h.out == NULL && evbuffer_get_length(c->in) == 0)
        rc = sl_wire_send(c->bev, h.buf, h.len, body, NULL, 0, &queued);
    else if (rc == 0)
        rc = head_flush(&h, out) | (body != NULL ? evbuffer_add_buffer(out, body) : 0);
    sl_http_msg_free(c->msg);
    c->msg = NULL;
    if (rc != 0) {
        c->fe->write_errors++;
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
    c->scanned = 0;
    c->head = false;
}

/*
 * Idle from now: the read timeout starts over (event_add on the pending
 * persistent event re-arms it; a common timeout makes that O(1)). Left
 * running, a timeout cycle begun while the last request was served could
 * close the connection at once, just as the client reuses it. Returns 0, or
 * -1 if the socket cannot be watched (the caller drops the connection).
 */
static int conn_set_reading(struct sl_conn *c)
{
    c->state = CONN_READING;
    return event_add(c->rd, c->fe->read_timeout);
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
    event_del(c->rd);
    event_del(c->phase_timer);
    bufferevent_free(c->bev);
    evbuffer_free(c->in);
    sl_http_msg_free(c->msg);
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
        c->msg = sl_http_msg_new("", 0);
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

/*
 * A request that did not arrive in one read is under a deadline for its
 * whole head, then for its whole body: re-arming the idle timeout on every
 * read let a client trickling a byte at a time hold its connection for
 * ever. Most requests arrive whole, and never arm this timer.
 */
static void conn_phase(struct sl_conn *c, enum conn_phase p)
{
    if (c->phase == p)
        return;
    c->phase = p;
    if (p == PHASE_NONE)
        event_del(c->phase_timer);
    else if (event_add(c->phase_timer, c->fe->phase_timeout[p]) != 0)
        c->phase = PHASE_NONE; /* only bad input fails; the idle timeout still holds */
}

static void conn_on_phase_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct sl_conn *c = arg;
    enum conn_phase p = c->phase;

    (void)fd;
    (void)what;
    c->phase = PHASE_NONE;
    if (c->state != CONN_READING || p == PHASE_NONE)
        return;
    conn_refuse(c, SL_OUTCOME_REQUEST_TIMEOUT,
                p == PHASE_HEAD ? "the request head did not arrive within client_header_timeout"
                                : "the request body did not arrive within client_body_timeout");
}

/*
 * Read one request: its head, then its body; serve it once complete. After
 * the client's FIN, one that is not complete never will be: the connection
 * ends.
 */
static void conn_parse(struct sl_conn *c)
{
    int rc;

    if (c->state != CONN_READING)
        return;
    if (c->msg == NULL && (rc = read_head(c, c->in)) != 0) {
        if (rc > 0 && c->peer_eof)
            conn_free(c);
        else if (rc > 0 && evbuffer_get_length(c->in) > 0)
            conn_phase(c, PHASE_HEAD);
        return;
    }
    if ((rc = read_body(c, c->in)) != 0) {
        if (rc > 0 && c->peer_eof)
            conn_free(c);
        else if (rc > 0)
            conn_phase(c, PHASE_BODY);
        return;
    }
    conn_phase(c, PHASE_NONE);
    conn_serve(c);
}

static void conn_on_read(struct sl_conn *c)
{
    if (c->state == CONN_LINGERING)
        evbuffer_drain(c->in, evbuffer_get_length(c->in)); /* conn_on_readable ends it in time */
    else if (c->state == CONN_READING)
        conn_parse(c);
    else if (evbuffer_get_length(c->in) >= FRONTEND_PIPELINE_MAX)
        event_del(c->rd); /* a pipelining flood; conn_set_reading() resumes */
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
    c->linger_until = sl_clock_now() + FRONTEND_LINGER_SEC * SL_USEC_PER_SEC;
    evbuffer_drain(c->in, evbuffer_get_length(c->in));
    if (event_add(c->rd, &tv) != 0) { /* re-armed with the linger timeout */
        conn_free(c);
        return;
    }
    bufferevent_disable(c->bev, EV_WRITE);
}

/* The response is out: close, or read the next request on this connection. */
static void conn_write_done(struct sl_conn *c)
{
    /* Armed only for a response the socket could not take at once. */
    if (bufferevent_get_enabled(c->bev) & EV_WRITE)
        bufferevent_disable(c->bev, EV_WRITE);
    if (c->reset_after_write) {
        /* A body cut short that only a close delimits: a reset tells the client. */
        struct linger lg = {1, 0};

        (void)setsockopt(bufferevent_getfd(c->bev), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        conn_free(c);
        return;
    }
    if (c->close_after_write) {
        /* After the client's FIN there is nothing left to linger for. */
        if (c->peer_eof)
            conn_free(c);
        else
            conn_linger(c);
        return;
    }
    conn_reset_parser(c);
    if (c->peer_eof) {
        /* Requests pipelined before the FIN; the socket has nothing more. */
        c->state = CONN_READING;
        conn_parse(c);
        return;
    }
    if (conn_set_reading(c) != 0) {
        conn_free(c);
        return;
    }
    conn_parse(c);
}

/*
 * While streaming, the low watermark (half the stream buffer) calls this:
 * an owner waiting for room gets it.
 */
static void conn_on_write(struct bufferevent *bev, void *arg)
{
    struct sl_conn *c = arg;
    struct sl_sink_owner *owner = c->owner;

    if (c->state == CONN_WRITING) {
        conn_write_done(c);
    } else if (c->state == CONN_STREAMING && c->stream_full &&
               evbuffer_get_length(bufferevent_get_output(bev)) < c->fe->stream_buffer) {
        c->stream_full = false;
        if (owner != NULL && owner->drained != NULL)
            owner->drained(owner);
    }
}

/* The client hung up, the socket failed, or a timeout passed: the connection ends. */
static void conn_end(struct sl_conn *c)
{
    struct sl_frontend *fe = c->fe;

    if ((c->state == CONN_SERVING || c->state == CONN_STREAMING) && c->owner != NULL)
        fe->cb.gone(c, c->owner, fe->arg);
    conn_free(c);
}

/* Write errors and the write timeout (a stalled download). */
static void conn_on_event(struct bufferevent *bev, short what, void *arg)
{
    struct sl_conn *c = arg;

    (void)bev;
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)))
        return;
    if (c->state == CONN_WRITING || c->state == CONN_STREAMING)
        c->fe->write_errors++;
    conn_end(c);
}

/*
 * The client finished sending (a FIN). Before a request is handed over that
 * is a hang-up. While one is served it may be a half-close (the client
 * still reads): its owner decides whether to answer. An answer being
 * written or streamed is finished (a client that really left makes the
 * next write fail). Reading stops: nothing more can come.
 */
static void conn_on_eof(struct sl_conn *c)
{
    struct sl_frontend *fe = c->fe;

    if (c->state != CONN_WRITING && c->state != CONN_STREAMING &&
        (c->state != CONN_SERVING || c->owner == NULL || fe->cb.eof == NULL)) {
        conn_end(c);
        return;
    }
    c->peer_eof = true;
    event_del(c->rd);
    if (c->state == CONN_SERVING && !fe->cb.eof(c, c->owner, fe->arg))
        conn_free(c);
}

static void conn_on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct sl_conn *c = arg;
    long n;

    /*
     * Waiting for a parked request, or downloading its answer, is not
     * idleness: the read timeout then passes unheeded (the persistent event
     * stays, to see hang-ups); a stalled download is the write timeout's.
     */
    if (what & EV_TIMEOUT) {
        if (c->state != CONN_SERVING && c->state != CONN_WRITING &&
            c->state != CONN_STREAMING)
            conn_end(c);
        return;
    }
    n = sl_wire_read(fd, c->in);
    /* Every read re-arms the timeout: a client dribbling bytes must not
     * keep a lingering close alive past its deadline. */
    if (n > 0 && c->state == CONN_LINGERING && sl_clock_now() >= c->linger_until)
        conn_end(c);
    else if (n > 0)
        conn_on_read(c);
    else if (n == 0)
        conn_on_eof(c);
    else if (errno != EAGAIN && errno != EWOULDBLOCK)
        conn_end(c);
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
    /* Both events live in the connection's allocation. */
    c = calloc(1, sizeof(*c) + 2 * event_get_struct_event_size());
    if (c == NULL) {
        evutil_closesocket(fd);
        return;
    }
    c->rd = (struct event *)(void *)(c + 1);
    c->phase_timer = (struct event *)(void *)((char *)(c + 1) + event_get_struct_event_size());
    c->sink.ops = &conn_sink_ops;
    c->in = evbuffer_new();
    c->bev = c->in != NULL ? bufferevent_socket_new(fe->base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (c->bev == NULL ||
        event_assign(c->rd, fe->base, fd, EV_READ | EV_PERSIST, conn_on_readable, c) != 0 ||
        event_assign(c->phase_timer, fe->base, -1, 0, conn_on_phase_timeout, c) != 0) {
        if (c->bev != NULL)
            bufferevent_free(c->bev);
        else
            evutil_closesocket(fd);
        if (c->in != NULL)
            evbuffer_free(c->in);
        free(c);
        return;
    }
    c->fe = fe;
    set_nodelay(fd);
    peer_string(sa, c->peer, sizeof(c->peer));
    TAILQ_INSERT_TAIL(&fe->conns, c, link);
    fe->n_conns++;
    fe->accepted++;
    bufferevent_setcb(c->bev, NULL, conn_on_write, conn_on_event, c);
    /* Responses are written directly; EV_WRITE only when the socket is full. */
    bufferevent_disable(c->bev, EV_WRITE | EV_READ);
    bufferevent_set_timeouts(c->bev, NULL, &fe->client_timeout);
    /* Input is drained as it is parsed: only pipelined bytes can pile up,
     * and conn_on_read() caps those. */
    conn_reset_parser(c);
    if (conn_set_reading(c) != 0) {
        conn_free(c);
        return;
    }
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
    fe->base = base;
    fe->cb = *cb;
    fe->arg = arg;
    TAILQ_INIT(&fe->conns);
    sl_frontend_configure(fe, cfg);
    return fe;
}

/* `tv` as a common timeout (O(1) to re-arm), or itself if libevent has no more. */
static const struct timeval *common_timeout(struct event_base *base, const struct timeval *tv)
{
    const struct timeval *common = event_base_init_common_timeout(base, tv);

    return common != NULL ? common : tv;
}

static void apply_connection_cap(struct sl_frontend *fe)
{
    if (fe->n_conns < fe->max_connections)
        sl_frontend_resume(fe, SL_PAUSE_CONNECTIONS);
    else
        sl_frontend_pause(fe, SL_PAUSE_CONNECTIONS);
}

void sl_frontend_cap_connections(struct sl_frontend *fe, unsigned cap)
{
    if (cap < fe->max_connections) {
        fe->max_connections = cap;
        apply_connection_cap(fe);
    }
}

void sl_frontend_configure(struct sl_frontend *fe, const struct sl_config *cfg)
{
    fe->cfg = cfg;
    fe->max_connections = cfg->max_connections;
    fe->max_body_size = cfg->max_body_size;
    fe->client_timeout = sl_clock_timeval(cfg->client_timeout_us);
    /* A common timeout: re-arming it after every read is O(1), not a heap update. */
    fe->read_timeout = common_timeout(fe->base, &fe->client_timeout);
    fe->max_header_size = cfg->max_header_size;
    fe->stream_buffer = cfg->stream_buffer;
    fe->header_timeout = sl_clock_timeval(cfg->client_header_timeout_us);
    fe->body_timeout = sl_clock_timeval(cfg->client_body_timeout_us);
    fe->phase_timeout[PHASE_HEAD] = common_timeout(fe->base, &fe->header_timeout);
    fe->phase_timeout[PHASE_BODY] = common_timeout(fe->base, &fe->body_timeout);
    apply_connection_cap(fe);
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

uint64_t sl_frontend_accepted(const struct sl_frontend *fe)
{
    return fe->accepted;
}

uint64_t sl_frontend_write_errors(const struct sl_frontend *fe)
{
    return fe->write_errors;
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

/* --- the connection as a reply sink ------------------------------------- */

static struct sl_conn *conn_of_sink(struct sl_sink *s)
{
    return (struct sl_conn *)(void *)((char *)s - offsetof(struct sl_conn, sink));
}

static void sink_adopt(struct sl_sink *s, struct sl_sink_owner *owner)
{
    conn_of_sink(s)->owner = owner;
}

static void sink_respond(struct sl_sink *s, int status, const char *reason,
                         sl_sink_fields_fn fields, void *fields_arg, struct evbuffer *body,
                         bool keep_length, bool close)
{
    sl_conn_respond(conn_of_sink(s), status, reason, fields, fields_arg, body, keep_length,
                    close);
}

/* Fail the connection from the loop: its owner hears `gone` there, not inside its call. */
static void conn_fail_later(struct sl_conn *c)
{
    /* conn_on_event() counts it in write_errors (the connection is STREAMING). */
    bufferevent_trigger_event(c->bev, BEV_EVENT_ERROR, BEV_TRIG_DEFER_CALLBACKS);
}

/*
 * A streamed answer's head. Its body is framed by the upstream's length
 * when it had one, else in chunks (HTTP/1.1) or by the close (HTTP/1.0).
 * The low watermark wakes conn_on_write() once half the buffer is out.
 */
static bool sink_begin(struct sl_sink *s, int status, const char *reason,
                       sl_sink_fields_fn fields, void *fields_arg, int64_t length)
{
    struct sl_conn *c = conn_of_sink(s);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    bool body = !c->head && status_has_body(status);
    enum framing framing = !body || length >= 0 ? FRAME_LENGTH
                           : c->http10         ? FRAME_CLOSE
                                               : FRAME_CHUNKED;
    struct head h = {.out = NULL, .len = 0, .rc = 0};
    int rc;

    c->close_after_write = conn_last_answer(c, framing == FRAME_CLOSE);
    rc = write_head(&h, c, status, reason, fields, fields_arg, length >= 0 ? (size_t)length : 0,
                    length >= 0, c->head, framing);
    rc |= head_flush(&h, out);
    sl_http_msg_free(c->msg);
    c->msg = NULL;
    c->state = CONN_STREAMING;
    c->stream_body = body;
    c->stream_chunked = framing == FRAME_CHUNKED;
    c->stream_full = false;
    bufferevent_setwatermark(c->bev, EV_WRITE, c->fe->stream_buffer / 2, 0);
    /* The bufferevent writes what waits in pieces this large (default 16k). */
    (void)bufferevent_set_max_single_write(c->bev, c->fe->stream_buffer);
    if (rc != 0 || bufferevent_enable(c->bev, EV_WRITE) != 0) {
        conn_fail_later(c);
        return false;
    }
    return true;
}

/*
 * Body bytes, framed as a chunk when we chunk. Straight to the socket when
 * nothing waits before them (wire.h: no loop turn per piece), the rest to
 * the output buffer for the bufferevent.
 */
static bool sink_write(struct sl_sink *s, struct evbuffer *data)
{
    static const char crlf[] = "\r\n";
    struct sl_conn *c = conn_of_sink(s);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t n = evbuffer_get_length(data);
    char line[24] = "";
    int len = 0, rc;
    bool queued = true;

    if (c->state != CONN_STREAMING || !c->stream_body || n == 0) {
        evbuffer_drain(data, n);
        return true;
    }
    if (c->stream_chunked) {
        len = snprintf(line, sizeof(line), "%zx\r\n", n);
        if (evbuffer_add(data, crlf, 2) != 0)
            len = -1;
    }
    rc = len < 0 ? -1 : sl_wire_send(c->bev, line, (size_t)len, data, NULL, 0, &queued);
    if (rc == 0 && queued)
        rc = bufferevent_enable(c->bev, EV_WRITE);
    if (rc != 0) {
        evbuffer_drain(data, evbuffer_get_length(data));
        conn_fail_later(c);
        return false;
    }
    if (evbuffer_get_length(out) < c->fe->stream_buffer)
        return true;
    c->stream_full = true;
    return false;
}

/*
 * The streamed answer ends: the terminator when complete, else a close the
 * client can tell from a complete answer (no terminator, a short body; a
 * reset where only the close delimits). The write callback finishes it.
 */
static void sink_end(struct sl_sink *s, bool complete)
{
    struct sl_conn *c = conn_of_sink(s);
    struct evbuffer *out = bufferevent_get_output(c->bev);

    if (c->state != CONN_STREAMING)
        return;
    c->owner = NULL;
    c->stream_full = false;
    if (complete && c->stream_chunked && evbuffer_add(out, "0\r\n\r\n", 5) != 0)
        complete = false;
    if (!complete) {
        c->close_after_write = true;
        c->reset_after_write = c->stream_body && !c->stream_chunked && c->http10;
    }
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    c->state = CONN_WRITING;
    if (evbuffer_get_length(out) > 0)
        bufferevent_enable(c->bev, EV_WRITE);
    else
        bufferevent_trigger(c->bev, EV_WRITE, BEV_TRIG_DEFER_CALLBACKS);
}

static const struct sl_sink_ops conn_sink_ops = {
    .adopt = sink_adopt,
    .respond = sink_respond,
    .begin = sink_begin,
    .write = sink_write,
    .end = sink_end,
};

struct sl_sink *sl_conn_sink(struct sl_conn *c)
{
    return &c->sink;
}

const char *sl_conn_peer(const struct sl_conn *c)
{
    return c->peer;
}
