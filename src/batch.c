/*
 * batch.c - POST /_sluice/batch: parse and check, fan out through
 * sl_request_submit with one slot (a sink) per item, gather the answers.
 *
 * The batch's state is its count of slots not yet filled: each slot is
 * filled exactly once (its request answers, or the batch is cancelled), and
 * the batch answers and frees itself when the count reaches zero outside
 * the submit loop (items refused at once fill their slot during it).
 */
#include "batch.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <jansson.h>

#include "answer.h"
#include "clock.h"
#include "config.h"
#include "headers.h"
#include "log.h"
#include "sluice.h"

/* --- parsing ------------------------------------------------------------ */

static int fail(char *detail, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *detail, size_t size, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, size, fmt, ap);
    va_end(ap);
    return SL_ERR;
}

/* RFC 9110 5.1: a field name is a token. */
static bool is_token(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (!isalnum((unsigned char)*s) && strchr("!#$%&'*+-.^_`|~", *s) == NULL)
            return false;
    return true;
}

/* A string with no NUL inside (json_string_value stops at the first). */
static const char *plain_string(const json_t *v, size_t *len)
{
    const char *s = json_string_value(v);

    if (s == NULL)
        return NULL;
    *len = json_string_length(v);
    return memchr(s, '\0', *len) == NULL ? s : NULL;
}

static int add_field(struct sl_http_msg *m, size_t i, const char *name, const json_t *v,
                     char *detail, size_t size)
{
    size_t len;
    const char *value = plain_string(v, &len);

    if (value == NULL || strpbrk(value, "\r\n") != NULL)
        return fail(detail, size, "requests[%zu].headers.%s: %s", i, name,
                    json_is_string(v) ? "the value contains CR, LF or NUL"
                                      : "must be a string or an array of strings");
    if (sl_headers_add(&m->headers, name, value) != SL_OK)
        return SL_ENOMEM; /* CR and LF were refused above */
    m->header_bytes += strlen(name) + len + 4;
    return SL_OK;
}

static int parse_headers(struct sl_http_msg *m, size_t i, const json_t *h, char *detail,
                         size_t size)
{
    const char *name;
    json_t *v;
    size_t n = 0;
    int rc;

    if (!json_is_object(h))
        return fail(detail, size, "requests[%zu].headers: must be an object", i);
    json_object_foreach((json_t *)h, name, v) {
        if (!is_token(name))
            return fail(detail, size, "requests[%zu].headers: \"%.64s\" is not a field name", i,
                        name);
        if (json_is_array(v)) {
            size_t k;
            json_t *e;

            json_array_foreach(v, k, e) {
                if (++n > SL_BATCH_MAX_FIELDS)
                    break;
                if ((rc = add_field(m, i, name, e, detail, size)) != SL_OK)
                    return rc;
            }
        } else if (++n <= SL_BATCH_MAX_FIELDS &&
                   (rc = add_field(m, i, name, v, detail, size)) != SL_OK) {
            return rc;
        }
        if (n > SL_BATCH_MAX_FIELDS)
            return fail(detail, size, "requests[%zu].headers: more than %d fields", i,
                        SL_BATCH_MAX_FIELDS);
    }
    return SL_OK;
}

static int parse_body(struct sl_http_msg *m, size_t i, const json_t *text, const json_t *b64,
                      const struct sl_batch_limits *lim, char *detail, size_t size)
{
    const char *field = text != NULL ? "body" : "body_base64";
    const json_t *v = text != NULL ? text : b64;
    const char *s = json_string_value(v);
    size_t len = json_string_length(v), pad = 0, bytes;
    int rc;

    if (text != NULL && b64 != NULL)
        return fail(detail, size, "requests[%zu]: body and body_base64 are exclusive", i);
    if (s == NULL)
        return fail(detail, size, "requests[%zu].%s: must be a string", i, field);
    if (len == 0)
        return SL_OK;
    /* Checked before decoding (exact for valid base64): the limit bounds what is allocated. */
    while (text == NULL && pad < 2 && pad < len && s[len - 1 - pad] == '=')
        pad++;
    bytes = text != NULL ? len : sl_answer_base64_max_decoded(len - pad);
    if (bytes > lim->max_body_size)
        return fail(detail, size, "requests[%zu].%s: %zu bytes, more than max_body_size (%zu)",
                    i, field, bytes, lim->max_body_size);
    if ((m->body = evbuffer_new()) == NULL)
        return SL_ENOMEM;
    rc = text != NULL ? (evbuffer_add(m->body, s, len) == 0 ? SL_OK : SL_ENOMEM)
                      : sl_answer_base64_decode(m->body, s, len);
    if (rc == SL_ERR)
        return fail(detail, size, "requests[%zu].body_base64: not valid base64", i);
    return rc;
}

