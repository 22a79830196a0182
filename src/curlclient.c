/*
 * curlclient.c - upstream calls through one libcurl multi handle on the
 * event loop: https://, and http:// where the native client does not take
 * a URL (or is switched off for a comparison).
 *
 * The hiperfifo pattern: curl tells us which sockets to watch (socket
 * callback, one libevent event per socket stored with curl_multi_assign) and
 * when to wake it up (timer callback, one evtimer). Our event callbacks call
 * curl_multi_socket_action and then drain curl_multi_info_read, which is the
 * only place completions are reported from: never from inside a curl
 * callback, so a done callback may start or cancel other calls.
 */
#include "curlclient.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

/* Plain declarations: the calls go through `lib`, filled by dlsym. */
#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>
#include <dlfcn.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "clock.h"
#include "config.h"
#include "http1.h"
#include "log.h"
#include "sluice.h"

static const struct sl_backend_ops curlclient_ops;

/*
 * libcurl is loaded when the first client is made, not linked: linking it
 * maps and relocates libcurl and its dependencies (GnuTLS, Kerberos, LDAP,
 * SSH...) in every sluice, 5.5 MiB of RSS before a request, and
 * curl_global_init adds 2.3 MiB (measured with a ten-line program). A
 * sluice with only http:// upstreams never loads it.
 */
#define CURL_LIB "libcurl.so.4"
#define CURL_FUNCS(X)                                                              \
    X(CURLcode, curl_global_init, (long))                                          \
    X(curl_version_info_data *, curl_version_info, (CURLversion))                   \
    X(CURL *, curl_easy_init, (void))                                              \
    X(void, curl_easy_cleanup, (CURL *))                                           \
    X(void, curl_easy_reset, (CURL *))                                             \
    X(CURLcode, curl_easy_setopt, (CURL *, CURLoption, ...))                       \
    X(CURLcode, curl_easy_getinfo, (CURL *, CURLINFO, ...))                        \
    X(CURLcode, curl_easy_pause, (CURL *, int))                                    \
    X(const char *, curl_easy_strerror, (CURLcode))                                \
    X(CURLM *, curl_multi_init, (void))                                            \
    X(CURLMcode, curl_multi_cleanup, (CURLM *))                                    \
    X(CURLMcode, curl_multi_setopt, (CURLM *, CURLMoption, ...))                   \
    X(CURLMcode, curl_multi_add_handle, (CURLM *, CURL *))                         \
    X(CURLMcode, curl_multi_remove_handle, (CURLM *, CURL *))                      \
    X(CURLMcode, curl_multi_assign, (CURLM *, curl_socket_t, void *))              \
    X(CURLMcode, curl_multi_socket_action, (CURLM *, curl_socket_t, int, int *))   \
    X(CURLMsg *, curl_multi_info_read, (CURLM *, int *))                           \
    X(struct curl_slist *, curl_slist_append, (struct curl_slist *, const char *)) \
    X(void, curl_slist_free_all, (struct curl_slist *))

static struct {
#define CURL_FUNC_PTR(ret, name, args) ret(*name) args;
    CURL_FUNCS(CURL_FUNC_PTR)
#undef CURL_FUNC_PTR
} lib;

