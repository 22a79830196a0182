/*
 * upstream.h - HTTP calls to upstreams, whatever the scheme: a small table
 * of backends (backend.h), asked in order which one takes a URL. http://
 * goes to our own lean HTTP/1.1 client (h1client.h, pooled keep-alive
 * connections), the rest (https://) to libcurl (curlclient.h). Every
 * backend keeps backend.h's contract, so callers see one behaviour.
 *
 * Both backends run their events at priority 0, the highest when the base
 * has several (the proxy uses two): a dispatched request reaches the wire
 * before the loop turns to client I/O, which keeps dispatch-to-arrival
 * jitter small so the upstream sees the same spacing the limiter decided.
 *
 * Ownership: struct sl_upstream owns its backends, and through them every
 * call under way. libcurl's backend is made when a URL first needs it
 * (sl_upstream_prepare), so a sluice with only http:// upstreams never
 * loads libcurl.
 */
#ifndef SL_UPSTREAM_H
#define SL_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "backend.h"

struct event_base;
struct sl_upstream;

/* A call under way, as a backend handed it out. */
struct sl_upstream_call;

/*
 * Create the backends on `base`. `max_connections` sizes curl's connection
 * cache and caps the native client's idle keep-alive connections (keep it
 * >= the sum of the routes' max_in_flight). Returns NULL on failure.
 */
struct sl_upstream *sl_upstream_new(struct event_base *base, unsigned max_connections);

/*
 * Calls to `url` will come: make the backend that takes it now. libcurl
 * (https://) is loaded and set up when first needed, which takes some
 * milliseconds: better at start or at a reload than at a dispatch. Returns
 * SL_OK, or SL_ERR if that backend cannot be made (its calls would fail).
 */
int sl_upstream_prepare(struct sl_upstream *u, const char *url);

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

/* Read again from a call its body callback paused (backend.h). */
void sl_upstream_resume(struct sl_upstream_call *call);

/* Calls under way, all backends together. */
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
