/*
 * test_jobcodec.c - job ids, Prefer: respond-async, base64, the job JSON
 * and the header list a durable job carries.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <event2/http.h>
#include <jansson.h>

#include "headers.h"
#include "jobcodec.h"
#include "sluice.h"

static void test_id(void **state)
{
    unsigned char raw[SL_JOB_ID_RAW];
    char id[SL_JOB_ID_LEN + 1];

    (void)state;
    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (unsigned char)(i * 17 + 0x0f);
    sl_job_id_format(raw, id);
    assert_string_equal(id, "0f2031425364758697a8b9cadbecfd0e");
    assert_true(sl_job_id_valid(id, strlen(id)));
    /* Only the form handed out: 32 lowercase hex digits. */
    assert_false(sl_job_id_valid(id, 31));
    assert_false(sl_job_id_valid("0F2031425364758697A8B9CADBECFD0E", 32));
    assert_false(sl_job_id_valid("0f20314253647586978a9bacbdcedffg", 32));
    assert_false(sl_job_id_valid("0f20314253647586978a9bacbdcedff0a", 33));
    assert_false(sl_job_id_valid("../../../../../../../../../etc/p", 32));
    assert_false(sl_job_id_valid("", 0));
    assert_false(sl_job_id_valid(NULL, 32));
}

static void with_prefer(struct evkeyvalq *h, const char *v)
{
    TAILQ_INIT(h);
    assert_int_equal(sl_headers_add(h, "Accept", "*/*"), SL_OK);
    if (v != NULL)
        assert_int_equal(sl_headers_add(h, "prefer", v), SL_OK);
}

static void test_prefer(void **state)
{
    static const char *const yes[] = {
        "respond-async", "Respond-Async", " respond-async ", "wait=10, respond-async",
        "respond-async; foo=bar", "handling=lenient,respond-async,return=minimal",
    };
    static const char *const no[] = {
        "", "respond-asyncx", "respond-async=1", "return=respond-async", "wait=5",
        "xrespond-async",
    };
    struct evkeyvalq h;

    (void)state;
    for (size_t i = 0; i < SL_ARRAY_LEN(yes); i++) {
        with_prefer(&h, yes[i]);
        assert_true(sl_job_prefers_async(&h));
        sl_headers_clear(&h);
    }
    for (size_t i = 0; i < SL_ARRAY_LEN(no); i++) {
        with_prefer(&h, no[i]);
        assert_false(sl_job_prefers_async(&h));
        sl_headers_clear(&h);
    }
    with_prefer(&h, NULL);
    assert_false(sl_job_prefers_async(&h));
    sl_headers_clear(&h);
}

static void test_prefer_strip(void **state)
{
    struct evkeyvalq h;

    (void)state;
    with_prefer(&h, "respond-async");
    assert_int_equal(sl_job_prefer_strip(&h), SL_OK);
    assert_null(evhttp_find_header(&h, "Prefer"));
    assert_string_equal(evhttp_find_header(&h, "Accept"), "*/*");
    sl_headers_clear(&h);

    with_prefer(&h, "wait=10, respond-async;x=1 ,return=minimal");
    assert_int_equal(sl_job_prefer_strip(&h), SL_OK);
    assert_string_equal(evhttp_find_header(&h, "Prefer"), "wait=10, return=minimal");
    sl_headers_clear(&h);

    with_prefer(&h, "return=minimal");
    assert_int_equal(sl_job_prefer_strip(&h), SL_OK);
    assert_string_equal(evhttp_find_header(&h, "Prefer"), "return=minimal");
    sl_headers_clear(&h);
}

static void test_time(void **state)
{
    char out[32];

    (void)state;
    sl_job_time_format(INT64_C(1795306321345678), out);
    assert_string_equal(out, "2026-11-22T00:12:01.345Z");
    sl_job_time_format(0, out);
    assert_string_equal(out, "");
    sl_job_time_format(1, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    sl_job_time_format(INT64_C(951782400999999), out); /* a leap day */
    assert_string_equal(out, "2000-02-29T00:00:00.999Z");
    /* The same as gmtime_r and strftime, over three centuries (leap years, month ends). */
    for (int64_t secs = 1; secs < INT64_C(10000000000); secs += INT64_C(86399) * 37 + 7) {
        char want[40];
        time_t t = (time_t)secs;
        struct tm tm;

        assert_non_null(gmtime_r(&t, &tm));
        assert_int_not_equal(strftime(want, sizeof(want), "%Y-%m-%dT%H:%M:%S.123Z", &tm), 0);
        sl_job_time_format(secs * 1000000 + 123456, out);
        assert_string_equal(out, want);
    }
}

static json_t *parse(char *text)
{
    json_t *j = json_loads(text, 0, NULL);

    assert_non_null(j);
    free(text);
    return j;
}

static void test_json_queued(void **state)
{
    struct sl_job_view v = {.id = "0123456789abcdef0123456789abcdef", .state = SL_JOB_QUEUED,
                            .queued_us = INT64_C(1795306321345678)};
    json_t *j = parse(sl_job_json(&v));

    (void)state;
    assert_string_equal(json_string_value(json_object_get(j, "id")), v.id);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "queued");
    assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 0);
    assert_true(json_is_null(json_object_get(j, "route")));
    assert_string_equal(json_string_value(json_object_get(j, "queued_at")),
                        "2026-11-22T00:12:01.345Z");
    assert_true(json_is_null(json_object_get(j, "started_at")));
    assert_true(json_is_null(json_object_get(j, "finished_at")));
    /* Nothing of an answer before there is one. */
    assert_null(json_object_get(j, "status"));
    assert_null(json_object_get(j, "headers"));
    assert_null(json_object_get(j, "body"));
    json_decref(j);
}

