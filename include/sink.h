/*
 * sink.h - where a request's one answer goes: a reply sink.
 *
 * A request does not know what brought it in. Its source gives it a sink;
 * the request's single exit answers through it exactly once. A sink is a
 * client connection (frontend.h), a batch slot (batch.h) or an async job
 * (jobs.h). A sink can go away before the answer
 * (the client hung up, the batch was cancelled): its source then tells the
 * sink's owner through the owner's `gone` (a request leaves its queue
 * without a token; a batch cancels its items).
 *
 * Ownership: the source owns the sink; the owner (a request, a batch)
 * borrows it from adoption until it answers or is told the sink is gone.
 */
#ifndef SL_SINK_H
#define SL_SINK_H

#include <stdbool.h>

#include "headers.h"

struct evbuffer;
struct sl_sink;

/*
 * Whatever answers through a sink (a request; a batch, through its client's
 * connection), embedded in the owner's own object. The source calls `gone`
 * when the sink goes away before the answer; after that the owner must not
 * use the sink.
 */
struct sl_sink_owner {
    void (*gone)(struct sl_sink_owner *owner);
};

/*
 * The fields of an answer, handed to `emit` one by one as the head is
 * written (no list needs to be built). Returns SL_OK, or an error that
 * abandons the answer.
 */
typedef int (*sl_sink_fields_fn)(sl_header_fn emit, void *emit_arg, void *arg);

struct sl_sink_ops {
    /*
     * `owner` now answers through this sink: the source reports the sink's
     * going to it. NULL: nobody does any more.
     */
    void (*adopt)(struct sl_sink *s, struct sl_sink_owner *owner);
    /*
     * The answer: status, fields (may be NULL), body (drained; may be
     * NULL). With `keep_length` a Content-Length among the fields stands
     * (HEAD, 304); with `close` the source should not take another request
     * from where this one came. It ends the adoption. Never fails towards
     * the caller: a source that cannot deliver drops the answer.
     */
    void (*respond)(struct sl_sink *s, int status, sl_sink_fields_fn fields, void *fields_arg,
                    struct evbuffer *body, bool keep_length, bool close);
    /*
     * The answer is kept whole rather than streamed to a client (a batch
     * slot, a job's store): an upstream body over the route's
     * max_response_size is answered 502 response_too_large instead.
     */
    bool stores;
    /*
     * Optional (may be NULL): the request was handed to the upstream, for
     * the `attempt`-th time (an async job shows "running" from then on).
     */
    void (*dispatched)(struct sl_sink *s, unsigned attempt);
};

/* Embedded first in the source's own object (a connection, a job, a slot). */
struct sl_sink {
    const struct sl_sink_ops *ops;
};

#endif
