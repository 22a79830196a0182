/*
 * curlclient.h - upstream calls through one libcurl multi handle driven by
 * the event loop: https:// (and any http:// URL the native client does not
 * take). Keeps backend.h's contract.
 *
 * The dispatcher is the only queue: curl's own connection limits stay at or
 * above the configured in-flight caps so that curl never queues behind our
 * back. Names resolve through curl's threaded resolver, never blocking the
 * loop. Its events run at priority 0 (see upstream.h).
 *
 * Ownership: struct sl_curlclient owns the multi handle, its timer and every
 * call under way. A call owns its easy handle, its header list and its
 * response.
 */
#ifndef SL_CURLCLIENT_H
#define SL_CURLCLIENT_H

#include <stddef.h>

#include "backend.h"

struct event_base;
struct sl_curlclient;

/*
 * Create the multi handle on `base`; `max_connections` sizes curl's
 * connection cache. Returns NULL on failure.
 */
struct sl_curlclient *sl_curlclient_new(struct event_base *base, unsigned max_connections);

/* Abort every call (their callbacks are not called) and free everything. */
void sl_curlclient_free(struct sl_curlclient *u);

/* Start a call (backend.h's contract). NULL on failure: nothing started. */
struct sl_backend_call *sl_curlclient_start(struct sl_curlclient *u,
                                            const struct sl_upstream_request *req,
                                            sl_upstream_done_fn done, void *arg);

/* Abort a call under way; its callback is not called. */
void sl_curlclient_cancel(struct sl_backend_call *call);

/* Read again from a call its body callback paused (backend.h); a no-op otherwise. */
void sl_curlclient_resume(struct sl_backend_call *call);

/* Calls under way. */
size_t sl_curlclient_active(const struct sl_curlclient *u);

/* This client behind backend.h (freed with it). */
struct sl_backend *sl_curlclient_backend(struct sl_curlclient *u);

#endif
