/*
 * test_batch.c - POST /_sluice/batch: parsing and checking the body,
 * inheriting the batch request's fields, encoding an item's answer, and
 * whole batches through real requests without any network: items whose
 * route is paused stay parked (then a drain or a client that leaves ends
 * them), items with no route are refused at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>

#include "batch.h"
#include "clock.h"
#include "config.h"
#include "dispatcher.h"
#include "headers.h"
#include "http_msg.h"
#include "log.h"
#include "route.h"
#include "sluice.h"

static const struct sl_batch_limits limits = {.max_items = 5, .max_body_size = 16,
                                              .max_header_size = 1024};

/* --- parsing -------------------------------------------------------------- */

static int parse(const char *json, struct sl_batch_items *items, char *detail)
{
    return sl_batch_parse(json, strlen(json), &limits, items, detail, 256);
}

static const char *body_of(struct sl_http_msg *m)
{
    if (m->body == NULL)
        return NULL;
    evbuffer_add(m->body, "", 1); /* NUL-terminate for the comparisons */
    return (const char *)evbuffer_pullup(m->body, -1);
}

static void test_parse_valid(void **state)
{
    struct sl_batch_items items;
    char detail[256] = "";
    struct sl_http_msg *m;
    struct evkeyval *e;

    (void)state;
    assert_int_equal(parse("{\"requests\":["
                           "{\"path\":\"/a?x=1\"},"
                           "{\"method\":\"POST\",\"path\":\"/b\",\"headers\":{\"X-One\":\"1\","
                           "\"Accept\":[\"text/plain\",\"application/json\"]},\"body\":\"hi\"},"
                           "{\"method\":\"HEAD\",\"path\":\"/c\",\"body_base64\":\"AP8=\"},"
                           "{\"method\":\"PUT\",\"path\":\"/d\",\"body\":\"\",\"headers\":{}}"
                           "]}",
                           &items, detail),
                     SL_OK);
    assert_int_equal(items.n, 4);

    m = items.msgs[0];
    assert_string_equal(m->method, "GET");
    assert_string_equal(m->target, "/a?x=1");
    assert_null(m->body);
    assert_false(m->head);
    assert_true(TAILQ_EMPTY(&m->headers));
    assert_int_equal(m->header_bytes, strlen("GET /a?x=1 HTTP/1.1\r\n\r\n"));

    m = items.msgs[1];
    assert_string_equal(m->method, "POST");
    assert_string_equal(body_of(m), "hi");
    e = TAILQ_FIRST(&m->headers);
    assert_string_equal(e->key, "X-One");
    e = TAILQ_NEXT(e, next);
    assert_string_equal(e->key, "Accept");
    assert_string_equal(e->value, "text/plain");
    e = TAILQ_NEXT(e, next);
    assert_string_equal(e->key, "Accept");
    assert_string_equal(e->value, "application/json");
    assert_null(TAILQ_NEXT(e, next));
    assert_int_equal(m->header_bytes,
                     strlen("POST /b HTTP/1.1\r\nX-One: 1\r\nAccept: text/plain\r\n"
                            "Accept: application/json\r\n\r\n"));

    m = items.msgs[2];
    assert_true(m->head);
    assert_int_equal(sl_http_msg_body_len(m), 2);
    assert_memory_equal(evbuffer_pullup(m->body, -1), "\x00\xff", 2);

    m = items.msgs[3];
    assert_null(m->body); /* an empty body is no body */
    sl_batch_items_clear(&items);
    assert_null(items.msgs);
    assert_int_equal(items.n, 0);

    /* An empty batch is a batch. */
    assert_int_equal(parse("{\"requests\":[]}", &items, detail), SL_OK);
    assert_int_equal(items.n, 0);
    sl_batch_items_clear(&items);
}

