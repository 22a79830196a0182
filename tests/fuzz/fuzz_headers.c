/*
 * fuzz_headers.c - the header translations both ways (headers.h).
 *
 * Input: one flags byte, then one "name:value" field per line (no colon: a
 * name with an empty value). Flags: 1 preserve_host, 2 keep_length, 4 no
 * client address, 8 no X-Forwarded-Proto, 16 build the list as one parsed
 * block (sl_headers_add_parsed) rather than field by field, 32 free every
 * other field singly before clearing the rest. Seeds start with '@' (no
 * flag) or a letter: 'A' is preserve_host, 'P' is parsed.
 *
 * Each direction's list form and walk form must agree, and the result must
 * keep what headers.h promises: no hop-by-hop field (Connection and what it
 * names), no X-Sluice-*, the fields dropped per direction gone, the kept
 * ones in their order, and sluice's own fields once each, Via last. A
 * walk's callback can stop it at any field. A redirect map changes nothing
 * but Location and Content-Location.
 */
#include <strings.h>

#include <sys/queue.h>

#include <event2/keyvalq_struct.h>

#include "fuzz.h"
#include "headers.h"
#include "http1.h"
#include "sluice.h"

enum {
    F_PRESERVE_HOST = 1,
    F_KEEP_LENGTH = 2,
    F_NO_CLIENT = 4,
    F_NO_PROTO = 8,
    F_PARSED = 16,
    F_REMOVE_SOME = 32,
};

#define MAX_LINES 256

/* A walk's output, as one name NUL value NUL ... string, compared whole. */
static int record(const char *name, const char *value, void *arg)
{
    fuzz_put(arg, name, strlen(name) + 1);
    fuzz_put(arg, value, strlen(value) + 1);
    return SL_OK;
}

/* Fields of the lines in text[0..n): CR is refused by every builder, so it ends a field. */
static size_t split_lines(const char *text, size_t n, struct sl_http1_field *f)
{
    size_t count = 0;

    for (const char *p = text, *end = text + n; p < end && count < MAX_LINES; count++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *stop = nl != NULL ? nl : end;
        const char *cr = memchr(p, '\r', (size_t)(stop - p)), *line_end = cr != NULL ? cr : stop;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));

        f[count].name = p;
        f[count].name_len = (uint32_t)((colon != NULL ? colon : line_end) - p);
        f[count].value = colon != NULL ? colon + 1 : line_end;
        f[count].value_len = (uint32_t)(line_end - f[count].value);
        p = stop + 1;
    }
    return count;
}

static void build(struct evkeyvalq *q, const struct sl_http1_field *f, size_t n, unsigned flags)
{
    if (flags & F_PARSED) {
        FUZZ_CHECK(sl_headers_add_parsed(q, f, n) == SL_OK);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char *name = fuzz_string(f[i].name, f[i].name_len);
        char *value = fuzz_string(f[i].value, f[i].value_len);

        FUZZ_CHECK(sl_headers_add(q, name, value) == SL_OK);
        free(name);
        free(value);
    }
}

/* The list form must hold exactly what the walk form saw. */
static void check_same(const struct fuzz_bytes *walk, const struct evkeyvalq *list)
{
    struct fuzz_bytes listed = {0};

    FUZZ_CHECK(sl_headers_each(list, record, &listed) == SL_OK);
    FUZZ_CHECK(fuzz_same(walk, &listed));
    fuzz_free(&listed);
}

static bool named(const char *name, const char *lower)
{
    return strcasecmp(name, lower) == 0;
}

/* A field that must never pass, either way. */
static bool never_passes(const char *name, const struct evkeyvalq *in)
{
    /* "close" is a connection option, not a field name (RFC 9110 7.6.1): passes. */
    if (named(name, "close"))
        return false;
    return sl_headers_is_hop_by_hop(name, in) ||
           (strlen(name) > 9 && strncasecmp(name, "x-sluice-", 9) == 0);
}

/*
 * Kept input fields come first, in their order and unchanged; then sluice's
 * own: `tail` of them, the last one Via.
 */
