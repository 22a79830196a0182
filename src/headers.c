/*
 * headers.c - header translation between client and upstream.
 *
 * Pure functions over evhttp header lists. The order and duplicates of the
 * fields that pass through are preserved; the fields sluice rewrites
 * (X-Forwarded-For, Via) are joined into one field appended at the end.
 *
 * Every field of a proxied request passes through here twice, so each name
 * is classified once (length first, then one case-insensitive compare) and
 * Connection is read once per message: the common message, whose Connection
 * names only close or keep-alive, costs no list scan per field.
 *
 * Lists hold no CR or LF (sl_headers_add and evhttp_add_header refuse
 * them), so values are never re-checked here.
 *
 * Every list sluice builds, it builds with sl_headers_add or
 * sl_headers_add_parsed, and clears with sl_headers_clear: an entry's kind is
 * then known from where its name starts, without guessing about blocks an
 * allocator laid out for evhttp.
 */
#include "headers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sys/queue.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "http1.h"
#include "sluice.h"

#define SLUICE_VIA "1.1 sluice"
#define SLUICE_PREFIX "x-sluice-"

/* What a field name means to the translation (a name has at most one role). */
enum role {
    R_NONE = 0,
    R_HOP,              /* hop-by-hop whatever Connection says (RFC 9110 7.6.1) */
    R_CONNECTION,       /* hop-by-hop, and names more hop-by-hop fields */
    R_SLUICE,           /* X-Sluice-*: instructions to sluice, or sluice's own */
    R_CONTENT_LENGTH,
    R_EXPECT,
    R_HOST,
    R_VIA,
    R_XFF,
    R_XFP,
    R_LOCATION,         /* Location, Content-Location: URLs a redirect map rewrites */
};

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + 'a' - 'A') : c;
}

/* a[0..n) equals the lowercase literal `lit` of length n, in any case. */
static bool eq_lower(const char *a, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower(a[i]) != lit[i])
            return false;
    return true;
}

#define IS(lit) eq_lower(name, lit, sizeof(lit) - 1)

static enum role classify(const char *name, size_t len)
{
    if (len > sizeof(SLUICE_PREFIX) - 1 && IS(SLUICE_PREFIX))
        return R_SLUICE;
    switch (len) {
    case 2: return IS("te") ? R_HOP : R_NONE;
    case 3: return IS("via") ? R_VIA : R_NONE;
    case 4: return IS("host") ? R_HOST : R_NONE;
    case 6: return IS("expect") ? R_EXPECT : R_NONE;
    case 7: return IS("upgrade") || IS("trailer") ? R_HOP : R_NONE;
    case 8: return IS("location") ? R_LOCATION : R_NONE;
    case 10:
        if (IS("connection"))
            return R_CONNECTION;
        return IS("keep-alive") ? R_HOP : R_NONE;
    case 14: return IS("content-length") ? R_CONTENT_LENGTH : R_NONE;
    case 15: return IS("x-forwarded-for") ? R_XFF : R_NONE;
    case 16:
        if (IS("proxy-connection"))
            return R_HOP;
        return IS("content-location") ? R_LOCATION : R_NONE;
    case 17:
        if (IS("transfer-encoding"))
            return R_HOP;
        return IS("x-forwarded-proto") ? R_XFP : R_NONE;
    case 18: return IS("proxy-authenticate") ? R_HOP : R_NONE;
    case 19: return IS("proxy-authorization") ? R_HOP : R_NONE;
    default: return R_NONE;
    }
}

#undef IS

static enum role role_of(const char *name)
{
    return classify(name, strlen(name));
}

/*
 * One pass over a message: every field's role (the first SCAN_ROLES of
 * them; later ones are classified again when needed) and what the
 * translation needs to know of the whole.
 */
#define SCAN_ROLES 128

struct scan {
    unsigned char role[SCAN_ROLES];
    bool named;                         /* Connection names fields beyond the fixed list */
    bool via, xff;                      /* present: their values are joined */
    bool location;                      /* a Location or Content-Location is there */
};

