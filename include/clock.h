/*
 * clock.h - the one source of time: monotonic microseconds.
 *
 * The event loop owns time. Pure modules (limiter, queue) take `now` as an
 * argument; modules that need the current time call sl_clock_now(), which
 * tests can replace with a fake through sl_clock_set().
 */
#ifndef SL_CLOCK_H
#define SL_CLOCK_H

#include <stdint.h>
#include <sys/time.h>

#define SL_USEC_PER_SEC INT64_C(1000000)
#define SL_USEC_PER_MSEC INT64_C(1000)

typedef int64_t (*sl_clock_fn)(void);

/* Monotonic time in microseconds (CLOCK_MONOTONIC unless faked). */
int64_t sl_clock_now(void);

/* Wall-clock time in microseconds since the epoch (for logs, HTTP dates). */
int64_t sl_clock_wall(void);

/* A duration in microseconds as the struct timeval libevent wants (negative: 0). */
static inline struct timeval sl_clock_timeval(int64_t us)
{
    struct timeval tv;

    if (us < 0)
        us = 0;
    tv.tv_sec = (time_t)(us / SL_USEC_PER_SEC);
    tv.tv_usec = (suseconds_t)(us % SL_USEC_PER_SEC);
    return tv;
}

/* Replace the monotonic clock; NULL restores the real one. For tests. */
void sl_clock_set(sl_clock_fn fn);

#endif