static int check_keys(const json_t *item, size_t i, char *detail, size_t size)
{
    static const char *const keys[] = {"method", "path", "headers", "body", "body_base64"};
    const char *key;
    json_t *v;

    json_object_foreach((json_t *)item, key, v) {
        size_t k = 0;

        while (k < SL_ARRAY_LEN(keys) && strcmp(key, keys[k]) != 0)
            k++;
        if (k == SL_ARRAY_LEN(keys))
            return fail(detail, size, "requests[%zu]: unknown field \"%.64s\"", i, key);
    }
    return SL_OK;
}

/* The method and path of item i, checked; *method static, *path in the JSON. */
static int parse_line(const json_t *item, size_t i, const char **method, const char **path,
                      size_t *path_len, char *detail, size_t size)
{
    const json_t *m = json_object_get(item, "method"), *p = json_object_get(item, "path");
    const char *s;
    size_t len = 0;

    *method = "GET";
    if (m != NULL && !json_is_string(m))
        return fail(detail, size, "requests[%zu].method: must be a string", i);
    if (m != NULL &&
        (*method = sl_http_msg_method(json_string_value(m), json_string_length(m))) == NULL)
        return fail(detail, size,
                    "requests[%zu].method: must be GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS",
                    i);
    if (p == NULL)
        return fail(detail, size, "requests[%zu].path: missing", i);
    if (!json_is_string(p))
        return fail(detail, size, "requests[%zu].path: must be a string", i);
    if ((s = plain_string(p, &len)) == NULL)
        return fail(detail, size, "requests[%zu].path: contains a NUL byte", i);
    if (len == 0 || s[0] != '/')
        return fail(detail, size, "requests[%zu].path: must start with / (a path, not a URL)",
                    i);
    *path = s;
    *path_len = len;
    return SL_OK;
}

static int parse_item(const json_t *item, size_t i, const struct sl_batch_limits *lim,
                      struct sl_http_msg **out, char *detail, size_t size)
{
    const json_t *h;
    const char *method = NULL, *path = NULL;
    size_t path_len = 0;
    struct sl_http_msg *m;
    int rc;

    if (!json_is_object(item))
        return fail(detail, size, "requests[%zu]: must be an object", i);
    if ((rc = check_keys(item, i, detail, size)) != SL_OK ||
        (rc = parse_line(item, i, &method, &path, &path_len, detail, size)) != SL_OK)
        return rc;
    if ((m = sl_http_msg_new(path, path_len)) == NULL)
        return SL_ENOMEM;
    m->method = method;
    m->head = strcmp(method, "HEAD") == 0;
    /* "GET /p HTTP/1.1\r\n", the fields, "\r\n": what the request would have been. */
    m->header_bytes = strlen(method) + path_len + 14;
    h = json_object_get(item, "headers");
    rc = h != NULL ? parse_headers(m, i, h, detail, size) : SL_OK;
    if (rc == SL_OK && m->header_bytes > lim->max_header_size)
        rc = fail(detail, size,
                  "requests[%zu]: request line and headers are %zu bytes, more than "
                  "max_header_size (%zu)",
                  i, m->header_bytes, lim->max_header_size);
    if (rc == SL_OK && (json_object_get(item, "body") != NULL ||
                        json_object_get(item, "body_base64") != NULL))
        rc = parse_body(m, i, json_object_get(item, "body"), json_object_get(item, "body_base64"),
                        lim, detail, size);
    if (rc != SL_OK) {
        sl_http_msg_free(m);
        return rc;
    }
    *out = m;
    return SL_OK;
}

