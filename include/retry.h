/*
 * retry.h - pure policy for upstream trouble: when to retry, how long to wait.
 *
 * Parses what upstreams say about their limits (Retry-After, the IETF
 * RateLimit fields and the common X-RateLimit-* ones), decides which
 * failures may be retried, and computes capped exponential backoff with
 * jitter. No I/O and no clock: the wall clock is passed in (epoch
 * microseconds) and the jitter source is a caller-owned PRNG state.
 */
#ifndef SL_RETRY_H
#define SL_RETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evkeyvalq;

#define SL_RETRY_MAX_PAUSE_US (INT64_C(86400) * 1000000) /* a day: longer is clamped */

/*
 * Retry-After: delta-seconds ("120") or an HTTP-date (IMF-fixdate
 * "Sun, 06 Nov 1994 08:49:37 GMT", also the obsolete RFC 850 and asctime
 * forms). A date in the past gives 0. Returns 0 and sets *delay_us (clamped
 * to SL_RETRY_MAX_PAUSE_US), or -1 for a missing or malformed value.
 */
int sl_retry_after_parse(const char *value, int64_t now_wall_us, int64_t *delay_us);

/*
 * Has the upstream announced that its budget is spent? Understands, in this
 * order:
 *  - IETF RateLimit (draft-ietf-httpapi-ratelimit-headers, structured field):
 *    `RateLimit: "policy";r=0;t=5` - remaining r, reset in t seconds; with
 *    several policies (comma-separated list), any with r <= 0 counts and the
 *    longest t wins;
 *  - older drafts: `RateLimit-Remaining: 0` + `RateLimit-Reset: 5`;
 *  - common: `X-RateLimit-Remaining: 0` + `X-RateLimit-Reset: N`, where N is
 *    seconds from now, or epoch seconds when N is larger than 10^9 (then
 *    measured against now_wall_us; a past reset gives 0).
 * Returns 1 and sets *pause_us (clamped) when remaining is 0 and a reset is
 * given; 0 when the budget is not spent or nothing usable is present.
 * Malformed fields are ignored (never an error: they are the upstream's).
 */
int sl_retry_ratelimit_exhausted(const struct evkeyvalq *headers, int64_t now_wall_us,
                                 int64_t *pause_us);

/* A limit the upstream announces: n requests per window. */
struct sl_retry_policy {
    double n;
    int64_t window_us;
};

/*
 * What limits does the upstream announce? Reads, in this order (the first
 * field with a usable policy decides):
 *  - `RateLimit-Policy: "default";q=100;w=60` (IETF; several comma-separated),
 *    also the older `RateLimit-Policy: 100;w=60`;
 *  - `RateLimit-Limit: 100, 100;w=60` (older drafts: members with a window);
 *  - `X-RateLimit-Limit` in the same form (a bare number has no window: unusable).
 * Writes up to `max` policies to `out`; returns how many. Malformed fields
 * give nothing (they are the upstream's, never an error).
 */
size_t sl_retry_ratelimit_policies(const struct evkeyvalq *headers,
                                   struct sl_retry_policy *out, size_t max);

/* GET, HEAD, PUT, DELETE, OPTIONS, TRACE; or any method with Idempotency-Key. */
bool sl_retry_idempotent(const char *method, const struct evkeyvalq *request_headers);

/* Status codes worth another attempt for an idempotent request: 502, 503, 504. */
bool sl_retry_status_retryable(int status);

/*
 * Backoff before attempt `attempt` + 1 (attempt >= 1 is the number made so
 * far): min(cap, base * 2^(attempt-1)), then "equal jitter": a uniformly
 * random value in [d/2, d]. `rng` is xorshift64 state (non-zero), advanced.
 */
int64_t sl_retry_backoff(unsigned attempt, int64_t base_us, int64_t cap_us, uint64_t *rng);

#endif
