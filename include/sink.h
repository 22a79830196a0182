/*
 * sink.h - where a request's one answer goes: a reply sink.
 *
 * A request does not know what brought it in. Its source gives it a sink;
 * the request's single exit answers through it exactly once. Today a sink
 * is a client connection (frontend.h) or an async job (jobs.h); a batch
 * slot is a sink of the same kind. A sink can go away before the answer
 * (the client hung up, the batch was cancelled): its source then tells the
 * request (sl_request_sink_gone), which leaves its queue without a token.
 *
 * Ownership: the source owns the sink; the request borrows it from
 * sl_request_submit() until it answers or is told the sink is gone.
 */
#ifndef SL_SINK_H
#define SL_SINK_H

#include <stdbool.h>

#include "headers.h"

struct evbuffer;
struct sl_sink;

/*
 * The fields of an answer, handed to `emit` one by one as the head is
 * written (no list needs to be built). Returns SL_OK, or an error that
 * abandons the answer.
 */
typedef int (*sl_sink_fields_fn)(sl_header_fn emit, void *emit_arg, void *arg);

struct sl_sink_ops {
    /*
     * `owner` (a struct sl_request) now answers through this sink: the
     * source reports the sink's going to it. NULL: nobody does any more.
     */
    void (*adopt)(struct sl_sink *s, void *owner);
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
