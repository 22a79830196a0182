/*
 * fuzz.h - what the fuzz targets share: libFuzzer's entry points, a check
 * that aborts, exact-size copies of the input and a growable byte string.
 *
 * Everything is static inline: each target is one file linked with only the
 * modules it exercises, as the unit tests are.
 */
#ifndef SL_FUZZ_H
#define SL_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/*
 * A broken invariant is a finding like a crash: abort, so that libFuzzer
 * stops and saves the input. Unlike assert(), never compiled out.
 */
#define FUZZ_CHECK(cond)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);       \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* Allocation failure is not what is being tested: give up loudly. */
static inline void *fuzz_alloc(size_t n)
{
    void *p = malloc(n > 0 ? n : 1);

    if (p == NULL) {
        fprintf(stderr, "fuzz: out of memory\n");
        abort();
    }
    return p;
}

/*
 * A copy of exactly n bytes: libFuzzer's own buffer is exact too, but the
 * code under test may write to its input, and ASan must see a read past n.
 */
static inline char *fuzz_copy(const void *data, size_t n)
{
    char *p = fuzz_alloc(n);

    memcpy(p, data, n);
    return p;
}

/* data[0..n) as a C string (it stops at the first NUL, as the callers' strings would). */
static inline char *fuzz_string(const void *data, size_t n)
{
    char *p = fuzz_alloc(n + 1);

    memcpy(p, data, n);
    p[n] = '\0';
    return p;
}

/* A growable byte string: outcomes are written into one and compared whole. */
struct fuzz_bytes {
    char *p;
    size_t len, cap;
};

static inline void fuzz_put(struct fuzz_bytes *b, const void *data, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap == 0 ? 256 : b->cap;

        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (b->p == NULL) {
            fprintf(stderr, "fuzz: out of memory\n");
            abort();
        }
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->p + b->len, data, n);
    b->len += n;
}

/* A length-prefixed string, so that ("ab","c") and ("a","bc") differ. */
static inline void fuzz_put_str(struct fuzz_bytes *b, const char *s, size_t n)
{
    fuzz_put(b, &n, sizeof(n));
    fuzz_put(b, s, n);
}

static inline bool fuzz_same(const struct fuzz_bytes *a, const struct fuzz_bytes *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

static inline void fuzz_free(struct fuzz_bytes *b)
{
    free(b->p);
    *b = (struct fuzz_bytes){0};
}

/*
 * Pseudo-random numbers seeded from the input itself (FNV-1a), so that a
 * saved input replays exactly, and the fuzzer's mutations also vary them.
 */
static inline uint64_t fuzz_seed(const uint8_t *data, size_t n)
{
    uint64_t h = UINT64_C(14695981039346656037);

    for (size_t i = 0; i < n; i++)
        h = (h ^ data[i]) * UINT64_C(1099511628211);
    return h != 0 ? h : 1;
}

/* xorshift64: never returns to 0 from a non-zero state. */
static inline uint64_t fuzz_next(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

#endif