static bool token_names_more(const char *t, size_t n, const void *unused);
static bool each_token(const char *list, bool (*fn)(const char *t, size_t n, const void *arg),
                       const void *arg);

static void scan(const struct evkeyvalq *q, struct scan *sc)
{
    const struct evkeyval *h;
    size_t i = 0;

    sc->named = sc->via = sc->xff = sc->location = false;
    TAILQ_FOREACH(h, q, next) {
        enum role r = role_of(h->key);

        if (i < SCAN_ROLES)
            sc->role[i] = (unsigned char)r;
        i++;
        sc->via = sc->via || r == R_VIA;
        sc->xff = sc->xff || r == R_XFF;
        sc->location = sc->location || r == R_LOCATION;
        if (r == R_CONNECTION && !sc->named)
            sc->named = each_token(h->value, token_names_more, NULL);
    }
}

static enum role role_at(const struct scan *sc, size_t i, const char *name)
{
    return i < SCAN_ROLES ? (enum role)sc->role[i] : role_of(name);
}

static int add_entry(struct evkeyvalq *q, const char *name, size_t nl, const char *value,
                     size_t vl)
{
    struct evkeyval *e = malloc(sizeof(*e) + nl + vl + 2);

    if (e == NULL)
        return SL_ENOMEM;
    e->key = (char *)(e + 1);
    memcpy(e->key, name, nl);
    e->key[nl] = '\0';
    e->value = e->key + nl + 1;
    memcpy(e->value, value, vl);
    e->value[vl] = '\0';
    TAILQ_INSERT_TAIL(q, e, next);
    return SL_OK;
}

int sl_headers_add(struct evkeyvalq *q, const char *name, const char *value)
{
    if (strpbrk(name, "\r\n") != NULL || strpbrk(value, "\r\n") != NULL)
        return SL_ERR;
    return add_entry(q, name, strlen(name), value, strlen(value));
}

/*
 * The fields of one parsed message share one allocation: a block counting
 * its entries still in a list, then each entry followed by a pointer back
 * to the block and its strings. The last entry freed frees the block.
 */
struct block {
    size_t live;
};

#define BLOCK_HEAD 16 /* the block's header, padded: entries stay 16-byte aligned */

static size_t parsed_entry_size(const struct sl_http1_field *f)
{
    size_t n = sizeof(struct evkeyval) + sizeof(struct block *) + f->name_len + f->value_len + 2;

    return (n + 15) & ~(size_t)15;
}

int sl_headers_add_parsed(struct evkeyvalq *q, const struct sl_http1_field *fields, size_t n)
{
    size_t size = BLOCK_HEAD;
    struct block *b;
    char *p;

    if (n == 0)
        return SL_OK;
    for (size_t i = 0; i < n; i++)
        size += parsed_entry_size(&fields[i]);
    if ((b = malloc(size)) == NULL)
        return SL_ENOMEM;
    b->live = n;
    p = (char *)b + BLOCK_HEAD;
    for (size_t i = 0; i < n; i++) {
        const struct sl_http1_field *f = &fields[i];
        struct evkeyval *e = (struct evkeyval *)(void *)p;

        memcpy(e + 1, &b, sizeof(b));
        e->key = (char *)(e + 1) + sizeof(b);
        memcpy(e->key, f->name, f->name_len);
        e->key[f->name_len] = '\0';
        e->value = e->key + f->name_len + 1;
        memcpy(e->value, f->value, f->value_len);
        e->value[f->value_len] = '\0';
        TAILQ_INSERT_TAIL(q, e, next);
        p += parsed_entry_size(f);
    }
    return SL_OK;
}

/*
 * Our two kinds of entries, told apart by where the name starts: right
 * after the entry (sl_headers_add) or one pointer further (a parsed block).
 * Both are ours by construction; evhttp's entries never reach here.
 */
