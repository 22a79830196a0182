/* clock.c - monotonic and wall clocks behind a replaceable function pointer. */
#include "clock.h"

#include <time.h>

static int64_t clock_real_now(void)
{
    struct timespec ts;

    /* CLOCK_MONOTONIC cannot fail with a valid pointer on Linux. */
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * SL_USEC_PER_SEC + ts.tv_nsec / 1000;
}

static sl_clock_fn clock_now_fn = clock_real_now;

int64_t sl_clock_now(void)
{
    return clock_now_fn();
}

int64_t sl_clock_wall(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * SL_USEC_PER_SEC + ts.tv_nsec / 1000;
}

void sl_clock_set(sl_clock_fn fn)
{
    clock_now_fn = fn != NULL ? fn : clock_real_now;
}
