/*
 * backend.h - what an upstream backend is: the contract every way of
 * making an HTTP call to an upstream keeps (h1client.h for http://,
 * curlclient.h for https:// and the rest), and the small table of functions
 * through which upstream.h drives them without knowing which one it holds.
 *
 * The contract: a request is copied at start except its body, which the
 * caller keeps alive until the call completes or is cancelled; `done` runs
 * once per call that was not cancelled, from the event loop and never from
 * inside start; `resp` is valid only during that callback, which may start
 * new calls and cancel other calls (cancelling its own is a no-op), but must
 * not free the backend.
 *
 * Ownership: a backend owns every call it handed out and everything they
 * hold; `free` aborts them (their callbacks are not called).
 */
#ifndef SL_BACKEND_H
#define SL_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/keyvalq_struct.h>

#include "headers.h"

struct evbuffer;
struct sl_tls_config;
struct sl_upstream_response;

/* Room for a reason phrase with its NUL; longer ones are cut (no client reads them). */
#define SL_UPSTREAM_REASON_LEN 64

enum sl_upstream_error {
    SL_UPSTREAM_OK = 0,      /* a complete HTTP response was received */
    SL_UPSTREAM_CONNECT,     /* DNS, connect or TLS handshake failure: nothing was sent */
    SL_UPSTREAM_TIMEOUT,     /* no complete response within the timeout */
    SL_UPSTREAM_CLOSED,      /* sent, then the connection ended before a byte of answer */
    SL_UPSTREAM_PROTOCOL,    /* the upstream sent something that is not HTTP, or reset */
    SL_UPSTREAM_TLS,         /* a certificate was refused (theirs or ours) or TLS could
                              * not be set up: nothing was sent, and another attempt
                              * would fail the same way */
    SL_UPSTREAM_TOO_LARGE,   /* a body taken whole grew past `max_body`: the call was
                              * cut off */
};

/*
 * How the caller takes the body of an answer whose head is in and whose
 * body is not (see sl_upstream_head_fn).
 */
enum sl_upstream_take {
    SL_TAKE_WHOLE = 0,      /* gather it in resp->body for `done`, up to max_body */
    SL_TAKE_STREAM,         /* hand it over as it arrives, through `body` */
    SL_TAKE_NONE,           /* nobody wants it: end the call now (done, error OK) */
};

/*
 * Optional: the request head has just been handed to the kernel (with the
 * done callback's arg). For a new connection that is after the connect, so
 * the caller can date its dispatch by when the request really left. May run
 * inside start. Both backends report it, once per call: neither sends a
 * request twice on its own.
 */
typedef void (*sl_upstream_sent_fn)(void *arg);

/*
 * Optional: the final answer's head is in (status, reason, fields, and
 * content_length) but not all of its body: how does the caller take it?
 * Called at most once per call, from the event loop, never from inside
 * start; an answer that arrives whole at once goes straight to `done`
 * (the common small answer costs nothing more). resp->body may hold the
 * body's first bytes.
 */
typedef enum sl_upstream_take (*sl_upstream_head_fn)(struct sl_upstream_response *resp,
                                                     void *arg);

/*
 * With SL_TAKE_STREAM: more of the body is in resp->body; the callback
 * drains what it takes. Returning false pauses the call: nothing more is
 * read from the upstream until sl_backend_ops.resume (the timeout still
 * runs). The last bytes may come with `done` instead. Neither this nor the
 * head callback may cancel its own call (they return NONE or wait for done).
 */
typedef bool (*sl_upstream_body_fn)(struct sl_upstream_response *resp, void *arg);

struct sl_upstream_request {
    const char *method;                /* "GET", "POST", ... */
    const char *url;                   /* absolute URL */
    const struct evkeyvalq *headers;   /* already translated (headers.h) */
    const void *body;                  /* borrowed until done/cancel; may be NULL */
    size_t body_len;
    int64_t timeout_us;                /* connect + response; <= 0: no limit */
    /* Non-NULL: `headers` are the client's, translated while they are
     * written (sl_headers_each_to_upstream: no copy per request); NULL:
     * `headers` are sent as given. Borrowed during start. */
    const struct sl_forward_info *forward;
    sl_upstream_sent_fn sent;          /* optional, see above */
    /* The route's TLS settings (config.h) for https://; NULL: the system's
     * CAs and full verification. Borrowed during start. */
    const struct sl_tls_config *tls;
    /* Optional streaming (both or neither); without them the body is taken whole. */
    sl_upstream_head_fn head;
    sl_upstream_body_fn body_chunk;
    /* A body taken whole longer than this ends the call SL_UPSTREAM_TOO_LARGE;
     * 0: no cap. */
    size_t max_body;
};

struct sl_upstream_response {
    enum sl_upstream_error error;
    char detail[256];                  /* a short human message when error != OK;
                                        * "TLS: ..." for a TLS failure */
    int status;                        /* final status (1xx skipped); 0 on error */
    char reason[SL_UPSTREAM_REASON_LEN]; /* its reason phrase as received (cut to fit); ""
                                        * when it had none or on error */
    struct evkeyvalq headers;          /* final response's fields as received */
    int64_t content_length;            /* the body's length from its framing, -1 when
                                        * it is chunked or ends with the connection
                                        * (set with the head) */
    struct evbuffer *body;             /* the callback may drain it */
    int64_t duration_us;               /* start to completion */
    unsigned tls_handshakes;           /* new TLS connections this call opened */
};

/* Called once per call that was not cancelled (see the contract above). */
typedef void (*sl_upstream_done_fn)(struct sl_upstream_response *resp, void *arg);

struct sl_backend;
struct sl_backend_call;

struct sl_backend_ops {
    const char *name;
    /* Does this backend take `url`? Cheap enough to ask per call. */
    bool (*handles)(struct sl_backend *b, const char *url);
    /* Start a call; NULL on failure (nothing started, done never called). */
    struct sl_backend_call *(*start)(struct sl_backend *b, const struct sl_upstream_request *req,
                                     sl_upstream_done_fn done, void *arg);
    /* Abort a call under way; its callback is not called. */
    void (*cancel)(struct sl_backend_call *call);
    /* Read again from a call its body callback paused (a no-op otherwise). */
    void (*resume)(struct sl_backend_call *call);
    /* Calls under way. */
    size_t (*active)(const struct sl_backend *b);
    /* Abort every call and free the backend. */
    void (*free)(struct sl_backend *b);
};

/* The first member of every backend... */
struct sl_backend {
    const struct sl_backend_ops *ops;
};

/* ...and of every call it hands out, so a call finds its way back. */
struct sl_backend_call {
    const struct sl_backend_ops *ops;
};

#endif