static void test_parse_refusals(void **state)
{
    static const struct {
        const char *json, *detail;
    } cases[] = {
        {"", "invalid JSON: '[' or '{' expected near end of file (line 1, column 0)"},
        {"{\"requests\":[}", NULL}, /* jansson's words: only the prefix is checked */
        {"[]", "the body must be a JSON object"},
        {"{}", "requests: missing"},
        {"{\"requests\":[],\"extra\":1}", "unknown field \"extra\""},
        {"{\"requests\":{}}", "requests: must be an array"},
        {"{\"requests\":[{\"path\":\"/\"},{\"path\":\"/\"},{\"path\":\"/\"},{\"path\":\"/\"},"
         "{\"path\":\"/\"},{\"path\":\"/\"}]}",
         "requests: 6 items, more than max_batch_items (5)"},
        {"{\"requests\":[{\"path\":\"/\"},7]}", "requests[1]: must be an object"},
        {"{\"requests\":[{\"path\":\"/\",\"header\":{}}]}", "requests[0]: unknown field \"header\""},
        {"{\"requests\":[{}]}", "requests[0].path: missing"},
        {"{\"requests\":[{\"path\":5}]}", "requests[0].path: must be a string"},
        {"{\"requests\":[{\"path\":\"\"}]}", "requests[0].path: must start with / (a path, not a URL)"},
        {"{\"requests\":[{\"path\":\"/\"},{\"path\":\"/\"},{\"path\":\"/\"},"
         "{\"path\":\"http://example.com/x\"}]}",
         "requests[3].path: must start with / (a path, not a URL)"},
        {"{\"requests\":[{\"path\":\"x/y\"}]}", "requests[0].path: must start with / (a path, not a URL)"},
        {"{\"requests\":[{\"path\":\"/a\\u0000b\"}]}", "requests[0].path: contains a NUL byte"},
        {"{\"requests\":[{\"path\":\"/\",\"method\":1}]}", "requests[0].method: must be a string"},
        {"{\"requests\":[{\"path\":\"/\",\"method\":\"get\"}]}",
         "requests[0].method: must be GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS"},
        {"{\"requests\":[{\"path\":\"/\",\"method\":\"CONNECT\"}]}",
         "requests[0].method: must be GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS"},
        {"{\"requests\":[{\"path\":\"/\",\"headers\":[]}]}", "requests[0].headers: must be an object"},
        {"{\"requests\":[{\"path\":\"/\",\"headers\":{\"A\":1}}]}",
         "requests[0].headers.A: must be a string or an array of strings"},
        {"{\"requests\":[{\"path\":\"/\",\"headers\":{\"A\":[\"x\",null]}}]}",
         "requests[0].headers.A: must be a string or an array of strings"},
        {"{\"requests\":[{\"path\":\"/\",\"headers\":{\"A\":\"x\\r\\nB: y\"}}]}",
         "requests[0].headers.A: the value contains CR, LF or NUL"},
        {"{\"requests\":[{\"path\":\"/\",\"headers\":{\"A\":\"x\\u0000\"}}]}",
         "requests[0].headers.A: the value contains CR, LF or NUL"},
        {"{\"requests\":[{\"path\":\"/\",\"headers\":{\"A B\":\"x\"}}]}",
         "requests[0].headers: \"A B\" is not a field name"},
        {"{\"requests\":[{\"path\":\"/\",\"headers\":{\"\":\"x\"}}]}",
         "requests[0].headers: \"\" is not a field name"},
        {"{\"requests\":[{\"path\":\"/\",\"headers\":{\"A:\":\"x\"}}]}",
         "requests[0].headers: \"A:\" is not a field name"},
        {"{\"requests\":[{\"path\":\"/\",\"body\":1}]}", "requests[0].body: must be a string"},
        {"{\"requests\":[{\"path\":\"/\",\"body_base64\":[]}]}",
         "requests[0].body_base64: must be a string"},
        {"{\"requests\":[{\"path\":\"/\",\"body\":\"a\",\"body_base64\":\"YQ==\"}]}",
         "requests[0]: body and body_base64 are exclusive"},
        {"{\"requests\":[{\"path\":\"/\"},{\"path\":\"/\",\"body_base64\":\"not base64!\"}]}",
         "requests[1].body_base64: not valid base64"},
        {"{\"requests\":[{\"path\":\"/\",\"body_base64\":\"YQ\"},{\"path\":\"/\",\"body_base64\":\"Y\"}]}",
         "requests[1].body_base64: not valid base64"},
        {"{\"requests\":[{\"path\":\"/\",\"body\":\"0123456789abcdefg\"}]}",
         "requests[0].body: 17 bytes, more than max_body_size (16)"},
        /* 18 bytes once decoded; 16 decode to 16 and pass (below). */
        {"{\"requests\":[{\"path\":\"/\",\"body_base64\":\"MDEyMzQ1Njc4OWFiY2RlZmdo\"}]}",
         "requests[0].body_base64: 18 bytes, more than max_body_size (16)"},
        {"{\"requests\":[{\"path\":\"/\",\"headers\":{\"X\":\"x\"},\"body\":\"x\"},"
         "{\"path\":\"/\",\"body_base64\":\"MDEyMzQ1Njc4OWFiY2RlZmc=\"}]}",
         "requests[1].body_base64: 17 bytes, more than max_body_size (16)"},
        {"{\"requests\":[{\"path\":\"/\"}],\"requests\":[]}", NULL}, /* duplicate key */
    };
    struct sl_batch_items items;
    char detail[256];

    (void)state;
    for (size_t i = 0; i < SL_ARRAY_LEN(cases); i++) {
        int rc = parse(cases[i].json, &items, detail);

        if (rc != SL_ERR)
            fail_msg("case %zu accepted: %s", i, cases[i].json);
        assert_null(items.msgs);
        assert_int_equal(items.n, 0);
        if (cases[i].detail == NULL)
            assert_true(strncmp(detail, "invalid JSON: ", 14) == 0);
        else if (strcmp(detail, cases[i].detail) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, detail, cases[i].detail);
    }
    /* Exactly max_body_size passes, text and base64. */
    assert_int_equal(parse("{\"requests\":[{\"path\":\"/\",\"body\":\"0123456789abcdef\"},"
                           "{\"path\":\"/\",\"body_base64\":\"MDEyMzQ1Njc4OWFiY2RlZg==\"}]}",
                           &items, detail),
                     SL_OK);
    assert_int_equal(sl_http_msg_body_len(items.msgs[1]), 16);
    sl_batch_items_clear(&items);
}

