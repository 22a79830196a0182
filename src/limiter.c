/*
 * limiter.c - GCRA smoothing plus one sliding log per limit (see limiter.h).
 *
 * The smoothing schedule decides when a dispatch is *due*; the logs decide
 * whether it is *allowed*. The logs alone make the strict promise, so the
 * schedule may be generous (it keeps its phase across small timer lateness).
 */
#include "limiter.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sluice.h"

/* Largest k tried when making a fractional N whole (3 decimals need 1000). */
#define NORM_MAX_K 1000
/* Headroom so that instant + window + guard can never overflow int64_t. */
#define MAX_WINDOW_US (INT64_MAX / 4)
/* Lateness absorbed by the schedule is min(T / 4, 5 ms). */
#define CATCHUP_MAX_US INT64_C(5000)
#define GUARD_MAX_US INT64_C(3000)
#define UNANSWERED SL_LIMITER_UNANSWERED

static int is_whole(double x)
{
    return fabs(x - nearbyint(x)) <= 1e-9 * fmax(1.0, x);
}

int sl_limiter_normalize(const struct sl_limit *in, uint32_t *n, int64_t *window_us)
{
    if (in == NULL || !isfinite(in->n) || in->n <= 0.0 || in->period_us <= 0)
        return -1;
    if (in->n > (double)SL_LIMITER_MAX_N + 0.5)
        return -1;
    for (int64_t k = 1; k <= NORM_MAX_K; k++) {
        double x = in->n * (double)k;

        if (!is_whole(x))
            continue;
        x = nearbyint(x);
        if (x < 1.0 || x > (double)SL_LIMITER_MAX_N)
            return -1;
        if (in->period_us > MAX_WINDOW_US / k)
            return -1;
        *n = (uint32_t)x;
        *window_us = in->period_us * k;
        return 0;
    }
    return -1;
}

static int log_init(struct sl_limiter_log *lg, const struct sl_limit *limit)
{
    memset(lg, 0, sizeof(*lg));
    if (sl_limiter_normalize(limit, &lg->n, &lg->window_us) != 0)
        return SL_ERR;
    lg->guard_us = lg->window_us / 300;
    if (lg->guard_us > GUARD_MAX_US)
        lg->guard_us = GUARD_MAX_US;
    lg->ring = malloc((size_t)lg->n * sizeof(*lg->ring));
    return lg->ring != NULL ? SL_OK : SL_ENOMEM;
}

/* GCRA parameters from the normalised rate (logs[0]). */
static int schedule_init(struct sl_limiter *l, unsigned burst)
{
    const struct sl_limiter_log *rate = &l->logs[0];
    int64_t t = rate->window_us / rate->n + (rate->window_us % rate->n != 0);

    if (burst == 0 || (int64_t)(burst - 1) > MAX_WINDOW_US / t)
        return SL_ERR;
    l->interval_us = t;
    l->tolerance_us = (int64_t)(burst - 1) * t;
    return SL_OK;
}

int sl_limiter_init(struct sl_limiter *l, const struct sl_limit *rate, unsigned burst,
                    const struct sl_limit *quotas, size_t n_quotas)
{
    int rc = SL_ERR;

    memset(l, 0, sizeof(*l));
    if (n_quotas > SL_CONFIG_MAX_QUOTAS || (n_quotas > 0 && quotas == NULL))
        goto fail;
    for (size_t i = 0; i <= n_quotas; i++) {
        rc = log_init(&l->logs[i], i == 0 ? rate : &quotas[i - 1]);
        l->n_logs = i + 1; /* so that fini frees this ring too */
        if (rc != SL_OK)
            goto fail;
    }
    rc = schedule_init(l, burst);
    if (rc != SL_OK)
        goto fail;
    return SL_OK;

fail:
    sl_limiter_fini(l);
    return rc;
}

void sl_limiter_fini(struct sl_limiter *l)
{
    for (size_t i = 0; i < l->n_logs; i++)
        free(l->logs[i].ring);
    memset(l, 0, sizeof(*l));
}

/* The i-th entry in age order (0 = oldest); i < count. */
static int64_t log_at(const struct sl_limiter_log *lg, uint32_t i)
{
    return lg->ring[(lg->head + i) % lg->n];
}

static void log_append(struct sl_limiter_log *lg, int64_t now)
{
    if (lg->count < lg->n) {
        lg->ring[lg->count++] = now; /* head stays 0 until the ring is full */
        return;
    }
    lg->ring[lg->head] = now;
    lg->head = (lg->head + 1) % lg->n;
}

/* Index of the i-th oldest entry in the ring. */
static uint32_t log_index(const struct sl_limiter_log *lg, uint32_t i)
{
    return (lg->head + i) % lg->n;
}

/*
 * Move the newest entry equal to `taken` to `sent`, then restore the order
 * by moving it past the (newer) entries now earlier than it.
 */
static void log_shift(struct sl_limiter_log *lg, int64_t taken, int64_t sent)
{
    uint32_t i = lg->count;

    while (i > 0 && log_at(lg, i - 1) > taken)
        i--;
    if (i == 0 || log_at(lg, i - 1) != taken)
        return;
    for (i--; i + 1 < lg->count && log_at(lg, i + 1) < sent; i++)
        lg->ring[log_index(lg, i)] = log_at(lg, i + 1);
    lg->ring[log_index(lg, i)] = sent;
}

void sl_limiter_set_dating(struct sl_limiter *l, int64_t guard_us, int by_answer)
{
    for (size_t i = 0; guard_us >= 0 && i < l->n_logs; i++)
        l->logs[i].guard_us = guard_us;
    l->by_answer = by_answer != 0;
}

