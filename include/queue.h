/*
 * queue.h - per-route parked requests: priority lanes, FIFO, fair keys, caps.
 *
 * A route's queue has three lanes (high, normal, low); a higher lane is
 * always served first. Inside a lane, items are grouped into flows by their
 * fair key (one flow with key "" when the route has no fair_key); the lane
 * serves its flows round robin, one item per turn, and each flow is FIFO.
 * A requeued item (retry, 429) goes back to the head of its flow, and its
 * flow to the head of the rotation.
 *
 * A flow can wait (sl_queue_block): its head may not go before an instant
 * (its key's limit, keys.h). A waiting flow leaves its lane's rotation for a
 * min-heap by that instant, so the flows behind it are served meanwhile and
 * nobody scans the waiting ones; sl_queue_wake() puts the flows whose
 * instant has come back at the tail of their rotations, earliest first.
 *
 * Caps are global across routes: every queue points at one shared
 * struct sl_queue_totals that counts parked items and bytes.
 *
 * Pure: no I/O, no clock. Ownership: the queue owns its flows (allocated on
 * demand, freed when empty); it never owns items, which are embedded in
 * their container (struct sl_request) and must stay alive while queued.
 */
#ifndef SL_QUEUE_H
#define SL_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

enum sl_lane {
    SL_LANE_HIGH = 0,
    SL_LANE_NORMAL,
    SL_LANE_LOW,
    SL_LANE_COUNT,
};

/* Name of a lane ("high", "normal", "low"). */
const char *sl_lane_name(enum sl_lane lane);

/* Parse a lane name (any case); returns 0 and sets *out, or -1. */
int sl_lane_parse(const char *s, enum sl_lane *out);

struct sl_queue_flow;

/* Embedded in the thing that waits. All fields are the queue's while queued. */
struct sl_queue_item {
    TAILQ_ENTRY(sl_queue_item) link;
    struct sl_queue_flow *flow;   /* NULL when not queued */
    enum sl_lane lane;
    const char *key;              /* fair key, borrowed from the container */
    size_t bytes;
    int64_t enqueued_us;          /* first time it was parked */
    int64_t deadline_us;          /* the container's: served by then or not at all; 0 = none */
    uint32_t units;               /* the container's: what a dispatch costs (0 counts as 1) */
    uint32_t key_slot;            /* the container's: its key's slot (keys.h); not the queue's */
};

/* Global caps and counters, shared by all routes' queues. */
struct sl_queue_totals {
    size_t depth;
    size_t bytes;
    size_t max_depth;
    size_t max_bytes;
};

struct sl_queue_lane {
    TAILQ_HEAD(, sl_queue_flow) rotation; /* flows with items, next to serve first */
    size_t depth;
};

struct sl_queue {
    struct sl_queue_lane lanes[SL_LANE_COUNT];
    struct sl_queue_flow **heap;          /* waiting flows, min-heap by instant, owned */
    size_t n_heap;
    size_t cap_heap;
    uint64_t wait_seq;                    /* orders waits that end at the same instant */
    struct sl_queue_flow **buckets;       /* fair-key hash, owned */
    size_t n_buckets;
    size_t n_flows;                       /* flows allocated (load factor) */
    size_t depth;
    size_t bytes;
    struct sl_queue_totals *totals;       /* borrowed */
};

/* Returns SL_OK or SL_ENOMEM (then the queue holds nothing). */
int sl_queue_init(struct sl_queue *q, struct sl_queue_totals *totals);

/*
 * Frees flows. The queue must be empty or its items abandoned by the caller;
 * abandoned items are marked not queued (flow = NULL) and their count and
 * bytes are taken off the shared totals.
 */
void sl_queue_fini(struct sl_queue *q);

/* Would one more item of `bytes` stay within the global caps? */
bool sl_queue_fits(const struct sl_queue_totals *t, size_t bytes);

/*
 * Park `item` at the tail of its flow. `key` may be NULL (same as "").
 * Returns SL_OK; SL_EAGAIN if over a global cap and !force (nothing
 * changed); SL_ENOMEM if a new flow could not be allocated; SL_ERR for a
 * lane out of range. `item` must not be queued.
 */
int sl_queue_push(struct sl_queue *q, struct sl_queue_item *item, enum sl_lane lane,
                  const char *key, size_t bytes, int64_t now, bool force);

/*
 * Put a popped item back at the head of its flow and its flow at the head of
 * its lane's rotation (retry). Keeps lane, key, bytes and enqueued_us.
 * Ignores caps. Returns SL_OK or SL_ENOMEM.
 */
int sl_queue_push_head(struct sl_queue *q, struct sl_queue_item *item);

/* Next item to serve, or NULL. */
struct sl_queue_item *sl_queue_peek(const struct sl_queue *q);

/* Remove and return the next item to serve (advancing the rotation), or NULL. */
struct sl_queue_item *sl_queue_pop(struct sl_queue *q);

/* Remove a queued item from anywhere (client gone, timeout). */
void sl_queue_remove(struct sl_queue *q, struct sl_queue_item *item);

/*
 * The flow of `head` (the item sl_queue_peek() returned) waits until
 * `until`: it leaves its lane's rotation for the heap; items pushed to it
 * meanwhile join it there. Returns SL_OK, or SL_ENOMEM (nothing changed).
 */
int sl_queue_block(struct sl_queue *q, struct sl_queue_item *head, int64_t until);

/*
 * Flows whose instant has come (until <= now) rejoin the tail of their
 * lanes' rotations, earliest first, at most `max` of them. Returns how many.
 */
size_t sl_queue_wake(struct sl_queue *q, int64_t now, size_t max);

/* The earliest instant a flow waits for; 0 if none waits. */
int64_t sl_queue_wake_at(const struct sl_queue *q);

/* The waiting flows of `key` (every lane) rejoin their rotations now. */
void sl_queue_unblock_key(struct sl_queue *q, const char *key);

/* Every waiting flow rejoins its rotation now (before the items move elsewhere). */
void sl_queue_unblock_all(struct sl_queue *q);

/* Flows waiting. */
static inline size_t sl_queue_waiting(const struct sl_queue *q)
{
    return q->n_heap;
}

/*
 * enqueued_us of the oldest item parked in `lane`, INT64_MAX when none. The
 * oldest of the heads of the lane's flows: a flow is FIFO and a requeued
 * item goes back to its head, so this is exact except for items a reload
 * moved from another route (parked at the tail with their first time).
 * Waiting flows count. O(flows in the lane + waiting flows).
 */
int64_t sl_queue_oldest(const struct sl_queue *q, enum sl_lane lane);

static inline size_t sl_queue_depth(const struct sl_queue *q)
{
    return q->depth;
}

static inline size_t sl_queue_lane_depth(const struct sl_queue *q, enum sl_lane lane)
{
    return q->lanes[lane].depth;
}

#endif