/* Load libcurl once; it stays for the life of the process (curl's global state). */
static int lib_load(void)
{
    static bool loaded;
    void *h;

    if (loaded)
        return SL_OK;
    if ((h = dlopen(CURL_LIB, RTLD_NOW | RTLD_LOCAL)) == NULL) {
        sl_log_error("cannot load libcurl", "lib=%s reason=\"%s\"", CURL_LIB, dlerror());
        return SL_ERR;
    }
    /* POSIX's way to take a function from dlsym's void *. */
#define CURL_FUNC_LOAD(ret, name, args)                        \
    if ((*(void **)&lib.name = dlsym(h, #name)) == NULL) {     \
        sl_log_error("libcurl lacks a function", "name=" #name); \
        dlclose(h);                                            \
        return SL_ERR;                                         \
    }
    CURL_FUNCS(CURL_FUNC_LOAD)
#undef CURL_FUNC_LOAD
    loaded = true;
    return SL_OK;
}

/* Fields of one answer's head, as the native client allows (h1client.c). */
#define MAX_FIELDS 256

/* Easy handles kept for reuse; a handle is cheap, this only saves churn. */
#define SPARE_MAX 16

/* One socket curl asked us to watch. */
struct upstream_sock {
    TAILQ_ENTRY(upstream_sock) link;
    struct sl_curlclient *u;
    curl_socket_t fd;
    struct event *ev;
};

/* One transfer; `base` first, so that backend.h's cancel finds it. */
struct curl_call {
    struct sl_backend_call base;
    TAILQ_ENTRY(curl_call) link;
    struct sl_curlclient *u;
    CURL *easy;
    struct curl_slist *hdrs;
    sl_upstream_done_fn done;
    sl_upstream_sent_fn sent;   /* optional: the request left (backend.h) */
    sl_upstream_head_fn head_fn; /* optional, with body_fn (backend.h) */
    sl_upstream_body_fn body_fn;
    void *arg;
    TAILQ_ENTRY(curl_call) plink; /* u->pending, while on_pending */
    size_t max_body;    /* a body taken whole: its cap (0: none) */
    enum sl_upstream_take take; /* once head_reported */
    int head_status;    /* of the head being read */
    bool head_done;     /* the final head's blank line came */
    bool head_reported; /* head_fn was asked how to take the body */
    bool on_pending;    /* a head or body bytes wait to be handed over */
    bool want_pause;    /* body_fn asked to wait: the next bytes pause the transfer */
    bool paused;        /* curl holds bytes until resume */
    bool too_large;     /* the body taken whole passed max_body */
    int64_t started_us;
    unsigned sends;     /* prerequest calls: a second one is curl resending on its own */
    bool https;
    bool body_started;  /* header lines after this are trailers: ignored */
    unsigned n_fields;  /* of the head being read */
    const char *why;    /* an answer refused while its head came in (static) */
    bool finishing;     /* unlinked, its callback runs: cancel is a no-op */
    char errbuf[CURL_ERROR_SIZE];
    struct sl_upstream_response resp;
};

struct sl_curlclient {
    struct sl_backend backend;  /* first: this client behind backend.h */
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    TAILQ_HEAD(, curl_call) calls;
    TAILQ_HEAD(, upstream_sock) socks;
    /* Calls with a head or body bytes to hand over, done from the loop after
     * curl returns (never from inside a curl callback); `deliver` runs it
     * when a resumed transfer gave back what curl held. */
    TAILQ_HEAD(, curl_call) pending;
    struct event *deliver;
    size_t active;
    CURL *spare[SPARE_MAX];
    size_t nspare;
};

static bool curl_ready;

/* ---- event loop side ---------------------------------------------------- */

static void finish(struct curl_call *call, CURLcode code);
static void drain_pending(struct sl_curlclient *u);

/* Report every finished transfer. Runs only from our own event callbacks. */
static void drain_done(struct sl_curlclient *u)
{
    CURLMsg *msg;
    int left;

    while ((msg = lib.curl_multi_info_read(u->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        (void)lib.curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        if (priv != NULL)
            finish((struct curl_call *)(void *)priv, msg->data.result);
    }
}

static void upstream_on_socket(evutil_socket_t fd, short what, void *arg)
{
    struct sl_curlclient *u = arg;
    int action = ((what & EV_READ) ? CURL_CSELECT_IN : 0) |
                 ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running;

    (void)lib.curl_multi_socket_action(u->multi, fd, action, &running);
    drain_done(u);
    drain_pending(u);
}

static void upstream_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct sl_curlclient *u = arg;
    int running;

    (void)fd;
    (void)what;
    (void)lib.curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    drain_done(u);
    drain_pending(u);
}

static void upstream_on_deliver(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    drain_pending(arg);
}

static void sock_free(struct sl_curlclient *u, struct upstream_sock *s)
{
    TAILQ_REMOVE(&u->socks, s, link);
    event_free(s->ev);
    free(s);
}

static struct upstream_sock *sock_new(struct sl_curlclient *u, curl_socket_t fd)
{
    struct upstream_sock *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    /* Placeholder flags; sock_watch assigns the real ones before adding. */
    s->ev = event_new(u->base, fd, EV_READ, upstream_on_socket, u);
    if (s->ev == NULL) {
        free(s);
        return NULL;
    }
    s->u = u;
    s->fd = fd;
    TAILQ_INSERT_TAIL(&u->socks, s, link);
    return s;
}

static int sock_watch(struct sl_curlclient *u, struct upstream_sock *s, int what)
{
    short flags = EV_PERSIST;

    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        flags |= EV_READ;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        flags |= EV_WRITE;
    (void)event_del(s->ev);
    if (event_assign(s->ev, u->base, s->fd, flags, upstream_on_socket, u) != 0 ||
        event_priority_set(s->ev, 0) != 0)
        return -1;
    return event_add(s->ev, NULL);
}

/* CURLMOPT_SOCKETFUNCTION. Returning -1 makes curl fail the transfer. */
static int curl_on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct sl_curlclient *u = userp;
    struct upstream_sock *s = socketp;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (s != NULL)
            sock_free(u, s);
        return 0;
    }
    if (s == NULL) {
        s = sock_new(u, fd);
        if (s == NULL)
            return -1;
        if (lib.curl_multi_assign(u->multi, fd, s) != CURLM_OK) {
            sock_free(u, s);
            return -1;
        }
    }
    return sock_watch(u, s, what) == 0 ? 0 : -1;
}

/* CURLMOPT_TIMERFUNCTION. A 0 timeout fires from the loop, never from here. */
static int curl_on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct sl_curlclient *u = userp;

    (void)multi;
    if (timeout_ms < 0)
        return evtimer_del(u->timer) == 0 ? 0 : -1;

    struct timeval tv = {
        .tv_sec = timeout_ms / 1000,
        .tv_usec = (timeout_ms % 1000) * 1000,
    };
    return evtimer_add(u->timer, &tv) == 0 ? 0 : -1;
}

/* ---- construction ------------------------------------------------------- */

static int global_init(void)
{
    if (curl_ready)
        return SL_OK;
    if (lib_load() != SL_OK)
        return SL_ERR;
    if (lib.curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return SL_ERR;
    curl_ready = true;

    const curl_version_info_data *info = lib.curl_version_info(CURLVERSION_NOW);
    if (!(info->features & CURL_VERSION_ASYNCHDNS))
        sl_log_warn("libcurl resolves names synchronously; DNS lookups will block the loop",
                    "curl=%s", info->version);
    return SL_OK;
}

static int multi_setup(struct sl_curlclient *u, unsigned max_connections)
{
    CURLMcode rc = CURLM_OK;

    rc |= lib.curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, curl_on_socket);
    rc |= lib.curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
    rc |= lib.curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, curl_on_timer);
    rc |= lib.curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
    /* The cache size only; per-host and total connection caps stay unlimited
     * (the defaults) so curl never queues a transfer behind our dispatcher. */
    rc |= lib.curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, (long)max_connections);
    rc |= lib.curl_multi_setopt(u->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    return rc == CURLM_OK ? SL_OK : SL_ERR;
}