static int parse_doc(const json_t *doc, const struct sl_batch_limits *lim,
                     struct sl_batch_items *out, char *detail, size_t size)
{
    const json_t *reqs;
    const char *key;
    json_t *v;
    size_t n;
    int rc;

    if (!json_is_object(doc))
        return fail(detail, size, "the body must be a JSON object");
    json_object_foreach((json_t *)doc, key, v) {
        if (strcmp(key, "requests") != 0)
            return fail(detail, size, "unknown field \"%.64s\"", key);
    }
    if ((reqs = json_object_get(doc, "requests")) == NULL)
        return fail(detail, size, "requests: missing");
    if (!json_is_array(reqs))
        return fail(detail, size, "requests: must be an array");
    n = json_array_size(reqs);
    if (n > lim->max_items)
        return fail(detail, size, "requests: %zu items, more than max_batch_items (%zu)", n,
                    lim->max_items);
    if ((out->msgs = calloc(n > 0 ? n : 1, sizeof(*out->msgs))) == NULL)
        return SL_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if ((rc = parse_item(json_array_get(reqs, i), i, lim, &out->msgs[i], detail, size)) !=
            SL_OK)
            return rc;
        out->n = i + 1;
    }
    return SL_OK;
}

int sl_batch_parse(const char *json, size_t len, const struct sl_batch_limits *lim,
                   struct sl_batch_items *out, char *detail, size_t detail_size)
{
    json_error_t err;
    json_t *doc;
    int rc;

    out->msgs = NULL;
    out->n = 0;
    doc = json_loadb(json != NULL ? json : "", len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES,
                     &err);
    if (doc == NULL)
        return fail(detail, detail_size, "invalid JSON: %s (line %d, column %d)", err.text,
                    err.line, err.column);
    rc = parse_doc(doc, lim, out, detail, detail_size);
    json_decref(doc);
    if (rc == SL_ENOMEM)
        snprintf(detail, detail_size, "out of memory");
    if (rc != SL_OK)
        sl_batch_items_clear(out);
    return rc;
}

void sl_batch_items_clear(struct sl_batch_items *items)
{
    for (size_t i = 0; i < items->n; i++)
        sl_http_msg_free(items->msgs[i]);
    free(items->msgs);
    items->msgs = NULL;
    items->n = 0;
}

/* --- inheritance -------------------------------------------------------- */

static bool inheritable(const char *name, const struct evkeyvalq *batch)
{
    /* Content-* and Expect describe the batch's own body; Prefer its handling. */
    return !sl_headers_is_hop_by_hop(name, batch) && strncasecmp(name, "Content-", 8) != 0 &&
           strcasecmp(name, "Expect") != 0 && strcasecmp(name, "Prefer") != 0;
}

/* Does the item set `name` among its own fields (those up to `last_own`)? */
static bool sets(const struct evkeyvalq *h, const struct evkeyval *last_own, const char *name)
{
    const struct evkeyval *e;

    if (last_own == NULL)
        return false;
    for (e = TAILQ_FIRST(h); e != NULL; e = TAILQ_NEXT(e, next)) {
        if (strcasecmp(e->key, name) == 0)
            return true;
        if (e == last_own)
            break;
    }
    return false;
}

int sl_batch_inherit(struct sl_http_msg *item, const struct evkeyvalq *batch)
{
    const struct evkeyval *last_own = TAILQ_LAST(&item->headers, evkeyvalq);
    const struct evkeyval *e;

    TAILQ_FOREACH(e, batch, next) {
        if (!inheritable(e->key, batch) || sets(&item->headers, last_own, e->key))
            continue;
        if (sl_headers_add(&item->headers, e->key, e->value) != SL_OK)
            return SL_ENOMEM;
        item->header_bytes += strlen(e->key) + strlen(e->value) + 4;
    }
    return SL_OK;
}

/* --- an item's answer as JSON ------------------------------------------- */

static const char *field(const struct evkeyvalq *h, const char *name)
{
    return evhttp_find_header(h, name);
}

