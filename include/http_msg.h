/*
 * http_msg.h - one HTTP request as sluice holds it from intake to its end,
 * whatever brought it in (a client connection today; an async job or a
 * batch item next).
 *
 * Ownership: a message owns its fields and its body; its target lives in
 * the message's own allocation. Whoever holds the pointer frees it with
 * sl_http_msg_free().
 */
#ifndef SL_HTTP_MSG_H
#define SL_HTTP_MSG_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/keyvalq_struct.h>

struct evbuffer;

struct sl_http_msg {
    const char *method;         /* static string ("GET", ...) */
    char *target;               /* request target as sent ("/p?q"), in msg's allocation */
    struct evkeyvalq headers;   /* owned */
    struct evbuffer *body;      /* owned; NULL when the request has no body */
    size_t header_bytes;        /* request line + header section size */
    bool head;                  /* method is HEAD */
};

/* A message with a copy of `target` (len bytes) and no fields. NULL if out of memory. */
struct sl_http_msg *sl_http_msg_new(const char *target, size_t len);

void sl_http_msg_free(struct sl_http_msg *msg);

/*
 * The methods sluice takes (case-sensitive), as the static string a message
 * keeps; NULL for any other (`n` bytes of `m`, not NUL-terminated).
 */
const char *sl_http_msg_method(const char *m, size_t n);

/* Bytes of its body (0 without one). */
size_t sl_http_msg_body_len(const struct sl_http_msg *msg);

#endif