static void check_out(const struct evkeyvalq *in, const struct evkeyvalq *out, size_t tail)
{
    const struct evkeyval *o, *i = TAILQ_FIRST(in), *last = TAILQ_LAST(out, evkeyvalq);
    size_t n = 0, total = 0;

    TAILQ_FOREACH(o, out, next)
        total++;
    FUZZ_CHECK(total >= tail && last != NULL && named(last->key, "via"));
    FUZZ_CHECK(strlen(last->value) >= 10 && strcmp(last->value + strlen(last->value) - 10,
                                                   "1.1 sluice") == 0);
    TAILQ_FOREACH(o, out, next) {
        if (n++ >= total - tail)
            break;
        FUZZ_CHECK(!never_passes(o->key, in));
        while (i != NULL && (strcmp(i->key, o->key) != 0 || strcmp(i->value, o->value) != 0))
            i = TAILQ_NEXT(i, next);
        FUZZ_CHECK(i != NULL); /* an input field, after the previous one kept */
        i = TAILQ_NEXT(i, next);
    }
}

/* A callback that fails at call number `at` (from 0), with a code of its own. */
struct stop {
    size_t at, calls;
};

#define STOP_CODE 77

static int stop_at(const char *name, const char *value, void *arg)
{
    struct stop *s = arg;

    (void)name;
    (void)value;
    return s->calls++ == s->at ? STOP_CODE : SL_OK;
}

/* Both directions' walks, behind one signature. */
typedef int (*walk_fn)(const struct evkeyvalq *in, const void *opt, sl_header_fn fn, void *arg);

static int walk_up(const struct evkeyvalq *in, const void *opt, sl_header_fn fn, void *arg)
{
    return sl_headers_each_to_upstream(in, opt, fn, arg);
}

static int walk_down(const struct evkeyvalq *in, const void *opt, sl_header_fn fn, void *arg)
{
    return sl_headers_each_from_upstream(in, *(const bool *)opt, NULL, fn, arg);
}

/* The callback's first error is returned, and it is called no more (headers.h). */
static void check_stop(walk_fn walk, const struct evkeyvalq *in, const void *opt,
                       const struct evkeyvalq *out, uint64_t seed)
{
    const struct evkeyval *o;
    size_t total = 0;
    struct stop s = {0};

    TAILQ_FOREACH(o, out, next)
        total++;
    s.at = (size_t)(seed % (total + 1));
    if (s.at == total)
        FUZZ_CHECK(walk(in, opt, stop_at, &s) == SL_OK && s.calls == total);
    else
        FUZZ_CHECK(walk(in, opt, stop_at, &s) == STOP_CODE && s.calls == s.at + 1);
}


/* The walk's fields as a list, through the same add the rest of sluice uses. */
static int add_to_list(const char *name, const char *value, void *arg)
{
    int rc = sl_headers_add(arg, name, value);

    return rc == SL_ERR ? SL_OK : rc; /* CR/LF in a value: the walk's business, not the list's */
}

/* Upstream-bound: no framing, Expect or forwarding fields of the client's pass. */
static void to_upstream(const struct evkeyvalq *in, unsigned flags, uint64_t seed)
{
    struct sl_forward_info fi = {
        .client_addr = flags & F_NO_CLIENT ? NULL : "192.0.2.1",
        .proto = flags & F_NO_PROTO ? NULL : "http",
        .preserve_host = flags & F_PRESERVE_HOST,
    };
    struct evkeyvalq out;
    struct fuzz_bytes walk = {0};
    const struct evkeyval *o;
    size_t xff = 0, xfp = 0, tail;

    TAILQ_INIT(&out);
    FUZZ_CHECK(sl_headers_each_to_upstream(in, &fi, record, &walk) == SL_OK);
    FUZZ_CHECK(sl_headers_each_to_upstream(in, &fi, add_to_list, &out) == SL_OK);
    check_same(&walk, &out);
    TAILQ_FOREACH(o, &out, next) {
        FUZZ_CHECK(!named(o->key, "content-length") && !named(o->key, "expect"));
        FUZZ_CHECK(fi.preserve_host || !named(o->key, "host"));
        xff += named(o->key, "x-forwarded-for");
        xfp += named(o->key, "x-forwarded-proto");
    }
    FUZZ_CHECK(xff <= 1 && xfp == (fi.proto != NULL));
    tail = xff + xfp + 1;
    check_out(in, &out, tail);
    check_stop(walk_up, in, &fi, &out, seed);
    sl_headers_clear(&out);
    fuzz_free(&walk);
}

