/*
 * fuzz_path.c - libFuzzer target for sl_path_normalize.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -Iinclude
 *        tests/fuzz/fuzz_path.c src/path.c
 *
 * Aborts when an accepted output breaks a promise of path.h: it starts with
 * '/', is no longer than the input, has no empty or dot segment, no
 * encoded '/', '\' or ';' and no '\', ';' or byte >= 0x80 in the path, no
 * encoded unreserved character and only uppercase %HH escapes, no %00 or
 * control character, no '#' or SP; an upstream that decodes every escape
 * sees the same segments; normalising it again gives itself; in place gives
 * the same answer; and exactly its length + 1 bytes of output suffice.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "path.h"
#include "sluice.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond))                                                                         \
            abort();                                                                         \
    } while (0)

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static bool unreserved(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

static bool dot_segment(const char *s, size_t n)
{
    return (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.');
}

/* Escapes and bytes of an accepted output; plen is the path's length. */
static void check_bytes(const char *o, size_t len, size_t plen)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)o[i];
        int hi, lo, v;

        CHECK(c >= 0x20 && c != 0x7f && c != ' ' && c != '#');
        if (i < plen)
            CHECK(c != '\\' && c != ';' && c < 0x80);
        if (c != '%')
            continue;
        CHECK(i + 2 < len);
        hi = hexval(o[i + 1]);
        lo = hexval(o[i + 2]);
        CHECK(hi >= 0 && lo >= 0);
        CHECK(!(o[i + 1] >= 'a' && o[i + 1] <= 'f') && !(o[i + 2] >= 'a' && o[i + 2] <= 'f'));
        v = hi * 16 + lo;
        CHECK(v != 0 && !unreserved(v));
        if (i < plen) {
            CHECK(v != '/' && v != '\\' && v != ';' && v >= 0x20 && v != 0x7f);
            CHECK(!(v == '%' && i + 4 < plen && hexval(o[i + 3]) >= 0 &&
                    hexval(o[i + 4]) >= 0));
        }
        i += 2;
    }
}

/* Segments as routed, and as an upstream that decodes every escape splits them. */
static void check_segments(const char *o, size_t plen)
{
    size_t seg = 1, routed = 1, decoded = 1;

    CHECK(plen >= 1 && o[0] == '/');
    for (size_t i = 1; i <= plen; i++) {
        if (i < plen && o[i] != '/')
            continue;
        CHECK(i == plen || i > seg);
        CHECK(!dot_segment(o + seg, i - seg));
        if (i < plen)
            routed++;
        seg = i + 1;
    }
    for (size_t i = 1; i < plen; i++) {
        int c = (unsigned char)o[i];

        if (c == '%') {
            c = hexval(o[i + 1]) * 16 + hexval(o[i + 2]);
            i += 2;
        }
        if (c == '/')
            decoded++;
    }
    CHECK(routed == decoded);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data, *d1 = NULL, *d2 = NULL;
    char *out = malloc(size + 1), *again = malloc(size + 1), *buf = malloc(size + 1);
    size_t len;
    int rc;

    if (out == NULL || again == NULL || buf == NULL)
        goto done;
    rc = sl_path_normalize(in, size, out, size + 1, &d1);
    if (size > 0)
        memcpy(buf, data, size);
    CHECK(sl_path_normalize(buf, size, buf, size + 1, &d2) == rc);
    if (rc != SL_OK) {
        CHECK(rc == SL_ERR && d1 != NULL && d1[0] != '\0' && d2 == d1);
        goto done;
    }
    CHECK(strcmp(buf, out) == 0);
    len = strlen(out);
    CHECK(len <= size);
    check_bytes(out, len, strcspn(out, "?"));
    check_segments(out, strcspn(out, "?"));
    /* Idempotent, and the output's own length is exactly enough room. */
    CHECK(sl_path_normalize(out, len, again, len + 1, &d1) == SL_OK);
    CHECK(strcmp(again, out) == 0);
    CHECK(sl_path_normalize(out, len, again, len, &d1) == SL_ERR);
done:
    free(out);
    free(again);
    free(buf);
    return 0;
}
