/*
 * headers.h - header translation between client and upstream (pure).
 *
 * Both directions drop hop-by-hop fields (RFC 9110 7.6.1): Connection and
 * every field it names, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade,
 * Proxy-Authenticate, Proxy-Authorization, Proxy-Connection; and sluice's own
 * X-Sluice-* fields (requests: they are instructions to sluice; responses:
 * X-Sluice-Error must only ever mean sluice itself answered).
 *
 * Ownership: the functions add copies to `out` (sl_headers_add copies);
 * the caller owns `out` and clears it with sl_headers_clear().
 */
#ifndef SL_HEADERS_H
#define SL_HEADERS_H

#include <stdbool.h>
#include <stddef.h>

struct evkeyval;
struct evkeyvalq;
struct sl_http1_field;

/*
 * Append a field in ONE allocation (entry, name and value together), where
 * evhttp_add_header makes three: sluice's parsers store every header this
 * way. Refuses a name or value with CR or LF (SL_ERR), like evhttp: no list
 * ever holds them, so the translations below never re-check. A list holding
 * such entries must be emptied with sl_headers_clear(), never with
 * evhttp_clear_headers(), and must hold no entry of evhttp's.
 * Returns SL_OK, SL_ERR or SL_ENOMEM.
 */
int sl_headers_add(struct evkeyvalq *q, const char *name, const char *value);

/*
 * Append the fields a parser found (http1.h), all in ONE allocation that
 * the last of them to be freed releases. The parsers' grammar already
 * refused CR and LF, so they are not checked again. Returns SL_OK or
 * SL_ENOMEM (then nothing was added).
 */
int sl_headers_add_parsed(struct evkeyvalq *q, const struct sl_http1_field *fields, size_t n);

/*
 * Free every field of q and leave it empty. Only for lists built with
 * sl_headers_add / sl_headers_add_parsed (and the translations below, which
 * use them); evhttp's own lists are cleared with evhttp_clear_headers().
 */
void sl_headers_clear(struct evkeyvalq *q);

/* Unlink and free one field of such a list. */
void sl_headers_remove(struct evkeyvalq *q, struct evkeyval *e);

/* What the upstream request needs to know about the client side. */
struct sl_forward_info {
    const char *client_addr; /* peer address, appended to X-Forwarded-For */
    const char *proto;       /* "http": X-Forwarded-Proto (replaces the client's) */
    bool preserve_host;      /* keep the client's Host; else drop it (curl sets the upstream's) */
};

/* Is `name` hop-by-hop, either always or because `hdrs`' Connection names it? */
bool sl_headers_is_hop_by_hop(const char *name, const struct evkeyvalq *hdrs);

/* Called once per field by the walks below; non-SL_OK stops the walk. */
typedef int (*sl_header_fn)(const char *name, const char *value, void *arg);

/*
 * Client request headers -> upstream request headers, handed to `fn` one by
 * one so a serializer writes them straight out (no list is built). Besides
 * the hop-by-hop and X-Sluice-* fields, drops Content-Length and Expect (the
 * upstream client computes its own framing), drops Host unless
 * preserve_host, appends the client to X-Forwarded-For, sets
 * X-Forwarded-Proto and appends "Via: 1.1 sluice". Returns SL_OK, SL_ENOMEM
 * or fn's first error.
 */
int sl_headers_each_to_upstream(const struct evkeyvalq *in, const struct sl_forward_info *fi,
                                sl_header_fn fn, void *arg);

/*
 * How the upstream's own URLs map back to the client's view, as nginx's
 * `proxy_redirect default` does: a URL under `upstream` (scheme, authority
 * and base path alike; the scheme and host in any case, a default port
 * written or not) becomes `scheme`://HOST + `prefix` + what follows the
 * base path, HOST being the Host field of `request` (the one the client
 * used). Without a usable Host it becomes a path-absolute reference
 * ("/next"), which RFC 9110 10.2.2 allows. `prefix` is what the client's
 * path had that the upstream's lacks (the route's match when it strips it,
 * else ""). Relative references and other origins stay as
 * they are.
 */
struct sl_redirect_map {
    const char *upstream;               /* the route's "scheme://authority[/base]" */
    const char *scheme;                 /* the client's side: "http" */
    const struct evkeyvalq *request;    /* the client's request fields (its Host) */
    const char *prefix;                 /* "" or "/path" (a trailing '/' is ignored) */
};

/*
 * `url` mapped by `map`: 1 with *out a malloc'd string the caller frees,
 * 0 when it stays as it is (*out untouched), SL_ENOMEM.
 */
int sl_headers_map_url(const char *url, const struct sl_redirect_map *map, char **out);

/*
 * Upstream response headers -> client response headers, handed to `fn` one
 * by one, so the response head is written straight from the answer's
 * fields. Besides the hop-by-hop and X-Sluice-* fields, drops
 * Content-Length unless keep_length (HEAD: the length describes a body that
 * is not sent), and appends "Via: 1.1 sluice". With `map` (may be NULL),
 * Location and Content-Location are mapped (sl_headers_map_url). Returns
 * SL_OK, SL_ENOMEM or fn's first error.
 */
int sl_headers_each_from_upstream(const struct evkeyvalq *in, bool keep_length,
                                  const struct sl_redirect_map *map, sl_header_fn fn, void *arg);

/* Every field of q, as it is. Returns SL_OK or fn's first error. */
int sl_headers_each(const struct evkeyvalq *q, sl_header_fn fn, void *arg);

#endif
