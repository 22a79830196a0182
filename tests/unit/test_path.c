/* test_path.c - request-target normalisation: cases, route bypasses, properties. */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "path.h"
#include "sluice.h"

#define MAX_TARGET 512

#define LITERAL_DOT "dot segments are not allowed in the path"
#define ENCODED_DOT "encoded dot segment in the path"
#define BAD_PCT "bad percent-encoding"
#define NOT_ORIGIN "not an origin-form target"
#define FRAGMENT "fragment in the target"
#define CONTROL "control character in the target"
#define ENC_NUL "encoded NUL in the target"
#define ENC_CONTROL "encoded control character in the path"
#define ENC_SLASH "encoded slash in a path segment"
#define ENC_BACKSLASH "encoded backslash in a path segment"
#define BACKSLASH "backslash in the path"
#define SEMICOLON "semicolon in the path"
#define ENC_SEMICOLON "encoded semicolon in the path"
#define DOUBLE "double percent-encoding in the path"
#define NON_ASCII "non-ASCII byte in the path"
#define TOO_LONG "request target too long"
#define SPACE "space in the target"

/* One case: `want` is the output, or NULL when refused with `detail`. */
struct path_case {
    const char *in;
    const char *want;
    const char *detail;
};

/* Normalise the NUL-terminated `in`; returns the status, output in out. */
static int norm(const char *in, char *out, size_t size, const char **detail)
{
    *detail = NULL;
    return sl_path_normalize(in, strlen(in), out, size, detail);
}

static void run_cases(const struct path_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct path_case *c = &cases[i];
        char out[MAX_TARGET];
        const char *detail;
        int rc = norm(c->in, out, sizeof(out), &detail);

        if (c->want != NULL) {
            if (rc != SL_OK)
                fail_msg("\"%s\" refused: %s", c->in, detail);
            if (strcmp(out, c->want) != 0)
                fail_msg("\"%s\" gave \"%s\", want \"%s\"", c->in, out, c->want);
        } else {
            if (rc != SL_ERR)
                fail_msg("\"%s\" accepted as \"%s\", want refusal: %s", c->in, out, c->detail);
            if (detail == NULL || strcmp(detail, c->detail) != 0)
                fail_msg("\"%s\" refused with \"%s\", want \"%s\"", c->in,
                         detail != NULL ? detail : "(null)", c->detail);
        }
    }
}

/* The route table of issue 16: "/api/reports" at 1/m beside "/" at 100/s. */
static bool reaches_reports(const char *path)
{
    return strncmp(path, "/api/reports", strlen("/api/reports")) == 0;
}

/* The three targets that reached the reports upstream through "/", and their kin. */
static void test_route_bypasses(void **state)
{
    static const struct path_case cases[] = {
        /* encoded dot segments: refused, whatever the case of the hex digits */
        {"/api/x/%2e%2e/reports", NULL, ENCODED_DOT},
        {"/api/x/%2E%2E/reports", NULL, ENCODED_DOT},
        {"/api/x/%2e%2E/reports", NULL, ENCODED_DOT},
        {"/api/x/%2E%2e/reports", NULL, ENCODED_DOT},
        {"/api/x/.%2e/reports", NULL, ENCODED_DOT},
        {"/api/x/%2e./reports", NULL, ENCODED_DOT},
        {"/api/x/%2E./reports", NULL, ENCODED_DOT},
        {"/api/x/../reports", NULL, LITERAL_DOT},
        {"/api/x/%2e/../reports", NULL, ENCODED_DOT},
        {"/api/x/%252e%252e/reports", NULL, DOUBLE},
        {"/api/x/..;/reports", NULL, SEMICOLON},
        {"/api/x/%2e%2e%2freports", NULL, ENC_SLASH},
        {"/api/x/..%5creports", NULL, ENC_BACKSLASH},
        {"/api/x/..\\reports", NULL, BACKSLASH},
        /* encoded unreserved characters: decoded, so the route sees the real path */
        {"/api/%72eports", "/api/reports", NULL},
        {"/api/%72%65%70%6f%72%74%73", "/api/reports", NULL},
        {"/api/%72%65%70%6F%72%74%73", "/api/reports", NULL},
        {"/%61%70%69/reports", "/api/reports", NULL},
        {"/%61%50%69/reports", "/aPi/reports", NULL},
        {"%2fapi/reports", NULL, NOT_ORIGIN},
        /* empty segments: collapsed */
        {"//api/reports", "/api/reports", NULL},
        {"///api//reports", "/api/reports", NULL},
        {"/api//reports", "/api/reports", NULL},
        {"//api/%72eports?x=1", "/api/reports?x=1", NULL},
        {"//%61pi//%72%45ports", "/api/rEports", NULL},
        /* a path parameter would be stripped by a servlet container */
        {"/api;/reports", NULL, SEMICOLON},
        {"/api%3b/reports", NULL, ENC_SEMICOLON},
        {"/api%3B/reports", NULL, ENC_SEMICOLON},
    };

    static const char *const issue[] = {"/api/x/%2e%2e/reports", "/api/%72eports",
                                        "//api/reports"};

    (void)state;
    run_cases(cases, SL_ARRAY_LEN(cases));
    /* Each of the issue's targets is refused, or now matches the reports route. */
    for (size_t i = 0; i < SL_ARRAY_LEN(issue); i++) {
        char out[MAX_TARGET];
        const char *detail;

        if (norm(issue[i], out, sizeof(out), &detail) == SL_OK)
            assert_true(reaches_reports(out));
    }
}

