/*
 * http1.h - HTTP/1.1 message heads and the chunked coding (RFC 9112), pure.
 *
 * Replaces libhttp-parser on the hot path. http-parser costs ~20
 * instructions per byte and hands fields over in pieces (a name or value may
 * be split across calls), so every field had to be copied before use. Heads
 * are small and almost always arrive whole, so they are parsed here in one
 * pass once complete (a partial head is simply parsed again when more bytes
 * came), with each byte classified by one table lookup, and fields are
 * returned as pointers into the buffer instead of copies. Bodies are framed
 * by the caller from the head's framing fields; the chunked coding is
 * decoded incrementally, since bodies are large and arrive in pieces.
 *
 * Strict by design (this faces the internet): what RFC 9112 lets a
 * recipient reject is rejected, notably obs-fold in requests and anything
 * that makes a request's body length ambiguous (request smuggling).
 *
 * Ownership: nothing is allocated and nothing is kept. Fields, method and
 * target point into the caller's buffer, which must outlive their use; the
 * caller owns the fields array.
 */
#ifndef SL_HTTP1_H
#define SL_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Results of the head parsers. */
enum sl_http1_result {
    SL_HTTP1_DONE = 0,       /* a complete head was parsed; head->head_len bytes used */
    SL_HTTP1_PARTIAL = 1,    /* no complete head yet in buf; call again with more bytes */
    SL_HTTP1_INVALID = -1,   /* malformed; head->error says why (a short static sentence) */
    SL_HTTP1_TOO_LARGE = -2, /* the head exceeds max_head bytes, or more than max_fields fields */
};

/* One field; name and value point into the parsed buffer and are NOT NUL-terminated. */
struct sl_http1_field {
    const char *name;
    const char *value;       /* OWS around it already trimmed; an empty value has length 0 */
    uint32_t name_len;
    uint32_t value_len;
};

struct sl_http1_head {
    /* requests */
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    /* responses */
    int status;              /* 100..999 */
    const char *reason;      /* reason-phrase, possibly empty (reason_len 0); NULL in a request */
    size_t reason_len;
    /* both */
    int minor;               /* HTTP/1.<minor>, a single digit */
    struct sl_http1_field *fields; /* set by the caller: an array of max_fields */
    size_t max_fields;             /* set by the caller */
    size_t n_fields;
    size_t head_len;         /* bytes of the head, start line to the empty line included
                              * (and the empty lines ignored before a request line) */
    /* framing, derived from the fields (RFC 9112 section 6) */
    int64_t content_length;  /* -1: no Content-Length (or, in a response, Transfer-Encoding) */
    bool chunked;            /* Transfer-Encoding's final coding is chunked */
    bool transfer_encoding;  /* a Transfer-Encoding field was present */
    bool both_lengths;       /* ...and a Content-Length too (a response: framed by TE) */
    bool conn_close;         /* Connection names "close" */
    bool conn_keep_alive;    /* Connection names "keep-alive" */
    bool conn_other;         /* Connection names some other token (hop-by-hop fields to drop) */
    const char *error;       /* set on SL_HTTP1_INVALID / TOO_LARGE */
};

/*
 * Parse a request head at the start of buf[0..len). Every output field of
 * h is reset first; only fields and max_fields must be set by the caller.
 * Returns an enum sl_http1_result. A malformed head may be reported
 * INVALID before it is complete. The buffer is writable: obs-fold is
 * joined in place (in responses; a request with one is INVALID).
 *
 * After PARTIAL the whole head is parsed again, which costs little for a
 * head that came in a few reads. Against a head trickled in byte by byte,
 * call again only once the new bytes hold an LF (a head ends only at one):
 * max_fields then bounds the passes.
 */
int sl_http1_parse_request(char *buf, size_t len, size_t max_head, struct sl_http1_head *h);

/* Same for a response (status line). Each obs-fold becomes one SP, in place. */
int sl_http1_parse_response(char *buf, size_t len, size_t max_head, struct sl_http1_head *h);

