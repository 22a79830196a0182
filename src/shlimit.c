/*
 * shlimit.c - the shared limiter (see shlimit.h): the script's arguments
 * and answers, a route's decision bookkeeping, and the client that loads
 * the script and runs it on its own Redis connection.
 *
 * Its own connection, not the jobs' one: a decision must not queue behind
 * a pipeline of job writes, and its round trip is what the metrics show.
 */
#include "shlimit.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "redis.h"
#include "sluice.h"

/* Lateness the GCRA schedule absorbs: min(T / 4, 5 ms), as the memory limiter. */
#define CATCHUP_MAX_US INT64_C(5000)
/* The route hash outlives idleness by this much (the epoch must survive a quiet day). */
#define STATE_TTL_MIN_MS INT64_C(86400000)

const char *sl_shlimit_script(void)
{
    return (const char *)sl_shlimit_lua;
}

/* --- arguments and answers (pure) ----------------------------------------- */

void sl_shlimit_limits_from(struct sl_shlimit_limits *out, const struct sl_limiter *l)
{
    memset(out, 0, sizeof(*out));
    out->interval_us = l->interval_us;
    out->tolerance_us = l->tolerance_us;
    out->catchup_us = l->interval_us / 4 < CATCHUP_MAX_US ? l->interval_us / 4 : CATCHUP_MAX_US;
    out->n_logs = l->n_logs;
    for (size_t i = 0; i < l->n_logs; i++) {
        out->n[i] = l->logs[i].n;
        out->window_us[i] = l->logs[i].window_us;
        out->guard_us[i] = l->logs[i].guard_us;
    }
}

int64_t sl_shlimit_span(const struct sl_shlimit_limits *lim)
{
    int64_t span = 0;

    for (size_t i = 0; i < lim->n_logs; i++)
        if (lim->window_us[i] + lim->guard_us[i] > span)
            span = lim->window_us[i] + lim->guard_us[i];
    return span;
}