static void test_accepted(void **state)
{
    static const struct path_case cases[] = {
        {"/", "/", NULL},
        {"/a/b?q", "/a/b?q", NULL},
        {"/a/", "/a/", NULL},
        {"/a//", "/a/", NULL},
        {"//", "/", NULL},
        {"/%7e%7Euser", "/~~user", NULL},
        {"/%41%5a%61%7a%30%39%2d%2e%5f%7e", "/AZaz09-._~", NULL},
        {"/caf%c3%a9", "/caf%C3%A9", NULL},
        {"/a%20b", "/a%20b", NULL},
        {"/a%2bb", "/a%2Bb", NULL},
        {"/a%3a%3F%23%5b", "/a%3A%3F%23%5B", NULL},
        {"/100%25", "/100%25", NULL},
        {"/100%25x", "/100%25x", NULL},
        {"/100%25%zz", NULL, BAD_PCT},
        {"/%25g1", "/%25g1", NULL},
        {"/%25%2541", NULL, DOUBLE},
        {"/...", "/...", NULL},
        {"/a./.b/..c/c../.../.a.", "/a./.b/..c/c../.../.a.", NULL},
        {"/a.%2e", "/a..", NULL},
        {"/%2e%2e%2e", "/...", NULL},
        {"/%2ea", "/.a", NULL},
        {"/a+b|c{d}^e`f\"g<h>i", "/a+b|c{d}^e`f\"g<h>i", NULL},
        {"/a:b@c!$&'()*,=", "/a:b@c!$&'()*,=", NULL},
        {"/?", "/?", NULL},
        {"/a?", "/a?", NULL},
        {"/a?b=%2f&c=%41%7e", "/a?b=%2F&c=A~", NULL},
        {"/a?x=/../y//z/./", "/a?x=/../y//z/./", NULL},
        {"/a?x=;\\", "/a?x=;\\", NULL},
        {"/a?x=%2e%2E", "/a?x=..", NULL},
        {"/a?q=%252e", "/a?q=%252e", NULL},
        {"/a?q=%0a%0D%7f", "/a?q=%0A%0D%7F", NULL},
        {"/a?q=caf\xc3\xa9", "/a?q=caf\xc3\xa9", NULL},
        {"/a?b?c", "/a?b?c", NULL},
        {"/a?q=%5c%5C", "/a?q=%5C%5C", NULL},
        {"/a?q=%3b", "/a?q=%3B", NULL},
        {"/a?q=a+b%2Bc", "/a?q=a+b%2Bc", NULL},
        {"/a?%252e%252e/", "/a?%252e%252e/", NULL},
        {"//a//?//", "/a/?//", NULL},
        {"/%80%ff", "/%80%FF", NULL},
    };

    (void)state;
    run_cases(cases, SL_ARRAY_LEN(cases));
}

