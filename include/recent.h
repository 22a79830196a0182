/*
 * recent.h - counts per second over the last few minutes.
 *
 * A ring of per-second counters: slot s % LEN counts monotonic second s
 * (now / 1 s), for the LEN seconds up to the newest second written. Adding
 * is O(1): moving on to a new second clears the seconds skipped, at most LEN
 * slots and at most once per second whatever the traffic. Reading one
 * second is O(1). The current second is partial; second `ago` = 1 is the
 * last complete one.
 *
 * Two shapes: struct sl_recent, one counter over the last five minutes
 * (dispatches, for rates and sparklines), and struct sl_recent_set,
 * SL_RECENT_SET_WIDTH counters over the last minute (one per outcome).
 *
 * Pure: no clock, `now` is passed in (monotonic microseconds, >= 0). A `now`
 * older than the newest second written counts into its own second while
 * that is still in the ring, and is dropped after. A ring is plain data:
 * zeroed is empty, and copying the struct copies its history.
 */
#ifndef SL_RECENT_H
#define SL_RECENT_H

#include <stdint.h>

/* The current second and the 300 complete ones before it. */
#define SL_RECENT_SECONDS 301
/* The current second and the 59 before it: "the last minute". */
#define SL_RECENT_SET_SECONDS 60
#define SL_RECENT_SET_WIDTH 20

struct sl_recent {
    int64_t newest;                               /* second of the newest slot */
    uint32_t count[SL_RECENT_SECONDS];
};

struct sl_recent_set {
    int64_t newest;
    uint32_t count[SL_RECENT_SET_SECONDS][SL_RECENT_SET_WIDTH];
};

/* Count n events at `now`. */
void sl_recent_add(struct sl_recent *r, int64_t now, uint32_t n);

/* Events in the second `ago` seconds before now's (0 = now's own); 0 outside the ring. */
uint32_t sl_recent_at(const struct sl_recent *r, int64_t now, unsigned ago);

/* Events in the `n` seconds from `ago` = from to from + n - 1. */
uint64_t sl_recent_sum(const struct sl_recent *r, int64_t now, unsigned from, unsigned n);

/* Count n events of counter i (< SL_RECENT_SET_WIDTH; others are ignored) at `now`. */
void sl_recent_set_add(struct sl_recent_set *s, int64_t now, unsigned i, uint32_t n);

/* Events of counter i in the `n` seconds from `ago` = from to from + n - 1. */
uint64_t sl_recent_set_sum(const struct sl_recent_set *s, int64_t now, unsigned i, unsigned from,
                           unsigned n);

#endif