static void test_parse_header_limits(void **state)
{
    char json[8192], name[16];
    struct sl_batch_items items;
    char detail[256];
    size_t n;

    (void)state;
    /* The request line and fields over max_header_size (1024). */
    n = (size_t)snprintf(json, sizeof(json), "{\"requests\":[{\"path\":\"/%01020d\"}]}", 0);
    assert_true(n < sizeof(json));
    assert_int_equal(parse(json, &items, detail), SL_ERR);
    assert_string_equal(detail, "requests[0]: request line and headers are 1038 bytes, more "
                                "than max_header_size (1024)");
    /* At most 100 fields, counting each value of an array. */
    n = (size_t)snprintf(json, sizeof(json), "{\"requests\":[{\"path\":\"/\",\"headers\":{");
    for (int i = 0; i < 60; i++) {
        snprintf(name, sizeof(name), "H%d", i);
        n += (size_t)snprintf(json + n, sizeof(json) - n, "%s\"%s\":[\"a\",\"b\"]",
                              i > 0 ? "," : "", name);
    }
    snprintf(json + n, sizeof(json) - n, "}}]}");
    struct sl_batch_limits big = limits;
    big.max_header_size = 1 << 20;
    assert_int_equal(sl_batch_parse(json, strlen(json), &big, &items, detail, sizeof(detail)),
                     SL_ERR);
    assert_string_equal(detail, "requests[0].headers: more than 100 fields");
}

/* --- inheritance ---------------------------------------------------------- */

