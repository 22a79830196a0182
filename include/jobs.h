/*
 * jobs.h - async jobs: a request sent with "Prefer: respond-async" is
 * answered at once 202 Accepted with a Location, goes through the same
 * lanes, limits, retries and deadlines as any other (its reply sink is the
 * job), and its answer is kept for GET /_sluice/jobs/{id} until
 * [redis] result_ttl has passed.
 *
 * Memory mode (no [redis] jobs = on): jobs live in this process and are
 * lost with it. Bounds: a queued or running job is a live request, so their
 * number is bounded by the queue caps ([queue] max_depth and max_bytes,
 * plus what is in flight); finished results are kept at most result_ttl
 * and at most [queue] max_depth of them and max_bytes of their bytes (the
 * oldest goes first, counted as evicted). Each answer is at most the
 * route's max_response_size (else the job fails with 502
 * response_too_large).
 *
 * Finished results expire in the order they finished (one TTL for all), so
 * a FIFO with one timer for its head is the whole expiry machinery.
 *
 * Ownership: struct sl_jobs owns every job and borrows the requests (to
 * submit into) and the config (swapped on reload with sl_jobs_configure).
 */
#ifndef SL_JOBS_H
#define SL_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"
#include "sink.h"

struct event_base;
struct sl_config;
struct sl_http_msg;
struct sl_jobs;
struct sl_requests;

#define SL_JOBS_PATH "/_sluice/jobs/"

/* Returns NULL when out of memory. */
struct sl_jobs *sl_jobs_new(struct event_base *base, struct sl_requests *q,
                            const struct sl_config *cfg);

/* Take up a reloaded config (TTL, caps); `cfg` is borrowed. */
void sl_jobs_configure(struct sl_jobs *j, const struct sl_config *cfg);

/*
 * Is `msg` for the jobs (Prefer: respond-async, or GET /_sluice/jobs/...)?
 * If so it is taken (owned from now on), answered through `sink` (202, a
 * refusal, the job, or 404 job_not_found) and true is returned; otherwise
 * nothing happens and false is returned.
 */
bool sl_jobs_take(struct sl_jobs *j, struct sl_sink *sink, struct sl_http_msg *msg,
                  const char *client);

/* What /status and /metrics show. */
struct sl_jobs_stats {
    bool durable;                       /* stored in Redis (else memory: lost on exit) */
    size_t by_state[SL_JOB_STATE_COUNT];
    size_t stored_bytes;                /* bytes of finished answers held */
    uint64_t accepted;                  /* 202s given */
    uint64_t expired;                   /* results gone after result_ttl */
    uint64_t evicted;                   /* results dropped early by the caps */
    uint64_t too_large;                 /* answers over max_response_size */
};

void sl_jobs_stats(const struct sl_jobs *j, struct sl_jobs_stats *out);

/* Free every job. Live requests must have been finished first. */
void sl_jobs_free(struct sl_jobs *j);

#endif