struct sl_curlclient *sl_curlclient_new(struct event_base *base, unsigned max_connections)
{
    if (base == NULL || global_init() != SL_OK)
        return NULL;

    struct sl_curlclient *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->base = base;
    TAILQ_INIT(&u->calls);
    TAILQ_INIT(&u->socks);
    TAILQ_INIT(&u->pending);
    u->timer = evtimer_new(base, upstream_on_timer, u);
    u->deliver = event_new(base, -1, 0, upstream_on_deliver, u);
    if (u->timer == NULL || event_priority_set(u->timer, 0) != 0 || u->deliver == NULL ||
        event_priority_set(u->deliver, 0) != 0)
        goto fail;
    u->multi = lib.curl_multi_init();
    if (u->multi == NULL || multi_setup(u, max_connections) != SL_OK)
        goto fail;
    u->backend.ops = &curlclient_ops;
    return u;

fail:
    if (u->multi != NULL)
        lib.curl_multi_cleanup(u->multi);
    if (u->timer != NULL)
        event_free(u->timer);
    if (u->deliver != NULL)
        event_free(u->deliver);
    free(u);
    return NULL;
}

/* ---- calls -------------------------------------------------------------- */

static CURL *easy_get(struct sl_curlclient *u)
{
    if (u->nspare > 0)
        return u->spare[--u->nspare];
    return lib.curl_easy_init();
}

static void easy_put(struct sl_curlclient *u, CURL *easy)
{
    if (u->nspare < SPARE_MAX) {
        lib.curl_easy_reset(easy);
        u->spare[u->nspare++] = easy;
    } else {
        lib.curl_easy_cleanup(easy);
    }
}

/* The call must already be out of the multi handle and off the list. */
static void call_free(struct curl_call *call)
{
    if (call->easy != NULL)
        easy_put(call->u, call->easy);
    lib.curl_slist_free_all(call->hdrs);
    sl_headers_clear(&call->resp.headers);
    if (call->resp.body != NULL)
        evbuffer_free(call->resp.body);
    free(call);
}

/* A header line without its line end and surrounding OWS. */
static void trim(const char **start, const char **end)
{
    while (*end > *start && ((*end)[-1] == '\r' || (*end)[-1] == '\n'))
        (*end)--;
    sl_http1_trim(start, end);
}

/*
 * An obsolete folded line continues the previous field: join it with one
 * space (RFC 9112 5.2). The joined field replaces the last one (an entry
 * holds its strings, so it cannot grow in place).
 */
static int header_unfold(struct evkeyvalq *hdrs, const char *start, const char *end)
{
    struct evkeyval *last = TAILQ_LAST(hdrs, evkeyvalq);
    if (last == NULL)
        return SL_OK;
    size_t old = strlen(last->value);
    size_t add = (size_t)(end - start);
    char *value = malloc(old + add + 2);
    if (value == NULL)
        return SL_ENOMEM;
    memcpy(value, last->value, old);
    value[old] = ' ';
    memcpy(value + old + 1, start, add);
    value[old + 1 + add] = '\0';
    int rc = sl_headers_add(hdrs, last->key, value);
    free(value);
    if (rc == SL_OK)
        sl_headers_remove(hdrs, last);
    return rc;
}