static void entry_free(struct evkeyval *e)
{
    struct block *b;

    if (e->key == (char *)(e + 1) + sizeof(b)) {
        memcpy(&b, e + 1, sizeof(b));
        if (--b->live == 0)
            free(b);
    } else {
        free(e);
    }
}

void sl_headers_remove(struct evkeyvalq *q, struct evkeyval *e)
{
    TAILQ_REMOVE(q, e, next);
    entry_free(e);
}

void sl_headers_clear(struct evkeyvalq *q)
{
    struct evkeyval *e;

    while ((e = TAILQ_FIRST(q)) != NULL) {
        TAILQ_REMOVE(q, e, next);
        entry_free(e);
    }
}

/*
 * Walk the comma-separated list `list`: fn sees each non-empty token (not
 * NUL-terminated); a true return stops the walk and is returned.
 */
static bool each_token(const char *list, bool (*fn)(const char *t, size_t n, const void *arg),
                       const void *arg)
{
    const char *p = list;

    while (*p != '\0') {
        while (sl_http1_is_ows(*p) || *p == ',')
            p++;
        const char *start = p;
        while (*p != '\0' && *p != ',')
            p++;
        const char *end = p;
        while (end > start && sl_http1_is_ows(end[-1]))
            end--;
        if (end > start && fn(start, (size_t)(end - start), arg))
            return true;
    }
    return false;
}

static bool token_is(const char *t, size_t n, const void *name)
{
    return strlen(name) == n && strncasecmp(t, name, n) == 0;
}

/* A token that names a field the fixed rules would not drop anyway. */
static bool token_names_more(const char *t, size_t n, const void *unused)
{
    (void)unused;
    enum role r = classify(t, n);

    return r != R_HOP && r != R_CONNECTION && !(n == 5 && strncasecmp(t, "close", 5) == 0);
}

/* Does a Connection field of `hdrs` name `name`? */
static bool connection_names(const struct evkeyvalq *hdrs, const char *name)
{
    const struct evkeyval *h;

    TAILQ_FOREACH(h, hdrs, next)
        if (role_of(h->key) == R_CONNECTION && each_token(h->value, token_is, name))
            return true;
    return false;
}

bool sl_headers_is_hop_by_hop(const char *name, const struct evkeyvalq *hdrs)
{
    enum role r = role_of(name);

    if (r == R_HOP || r == R_CONNECTION)
        return true;
    return hdrs != NULL && name[0] != '\0' && connection_names(hdrs, name);
}

/*
 * Dropped in both directions: hop-by-hop and X-Sluice-*. `named` is whether
 * the message's Connection names other fields (looked up once per message).
 */
static bool always_dropped(enum role r, const char *name, const struct evkeyvalq *in, bool named)
{
    if (r == R_HOP || r == R_CONNECTION || r == R_SLUICE)
        return true;
    return named && connection_names(in, name);
}

/*
 * Join every non-empty value of fields with role `r` in `in` with ", " and
 * append `extra` (if not NULL). Returns a malloc'ed string, or NULL when out
 * of memory. An empty result is "".
 */
static char *join_values(const struct evkeyvalq *in, enum role r, const char *extra)
{
    const struct evkeyval *h;
    size_t len = extra != NULL ? strlen(extra) : 0;

    TAILQ_FOREACH(h, in, next)
        if (role_of(h->key) == r)
            len += strlen(h->value) + 2;

    char *out = malloc(len + 1);
    if (out == NULL)
        return NULL;
    out[0] = '\0';

    char *p = out;
    TAILQ_FOREACH(h, in, next) {
        if (role_of(h->key) != r || h->value[0] == '\0')
            continue;
        if (p != out)
            p = stpcpy(p, ", ");
        p = stpcpy(p, h->value);
    }
    if (extra != NULL) {
        if (p != out)
            p = stpcpy(p, ", ");
        stpcpy(p, extra);
    }
    return out;
}

