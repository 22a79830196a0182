/*
 * keys.h - one strict limiter per key value of a route (limit_key).
 *
 * Every distinct value of the route's limit_key gets the route's limits
 * (rate, burst, quotas, in units with cost) for itself. A key is known by a
 * 64-bit SipHash-2-4 (hash.h) of its value under a secret seed (the value itself is
 * never stored, logged or shown; two values sharing a hash would share one
 * limiter, which is stricter, never looser, and with 10^5 keys happens once
 * in 10^9 runs). Requests without the key share the default bucket, slot
 * SL_KEYS_DEFAULT_SLOT, which is always there and never counted as a key.
 *
 * Two kinds of state, chosen by the route's limits:
 *  - compact (burst = 1, no quota, dating by send): a key is a leaky bucket
 *    of max_cost units drained one unit per I = (P + guard) / (N + 1 -
 *    max_cost), held as its theoretical arrival time. A dispatch of u units
 *    may go once the bucket has room for them. In any window of length P
 *    (seen with up to `guard` of jitter) a key then sends at most N units:
 *    with max_cost = 1 this is plain spacing P/N apart; a larger max_cost
 *    costs throughput ((N + 1 - max_cost) / N of the rate) but no memory.
 *    An idle key is 40 bytes plus its hash table slot.
 *  - full (burst > 1, quotas, or dating by answers): a key carries the
 *    route's whole limiter (limiter.h), sliding logs of N instants per limit.
 *
 * A key is pinned while requests of it are parked or in flight (a request
 * holds its key's slot from intake to its end), idle otherwise. An idle key
 * whose windows have all passed is in the same state as an unknown key, so
 * it is evicted: lazily, a few at each new key, and by sl_keys_sweep(), whose
 * work per call is bounded by the caller. Idle keys wait for eviction in the
 * order they became idle. The table holds at most max_keys keys; at the cap a
 * new key is refused (SL_EAGAIN) until an idle key can be evicted.
 *
 * Pure: no I/O, no clock (every call takes `now`); the seed comes from the
 * caller. Ownership: the table owns its nodes, buckets and full limiters.
 */
#ifndef SL_KEYS_H
#define SL_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "hash.h"
#include "limiter.h"

#define SL_KEYS_DEFAULT_ID 0      /* the requests without the key */
#define SL_KEYS_DEFAULT_SLOT 0
#define SL_KEYS_NO_SLOT UINT32_MAX
#define SL_KEYS_MAX 10000000u     /* highest max_keys the config accepts */

struct sl_keys_node;

struct sl_keys {
    /* the limits of every key (a copy of the route's) */
    struct sl_limit rate;
    unsigned burst;
    struct sl_limit quotas[SL_CONFIG_MAX_QUOTAS];
    size_t n_quotas;
    uint32_t max_cost;
    int64_t guard_us;             /* < 0: the limiter's default */
    bool by_answer;
    bool compact;
    int64_t interval_us;          /* compact: the drain time of one unit */
    int64_t span_us;              /* longest window + guard */
    size_t max_keys;
    int64_t floor_us;             /* no key dispatches before (a reload changed the limits) */
    struct sl_hash_key seed;      /* the ids' SipHash key (hash.h) */

    /* storage: slots in chunks that never move */
    struct sl_keys_node **chunks;
    struct sl_limiter ***limiters; /* full: per chunk, per slot; NULL when compact */
    size_t n_chunks;
    uint32_t n_used;              /* slots handed out at least once */
    uint32_t free_list;           /* evicted slots (0 = none) */
    uint32_t *buckets;            /* heads of hash chains (0 = empty: slot 0 is never in one) */
    uint32_t mask;                /* buckets - 1, a power of two minus one */
    size_t live;                  /* keys in the table (not the default bucket) */
    uint32_t idle_head, idle_tail; /* idle keys, oldest first */
    int64_t last_take_us;         /* the newest dispatch of any key; INT64_MIN if none */
    uint64_t evictions;
    uint64_t refused;             /* new keys refused at the cap */
};

/* What /status shows of one busy key. */
struct sl_keys_top {
    uint32_t digest;              /* 32 bits of the keyed hash: not reversible */
    uint64_t units;               /* units dispatched since the key was last created */
    uint32_t parked;
    uint32_t in_flight;
};

/*
 * A table for the limits of `cfg` (rate, burst, quotas, max_cost,
 * window_guard, jitter_proof, max_keys) with the hashing seed. NULL on a
 * limit the limiter refuses or out of memory (nothing allocated).
 */
struct sl_keys *sl_keys_new(const struct sl_route_config *cfg, const struct sl_hash_key *seed);

