/*
 * redis.c - hiredis 0.14 async on our loop, with reconnect, per-command
 * timeouts and the AUTH/SELECT handshake.
 *
 * hiredis frees a context itself after its connect failed or its
 * connection dropped (our on_connect/on_disconnect are told first), and
 * answers every pending callback with reply NULL when it frees one. So the
 * rule here: r->ac is the live context or NULL, and it is cleared before
 * anything can free it; callbacks of a context that is no longer r->ac only
 * pass their NULL on.
 */
#include "redis.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>

#include "clock.h"
#include "log.h"
#include "sluice.h"

#define BACKOFF_BASE_US (100 * SL_USEC_PER_MSEC)
#define BACKOFF_CAP_US (5 * SL_USEC_PER_SEC)

/* One command waiting for its reply. */
struct sl_redis_cmd {
    TAILQ_ENTRY(sl_redis_cmd) link;
    struct sl_redis *r;
    sl_redis_reply_fn fn;
    void *arg;
    int64_t sent_us;
    int64_t deadline_us;
};

enum conn_state { CONN_DOWN, CONN_HANDSHAKE, CONN_UP };

struct sl_redis {
    struct event_base *base;
    struct sl_redis_url url;
    char name[32];
    char addr[128];
    char error[160];
    redisAsyncContext *ac;              /* the live context, or NULL */
    enum conn_state state;
    unsigned failures;                  /* in a row: the backoff's exponent */
    bool refusal_logged;                /* a handshake refusal was logged since the last up */
    struct event *retry;                /* reconnect */
    struct event *timer;                /* the earliest command deadline */
    int64_t timer_at;                   /* 0 = not armed */
    TAILQ_HEAD(, sl_redis_cmd) pending;
    size_t n_pending;
    sl_redis_state_fn on_state;
    void *arg;
    struct sl_redis_stats stats;
    uint64_t seed;
};

static void conn_start(struct sl_redis *r);

int64_t sl_redis_backoff(unsigned failures, int64_t base_us, int64_t cap_us, uint64_t *seed)
{
    int64_t d = base_us;
    uint64_t x = *seed != 0 ? *seed : 0x9e3779b97f4a7c15u;

    for (unsigned i = 0; i < failures && d < cap_us; i++)
        d *= 2;
    if (d > cap_us)
        d = cap_us;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *seed = x;
    return d / 2 + (int64_t)(x % (uint64_t)(d / 2 + 1));
}

/* --- state --------------------------------------------------------------- */

static void set_error(struct sl_redis *r, const char *fmt, const char *detail)
{
    snprintf(r->error, sizeof(r->error), fmt, detail != NULL ? detail : "");
}

static void schedule_retry(struct sl_redis *r)
{
    struct timeval tv = sl_clock_timeval(
        sl_redis_backoff(r->failures, BACKOFF_BASE_US, BACKOFF_CAP_US, &r->seed));

    if (r->failures < 30)
        r->failures++;
    evtimer_add(r->retry, &tv);
}

/* The live context is gone (or going): say so once, and try again later. */
static void conn_lost(struct sl_redis *r)
{
    bool was_up = r->state == CONN_UP;

    r->ac = NULL;
    r->state = CONN_DOWN;
    r->stats.up = false;
    r->stats.failures++;
    if (was_up)
        sl_log_warn("redis down", "name=%s addr=%s reason=\"%s\"", r->name, r->addr, r->error);
    else
        sl_log_debug("redis connect failed", "name=%s addr=%s reason=\"%s\"", r->name, r->addr,
                     r->error);
    schedule_retry(r);
    if (was_up && r->on_state != NULL)
        r->on_state(r, false, r->arg);
}

/* Drop the live context ourselves: pending commands are answered NULL. */
static void conn_drop(struct sl_redis *r)
{
    redisAsyncContext *ac = r->ac;

    if (ac == NULL)
        return;
    conn_lost(r);
    redisAsyncFree(ac);
}

