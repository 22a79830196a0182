/*
 * test_answer.c - stored answers as JSON: UTF-8 detection, base64 both
 * ways (RFC 4648 vectors, blocks larger than the encoder's), JSON strings,
 * fields and bodies; every output is read back with jansson.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "answer.h"
#include "headers.h"
#include "sluice.h"

/* The buffer's bytes as a NUL-terminated string (caller frees); drains it. */
static char *take(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);

    assert_non_null(s);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    return s;
}

/* --- UTF-8 ---------------------------------------------------------------- */

static void test_utf8(void **state)
{
    static const struct {
        const char *s;
        size_t len;
        bool ok;
    } cases[] = {
        {"", 0, true},
        {"plain ASCII {\"json\": 1}\n", 25, true},
        {"\0nul", 4, true},                     /* U+0000 is a character */
        {"caf\xc3\xa9", 5, true},               /* e acute */
        {"\xe2\x82\xac", 3, true},              /* euro sign */
        {"\xf0\x9d\x84\x9e", 4, true},          /* U+1D11E, four bytes */
        {"\xf4\x8f\xbf\xbf", 4, true},          /* U+10FFFF, the last */
        {"\xef\xbb\xbf", 3, true},              /* BOM */
        {"\x80", 1, false},                     /* lone continuation */
        {"\xc3", 1, false},                     /* truncated */
        {"\xe2\x82", 2, false},                 /* truncated */
        {"caf\xe9", 4, false},                  /* ISO-8859-1 e acute */
        {"\xc0\x80", 2, false},                 /* overlong NUL */
        {"\xc1\xbf", 2, false},                 /* overlong */
        {"\xe0\x80\xaf", 3, false},             /* overlong '/' */
        {"\xf0\x80\x80\xaf", 4, false},         /* overlong '/' */
        {"\xed\xa0\x80", 3, false},             /* surrogate U+D800 */
        {"\xed\xbf\xbf", 3, false},             /* surrogate U+DFFF */
        {"\xf4\x90\x80\x80", 4, false},         /* U+110000 */
        {"\xf5\x80\x80\x80", 4, false},
        {"\xff", 1, false},
        {"\xe2\x28\xa1", 3, false},             /* bad continuation */
        {"ok\xc3\xa9\x80", 5, false},           /* valid then a stray byte */
    };

    (void)state;
    for (size_t i = 0; i < SL_ARRAY_LEN(cases); i++) {
        if (sl_answer_utf8_valid(cases[i].s, cases[i].len) != cases[i].ok)
            fail_msg("case %zu: expected %s", i, cases[i].ok ? "valid" : "invalid");
    }
}

/* --- base64 --------------------------------------------------------------- */

