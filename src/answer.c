/*
 * answer.c - stored answers as JSON: UTF-8 check, base64, JSON strings,
 * fields and bodies. Output goes out in runs (one evbuffer_add per run of
 * bytes that need no escape, per block of base64), never byte by byte.
 */
#include "answer.h"

#include <ctype.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

#include "sluice.h"

#define CHUNK 3072 /* bytes of input per base64 block: 4096 characters out */

bool sl_answer_utf8_valid(const void *s, size_t len)
{
    const unsigned char *p = s, *end = p + len;

    while (p < end) {
        unsigned char c = *p;
        size_t n;
        uint32_t cp;

        if (c < 0x80) {
            p++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2, cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3, cp = c & 0x07;
        } else {
            return false; /* continuation byte, C0/C1 overlong lead, or > U+10FFFF */
        }
        if ((size_t)(end - p) <= n)
            return false;
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (p[i] & 0x3F);
        }
        /* Overlong 3- and 4-byte forms, surrogates, beyond U+10FFFF. */
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        p += n + 1;
    }
    return true;
}

/* --- base64 ------------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int sl_answer_base64_encode(struct evbuffer *out, const void *data, size_t len)
{
    const unsigned char *p = data;
    char buf[CHUNK / 3 * 4];

    while (len > 0) {
        size_t take = len < CHUNK ? len : CHUNK, n = 0, i;

        for (i = 0; i + 3 <= take; i += 3) {
            uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];

            buf[n++] = b64[v >> 18];
            buf[n++] = b64[v >> 12 & 63];
            buf[n++] = b64[v >> 6 & 63];
            buf[n++] = b64[v & 63];
        }
        if (i < take) { /* the last 1 or 2 bytes: only in the final block */
            uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < take ? (uint32_t)p[i + 1] << 8 : 0);

            buf[n++] = b64[v >> 18];
            buf[n++] = b64[v >> 12 & 63];
            buf[n++] = i + 1 < take ? b64[v >> 6 & 63] : '=';
            buf[n++] = '=';
        }
        if (evbuffer_add(out, buf, n) != 0)
            return SL_ENOMEM;
        p += take;
        len -= take;
    }
    return SL_OK;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

size_t sl_answer_base64_max_decoded(size_t len)
{
    return len / 4 * 3 + (len % 4) * 3 / 4;
}

int sl_answer_base64_decode(struct evbuffer *out, const char *s, size_t len)
{
    unsigned char buf[CHUNK];
    size_t n = 0, pad = 0;
    uint32_t acc = 0;
    unsigned bits = 0;

    /* Padding: at most two '=', only at the end, and only to a multiple of 4. */
    while (pad < len && pad < 2 && s[len - 1 - pad] == '=')
        pad++;
    if (pad > 0 && len % 4 != 0)
        return SL_ERR;
    len -= pad;
    if (len % 4 == 1)
        return SL_ERR; /* one character holds only 6 bits: no byte */
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)s[i]);

        if (v < 0)
            return SL_ERR;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[n++] = (unsigned char)(acc >> bits);
            if (n == sizeof(buf)) {
                if (evbuffer_add(out, buf, n) != 0)
                    return SL_ENOMEM;
                n = 0;
            }
        }
    }
    if (n > 0 && evbuffer_add(out, buf, n) != 0)
        return SL_ENOMEM;
    return SL_OK;
}

/* --- JSON --------------------------------------------------------------- */

/* Valid UTF-8 in: only '"', '\' and control bytes need an escape. */
/*
 * Escaped into a stack buffer flushed when full: one evbuffer_add per
 * escape cost more than the rest of a job's result (callgrind: a JSON
 * body from the upstream is mostly quotes).
 */
static int string_utf8(struct evbuffer *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char buf[4096];
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (n > sizeof(buf) - 8) {
            if (evbuffer_add(out, buf, n) != 0)
                return SL_ENOMEM;
            n = 0;
        }
        if (c >= 0x20 && c != '"' && c != '\\') {
            buf[n++] = (char)c;
            continue;
        }
        buf[n++] = '\\';
        switch (c) {
        case '"': buf[n++] = '"'; break;
        case '\\': buf[n++] = '\\'; break;
        case '\n': buf[n++] = 'n'; break;
        case '\r': buf[n++] = 'r'; break;
        case '\t': buf[n++] = 't'; break;
        default:
            memcpy(buf + n, "u00", 3);
            buf[n + 3] = hex[c >> 4];
            buf[n + 4] = hex[c & 15];
            n += 5;
        }
    }
    return evbuffer_add(out, buf, n) == 0 ? SL_OK : SL_ENOMEM;
}

