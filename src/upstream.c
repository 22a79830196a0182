/*
 * upstream.c - the backend table: the first backend that takes a URL makes
 * the call; a call carries its backend's functions (backend.h), so cancel
 * needs no lookup.
 */
#include "upstream.h"

#include <stdlib.h>
#include <string.h>

#include "curlclient.h"
#include "h1client.h"
#include "sluice.h"

enum { BACKEND_H1, BACKEND_CURL, BACKEND_COUNT };

struct sl_upstream {
    struct sl_backend *backends[BACKEND_COUNT]; /* owned, asked in this order; curl's
                                                 * is made when first needed */
    bool native_http;                           /* http:// goes to h1 (the default) */
    struct event_base *base;
    unsigned max_connections;
};

/* A call is a backend's call: the struct is never defined, only converted. */
static struct sl_upstream_call *as_call(struct sl_backend_call *c)
{
    return (struct sl_upstream_call *)(void *)c;
}

struct sl_upstream *sl_upstream_new(struct event_base *base, unsigned max_connections)
{
    struct sl_upstream *u;

    if (base == NULL || (u = calloc(1, sizeof(*u))) == NULL)
        return NULL;
    /* The same number caps the idle keep-alive connections of the native client. */
    u->backends[BACKEND_H1] = sl_h1client_backend(sl_h1client_new(base, max_connections));
    u->native_http = true;
    u->base = base;
    u->max_connections = max_connections;
    if (u->backends[BACKEND_H1] == NULL) {
        sl_upstream_free(u);
        return NULL;
    }
    return u;
}

void sl_upstream_free(struct sl_upstream *u)
{
    if (u == NULL)
        return;
    for (int i = 0; i < BACKEND_COUNT; i++)
        if (u->backends[i] != NULL)
            u->backends[i]->ops->free(u->backends[i]);
    free(u);
}

/* The backend at `i`, made now if it is libcurl's and not made yet (curlclient.h). */
static struct sl_backend *backend(struct sl_upstream *u, int i)
{
    if (i == BACKEND_CURL && u->backends[i] == NULL)
        u->backends[i] = sl_curlclient_backend(sl_curlclient_new(u->base, u->max_connections));
    return u->backends[i];
}

int sl_upstream_prepare(struct sl_upstream *u, const char *url)
{
    if (u == NULL || url == NULL)
        return SL_ERR;
    if (u->native_http && u->backends[BACKEND_H1]->ops->handles(u->backends[BACKEND_H1], url))
        return SL_OK;
    return backend(u, BACKEND_CURL) != NULL ? SL_OK : SL_ERR;
}

struct sl_upstream_call *sl_upstream_start(struct sl_upstream *u,
                                           const struct sl_upstream_request *req,
                                           sl_upstream_done_fn done, void *arg)
{
    if (u == NULL || req == NULL || req->method == NULL || req->url == NULL || done == NULL)
        return NULL;
    for (int i = 0; i < BACKEND_COUNT; i++) {
        struct sl_backend *b;

        if (i == BACKEND_H1 && !u->native_http)
            continue;
        if ((b = backend(u, i)) == NULL)
            return NULL;
        if (b->ops->handles(b, req->url))
            return as_call(b->ops->start(b, req, done, arg));
    }
    return NULL;
}

void sl_upstream_cancel(struct sl_upstream_call *call)
{
    struct sl_backend_call *c = (struct sl_backend_call *)(void *)call;

    if (c != NULL)
        c->ops->cancel(c);
}

void sl_upstream_resume(struct sl_upstream_call *call)
{
    struct sl_backend_call *c = (struct sl_backend_call *)(void *)call;

    if (c != NULL)
        c->ops->resume(c);
}

size_t sl_upstream_active(const struct sl_upstream *u)
{
    size_t n = 0;

    for (int i = 0; u != NULL && i < BACKEND_COUNT; i++)
        if (u->backends[i] != NULL)
            n += u->backends[i]->ops->active(u->backends[i]);
    return n;
}

void sl_upstream_set_native_http(struct sl_upstream *u, bool on)
{
    if (u != NULL)
        u->native_http = on;
}

int sl_upstream_url(const char *base, const char *target, char *buf, size_t size)
{
    if (base == NULL || target == NULL || buf == NULL || size == 0 || target[0] != '/')
        return SL_ERR;

    const char *scheme_end = strstr(base, "://");
    const char *authority = scheme_end != NULL ? scheme_end + 3 : base;
    size_t len = strlen(base);

    /* "http://h/base/" + "/p" must not give "//p". */
    while (len > (size_t)(authority - base) && base[len - 1] == '/')
        len--;
    size_t tlen = strlen(target);

    if (len + tlen >= size) {
        buf[0] = '\0';
        return SL_ERR;
    }
    memcpy(buf, base, len);
    memcpy(buf + len, target, tlen + 1);
    return SL_OK;
}
