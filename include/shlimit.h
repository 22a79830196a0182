/*
 * shlimit.h - the shared limiter: a route's limits (rate, burst, every
 * quota, in units) decided in Redis, so that every instance with the same
 * [redis] url and prefix keeps one strict promise together (SPEC 1.1,
 * [redis] shared_limit).
 *
 * One Lua script (loaded once with SCRIPT LOAD, run by EVALSHA, sent whole
 * with EVAL after a NOSCRIPT) keeps, per route, the same two mechanisms as
 * the memory limiter (limiter.h), on Redis's own clock (TIME) alone:
 *  - "PREFIX{ROUTE}:log", a list of the newest dispatch instants (as many
 *    as the largest n of the route's limits): a dispatch of u units goes
 *    only once, for every limit n/P, the (n-u+1)-th newest instant is at
 *    least P + guard old, so no window of length P holds more than n;
 *  - "PREFIX{ROUTE}:limit", a hash with the GCRA schedule (tat), the
 *    newest instant trimmed off the log, a hold after Redis lost its data,
 *    and the route's epoch (below);
 *  - "PREFIX{ROUTE}:turns", a sorted set of the instances waiting with a
 *    backlog, each with the instant its turn comes: a free slot goes to
 *    the instance whose turn is due first, so equal backlogs share the
 *    rate (nobody wins by asking sooner); a turn not taken within
 *    SL_SHLIMIT_GRACE_US of its instant (its instance went away) is
 *    forgotten.
 * The script takes the limits as arguments on every call (a reload takes
 * effect as each instance reloads; the log is only instants, so a lower n
 * simply waits) and answers with m of the k dispatches asked for that may
 * go now (recorded now, on Redis's clock) and, when it wants more, when
 * this instance's next turn comes: it arms its timer for then and asks
 * again (never polls). Waits are relative to Redis's now: no clock is
 * compared across hosts. One round trip per decision, which also queues
 * the next turn.
 *
 * Timing: an instant recorded in Redis and the moment our request leaves
 * differ by the round trip and our own delay in acting on the reply.
 * Redis decided somewhere between our send and its reply, so a grant is
 * used only while the send is provably at most a budget (3/4 of the
 * route's window_guard) after the ask left; otherwise it is dropped
 * (counted "late": a recorded and unused dispatch only costs rate) and the
 * route asks again. The last quarter of the guard covers the variation of
 * the way to the upstream, as the whole guard does in memory mode. A
 * late timer costs nothing: the instant is taken when Redis decides.
 *
 * Redis losing its data (a restart without persistence, FLUSHALL) is told
 * by the epoch (the instant the route's state was made): an instance that
 * saw another epoch makes the script hold the route until the state is its
 * longest window + guard old, since nobody can know what was sent before. Grants and reservations are dropped when
 * the connection goes down. While Redis is unreachable nothing is asked and
 * nothing dispatched (no local fallback).
 *
 * Pure parts (encoding, decoding, a route's decision bookkeeping) take
 * `now` and do no I/O; struct sl_shlimit is the client on the event loop.
 *
 * Ownership: struct sl_shlimit owns its Redis connection and every ask in
 * flight. struct sl_shlimit_route lives in its route; an ask in flight
 * points back at it until sl_shlimit_route_fini() lets go (the reply is then
 * dropped).
 */
#ifndef SL_SHLIMIT_H
#define SL_SHLIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "config.h"
#include "limiter.h"
#include "metrics.h"

struct event_base;
struct sl_redis_stats;
struct sl_shlimit;
struct sl_shlimit_pending;

/* Dispatches asked for in one decision (at most one pass of the dispatcher). */
#define SL_SHLIMIT_MAX_ASK 64u
/* A turn not taken this long after it came is forgotten (its instance left). */
#define SL_SHLIMIT_GRACE_US (50 * INT64_C(1000))
/* The timeout of one decision: past it the connection is taken for dead. */
#define SL_SHLIMIT_TIMEOUT_US (1000 * INT64_C(1000))

