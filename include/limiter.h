/*
 * limiter.h - pure strict rate limiter: smoothing plus a sliding log.
 *
 * Two mechanisms together (DESIGN section 3):
 *  - smoothing (GCRA): emission interval T = P/N, tolerance (burst-1)*T; the
 *    next eligible instant follows the theoretical arrival time, so a timer
 *    that fires a little late does not lower the rate (lateness up to
 *    min(T/4, 5 ms) is absorbed; a longer idle resets the schedule);
 *  - strictness: per limit (rate and each quota) a ring of the last n
 *    dispatch instants; a dispatch is allowed only when the n-th previous one
 *    is at least window + guard old, so no half-open window of length P ever
 *    holds more than n dispatches, even with a little jitter between our
 *    dispatch and the upstream's arrival clock.
 *
 * Jitter-proof dating (sl_limiter_set_dating): the upstream's clock sees a
 * dispatch somewhere between our send and our receipt of its answer. With
 * `by_answer`, a dispatch counts in the logs as unanswered (later than any
 * instant) until sl_limiter_answered() dates it by the answer, so a new
 * dispatch goes only once the n-th previous one was answered a window ago:
 * no window of the upstream's clock can hold more than n, whatever the
 * network delay. Answers are dated in the order they come, which keeps each
 * log sorted. The cost: each window stretches by about one round trip.
 *
 * Fractional limits are normalised: N/P with N not an integer becomes
 * (N*k)/(P*k) for the smallest integer k (<= 1000) making N*k whole, so 0.5/s
 * means 1 per 2 s and 2.5/s means 5 per 2 s.
 *
 * No I/O, no clock: every call takes `now` (monotonic microseconds).
 * Ownership: the limiter owns its rings; sl_limiter_fini() frees them.
 */
#ifndef SL_LIMITER_H
#define SL_LIMITER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define SL_LIMITER_MAX_LOGS (1 + SL_CONFIG_MAX_QUOTAS)
#define SL_LIMITER_MAX_N 10000000u /* ring entries per limit (80 MB) */
/*
 * How a log holds a dispatch not yet answered (dating by answers). When
 * sl_limiter_next() returns this or later, only an answer can make the next
 * dispatch possible: arm no timer for it.
 */
#define SL_LIMITER_UNANSWERED (INT64_MAX / 2)

/* One strict window: at most n dispatches in any [t, t + window_us). */
struct sl_limiter_log {
    int64_t window_us;
    int64_t guard_us;  /* extra age required: min(window/300, 3 ms), or as the route sets */
    uint32_t n;
    uint32_t count;    /* entries used, <= n */
    uint32_t head;     /* index of the oldest entry once count == n */
    int64_t *ring;     /* n dispatch instants, owned */
};

struct sl_limiter {
    int64_t interval_us;   /* GCRA T, rounded up */
    int64_t tolerance_us;  /* (burst - 1) * T */
    int64_t tat_us;        /* theoretical arrival time of the next dispatch */
    int started;           /* tat_us is meaningful */
    int by_answer;         /* jitter-proof: dispatches are dated by their answers */
    struct sl_limiter_log logs[SL_LIMITER_MAX_LOGS];
    size_t n_logs;         /* logs[0] is the rate, then the quotas */
};

/* Normalise a limit to whole n per window; returns -1 if not representable. */
int sl_limiter_normalize(const struct sl_limit *in, uint32_t *n, int64_t *window_us);

/*
 * Initialise from a rate, a burst and optional quotas.
 * Returns SL_OK, SL_ERR for an invalid limit, SL_ENOMEM; on failure the
 * limiter holds nothing.
 */
int sl_limiter_init(struct sl_limiter *l, const struct sl_limit *rate, unsigned burst,
                    const struct sl_limit *quotas, size_t n_quotas);

void sl_limiter_fini(struct sl_limiter *l);

/*
 * Earliest instant >= now at which sl_limiter_take() will succeed: the
 * latest of now, the schedule (tat - tolerance) and, for each full log, its
 * oldest instant + window + guard. It is never before the last dispatch, so
 * a clock that steps back cannot unsort the logs.
 */
int64_t sl_limiter_next(const struct sl_limiter *l, int64_t now);

/* Record a dispatch at `now`: SL_OK, or SL_EAGAIN (nothing changed) if now < next. */
int sl_limiter_take(struct sl_limiter *l, int64_t now);

/*
 * The same for a dispatch that costs `units` (>= 1) of every limit: it
 * counts as `units` dispatches at the same instant in every log, and moves
 * the schedule `units` intervals on. A cost above a log's n can never go
 * (the config refuses such routes).
 */
int64_t sl_limiter_next_units(const struct sl_limiter *l, int64_t now, uint32_t units);
int sl_limiter_take_units(struct sl_limiter *l, int64_t now, uint32_t units);

/* Whole dispatches of `units` each that one window of every log can hold. */
uint32_t sl_limiter_max_units(const struct sl_limiter *l);

/*
 * A dispatch taken at `taken` actually left at `sent` (a new upstream
 * connection had to be opened first): record the later instant, so that the
 * connect time does not eat into the guard. Only ever makes the limiter
 * stricter; a `taken` no longer in the logs (rolled out, or a reload in
 * between) is ignored.
 */
void sl_limiter_sent(struct sl_limiter *l, int64_t taken, int64_t sent);

/*
 * Per route: the guard of every log (< 0 keeps the default) and whether
 * dispatches are dated by their answers (see above). Call after init,
 * before the first take.
 */
void sl_limiter_set_dating(struct sl_limiter *l, int64_t guard_us, int by_answer);

/*
 * One dispatch of `units` under way got its answer (or ended without one)
 * at `now`: that many of the oldest still unanswered entries of each log
 * are dated `now`. Nothing to do when none is unanswered (dating by send),
 * so callers need not know the mode.
 */
void sl_limiter_answered(struct sl_limiter *l, int64_t now, uint32_t units);

/*
 * Carry history over from `old` into freshly initialised `l` (reload), so
 * that a reload never lets a burst through: the schedule (tat, started) as
 * is, and into each new log the most recent min(n, available) dispatch
 * instants, oldest first. Every log records every dispatch, so the source is
 * whichever old log holds the most instants; a quota added by the reload
 * therefore starts with real history, not empty. `old` is not changed.
 * Dispatches still unanswered stay so when `l` dates by answers, and are
 * dated `now` when it does not (they left no later than that).
 */
void sl_limiter_inherit(struct sl_limiter *l, const struct sl_limiter *old, int64_t now);

/* The newest dispatch instant (an unanswered one counts as `now`); INT64_MIN if none. */
int64_t sl_limiter_last(const struct sl_limiter *l, int64_t now);

/* Nothing is dispatched before `at` (a reload changed what the history counted). */
void sl_limiter_hold_until(struct sl_limiter *l, int64_t at);

/*
 * Most units the limits allow in any window of `window_us`: for each limit
 * n per P, n times the windows of P it can overlap (ceil(window / P)),
 * the least over the limits. For comparing with what an upstream announces.
 */
double sl_limiter_allows_in(const struct sl_limiter *l, int64_t window_us);

#endif
