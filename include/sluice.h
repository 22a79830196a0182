/*
 * sluice.h - project-wide status codes and version.
 *
 * Every module returns one of these from functions that can fail; constructors
 * return NULL instead and leave nothing behind.
 */
#ifndef SLUICE_H
#define SLUICE_H

#define SLUICE_VERSION "0.1.0"

#define SL_OK 0
#define SL_ERR (-1)    /* generic failure; details were logged or reported */
#define SL_EAGAIN (-2) /* not now: a cap or a limit says wait */
#define SL_ENOMEM (-3) /* allocation failed */

#define SL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#include <stdlib.h>
#include <string.h>

/*
 * A zeroed block for the per-request allocations. glibc 2.36's calloc
 * bypasses the thread cache (tcache) that malloc uses for blocks up to
 * 1 KiB, and was several times slower for them (callgrind).
 */
static inline void *sl_zalloc(size_t size)
{
    void *p = malloc(size);

    if (p != NULL)
        memset(p, 0, size);
    return p;
}

#endif