/* Emit `name: <joined values>, extra`; allocates only when the message had some (`seen`). */
static int emit_joined(const struct evkeyvalq *in, enum role r, bool seen, const char *name,
                       const char *extra, sl_header_fn fn, void *arg)
{
    char *value;
    int rc;

    if (!seen)
        return extra != NULL && extra[0] != '\0' ? fn(name, extra, arg) : SL_OK;
    value = join_values(in, r, extra);
    if (value == NULL)
        return SL_ENOMEM;
    rc = value[0] != '\0' ? fn(name, value, arg) : SL_OK;
    free(value);
    return rc;
}

/* What one direction drops besides always_dropped(); ctx is the direction's setting. */
typedef bool (*dropped_fn)(enum role r, const void *ctx);

/* Every field of `in` the direction keeps, in order, to fn. */
static int emit_kept(const struct evkeyvalq *in, const struct scan *sc, dropped_fn dropped,
                     const void *ctx, sl_header_fn fn, void *arg)
{
    const struct evkeyval *h;
    size_t i = 0;
    int rc;

    TAILQ_FOREACH(h, in, next) {
        enum role r = role_at(sc, i++, h->key);

        if (always_dropped(r, h->key, in, sc->named) || dropped(r, ctx))
            continue;
        if ((rc = fn(h->key, h->value, arg)) != SL_OK)
            return rc;
    }
    return SL_OK;
}

static bool dropped_upstream_bound(enum role r, const void *ctx)
{
    const struct sl_forward_info *fi = ctx;

    switch (r) {
    case R_CONTENT_LENGTH:
    case R_EXPECT:
    case R_XFF:
    case R_XFP:
    case R_VIA:
        return true;
    case R_HOST:
        return !fi->preserve_host;
    default:
        return false;
    }
}

int sl_headers_each_to_upstream(const struct evkeyvalq *in, const struct sl_forward_info *fi,
                                sl_header_fn fn, void *arg)
{
    struct scan sc;
    int rc;

    scan(in, &sc);
    if ((rc = emit_kept(in, &sc, dropped_upstream_bound, fi, fn, arg)) != SL_OK)
        return rc;
    rc = emit_joined(in, R_XFF, sc.xff, "X-Forwarded-For", fi->client_addr, fn, arg);
    if (rc != SL_OK)
        return rc;
    if (fi->proto != NULL && (rc = fn("X-Forwarded-Proto", fi->proto, arg)) != SL_OK)
        return rc;
    return emit_joined(in, R_VIA, sc.via, "Via", SLUICE_VIA, fn, arg);
}

/* ctx: the bool keep_length (HEAD and 304 answers keep Content-Length). */
static bool dropped_client_bound(enum role r, const void *ctx)
{
    return r == R_VIA || (r == R_CONTENT_LENGTH && !*(const bool *)ctx);
}

/* ---- redirects --------------------------------------------------------- */

/* The default port of a scheme ("http" 80, "https" 443), or NULL. */
static const char *default_port(const char *scheme, size_t n)
{
    if (n == 4 && strncasecmp(scheme, "http", 4) == 0)
        return "80";
    if (n == 5 && strncasecmp(scheme, "https", 5) == 0)
        return "443";
    return NULL;
}

/* a[0..an) and b[0..bn) name one authority: case aside, and ":<port>" of `port` aside. */
static bool same_authority(const char *a, size_t an, const char *b, size_t bn, const char *port)
{
    size_t pn = port != NULL ? strlen(port) : 0;

    if (an == bn)
        return strncasecmp(a, b, an) == 0;
    if (an < bn)
        return same_authority(b, bn, a, an, port);
    /* a is the longer one: b plus ":port"? */
    return port != NULL && an == bn + 1 + pn && a[bn] == ':' &&
           strncmp(a + bn + 1, port, pn) == 0 && strncasecmp(a, b, bn) == 0;
}

