/*
 * recent.c - rings of per-second counters (see recent.h).
 *
 * Both shapes share one core over a flat array of `len` slots of `width`
 * counters each.
 */
#include "recent.h"

#include <stddef.h>
#include <string.h>

#define USEC_PER_SEC INT64_C(1000000)

/*
 * Make `sec` writable: a newer second becomes the newest and the seconds
 * skipped on the way are cleared. Returns the slot index, or -1 when `sec`
 * has already left the ring.
 */
static int64_t ring_advance(int64_t *newest, uint32_t *slots, size_t len, size_t width,
                            int64_t sec)
{
    int64_t n = (int64_t)len;

    if (sec > *newest) {
        if (sec - *newest >= n) {
            memset(slots, 0, len * width * sizeof(*slots));
        } else {
            for (int64_t s = *newest + 1; s <= sec; s++)
                memset(slots + (size_t)(s % n) * width, 0, width * sizeof(*slots));
        }
        *newest = sec;
    }
    return sec > *newest - n && sec >= 0 ? sec % n : -1;
}

/* The slot of the second `ago` seconds before now's, or -1 (not written, or gone). */
static int64_t ring_slot(int64_t newest, size_t len, int64_t now, unsigned ago)
{
    int64_t sec = now / USEC_PER_SEC - (int64_t)ago;

    if (ago >= len || sec > newest || sec <= newest - (int64_t)len || sec < 0)
        return -1;
    return sec % (int64_t)len;
}

void sl_recent_add(struct sl_recent *r, int64_t now, uint32_t n)
{
    int64_t slot = ring_advance(&r->newest, r->count, SL_RECENT_SECONDS, 1, now / USEC_PER_SEC);

    if (slot >= 0)
        r->count[slot] += n;
}

uint32_t sl_recent_at(const struct sl_recent *r, int64_t now, unsigned ago)
{
    int64_t slot = ring_slot(r->newest, SL_RECENT_SECONDS, now, ago);

    return slot >= 0 ? r->count[slot] : 0;
}

uint64_t sl_recent_sum(const struct sl_recent *r, int64_t now, unsigned from, unsigned n)
{
    uint64_t sum = 0;

    for (unsigned i = 0; i < n && from + i < SL_RECENT_SECONDS; i++)
        sum += sl_recent_at(r, now, from + i);
    return sum;
}

void sl_recent_set_add(struct sl_recent_set *s, int64_t now, unsigned i, uint32_t n)
{
    int64_t slot;

    if (i >= SL_RECENT_SET_WIDTH)
        return;
    slot = ring_advance(&s->newest, &s->count[0][0], SL_RECENT_SET_SECONDS, SL_RECENT_SET_WIDTH,
                        now / USEC_PER_SEC);
    if (slot >= 0)
        s->count[slot][i] += n;
}

uint64_t sl_recent_set_sum(const struct sl_recent_set *s, int64_t now, unsigned i, unsigned from,
                           unsigned n)
{
    uint64_t sum = 0;

    if (i >= SL_RECENT_SET_WIDTH)
        return 0;
    for (unsigned k = 0; k < n && from + k < SL_RECENT_SET_SECONDS; k++) {
        int64_t slot = ring_slot(s->newest, SL_RECENT_SET_SECONDS, now, from + k);

        if (slot >= 0)
            sum += s->count[slot][i];
    }
    return sum;
}