/* Date the oldest unanswered entry (they are the newest, at the end). */
static void log_answer(struct sl_limiter_log *lg, int64_t now)
{
    uint32_t i = lg->count;

    while (i > 0 && log_at(lg, i - 1) == UNANSWERED)
        i--;
    if (i < lg->count)
        lg->ring[log_index(lg, i)] = now;
}

void sl_limiter_answered(struct sl_limiter *l, int64_t now, uint32_t units)
{
    for (uint32_t u = 0; u < units; u++)
        for (size_t i = 0; i < l->n_logs; i++)
            log_answer(&l->logs[i], now);
}

void sl_limiter_sent(struct sl_limiter *l, int64_t taken, int64_t sent)
{
    if (sent <= taken)
        return;
    for (size_t i = 0; i < l->n_logs; i++)
        log_shift(&l->logs[i], taken, sent);
}

/* The newest instant of a log that is dated; INT64_MIN if none. */
static int64_t last_dated(const struct sl_limiter_log *lg)
{
    for (uint32_t i = lg->count; i > 0; i--) {
        int64_t at = log_at(lg, i - 1);

        if (at != UNANSWERED)
            return at;
    }
    return INT64_MIN;
}

int64_t sl_limiter_next(const struct sl_limiter *l, int64_t now)
{
    return sl_limiter_next_units(l, now, 1);
}

uint32_t sl_limiter_max_units(const struct sl_limiter *l)
{
    uint32_t m = UINT32_MAX;

    for (size_t i = 0; i < l->n_logs; i++)
        if (l->logs[i].n < m)
            m = l->logs[i].n;
    return m;
}

int64_t sl_limiter_next_units(const struct sl_limiter *l, int64_t now, uint32_t units)
{
    int64_t next = now;

    if (l->started && l->tat_us - l->tolerance_us > next)
        next = l->tat_us - l->tolerance_us;
    for (size_t i = 0; i < l->n_logs; i++) {
        const struct sl_limiter_log *lg = &l->logs[i];
        int64_t at;

        if (units > lg->n)
            return SL_LIMITER_UNANSWERED; /* never: more than a window holds */
        if (lg->count == 0)
            continue;
        /* Time never runs backwards for a log: its instants stay sorted.
         * (An unanswered entry is no instant yet: the dating floor skips it.) */
        at = last_dated(lg);
        if (at > next)
            next = at;
        /* Room for `units` more once the (n - units + 1)-th newest is old enough. */
        if (lg->count + units <= lg->n)
            continue;
        at = log_at(lg, lg->count + units - lg->n - 1) + lg->window_us + lg->guard_us;
        if (at > next)
            next = at;
    }
    return next;
}

int sl_limiter_take(struct sl_limiter *l, int64_t now)
{
    return sl_limiter_take_units(l, now, 1);
}

int sl_limiter_take_units(struct sl_limiter *l, int64_t now, uint32_t units)
{
    int64_t catchup = l->interval_us / 4;
    int64_t base = now;

    if (units == 0 || now < sl_limiter_next_units(l, now, units))
        return SL_EAGAIN;
    if (catchup > CATCHUP_MAX_US)
        catchup = CATCHUP_MAX_US;
    /* Early (burst) or a little late: keep the schedule's phase. */
    if (l->started && now <= l->tat_us + catchup)
        base = l->tat_us;
    l->tat_us = base + (int64_t)units * l->interval_us;
    l->started = 1;
    for (uint32_t u = 0; u < units; u++)
        for (size_t i = 0; i < l->n_logs; i++)
            log_append(&l->logs[i], l->by_answer ? UNANSWERED : now);
    return SL_OK;
}

/* Every log records every dispatch, so the fullest one has the most history. */
static const struct sl_limiter_log *longest_history(const struct sl_limiter *old)
{
    const struct sl_limiter_log *best = NULL;

    for (size_t i = 0; i < old->n_logs; i++) {
        if (best == NULL || old->logs[i].count > best->count)
            best = &old->logs[i];
    }
    return best;
}

void sl_limiter_inherit(struct sl_limiter *l, const struct sl_limiter *old, int64_t now)
{
    const struct sl_limiter_log *src = longest_history(old);

    l->tat_us = old->tat_us;
    l->started = old->started;
    if (src == NULL)
        return;
    for (size_t i = 0; i < l->n_logs; i++) {
        struct sl_limiter_log *lg = &l->logs[i];
        uint32_t m = src->count < lg->n ? src->count : lg->n;

        lg->head = 0;
        lg->count = m;
        for (uint32_t j = 0; j < m; j++) {
            int64_t at = log_at(src, src->count - m + j);

            lg->ring[j] = at == UNANSWERED && !l->by_answer ? now : at;
        }
    }
}

int64_t sl_limiter_last(const struct sl_limiter *l, int64_t now)
{
    int64_t last = INT64_MIN;

    for (size_t i = 0; i < l->n_logs; i++) {
        const struct sl_limiter_log *lg = &l->logs[i];
        int64_t at;

        if (lg->count == 0)
            continue;
        at = log_at(lg, lg->count - 1);
        if (at == UNANSWERED)
            at = now;
        if (at > last)
            last = at;
    }
    return last;
}

void sl_limiter_hold_until(struct sl_limiter *l, int64_t at)
{
    if (!l->started || l->tat_us < at + l->tolerance_us)
        l->tat_us = at + l->tolerance_us;
    l->started = 1;
}

double sl_limiter_allows_in(const struct sl_limiter *l, int64_t window_us)
{
    double least = -1;

    for (size_t i = 0; i < l->n_logs; i++) {
        const struct sl_limiter_log *lg = &l->logs[i];
        int64_t spans = window_us <= 0 ? 1 : (window_us + lg->window_us - 1) / lg->window_us;
        double n = (double)lg->n * (double)spans;

        if (least < 0 || n < least)
            least = n;
    }
    return least;
}
