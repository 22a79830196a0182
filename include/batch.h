/*
 * batch.h - POST /_sluice/batch: one request fans out into many, and their
 * answers are gathered into one (SPEC section 5).
 *
 * The body {"requests":[{"method","path","headers":{},"body"|"body_base64"}...]}
 * is parsed and checked whole before anything is submitted
 * (sl_batch_parse): a malformed batch gets 400 bad_request with a detail
 * naming the item and the field ("requests[3].path: must start with /"),
 * and no item goes anywhere. Otherwise each item becomes a struct
 * sl_http_msg that inherits the batch request's fields it does not set
 * itself (sl_batch_inherit), and all are submitted at once, in item order,
 * each answering through its own slot of the batch (a sink, sink.h). An
 * item is then a request like any other: normalised, routed, parked in its
 * lane (so in item order within a lane of a route), rate-limited, retried,
 * counted and logged; items of different routes are in flight together as
 * their limits allow.
 *
 * A slot stores its item's answer as JSON (answer.h) when it arrives; once
 * every slot is filled the batch answers 200
 * {"responses":[{"status","headers","body"|"body_base64","error","detail",
 * "attempts","queue_ms"}...]} in item order. A failed item carries sluice's
 * error code and detail and never fails the others. Upstream bodies over
 * the route's max_response_size become 502 response_too_large (slots keep
 * answers whole: sink.h `stores`).
 *
 * Ownership: sl_batch_submit() takes the batch request's message and frees
 * it once parsed. The batch owns its slots and their stored answers and
 * frees itself: when it has answered through its sink (its last slot was
 * filled), or when its sink goes away (the client hung up: the sink's
 * source calls the batch's owner gone). Going away, it tells the request of
 * every slot not yet filled that its sink is gone - a parked item leaves
 * its queue without a token, one in flight finishes and is counted, its
 * answer dropped - and as those requests never touch their slot again it
 * frees itself at once. The batch borrows its sink (until it answers or
 * hears it is gone), the struct sl_requests and the stats (the instance's,
 * which outlive every batch: every slot's request ends before they go).
 *
 * Async: a batch answers through whatever sink it is given. With
 * `Prefer: respond-async` the async-jobs module (jobs.h) passes its job's
 * store (a sink) instead of the client's connection, and the gathered
 * answer becomes the job's result; the first item handed to an upstream is
 * reported to that sink as the batch's dispatch (the job is "running").
 * Prefer is never passed on to the items. A source that must store the
 * batch before it answers (a durable job) checks it first with
 * sl_batch_check, so that a malformed batch is refused before any 202.
 */
#ifndef SL_BATCH_H
#define SL_BATCH_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/keyvalq_struct.h>

#include "http_msg.h"
#include "metrics.h"
#include "request.h"
#include "sink.h"

struct evbuffer;

#define SL_BATCH_PATH "/_sluice/batch"
#define SL_BATCH_MAX_FIELDS 100 /* per item, as the frontend's cap per request */

/* Is `msg` a POST to /_sluice/batch (any query string ignored)? */
bool sl_batch_is_endpoint(const struct sl_http_msg *msg);

/*
 * Take in the batch request `msg` (owned from now on) from `client`, to be
 * answered through `sink`: refused at once (400 malformed, 503 draining,
 * 500 out of memory), or fanned out, with the sink adopted by the batch
 * until it answers. Counted in `stats` and logged either way.
 */
void sl_batch_submit(struct sl_requests *q, struct sl_batch_stats *stats, struct sl_sink *sink,
                     struct sl_http_msg *msg, const char *client);

/*
 * Would sl_batch_submit() fan `msg` out (not draining, the body and every
 * item well-formed)? True if so, with nothing done; otherwise the refusal
 * (400 with the item and field, 503 draining, 500 out of memory) is
 * answered through `sink`, counted in `stats` and logged, and false is
 * returned. `msg` stays the caller's (its body may be made contiguous).
 */
bool sl_batch_check(struct sl_requests *q, struct sl_batch_stats *stats, struct sl_sink *sink,
                    const struct sl_http_msg *msg, const char *client);

/* --- the pure parts (unit-tested) --------------------------------------- */

struct sl_batch_limits {
    size_t max_items;        /* max_batch_items */
    size_t max_body_size;    /* of each item's body, decoded */
    size_t max_header_size;  /* of each item's request line and own fields */
};

/* The items of a batch, in order; each message owned until taken (then NULL). */
struct sl_batch_items {
    struct sl_http_msg **msgs;
    size_t n;
};

/*
 * Parse and check the batch body json[0..len). Items without "method" are
 * GET; "headers" values are strings, or arrays of strings for a repeated
 * field. Returns SL_OK with `out` filled, SL_ERR with `detail` set (the 400
 * detail) or SL_ENOMEM; on failure `out` is left empty.
 */
int sl_batch_parse(const char *json, size_t len, const struct sl_batch_limits *lim,
                   struct sl_batch_items *out, char *detail, size_t detail_size);

/* Free the messages not taken and the array; leaves `items` empty. */
void sl_batch_items_clear(struct sl_batch_items *items);

/*
 * Give `item` every field of the batch request `batch` whose name it does
 * not set itself (X-Sluice-Priority, X-Sluice-Deadline, Idempotency-Key,
 * Authorization, X-Forwarded-For...), except hop-by-hop fields and those
 * about the batch request's own body or handling (Content-*, Expect,
 * Prefer). Updates header_bytes. Returns SL_OK or SL_ENOMEM.
 */
int sl_batch_inherit(struct sl_http_msg *item, const struct evkeyvalq *batch);

/*
 * Append one item's answer as a JSON object: `fields` as the client would
 * have seen them, `body` (drained; may be NULL). "error" is the
 * X-Sluice-Error code (null when the upstream answered) and "detail" the
 * detail of sluice's JSON error body; "attempts" and "queue_ms" come from
 * X-Sluice-Attempts and X-Sluice-Queue-Time (0 without them).
 * Returns SL_OK or SL_ENOMEM.
 */
int sl_batch_encode_item(struct evbuffer *out, int status, const struct evkeyvalq *fields,
                         struct evbuffer *body);

#endif
