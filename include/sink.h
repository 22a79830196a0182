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
#include <stdint.h>

#include "headers.h"

struct evbuffer;
struct sl_sink;

/*
 * Whatever answers through a sink (a request; a batch, through its client's
 * connection), embedded in the owner's own object. The source calls `gone`
 * when the sink goes away before the answer; after that the owner must not
 * use the sink.
 *
 * `eof` (may be NULL: then `gone`) is called instead when the source will
 * send nothing more but may still take the answer (a client's FIN, which
 * may be a half-close). It returns true if the owner will still answer,
 * false if it let go of the sink, as after `gone`.
 */
struct sl_sink_owner {
    void (*gone)(struct sl_sink_owner *owner);
    bool (*eof)(struct sl_sink_owner *owner);
    /* A streamed answer's `write` said "enough": the sink has room again. */
    void (*drained)(struct sl_sink_owner *owner);
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
     * The answer: status and its reason phrase (NULL: the standard one;
     * a store may ignore it), fields (may be NULL), body (drained; may be
     * NULL). With `keep_length` a Content-Length among the fields stands
     * (HEAD, 304); with `close` the source should not take another request
     * from where this one came. It ends the adoption. Never fails towards
     * the caller: a source that cannot deliver drops the answer.
     */
    void (*respond)(struct sl_sink *s, int status, const char *reason, sl_sink_fields_fn fields,
                    void *fields_arg, struct evbuffer *body, bool keep_length, bool close);
    /*
     * The answer is kept whole rather than streamed to a client (a batch
     * slot, a job's store): an upstream body over the route's
     * max_response_size is answered 502 response_too_large instead.
     */
    bool stores;
    /*
     * Optional (all three or none): the answer as a stream, for a body
     * that has not all arrived. `begin` sends the head: `length` is the
     * body's length, or -1 when unknown (the source frames it: chunked, or
     * a close); false if the head could not go (the sink then reports
     * `gone` from the loop). `write` takes body bytes (drained) and returns
     * false once it holds as much as it should: the owner then waits for
     * its `drained`. `end` finishes the answer, complete or cut short (the
     * client must be able to tell: no chunked terminator, a short body, a
     * closed connection), and ends the adoption.
     */
    bool (*begin)(struct sl_sink *s, int status, const char *reason, sl_sink_fields_fn fields,
                  void *fields_arg, int64_t length);
    bool (*write)(struct sl_sink *s, struct evbuffer *data);
    void (*end)(struct sl_sink *s, bool complete);
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