/* X-Sluice-Queue-Time is "12.5": digits, one optional fraction. */
static bool is_decimal(const char *s)
{
    size_t n = strspn(s, "0123456789");

    if (n == 0 || n > 15)
        return false;
    if (s[n] == '.')
        s += n + 1, n = strspn(s, "0123456789");
    return n > 0 && n <= 6 && s[n] == '\0';
}

/* The "detail" of sluice's JSON error body, without consuming the body. */
static json_t *error_detail(struct evbuffer *body)
{
    size_t len = body != NULL ? evbuffer_get_length(body) : 0;
    const char *p = len > 0 ? (const char *)evbuffer_pullup(body, -1) : NULL;
    json_t *doc = p != NULL ? json_loadb(p, len, 0, NULL) : NULL;
    json_t *d = json_incref(json_object_get(doc, "detail"));

    json_decref(doc);
    return d;
}

int sl_batch_encode_item(struct evbuffer *out, int status, const struct evkeyvalq *fields,
                         struct evbuffer *body)
{
    const char *code = field(fields, "X-Sluice-Error");
    const char *att = field(fields, "X-Sluice-Attempts");
    const char *qt = field(fields, "X-Sluice-Queue-Time");
    json_t *detail = code != NULL ? error_detail(body) : NULL;
    const char *d = json_string_value(detail);
    unsigned long attempts = att != NULL && strspn(att, "0123456789") == strlen(att) &&
                                     strlen(att) < 10
                                 ? strtoul(att, NULL, 10)
                                 : 0;
    int rc = SL_ENOMEM;

    if (evbuffer_add_printf(out, "{\"status\":%d,\"headers\":", status) < 0 ||
        sl_answer_json_headers(out, fields) != SL_OK || evbuffer_add(out, ",", 1) != 0 ||
        sl_answer_json_body(out, body) != SL_OK || evbuffer_add(out, ",\"error\":", 9) != 0)
        goto done;
    if (code == NULL ? evbuffer_add(out, "null", 4) != 0
                     : sl_answer_json_string(out, code, strlen(code)) != SL_OK ||
                           evbuffer_add(out, ",\"detail\":", 10) != 0 ||
                           sl_answer_json_string(out, d != NULL ? d : "",
                                                 d != NULL ? json_string_length(detail) : 0) !=
                               SL_OK)
        goto done;
    if (evbuffer_add_printf(out, ",\"attempts\":%lu,\"queue_ms\":%s}", attempts,
                            qt != NULL && is_decimal(qt) ? qt : "0") < 0)
        goto done;
    rc = SL_OK;
done:
    json_decref(detail);
    return rc;
}

/* --- the batch ---------------------------------------------------------- */

/* One item's place in the batch, and the sink its request answers through. */
struct slot {
    struct sl_sink sink;            /* ops: slot_ops */
    struct sl_batch *b;
    struct sl_sink_owner *owner;    /* the item's request, while it is adopted */
    struct evbuffer *answer;        /* the item's JSON object once filled; NULL: out of memory */
    bool filled;
};

struct sl_batch {
    struct sl_sink_owner owner;     /* what the batch's sink reports its going to */
    struct sl_requests *q;          /* borrowed */
    struct sl_batch_stats *stats;   /* borrowed */
    struct sl_sink *sink;           /* borrowed; NULL once gone */
    size_t n;                       /* slots */
    size_t left;                    /* slots not filled yet */
    size_t failed;                  /* items answered with sluice's own error */
    bool dispatched;                /* an item went upstream: the sink was told */
    bool submitting;                /* in the submit loop: the last slot filled does not finish */
    int64_t started_us;
    char client[46];
    struct slot slots[];
};

/* Written in place of an item's answer that could not be stored. */
static const char oom_item[] =
    "{\"status\":500,\"headers\":{},\"body\":\"\",\"error\":\"internal_error\","
    "\"detail\":\"out of memory\",\"attempts\":0,\"queue_ms\":0}";