static void test_json_done(void **state)
{
    struct evkeyvalq h;
    struct sl_job_view v = {.id = "0123456789abcdef0123456789abcdef", .route = "api",
                            .state = SL_JOB_DONE, .attempts = 2, .status = 201,
                            .queued_us = 1, .started_us = 2000, .finished_us = 3000000};
    json_t *j, *hj;
    const unsigned char bin[] = {'o', 'k', 0xff, 0x00};

    (void)state;
    TAILQ_INIT(&h);
    assert_int_equal(sl_headers_add(&h, "Content-Type", "text/plain"), SL_OK);
    assert_int_equal(sl_headers_add(&h, "Set-Cookie", "a=1"), SL_OK);
    assert_int_equal(sl_headers_add(&h, "Set-Cookie", "b=2"), SL_OK);
    v.headers = &h;
    v.body = (const unsigned char *)"caf\xc3\xa9 \"quoted\"\n";
    v.body_len = strlen((const char *)v.body);
    j = parse(sl_job_json(&v));
    assert_string_equal(json_string_value(json_object_get(j, "state")), "done");
    assert_string_equal(json_string_value(json_object_get(j, "route")), "api");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 201);
    assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 2);
    /* The batch items' form (answer.h): lowercased names, repeats as an array. */
    hj = json_object_get(j, "headers");
    assert_string_equal(json_string_value(json_object_get(hj, "content-type")), "text/plain");
    assert_int_equal(json_array_size(json_object_get(hj, "set-cookie")), 2);
    assert_string_equal(json_string_value(json_array_get(json_object_get(hj, "set-cookie"), 1)),
                        "b=2");
    assert_string_equal(json_string_value(json_object_get(j, "body")), (const char *)v.body);
    assert_null(json_object_get(j, "body_base64"));
    json_decref(j);

    /* Not UTF-8: base64, and never both. */
    v.body = bin;
    v.body_len = sizeof(bin);
    v.state = SL_JOB_FAILED;
    j = parse(sl_job_json(&v));
    assert_string_equal(json_string_value(json_object_get(j, "state")), "failed");
    assert_null(json_object_get(j, "body"));
    assert_string_equal(json_string_value(json_object_get(j, "body_base64")), "b2v/AA==");
    json_decref(j);

    /* An empty body is an empty string. */
    v.body = NULL;
    v.body_len = 0;
    j = parse(sl_job_json(&v));
    assert_string_equal(json_string_value(json_object_get(j, "body")), "");
    json_decref(j);
    sl_headers_clear(&h);
}

/* Streams: one per route, one for every batch, and no route can take the batches' name. */
static void test_stream_keys(void **state)
{
    char key[32];

    (void)state;
    assert_int_equal(sl_job_stream_key(key, sizeof(key), "t:", "api", "jobs"), SL_OK);
    assert_string_equal(key, "t:{api}:jobs");
    assert_int_equal(sl_job_stream_key(key, sizeof(key), "t:", "batch", "jobs"), SL_OK);
    assert_string_equal(key, "t:{batch}:jobs");
    assert_int_equal(sl_job_stream_key(key, sizeof(key), "t:", SL_JOB_BATCH_STREAM, "dead"),
                     SL_OK);
    assert_string_equal(key, "t:{@batch}:dead");
    assert_int_equal(sl_job_stream_key(key, 12, "t:", "api", "jobs"), SL_ERR);
    assert_string_equal(key, "");
}

/* A batch job's result: the gathered answer as text, no route. */
static void test_json_batch(void **state)
{
    const char *answer = "{\"responses\":[{\"status\":200,\"body\":\"ok\"}]}\n";
    struct evkeyvalq h;
    struct sl_job_view v = {.id = "0123456789abcdef0123456789abcdef", .state = SL_JOB_DONE,
                            .attempts = 1, .status = 200, .headers = &h,
                            .body = (const unsigned char *)answer, .body_len = strlen(answer)};
    json_t *j, *inner;

    (void)state;
    TAILQ_INIT(&h);
    assert_int_equal(sl_headers_add(&h, "Content-Type", "application/json"), SL_OK);
    j = parse(sl_job_json(&v));
    assert_true(json_is_null(json_object_get(j, "route")));
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
    inner = json_loads(json_string_value(json_object_get(j, "body")), 0, NULL);
    assert_non_null(inner);
    assert_int_equal(json_array_size(json_object_get(inner, "responses")), 1);
    json_decref(inner);
    json_decref(j);
    sl_headers_clear(&h);
}

