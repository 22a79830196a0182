/* strbuf.c - growable string scratch, and decimals without printf. */
#include "strbuf.h"

#include <stdlib.h>
#include <string.h>

#include "sluice.h"

int sl_strbuf_append(struct sl_strbuf *b, const char *at, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap > 0 ? b->cap : 64;
        char *s;

        while (cap < b->len + n + 1)
            cap *= 2;
        s = realloc(b->s, cap);
        if (s == NULL)
            return SL_ENOMEM;
        b->s = s;
        b->cap = cap;
    }
    memcpy(b->s + b->len, at, n);
    b->len += n;
    b->s[b->len] = '\0';
    return SL_OK;
}

void sl_strbuf_free(struct sl_strbuf *b)
{
    free(b->s);
    b->s = NULL;
    b->len = b->cap = 0;
}

char *sl_strbuf_u64(char *end, uint64_t v)
{
    *end = '\0';
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return end;
}