/* Add "Name: value" from one raw header line (no NUL, ends in CRLF). */
static int header_add(struct evkeyvalq *hdrs, const char *line, size_t len)
{
    const char *end = line + len;
    const char *colon = memchr(line, ':', len);

    if (line[0] == ' ' || line[0] == '\t') {
        const char *start = line;
        trim(&start, &end);
        return header_unfold(hdrs, start, end);
    }
    if (colon == NULL || colon == line)
        return SL_OK; /* the blank line ending the block, or junk curl let by */

    const char *name_end = colon;
    const char *value = colon + 1;
    trim(&line, &name_end);
    trim(&value, &end);

    char *name = strndup(line, (size_t)(name_end - line));
    char *val = strndup(value, (size_t)(end - value));
    int rc = SL_ENOMEM;
    if (name != NULL && val != NULL)
        rc = sl_headers_add(hdrs, name, val);
    free(name);
    free(val);
    return rc;
}

/* Refuse an answer while its head comes in (0 makes curl abort the transfer). */
static size_t refuse_answer(struct curl_call *call, const char *why)
{
    call->why = why;
    return 0;
}

/*
 * The reason phrase of a status line "HTTP/1.1 200 Fine Thanks\r\n" (none
 * from HTTP/2, "HTTP/2 200"), cut to fit `out`; a control byte ends it, so
 * nothing curl let by can break the head it is written into.
 */
static void status_reason(const char *line, size_t len, char *out, size_t size)
{
    const char *p = memchr(line, ' ', len), *end = line + len;
    size_t n = 0;

    /* Past the version and the three digits of the status. */
    if (p != NULL && end - p > 4 && p[4] == ' ')
        for (p += 5; p < end && n + 1 < size && ((unsigned char)*p >= 0x20 || *p == '\t') &&
                     *p != 0x7f;
             p++)
            out[n++] = *p;
    while (n > 0 && (out[n - 1] == ' ' || out[n - 1] == '\t'))
        n--;
    out[n] = '\0';
}

/* A status line starts a head. We never ask to upgrade: a 101 is refused. */
static size_t on_status_line(struct curl_call *call, const char *buf, size_t len)
{
    const char *sp = memchr(buf, ' ', len);

    sl_headers_clear(&call->resp.headers);
    call->n_fields = 0;
    call->head_status = 0;
    for (size_t i = sp != NULL ? (size_t)(sp - buf) + 1 : len, k = 0;
         i < len && k < 3 && buf[i] >= '0' && buf[i] <= '9'; i++, k++)
        call->head_status = call->head_status * 10 + (buf[i] - '0');
    status_reason(buf, len, call->resp.reason, sizeof(call->resp.reason));
    if (sp != NULL && (size_t)(sp - buf) + 4 <= len && strncmp(sp + 1, "101", 3) == 0)
        return refuse_answer(call, "unexpected 101 Switching Protocols");
    return len;
}

/* A CR not followed by LF: a line end curl would accept and the native client does not. */
static bool has_bare_cr(const char *buf, size_t len)
{
    for (const char *p = memchr(buf, '\r', len); p != NULL;
         p = memchr(p + 1, '\r', len - (size_t)(p + 1 - buf)))
        if ((size_t)(p + 1 - buf) >= len || p[1] != '\n')
            return true;
    return false;
}

/* Was the field just added a Content-Length that disagrees with an earlier one? */
static bool lengths_conflict(const struct evkeyvalq *hdrs)
{
    const struct evkeyval *last = TAILQ_LAST(hdrs, evkeyvalq), *h;

    if (last == NULL || strcasecmp(last->key, "Content-Length") != 0)
        return false;
    TAILQ_FOREACH(h, hdrs, next)
        if (h != last && strcasecmp(h->key, "Content-Length") == 0 &&
            strcmp(h->value, last->value) != 0)
            return true;
    return false;
}

/* Hand the call's head or bytes over once curl returns (drain_pending). */
static void pend(struct curl_call *call)
{
    if (call->on_pending || call->head_fn == NULL)
        return;
    call->on_pending = true;
    TAILQ_INSERT_TAIL(&call->u->pending, call, plink);
}

static void unpend(struct curl_call *call)
{
    if (!call->on_pending)
        return;
    call->on_pending = false;
    TAILQ_REMOVE(&call->u->pending, call, plink);
}

/* The body's length from the head, -1 when chunked, close-delimited or unknown. */
static int64_t content_length(const struct evkeyvalq *hdrs)
{
    const struct evkeyval *h;
    int64_t len = -1;

    TAILQ_FOREACH(h, hdrs, next) {
        if (strcasecmp(h->key, "Transfer-Encoding") == 0)
            return -1;
        if (strcasecmp(h->key, "Content-Length") == 0) {
            char *end;
            long long v = strtoll(h->value, &end, 10);

            len = end != h->value && *end == '\0' && v >= 0 ? (int64_t)v : -1;
        }
    }
    return len;
}

/*
 * CURLOPT_HEADERFUNCTION: every header line of every response, one at a
 * time. curl would relay what the native client refuses; both paths keep
 * one contract (the field cap, conflicting lengths, 101).
 */