static void test_refused(void **state)
{
    static const struct path_case cases[] = {
        {"", NULL, NOT_ORIGIN},
        {"*", NULL, NOT_ORIGIN},
        {"http://h/a", NULL, NOT_ORIGIN},
        {"a/b", NULL, NOT_ORIGIN},
        {"?a", NULL, NOT_ORIGIN},
        {"%2fa", NULL, NOT_ORIGIN},
        {"/a#f", NULL, FRAGMENT},
        {"/#", NULL, FRAGMENT},
        {"/a?b#f", NULL, FRAGMENT},
        {"/a%23b", "/a%23b", NULL},
        {"/a\x01", NULL, CONTROL},
        {"/a\x1f", NULL, CONTROL},
        {"/a\x7f", NULL, CONTROL},
        {"/a b", NULL, SPACE},
        {"/a?b c", NULL, SPACE},
        {"/a\t", NULL, CONTROL},
        {"/a?\x1b", NULL, CONTROL},
        {"/a?b\r\n", NULL, CONTROL},
        {"/a%00", NULL, ENC_NUL},
        {"/a?b=%00", NULL, ENC_NUL},
        {"/%G1", NULL, BAD_PCT},
        {"/%1G", NULL, BAD_PCT},
        {"/%", NULL, BAD_PCT},
        {"/%4", NULL, BAD_PCT},
        {"/a%", NULL, BAD_PCT},
        {"/%%41", NULL, BAD_PCT},
        {"/%2%35", NULL, BAD_PCT},
        {"/% 1", NULL, BAD_PCT},
        {"/%+1", NULL, BAD_PCT},
        {"/a?%", NULL, BAD_PCT},
        {"/a?%zz", NULL, BAD_PCT},
        {"/a?x=100%", NULL, BAD_PCT},
        {"/a%2fb", NULL, ENC_SLASH},
        {"/a%2Fb", NULL, ENC_SLASH},
        {"/%2F", NULL, ENC_SLASH},
        {"/a%5cb", NULL, ENC_BACKSLASH},
        {"/a%5C", NULL, ENC_BACKSLASH},
        {"/a\\b", NULL, BACKSLASH},
        {"\\a", NULL, NOT_ORIGIN},
        {"/\\a", NULL, BACKSLASH},
        {"/a;b", NULL, SEMICOLON},
        {"/a;jsessionid=1", NULL, SEMICOLON},
        {"/a%3bb", NULL, ENC_SEMICOLON},
        {"/a%0a", NULL, ENC_CONTROL},
        {"/a%0D%0A", NULL, ENC_CONTROL},
        {"/a%7f", NULL, ENC_CONTROL},
        {"/a%1F", NULL, ENC_CONTROL},
        {"/.", NULL, LITERAL_DOT},
        {"/..", NULL, LITERAL_DOT},
        {"/./", NULL, LITERAL_DOT},
        {"/../", NULL, LITERAL_DOT},
        {"/a/./b", NULL, LITERAL_DOT},
        {"/a/../b", NULL, LITERAL_DOT},
        {"/a/..", NULL, LITERAL_DOT},
        {"/a/.?x", NULL, LITERAL_DOT},
        {"/a/..?x", NULL, LITERAL_DOT},
        {"/a//../b", NULL, LITERAL_DOT},
        {"/nothing/../here", NULL, LITERAL_DOT},
        {"/%2e", NULL, ENCODED_DOT},
        {"/%2E%2e/", NULL, ENCODED_DOT},
        {"/.%2e", NULL, ENCODED_DOT},
        {"/%2e.", NULL, ENCODED_DOT},
        {"/a/%2e/b", NULL, ENCODED_DOT},
        {"/a/%2e?x", NULL, ENCODED_DOT},
        {"/%252e%252e/x", NULL, DOUBLE},
        {"/%2541", NULL, DOUBLE},
        {"/%25aF", NULL, DOUBLE},
        {"/a%25%34%31", NULL, DOUBLE},
        {"/x/%25%32%65", NULL, DOUBLE},
        {"/caf\xc3\xa9", NULL, NON_ASCII},
        {"/\x80", NULL, NON_ASCII},
        {"/\xff", NULL, NON_ASCII},
    };

    (void)state;
    run_cases(cases, SL_ARRAY_LEN(cases));
}

/* Only the first len bytes are read: the input needs no NUL. */
static void test_length_bounds_input(void **state)
{
    const char raw[] = {'/', 'a', '/', '.', '.', '/', 'b'};
    char out[16];
    const char *detail = NULL;

    (void)state;
    assert_int_equal(sl_path_normalize(raw, 2, out, sizeof(out), &detail), SL_OK);
    assert_string_equal(out, "/a");
    assert_int_equal(sl_path_normalize(raw, 5, out, sizeof(out), &detail), SL_ERR);
    assert_string_equal(detail, LITERAL_DOT);
    /* A NUL inside the given length is a control character, not an end. */
    assert_int_equal(sl_path_normalize("/a\0b", 4, out, sizeof(out), &detail), SL_ERR);
    assert_string_equal(detail, CONTROL);
    /* An escape cut by the length is incomplete. */
    assert_int_equal(sl_path_normalize("/%41", 3, out, sizeof(out), &detail), SL_ERR);
    assert_string_equal(detail, BAD_PCT);
}

