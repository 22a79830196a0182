/*
 * jobcodec.c - job ids, Prefer: respond-async, the job JSON and base64.
 */
#include "jobcodec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <jansson.h>

#include "answer.h"
#include "headers.h"
#include "http1.h"
#include "sluice.h"

void sl_job_id_format(const unsigned char raw[SL_JOB_ID_RAW], char out[SL_JOB_ID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < SL_JOB_ID_RAW; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[SL_JOB_ID_LEN] = '\0';
}

bool sl_job_id_valid(const char *s, size_t len)
{
    if (s == NULL || len != SL_JOB_ID_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    }
    return true;
}

/*
 * One preference of a Prefer field: [s, s + len), OWS trimmed. Is it
 * respond-async (with no value; parameters after ';' are ignored)?
 */
static bool is_respond_async(const char *s, size_t len)
{
    static const char name[] = "respond-async";
    size_t n = sizeof(name) - 1;

    while (len > 0 && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len < n || strncasecmp(s, name, n) != 0)
        return false;
    s += n;
    len -= n;
    while (len > 0 && (*s == ' ' || *s == '\t'))
        s++, len--;
    return len == 0 || *s == ';';
}

/* Calls back for each comma-separated element of v; stops when fn returns true. */
static bool any_element(const char *v, bool (*fn)(const char *, size_t))
{
    for (;;) {
        size_t n = strcspn(v, ",");

        if (fn(v, n))
            return true;
        if (v[n] == '\0')
            return false;
        v += n + 1;
    }
}

bool sl_job_prefers_async(const struct evkeyvalq *headers)
{
    const struct evkeyval *h;

    TAILQ_FOREACH(h, headers, next) {
        if (strcasecmp(h->key, "Prefer") == 0 && any_element(h->value, is_respond_async))
            return true;
    }
    return false;
}

/* v without its respond-async elements, joined with ", "; malloc'd, or NULL. */
static char *without_async(const char *v)
{
    char *out = malloc(strlen(v) + 1);
    size_t used = 0;

    if (out == NULL)
        return NULL;
    for (;;) {
        size_t n = strcspn(v, ",");
        const char *s = v;
        size_t len = n;

        while (len > 0 && (*s == ' ' || *s == '\t'))
            s++, len--;
        while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
            len--;
        if (len > 0 && !is_respond_async(s, len)) {
            if (used > 0) {
                memcpy(out + used, ", ", 2);
                used += 2;
            }
            memcpy(out + used, s, len);
            used += len;
        }
        if (v[n] == '\0')
            break;
        v += n + 1;
    }
    out[used] = '\0';
    return out;
}

int sl_job_prefer_strip(struct evkeyvalq *headers)
{
    struct evkeyval *h, *next;
    struct evkeyvalq kept;
    int rc = SL_OK;

    /* Fields are single allocations (headers.h): replace, do not edit. */
    TAILQ_INIT(&kept);
    for (h = TAILQ_FIRST(headers); h != NULL; h = next) {
        char *v;

        next = TAILQ_NEXT(h, next);
        if (strcasecmp(h->key, "Prefer") != 0 || !any_element(h->value, is_respond_async))
            continue;
        if ((v = without_async(h->value)) == NULL)
            return SL_ENOMEM;
        if (v[0] != '\0' && sl_headers_add(&kept, "Prefer", v) != SL_OK)
            rc = SL_ENOMEM;
        free(v);
        sl_headers_remove(headers, h);
    }
    while ((h = TAILQ_FIRST(&kept)) != NULL) {
        TAILQ_REMOVE(&kept, h, next);
        TAILQ_INSERT_TAIL(headers, h, next);
    }
    return rc;
}

/* n as exactly `width` digits (zero-padded) at p; returns what follows. */
static char *put_digits(char *p, unsigned n, int width)
{
    for (int i = width - 1; i >= 0; i--, n /= 10)
        p[i] = (char)('0' + n % 10);
    return p + width;
}

/*
 * By hand (days to civil date, H. Hinnant's algorithm) rather than
 * gmtime_r + strftime + snprintf, which cost 3,000 instructions a time and
 * a job shows three (callgrind). Checked against gmtime_r in the tests.
 */
void sl_job_time_format(int64_t wall_us, char out[32])
{
    int64_t secs = wall_us / 1000000, z = secs / 86400 + 719468, era, year;
    unsigned sod = (unsigned)(secs % 86400), doe, yoe, doy, mp, day, month;
    char ybuf[24], *y = ybuf + sizeof(ybuf), *p = out;

    if (wall_us <= 0) {
        out[0] = '\0';
        return;
    }
    era = z / 146097;
    doe = (unsigned)(z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    day = doy - (153 * mp + 2) / 5 + 1;
    month = mp < 10 ? mp + 3 : mp - 9;
    year = (int64_t)yoe + era * 400 + (month <= 2);
    do {
        *--y = (char)('0' + year % 10);
        year /= 10;
    } while (year != 0);
    memcpy(p, y, (size_t)(ybuf + sizeof(ybuf) - y));
    p += ybuf + sizeof(ybuf) - y;
    *p++ = '-';
    p = put_digits(p, month, 2);
    *p++ = '-';
    p = put_digits(p, day, 2);
    *p++ = 'T';
    p = put_digits(p, sod / 3600, 2);
    *p++ = ':';
    p = put_digits(p, sod / 60 % 60, 2);
    *p++ = ':';
    p = put_digits(p, sod % 60, 2);
    *p++ = '.';
    p = put_digits(p, (unsigned)(wall_us % 1000000 / 1000), 3);
    *p++ = 'Z';
    *p = '\0';
}

/* `key` (the separator, name and colon) then the time as a JSON string, or null. */
static int put_time(struct evbuffer *out, const char *key, int64_t wall_us)
{
    char buf[32];

    if (evbuffer_add(out, key, strlen(key)) != 0)
        return SL_ENOMEM;
    if (wall_us <= 0)
        return evbuffer_add(out, "null", 4) == 0 ? SL_OK : SL_ENOMEM;
    sl_job_time_format(wall_us, buf);
    return sl_answer_json_string(out, buf, strlen(buf));
}

/*
 * The job's own fields, written straight into `out` with the answer's
 * string encoder (jansson's json_pack and json_dumps were a third of a
 * durable job's result, callgrind); the object is left open.
 */
static int put_meta(struct evbuffer *out, const struct sl_job_view *v)
{
    const char *state = sl_job_state_name(v->state);

    if (evbuffer_add(out, "{\"id\":", 6) != 0 ||
        sl_answer_json_string(out, v->id, strlen(v->id)) != SL_OK ||
        evbuffer_add(out, ",\"state\":", 9) != 0 ||
        sl_answer_json_string(out, state, strlen(state)) != SL_OK ||
        evbuffer_add_printf(out, ",\"attempts\":%u,\"route\":", v->attempts) < 0 ||
        (v->route != NULL ? sl_answer_json_string(out, v->route, strlen(v->route))
                          : (evbuffer_add(out, "null", 4) == 0 ? SL_OK : SL_ENOMEM)) != SL_OK ||
        put_time(out, ",\"queued_at\":", v->queued_us) != SL_OK ||
        put_time(out, ",\"started_at\":", v->started_us) != SL_OK ||
        put_time(out, ",\"finished_at\":", v->finished_us) != SL_OK)
        return SL_ENOMEM;
    return SL_OK;
}

/*
 * The job as JSON: its own fields, then the stored answer in the form
 * batch items use (answer.h): lowercased header names, a repeated field
 * as an array, "body" or "body_base64".
 */
char *sl_job_json(const struct sl_job_view *v)
{
    struct evbuffer *out = evbuffer_new(), *body = evbuffer_new();
    char *s = NULL;
    size_t len;

    if (out == NULL || body == NULL || put_meta(out, v) != SL_OK)
        goto out;
    if (v->status != 0 && v->headers != NULL) {
        if (evbuffer_add_printf(out, ",\"status\":%d,\"headers\":", v->status) < 0 ||
            sl_answer_json_headers(out, v->headers) != SL_OK || evbuffer_add(out, ",", 1) != 0 ||
            (v->body_len > 0 && evbuffer_add(body, v->body, v->body_len) != 0) ||
            sl_answer_json_body(out, body) != SL_OK)
            goto out;
    }
    if (evbuffer_add(out, "}", 1) != 0)
        goto out;
    len = evbuffer_get_length(out);
    if ((s = malloc(len + 1)) != NULL) {
        evbuffer_copyout(out, s, len);
        s[len] = '\0';
    }
out:
    if (out != NULL)
        evbuffer_free(out);
    if (body != NULL)
        evbuffer_free(body);
    return s;
}

char *sl_job_headers_encode(const struct evkeyvalq *headers)
{
    const struct evkeyval *h;
    size_t total = 1;
    char *s, *p;

    TAILQ_FOREACH(h, headers, next) {
        size_t klen = strcspn(h->key, ":\r\n"), vlen = strcspn(h->value, "\r\n");

        if (klen == 0 || h->key[klen] != '\0' || h->value[vlen] != '\0')
            return NULL;
        total += klen + vlen + 3;
    }
    if ((s = malloc(total)) == NULL)
        return NULL;
    p = s;
    TAILQ_FOREACH(h, headers, next) {
        size_t klen = strlen(h->key), vlen = strlen(h->value);

        memcpy(p, h->key, klen);
        p += klen;
        *p++ = ':';
        memcpy(p, h->value, vlen);
        p += vlen;
        *p++ = '\r';
        *p++ = '\n';
    }
    *p = '\0';
    return s;
}

/* The JSON form [[name, value], ...] of earlier versions. */
static int headers_decode_json(const char *text, size_t len, struct evkeyvalq *out)
{
    json_t *a = json_loadb(text, len, 0, NULL);
    size_t i;
    json_t *pair;
    int rc = SL_ERR;

    if (a == NULL || !json_is_array(a))
        goto out;
    json_array_foreach(a, i, pair) {
        const char *k = json_string_value(json_array_get(pair, 0));
        const char *v = json_string_value(json_array_get(pair, 1));

        if (k == NULL || v == NULL || json_array_size(pair) != 2 ||
            sl_headers_add(out, k, v) != SL_OK)
            goto out;
    }
    rc = SL_OK;
out:
    json_decref(a);
    return rc;
}

int sl_job_headers_decode(const char *text, size_t len, struct evkeyvalq *out)
{
    struct sl_http1_field stack[64], *f = stack;
    const char *p = text, *end = text + len;
    size_t n = 0, cap = SL_ARRAY_LEN(stack);
    int rc = SL_ERR;

    if (len > 0 && text[0] == '[')
        return headers_decode_json(text, len, out);
    if (memchr(text, '\0', len) != NULL)
        return SL_ERR;
    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        const char *colon = eol != NULL ? memchr(p, ':', (size_t)(eol - p)) : NULL;

        if (eol == NULL || eol + 1 >= end || eol[1] != '\n' || colon == NULL || colon == p ||
            memchr(p, '\n', (size_t)(eol - p)) != NULL || (size_t)(eol - p) > UINT32_MAX)
            goto out;
        if (n == cap) {
            struct sl_http1_field *bigger = malloc(2 * cap * sizeof(*f));

            if (bigger == NULL) {
                rc = SL_ENOMEM;
                goto out;
            }
            memcpy(bigger, f, n * sizeof(*f));
            if (f != stack)
                free(f);
            f = bigger;
            cap *= 2;
        }
        f[n].name = p;
        f[n].name_len = (uint32_t)(colon - p);
        f[n].value = colon + 1;
        f[n].value_len = (uint32_t)(eol - colon - 1);
        n++;
        p = eol + 2;
    }
    /* No CR, LF or NUL inside (checked above): all in one allocation, as the parser's. */
    rc = n > 0 ? sl_headers_add_parsed(out, f, n) : SL_OK;
out:
    if (f != stack)
        free(f);
    return rc;
}

const char *sl_job_method(const char *m, size_t len)
{
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE",
                                          "OPTIONS"};

    for (size_t i = 0; i < SL_ARRAY_LEN(methods); i++)
        if (m != NULL && strlen(methods[i]) == len && memcmp(methods[i], m, len) == 0)
            return methods[i];
    return NULL;
}

int sl_job_stream_key(char *out, size_t size, const char *prefix, const char *stream,
                      const char *kind)
{
    size_t p = strlen(prefix), n = strlen(stream), k = strlen(kind);

    /* With memcpy: snprintf was a tenth of a durable intake (callgrind). */
    if (p + n + k + 4 > size) {
        if (size > 0)
            out[0] = '\0';
        return SL_ERR;
    }
    memcpy(out, prefix, p);
    out[p] = '{';
    memcpy(out + p + 1, stream, n);
    out[p + 1 + n] = '}';
    out[p + 2 + n] = ':';
    memcpy(out + p + 3 + n, kind, k + 1);
    return SL_OK;
}
