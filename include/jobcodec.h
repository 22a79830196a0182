/*
 * jobcodec.h - an async job as text: its id, the Prefer header that asks
 * for one, the JSON a client reads at GET /_sluice/jobs/{id}, and the
 * header list a durable job carries in Redis.
 *
 * Pure: no I/O, no clock (times are passed in), so every rule here is unit
 * tested. Ownership: encoders return malloc'd text that the caller frees;
 * views borrow everything they point at.
 */
#ifndef SL_JOBCODEC_H
#define SL_JOBCODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/keyvalq_struct.h>

#include "metrics.h"

#define SL_JOB_ID_LEN 32        /* 128 random bits as lowercase hex */
#define SL_JOB_ID_RAW 16

/* Lowercase hex of 16 random bytes, NUL-terminated. */
void sl_job_id_format(const unsigned char raw[SL_JOB_ID_RAW], char out[SL_JOB_ID_LEN + 1]);

/* Exactly SL_JOB_ID_LEN lowercase hex digits (the only form ever handed out). */
bool sl_job_id_valid(const char *s, size_t len);

/* Does any Prefer field ask for respond-async (RFC 7240, any case)? */
bool sl_job_prefers_async(const struct evkeyvalq *headers);

/*
 * Take respond-async out of every Prefer field (the upstream must answer
 * the request itself); a field left empty is removed. SL_OK or SL_ENOMEM.
 */
int sl_job_prefer_strip(struct evkeyvalq *headers);

/* "2026-11-22T00:12:01.345Z" from wall-clock microseconds; out has 32 bytes. */
void sl_job_time_format(int64_t wall_us, char out[32]);

/* What GET /_sluice/jobs/{id} shows; times are wall-clock µs, 0 = not yet. */
struct sl_job_view {
    const char *id;
    const char *route;                  /* NULL = not known */
    enum sl_job_state state;
    unsigned attempts;
    int64_t queued_us;
    int64_t started_us;
    int64_t finished_us;
    int status;                         /* 0 until done or failed */
    const struct evkeyvalq *headers;    /* the answer's; NULL until finished */
    const unsigned char *body;
    size_t body_len;
};

/*
 * The job as JSON: {"id","state","attempts","route","queued_at",
 * "started_at","finished_at", and once finished the stored answer as batch
 * items have it (answer.h): "status", "headers" (lowercased names, a
 * repeated field as an array) and "body" (valid UTF-8) or "body_base64"}.
 * Returns malloc'd text, or NULL when out of memory.
 */
char *sl_job_json(const struct sl_job_view *v);

/* The static name of a method sluice serves ("GET"...), or NULL. */
const char *sl_job_method(const char *m, size_t len);

/*
 * Durable jobs' stream keys: "PREFIX{STREAM}:KIND", the stream's name as
 * the Redis Cluster hash tag, KIND "jobs" (the entries to run) or "dead"
 * (the dead letters). A route's stream is named after the route; batches
 * belong to no route and share one stream named SL_JOB_BATCH_STREAM, which
 * no route can be called ('@' is not allowed in route names), so a route
 * named "batch" keeps its own. Returns SL_OK, or SL_ERR when the key does
 * not fit in `size` (then `out` is "").
 */
#define SL_JOB_BATCH_STREAM "@batch"

int sl_job_stream_key(char *out, size_t size, const char *prefix, const char *stream,
                      const char *kind);

/*
 * Header list <-> text, order and repeats kept: "Name:value\r\n" per field,
 * as on the wire but without the space, so a value comes back byte for
 * byte (any bytes but CR, LF and NUL, which no field value holds). Chosen
 * over JSON, which cost a fifth of a durable job's intake (callgrind) and
 * refused values that are not UTF-8. The decoder still reads the JSON form
 * [[name, value], ...] of entries written by earlier versions (a field
 * name never starts with '['). encode returns NULL when out of memory or
 * when a name is empty or holds ':', CR or LF, or a value CR or LF; decode
 * returns SL_OK, or SL_ERR (malformed) / SL_ENOMEM with `out` partly filled.
 */
char *sl_job_headers_encode(const struct evkeyvalq *headers);
int sl_job_headers_decode(const char *text, size_t len, struct evkeyvalq *out);

#endif
