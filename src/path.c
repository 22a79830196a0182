/*
 * path.c - request-target normalisation (see path.h for the rules and why).
 *
 * One pass over the input writes the output, which may be the same buffer:
 * each step consumes at least as many bytes as it writes, so the write
 * position never passes the read position. Checks that depend on decoded
 * characters (dot segments, double encoding) look at what was written, so
 * an accepted output passes them again unchanged (idempotence).
 */
#include <stdbool.h>
#include <stddef.h>

#include "path.h"
#include "sluice.h"

/* The normaliser's cursor: input read at r, output written at w. */
struct norm {
    const char *in;
    size_t len;
    size_t r;
    char *out;
    size_t size;
    size_t w;
    const char *detail; /* set on failure */
};

static const char HEX[] = "0123456789ABCDEF";

static int fail(struct norm *n, const char *detail)
{
    n->detail = detail;
    return SL_ERR;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* RFC 3986 section 2.3: ALPHA / DIGIT / "-" / "." / "_" / "~". */
static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

static bool control(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/* Bytes refused anywhere, literal; NULL when c may stand. */
static const char *refused_anywhere(unsigned char c)
{
    if (control(c))
        return "control character in the target";
    if (c == ' ')
        return "space in the target";
    if (c == '#')
        return "fragment in the target";
    return NULL;
}

/* One output byte, keeping room for the final NUL. */
static int put(struct norm *n, unsigned char c)
{
    if (n->w + 1 >= n->size)
        return fail(n, "request target too long");
    n->out[n->w++] = (char)c;
    return SL_OK;
}

/*
 * The %HH escape at n->r. All three input bytes are read before anything is
 * written, which keeps in-place use safe. *decoded is set when it stood for
 * an unreserved character and was decoded.
 */
static int escape(struct norm *n, bool in_path, bool *decoded)
{
    int hi, lo;
    unsigned char v;

    if (n->len - n->r < 3)
        return fail(n, "bad percent-encoding");
    hi = hexval((unsigned char)n->in[n->r + 1]);
    lo = hexval((unsigned char)n->in[n->r + 2]);
    if (hi < 0 || lo < 0)
        return fail(n, "bad percent-encoding");
    n->r += 3;
    v = (unsigned char)(hi * 16 + lo);
    if (v == 0)
        return fail(n, "encoded NUL in the target");
    if (in_path) {
        if (v == '/')
            return fail(n, "encoded slash in a path segment");
        if (v == '\\')
            return fail(n, "encoded backslash in a path segment");
        if (v == ';')
            return fail(n, "encoded semicolon in the path");
        if (control(v))
            return fail(n, "encoded control character in the path");
    }
    if (unreserved(v)) {
        *decoded = true;
        return put(n, v);
    }
    if (put(n, '%') != SL_OK || put(n, (unsigned char)HEX[hi]) != SL_OK)
        return SL_ERR;
    return put(n, (unsigned char)HEX[lo]);
}

/* A path byte other than '/', '%' and '?'. */
static int path_literal(struct norm *n, unsigned char c)
{
    const char *why = refused_anywhere(c);

    if (why != NULL)
        return fail(n, why);
    if (c >= 0x80)
        return fail(n, "non-ASCII byte in the path");
    if (c == '\\')
        return fail(n, "backslash in the path");
    if (c == ';')
        return fail(n, "semicolon in the path");
    n->r++;
    return put(n, c);
}

/* The segment written since `seg` is complete: refuse "." and "..". */
static int end_segment(struct norm *n, size_t seg, bool decoded)
{
    size_t len = n->w - seg;
    const char *s = n->out + seg;

    if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
        return fail(n, decoded ? "encoded dot segment in the path"
                               : "dot segments are not allowed in the path");
    return SL_OK;
}

/*
 * "%25" then two hex digits in the written path: an upstream that decodes
 * twice would see a character we never checked. Every '%' in the output
 * starts a complete escape, so escapes are stepped over whole.
 */
static int double_encoded(struct norm *n)
{
    const char *o = n->out;

    for (size_t i = 0; i < n->w; i++) {
        if (o[i] != '%')
            continue;
        if (i + 4 < n->w && o[i + 1] == '2' && o[i + 2] == '5' &&
            hexval((unsigned char)o[i + 3]) >= 0 && hexval((unsigned char)o[i + 4]) >= 0)
            return fail(n, "double percent-encoding in the path");
        i += 2;
    }
    return SL_OK;
}

/* From the leading '/' up to the first '?' (left unread) or the end. */
static int path(struct norm *n)
{
    size_t seg = 0;       /* where the current segment starts in out */
    bool decoded = false; /* the current segment has a decoded escape */

    while (n->r < n->len && n->in[n->r] != '?') {
        unsigned char c = (unsigned char)n->in[n->r];
        int rc;

        if (c == '/') {
            if (end_segment(n, seg, decoded) != SL_OK)
                return SL_ERR;
            n->r++;
            /* An empty segment adds nothing: "//" is written as "/". */
            if (n->w > 0 && n->out[n->w - 1] == '/')
                continue;
            if (put(n, '/') != SL_OK)
                return SL_ERR;
            seg = n->w;
            decoded = false;
            continue;
        }
        rc = c == '%' ? escape(n, true, &decoded) : path_literal(n, c);
        if (rc != SL_OK)
            return SL_ERR;
    }
    if (end_segment(n, seg, decoded) != SL_OK)
        return SL_ERR;
    return double_encoded(n);
}

/* From the '?' to the end: escapes normalised, everything else data. */
static int query(struct norm *n)
{
    bool decoded;
    const char *why;

    n->r++;
    if (put(n, '?') != SL_OK)
        return SL_ERR;
    while (n->r < n->len) {
        unsigned char c = (unsigned char)n->in[n->r];

        if (c == '%') {
            if (escape(n, false, &decoded) != SL_OK)
                return SL_ERR;
            continue;
        }
        if ((why = refused_anywhere(c)) != NULL)
            return fail(n, why);
        n->r++;
        if (put(n, c) != SL_OK)
            return SL_ERR;
    }
    return SL_OK;
}

int sl_path_normalize(const char *target, size_t len, char *out, size_t out_size,
                      const char **detail)
{
    struct norm n = {target, len, 0, out, out_size, 0, NULL};
    int rc;

    if (out == NULL || out_size == 0)
        rc = fail(&n, "request target too long");
    else if (target == NULL || len == 0 || target[0] != '/')
        rc = fail(&n, "not an origin-form target");
    else
        rc = path(&n);
    if (rc == SL_OK && n.r < n.len)
        rc = query(&n);
    if (rc == SL_OK)
        out[n.w] = '\0';
    else if (detail != NULL)
        *detail = n.detail;
    return rc;
}
