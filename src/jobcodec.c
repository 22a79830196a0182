/*
 * jobcodec.c - job ids, Prefer: respond-async, the job JSON and base64.
 */
#include "jobcodec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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

void sl_job_time_format(int64_t wall_us, char out[32])
{
    time_t secs = (time_t)(wall_us / 1000000);
    struct tm tm;

    if (wall_us <= 0 || gmtime_r(&secs, &tm) == NULL) {
        out[0] = '\0';
        return;
    }
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);

    if (n == 0 || n > 24) {
        out[0] = '\0';
        return;
    }
    snprintf(out + n, 32 - n, ".%03dZ", (int)(wall_us % 1000000 / 1000));
}

static json_t *time_json(int64_t wall_us)
{
    char buf[32];

    if (wall_us <= 0)
        return json_null();
    sl_job_time_format(wall_us, buf);
    return json_string(buf);
}

/*
 * The job as JSON: its own fields through jansson, then the stored answer
 * in the form batch items use (answer.h): lowercased header names, a
 * repeated field as an array, "body" or "body_base64".
 */
char *sl_job_json(const struct sl_job_view *v)
{
    json_t *o = json_pack("{s:s,s:s,s:i,s:o,s:o,s:o,s:o}", "id", v->id, "state",
                          sl_job_state_name(v->state), "attempts", (int)v->attempts, "route",
                          v->route != NULL ? json_string(v->route) : json_null(), "queued_at",
                          time_json(v->queued_us), "started_at", time_json(v->started_us),
                          "finished_at", time_json(v->finished_us));
    struct evbuffer *out = evbuffer_new(), *body = evbuffer_new();
    char *meta = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    char *s = NULL;
    size_t len;

    if (meta == NULL || out == NULL || body == NULL)
        goto out;
    /* meta is "{...}": keep it open for the answer's fields. */
    if (evbuffer_add(out, meta, strlen(meta) - 1) != 0)
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
    free(meta);
    json_decref(o);
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