static void batch_log(const struct sl_requests *q, const char *client, int status,
                      enum sl_batch_outcome o, size_t items, size_t failed, int64_t started_us)
{
    if (!q->cfg->access_log || sl_log_get_level() < SL_LOG_INFO)
        return;
    sl_log(SL_LOG_INFO, "batch",
           "method=POST path=" SL_BATCH_PATH " status=%d outcome=%s items=%zu failed=%zu "
           "ms=%.1f client=%s",
           status, sl_batch_outcome_name(o), items, failed,
           (double)(sl_clock_now() - started_us) / 1000.0, client != NULL ? client : "-");
}

/* A batch that never fanned out: sluice's JSON error, counted and logged. */
static void batch_refuse(struct sl_requests *q, struct sl_batch_stats *stats,
                         struct sl_sink *sink, const char *client, enum sl_batch_outcome bo,
                         enum sl_outcome o, const char *detail, int64_t started_us)
{
    stats->batches[bo]++;
    batch_log(q, client, sl_outcome_status(o), bo, 0, 0, started_us);
    sl_request_respond_error(sink, o, detail, o == SL_OUTCOME_DRAINING);
}

static void batch_free(struct sl_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        if (b->slots[i].answer != NULL)
            evbuffer_free(b->slots[i].answer);
    free(b);
}

static int batch_fields(sl_header_fn emit, void *emit_arg, void *arg)
{
    (void)arg;
    return emit("Content-Type", "application/json", emit_arg);
}

/* {"responses":[...]}: the slots' answers are moved, not copied. */
static int gather(struct sl_batch *b, struct evbuffer *out)
{
    if (evbuffer_add(out, "{\"responses\":[", 14) != 0)
        return SL_ENOMEM;
    for (size_t i = 0; i < b->n; i++) {
        struct evbuffer *a = b->slots[i].answer;

        if ((i > 0 && evbuffer_add(out, ",", 1) != 0) ||
            (a != NULL ? evbuffer_add_buffer(out, a) : evbuffer_add(out, oom_item,
                                                                    sizeof(oom_item) - 1)) != 0)
            return SL_ENOMEM;
    }
    return evbuffer_add(out, "]}\n", 3) == 0 ? SL_OK : SL_ENOMEM;
}

/* Every slot is filled: answer, count, log, free. */
static void batch_finish(struct sl_batch *b)
{
    struct evbuffer *out = evbuffer_new();
    enum sl_batch_outcome bo = SL_BATCH_ANSWERED;
    int status = 200;

    if (out != NULL && gather(b, out) == SL_OK) {
        b->sink->ops->respond(b->sink, 200, NULL, batch_fields, NULL, out, false, false);
    } else {
        bo = SL_BATCH_INTERNAL_ERROR;
        status = sl_outcome_status(SL_OUTCOME_INTERNAL_ERROR);
        sl_request_respond_error(b->sink, SL_OUTCOME_INTERNAL_ERROR, "out of memory", true);
    }
    if (out != NULL)
        evbuffer_free(out);
    b->stats->batches[bo]++;
    batch_log(b->q, b->client, status, bo, b->n, b->failed, b->started_us);
    batch_free(b);
}

/* The client left: cancel every item not answered yet, then go. */
static void batch_on_gone(struct sl_sink_owner *o)
{
    struct sl_batch *b = (struct sl_batch *)(void *)o;

    b->sink = NULL;
    for (size_t i = 0; i < b->n; i++) {
        struct slot *s = &b->slots[i];
        struct sl_sink_owner *r = s->owner;

        if (s->filled)
            continue;
        s->filled = true;
        s->owner = NULL;
        b->left--;
        b->stats->items[SL_OUTCOME_CLIENT_GONE]++;
        /* Parked: it leaves without a token. In flight: it lands, and is dropped. */
        if (r != NULL)
            r->gone(r);
    }
    b->stats->batches[SL_BATCH_CLIENT_GONE]++;
    batch_log(b->q, b->client, sl_outcome_status(SL_OUTCOME_CLIENT_GONE), SL_BATCH_CLIENT_GONE,
              b->n, b->failed, b->started_us);
    batch_free(b);
}

static void slot_adopt(struct sl_sink *sink, struct sl_sink_owner *owner)
{
    ((struct slot *)(void *)sink)->owner = owner;
}

