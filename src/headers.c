/*
 * headers.c - header translation between client and upstream.
 *
 * Pure functions over evhttp header lists. The order and duplicates of the
 * fields that pass through are preserved; the fields sluice rewrites
 * (X-Forwarded-For, Via) are joined into one field appended at the end.
 */
#include "headers.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sys/queue.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "sluice.h"

#define SLUICE_VIA "1.1 sluice"
#define SLUICE_PREFIX "X-Sluice-"

/* RFC 2616 13.5.1's list, plus Proxy-Connection (RFC 9110 7.6.1). */
/* A field name with its length: lists are matched length first, so most
 * comparisons end before any strcasecmp (this runs for every field twice
 * per proxied request). */
struct name {
    const char *s;
    size_t len;
};

#define NAME(lit) {lit, sizeof(lit) - 1}

static const struct name hop_fields[] = {
    NAME("Connection"), NAME("Keep-Alive"), NAME("TE"), NAME("Trailer"),
    NAME("Transfer-Encoding"), NAME("Upgrade"), NAME("Proxy-Authenticate"),
    NAME("Proxy-Authorization"), NAME("Proxy-Connection"),
};

static bool name_in(const char *name, size_t len, const struct name *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (list[i].len == len && strcasecmp(name, list[i].s) == 0)
            return true;
    return false;
}

int sl_headers_add(struct evkeyvalq *q, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    struct evkeyval *e;

    if (strpbrk(value, "\r\n") != NULL)
        return SL_ERR;
    e = malloc(sizeof(*e) + nl + vl + 2);
    if (e == NULL)
        return SL_ENOMEM;
    e->key = (char *)(e + 1);
    memcpy(e->key, name, nl + 1);
    e->value = e->key + nl + 1;
    memcpy(e->value, value, vl + 1);
    TAILQ_INSERT_TAIL(q, e, next);
    return SL_OK;
}

/* Our entries carry their strings inline; libevent's (malloc'ed, as we never
 * replace its allocator) own two more blocks. */
static void entry_free(struct evkeyval *e)
{
    if (e->key != (char *)(e + 1)) {
        free(e->key);
        free(e->value);
    }
    free(e);
}