static void test_inherit(void **state)
{
    struct sl_batch_items items;
    struct evkeyvalq batch;
    struct sl_http_msg *m;
    char detail[256];
    size_t before;

    (void)state;
    TAILQ_INIT(&batch);
    sl_headers_add(&batch, "Host", "sluice.local");
    sl_headers_add(&batch, "Connection", "keep-alive, X-Hop");
    sl_headers_add(&batch, "X-Hop", "dropped: named by Connection");
    sl_headers_add(&batch, "Keep-Alive", "timeout=5");
    sl_headers_add(&batch, "Content-Type", "application/json");
    sl_headers_add(&batch, "Content-Length", "999");
    sl_headers_add(&batch, "Content-Encoding", "identity");
    sl_headers_add(&batch, "Expect", "100-continue");
    sl_headers_add(&batch, "Prefer", "respond-async");
    sl_headers_add(&batch, "Transfer-Encoding", "chunked");
    sl_headers_add(&batch, "X-Sluice-Priority", "high");
    sl_headers_add(&batch, "X-Sluice-Deadline", "5s");
    sl_headers_add(&batch, "Idempotency-Key", "k-1");
    sl_headers_add(&batch, "Authorization", "Bearer t");
    sl_headers_add(&batch, "Accept", "a/1");
    sl_headers_add(&batch, "Accept", "a/2");
    sl_headers_add(&batch, "X-Forwarded-For", "10.0.0.1");

    assert_int_equal(parse("{\"requests\":[{\"path\":\"/a\"},"
                           "{\"path\":\"/b\",\"headers\":{\"x-sluice-priority\":\"low\","
                           "\"ACCEPT\":\"mine\",\"Content-Type\":\"text/plain\"}}]}",
                           &items, detail),
                     SL_OK);

    m = items.msgs[0];
    before = m->header_bytes;
    assert_int_equal(sl_batch_inherit(m, &batch), SL_OK);
    {
        static const char *const want[][2] = {
            {"Host", "sluice.local"},      {"X-Sluice-Priority", "high"},
            {"X-Sluice-Deadline", "5s"},   {"Idempotency-Key", "k-1"},
            {"Authorization", "Bearer t"}, {"Accept", "a/1"},
            {"Accept", "a/2"},             {"X-Forwarded-For", "10.0.0.1"},
        };
        struct evkeyval *e = TAILQ_FIRST(&m->headers);
        size_t added = 0;

        for (size_t i = 0; i < SL_ARRAY_LEN(want); i++, e = TAILQ_NEXT(e, next)) {
            assert_non_null(e);
            assert_string_equal(e->key, want[i][0]);
            assert_string_equal(e->value, want[i][1]);
            added += strlen(want[i][0]) + strlen(want[i][1]) + 4;
        }
        assert_null(e);
        assert_int_equal(m->header_bytes, before + added);
    }

    /* The item's own fields win, whatever their case; every Accept of the batch stays out. */
    m = items.msgs[1];
    assert_int_equal(sl_batch_inherit(m, &batch), SL_OK);
    assert_string_equal(evhttp_find_header(&m->headers, "X-Sluice-Priority"), "low");
    assert_string_equal(evhttp_find_header(&m->headers, "Accept"), "mine");
    assert_string_equal(evhttp_find_header(&m->headers, "Content-Type"), "text/plain");
    assert_string_equal(evhttp_find_header(&m->headers, "X-Sluice-Deadline"), "5s");
    {
        size_t accepts = 0, types = 0;
        struct evkeyval *e;

        TAILQ_FOREACH(e, &m->headers, next) {
            accepts += strcasecmp(e->key, "Accept") == 0;
            types += strcasecmp(e->key, "Content-Type") == 0;
        }
        assert_int_equal(accepts, 1);
        assert_int_equal(types, 1);
    }
    sl_batch_items_clear(&items);
    sl_headers_clear(&batch);
}

/* --- an item's answer ----------------------------------------------------- */

static json_t *encode(int status, struct evkeyvalq *fields, const void *body, size_t len)
{
    struct evbuffer *out = evbuffer_new(), *b = evbuffer_new();
    json_t *j;
    json_error_t err;

    evbuffer_add(b, body, len);
    assert_int_equal(sl_batch_encode_item(out, status, fields, b), SL_OK);
    assert_int_equal(evbuffer_get_length(b), 0);
    j = json_loadb((const char *)evbuffer_pullup(out, -1), evbuffer_get_length(out), 0, &err);
    if (j == NULL)
        fail_msg("not JSON: %s", err.text);
    evbuffer_free(out);
    evbuffer_free(b);
    return j;
}