static const struct {
    const char *plain, *coded;
} rfc4648[] = {
    {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},         {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
};

static void test_base64_vectors(void **state)
{
    struct evbuffer *b = evbuffer_new();

    (void)state;
    for (size_t i = 0; i < SL_ARRAY_LEN(rfc4648); i++) {
        const char *p = rfc4648[i].plain, *c = rfc4648[i].coded;
        char *s;

        assert_int_equal(sl_answer_base64_encode(b, p, strlen(p)), SL_OK);
        s = take(b);
        assert_string_equal(s, c);
        free(s);
        assert_int_equal(sl_answer_base64_decode(b, c, strlen(c)), SL_OK);
        s = take(b);
        assert_string_equal(s, p);
        free(s);
        /* Without its padding it decodes the same. */
        assert_int_equal(sl_answer_base64_decode(b, c, strcspn(c, "=")), SL_OK);
        s = take(b);
        assert_string_equal(s, p);
        free(s);
        assert_int_equal(sl_answer_base64_max_decoded(strcspn(c, "=")), strlen(p));
    }
    evbuffer_free(b);
}

static void test_base64_refuses(void **state)
{
    static const char *const bad[] = {
        "Z",          /* 6 bits: no byte */
        "Zm9vY",      /* the same after whole groups */
        "Zg=",        /* padding to no multiple of 4 */
        "Zm9v=",
        "Zg===",      /* three pads */
        "Z===",
        "Zg==Zg==",   /* padding inside */
        "Zm 9v",      /* whitespace */
        "Zm9v\n",
        "Zm9-",       /* the URL-safe alphabet is not ours */
        "Zm9_",
        "Zm9v!",
        "====",
    };
    struct evbuffer *b = evbuffer_new();

    (void)state;
    for (size_t i = 0; i < SL_ARRAY_LEN(bad); i++) {
        if (sl_answer_base64_decode(b, bad[i], strlen(bad[i])) != SL_ERR)
            fail_msg("\"%s\" decoded", bad[i]);
        evbuffer_drain(b, evbuffer_get_length(b));
    }
    evbuffer_free(b);
}

/* Every byte value, over several of the encoder's and decoder's blocks. */
static void test_base64_round_trip(void **state)
{
    static unsigned char data[20000 + 2];
    struct evbuffer *b = evbuffer_new(), *back = evbuffer_new();

    (void)state;
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (unsigned char)(i * 7 + i / 256);
    for (size_t len = sizeof(data) - 2; len <= sizeof(data); len++) {
        size_t n;
        char *coded;

        assert_int_equal(sl_answer_base64_encode(b, data, len), SL_OK);
        n = evbuffer_get_length(b);
        assert_int_equal(n, (len + 2) / 3 * 4);
        coded = take(b);
        assert_int_equal(sl_answer_base64_decode(back, coded, n), SL_OK);
        assert_int_equal(evbuffer_get_length(back), len);
        assert_memory_equal(evbuffer_pullup(back, -1), data, len);
        evbuffer_drain(back, len);
        free(coded);
    }
    evbuffer_free(b);
    evbuffer_free(back);
}

/* --- JSON ----------------------------------------------------------------- */

static void test_json_string(void **state)
{
    struct evbuffer *b = evbuffer_new();
    char *s;
    json_t *j;

    (void)state;
    assert_int_equal(sl_answer_json_string(b, "a\"b\\c\n\r\t\x01\x7f/\xc3\xa9", 13), SL_OK);
    s = take(b);
    assert_string_equal(s, "\"a\\\"b\\\\c\\n\\r\\t\\u0001\x7f/\xc3\xa9\"");
    j = json_loads(s, JSON_DECODE_ANY, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(j), "a\"b\\c\n\r\t\x01\x7f/\xc3\xa9");
    json_decref(j);
    free(s);

    /* An embedded NUL survives. */
    assert_int_equal(sl_answer_json_string(b, "a\0b", 3), SL_OK);
    s = take(b);
    assert_string_equal(s, "\"a\\u0000b\"");
    free(s);

    /* Not UTF-8: each byte >= 0x80 is its ISO-8859-1 character. */
    assert_int_equal(sl_answer_json_string(b, "caf\xe9 \"x\"", 8), SL_OK);
    s = take(b);
    assert_string_equal(s, "\"caf\\u00e9 \\\"x\\\"\"");
    j = json_loads(s, JSON_DECODE_ANY, NULL);
    assert_string_equal(json_string_value(j), "caf\xc3\xa9 \"x\"");
    json_decref(j);
    free(s);
    evbuffer_free(b);
}

static void test_json_headers(void **state)
{
    struct evkeyvalq h;
    struct evbuffer *b = evbuffer_new();
    char *s;
    json_t *j;

    (void)state;
    TAILQ_INIT(&h);
    assert_int_equal(sl_answer_json_headers(b, &h), SL_OK);
    s = take(b);
    assert_string_equal(s, "{}");
    free(s);

    sl_headers_add(&h, "Set-Cookie", "a=1");
    sl_headers_add(&h, "Content-Type", "text/plain");
    sl_headers_add(&h, "X-Name", "caf\xe9");
    sl_headers_add(&h, "set-cookie", "b=2");
    sl_headers_add(&h, "SET-COOKIE", "c=3");
    assert_int_equal(sl_answer_json_headers(b, &h), SL_OK);
    s = take(b);
    assert_string_equal(s, "{\"set-cookie\":[\"a=1\",\"b=2\",\"c=3\"],"
                           "\"content-type\":\"text/plain\",\"x-name\":\"caf\\u00e9\"}");
    j = json_loads(s, 0, NULL);
    assert_non_null(j);
    json_decref(j);
    free(s);
    sl_headers_clear(&h);
    evbuffer_free(b);
}

static void test_json_body(void **state)
{
    struct evbuffer *b = evbuffer_new(), *body = evbuffer_new();
    static const unsigned char bin[] = {0x00, 0x01, 0xff, 0xfe, 'a'};
    char *s;

    (void)state;
    evbuffer_add(body, "{\"k\":\"v\xc3\xa9\"}\n", 12);
    assert_int_equal(sl_answer_json_body(b, body), SL_OK);
    assert_int_equal(evbuffer_get_length(body), 0); /* drained */
    s = take(b);
    assert_string_equal(s, "\"body\":\"{\\\"k\\\":\\\"v\xc3\xa9\\\"}\\n\"");
    free(s);

    evbuffer_add(body, bin, sizeof(bin));
    assert_int_equal(sl_answer_json_body(b, body), SL_OK);
    assert_int_equal(evbuffer_get_length(body), 0);
    s = take(b);
    assert_string_equal(s, "\"body_base64\":\"AAH//mE=\"");
    free(s);

    assert_int_equal(sl_answer_json_body(b, body), SL_OK);
    s = take(b);
    assert_string_equal(s, "\"body\":\"\"");
    free(s);
    assert_int_equal(sl_answer_json_body(b, NULL), SL_OK);
    s = take(b);
    assert_string_equal(s, "\"body\":\"\"");
    free(s);
    evbuffer_free(body);
    evbuffer_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_base64_vectors),
        cmocka_unit_test(test_base64_refuses),
        cmocka_unit_test(test_base64_round_trip),
        cmocka_unit_test(test_json_string),
        cmocka_unit_test(test_json_headers),
        cmocka_unit_test(test_json_body),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
