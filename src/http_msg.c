/*
 * http_msg.c - the request message: one allocation for the struct and its
 * target, fields and body beside it.
 */
#include "http_msg.h"

#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>

#include "headers.h"
#include "sluice.h"

struct sl_http_msg *sl_http_msg_new(const char *target, size_t len)
{
    /* sl_zalloc, not calloc: see sluice.h on glibc's thread cache. */
    struct sl_http_msg *m = sl_zalloc(sizeof(*m) + len + 1);

    if (m == NULL)
        return NULL;
    TAILQ_INIT(&m->headers);
    m->target = (char *)(m + 1);
    memcpy(m->target, target, len);
    return m;
}

void sl_http_msg_free(struct sl_http_msg *msg)
{
    if (msg == NULL)
        return;
    sl_headers_clear(&msg->headers);
    if (msg->body != NULL)
        evbuffer_free(msg->body);
    free(msg);
}

const char *sl_http_msg_method(const char *m, size_t n)
{
    static const char *const allowed[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE",
                                          "OPTIONS"};

    for (size_t i = 0; i < SL_ARRAY_LEN(allowed); i++)
        if (strlen(allowed[i]) == n && memcmp(allowed[i], m, n) == 0)
            return allowed[i];
    return NULL;
}

size_t sl_http_msg_body_len(const struct sl_http_msg *msg)
{
    return msg->body != NULL ? evbuffer_get_length(msg->body) : 0;
}