static void test_encode_item(void **state)
{
    struct evkeyvalq f;
    json_t *j;
    static const char err_body[] = "{\"error\":\"queue_full\",\"detail\":\"the queue is full\"}\n";

    (void)state;
    TAILQ_INIT(&f);
    sl_headers_add(&f, "Content-Type", "application/json");
    sl_headers_add(&f, "X-Sluice-Queue-Time", "812.4");
    sl_headers_add(&f, "X-Sluice-Attempts", "2");
    j = encode(201, &f, "{\"ok\":true}", 11);
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 201);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "headers"),
                                                          "content-type")),
                        "application/json");
    assert_string_equal(json_string_value(json_object_get(j, "body")), "{\"ok\":true}");
    assert_null(json_object_get(j, "body_base64"));
    assert_true(json_is_null(json_object_get(j, "error")));
    assert_null(json_object_get(j, "detail"));
    assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 2);
    assert_true(json_real_value(json_object_get(j, "queue_ms")) == 812.4);
    json_decref(j);
    sl_headers_clear(&f);

    /* Binary body, no timing fields (an answer that never queued). */
    sl_headers_add(&f, "Content-Type", "image/png");
    j = encode(200, &f, "\x89PNG\r\n\x1a\n", 8);
    assert_null(json_object_get(j, "body"));
    assert_string_equal(json_string_value(json_object_get(j, "body_base64")), "iVBORw0KGgo=");
    assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 0);
    assert_int_equal(json_integer_value(json_object_get(j, "queue_ms")), 0);
    json_decref(j);
    sl_headers_clear(&f);

    /* sluice's own error: code and detail. */
    sl_headers_add(&f, "Content-Type", "application/json");
    sl_headers_add(&f, "X-Sluice-Error", "queue_full");
    sl_headers_add(&f, "Retry-After", "3");
    j = encode(503, &f, err_body, sizeof(err_body) - 1);
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 503);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "queue_full");
    assert_string_equal(json_string_value(json_object_get(j, "detail")), "the queue is full");
    assert_string_equal(json_string_value(json_object_get(j, "body")), err_body);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "headers"),
                                                          "retry-after")),
                        "3");
    json_decref(j);

    /* Timing fields that are not numbers are not copied into numbers. */
    sl_headers_clear(&f);
    sl_headers_add(&f, "X-Sluice-Attempts", "2x");
    sl_headers_add(&f, "X-Sluice-Queue-Time", "1e9");
    j = encode(200, &f, "", 0);
    assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 0);
    assert_int_equal(json_integer_value(json_object_get(j, "queue_ms")), 0);
    assert_string_equal(json_string_value(json_object_get(j, "body")), "");
    json_decref(j);
    sl_headers_clear(&f);
}

static void test_endpoint(void **state)
{
    static const struct {
        const char *method, *target;
        bool batch;
    } cases[] = {
        {"POST", "/_sluice/batch", true},  {"POST", "/_sluice/batch?x=1", true},
        {"GET", "/_sluice/batch", false},  {"POST", "/_sluice/batch/", false},
        {"POST", "/_sluice/batches", false}, {"POST", "/_sluice/jobs", false},
        {"POST", "/", false},
    };

    (void)state;
    for (size_t i = 0; i < SL_ARRAY_LEN(cases); i++) {
        struct sl_http_msg *m = sl_http_msg_new(cases[i].target, strlen(cases[i].target));

        m->method = cases[i].method;
        assert_int_equal(sl_batch_is_endpoint(m), cases[i].batch);
        sl_http_msg_free(m);
    }
}

/* --- whole batches -------------------------------------------------------- */

/* The client's side: a sink that records its one answer. */
struct client {
    struct sl_sink sink;
    struct sl_sink_owner *owner;
    int answers;
    int status;
    bool close;
    struct evkeyvalq fields;
    json_t *doc;
};

static struct client *client_of(struct sl_sink *s)
{
    return (struct client *)(void *)s;
}

static void client_adopt(struct sl_sink *s, struct sl_sink_owner *owner)
{
    client_of(s)->owner = owner;
}

static int client_field(const char *name, const char *value, void *arg)
{
    return sl_headers_add(arg, name, value);
}

static void client_respond(struct sl_sink *s, int status, const char *reason,
                           sl_sink_fields_fn fields, void *fields_arg, struct evbuffer *body,
                           bool keep_length, bool close)
{
    struct client *c = client_of(s);

    (void)reason;
    (void)keep_length;
    c->answers++;
    c->owner = NULL;
    c->status = status;
    c->close = close;
    if (fields != NULL)
        assert_int_equal(fields(client_field, &c->fields, fields_arg), SL_OK);
    c->doc = json_loadb((const char *)evbuffer_pullup(body, -1), evbuffer_get_length(body), 0,
                        NULL);
    assert_non_null(c->doc);
    evbuffer_drain(body, evbuffer_get_length(body));
}

static const struct sl_sink_ops client_ops = {.adopt = client_adopt, .respond = client_respond};

struct fx {
    struct event_base *base;
    struct sl_config cfg;
    struct sl_route_config rcfg[1];
    struct sl_queue_totals totals;
    struct sl_route_table table;
    struct sl_requests q;
    struct sl_batch_stats stats;
    struct client client;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct sl_route_config *rc = &f->rcfg[0];