/* Not UTF-8: ISO-8859-1, each byte one code point. */
static int string_latin1(struct evbuffer *out, const char *s, size_t len)
{
    char esc[8];

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int rc;

        if (c >= 0x80) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            rc = evbuffer_add(out, esc, 6) == 0 ? SL_OK : SL_ENOMEM;
        } else {
            rc = string_utf8(out, s + i, 1);
        }
        if (rc != SL_OK)
            return rc;
    }
    return SL_OK;
}

int sl_answer_json_string(struct evbuffer *out, const char *s, size_t len)
{
    int rc;

    if (evbuffer_add(out, "\"", 1) != 0)
        return SL_ENOMEM;
    rc = sl_answer_utf8_valid(s, len) ? string_utf8(out, s, len) : string_latin1(out, s, len);
    if (rc != SL_OK || evbuffer_add(out, "\"", 1) != 0)
        return SL_ENOMEM;
    return SL_OK;
}

/* The name lowercased, quoted. Field names are tokens: ASCII only. */
static int header_name(struct evbuffer *out, const char *name)
{
    char low[256];
    size_t n = strlen(name);

    if (n >= sizeof(low))
        return sl_answer_json_string(out, name, n);
    for (size_t i = 0; i < n; i++)
        low[i] = (char)tolower((unsigned char)name[i]);
    return sl_answer_json_string(out, low, n);
}

static bool seen_before(const struct evkeyvalq *fields, const struct evkeyval *e)
{
    for (const struct evkeyval *p = TAILQ_FIRST(fields); p != e; p = TAILQ_NEXT(p, next))
        if (strcasecmp(p->key, e->key) == 0)
            return true;
    return false;
}

static size_t count_from(const struct evkeyval *e)
{
    size_t n = 0;

    for (const struct evkeyval *p = e; p != NULL; p = TAILQ_NEXT(p, next))
        n += strcasecmp(p->key, e->key) == 0;
    return n;
}

int sl_answer_json_headers(struct evbuffer *out, const struct evkeyvalq *fields)
{
    const struct evkeyval *e;
    bool first = true;

    if (evbuffer_add(out, "{", 1) != 0)
        return SL_ENOMEM;
    /* Fields are few (the parsers cap them): quadratic grouping is fine. */
    TAILQ_FOREACH(e, fields, next) {
        bool many;

        if (seen_before(fields, e))
            continue;
        many = count_from(e) > 1;
        if ((!first && evbuffer_add(out, ",", 1) != 0) || header_name(out, e->key) != SL_OK ||
            evbuffer_add(out, many ? ":[" : ":", many ? 2 : 1) != 0)
            return SL_ENOMEM;
        first = false;
        for (const struct evkeyval *p = e; p != NULL; p = many ? TAILQ_NEXT(p, next) : NULL) {
            if (p != e && strcasecmp(p->key, e->key) != 0)
                continue;
            if ((p != e && evbuffer_add(out, ",", 1) != 0) ||
                sl_answer_json_string(out, p->value, strlen(p->value)) != SL_OK)
                return SL_ENOMEM;
        }
        if (many && evbuffer_add(out, "]", 1) != 0)
            return SL_ENOMEM;
    }
    return evbuffer_add(out, "}", 1) == 0 ? SL_OK : SL_ENOMEM;
}

int sl_answer_json_body(struct evbuffer *out, struct evbuffer *body)
{
    size_t len = body != NULL ? evbuffer_get_length(body) : 0;
    const char *p = len > 0 ? (const char *)evbuffer_pullup(body, -1) : "";
    int rc;

    if (p == NULL)
        return SL_ENOMEM;
    if (sl_answer_utf8_valid(p, len)) {
        rc = evbuffer_add(out, "\"body\":", 7) == 0 ? sl_answer_json_string(out, p, len)
                                                     : SL_ENOMEM;
    } else {
        rc = evbuffer_add(out, "\"body_base64\":\"", 15) == 0
                 ? sl_answer_base64_encode(out, p, len)
                 : SL_ENOMEM;
        if (rc == SL_OK && evbuffer_add(out, "\"", 1) != 0)
            rc = SL_ENOMEM;
    }
    if (body != NULL)
        evbuffer_drain(body, len);
    return rc;
}
