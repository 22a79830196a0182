/*
 * answer.h - a stored answer written as JSON (pure): the form that batch
 * items (and async jobs) share, {"status", "headers", "body"|"body_base64"}.
 *
 * Bodies that are valid UTF-8 go out as a JSON string ("body"), anything
 * else as standard base64 with padding ("body_base64", RFC 4648 section 4).
 * Header names are lowercased (lookups need not guess the upstream's
 * spelling); a field that occurs once is a string, a repeated one an array
 * of its values in order. Header values are bytes: any that are not valid
 * UTF-8 are read as ISO-8859-1 (RFC 9110 obs-text), each byte >= 0x80
 * written as \u00XX, so the output is always valid JSON.
 *
 * Ownership: nothing is kept; output is appended to the caller's evbuffer.
 * On SL_ENOMEM the buffer may hold a partial write: discard it.
 */
#ifndef SL_ANSWER_H
#define SL_ANSWER_H

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;
struct evkeyvalq;

/* Is s[0..len) well-formed UTF-8 (RFC 3629: no overlongs, surrogates or > U+10FFFF)? */
bool sl_answer_utf8_valid(const void *s, size_t len);

/* Append base64 of data[0..len) with padding. Returns SL_OK or SL_ENOMEM. */
int sl_answer_base64_encode(struct evbuffer *out, const void *data, size_t len);

/*
 * Append the bytes that base64 text s[0..len) stands for: the standard
 * alphabet, padding optional but correct when present, no whitespace.
 * Returns SL_OK, SL_ERR (not base64; out may hold part of it) or SL_ENOMEM.
 */
int sl_answer_base64_decode(struct evbuffer *out, const char *s, size_t len);

/* The most bytes base64 text of `len` characters can stand for. */
size_t sl_answer_base64_max_decoded(size_t len);

/* Append s[0..len) as a quoted JSON string (see above for non-UTF-8). SL_OK or SL_ENOMEM. */
int sl_answer_json_string(struct evbuffer *out, const char *s, size_t len);

/* Append a list of fields as a JSON object (see above). SL_OK or SL_ENOMEM. */
int sl_answer_json_headers(struct evbuffer *out, const struct evkeyvalq *fields);

/*
 * Append `"body":"..."` or `"body_base64":"..."` (no braces, no comma) for
 * the bytes of `body` (NULL: an empty body), and drain it.
 * Returns SL_OK or SL_ENOMEM.
 */
int sl_answer_json_body(struct evbuffer *out, struct evbuffer *body);

#endif