    assert_non_null(f);
    f->base = event_base_new();
    assert_non_null(f->base);
    sl_log_set_level(SL_LOG_WARN);
    f->cfg.max_batch_items = 10;
    f->cfg.max_body_size = 1024;
    f->cfg.max_header_size = 4096;
    f->cfg.queue_max_depth = 100;
    f->cfg.queue_max_bytes = 1 << 20;
    f->cfg.overflow = SL_OVERFLOW_REJECT;
    snprintf(rc->name, sizeof(rc->name), "api");
    snprintf(rc->match, sizeof(rc->match), "/api/");
    snprintf(rc->upstream, sizeof(rc->upstream), "http://127.0.0.1:1");
    rc->rate.n = 1;
    rc->rate.period_us = 1000000;
    rc->burst = 1;
    rc->max_in_flight = 1;
    rc->max_response_size = 1024;
    f->cfg.routes = f->rcfg;
    f->cfg.n_routes = 1;
    f->totals.max_depth = f->cfg.queue_max_depth;
    f->totals.max_bytes = f->cfg.queue_max_bytes;
    sl_requests_init(&f->q, f->base);
    f->q.cfg = &f->cfg;
    f->q.routes = &f->table;
    f->q.totals = &f->totals;
    assert_int_equal(sl_dispatcher_table_init(&f->table, &f->cfg, &f->totals, f->base,
                                              &sl_request_dispatch_ops, &f->q),
                     SL_OK);
    /* Paused for an hour: its items stay parked, nothing reaches an upstream. */
    sl_route_pause(f->table.routes[0], sl_clock_now(), INT64_C(3600) * 1000000, SL_PAUSED_BY_BACKOFF);
    f->client.sink.ops = &client_ops;
    TAILQ_INIT(&f->client.fields);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    assert_int_equal(f->q.n_live, 0);
    sl_dispatcher_table_fini(&f->table);
    event_base_free(f->base);
    sl_headers_clear(&f->client.fields);
    json_decref(f->client.doc);
    free(f);
    return 0;
}

static void submit(struct fx *f, const char *json)
{
    struct sl_http_msg *m = sl_http_msg_new(SL_BATCH_PATH, strlen(SL_BATCH_PATH));

    m->method = "POST";
    sl_headers_add(&m->headers, "Content-Type", "application/json");
    sl_headers_add(&m->headers, "X-Sluice-Priority", "low");
    m->body = evbuffer_new();
    evbuffer_add(m->body, json, strlen(json));
    sl_batch_submit(&f->q, &f->stats, &f->client.sink, m, "192.0.2.1");
}

static json_t *response(struct fx *f, size_t i)
{
    return json_array_get(json_object_get(f->client.doc, "responses"), i);
}

static const char *resp_error(struct fx *f, size_t i)
{
    return json_string_value(json_object_get(response(f, i), "error"));
}

static void test_batch_answered_at_once(void **state)
{
    struct fx *f = *state;

    /* No route and the reserved prefix: refused during the submit loop. */
    submit(f, "{\"requests\":[{\"path\":\"/nowhere\"},{\"path\":\"/_sluice/x\"},"
              "{\"path\":\"/a/../b\"}]}");
    assert_int_equal(f->client.answers, 1);
    assert_int_equal(f->client.status, 200);
    assert_false(f->client.close);
    assert_string_equal(evhttp_find_header(&f->client.fields, "Content-Type"), "application/json");
    assert_int_equal(json_array_size(json_object_get(f->client.doc, "responses")), 3);
    assert_int_equal(json_integer_value(json_object_get(response(f, 0), "status")), 404);
    assert_string_equal(resp_error(f, 0), "no_route");
    assert_string_equal(resp_error(f, 1), "no_route");
    assert_int_equal(json_integer_value(json_object_get(response(f, 2), "status")), 400);
    assert_string_equal(resp_error(f, 2), "bad_request");
    assert_string_equal(json_string_value(json_object_get(response(f, 2), "detail")),
                        "dot segments are not allowed in the path");
    assert_int_equal(f->stats.batches[SL_BATCH_ANSWERED], 1);
    assert_int_equal(f->stats.items[SL_OUTCOME_NO_ROUTE], 2);
    assert_int_equal(f->stats.items[SL_OUTCOME_BAD_REQUEST], 1);
    assert_int_equal(f->q.unrouted.outcomes[SL_OUTCOME_NO_ROUTE], 2);
}