static size_t curl_on_header(char *buf, size_t size, size_t n, void *arg)
{
    struct curl_call *call = arg;
    size_t len = size * n;
    int rc;

    if (call->body_started || len == 0)
        return len;
    if (has_bare_cr(buf, len))
        return refuse_answer(call, "bare CR");
    if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0)
        return on_status_line(call, buf, len);
    if ((buf[0] == '\r' || buf[0] == '\n') && call->head_status >= 200) {
        /* The final head is in: tell the caller once curl returns. */
        call->head_done = true;
        call->resp.content_length = content_length(&call->resp.headers);
        pend(call);
        return len;
    }
    if (buf[0] != '\r' && buf[0] != '\n' && ++call->n_fields > MAX_FIELDS)
        return refuse_answer(call, "response has too many header fields (over 256)");
    /* SL_ERR: a value evhttp refuses (a bare CR); dropping it is safer. */
    rc = header_add(&call->resp.headers, buf, len);
    if (rc == SL_ENOMEM)
        return 0;
    if (rc == SL_OK && lengths_conflict(&call->resp.headers))
        return refuse_answer(call, "conflicting Content-Length fields");
    return len;
}

/*
 * The body is taken whole: no streaming was asked for, or the head callback
 * chose it. Before that choice the bytes that came with the head are not
 * held to max_body: a streamed body has no cap.
 */
static bool taken_whole(const struct curl_call *call)
{
    return call->head_fn == NULL || (call->head_reported && call->take == SL_TAKE_WHOLE);
}

/*
 * CURLOPT_WRITEFUNCTION: body bytes as received (no decoding). A paused
 * consumer pauses the transfer: curl keeps these bytes and stops reading.
 */
static size_t curl_on_body(char *buf, size_t size, size_t n, void *arg)
{
    struct curl_call *call = arg;
    size_t len = size * n;

    call->body_started = true;
    if (call->want_pause) {
        call->paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (evbuffer_add(call->resp.body, buf, len) != 0)
        return 0;
    if (taken_whole(call) && call->max_body > 0 &&
        evbuffer_get_length(call->resp.body) > call->max_body) {
        call->too_large = true;
        return 0;
    }
    pend(call);
    return len;
}

static bool has_header(const struct evkeyvalq *hdrs, const char *name)
{
    const struct evkeyval *h;

    TAILQ_FOREACH(h, hdrs, next)
        if (strcasecmp(h->key, name) == 0)
            return true;
    return false;
}

static int slist_add(struct curl_slist **list, const char *line)
{
    struct curl_slist *next = lib.curl_slist_append(*list, line);
    if (next == NULL)
        return SL_ENOMEM;
    *list = next;
    return SL_OK;
}

/* "Name: value", or "Name;" which is curl's spelling of an empty value. */
static int slist_add_field(struct curl_slist **list, const char *name, const char *value)
{
    size_t len = strlen(name) + strlen(value) + 3;
    char *line = malloc(len);
    if (line == NULL)
        return SL_ENOMEM;
    if (value[0] == '\0')
        snprintf(line, len, "%s;", name);
    else
        snprintf(line, len, "%s: %s", name, value);
    int rc = slist_add(list, line);
    free(line);
    return rc;
}

/*
 * The client's fields exactly; "Name:" removes a field curl would add on its
 * own (Accept, Content-Type for bodies, Expect: 100-continue).
 */
static int slist_visit(const char *name, const char *value, void *arg)
{
    return slist_add_field(arg, name, value);
}

static int build_headers(const struct evkeyvalq *in, const struct sl_forward_info *fwd,
                         bool with_body, struct curl_slist **list)
{
    const struct evkeyval *h;

    if (in != NULL && fwd != NULL) {
        if (sl_headers_each_to_upstream(in, fwd, slist_visit, list) != SL_OK)
            return SL_ENOMEM;
    } else if (in != NULL) {
        TAILQ_FOREACH(h, in, next)
            if (slist_add_field(list, h->key, h->value) != SL_OK)
                return SL_ENOMEM;
    }
    if (slist_add(list, "Expect:") != SL_OK)
        return SL_ENOMEM;
    if ((in == NULL || !has_header(in, "Accept")) && slist_add(list, "Accept:") != SL_OK)
        return SL_ENOMEM;
    if (with_body && (in == NULL || !has_header(in, "Content-Type")) &&
        slist_add(list, "Content-Type:") != SL_OK)
        return SL_ENOMEM;
    return SL_OK;
}

static bool method_has_body(const char *method)
{
    return strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
           strcmp(method, "PATCH") == 0;
}

static int set_common(struct curl_call *call, const struct sl_upstream_request *req)
{
    CURL *e = call->easy;
    CURLcode rc = CURLE_OK;
    long timeout_ms = 0; /* curl: no limit */

    if (req->timeout_us > 0) {
        int64_t ms = (req->timeout_us + SL_USEC_PER_MSEC - 1) / SL_USEC_PER_MSEC;
        timeout_ms = ms > LONG_MAX ? LONG_MAX : (long)ms;
    }
    rc |= lib.curl_easy_setopt(e, CURLOPT_URL, req->url);
    rc |= lib.curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
    rc |= lib.curl_easy_setopt(e, CURLOPT_PRIVATE, call);
    rc |= lib.curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call->errbuf);
    rc |= lib.curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    rc |= lib.curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    rc |= lib.curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    rc |= lib.curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, curl_on_header);
    rc |= lib.curl_easy_setopt(e, CURLOPT_HEADERDATA, call);
    rc |= lib.curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, curl_on_body);
    rc |= lib.curl_easy_setopt(e, CURLOPT_WRITEDATA, call);
    rc |= lib.curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    rc |= lib.curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);
    rc |= lib.curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    rc |= lib.curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    rc |= lib.curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    rc |= lib.curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    /* The upstream is the configured one: no proxy from the environment. */
    rc |= lib.curl_easy_setopt(e, CURLOPT_PROXY, "");
    return rc == CURLE_OK ? SL_OK : SL_ERR;
}