static void test_output_size(void **state)
{
    const char *in = "/a%2fb";
    const char *ok = "//a/%41?%7e";
    char out[16];
    const char *detail = NULL;

    (void)state;
    /* len + 1 always suffices, even when nothing shrinks. */
    assert_int_equal(sl_path_normalize("/abc", 4, out, 5, &detail), SL_OK);
    assert_string_equal(out, "/abc");
    assert_int_equal(sl_path_normalize("/abc", 4, out, 4, &detail), SL_ERR);
    assert_string_equal(detail, TOO_LONG);
    /* What matters is the output: "/a/A?~" and its NUL fit in 7. */
    assert_int_equal(sl_path_normalize(ok, strlen(ok), out, 7, &detail), SL_OK);
    assert_string_equal(out, "/a/A?~");
    assert_int_equal(sl_path_normalize(ok, strlen(ok), out, 6, &detail), SL_ERR);
    assert_string_equal(detail, TOO_LONG);
    assert_int_equal(sl_path_normalize(in, strlen(in), out, 0, &detail), SL_ERR);
    assert_string_equal(detail, TOO_LONG);
    assert_int_equal(sl_path_normalize(in, strlen(in), NULL, 16, &detail), SL_ERR);
    assert_int_equal(sl_path_normalize(NULL, 0, out, sizeof(out), &detail), SL_ERR);
    assert_string_equal(detail, NOT_ORIGIN);
    /* detail may be NULL. */
    assert_int_equal(sl_path_normalize(in, strlen(in), out, sizeof(out), NULL), SL_ERR);
}

/* In place, as the request's own target buffer will be normalised. */
static void test_in_place(void **state)
{
    static const char *const inputs[] = {
        "//api/%72%65ports//x?%7e=%2f%41", "/a%c3%a9/%7E", "///", "/abc", "/a?b", "/%41%42%43/",
    };

    (void)state;
    for (size_t i = 0; i < SL_ARRAY_LEN(inputs); i++) {
        char buf[MAX_TARGET], want[MAX_TARGET];
        size_t len = strlen(inputs[i]);
        const char *d1 = NULL, *d2 = NULL;

        memcpy(buf, inputs[i], len + 1);
        assert_int_equal(sl_path_normalize(inputs[i], len, want, sizeof(want), &d1), SL_OK);
        assert_int_equal(sl_path_normalize(buf, len, buf, len + 1, &d2), SL_OK);
        assert_string_equal(buf, want);
    }
}

/* --- properties over generated targets ---------------------------------- */

#define N_RANDOM 100000
#define MAX_TOKENS 14

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/*
 * Pieces of targets: the characters and escapes the rules are about, with
 * plain letters repeated so that a fair share of targets is accepted.
 */
static const char *const TOKENS[] = {
    "/", "/", "/", "//", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "\\", ";",
    "%3b", "a", "a", "b", "b", "A", "z", "0", "~", "-", "_", "%41", "%61", "%7e", "%7E",
    "%2d", "%c3%a9", "%C3", "%20", "%2b", "%25", "%252e", "%2541", "%", "%4", "%G1",
    "?", "?", "=", "&", "+", "#", "%00", "%0a", "\x01", "\x80", "%3f", "%23",
};

/* A random target of up to MAX_TOKENS tokens; usually starts with '/'. */
static size_t random_target(uint64_t *rng, char *buf, size_t size)
{
    size_t n = 1 + xorshift64(rng) % MAX_TOKENS, len = 0;

    if (xorshift64(rng) % 8 != 0)
        buf[len++] = '/';
    for (size_t i = 0; i < n; i++) {
        const char *t = TOKENS[xorshift64(rng) % SL_ARRAY_LEN(TOKENS)];
        size_t tl = strlen(t);

        if (len + tl >= size)
            break;
        memcpy(buf + len, t, tl);
        len += tl;
    }
    buf[len] = '\0';
    return len;
}