static void redis_on_connect(const redisAsyncContext *ac, int status)
{
    struct sl_redis *r = ac->data;

    if (status == REDIS_OK || r == NULL || r->ac != ac)
        return;
    /* hiredis frees ac after this returns. */
    set_error(r, "cannot connect: %s", ac->errstr);
    conn_lost(r);
}

static void redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct sl_redis *r = ac->data;

    (void)status;
    if (r == NULL || r->ac != ac)
        return;
    set_error(r, "connection lost: %s", ac->err != 0 ? ac->errstr : "closed");
    conn_lost(r);
}

/* --- commands and their timeouts ----------------------------------------- */

static void arm_timer(struct sl_redis *r, int64_t at)
{
    struct timeval tv;

    if (r->timer_at != 0 && r->timer_at <= at)
        return;
    r->timer_at = at;
    tv = sl_clock_timeval(at - sl_clock_now());
    evtimer_add(r->timer, &tv);
}

static void redis_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct sl_redis *r = arg;
    int64_t now = sl_clock_now(), next = 0;
    struct sl_redis_cmd *c;

    (void)fd;
    (void)what;
    r->timer_at = 0;
    TAILQ_FOREACH(c, &r->pending, link) {
        if (c->deadline_us <= now) {
            r->stats.timeouts++;
            set_error(r, "%s", "a command timed out");
            conn_drop(r);
            return;
        }
        if (next == 0 || c->deadline_us < next)
            next = c->deadline_us;
    }
    if (next != 0)
        arm_timer(r, next);
}

static void redis_on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct sl_redis_cmd *c = privdata;
    struct sl_redis *r = c->r;

    (void)ac;
    TAILQ_REMOVE(&r->pending, c, link);
    r->n_pending--;
    if (reply != NULL)
        sl_histogram_observe(&r->stats.rtt, (double)(sl_clock_now() - c->sent_us) / 1e6);
    if (c->fn != NULL)
        c->fn(r, reply, c->arg);
    free(c);
}

/* A command record for the live context; NULL when out of memory. */
static struct sl_redis_cmd *cmd_new(struct sl_redis *r, int64_t timeout_us,
                                    sl_redis_reply_fn fn, void *arg)
{
    struct sl_redis_cmd *c = malloc(sizeof(*c));

    if (c == NULL)
        return NULL;
    c->r = r;
    c->fn = fn;
    c->arg = arg;
    c->sent_us = sl_clock_now();
    c->deadline_us = c->sent_us + (timeout_us > 0 ? timeout_us : SL_REDIS_TIMEOUT_US);
    return c;
}

static void cmd_track(struct sl_redis *r, struct sl_redis_cmd *c)
{
    TAILQ_INSERT_TAIL(&r->pending, c, link);
    r->n_pending++;
    arm_timer(r, c->deadline_us);
}

/* Decimal digits of n, written backwards from end; returns the first. */
static char *put_size(char *end, size_t n)
{
    do {
        *--end = (char)('0' + n % 10);
        n /= 10;
    } while (n != 0);
    return end;
}

