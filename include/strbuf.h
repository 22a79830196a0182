/*
 * strbuf.h - a growable NUL-terminated string, the scratch both HTTP parsers
 * (frontend and h1client) gather URL, field and value pieces in as
 * http-parser hands them over in fragments.
 *
 * Ownership: the struct owns `s`; sl_strbuf_free() releases it. A zeroed
 * struct is an empty buffer.
 */
#ifndef SL_STRBUF_H
#define SL_STRBUF_H

#include <stddef.h>
#include <stdint.h>

struct sl_strbuf {
    char *s;
    size_t len, cap;
};

/* Append n bytes (s stays NUL-terminated). Returns SL_OK or SL_ENOMEM. */
int sl_strbuf_append(struct sl_strbuf *b, const char *at, size_t n);

/* Release the storage and leave an empty buffer. */
void sl_strbuf_free(struct sl_strbuf *b);

/*
 * v in decimal, without printf (it runs for every response): the digits are
 * written backwards ending just before `end`, where a NUL is stored, and
 * their start is returned. `end` must have 20 bytes before it.
 */
char *sl_strbuf_u64(char *end, uint64_t v);

#endif
