/*
 * fuzz_retry.c - what upstreams say about their limits (retry.h).
 *
 * Input: the first line is a Retry-After value (and a method name for
 * sl_retry_idempotent); every further line is a response field
 * "name:value" for sl_retry_ratelimit_exhausted. Each is tried at a few
 * wall-clock instants, since dates and epoch resets are measured from now.
 *
 * The same fields go to sl_retry_ratelimit_policies: every policy it
 * returns has a quota >= 1 and a window of 1 s to SL_RETRY_MAX_PAUSE_US.
 *
 * Besides crashes: every pause is within [0, SL_RETRY_MAX_PAUSE_US], a
 * pause is only written when one is announced, the delta-seconds form does
 * not depend on the clock, and a later clock never gives a longer wait for
 * the same absolute date. Backoff, seeded from the input, stays in [d/2, d].
 */
#include <sys/queue.h>

#include <event2/keyvalq_struct.h>

#include "clock.h"
#include "fuzz.h"
#include "headers.h"
#include "retry.h"
#include "sluice.h"

#define MAX_LINES 64
#define UNTOUCHED INT64_C(-12345)

/* Instants to parse at, epoch µs: the epoch, a recent one, and one a century on. */
static const int64_t nows[] = {
    0,
    INT64_C(1700000000) * 1000000 + 123456,
    INT64_C(4900000000) * 1000000,
};

static bool all_digits(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s < '0' || *s > '9')
        return false;
    while (*s >= '0' && *s <= '9')
        s++;
    while (*s == ' ' || *s == '\t')
        s++;
    return *s == '\0';
}

static void retry_after(const char *value)
{
    int64_t delay[SL_ARRAY_LEN(nows)];
    int rc[SL_ARRAY_LEN(nows)];

    for (size_t i = 0; i < SL_ARRAY_LEN(nows); i++) {
        delay[i] = UNTOUCHED;
        rc[i] = sl_retry_after_parse(value, nows[i], &delay[i]);
        FUZZ_CHECK(rc[i] == 0 || rc[i] == -1);
        if (rc[i] != 0)
            FUZZ_CHECK(delay[i] == UNTOUCHED);
        else
            FUZZ_CHECK(delay[i] >= 0 && delay[i] <= SL_RETRY_MAX_PAUSE_US);
    }
    for (size_t i = 1; i < SL_ARRAY_LEN(nows); i++) {
        if (all_digits(value)) /* delta-seconds: the clock does not matter */
            FUZZ_CHECK(rc[i] == rc[0] && delay[i] == delay[0]);
        /* A date with a 4-digit year is one instant: later, the wait is no longer. The
         * rfc850 form (the one with '-') has a 2-digit year that moves with the clock. */
        else if (rc[i] == 0 && rc[i - 1] == 0 && strchr(value, '-') == NULL)
            FUZZ_CHECK(delay[i] <= delay[i - 1]);
    }
}

/* Fields from the lines of text[0..n); a line without ':' is a name with an empty value. */
static void fields(struct evkeyvalq *q, const char *text, size_t n)
{
    size_t count = 0;

    for (const char *p = text, *end = text + n; p < end && count < MAX_LINES; count++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *stop = nl != NULL ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(stop - p));
        char *name = fuzz_string(p, (size_t)((colon != NULL ? colon : stop) - p));
        char *value = colon != NULL ? fuzz_string(colon + 1, (size_t)(stop - colon - 1))
                                    : fuzz_string("", 0);

        /* A CR is refused, as the parsers and evhttp refuse it: skip such fields. */
        (void)sl_headers_add(q, name, value);
        free(name);
        free(value);
        p = stop + 1;
    }
}

static void ratelimit(const struct evkeyvalq *q)
{
    for (size_t i = 0; i < SL_ARRAY_LEN(nows); i++) {
        int64_t pause = UNTOUCHED;
        int rc = sl_retry_ratelimit_exhausted(q, nows[i], &pause);

        FUZZ_CHECK(rc == 0 || rc == 1);
        if (rc == 0)
            FUZZ_CHECK(pause == UNTOUCHED);
        else
            FUZZ_CHECK(pause >= 0 && pause <= SL_RETRY_MAX_PAUSE_US);
    }
}

static void policies(const struct evkeyvalq *q)
{
    struct sl_retry_policy p[4];
    size_t n = sl_retry_ratelimit_policies(q, p, SL_ARRAY_LEN(p));

    FUZZ_CHECK(n <= SL_ARRAY_LEN(p));
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(p[i].n >= 1 && p[i].window_us >= SL_USEC_PER_SEC &&
                   p[i].window_us <= SL_RETRY_MAX_PAUSE_US);
}

/* The bounds of sl_retry_backoff, with arguments drawn from the input's seed. */
static void backoff(uint64_t seed)
{
    uint64_t rng = seed;
    unsigned attempt = (unsigned)(fuzz_next(&rng) % 70);
    int64_t base = (int64_t)(fuzz_next(&rng) >> (fuzz_next(&rng) % 64));
    int64_t cap = (int64_t)(fuzz_next(&rng) >> (fuzz_next(&rng) % 64));
    uint64_t state = fuzz_next(&rng);
    int64_t d = sl_retry_backoff(attempt, base, cap, NULL); /* no rng: the ceiling itself */
    int64_t j = sl_retry_backoff(attempt, base, cap, &state);

    FUZZ_CHECK(d >= 0 && (d == 0 || (d <= cap && d >= (base < cap ? base : cap))));
    FUZZ_CHECK(j >= d / 2 && j <= d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data, *nl = memchr(text, '\n', size);
    size_t first = nl != NULL ? (size_t)(nl - text) : size;
    char *value = fuzz_string(text, first);
    struct evkeyvalq q;

    TAILQ_INIT(&q);
    if (nl != NULL)
        fields(&q, nl + 1, size - first - 1);
    retry_after(value);
    ratelimit(&q);
    policies(&q);
    (void)sl_retry_idempotent(value, &q);
    backoff(fuzz_seed(data, size));
    sl_headers_clear(&q);
    free(value);
    return 0;
}