/*
 * CURLOPT_PREREQFUNCTION: curl is about to send the request, the connection
 * up. The first time, the dispatch is dated by it (DNS, connect and TLS no
 * longer eat into the window's guard). A second time is curl resending on
 * a fresh connection after a reused one died: that would be a dispatch
 * nobody counted, so the call ends here and the caller decides (backend.h:
 * SL_UPSTREAM_CLOSED).
 */
static int curl_on_prereq(void *arg, char *primary_ip, char *local_ip, int primary_port,
                          int local_port)
{
    struct curl_call *call = arg;

    (void)primary_ip;
    (void)local_ip;
    (void)primary_port;
    (void)local_port;
    if (++call->sends > 1)
        return CURL_PREREQFUNC_ABORT;
    if (call->sent != NULL)
        call->sent(call->arg);
    return CURL_PREREQFUNC_OK;
}

static int set_hooks(struct curl_call *call)
{
    CURLcode rc = CURLE_OK;

    rc |= lib.curl_easy_setopt(call->easy, CURLOPT_PREREQFUNCTION, curl_on_prereq);
    rc |= lib.curl_easy_setopt(call->easy, CURLOPT_PREREQDATA, call);
    return rc == CURLE_OK ? SL_OK : SL_ERR;
}

/*
 * The route's TLS settings. curl copies the strings, and connections and
 * TLS sessions are reused only between calls with the same settings.
 */
static int set_tls(struct curl_call *call, const struct sl_tls_config *tls)
{
    CURL *e = call->easy;
    CURLcode rc = CURLE_OK;

    if (tls == NULL)
        return SL_OK;
    if (tls->ca_file[0] != '\0')
        rc |= lib.curl_easy_setopt(e, CURLOPT_CAINFO, tls->ca_file);
    if (tls->client_cert[0] != '\0') {
        rc |= lib.curl_easy_setopt(e, CURLOPT_SSLCERT, tls->client_cert);
        rc |= lib.curl_easy_setopt(e, CURLOPT_SSLKEY, tls->client_key);
    }
    if (!tls->verify) {
        rc |= lib.curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        rc |= lib.curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    return rc == CURLE_OK ? SL_OK : SL_ERR;
}

static int set_request(struct curl_call *call, const struct sl_upstream_request *req)
{
    CURL *e = call->easy;
    CURLcode rc = CURLE_OK;
    bool with_body = req->body_len > 0 || method_has_body(req->method);

    if (set_common(call, req) != SL_OK || set_hooks(call) != SL_OK ||
        set_tls(call, req->tls) != SL_OK)
        return SL_ERR;
    if (strcmp(req->method, "HEAD") == 0)
        rc |= lib.curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    if (with_body) {
        rc |= lib.curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        rc |= lib.curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body != NULL ? req->body : "");
    }
    if (build_headers(req->headers, req->forward, with_body, &call->hdrs) != SL_OK)
        return SL_ENOMEM;
    rc |= lib.curl_easy_setopt(e, CURLOPT_HTTPHEADER, call->hdrs);
    return rc == CURLE_OK ? SL_OK : SL_ERR;
}

struct sl_backend_call *sl_curlclient_start(struct sl_curlclient *u,
                                            const struct sl_upstream_request *req,
                                            sl_upstream_done_fn done, void *arg)
{
    if (u == NULL || req == NULL || req->method == NULL || req->url == NULL || done == NULL)
        return NULL;

    struct curl_call *call = calloc(1, sizeof(*call));
    if (call == NULL)
        return NULL;
    call->base.ops = &curlclient_ops;
    call->u = u;
    call->done = done;
    call->sent = req->sent;
    if (req->head != NULL && req->body_chunk != NULL) {
        call->head_fn = req->head;
        call->body_fn = req->body_chunk;
    }
    call->max_body = req->max_body;
    call->arg = arg;
    call->https = strncmp(req->url, "https://", 8) == 0;
    TAILQ_INIT(&call->resp.headers);
    call->resp.body = evbuffer_new();
    call->easy = easy_get(u);
    if (call->resp.body == NULL || call->easy == NULL)
        goto fail;
    if (set_request(call, req) != SL_OK)
        goto fail;
    call->started_us = sl_clock_now();
    if (lib.curl_multi_add_handle(u->multi, call->easy) != CURLM_OK)
        goto fail;
    TAILQ_INSERT_TAIL(&u->calls, call, link);
    u->active++;
    return &call->base;

fail:
    call_free(call);
    return NULL;
}

