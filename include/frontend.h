/*
 * frontend.h - the client side: listeners and an HTTP/1.1 server on
 * bufferevents, parsing with http1.h.
 *
 * Why not evhttp: evhttp answers oversized or malformed requests itself
 * (no 431, no X-Sluice-Error), cannot count or cap connections in 2.1, and
 * stops reading while a request waits, so it never sees a client that hung
 * up (libevent #531, #666). Owning the connection gives us all three: the
 * socket keeps being read while a request is parked, so a hang-up is seen at
 * once and reported through `gone`.
 *
 * A connection serves one request at a time (pipelined requests wait in its
 * input buffer until the response to the previous one is written).
 *
 * Ownership: the frontend owns its listeners and connections. A parsed
 * struct sl_http_msg is handed to `request` and is then owned by the
 * callee, which must eventually answer through sl_conn_respond() - unless
 * `gone` is called first, after which the connection no longer exists.
 */
#ifndef SL_FRONTEND_H
#define SL_FRONTEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/keyvalq_struct.h>

#include "config.h"
#include "headers.h"
#include "http_msg.h"
#include "metrics.h"
#include "sink.h"

struct event_base;
struct evbuffer;
struct sl_conn;
struct sl_frontend;

struct sl_frontend_callbacks {
    /* A complete request; the callee owns msg and must answer (or see gone). */
    void (*request)(struct sl_conn *conn, struct sl_http_msg *msg, void *arg);
    /*
     * The client hung up while `owner` was being served: what the sink's
     * adopt set (a struct sl_sink_owner), or what sl_conn_set_owner set.
     */
    void (*gone)(struct sl_conn *conn, void *owner, void *arg);
    /* The frontend refused a request itself (parse error, caps): count and log it. */
    void (*refused)(struct sl_conn *conn, enum sl_outcome outcome, const char *detail, void *arg);
    /* The last connection closed (used while draining). */
    void (*idle)(void *arg);
};

/* Pause reasons: accepting stops while any is set. */
enum sl_frontend_pause {
    SL_PAUSE_CONNECTIONS = 1 << 0, /* max_connections reached */
    SL_PAUSE_QUEUE = 1 << 1,       /* queue full in backpressure mode */
    SL_PAUSE_ERROR = 1 << 2,       /* accept() failed (EMFILE...), retry shortly */
    SL_PAUSE_DRAIN = 1 << 3,       /* shutting down */
};

/* Returns NULL on failure. `cfg` is borrowed; see sl_frontend_configure. */
struct sl_frontend *sl_frontend_new(struct event_base *base, const struct sl_config *cfg,
                                    const struct sl_frontend_callbacks *cb, void *arg);

/* Adopt limits and timeouts from a (new) config; listen addresses are not changed. */
void sl_frontend_configure(struct sl_frontend *fe, const struct sl_config *cfg);

/*
 * Accept at most `cap` connections, below cfg->max_connections when the
 * descriptor limit leaves no room for more (the caller keeps descriptors
 * for upstreams). Stays until the next sl_frontend_configure().
 */
void sl_frontend_cap_connections(struct sl_frontend *fe, unsigned cap);

/* Bind every cfg->listen address. Returns SL_OK or SL_ERR (logged). */
int sl_frontend_listen(struct sl_frontend *fe);

void sl_frontend_pause(struct sl_frontend *fe, enum sl_frontend_pause why);
void sl_frontend_resume(struct sl_frontend *fe, enum sl_frontend_pause why);

/* Close the listening sockets for good (drain). */
void sl_frontend_close_listeners(struct sl_frontend *fe);

/* Close every connection that is not serving a request (drain). */
void sl_frontend_close_idle(struct sl_frontend *fe);

size_t sl_frontend_connections(const struct sl_frontend *fe);

/* Close everything (connections are dropped without callbacks). */
void sl_frontend_free(struct sl_frontend *fe);

/* What `gone` will report for this connection (the sink's adopt does the same). */
void sl_conn_set_owner(struct sl_conn *conn, void *owner);

/* The connection as a reply sink (sink.h): respond is sl_conn_respond(). */
struct sl_sink *sl_conn_sink(struct sl_conn *conn);

/* The client's address ("127.0.0.1"). */
const char *sl_conn_peer(const struct sl_conn *conn);

/* The fields of a response (sink.h); an error drops the connection. */
typedef sl_sink_fields_fn sl_conn_fields_fn;

/*
 * Write a response and finish the current request on `conn`. `fields`
 * (may be NULL) emits the fields as they are to be written; the frontend
 * adds Content-Length (unless `keep_length` and the fields carry one), Date
 * when absent, and Connection when needed. `body` is drained (may be
 * NULL). With `close` the connection closes once written. Never fails: on
 * an error the connection is dropped.
 */
void sl_conn_respond(struct sl_conn *conn, int status, sl_conn_fields_fn fields,
                     void *fields_arg, struct evbuffer *body, bool keep_length, bool close);

#endif