/* A route's limits as the script takes them (from its memory limiter). */
struct sl_shlimit_limits {
    int64_t interval_us;               /* GCRA T */
    int64_t tolerance_us;              /* (burst - 1) * T */
    int64_t catchup_us;                /* lateness the schedule absorbs */
    size_t n_logs;                     /* rate, then quotas */
    uint32_t n[SL_LIMITER_MAX_LOGS];
    int64_t window_us[SL_LIMITER_MAX_LOGS];
    int64_t guard_us[SL_LIMITER_MAX_LOGS];
};

void sl_shlimit_limits_from(struct sl_shlimit_limits *out, const struct sl_limiter *l);

/* The longest window + guard of the limits (how long a hold lasts). */
int64_t sl_shlimit_span(const struct sl_shlimit_limits *lim);

/* One decision asked for. */
struct sl_shlimit_question {
    uint64_t epoch;                    /* the route's epoch as last seen; 0 = none */
    uint32_t k;                        /* dispatches wanted, 1..SL_SHLIMIT_MAX_ASK; 0: record one */
    uint32_t units;                    /* units of each */
    uint64_t instance;                 /* who asks (its turn in the queue) */
};

#define SL_SHLIMIT_ARGS (12 + 3 * SL_LIMITER_MAX_LOGS)

/* An encoded EVALSHA (or EVAL): argv points into buf. */
struct sl_shlimit_cmd {
    int argc;
    const char *argv[SL_SHLIMIT_ARGS];
    size_t lens[SL_SHLIMIT_ARGS];
    char buf[2 * (SL_CONFIG_NAME_LEN * 2 + 32) + 24 * SL_SHLIMIT_ARGS];
};

/*
 * Encode a decision for route `route` under `prefix`: EVALSHA with `sha`,
 * or EVAL with the script itself when `sha` is NULL or "". Keys:
 * PREFIX{ROUTE}:limit, :log and :turns. Returns SL_OK, or SL_ERR when
 * a name does not fit. `c` must not move while its argv is in use.
 */
int sl_shlimit_encode(struct sl_shlimit_cmd *c, const char *sha, const char *prefix,
                      const char *route, const struct sl_shlimit_limits *lim,
                      const struct sl_shlimit_question *q);

/* The script's text (for EVAL and SCRIPT LOAD). */
const char *sl_shlimit_script(void);

/* src/shlimit.lua, embedded at build time (cmake/EmbedFile.cmake); _len without the NUL. */
extern const unsigned char sl_shlimit_lua[];
extern const size_t sl_shlimit_lua_len;

struct sl_shlimit_answer {
    uint32_t granted;                  /* may go now */
    int64_t wait_us;                   /* > 0: ask again then (relative to Redis's now); 0: no turn */
    uint64_t epoch;
    int64_t redis_now_us;              /* Redis's TIME when it decided (logs, tests) */
};



/*
 * Read the script's reply {granted, wait_us, epoch, now}. Returns SL_OK, or
 * SL_ERR for anything else (NULL, an error reply, a malformed array);
 * *noscript is set when the error was NOSCRIPT (the script must be sent).
 */
int sl_shlimit_decode(const redisReply *reply, struct sl_shlimit_answer *out, bool *noscript);

/* --- a route's decisions (pure bookkeeping) ------------------------------ */

enum sl_shlimit_phase {
    SL_SHLIMIT_IDLE,                   /* nothing in hand: ask when there is a head */
    SL_SHLIMIT_ASKING,                 /* a decision is in flight: its reply kicks the route */
    SL_SHLIMIT_WAITING,                /* our next turn: ask again at `at_us` */
};

struct sl_shlimit_route {
    enum sl_shlimit_phase phase;
    uint32_t credit;                   /* units granted, not used yet */
    int64_t asked_us;                  /* the grant's ask left then (its instant is later) */
    int64_t at_us;                     /* WAITING: ask then */
    int64_t budget_us;                 /* how far a send may be from its recorded instant */
    uint64_t epoch;                    /* the route's epoch in Redis, last seen; 0 = none */
    uint64_t late;                     /* grants dropped as too late (for the metrics) */
    struct sl_shlimit_pending *pending; /* the ask in flight, or NULL */
};

/* What the dispatcher should do for a head of `units` at `now`. */
enum sl_shlimit_step {
    SL_SHLIMIT_STEP_GO,                /* take it: a grant was used */
    SL_SHLIMIT_STEP_ASK,               /* ask Redis (sl_shlimit_ask) */
    SL_SHLIMIT_STEP_SLEEP,             /* nothing before *at */
    SL_SHLIMIT_STEP_BUSY,              /* an answer is on its way: it kicks the route */
};