static void unlink_call(struct curl_call *call)
{
    struct sl_curlclient *u = call->u;

    (void)lib.curl_multi_remove_handle(u->multi, call->easy);
    TAILQ_REMOVE(&u->calls, call, link);
    unpend(call);
    u->active--;
}

void sl_curlclient_cancel(struct sl_backend_call *c)
{
    struct curl_call *call = (struct curl_call *)(void *)c;

    if (call == NULL || call->finishing)
        return;
    unlink_call(call);
    call_free(call);
}

/* ---- completion --------------------------------------------------------- */

/*
 * A certificate refused, ours or theirs, or TLS that cannot be set up with
 * the route's files: retrying would only spend another token.
 */
static bool is_tls_refusal(CURLcode code)
{
    switch (code) {
    case CURLE_PEER_FAILED_VERIFICATION: /* unknown CA, wrong name, expired... */
    case CURLE_SSL_CACERT_BADFILE:       /* ca_file */
    case CURLE_SSL_CERTPROBLEM:          /* client_cert, client_key */
    case CURLE_SSL_CLIENTCERT:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
        return true;
    default:
        return false;
    }
}

/* A handshake that broke off may work next time, like a refused connect. */
static bool is_connect_error(CURLcode code)
{
    return code == CURLE_COULDNT_RESOLVE_HOST || code == CURLE_COULDNT_RESOLVE_PROXY ||
           code == CURLE_COULDNT_CONNECT || code == CURLE_SSL_CONNECT_ERROR;
}

/*
 * A timeout before the connection was up (TCP, then the TLS handshake for
 * https://) means nothing reached the upstream.
 */