/* "<lead>N\r\n" at p; returns what follows. */
static char *put_count(char *p, char lead, size_t n)
{
    char digits[24], *d = put_size(digits + sizeof(digits), n);
    size_t k = (size_t)(digits + sizeof(digits) - d);

    *p++ = lead;
    memcpy(p, d, k);
    p += k;
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/*
 * The command in RESP, written by us: hiredis 0.14's formatters build it
 * through sds appends and sprintf for every length, which cost more than
 * everything else of a job's intake (callgrind). Short commands use the
 * stack. Returns SL_OK, or SL_ENOMEM.
 */
static int send_formatted(struct sl_redis *r, struct sl_redis_cmd *c, int argc,
                          const char **argv, const size_t *lens)
{
    char stack[2048], *buf = stack, *p;
    size_t total = 16;
    int rc;

    for (int i = 0; i < argc; i++)
        total += 32 + (lens != NULL ? lens[i] : strlen(argv[i]));
    if (total > sizeof(stack) && (buf = malloc(total)) == NULL)
        return SL_ENOMEM;
    p = put_count(buf, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        size_t len = lens != NULL ? lens[i] : strlen(argv[i]);

        p = put_count(p, '$', len);
        memcpy(p, argv[i], len);
        p += len;
        *p++ = '\r';
        *p++ = '\n';
    }
    rc = redisAsyncFormattedCommand(r->ac, redis_on_reply, c, buf, (size_t)(p - buf));
    if (buf != stack)
        free(buf);
    return rc == REDIS_OK ? SL_OK : SL_EAGAIN;
}

/* Send on the live context whatever its state (the handshake uses this). */
static int send_argv(struct sl_redis *r, int64_t timeout_us, sl_redis_reply_fn fn, void *arg,
                     int argc, const char **argv, const size_t *lens)
{
    struct sl_redis_cmd *c;
    int rc;

    if (r->ac == NULL)
        return SL_EAGAIN;
    if ((c = cmd_new(r, timeout_us, fn, arg)) == NULL)
        return SL_ENOMEM;
    if ((rc = send_formatted(r, c, argc, argv, lens)) != SL_OK) {
        free(c);
        return rc;
    }
    cmd_track(r, c);
    return SL_OK;
}

int sl_redis_commandv(struct sl_redis *r, int64_t timeout_us, sl_redis_reply_fn fn, void *arg,
                      int argc, const char **argv, const size_t *lens)
{
    if (r->state != CONN_UP)
        return SL_EAGAIN;
    return send_argv(r, timeout_us, fn, arg, argc, argv, lens);
}

int sl_redis_command(struct sl_redis *r, int64_t timeout_us, sl_redis_reply_fn fn, void *arg,
                     const char *fmt, ...)
{
    struct sl_redis_cmd *c;
    va_list ap;
    int rc;

    if (r->state != CONN_UP || r->ac == NULL)
        return SL_EAGAIN;
    if ((c = cmd_new(r, timeout_us, fn, arg)) == NULL)
        return SL_ENOMEM;
    va_start(ap, fmt);
    rc = redisvAsyncCommand(r->ac, redis_on_reply, c, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) {
        free(c);
        return SL_EAGAIN;
    }
    cmd_track(r, c);
    return SL_OK;
}

/* --- connecting ----------------------------------------------------------- */

/* AUTH and SELECT: an error reply ends this attempt. */
static void handshake_on_step(struct sl_redis *r, const redisReply *reply, void *arg)
{
    const char *what = arg;

    if (reply == NULL || r->state != CONN_HANDSHAKE || reply->type != REDIS_REPLY_ERROR)
        return;
    snprintf(r->error, sizeof(r->error), "%s refused: %.100s", what, reply->str);
    /* Once per outage at error level: it repeats at every attempt. */
    if (!r->refusal_logged)
        sl_log_error("redis handshake refused", "name=%s addr=%s command=%s reason=\"%s\"",
                     r->name, r->addr, what, reply->str);
    r->refusal_logged = true;
    conn_drop(r);
}

/* PING, the last step: the connection is up. */
static void handshake_on_ping(struct sl_redis *r, const redisReply *reply, void *arg)
{
    (void)arg;
    if (reply == NULL || r->state != CONN_HANDSHAKE)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        handshake_on_step(r, reply, "PING");
        return;
    }
    r->state = CONN_UP;
    r->stats.up = true;
    r->failures = 0;
    r->refusal_logged = false;
    r->error[0] = '\0';
    if (r->stats.connects++ == 0)
        sl_log_info("redis up", "name=%s addr=%s", r->name, r->addr);
    else
        sl_log_info("redis up again", "name=%s addr=%s", r->name, r->addr);
    if (r->on_state != NULL)
        r->on_state(r, true, r->arg);
}