static void test_batch_empty(void **state)
{
    struct fx *f = *state;

    submit(f, "{\"requests\":[]}");
    assert_int_equal(f->client.answers, 1);
    assert_int_equal(f->client.status, 200);
    assert_int_equal(json_array_size(json_object_get(f->client.doc, "responses")), 0);
    assert_int_equal(f->stats.batches[SL_BATCH_ANSWERED], 1);
}

static void test_batch_malformed(void **state)
{
    struct fx *f = *state;

    submit(f, "{\"requests\":[{\"path\":\"/api/1\"},{\"path\":\"https://x/\"}]}");
    assert_int_equal(f->client.answers, 1);
    assert_int_equal(f->client.status, 400);
    assert_false(f->client.close);
    assert_string_equal(evhttp_find_header(&f->client.fields, "X-Sluice-Error"), "bad_request");
    assert_string_equal(json_string_value(json_object_get(f->client.doc, "detail")),
                        "requests[1].path: must start with / (a path, not a URL)");
    /* Nothing was submitted, not even the well-formed first item. */
    assert_int_equal(f->q.n_live, 0);
    assert_int_equal(sl_queue_depth(&f->table.routes[0]->queue), 0);
    assert_int_equal(f->stats.batches[SL_BATCH_BAD_REQUEST], 1);
    assert_int_equal(f->stats.items[SL_OUTCOME_RELAYED], 0);
}

static void test_batch_draining(void **state)
{
    struct fx *f = *state;

    f->q.refuse_new = true;
    submit(f, "{\"requests\":[{\"path\":\"/api/1\"}]}");
    assert_int_equal(f->client.status, 503);
    assert_true(f->client.close);
    assert_string_equal(evhttp_find_header(&f->client.fields, "X-Sluice-Error"), "draining");
    assert_int_equal(f->stats.batches[SL_BATCH_DRAINING], 1);
}

/* The check a durable job makes before its 202: answers only a refusal, takes nothing. */
static void test_batch_check(void **state)
{
    struct fx *f = *state;
    const char *ok = "{\"requests\":[{\"path\":\"/api/1\"}]}";
    const char *bad = "{\"requests\":[{\"path\":\"/api/1\"},{\"path\":7}]}";
    struct sl_http_msg *m = sl_http_msg_new(SL_BATCH_PATH, strlen(SL_BATCH_PATH));

    m->method = "POST";
    m->body = evbuffer_new();
    evbuffer_add(m->body, ok, strlen(ok));
    assert_true(sl_batch_check(&f->q, &f->stats, &f->client.sink, m, "192.0.2.1"));
    assert_int_equal(f->client.answers, 0);
    assert_null(f->client.owner);
    assert_int_equal(f->q.n_live, 0);
    /* The message is still the caller's, whole. */
    assert_int_equal(sl_http_msg_body_len(m), strlen(ok));
    for (int o = 0; o < SL_BATCH_OUTCOME_COUNT; o++)
        assert_int_equal(f->stats.batches[o], 0);

    evbuffer_drain(m->body, evbuffer_get_length(m->body));
    evbuffer_add(m->body, bad, strlen(bad));
    assert_false(sl_batch_check(&f->q, &f->stats, &f->client.sink, m, "192.0.2.1"));
    assert_int_equal(f->client.answers, 1);
    assert_int_equal(f->client.status, 400);
    assert_string_equal(json_string_value(json_object_get(f->client.doc, "detail")),
                        "requests[1].path: must be a string");
    assert_int_equal(f->stats.batches[SL_BATCH_BAD_REQUEST], 1);
    assert_int_equal(f->q.n_live, 0);
    json_decref(f->client.doc);
    f->client.doc = NULL;

    f->q.refuse_new = true;
    assert_false(sl_batch_check(&f->q, &f->stats, &f->client.sink, m, "192.0.2.1"));
    assert_int_equal(f->client.status, 503);
    assert_int_equal(f->stats.batches[SL_BATCH_DRAINING], 1);
    sl_http_msg_free(m);
}