static void test_headers_roundtrip(void **state)
{
    struct evkeyvalq h, back;
    const struct evkeyval *a, *b;
    char *text;

    (void)state;
    TAILQ_INIT(&h);
    TAILQ_INIT(&back);
    assert_int_equal(sl_headers_add(&h, "X-A", "1"), SL_OK);
    assert_int_equal(sl_headers_add(&h, "x-a", "two \"quoted\""), SL_OK);
    assert_int_equal(sl_headers_add(&h, "Content-Type", ""), SL_OK);
    text = sl_job_headers_encode(&h);
    assert_non_null(text);
    assert_string_equal(text, "X-A:1\r\nx-a:two \"quoted\"\r\nContent-Type:\r\n");
    assert_int_equal(sl_job_headers_decode(text, strlen(text), &back), SL_OK);
    for (a = TAILQ_FIRST(&h), b = TAILQ_FIRST(&back); a != NULL;
         a = TAILQ_NEXT(a, next), b = TAILQ_NEXT(b, next)) {
        assert_non_null(b);
        assert_string_equal(a->key, b->key);
        assert_string_equal(a->value, b->value);
    }
    assert_null(b);
    free(text);
    sl_headers_clear(&back);
    /* Values that are not UTF-8, or start with a space, come back byte for byte. */
    sl_headers_clear(&h);
    assert_int_equal(sl_headers_add(&h, "X-Latin", " caf\xe9:x"), SL_OK);
    text = sl_job_headers_encode(&h);
    assert_non_null(text);
    assert_int_equal(sl_job_headers_decode(text, strlen(text), &back), SL_OK);
    assert_string_equal(TAILQ_FIRST(&back)->key, "X-Latin");
    assert_string_equal(TAILQ_FIRST(&back)->value, " caf\xe9:x");
    free(text);
    sl_headers_clear(&back);
    /* No fields: empty text. */
    sl_headers_clear(&h);
    text = sl_job_headers_encode(&h);
    assert_string_equal(text, "");
    assert_int_equal(sl_job_headers_decode(text, 0, &back), SL_OK);
    assert_null(TAILQ_FIRST(&back));
    free(text);
    /* A name that would not come back is refused. */
    assert_int_equal(sl_headers_add(&h, "a:b", "1"), SL_OK);
    assert_null(sl_job_headers_encode(&h));
    /* Malformed text. */
    assert_int_equal(sl_job_headers_decode("a:1", 3, &back), SL_ERR);
    assert_int_equal(sl_job_headers_decode("a:1\r", 4, &back), SL_ERR);
    assert_int_equal(sl_job_headers_decode(":1\r\n", 5, &back), SL_ERR);
    assert_int_equal(sl_job_headers_decode("a1\r\n", 5, &back), SL_ERR);
    assert_int_equal(sl_job_headers_decode("a:1\nb:2\r\n", 10, &back), SL_ERR);
    assert_int_equal(sl_job_headers_decode("a:\0\r\n", 5, &back), SL_ERR);
    /* Many fields (past the decoder's first array). */
    for (int i = 0; i < 100; i++)
        assert_int_equal(sl_headers_add(&back, "X-N", "v"), SL_OK);
    text = sl_job_headers_encode(&back);
    sl_headers_clear(&back);
    assert_int_equal(sl_job_headers_decode(text, strlen(text), &back), SL_OK);
    {
        int n = 0;

        for (b = TAILQ_FIRST(&back); b != NULL; b = TAILQ_NEXT(b, next))
            n++;
        assert_int_equal(n, 100);
    }
    free(text);
    sl_headers_clear(&back);
    /* The JSON form of earlier versions is still read. */
    assert_int_equal(sl_job_headers_decode("[[\"X-A\",\"1\"],[\"B\",\"\"]]", 22, &back),
                     SL_OK);
    assert_string_equal(TAILQ_FIRST(&back)->key, "X-A");
    assert_string_equal(TAILQ_LAST(&back, evkeyvalq)->key, "B");
    sl_headers_clear(&back);
    assert_int_equal(sl_job_headers_decode("{}", 2, &back), SL_ERR);
    assert_int_equal(sl_job_headers_decode("[[\"a\"]]", 7, &back), SL_ERR);
    sl_headers_clear(&back);
    assert_int_equal(sl_job_headers_decode("[[\"a\",1]]", 9, &back), SL_ERR);
    sl_headers_clear(&back);
    assert_int_equal(sl_job_headers_decode("[[\"a\\r\",\"b\"]]", 13, &back), SL_ERR);
    sl_headers_clear(&back);
    sl_headers_clear(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id),
        cmocka_unit_test(test_prefer),
        cmocka_unit_test(test_prefer_strip),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_json_queued),
        cmocka_unit_test(test_json_done),
        cmocka_unit_test(test_headers_roundtrip),
        cmocka_unit_test(test_stream_keys),
        cmocka_unit_test(test_json_batch),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