static int handshake(struct sl_redis *r)
{
    char db[16];
    const char *auth[] = {"AUTH", r->url.password};
    const char *sel[] = {"SELECT", db};
    const char *ping[] = {"PING"};

    snprintf(db, sizeof(db), "%u", r->url.db);
    if (r->url.password[0] != '\0' &&
        send_argv(r, 0, handshake_on_step, "AUTH", 2, auth, NULL) != SL_OK)
        return SL_ERR;
    if (r->url.db > 0 && send_argv(r, 0, handshake_on_step, "SELECT", 2, sel, NULL) != SL_OK)
        return SL_ERR;
    return send_argv(r, 0, handshake_on_ping, NULL, 1, ping, NULL);
}

static void conn_start(struct sl_redis *r)
{
    redisAsyncContext *ac = r->url.path[0] != '\0' ? redisAsyncConnectUnix(r->url.path)
                                                   : redisAsyncConnect(r->url.host,
                                                                       (int)r->url.port);

    if (ac == NULL || ac->err != 0) {
        set_error(r, "cannot connect: %s", ac != NULL ? ac->errstr : "out of memory");
        if (ac != NULL)
            redisAsyncFree(ac);
        r->stats.failures++;
        schedule_retry(r);
        return;
    }
    ac->data = r;
    if (redisLibeventAttach(ac, r->base) != REDIS_OK) {
        redisAsyncFree(ac);
        r->stats.failures++;
        schedule_retry(r);
        return;
    }
    redisAsyncSetConnectCallback(ac, redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, redis_on_disconnect);
    r->ac = ac;
    r->state = CONN_HANDSHAKE;
    set_error(r, "%s", "connecting");
    if (handshake(r) != SL_OK) {
        set_error(r, "%s", "cannot send the handshake");
        conn_drop(r);
    }
}

static void redis_on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_start(arg);
}

/* --- life ---------------------------------------------------------------- */

struct sl_redis *sl_redis_new(struct event_base *base, const struct sl_redis_url *url,
                              const char *name, sl_redis_state_fn on_state, void *arg)
{
    struct sl_redis *r = sl_zalloc(sizeof(*r));

    if (r == NULL)
        return NULL;
    r->base = base;
    r->url = *url;
    snprintf(r->name, sizeof(r->name), "%s", name);
    if (url->path[0] != '\0')
        snprintf(r->addr, sizeof(r->addr), "%s", url->path);
    else if (strchr(url->host, ':') != NULL)
        snprintf(r->addr, sizeof(r->addr), "[%s]:%u", url->host, url->port);
    else
        snprintf(r->addr, sizeof(r->addr), "%s:%u", url->host, url->port);
    TAILQ_INIT(&r->pending);
    r->on_state = on_state;
    r->arg = arg;
    r->seed = (uint64_t)sl_clock_now() ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)r;
    r->retry = evtimer_new(base, redis_on_retry, r);
    r->timer = evtimer_new(base, redis_on_timer, r);
    if (r->retry == NULL || r->timer == NULL) {
        sl_redis_free(r);
        return NULL;
    }
    set_error(r, "%s", "connecting");
    conn_start(r);
    return r;
}

bool sl_redis_up(const struct sl_redis *r)
{
    return r != NULL && r->state == CONN_UP;
}

size_t sl_redis_pending(const struct sl_redis *r)
{
    return r->n_pending;
}

const struct sl_redis_stats *sl_redis_stats(const struct sl_redis *r)
{
    return &r->stats;
}

const char *sl_redis_error(const struct sl_redis *r)
{
    return r->state == CONN_UP ? "" : r->error;
}

const char *sl_redis_addr(const struct sl_redis *r)
{
    return r->addr;
}

void sl_redis_free(struct sl_redis *r)
{
    redisAsyncContext *ac;

    if (r == NULL)
        return;
    ac = r->ac;
    r->ac = NULL;
    r->state = CONN_DOWN;
    r->on_state = NULL;
    if (ac != NULL)
        redisAsyncFree(ac);
    if (r->retry != NULL)
        event_free(r->retry);
    if (r->timer != NULL)
        event_free(r->timer);
    free(r);
}