/* The Host value of a request's fields, if it is a plain host[:port]. */
static const char *request_host(const struct evkeyvalq *q)
{
    const struct evkeyval *h;

    if (q == NULL)
        return NULL;
    TAILQ_FOREACH(h, q, next)
        if (role_of(h->key) == R_HOST)
            return sl_http1_plain_authority(h->value, strlen(h->value)) ? h->value : NULL;
    return NULL;
}

int sl_headers_map_url(const char *url, const struct sl_redirect_map *map, char **out)
{
    const char *up = map->upstream, *sep = strstr(up, "://"), *host, *tail;
    size_t scheme_len, auth_len, base_len, url_auth_len, prefix_len, len;
    char *s;

    if (sep == NULL)
        return 0;
    scheme_len = (size_t)(sep - up);
    auth_len = strcspn(sep + 3, "/");
    base_len = strlen(sep + 3 + auth_len);
    while (base_len > 0 && sep[3 + auth_len + base_len - 1] == '/')
        base_len--;
    /* The same scheme and authority... */
    if (strncasecmp(url, up, scheme_len + 3) != 0)
        return 0;
    url_auth_len = strcspn(url + scheme_len + 3, "/?#");
    if (!same_authority(url + scheme_len + 3, url_auth_len, sep + 3, auth_len,
                        default_port(up, scheme_len)))
        return 0;
    /* ...and under the base path, at a segment boundary. */
    tail = url + scheme_len + 3 + url_auth_len;
    if (strncmp(tail, sep + 3 + auth_len, base_len) != 0)
        return 0;
    tail += base_len;
    if (*tail != '\0' && *tail != '/' && *tail != '?' && *tail != '#')
        return 0;
    host = request_host(map->request);
    prefix_len = strlen(map->prefix);
    while (prefix_len > 0 && map->prefix[prefix_len - 1] == '/')
        prefix_len--;
    len = strlen(map->scheme) + 3 + (host != NULL ? strlen(host) : 0) + prefix_len + 1 +
          strlen(tail) + 1;
    if ((s = malloc(len)) == NULL)
        return SL_ENOMEM;
    snprintf(s, len, "%s%s%s%.*s%s%s", host != NULL ? map->scheme : "",
             host != NULL ? "://" : "", host != NULL ? host : "", (int)prefix_len, map->prefix,
             prefix_len == 0 && *tail != '/' ? "/" : "", tail);
    *out = s;
    return 1;
}

/* Hands each field on, its URL mapped when it is a Location. */
struct mapped {
    const struct sl_redirect_map *map;
    sl_header_fn fn;
    void *arg;
};

static int emit_mapped(const char *name, const char *value, void *arg)
{
    struct mapped *m = arg;
    char *url = NULL;
    int rc;

    if (role_of(name) != R_LOCATION || (rc = sl_headers_map_url(value, m->map, &url)) == 0)
        return m->fn(name, value, m->arg);
    if (rc != 1)
        return rc;
    rc = m->fn(name, url, m->arg);
    free(url);
    return rc;
}

int sl_headers_each_from_upstream(const struct evkeyvalq *in, bool keep_length,
                                  const struct sl_redirect_map *map, sl_header_fn fn, void *arg)
{
    struct mapped m = {map, fn, arg};
    struct scan sc;
    int rc;

    scan(in, &sc);
    /* Most answers have no Location: then no field pays for the map. */
    rc = map != NULL && sc.location
             ? emit_kept(in, &sc, dropped_client_bound, &keep_length, emit_mapped, &m)
             : emit_kept(in, &sc, dropped_client_bound, &keep_length, fn, arg);
    if (rc != SL_OK)
        return rc;
    /* Most answers carry no Via: then ours is the value, no join needed. */
    return emit_joined(in, R_VIA, sc.via, "Via", SLUICE_VIA, fn, arg);
}

int sl_headers_each(const struct evkeyvalq *q, sl_header_fn fn, void *arg)
{
    const struct evkeyval *h;
    int rc;

    TAILQ_FOREACH(h, q, next)
        if ((rc = fn(h->key, h->value, arg)) != SL_OK)
            return rc;
    return SL_OK;
}