/* The answer's fields as the client would have seen them. */
struct collect {
    struct evkeyvalq *list;
    bool keep_length;
};

static int collect_field(const char *name, const char *value, void *arg)
{
    struct collect *c = arg;

    if (!c->keep_length && strcasecmp(name, "Content-Length") == 0)
        return SL_OK;
    return sl_headers_add(c->list, name, value) == SL_ENOMEM ? SL_ENOMEM : SL_OK;
}

static enum sl_outcome outcome_of(const struct evkeyvalq *fields)
{
    const char *code = field(fields, "X-Sluice-Error");

    for (int o = 0; code != NULL && o < SL_OUTCOME_COUNT; o++)
        if (strcmp(code, sl_outcome_name((enum sl_outcome)o)) == 0)
            return (enum sl_outcome)o;
    return code != NULL ? SL_OUTCOME_INTERNAL_ERROR : SL_OUTCOME_RELAYED;
}

/* An item's answer: stored as JSON at once (the body is not kept; nor the reason phrase). */
static void slot_respond(struct sl_sink *sink, int status, const char *reason,
                         sl_sink_fields_fn fields, void *fields_arg, struct evbuffer *body,
                         bool keep_length, bool close)
{
    struct slot *s = (struct slot *)(void *)sink;
    struct sl_batch *b = s->b;
    struct evkeyvalq list;
    struct collect c = {&list, keep_length};
    enum sl_outcome o;
    int rc = SL_OK;

    (void)reason;
    (void)close;
    s->owner = NULL;
    if (s->filled) /* cancelled: the request was told, and does not answer */
        return;
    TAILQ_INIT(&list);
    if (fields != NULL)
        rc = fields(collect_field, &c, fields_arg);
    o = rc == SL_OK ? outcome_of(&list) : SL_OUTCOME_INTERNAL_ERROR;
    s->answer = evbuffer_new();
    if (rc != SL_OK || s->answer == NULL ||
        sl_batch_encode_item(s->answer, status, &list, body) != SL_OK) {
        if (s->answer != NULL)
            evbuffer_free(s->answer);
        s->answer = NULL; /* gather() writes oom_item */
        o = SL_OUTCOME_INTERNAL_ERROR;
    }
    if (body != NULL)
        evbuffer_drain(body, evbuffer_get_length(body));
    sl_headers_clear(&list);
    s->filled = true;
    b->stats->items[o]++;
    b->failed += o != SL_OUTCOME_RELAYED;
    if (--b->left == 0 && !b->submitting)
        batch_finish(b);
}

/* The first item handed to an upstream is the batch's start (an async job shows "running"). */
static void slot_dispatched(struct sl_sink *sink, unsigned attempt)
{
    struct sl_batch *b = ((struct slot *)(void *)sink)->b;

    (void)attempt;
    if (b->dispatched || b->sink == NULL)
        return;
    b->dispatched = true;
    if (b->sink->ops->dispatched != NULL)
        b->sink->ops->dispatched(b->sink, 1);
}

static const struct sl_sink_ops slot_ops = {
    .adopt = slot_adopt,
    .respond = slot_respond,
    .stores = true,
    .dispatched = slot_dispatched,
};

static struct sl_batch *batch_new(struct sl_requests *q, struct sl_batch_stats *stats,
                                  struct sl_sink *sink, const char *client, size_t n,
                                  int64_t started_us)
{
    struct sl_batch *b = sl_zalloc(sizeof(*b) + n * sizeof(b->slots[0]));

    if (b == NULL)
        return NULL;
    b->owner.gone = batch_on_gone;
    b->q = q;
    b->stats = stats;
    b->sink = sink;
    b->n = b->left = n;
    b->started_us = started_us;
    strncpy(b->client, client != NULL ? client : "-", sizeof(b->client) - 1);
    for (size_t i = 0; i < n; i++) {
        b->slots[i].sink.ops = &slot_ops;
        b->slots[i].b = b;
    }
    return b;
}