/* Append one argument (text) to c; -1 when buf is full. */
static int put(struct sl_shlimit_cmd *c, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int put(struct sl_shlimit_cmd *c, size_t *used, const char *fmt, ...)
{
    size_t room = sizeof(c->buf) - *used;
    va_list ap;
    int n;

    if (c->argc >= SL_SHLIMIT_ARGS)
        return -1;
    va_start(ap, fmt);
    n = vsnprintf(c->buf + *used, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room)
        return -1;
    c->argv[c->argc] = c->buf + *used;
    c->lens[c->argc] = (size_t)n;
    c->argc++;
    *used += (size_t)n + 1;
    return 0;
}

static int put_raw(struct sl_shlimit_cmd *c, const char *s, size_t len)
{
    if (c->argc >= SL_SHLIMIT_ARGS)
        return -1;
    c->argv[c->argc] = s;
    c->lens[c->argc] = len;
    c->argc++;
    return 0;
}

static int64_t state_ttl_ms(const struct sl_shlimit_limits *lim)
{
    int64_t twice = 2 * (sl_shlimit_span(lim) / 1000) + 1000;

    return twice > STATE_TTL_MIN_MS ? twice : STATE_TTL_MIN_MS;
}

int sl_shlimit_encode(struct sl_shlimit_cmd *c, const char *sha, const char *prefix,
                      const char *route, const struct sl_shlimit_limits *lim,
                      const struct sl_shlimit_question *q)
{
    size_t used = 0;
    int bad = 0;

    c->argc = 0;
    if (lim->n_logs == 0 || lim->n_logs > SL_LIMITER_MAX_LOGS)
        return SL_ERR;
    if (sha != NULL && sha[0] != '\0')
        bad |= put_raw(c, "EVALSHA", 7) | put_raw(c, sha, strlen(sha));
    else
        bad |= put_raw(c, "EVAL", 4) | put_raw(c, sl_shlimit_script(), sl_shlimit_lua_len);
    bad |= put_raw(c, "3", 1);
    /* The hash tag: both keys of a route land in one Redis Cluster slot. */
    bad |= put(c, &used, "%s{%s}:limit", prefix, route);
    bad |= put(c, &used, "%s{%s}:log", prefix, route);
    bad |= put(c, &used, "%s{%s}:turns", prefix, route);
    bad |= put(c, &used, "%" PRIu64, q->epoch);
    bad |= put(c, &used, "%" PRIu32, q->k);
    bad |= put(c, &used, "%" PRIu32, q->units > 0 ? q->units : 1);
    bad |= put(c, &used, "%" PRId64, lim->interval_us);
    bad |= put(c, &used, "%" PRId64, lim->tolerance_us);
    bad |= put(c, &used, "%" PRId64, lim->catchup_us);
    bad |= put(c, &used, "%" PRId64, SL_SHLIMIT_GRACE_US);
    bad |= put(c, &used, "%" PRId64, state_ttl_ms(lim));
    bad |= put(c, &used, "%016" PRIx64, q->instance);
    bad |= put(c, &used, "%zu", lim->n_logs);
    for (size_t i = 0; i < lim->n_logs; i++) {
        bad |= put(c, &used, "%" PRIu32, lim->n[i]);
        bad |= put(c, &used, "%" PRId64, lim->window_us[i]);
        bad |= put(c, &used, "%" PRId64, lim->guard_us[i]);
    }
    return bad == 0 ? SL_OK : SL_ERR;
}

int sl_shlimit_decode(const redisReply *reply, struct sl_shlimit_answer *out, bool *noscript)
{
    const redisReply *granted, *wait, *epoch, *now;

    *noscript = false;
    memset(out, 0, sizeof(*out));
    if (reply == NULL)
        return SL_ERR;
    if (reply->type == REDIS_REPLY_ERROR) {
        *noscript = reply->str != NULL && strncmp(reply->str, "NOSCRIPT", 8) == 0;
        return SL_ERR;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 4)
        return SL_ERR;
    granted = reply->element[0];
    wait = reply->element[1];
    epoch = reply->element[2];
    now = reply->element[3];
    if (granted->type != REDIS_REPLY_INTEGER || wait->type != REDIS_REPLY_INTEGER ||
        epoch->type != REDIS_REPLY_INTEGER || now->type != REDIS_REPLY_INTEGER)
        return SL_ERR;
    if (granted->integer < 0 || granted->integer > (long long)SL_SHLIMIT_MAX_ASK ||
        wait->integer < 0 || epoch->integer <= 0)
        return SL_ERR;
    out->granted = (uint32_t)granted->integer;
    out->wait_us = wait->integer;
    out->epoch = (uint64_t)epoch->integer;
    out->redis_now_us = now->integer;
    if (out->granted == 0 && out->wait_us == 0)
        return SL_ERR; /* nothing, and no word on when */
    return SL_OK;
}

/* --- a route's decisions (pure) ------------------------------------------ */

void sl_shlimit_route_init(struct sl_shlimit_route *st, int64_t guard_us)
{
    memset(st, 0, sizeof(*st));
    st->phase = SL_SHLIMIT_IDLE;
    /*
     * A send is never before its recorded instant and at most budget after
     * it; a quarter of the guard is left for the way to the upstream
     * varying. (Two sends n apart then arrive at least P + guard - budget
     * - that variation >= P apart, as in memory mode.)
     */
    st->budget_us = guard_us - guard_us / 4;
}

/*
 * May a send at `now` go on the instant Redis recorded? That instant is
 * after the ask left, so the send is at most now - asked after it.
 */
static bool usable(const struct sl_shlimit_route *st, int64_t now)
{
    return now - st->asked_us <= st->budget_us;
}

enum sl_shlimit_step sl_shlimit_route_step(struct sl_shlimit_route *st, int64_t now,
                                           uint32_t units, int64_t *at)
{
    if (units == 0)
        units = 1;
    if (st->credit > 0) {
        if (st->credit >= units && usable(st, now)) {
            st->credit -= units;
            return SL_SHLIMIT_STEP_GO;
        }
        /* Aged past the budget (a slow reply, a busy loop), or the head costs more. */
        st->late++;
        st->credit = 0;
    }
    switch (st->phase) {
    case SL_SHLIMIT_ASKING:
        return SL_SHLIMIT_STEP_BUSY;
    case SL_SHLIMIT_WAITING:
        if (now < st->at_us) {
            *at = st->at_us;
            return SL_SHLIMIT_STEP_SLEEP;
        }
        st->phase = SL_SHLIMIT_IDLE;
        return SL_SHLIMIT_STEP_ASK;
    case SL_SHLIMIT_IDLE:
    default:
        return SL_SHLIMIT_STEP_ASK;
    }
}

void sl_shlimit_route_answer(struct sl_shlimit_route *st, const struct sl_shlimit_answer *a,
                             uint32_t units, int64_t asked, int64_t now)
{
    if (units == 0)
        units = 1;
    st->epoch = a->epoch;
    st->credit = a->granted * units;
    st->asked_us = asked;
    if (a->wait_us > 0) {
        /* Never before Redis's instant: it decided no later than `now`. */
        st->phase = SL_SHLIMIT_WAITING;
        st->at_us = now + a->wait_us;
    } else {
        st->phase = SL_SHLIMIT_IDLE;
    }
}

void sl_shlimit_route_failed(struct sl_shlimit_route *st)
{
    st->phase = SL_SHLIMIT_IDLE;
    st->credit = 0;
}

void sl_shlimit_route_settle(struct sl_shlimit_route *st)
{
    if (st->credit > 0)
        st->late++;
    st->credit = 0;
}

void sl_shlimit_route_reset(struct sl_shlimit_route *st)
{
    if (st->phase != SL_SHLIMIT_ASKING)
        st->phase = SL_SHLIMIT_IDLE;
    st->credit = 0; /* grants: Redis may not hold them any more */
}

/* --- the client ---------------------------------------------------------- */

/* One decision (or record) in flight. `st` is NULL once its route let go, and for a record. */
struct sl_shlimit_pending {
    struct sl_shlimit *s;
    struct sl_shlimit_route *st;
    int64_t asked_us;
    uint64_t epoch;
    uint32_t units;
    /* To send it again whole after a NOSCRIPT. */
    char route[SL_CONFIG_NAME_LEN];
    struct sl_shlimit_limits lim;
    uint32_t k;                         /* 0: a record (sl_shlimit_record) */
    bool resent;
};

struct sl_shlimit {
    struct sl_redis *redis;             /* owned */
    char prefix[SL_CONFIG_NAME_LEN];
    char sha[48];                       /* from SCRIPT LOAD; "" = send the script (EVAL) */
    uint64_t instance;                  /* this process in the turns (random) */
    struct sl_shlimit_hooks hooks;
    void *arg;
    bool closing;
    uint64_t decisions[SL_SHARED_RESULT_COUNT];
    int64_t blocked_us;
    int64_t refused_since_us;           /* an ask found Redis down at this instant; 0 = none */
    uint64_t records;                   /* dispatches recorded again after a slow send */
};

static void count(struct sl_shlimit *s, enum sl_shared_result r)
{
    s->decisions[r]++;
}

static void shlimit_on_load(struct sl_redis *r, const redisReply *reply, void *arg)
{
    struct sl_shlimit *s = arg;

    (void)r;
    if (reply == NULL || reply->type != REDIS_REPLY_STRING || reply->len >= sizeof(s->sha)) {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            sl_log_error("shared limit: SCRIPT LOAD refused", "reason=\"%s\"", reply->str);
        return; /* decisions send the script whole until a load succeeds */
    }
    memcpy(s->sha, reply->str, reply->len);
    s->sha[reply->len] = '\0';
}

static void shlimit_on_state(struct sl_redis *r, bool up, void *arg)
{
    struct sl_shlimit *s = arg;
    const char *load[] = {"SCRIPT", "LOAD", sl_shlimit_script()};
    size_t lens[] = {6, 4, sl_shlimit_lua_len};

    if (up) {
        /* Before any decision on this connection: replies come in order. */
        s->sha[0] = '\0';
        if (sl_redis_commandv(r, 0, shlimit_on_load, s, 3, load, lens) != SL_OK)
            sl_log_warn("shared limit: cannot send SCRIPT LOAD", NULL);
        if (s->refused_since_us != 0) {
            s->blocked_us += sl_clock_now() - s->refused_since_us;
            s->refused_since_us = 0;
        }
    }
    if (s->hooks.state != NULL)
        s->hooks.state(up, s->arg);
}

static int send_pending(struct sl_shlimit *s, struct sl_shlimit_pending *p, const char *sha);

static void shlimit_on_reply(struct sl_redis *r, const redisReply *reply, void *arg)
{
    struct sl_shlimit_pending *p = arg;
    struct sl_shlimit *s = p->s;
    struct sl_shlimit_route *st = p->st;
    struct sl_shlimit_answer a;
    int64_t now = sl_clock_now();
    bool noscript;
    int rc = sl_shlimit_decode(reply, &a, &noscript);

    (void)r;
    /* A record: nothing waits for it; count a failure. */
    if (p->k == 0) {
        if (noscript && !p->resent && !s->closing) {
            s->sha[0] = '\0';
            p->resent = true;
            if (send_pending(s, p, NULL) == SL_OK)
                return;
        }
        if (reply == NULL || reply->type != REDIS_REPLY_ARRAY)
            count(s, SL_SHARED_ERROR);
        free(p);
        return;
    }
    /* The script was flushed (or never loaded): send it whole, once. */
    if (rc != SL_OK && noscript && !p->resent && !s->closing && st != NULL) {
        s->sha[0] = '\0';
        p->resent = true;
        if (send_pending(s, p, NULL) == SL_OK)
            return;
    }
    if (st != NULL) {
        st->pending = NULL;
        s->blocked_us += now - p->asked_us;
        if (rc == SL_OK) {
            sl_shlimit_route_answer(st, &a, p->units, p->asked_us, now);
            count(s, a.granted > 0 ? SL_SHARED_GO : SL_SHARED_WAIT);
        } else {
            sl_shlimit_route_failed(st);
            count(s, SL_SHARED_ERROR);
            if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
                sl_log_warn("shared limit: the script failed", "route=%s reason=\"%.200s\"",
                            p->route, reply->str);
        }
        if (!s->closing && s->hooks.answered != NULL)
            s->hooks.answered(st, s->arg);
    }
    free(p);
}

static int send_pending(struct sl_shlimit *s, struct sl_shlimit_pending *p, const char *sha)
{
    struct sl_shlimit_question q = {p->epoch, p->k, p->units, s->instance};
    struct sl_shlimit_cmd *c = malloc(sizeof(*c));
    int rc;

    if (c == NULL)
        return SL_ENOMEM;
    rc = sl_shlimit_encode(c, sha, s->prefix, p->route, &p->lim, &q);
    /* hiredis copies the arguments into its output buffer before returning. */
    if (rc == SL_OK)
        rc = sl_redis_commandv(s->redis, SL_SHLIMIT_TIMEOUT_US, shlimit_on_reply, p, c->argc,
                               c->argv, c->lens);
    free(c);
    return rc;
}

int sl_shlimit_ask(struct sl_shlimit *s, struct sl_shlimit_route *st, const char *route,
                   const struct sl_shlimit_limits *lim, uint32_t k, uint32_t units)
{
    struct sl_shlimit_pending *p;
    int rc;

    if (!sl_redis_up(s->redis)) {
        if (s->refused_since_us == 0)
            s->refused_since_us = sl_clock_now();
        return SL_EAGAIN;
    }
    p = sl_zalloc(sizeof(*p));
    if (p == NULL)
        return SL_ENOMEM;
    p->s = s;
    p->st = st;
    p->epoch = st->epoch;
    p->asked_us = sl_clock_now();
    p->units = units > 0 ? units : 1;
    p->k = k == 0 ? 1 : k > SL_SHLIMIT_MAX_ASK ? SL_SHLIMIT_MAX_ASK : k;
    p->lim = *lim;
    snprintf(p->route, sizeof(p->route), "%s", route);
    rc = send_pending(s, p, s->sha);
    if (rc != SL_OK) {
        free(p);
        return rc;
    }
    st->pending = p;
    st->phase = SL_SHLIMIT_ASKING;
    st->credit = 0;
    return SL_OK;
}

int sl_shlimit_record(struct sl_shlimit *s, const char *route,
                      const struct sl_shlimit_limits *lim, uint32_t units, uint64_t epoch)
{
    struct sl_shlimit_pending *p;
    int rc;

    if (!sl_redis_up(s->redis))
        return SL_EAGAIN;
    p = sl_zalloc(sizeof(*p));
    if (p == NULL)
        return SL_ENOMEM;
    p->s = s;
    p->epoch = epoch;
    p->asked_us = sl_clock_now();
    p->units = units > 0 ? units : 1;
    p->k = 0;
    p->lim = *lim;
    snprintf(p->route, sizeof(p->route), "%s", route);
    rc = send_pending(s, p, s->sha);
    if (rc != SL_OK)
        free(p);
    else
        s->records++;
    return rc;
}

int64_t sl_shlimit_record_after(const struct sl_shlimit_route *st)
{
    /* The guard's last quarter is for the way to the upstream: half of it for a connect. */
    return (st->budget_us / 3) / 2;
}

void sl_shlimit_route_fini(struct sl_shlimit_route *st)
{
    if (st->pending != NULL)
        st->pending->st = NULL;
    st->pending = NULL;
}

struct sl_shlimit *sl_shlimit_new(struct event_base *base, const struct sl_redis_url *url,
                                  const char *prefix, const struct sl_shlimit_hooks *hooks,
                                  void *arg)
{
    struct sl_shlimit *s = sl_zalloc(sizeof(*s));

    if (s == NULL)
        return NULL;
    snprintf(s->prefix, sizeof(s->prefix), "%s", prefix);
    /* Random, so that a restarted process is not taken for the old one. */
    if (getrandom(&s->instance, sizeof(s->instance), 0) != (ssize_t)sizeof(s->instance))
        s->instance = (uint64_t)sl_clock_now() ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)s;
    s->hooks = *hooks;
    s->arg = arg;
    s->redis = sl_redis_new(base, url, "shared_limit", shlimit_on_state, s);
    if (s->redis == NULL) {
        free(s);
        return NULL;
    }
    return s;
}

bool sl_shlimit_up(const struct sl_shlimit *s)
{
    return s != NULL && sl_redis_up(s->redis);
}

const char *sl_shlimit_error(const struct sl_shlimit *s)
{
    return sl_redis_error(s->redis);
}

const char *sl_shlimit_addr(const struct sl_shlimit *s)
{
    return sl_redis_addr(s->redis);
}

void sl_shlimit_stats(const struct sl_shlimit *s, struct sl_shlimit_stats *out)
{
    int64_t blocked = s->blocked_us;

    memset(out, 0, sizeof(*out));
    out->up = sl_redis_up(s->redis);
    memcpy(out->decisions, s->decisions, sizeof(out->decisions));
    if (s->refused_since_us != 0)
        blocked += sl_clock_now() - s->refused_since_us;
    out->blocked_seconds = (double)blocked / 1e6;
    out->redis = sl_redis_stats(s->redis);
    out->records = s->records;
}

void sl_shlimit_count_late(struct sl_shlimit *s, uint64_t n)
{
    s->decisions[SL_SHARED_LATE] += n;
}

void sl_shlimit_free(struct sl_shlimit *s)
{
    if (s == NULL)
        return;
    s->closing = true;
    sl_redis_free(s->redis);
    free(s);
}