/* A fresh state; `budget_us` from the route's window guard. */
void sl_shlimit_route_init(struct sl_shlimit_route *st, int64_t guard_us);

/* Let go of the ask in flight (its reply is dropped). */
void sl_shlimit_route_fini(struct sl_shlimit_route *st);

enum sl_shlimit_step sl_shlimit_route_step(struct sl_shlimit_route *st, int64_t now,
                                           uint32_t units, int64_t *at);

/*
 * Take an answer to the ask sent at `asked` and received at `now`
 * (Redis decided somewhere in between): grants, and the next turn.
 * `units` is the units of each dispatch asked for.
 */
void sl_shlimit_route_answer(struct sl_shlimit_route *st, const struct sl_shlimit_answer *a,
                             uint32_t units, int64_t asked, int64_t now);

/* The ask failed (no reply, an error): back to idle, nothing granted. */
void sl_shlimit_route_failed(struct sl_shlimit_route *st);

/* Grants not used in the pass they came for are dropped (their instant ages). */
void sl_shlimit_route_settle(struct sl_shlimit_route *st);

/* Redis went away: drop every grant and turn (Redis may not hold them any more). */
void sl_shlimit_route_reset(struct sl_shlimit_route *st);

/* --- the client ---------------------------------------------------------- */

/* A reply came for `st` (the dispatcher kicks its route), or Redis came up or went down. */
struct sl_shlimit_hooks {
    void (*answered)(struct sl_shlimit_route *st, void *arg);
    void (*state)(bool up, void *arg);
};

struct sl_shlimit_stats {
    bool up;
    uint64_t decisions[SL_SHARED_RESULT_COUNT]; /* metrics.h */
    double blocked_seconds;            /* routes waiting on Redis: answers, outages */
    uint64_t records;                  /* dispatches recorded again after a slow send */
    const struct sl_redis_stats *redis;
};

/*
 * Connect to `url` (copied); keys under `prefix` (copied); a random
 * instance id names this process in the turns. NULL when out of memory.
 */
struct sl_shlimit *sl_shlimit_new(struct event_base *base, const struct sl_redis_url *url,
                                  const char *prefix, const struct sl_shlimit_hooks *hooks,
                                  void *arg);

/*
 * Ask for up to q->k dispatches of q->units of route `route` with limits
 * `lim`, on behalf of `st` (which becomes ASKING). Returns SL_OK; SL_EAGAIN
 * while Redis is not up, SL_ENOMEM (st unchanged).
 */
int sl_shlimit_ask(struct sl_shlimit *s, struct sl_shlimit_route *st, const char *route,
                   const struct sl_shlimit_limits *lim, uint32_t k, uint32_t units);

/*
 * A dispatch of `units` granted to route `route` left well after the
 * grant (a new connection had to be opened first): record it once more at
 * Redis's now (k = 0), so that later decisions count it no earlier than it
 * went; one instant more than was sent only costs rate. Nothing is waited
 * for. Returns SL_OK, SL_EAGAIN while Redis is not up, SL_ENOMEM.
 */
int sl_shlimit_record(struct sl_shlimit *s, const char *route,
                      const struct sl_shlimit_limits *lim, uint32_t units, uint64_t epoch);

/* A send this much after its grant is recorded again (sl_shlimit_record). */
int64_t sl_shlimit_record_after(const struct sl_shlimit_route *st);

bool sl_shlimit_up(const struct sl_shlimit *s);

/* Why it is not up, "" when it is. */
const char *sl_shlimit_error(const struct sl_shlimit *s);

const char *sl_shlimit_addr(const struct sl_shlimit *s);

void sl_shlimit_stats(const struct sl_shlimit *s, struct sl_shlimit_stats *out);

/* Count grants dropped as too late (reported by the routes). */
void sl_shlimit_count_late(struct sl_shlimit *s, uint64_t n);

/* Pending asks are answered NULL (their routes see a failure) before it returns. */
void sl_shlimit_free(struct sl_shlimit *s);

#endif
