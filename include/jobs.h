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
 * Durable mode ([redis] jobs = on): the job is written to Redis before the
 * 202 (a record "PREFIX job:ID" and an entry in the route's stream
 * "PREFIX{ROUTE}:jobs", in one transaction). Every instance with the same
 * url and prefix reads the streams in one consumer group per route
 * (XREADGROUP on a connection of its own), runs what it took like any
 * request, stores the result in the record (with result_ttl), then
 * acknowledges and deletes the entry (streams are never trimmed). An entry
 * held longer than claim_after by an instance that stopped refreshing it
 * is claimed (XAUTOCLAIM) by another, or by a restarted one: at least once.
 * An entry delivered more than max_deliveries times goes to the route's
 * dead-letter stream "PREFIX{ROUTE}:dead". A batch belongs to no route:
 * batch jobs have a stream of their own, "PREFIX{@batch}:jobs" (jobcodec.h;
 * its own group, dead letters "PREFIX{@batch}:dead"), whose entry is the
 * batch request; whoever takes it fans it out through the batch module
 * (its items then follow their routes' limits). While Redis is unreachable new
 * jobs get 503 redis_unavailable; results finished meanwhile are kept and
 * stored when it is back.
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
struct sl_batch_stats;
struct sl_jobs;
struct sl_redis_stats;
struct sl_requests;

#define SL_JOBS_PATH "/_sluice/jobs/"

/* `batches` counts the batch jobs' batches (borrowed). Returns NULL when out of memory. */
struct sl_jobs *sl_jobs_new(struct event_base *base, struct sl_requests *q,
                            struct sl_batch_stats *batches, const struct sl_config *cfg);

/* Take up a reloaded config (TTL, caps); `cfg` is borrowed. */
void sl_jobs_configure(struct sl_jobs *j, const struct sl_config *cfg);

/*
 * Is `msg` for the jobs (Prefer: respond-async, or GET /_sluice/jobs/...)?
 * A POST /_sluice/batch with respond-async is one job whose result is the
 * batch's gathered answer (batch.h); a malformed one is refused at once.
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
    /* durable mode */
    size_t held;                        /* entries taken from the streams, not finished */
    uint64_t dead_lettered;             /* by this instance */
    bool redis_up;
    const char *redis_addr;
    const char *redis_error;            /* why it is not up */
    const char *consumer;               /* this instance's name in the consumer groups */
    const struct sl_redis_stats *redis; /* the command connection */
    const struct sl_redis_stats *reader; /* the blocking reads' connection */
};

void sl_jobs_stats(const struct sl_jobs *j, struct sl_jobs_stats *out);

/* A route's streams as last polled (durable mode); false if unknown. */
struct sl_jobs_route {
    int64_t length;                     /* entries in the stream: queued and held */
    int64_t pending;                    /* delivered, not acknowledged */
    int64_t dead;                       /* entries in the dead-letter stream */
};

bool sl_jobs_route(const struct sl_jobs *j, const char *route, struct sl_jobs_route *out);

/*
 * Draining: take no more jobs from the streams (held ones go on). When the
 * last held job is let go, the requests' idle hook is called.
 */
void sl_jobs_drain(struct sl_jobs *j);

/* Durable jobs held here: running, or their results not stored yet. */
size_t sl_jobs_held(const struct sl_jobs *j);

/* False with *reason when jobs need Redis and it is not up (for /health). */
bool sl_jobs_healthy(const struct sl_jobs *j, const char **reason);

/* Free every job. Live requests must have been finished first. */
void sl_jobs_free(struct sl_jobs *j);

#endif