static bool is_hex_upper(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

static int hex_upper(char c)
{
    return c <= '9' ? c - '0' : c - 'A' + 10;
}

static bool is_unreserved(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

/*
 * The properties of an accepted output `o` of an input of `in_len` bytes;
 * returns NULL or the name of the one violated.
 */
static const char *violated(const char *o, size_t in_len)
{
    size_t len = strlen(o), plen = strcspn(o, "?");
    size_t seg = 1, segments = 1, upstream_segments = 1;
    char decoded[MAX_TARGET];
    size_t dl = 0;

    if (o[0] != '/')
        return "output does not start with '/'";
    if (len > in_len)
        return "output longer than input";
    if (strchr(o, '#') != NULL)
        return "'#' in the output";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)o[i];
        int v;

        if (c < 0x20 || c == 0x7f)
            return "control character in the output";
        if (c != '%')
            continue;
        if (i + 2 >= len || !is_hex_upper(o[i + 1]) || !is_hex_upper(o[i + 2]))
            return "escape not %HH with uppercase hex";
        v = hex_upper(o[i + 1]) * 16 + hex_upper(o[i + 2]);
        if (is_unreserved(v))
            return "encoded unreserved character in the output";
        if (v == 0)
            return "%00 in the output";
        if (i < plen && (v == '/' || v == '\\' || v == ';' || v < 0x20 || v == 0x7f))
            return "encoded / \\ ; or control in the path";
        if (i < plen && v == '%' && i + 4 < plen && isxdigit((unsigned char)o[i + 3]) &&
            isxdigit((unsigned char)o[i + 4]))
            return "double encoding in the path";
        i += 2;
    }
    /* The path as we see it: segments, none empty inside, none a dot segment. */
    for (size_t i = 1; i <= plen; i++) {
        if (i < plen && o[i] != '/')
            continue;
        if (i < plen && i == seg)
            return "empty segment in the path";
        if ((i - seg == 1 && o[seg] == '.') ||
            (i - seg == 2 && o[seg] == '.' && o[seg + 1] == '.'))
            return "dot segment in the path";
        if (i < plen)
            segments++;
        seg = i + 1;
    }
    for (size_t i = 0; i < plen; i++) {
        unsigned char c = (unsigned char)o[i];

        if (c == '\\' || c == ';' || c >= 0x80)
            return "backslash, semicolon or non-ASCII byte in the path";
    }
    /*
     * The path as an upstream that decodes every escape sees it: the same
     * segments, so it resolves to the path that was routed.
     */
    for (size_t i = 0; i < plen; i++) {
        if (o[i] == '%') {
            decoded[dl++] = (char)(hex_upper(o[i + 1]) * 16 + hex_upper(o[i + 2]));
            i += 2;
        } else {
            decoded[dl++] = o[i];
        }
    }
    for (size_t i = 1; i < dl; i++)
        if (decoded[i] == '/')
            upstream_segments++;
    if (upstream_segments != segments)
        return "the decoded path has other segments";
    return NULL;
}

static void test_properties(void **state)
{
    uint64_t rng = 0x5eed5eed1234abcdu;
    unsigned accepted = 0, refused = 0;

    (void)state;
    for (unsigned k = 0; k < N_RANDOM; k++) {
        char in[MAX_TARGET], out[MAX_TARGET], again[MAX_TARGET], buf[MAX_TARGET];
        const char *detail = NULL, *d2 = NULL, *why;
        size_t len = random_target(&rng, in, sizeof(in));
        int rc = sl_path_normalize(in, len, out, len + 1, &detail);

        /* In place gives the same answer. */
        memcpy(buf, in, len + 1);
        assert_int_equal(sl_path_normalize(buf, len, buf, len + 1, &d2), rc);
        if (rc != SL_OK) {
            refused++;
            if (detail == NULL || detail[0] == '\0' || d2 != detail)
                fail_msg("\"%s\": refused without a detail", in);
            continue;
        }
        accepted++;
        assert_string_equal(buf, out);
        if ((why = violated(out, len)) != NULL)
            fail_msg("\"%s\" -> \"%s\": %s", in, out, why);
        /* Idempotence. */
        if (sl_path_normalize(out, strlen(out), again, sizeof(again), &detail) != SL_OK)
            fail_msg("\"%s\" -> \"%s\" refused the second time: %s", in, out, detail);
        if (strcmp(again, out) != 0)
            fail_msg("\"%s\" -> \"%s\" -> \"%s\"", in, out, again);
    }
    /* The generator must exercise both sides. */
    assert_true(accepted > N_RANDOM / 20);
    assert_true(refused > N_RANDOM / 20);
    print_message("path properties: %u accepted, %u refused\n", accepted, refused);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_bypasses),
        cmocka_unit_test(test_accepted),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_length_bounds_input),
        cmocka_unit_test(test_output_size),
        cmocka_unit_test(test_in_place),
        cmocka_unit_test(test_properties),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
