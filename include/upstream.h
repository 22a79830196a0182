/*
 * upstream.h - HTTP calls to upstreams: http:// URLs through our own lean
 * HTTP/1.1 client (h1client.h, pooled keep-alive connections), the rest
 * (https://) through one libcurl multi handle driven by the event loop (the
 * hiperfifo pattern: socket callback + one timer, curl_multi_socket_action,
 * then curl_multi_info_read). Both paths keep the contract below.
 *
 * The dispatcher is the only queue: curl's own connection limits stay at or
 * above the configured in-flight caps so that curl never queues behind our
 * back. Names resolve through curl's threaded resolver, never blocking the
 * loop. Its events run at priority 0, the highest when the base has several
 * (sl_proxy uses two): a dispatched request reaches the wire before the loop
 * turns to client I/O, which keeps dispatch-to-arrival jitter small so the
 * upstream sees the same spacing the limiter decided.
 *
 * Ownership: struct sl_upstream owns the multi handle, its timer and every
 * call under way. A call owns its easy handle, its header list and its
 * response. The request passed to sl_upstream_start() is copied except for
 * the body, which the caller keeps alive until the call completes or is
 * cancelled.
 */
#ifndef SL_UPSTREAM_H
#define SL_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "headers.h"

struct event_base;
struct evbuffer;

enum sl_upstream_error {
    SL_UPSTREAM_OK = 0,      /* a complete HTTP response was received */
    SL_UPSTREAM_CONNECT,     /* DNS, connect or TLS failure: nothing was sent */
    SL_UPSTREAM_TIMEOUT,     /* no complete response within the timeout */
    SL_UPSTREAM_PROTOCOL,    /* the upstream sent something that is not HTTP, or reset */
};

/*
 * Optional: the request head has just been handed to the kernel (with the
 * done callback's arg). For a new connection that is after the connect, so
 * the caller can date its dispatch by when the request really left. May run
 * inside sl_upstream_start(), and again after a transparent keep-alive
 * retry. Only the http:// client reports it.
 */
typedef void (*sl_upstream_sent_fn)(void *arg);

struct sl_upstream_request {
    const char *method;                /* "GET", "POST", ... */
    const char *url;                   /* absolute URL */
    const struct evkeyvalq *headers;   /* already translated (headers.h) */
    const void *body;                  /* borrowed until done/cancel; may be NULL */
    size_t body_len;
    int64_t timeout_us;                /* connect + response; <= 0: no limit */
    /* Non-NULL: `headers` are the client's, translated while they are
     * written (sl_headers_each_to_upstream: no copy per request); NULL:
     * `headers` are sent as given. Borrowed during sl_upstream_start(). */
    const struct sl_forward_info *forward;
    sl_upstream_sent_fn sent;          /* optional, see above */
};

struct sl_upstream_response {
    enum sl_upstream_error error;
    char detail[256];                  /* a short human message when error != OK */
    int status;                        /* final status (1xx skipped); 0 on error */
    struct evkeyvalq headers;          /* final response's fields as received */
    struct evbuffer *body;             /* the callback may drain it */
    int64_t duration_us;               /* start to completion */
};

/*
 * Called once per call that was not cancelled; `resp` is valid only during the
 * call. It may start new calls and cancel other calls, but must not free the
 * sl_upstream; cancelling its own call there is a no-op (it is freed after).
 */
typedef void (*sl_upstream_done_fn)(struct sl_upstream_response *resp, void *arg);

struct sl_upstream;
struct sl_upstream_call;

/*
 * Create the multi handle on `base`. `max_connections` sizes curl's
 * connection cache and caps the native client's idle keep-alive connections
 * (keep it >= the sum of the routes' max_in_flight). Returns NULL on failure.
 */
struct sl_upstream *sl_upstream_new(struct event_base *base, unsigned max_connections);

/* Abort every call (their callbacks are not called) and free everything. */
void sl_upstream_free(struct sl_upstream *u);

/*
 * Start a call. `done` runs later from the event loop, never from inside
 * this function. Returns the call, or NULL on failure (nothing started).
 */
struct sl_upstream_call *sl_upstream_start(struct sl_upstream *u,
                                           const struct sl_upstream_request *req,
                                           sl_upstream_done_fn done, void *arg);

/* Abort a call under way; its callback is not called. */
void sl_upstream_cancel(struct sl_upstream_call *call);

/* Calls under way. */
size_t sl_upstream_active(const struct sl_upstream *u);

/*
 * Send later http:// calls through the native client (true, the default) or
 * through libcurl like https:// (false): for tests and comparisons.
 */
void sl_upstream_set_native_http(struct sl_upstream *u, bool on);

/*
 * Build the upstream URL: the route's upstream base ("http://h:p/base") joined
 * with the client's target ("/path?query"), into buf. Returns SL_OK, or
 * SL_ERR if it does not fit.
 */
int sl_upstream_url(const char *base, const char *target, char *buf, size_t size);

#endif