static bool timed_out_connecting(const struct curl_call *call)
{
    curl_off_t connect_us = 0, appconnect_us = 0, sent = 0;
    long request_size = 0;

    (void)lib.curl_easy_getinfo(call->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
    (void)lib.curl_easy_getinfo(call->easy, CURLINFO_APPCONNECT_TIME_T, &appconnect_us);
    (void)lib.curl_easy_getinfo(call->easy, CURLINFO_REQUEST_SIZE, &request_size);
    (void)lib.curl_easy_getinfo(call->easy, CURLINFO_SIZE_UPLOAD_T, &sent);
    if (request_size != 0 || sent != 0)
        return false;
    return connect_us == 0 || (call->https && appconnect_us == 0);
}

static enum sl_upstream_error map_error(const struct curl_call *call, CURLcode code)
{
    if (code == CURLE_OK)
        return SL_UPSTREAM_OK;
    if (is_tls_refusal(code))
        return SL_UPSTREAM_TLS;
    if (is_connect_error(code))
        return SL_UPSTREAM_CONNECT;
    if (code == CURLE_OPERATION_TIMEDOUT)
        return timed_out_connecting(call) ? SL_UPSTREAM_CONNECT : SL_UPSTREAM_TIMEOUT;
    /* Sent, and the connection ended with no answer: as the native client says
     * (a resend stopped by curl_on_prereq is the same case). */
    if (code == CURLE_GOT_NOTHING || code == CURLE_ABORTED_BY_CALLBACK)
        return SL_UPSTREAM_CLOSED;
    return SL_UPSTREAM_PROTOCOL;
}

static void fill_response(struct curl_call *call, CURLcode code)
{
    struct sl_upstream_response *resp = &call->resp;
    const char *prefix;
    long status = 0, connects = 0;
    size_t n;

    resp->error = map_error(call, code);
    resp->duration_us = sl_clock_now() - call->started_us;
    /* Each new https:// connection began a handshake; a reused one did not. */
    if (call->https &&
        lib.curl_easy_getinfo(call->easy, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK)
        resp->tls_handshakes = connects > 0 ? (unsigned)connects : 0;
    if (resp->error == SL_UPSTREAM_OK) {
        (void)lib.curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
        resp->status = (int)status;
        return;
    }
    resp->status = 0;
    resp->reason[0] = '\0';
    if (call->too_large) {
        resp->error = SL_UPSTREAM_TOO_LARGE;
        snprintf(resp->detail, sizeof(resp->detail), "the response body is larger than %zu bytes",
                 call->max_body);
        return;
    }
    if (call->sends > 1) {
        resp->error = SL_UPSTREAM_CLOSED;
        snprintf(resp->detail, sizeof(resp->detail),
                 "the upstream closed the connection before answering "
                 "(a reused keep-alive connection)");
        return;
    }
    if (call->why != NULL) {
        resp->error = SL_UPSTREAM_PROTOCOL;
        snprintf(resp->detail, sizeof(resp->detail), "Invalid HTTP response: %s", call->why);
        return;
    }
    /* curl's own words, said to be about TLS where they are (SPEC section 6). */
    prefix = resp->error == SL_UPSTREAM_TLS || code == CURLE_SSL_CONNECT_ERROR ? "TLS: " : "";
    n = strlen(prefix);
    memcpy(resp->detail, prefix, n + 1);
    snprintf(resp->detail + n, sizeof(resp->detail) - n, "%s",
             call->errbuf[0] != '\0' ? call->errbuf : lib.curl_easy_strerror(code));
}

static void finish(struct curl_call *call, CURLcode code)
{
    fill_response(call, code);
    unlink_call(call);
    call->finishing = true;
    call->done(&call->resp, call->arg);
    call_free(call);
}

/* Nobody wants the body: the transfer stops, the call ends with its head. */
static void drop(struct curl_call *call)
{
    call->resp.error = SL_UPSTREAM_OK;
    call->resp.status = call->head_status;
    call->resp.duration_us = sl_clock_now() - call->started_us;
    evbuffer_drain(call->resp.body, evbuffer_get_length(call->resp.body));
    unlink_call(call);
    call->finishing = true;
    call->done(&call->resp, call->arg);
    call_free(call);
}

/* Ask once how the body is taken, then hand over what came (backend.h). */
static void deliver(struct curl_call *call)
{
    if (!call->head_reported) {
        call->head_reported = true;
        call->resp.status = call->head_status;
        call->take = call->head_fn(&call->resp, call->arg);
        if (call->take == SL_TAKE_NONE) {
            drop(call);
            return;
        }
        /* Taken whole: what came with the head may already pass the cap. */
        if (taken_whole(call) && call->max_body > 0 &&
            evbuffer_get_length(call->resp.body) > call->max_body) {
            call->too_large = true;
            finish(call, CURLE_WRITE_ERROR);
            return;
        }
    }
    if (call->take == SL_TAKE_STREAM && evbuffer_get_length(call->resp.body) > 0 &&
        !call->body_fn(&call->resp, call->arg))
        call->want_pause = true;
}

/*
 * Heads and bytes that came during curl's work, handed over after it: a
 * callback may then cancel other calls, which leave the list as they go.
 */
static void drain_pending(struct sl_curlclient *u)
{
    struct curl_call *call;

    while ((call = TAILQ_FIRST(&u->pending)) != NULL) {
        unpend(call);
        if (call->head_done)
            deliver(call);
    }
}

void sl_curlclient_resume(struct sl_backend_call *c)
{
    struct curl_call *call = (struct curl_call *)(void *)c;

    if (call == NULL || call->finishing || (!call->want_pause && !call->paused))
        return;
    call->want_pause = false;
    if (call->paused) {
        call->paused = false;
        /* curl gives back what it held through curl_on_body, right here. */
        (void)lib.curl_easy_pause(call->easy, CURLPAUSE_CONT);
    }
    if (call->on_pending)
        event_active(call->u->deliver, 0, 0);
}

/* ---- teardown and helpers ----------------------------------------------- */

void sl_curlclient_free(struct sl_curlclient *u)
{
    struct curl_call *call;
    struct upstream_sock *s;

    if (u == NULL)
        return;
    while ((call = TAILQ_FIRST(&u->calls)) != NULL)
        sl_curlclient_cancel(&call->base);
    while (u->nspare > 0)
        lib.curl_easy_cleanup(u->spare[--u->nspare]);
    lib.curl_multi_cleanup(u->multi);
    event_free(u->deliver);
    /* curl 7.88 reports CURL_POLL_REMOVE for every socket it closes here, but
     * nothing in its contract promises that: free whatever is left. */
    while ((s = TAILQ_FIRST(&u->socks)) != NULL)
        sock_free(u, s);
    event_free(u->timer);
    free(u);
}

size_t sl_curlclient_active(const struct sl_curlclient *u)
{
    return u != NULL ? u->active : 0;
}

/* ---- behind backend.h --------------------------------------------------- */

static bool ops_handles(struct sl_backend *b, const char *url)
{
    (void)b;
    /* curl takes whatever the native client does not: it decides at start. */
    return url != NULL;
}

static struct sl_backend_call *ops_start(struct sl_backend *b, const struct sl_upstream_request *req,
                                         sl_upstream_done_fn done, void *arg)
{
    return sl_curlclient_start((struct sl_curlclient *)(void *)b, req, done, arg);
}

static size_t ops_active(const struct sl_backend *b)
{
    return sl_curlclient_active((const struct sl_curlclient *)(const void *)b);
}

static void ops_free(struct sl_backend *b)
{
    sl_curlclient_free((struct sl_curlclient *)(void *)b);
}

static const struct sl_backend_ops curlclient_ops = {
    .name = "curl",
    .handles = ops_handles,
    .start = ops_start,
    .cancel = sl_curlclient_cancel,
    .resume = sl_curlclient_resume,
    .active = ops_active,
    .free = ops_free,
};

struct sl_backend *sl_curlclient_backend(struct sl_curlclient *u)
{
    return u != NULL ? &u->backend : NULL;
}