/*
 * An absolute-form request target (RFC 9112 3.2.2), as clients send one to
 * a proxy: "http://" or "https://" (the scheme in any case), an authority,
 * then the path and query. Sets *authority to the authority (a host name,
 * IPv4 or [IPv6] literal, with an optional ":port"; userinfo is refused)
 * and *rest to what follows it (empty, or starting with '/' or '?'), both
 * pointing into `target`. Returns 0, or -1 when `target` is not such a URI.
 */
int sl_http1_absolute_form(const char *target, size_t len, const char **authority,
                           size_t *authority_len, const char **rest, size_t *rest_len);

/* Is a[0..n) such an authority (host name, IPv4 or [IPv6], optional ":port")? */
bool sl_http1_plain_authority(const char *a, size_t n);

/*
 * Keep-alive after this message? HTTP/1.1: unless conn_close; HTTP/1.0:
 * only with conn_keep_alive (and without conn_close). Never when the body
 * runs to the close (a response whose final coding is not chunked), nor
 * after an HTTP/1.0 message with Transfer-Encoding (RFC 9112 6.1: its
 * framing is to be treated as faulty), nor after one with both
 * Transfer-Encoding and Content-Length (RFC 9112 6.3: whoever sent it may
 * frame the next one differently than we read it).
 */
bool sl_http1_keep_alive(const struct sl_http1_head *h);

/* Receives decoded chunk data; non-zero aborts the decoding. */
typedef int (*sl_http1_data_fn)(void *arg, const char *data, size_t len);

/* The chunked transfer coding, decoded incrementally (RFC 9112 section 7.1). */
struct sl_http1_chunked {
    uint64_t remaining;      /* the chunk size being read, then its data bytes left */
    uint32_t line_len;       /* bytes of the current chunk-size line so far */
    uint32_t trailer_len;    /* bytes of the trailer section so far */
    uint8_t state;
    uint8_t next;            /* the state after the LF of a CRLF */
    uint8_t digits;          /* hex digits of the chunk size so far */
    bool in_trailer;         /* past the last chunk */
    bool done;               /* the last chunk and the trailer section were consumed */
    const char *error;       /* why feed returned -1 (a short static sentence) */
};

void sl_http1_chunked_init(struct sl_http1_chunked *d);

/*
 * Decode from in[0..len): returns the bytes consumed (>= 0; all of them
 * unless done, when it stops right after the final CRLF, leaving what
 * follows - the next message - unconsumed; 0 once done), or -1 on
 * malformed input or when `out` returned non-zero (d->error says which;
 * every later call returns -1 too). Chunk data is passed to out() in as
 * large pieces as the input allows (never copied here); out may be NULL to
 * discard it. Chunk extensions and trailer fields are checked and skipped.
 * Limits: 15 hex digits of chunk size, 4096 bytes per chunk-size line
 * (extensions included, line end not), 64 KiB of trailer section (from
 * after the last-chunk line to the end).
 */
long sl_http1_chunked_feed(struct sl_http1_chunked *d, const char *in, size_t len,
                           sl_http1_data_fn out, void *arg);

/*
 * v in decimal, for the numbers of a head (Content-Length, ports, sluice's
 * own fields) without printf, which costs more than the rest of a field:
 * the digits are written backwards ending just before `end`, where a NUL
 * is stored, and their start is returned. `end` must have 20 bytes before it.
 */
char *sl_http1_u64(char *end, uint64_t v);

/* Optional white space (RFC 9110 5.6.3). */
static inline bool sl_http1_is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Narrow [*a, *b) so that it neither starts nor ends with OWS. */
static inline void sl_http1_trim(const char **a, const char **b)
{
    while (*a < *b && sl_http1_is_ows(**a))
        (*a)++;
    while (*b > *a && sl_http1_is_ows((*b)[-1]))
        (*b)--;
}

#endif
