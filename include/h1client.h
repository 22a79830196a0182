/*
 * h1client.h - a lean HTTP/1.1 client for plain http:// upstreams, on
 * libevent bufferevents, parsing with http1.h (libcurl stays for https://).
 *
 * Measured reason (issue 5): libcurl spent ~81k instructions per proxied GET,
 * more than the rest of sluice together, mostly building the request text
 * one character at a time. This client writes the request head with a few
 * memcpy's, keeps idle keep-alive connections per origin, and reuses their
 * bufferevents and parse buffers.
 *
 * Contract: backend.h's (request copied except the body, done
 * called once per call that was not cancelled, from the event loop and never
 * from inside sl_h1client_start(), resp valid only during the callback, which
 * may start new calls and cancel other calls). Names resolve through evdns,
 * never blocking the loop; IP literals connect directly. Connections and
 * timers run at priority 0, like the curl path.
 *
 * Ownership: struct sl_h1client owns every call under way, the idle pool and
 * the evdns base. A call owns its connection while it runs; a connection is
 * used by one call at a time (no pipelining).
 */
#ifndef SL_H1CLIENT_H
#define SL_H1CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "backend.h"

struct event_base;
struct sl_h1client;
struct sl_h1call;

/*
 * Create a client on `base`; at most `max_idle` idle connections are kept,
 * all origins together (0 keeps none). Returns NULL on failure.
 */
struct sl_h1client *sl_h1client_new(struct event_base *base, unsigned max_idle);

/* Abort every call (their callbacks are not called), close the pool, free. */
void sl_h1client_free(struct sl_h1client *c);

/*
 * Does this client take `url`? "http://host[:port][/path][?query]" with a
 * name, an IPv4 or a bracketed IPv6 literal; no userinfo, no zone id. The
 * last authority parsed is remembered, so asking per call is cheap.
 */
bool sl_h1client_handles(struct sl_h1client *c, const char *url);

/*
 * Start a call (see the contract above). Returns the call, or NULL when the
 * URL is not one this client handles or memory ran out (nothing started).
 */
struct sl_h1call *sl_h1client_start(struct sl_h1client *c, const struct sl_upstream_request *req,
                                    sl_upstream_done_fn done, void *arg);

/* Abort a call: its connection is closed, its callback is not called. */
void sl_h1client_cancel(struct sl_h1call *call);

/* Read again from a call its body callback paused (backend.h); a no-op otherwise. */
void sl_h1client_resume(struct sl_h1call *call);

/* Calls under way. */
size_t sl_h1client_active(const struct sl_h1client *c);

/* Idle keep-alive connections in the pool. */
size_t sl_h1client_idle(const struct sl_h1client *c);

/* This client behind backend.h (freed with it). */
struct sl_backend *sl_h1client_backend(struct sl_h1client *c);

#endif