/* Parked items, in order, inheriting the batch's lane; a drain ends them, the batch answers. */
static void test_batch_parked_then_drained(void **state)
{
    struct fx *f = *state;
    struct sl_route *r = f->table.routes[0];

    submit(f, "{\"requests\":[{\"path\":\"/api/1\"},{\"path\":\"/nowhere\"},"
              "{\"path\":\"/api/2\",\"headers\":{\"X-Sluice-Priority\":\"high\"}}]}");
    assert_int_equal(f->client.answers, 0);
    assert_non_null(f->client.owner); /* the batch owns the client's sink */
    assert_int_equal(f->q.n_live, 2);
    assert_int_equal(sl_queue_lane_depth(&r->queue, SL_LANE_LOW), 1);
    assert_int_equal(sl_queue_lane_depth(&r->queue, SL_LANE_HIGH), 1);

    sl_requests_finish_all(&f->q, true, "drain time over");
    assert_int_equal(f->client.answers, 1);
    assert_int_equal(f->client.status, 200);
    assert_string_equal(resp_error(f, 0), "draining");
    assert_string_equal(resp_error(f, 1), "no_route");
    assert_string_equal(resp_error(f, 2), "draining");
    assert_int_equal(json_integer_value(json_object_get(response(f, 0), "status")), 503);
    assert_true(json_is_number(json_object_get(response(f, 0), "queue_ms")));
    assert_int_equal(f->stats.items[SL_OUTCOME_DRAINING], 2);
    assert_int_equal(r->stats.outcomes[SL_OUTCOME_DRAINING], 2);
}

/* The client leaves: parked items leave without a token, the batch goes at once. */
static void test_batch_client_gone(void **state)
{
    struct fx *f = *state;
    struct sl_route *r = f->table.routes[0];
    struct sl_sink_owner *owner;

    submit(f, "{\"requests\":[{\"path\":\"/api/1\"},{\"path\":\"/api/2\"},{\"path\":\"/x\"},"
              "{\"path\":\"/api/3\"}]}");
    assert_int_equal(sl_queue_depth(&r->queue), 3);
    owner = f->client.owner;
    assert_non_null(owner);
    owner->gone(owner);
    assert_int_equal(f->client.answers, 0);
    assert_int_equal(f->q.n_live, 0);
    assert_int_equal(sl_queue_depth(&r->queue), 0);
    assert_int_equal(f->totals.depth, 0);
    assert_int_equal(r->stats.dispatched, 0);
    assert_int_equal(r->stats.client_gone, 3);
    assert_int_equal(r->stats.outcomes[SL_OUTCOME_CLIENT_GONE], 3);
    assert_int_equal(f->stats.items[SL_OUTCOME_CLIENT_GONE], 3);
    assert_int_equal(f->stats.items[SL_OUTCOME_NO_ROUTE], 1);
    assert_int_equal(f->stats.batches[SL_BATCH_CLIENT_GONE], 1);
}

/* reject mode at the queue's cap: the items beyond it get their own 503 queue_full. */
static void test_batch_queue_cap(void **state)
{
    struct fx *f = *state;
    char json[2048];
    size_t n = (size_t)snprintf(json, sizeof(json), "{\"requests\":[");

    f->totals.max_depth = 4;
    for (int i = 0; i < 10; i++)
        n += (size_t)snprintf(json + n, sizeof(json) - n, "%s{\"path\":\"/api/%d\"}",
                              i > 0 ? "," : "", i);
    snprintf(json + n, sizeof(json) - n, "]}");
    submit(f, json);
    assert_int_equal(sl_queue_depth(&f->table.routes[0]->queue), 4);
    assert_int_equal(f->stats.items[SL_OUTCOME_QUEUE_FULL], 6);
    sl_requests_finish_all(&f->q, true, "drain");
    assert_int_equal(f->client.answers, 1);
    for (size_t i = 0; i < 10; i++)
        assert_string_equal(resp_error(f, i), i < 4 ? "draining" : "queue_full");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(response(f, 4), "headers"), "retry-after")),
                        "4");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_refusals),
        cmocka_unit_test(test_parse_header_limits),
        cmocka_unit_test(test_inherit),
        cmocka_unit_test(test_encode_item),
        cmocka_unit_test(test_endpoint),
        cmocka_unit_test_setup_teardown(test_batch_answered_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_draining, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_parked_then_drained, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_client_gone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_queue_cap, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