void sl_headers_clear(struct evkeyvalq *q)
{
    struct evkeyval *e;

    while ((e = TAILQ_FIRST(q)) != NULL) {
        TAILQ_REMOVE(q, e, next);
        entry_free(e);
    }
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Does the comma-separated list `list` hold the token `name` (any case)? */
static bool list_has_token(const char *list, const char *name)
{
    size_t name_len = strlen(name);
    const char *p = list;

    while (*p != '\0') {
        while (is_ows(*p) || *p == ',')
            p++;
        const char *start = p;
        while (*p != '\0' && *p != ',')
            p++;
        const char *end = p;
        while (end > start && is_ows(end[-1]))
            end--;
        if ((size_t)(end - start) == name_len && name_len > 0 &&
            strncasecmp(start, name, name_len) == 0)
            return true;
    }
    return false;
}

bool sl_headers_is_hop_by_hop(const char *name, const struct evkeyvalq *hdrs)
{
    if (name_in(name, strlen(name), hop_fields, SL_ARRAY_LEN(hop_fields)))
        return true;
    if (hdrs == NULL)
        return false;

    const struct evkeyval *h;
    static const struct name connection = NAME("Connection");
    TAILQ_FOREACH(h, hdrs, next)
        if (name_in(h->key, strlen(h->key), &connection, 1) && list_has_token(h->value, name))
            return true;
    return false;
}

static bool is_sluice_field(const char *name)
{
    return strncasecmp(name, SLUICE_PREFIX, strlen(SLUICE_PREFIX)) == 0;
}

/* evhttp refuses CR/LF when adding, so such a field could not be copied. */
static bool has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

/* Fields neither direction may pass through as they are. */
static bool has_connection(const struct evkeyvalq *in)
{
    return evhttp_find_header(in, "Connection") != NULL;
}

/*
 * `conn` is whether `in` has a Connection field at all: looked up once per
 * message, so that the common message without one costs no scan per field.
 */
static bool always_dropped(const struct evkeyval *h, const struct evkeyvalq *in, bool conn)
{
    return has_crlf(h->key) || has_crlf(h->value) || is_sluice_field(h->key) ||
           sl_headers_is_hop_by_hop(h->key, conn ? in : NULL);
}

/*
 * Join every non-empty value of `name` in `in` with ", " and append `extra`
 * (if not NULL). Returns a malloc'ed string, or NULL when out of memory.
 * An empty result is "".
 */
static char *join_values(const struct evkeyvalq *in, const char *name, const char *extra)
{
    const struct evkeyval *h;
    size_t len = extra != NULL ? strlen(extra) : 0;

    TAILQ_FOREACH(h, in, next)
        if (strcasecmp(h->key, name) == 0 && !has_crlf(h->value))
            len += strlen(h->value) + 2;

    char *out = malloc(len + 1);
    if (out == NULL)
        return NULL;
    out[0] = '\0';

    char *p = out;
    TAILQ_FOREACH(h, in, next) {
        if (strcasecmp(h->key, name) != 0 || has_crlf(h->value) || h->value[0] == '\0')
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

/* Add `name: <joined values of name>, extra` to out; nothing if all empty. */
static int add_joined(const struct evkeyvalq *in, struct evkeyvalq *out,
                      const char *name, const char *extra)
{
    char *value = join_values(in, name, extra);
    if (value == NULL)
        return SL_ENOMEM;

    int rc = SL_OK;
    if (value[0] != '\0' && evhttp_add_header(out, name, value) != 0)
        rc = SL_ENOMEM;
    free(value);
    return rc;
}

static bool dropped_upstream_bound(const struct evkeyval *h, const struct evkeyvalq *in,
                                   bool conn, const struct sl_forward_info *fi)
{
    static const struct name rewritten[] = {
        NAME("Content-Length"), NAME("Expect"), NAME("X-Forwarded-For"),
        NAME("X-Forwarded-Proto"), NAME("Via"),
    };
    static const struct name host = NAME("Host");

    if (always_dropped(h, in, conn))
        return true;
    if (!fi->preserve_host && name_in(h->key, strlen(h->key), &host, 1))
        return true;
    return name_in(h->key, strlen(h->key), rewritten, SL_ARRAY_LEN(rewritten));
}

/* Emit `name: <joined values of name>, extra`; allocates only when the message has some. */
static int emit_joined(const struct evkeyvalq *in, const char *name, const char *extra,
                       sl_header_fn fn, void *arg)
{
    char *value;
    int rc;

    if (evhttp_find_header(in, name) == NULL)
        return extra != NULL && extra[0] != '\0' ? fn(name, extra, arg) : SL_OK;
    value = join_values(in, name, extra);
    if (value == NULL)
        return SL_ENOMEM;
    rc = value[0] != '\0' ? fn(name, value, arg) : SL_OK;
    free(value);
    return rc;
}

int sl_headers_each_to_upstream(const struct evkeyvalq *in, const struct sl_forward_info *fi,
                                sl_header_fn fn, void *arg)
{
    const struct evkeyval *h;
    bool conn = has_connection(in);
    int rc;

    TAILQ_FOREACH(h, in, next) {
        if (dropped_upstream_bound(h, in, conn, fi))
            continue;
        if ((rc = fn(h->key, h->value, arg)) != SL_OK)
            return rc;
    }
    if ((rc = emit_joined(in, "X-Forwarded-For", fi->client_addr, fn, arg)) != SL_OK)
        return rc;
    if (fi->proto != NULL && (rc = fn("X-Forwarded-Proto", fi->proto, arg)) != SL_OK)
        return rc;
    return emit_joined(in, "Via", SLUICE_VIA, fn, arg);
}

static int add_to_list(const char *name, const char *value, void *arg)
{
    return evhttp_add_header(arg, name, value) == 0 ? SL_OK : SL_ENOMEM;
}

int sl_headers_to_upstream(const struct evkeyvalq *in, struct evkeyvalq *out,
                           const struct sl_forward_info *fi)
{
    return sl_headers_each_to_upstream(in, fi, add_to_list, out);
}

static bool dropped_client_bound(const struct evkeyval *h, const struct evkeyvalq *in,
                                 bool conn, bool keep_length)
{
    if (always_dropped(h, in, conn) || strcasecmp(h->key, "Via") == 0)
        return true;
    return !keep_length && strcasecmp(h->key, "Content-Length") == 0;
}

int sl_headers_from_upstream(const struct evkeyvalq *in, struct evkeyvalq *out, bool keep_length)
{
    const struct evkeyval *h;
    bool conn = has_connection(in);

    TAILQ_FOREACH(h, in, next) {
        if (dropped_client_bound(h, in, conn, keep_length))
            continue;
        if (evhttp_add_header(out, h->key, h->value) != 0)
            return SL_ENOMEM;
    }
    return add_joined(in, out, "Via", SLUICE_VIA);
}

int sl_headers_filter_from_upstream(struct evkeyvalq *h, bool keep_length)
{
    bool conn = has_connection(h);
    struct evkeyval *f, *next;
    size_t n = 0, i = 0;
    bool *drop;
    char *via;
    int rc = SL_OK;

    TAILQ_FOREACH(f, h, next)
        n++;
    drop = malloc(n + 1);
    /* Most answers carry no Via: then ours is the value, no join needed. */
    via = evhttp_find_header(h, "Via") != NULL ? join_values(h, "Via", SLUICE_VIA)
                                               : strdup(SLUICE_VIA);
    if (drop == NULL || via == NULL) {
        free(drop);
        free(via);
        return SL_ENOMEM;
    }
    /* Decide on the whole list first: removing Connection would hide what it names. */
    TAILQ_FOREACH(f, h, next)
        drop[i++] = dropped_client_bound(f, h, conn, keep_length);
    i = 0;
    for (f = TAILQ_FIRST(h); f != NULL; f = next) {
        next = TAILQ_NEXT(f, next);
        if (!drop[i++])
            continue;
        TAILQ_REMOVE(h, f, next);
        entry_free(f);
    }
    if (evhttp_add_header(h, "Via", via) != 0)
        rc = SL_ENOMEM;
    free(drop);
    free(via);
    return rc;
}