/* Client-bound: Content-Length only when asked to keep it. */
static void from_upstream(const struct evkeyvalq *in, unsigned flags, uint64_t seed)
{
    bool keep = flags & F_KEEP_LENGTH;
    struct evkeyvalq out;
    struct fuzz_bytes walk = {0};
    const struct evkeyval *o;

    TAILQ_INIT(&out);
    FUZZ_CHECK(sl_headers_each_from_upstream(in, keep, NULL, record, &walk) == SL_OK);
    FUZZ_CHECK(sl_headers_each_from_upstream(in, keep, NULL, add_to_list, &out) == SL_OK);
    check_same(&walk, &out);
    TAILQ_FOREACH(o, &out, next)
        FUZZ_CHECK(keep || !named(o->key, "content-length"));
    check_out(in, &out, 1);
    check_stop(walk_down, in, &keep, &out, seed);
    sl_headers_clear(&out);
    fuzz_free(&walk);
}

/*
 * With a redirect map (the input's own Host as the client's): the same
 * fields in the same order; only a Location or Content-Location may change,
 * and then into the client's view, an http:// URL or a path.
 */
static void mapped(const struct evkeyvalq *in, unsigned flags)
{
    struct sl_redirect_map map = {"http://up:8080/base", "http", in, "/api"};
    bool keep = flags & F_KEEP_LENGTH;
    struct evkeyvalq plain, out;
    const struct evkeyval *a, *b;

    TAILQ_INIT(&plain);
    TAILQ_INIT(&out);
    FUZZ_CHECK(sl_headers_each_from_upstream(in, keep, NULL, add_to_list, &plain) == SL_OK);
    FUZZ_CHECK(sl_headers_each_from_upstream(in, keep, &map, add_to_list, &out) == SL_OK);
    for (a = TAILQ_FIRST(&plain), b = TAILQ_FIRST(&out); a != NULL && b != NULL;
         a = TAILQ_NEXT(a, next), b = TAILQ_NEXT(b, next)) {
        FUZZ_CHECK(strcmp(a->key, b->key) == 0);
        if (strcmp(a->value, b->value) == 0)
            continue;
        FUZZ_CHECK(named(a->key, "location") || named(a->key, "content-location"));
        FUZZ_CHECK(strncmp(b->value, "http://", 7) == 0 || strncmp(b->value, "/api", 4) == 0);
    }
    FUZZ_CHECK(a == NULL && b == NULL);
    sl_headers_clear(&plain);
    sl_headers_clear(&out);
}

/* Freeing fields one by one must release a parsed block once, with its last field. */
static void remove_some(struct evkeyvalq *q)
{
    struct evkeyval *e = TAILQ_FIRST(q), *next;

    for (bool odd = false; e != NULL; e = next, odd = !odd) {
        next = TAILQ_NEXT(e, next);
        if (odd)
            sl_headers_remove(q, e);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct sl_http1_field fields[MAX_LINES];
    struct evkeyvalq in;
    unsigned flags;
    size_t n;

    if (size == 0)
        return 0;
    flags = data[0];
    n = split_lines((const char *)data + 1, size - 1, fields);
    TAILQ_INIT(&in);
    build(&in, fields, n, flags);
    to_upstream(&in, flags, fuzz_seed(data, size));
    from_upstream(&in, flags, fuzz_seed(data, size) >> 32);
    mapped(&in, flags);
    if (flags & F_REMOVE_SOME)
        remove_some(&in);
    sl_headers_clear(&in);
    return 0;
}