/* Submit every item in order; items refused at once fill their slot meanwhile. */
static void batch_run(struct sl_batch *b, struct sl_batch_items *items)
{
    b->sink->ops->adopt(b->sink, &b->owner);
    b->submitting = true;
    for (size_t i = 0; i < b->n; i++) {
        struct sl_http_msg *m = items->msgs[i];

        items->msgs[i] = NULL;
        sl_request_submit(b->q, &b->slots[i].sink, m, b->client);
    }
    b->submitting = false;
    if (b->left == 0)
        batch_finish(b);
}

bool sl_batch_is_endpoint(const struct sl_http_msg *msg)
{
    size_t n = strlen(SL_BATCH_PATH);

    return strcmp(msg->method, "POST") == 0 && strncmp(msg->target, SL_BATCH_PATH, n) == 0 &&
           (msg->target[n] == '\0' || msg->target[n] == '?');
}

/*
 * Parse and check the batch request as a whole (draining, body, every item,
 * inheritance) into `items`. Returns SL_OK, or the refusal's outcomes and
 * detail with `items` left empty.
 */
static int batch_prepare(struct sl_requests *q, const struct sl_http_msg *msg,
                         struct sl_batch_items *items, enum sl_batch_outcome *bo,
                         enum sl_outcome *o, char *detail, size_t size)
{
    struct sl_batch_limits lim = {q->cfg->max_batch_items, q->cfg->max_body_size,
                                  q->cfg->max_header_size};
    size_t len = sl_http_msg_body_len(msg);
    int rc;

    if (q->refuse_new) {
        *bo = SL_BATCH_DRAINING;
        *o = SL_OUTCOME_DRAINING;
        snprintf(detail, size, "sluice is shutting down");
        return SL_ERR;
    }
    rc = sl_batch_parse(len > 0 ? (const char *)evbuffer_pullup(msg->body, -1) : "", len, &lim,
                        items, detail, size);
    for (size_t i = 0; rc == SL_OK && i < items->n; i++)
        rc = sl_batch_inherit(items->msgs[i], &msg->headers);
    if (rc == SL_OK)
        return SL_OK;
    sl_batch_items_clear(items);
    *bo = rc == SL_ERR ? SL_BATCH_BAD_REQUEST : SL_BATCH_INTERNAL_ERROR;
    *o = rc == SL_ERR ? SL_OUTCOME_BAD_REQUEST : SL_OUTCOME_INTERNAL_ERROR;
    if (rc != SL_ERR)
        snprintf(detail, size, "out of memory");
    return rc;
}

bool sl_batch_check(struct sl_requests *q, struct sl_batch_stats *stats, struct sl_sink *sink,
                    const struct sl_http_msg *msg, const char *client)
{
    struct sl_batch_items items = {NULL, 0};
    enum sl_batch_outcome bo;
    enum sl_outcome o;
    char detail[256];

    if (batch_prepare(q, msg, &items, &bo, &o, detail, sizeof(detail)) == SL_OK) {
        sl_batch_items_clear(&items);
        return true;
    }
    batch_refuse(q, stats, sink, client, bo, o, detail, sl_clock_now());
    return false;
}

void sl_batch_submit(struct sl_requests *q, struct sl_batch_stats *stats, struct sl_sink *sink,
                     struct sl_http_msg *msg, const char *client)
{
    struct sl_batch_items items = {NULL, 0};
    struct sl_batch *b = NULL;
    int64_t now = sl_clock_now();
    enum sl_batch_outcome bo;
    enum sl_outcome o;
    char detail[256];

    if (batch_prepare(q, msg, &items, &bo, &o, detail, sizeof(detail)) != SL_OK) {
        batch_refuse(q, stats, sink, client, bo, o, detail, now);
        goto out;
    }
    if ((b = batch_new(q, stats, sink, client, items.n, now)) == NULL) {
        batch_refuse(q, stats, sink, client, SL_BATCH_INTERNAL_ERROR, SL_OUTCOME_INTERNAL_ERROR,
                      "out of memory", now);
        goto out;
    }
    /* The batch's own body is not needed any more: free it before the items park. */
    sl_http_msg_free(msg);
    msg = NULL;
    batch_run(b, &items);
out:
    sl_batch_items_clear(&items);
    sl_http_msg_free(msg);
}