void sl_keys_free(struct sl_keys *k);

/* Do two route configs give their keys the same limits (and state kind)? */
bool sl_keys_same_limits(const struct sl_route_config *a, const struct sl_route_config *b);

/* The id of a key value (never SL_KEYS_DEFAULT_ID). */
uint64_t sl_keys_id(const struct sl_keys *k, const void *value, size_t len);

/* The 32-bit digest shown for an id (/status, logs). */
static inline uint32_t sl_keys_digest(uint64_t id)
{
    return (uint32_t)(id >> 32);
}

/*
 * A request of key `id` is parked: pin the key (created if unknown; the
 * default id pins the default bucket). Returns SL_OK and sets *slot;
 * SL_EAGAIN when the table is at max_keys and no idle key can be evicted
 * (nothing changed); SL_ENOMEM.
 */
int sl_keys_acquire(struct sl_keys *k, uint64_t id, int64_t now, uint32_t *slot);

/* A request pinned to `slot` parks again (requeued after an answer). */
void sl_keys_hold(struct sl_keys *k, uint32_t slot);

/* A parked request of `slot` leaves without a dispatch. */
void sl_keys_release(struct sl_keys *k, uint32_t slot, int64_t now);

/*
 * Earliest instant >= now at which a dispatch of `units` from `slot` may
 * go; SL_LIMITER_UNANSWERED or later when only an answer can allow it (or
 * never: more units than a window holds).
 */
int64_t sl_keys_next(const struct sl_keys *k, uint32_t slot, int64_t now, uint32_t units);

/*
 * Record a dispatch of `units` from `slot` at `now`: a parked request of the
 * key is now in flight. SL_OK, or SL_EAGAIN (nothing changed) if now is
 * before sl_keys_next().
 */
int sl_keys_take(struct sl_keys *k, uint32_t slot, int64_t now, uint32_t units);

/* The dispatch taken at `taken` left at `sent` (after a connect): date it so. */
void sl_keys_sent(struct sl_keys *k, uint32_t slot, int64_t taken, int64_t sent);

/* The dispatch got its answer or ended without one (exactly once per take). */
void sl_keys_answered(struct sl_keys *k, uint32_t slot, int64_t now, uint32_t units);

/*
 * The upstream asked this key to wait (a 429, a spent budget): nothing of
 * it goes before `until`, and it is not evicted before then either.
 */
void sl_keys_pause(struct sl_keys *k, uint32_t slot, int64_t until);

/* Evict up to `max` idle keys whose windows have passed; returns how many. */
size_t sl_keys_sweep(struct sl_keys *k, int64_t now, size_t max);

/* When the oldest idle key's windows pass (worth a sweep then); 0 = no idle key. */
int64_t sl_keys_sweep_at(const struct sl_keys *k);

static inline size_t sl_keys_live(const struct sl_keys *k)
{
    return k->live;
}

/* Bytes the table holds (nodes, buckets, full limiters). */
size_t sl_keys_bytes(const struct sl_keys *k);

/* The key of `slot`'s id (SL_KEYS_DEFAULT_ID for the default bucket). */
uint64_t sl_keys_slot_id(const struct sl_keys *k, uint32_t slot);

/*
 * Up to `n` keys with the most units dispatched, most first, into `out`;
 * returns how many. Walks every key: for /status, not for the data path.
 */
size_t sl_keys_busiest(const struct sl_keys *k, struct sl_keys_top *out, size_t n);

/*
 * Give the keys the limits of `cfg` (a reload), keeping every slot, pin
 * and count. Same limits: only max_keys changes. Full to full: each key
 * inherits its history (sl_limiter_inherit). Otherwise each key waits until
 * its old windows have passed and then one window of the new limits, and
 * every key waits until `now` plus one new window. When the new windows are
 * longer, keys already evicted may have sent within one of them, so no key
 * dispatches before now + (new longest window - old longest window).
 * Returns SL_OK, or SL_ERR / SL_ENOMEM with the table unchanged.
 */
int sl_keys_reconfigure(struct sl_keys *k, const struct sl_route_config *cfg, int64_t now);

/* The newest dispatch of any key (INT64_MIN if none), for a reload that drops limit_key. */
static inline int64_t sl_keys_last(const struct sl_keys *k)
{
    return k->last_take_us;
}

/* The longest hash chain (a flood of one chain would show here). */
size_t sl_keys_longest_chain(const struct sl_keys *k);

/* No key dispatches before `at` (the route was not keyed before a reload). */
void sl_keys_set_floor(struct sl_keys *k, int64_t at);

#endif
