/*
 * http1.c - HTTP/1.1 message heads and the chunked coding (RFC 9112).
 *
 * Every byte of a head is classified by one lookup in `cls` inside span(),
 * eight bytes per branch; line ends and field structure are then checked
 * once per line. The framing fields are recognized by length first, so the
 * common field costs one switch on its name length.
 *
 * The head parser never looks past min(len, max_head): running out of bytes
 * there means PARTIAL, or TOO_LARGE once max_head bytes were available.
 */
#include "http1.h"

#include <string.h>

#define MAX_EMPTY_LINES 4          /* ignored before a request line (RFC 9112 2.2) */
#define CL_MAX ((int64_t)1 << 62)  /* largest Content-Length accepted */
#define SIZE_DIGITS_MAX 15         /* hex digits of a chunk size: < 2^60, no overflow */
#define SIZE_LINE_MAX 4096         /* a chunk-size line with its extensions, line end aside */
#define TRAILER_MAX (64 * 1024)

/* Byte classes, or'ed together in `cls`. */
enum {
    C_TCHAR = 1,  /* token (RFC 9110 5.6.2) */
    C_VALUE = 2,  /* field-vchar, SP, HTAB (RFC 9110 5.5): values, reason, chunk-ext */
    C_TARGET = 4, /* request-target: any byte but CTL and SP */
    C_HEX = 8,
    C_DIGIT = 16,
};

/* The table's entries: CTL, whitespace, visible non-token or obs-text, token, hex, digit. */
#define CT 0
#define WS C_VALUE
#define VC (C_VALUE | C_TARGET)
#define TK (C_TCHAR | C_VALUE | C_TARGET)
#define HX (TK | C_HEX)
#define DG (TK | C_HEX | C_DIGIT)

static const uint8_t cls[256] = {
    CT, CT, CT, CT, CT, CT, CT, CT, CT, WS, CT, CT, CT, CT, CT, CT,
    CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT,
    WS, TK, VC, TK, TK, TK, TK, TK, VC, VC, TK, TK, VC, TK, TK, VC,
    DG, DG, DG, DG, DG, DG, DG, DG, DG, DG, VC, VC, VC, VC, VC, VC,
    VC, HX, HX, HX, HX, HX, HX, TK, TK, TK, TK, TK, TK, TK, TK, TK,
    TK, TK, TK, TK, TK, TK, TK, TK, TK, TK, TK, VC, VC, VC, TK, TK,
    TK, HX, HX, HX, HX, HX, HX, TK, TK, TK, TK, TK, TK, TK, TK, TK,
    TK, TK, TK, TK, TK, TK, TK, TK, TK, TK, TK, VC, TK, VC, TK, CT,
    VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC,
    VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC,
    VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC,
    VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC,
    VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC,
    VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC,
    VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC,
    VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC, VC,
};

static inline bool is(char c, unsigned want)
{
    return (cls[(unsigned char)c] & want) != 0;
}

/*
 * The first byte in [p, end) outside class `want` (a single class), or end.
 * Every byte of a head passes here: the classes of eight bytes are and-ed,
 * so a block costs one branch, and only the block that holds the stop is
 * walked byte by byte (with no bound to check: the stop is in it).
 */
static inline const char *span(const char *p, const char *end, unsigned want)
{
#define CLS(i) cls[(unsigned char)p[i]]
    for (size_t blocks = (size_t)(end - p) / 8; blocks > 0; blocks--, p += 8) {
        if ((CLS(0) & CLS(1) & CLS(2) & CLS(3) & CLS(4) & CLS(5) & CLS(6) & CLS(7) & want) == 0) {
            while (is(*p, want))
                p++;
            return p;
        }
    }
#undef CLS
    while (p < end && is(*p, want))
        p++;
    return p;
}

/*
 * s[0..n) equals `lower` in any case. Or-ing 0x20 folds only a letter onto
 * its other case here: the non-letters of our literals ('-', and ':' '/' in
 * the schemes) would also match a control byte (CR, 0x1A, 0x0F), never
 * found in a name, a value or a request target.
 */
static bool same_ci(const char *s, const char *lower, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] | 0x20) != (unsigned char)lower[i])
            return false;
    return true;
}

/* The line end at p: 2 (CRLF), 1 (bare LF, RFC 9112 2.2), 0 (none), -1 (bytes ran out). */
static inline int eol(const char *p, const char *end)
{
    if (p == end || (*p == '\r' && p + 1 == end))
        return -1;
    return *p == '\n' ? 1 : *p == '\r' && p[1] == '\n' ? 2 : 0;
}

/* ---- heads ---- */

struct parse {
    char *buf;
    const char *p;     /* next byte to parse */
    const char *end;   /* buf + min(len, max_head) */
    struct sl_http1_head *h;
    bool request;
    bool chunked_seen; /* chunked already among the transfer codings */
};

static int fail(struct sl_http1_head *h, const char *why)
{
    h->error = why;
    return SL_HTTP1_INVALID;
}

/* The byte at p ended a part early. A bare CR gets its own name: it is the classic trick. */
static int bad_byte(const struct parse *ps, const char *p, const char *why)
{
    return fail(ps->h, *p == '\r' && p + 1 < ps->end && p[1] != '\n' ? "bare CR" : why);
}

/* Expect the line end at p and move past it. */
static int line_end(struct parse *ps, const char *p, const char *why)
{
    int n = eol(p, ps->end);

    if (n <= 0)
        return n < 0 ? SL_HTTP1_PARTIAL : bad_byte(ps, p, why);
    ps->p = p + n;
    return SL_HTTP1_DONE;
}

/* "HTTP/1." DIGIT (RFC 9112 2.3); the name is case-sensitive. */
static int version(struct parse *ps)
{
    static const char lit[] = "HTTP/1.";
    const char *p = ps->p;
    size_t avail = (size_t)(ps->end - p), n = avail < 7 ? avail : 7;

    if (memcmp(p, lit, n) != 0)
        return fail(ps->h, n >= 6 && memcmp(p, lit, 5) == 0 && is(p[5], C_DIGIT)
                               ? "unsupported HTTP version" : "malformed HTTP version");
    if (avail < 8)
        return SL_HTTP1_PARTIAL;
    if (!is(p[7], C_DIGIT))
        return fail(ps->h, "malformed HTTP version");
    ps->h->minor = p[7] - '0';
    ps->p = p + 8;
    return SL_HTTP1_DONE;
}

/* RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request line. */
static int skip_empty_lines(struct parse *ps)
{
    for (int i = 0;; i++) {
        int n = eol(ps->p, ps->end);

        if (n <= 0)
            return n < 0 ? SL_HTTP1_PARTIAL : SL_HTTP1_DONE;
        if (i == MAX_EMPTY_LINES)
            return fail(ps->h, "too many empty lines before the request line");
        ps->p += n;
    }
}

/* A non-empty run of class `want` at ps->p, ended by exactly one SP. */
static int word(struct parse *ps, unsigned want, const char **s, size_t *n, const char *why)
{
    const char *q = span(ps->p, ps->end, want);

    if (q == ps->end)
        return SL_HTTP1_PARTIAL;
    if (q == ps->p || *q != ' ')
        return bad_byte(ps, q, why);
    *s = ps->p;
    *n = (size_t)(q - ps->p);
    ps->p = q + 1;
    return SL_HTTP1_DONE;
}

/* method SP request-target SP HTTP-version (RFC 9112 3). */
static int request_line(struct parse *ps)
{
    struct sl_http1_head *h = ps->h;
    int rc;

    if ((rc = skip_empty_lines(ps)) != SL_HTTP1_DONE ||
        (rc = word(ps, C_TCHAR, &h->method, &h->method_len, "malformed method")) != SL_HTTP1_DONE ||
        (rc = word(ps, C_TARGET, &h->target, &h->target_len, "malformed request target")) !=
            SL_HTTP1_DONE ||
        (rc = version(ps)) != SL_HTTP1_DONE)
        return rc;
    return line_end(ps, ps->p, "malformed request line");
}

/*
 * HTTP-version SP 3DIGIT [SP reason-phrase] (RFC 9112 4). The reason means
 * nothing to a client, but a proxy relays it as it came.
 */
static int status_line(struct parse *ps)
{
    const char *p, *reason;
    int rc = version(ps);

    if (rc != SL_HTTP1_DONE)
        return rc;
    p = ps->p;
    for (int i = 0; i < 4; i++) {
        if (p + i == ps->end)
            return SL_HTTP1_PARTIAL;
        if (i == 0 ? p[0] != ' ' : !is(p[i], C_DIGIT))
            return fail(ps->h, "malformed status code");
    }
    ps->h->status = (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
    if (ps->h->status < 100)
        return fail(ps->h, "status code below 100");
    p += 4;
    reason = p;
    if (p < ps->end && *p == ' ')
        p = span(reason = p + 1, ps->end, C_VALUE);
    rc = line_end(ps, p, "malformed status line");
    if (rc == SL_HTTP1_DONE) {
        const char *end = p;

        sl_http1_trim(&reason, &end);
        ps->h->reason = reason;
        ps->h->reason_len = (size_t)(end - reason);
    }
    return rc;
}

/*
 * The comma-separated list element at *cur, OWS trimmed (RFC 9110 5.6.1);
 * empty elements are returned too. *cur becomes NULL after the last one.
 */
static bool list_next(const char **cur, const char *end, const char **s, size_t *n)
{
    const char *a = *cur, *b, *comma;

    if (a == NULL)
        return false;
    comma = memchr(a, ',', (size_t)(end - a));
    b = comma != NULL ? comma : end;
    *cur = comma != NULL ? comma + 1 : NULL;
    sl_http1_trim(&a, &b);
    *s = a;
    *n = (size_t)(b - a);
    return true;
}

/* 1*DIGIT per element; a list or repeated fields must agree (RFC 9110 8.6). */
static int content_length(struct sl_http1_head *h, const struct sl_http1_field *f)
{
    const char *cur = f->value, *s;
    size_t n;

    while (list_next(&cur, f->value + f->value_len, &s, &n)) {
        int64_t v = 0;

        if (n == 0)
            return fail(h, "malformed Content-Length");
        for (size_t i = 0; i < n; i++) {
            if (!is(s[i], C_DIGIT))
                return fail(h, "malformed Content-Length");
            if (v > (CL_MAX - (s[i] - '0')) / 10)
                return fail(h, "Content-Length too large");
            v = v * 10 + (s[i] - '0');
        }
        if (h->content_length >= 0 && h->content_length != v)
            return fail(h, "conflicting Content-Length values");
        h->content_length = v;
    }
    return SL_HTTP1_DONE;
}

/* Only the final coding matters to framing; parameters after ';' are ignored. */
static int transfer_encoding(struct parse *ps, const struct sl_http1_field *f)
{
    const char *cur = f->value, *s, *semi;
    size_t n;

    ps->h->transfer_encoding = true;
    while (list_next(&cur, f->value + f->value_len, &s, &n)) {
        if ((semi = memchr(s, ';', n)) != NULL)
            for (n = (size_t)(semi - s); n > 0 && sl_http1_is_ows(s[n - 1]); n--)
                ;
        if (n == 0)
            continue;
        ps->h->chunked = n == 7 && same_ci(s, "chunked", 7);
        /* RFC 9112 7: a sender MUST NOT apply chunked more than once. */
        if (ps->h->chunked && ps->chunked_seen)
            return fail(ps->h, "chunked applied more than once");
        ps->chunked_seen |= ps->h->chunked;
    }
    return SL_HTTP1_DONE;
}

static void connection(struct sl_http1_head *h, const struct sl_http1_field *f)
{
    const char *cur = f->value, *s;
    size_t n;

    while (list_next(&cur, f->value + f->value_len, &s, &n)) {
        if (n == 5 && same_ci(s, "close", 5))
            h->conn_close = true;
        else if (n == 10 && same_ci(s, "keep-alive", 10))
            h->conn_keep_alive = true;
        else if (n > 0)
            h->conn_other = true;
    }
}

/* Every field passes here: one switch on the length rules most out. */
static int framing(struct parse *ps, const struct sl_http1_field *f)
{
    switch (f->name_len) {
    case 10:
        if (same_ci(f->name, "connection", 10))
            connection(ps->h, f);
        return SL_HTTP1_DONE;
    case 14:
        return same_ci(f->name, "content-length", 14) ? content_length(ps->h, f) : SL_HTTP1_DONE;
    case 17:
        return same_ci(f->name, "transfer-encoding", 17) ? transfer_encoding(ps, f)
                                                         : SL_HTTP1_DONE;
    default:
        return SL_HTTP1_DONE;
    }
}

/* OWS field-value OWS and the line end, from `from`: [*v, *ve) is the trimmed value. */
static inline int value_line(struct parse *ps, const char *from, const char **v, const char **ve)
{
    const char *a = from, *b;
    int n;

    while (a < ps->end && sl_http1_is_ows(*a))
        a++;
    b = span(a, ps->end, C_VALUE);
    if ((n = eol(b, ps->end)) <= 0)
        return n < 0 ? SL_HTTP1_PARTIAL : bad_byte(ps, b, "invalid character in field value");
    ps->p = b + n;
    while (b > a && sl_http1_is_ows(b[-1]))
        b--;
    *v = a;
    *ve = b;
    return SL_HTTP1_DONE;
}

/*
 * Join a fold's text [v, ve) to f's value in place, with one SP (RFC 9112
 * 5.2), so the value stays one contiguous run. The rest of the fold, line
 * break included, becomes spaces up to its line end: parsing the head
 * again after PARTIAL then reads one line with the same value.
 */
static void join(struct parse *ps, struct sl_http1_field *f, const char *v, const char *ve)
{
    char *to = ps->buf + (f->value - ps->buf) + f->value_len;
    char *stop = ps->buf + (ps->p - ps->buf) - 1; /* the fold's LF */
    size_t n = (size_t)(ve - v);

    if (stop[-1] == '\r')
        stop--;
    if (f->value_len == 0) { /* nothing to join to: the fold's text is the value */
        memset(to, ' ', (size_t)(v - to));
        f->value = v;
        f->value_len = (uint32_t)n;
        return;
    }
    if (n > 0) {
        *to++ = ' ';
        memmove(to, v, n);
        to += n;
        f->value_len += (uint32_t)n + 1;
    }
    memset(to, ' ', (size_t)(stop - to));
}

/* The obs-fold lines at ps->p, continuing f: only a response may have them. */
static int folds(struct parse *ps, struct sl_http1_field *f)
{
    const char *v, *ve;
    int rc;

    while (ps->p < ps->end && sl_http1_is_ows(*ps->p)) {
        if (ps->request)
            return fail(ps->h, "obsolete line folding");
        /* The buffer changes only once the whole fold line is here. */
        if ((rc = value_line(ps, ps->p, &v, &ve)) != SL_HTTP1_DONE)
            return rc;
        join(ps, f, v, ve);
    }
    return ps->p == ps->end ? SL_HTTP1_PARTIAL : SL_HTTP1_DONE;
}

/* name ":" OWS value OWS (no whitespace before the colon, RFC 9112 5.1), and its folds. */
static int field_line(struct parse *ps)
{
    struct sl_http1_head *h = ps->h;
    struct sl_http1_field *f;
    const char *p = ps->p, *q, *v, *ve;
    int rc;

    if (h->n_fields == h->max_fields) {
        h->error = "too many header fields";
        return SL_HTTP1_TOO_LARGE;
    }
    q = span(p, ps->end, C_TCHAR);
    if (q == ps->end)
        return SL_HTTP1_PARTIAL;
    if (q == p || *q != ':')
        return bad_byte(ps, q, *q == ':' ? "empty field name" : "malformed field name");
    if ((rc = value_line(ps, q + 1, &v, &ve)) != SL_HTTP1_DONE)
        return rc;
    f = &h->fields[h->n_fields];
    *f = (struct sl_http1_field){p, v, (uint32_t)(q - p), (uint32_t)(ve - v)};
    /* The next line could still be a fold: its first byte must be here. */
    if (ps->p == ps->end || (sl_http1_is_ows(*ps->p) && (rc = folds(ps, f)) != SL_HTTP1_DONE))
        return ps->p == ps->end ? SL_HTTP1_PARTIAL : rc;
    h->n_fields++;
    return framing(ps, f);
}

/* Field lines up to and including the empty line that ends the head. */
static int fields(struct parse *ps)
{
    int n, rc;

    if (ps->p < ps->end && sl_http1_is_ows(*ps->p)) /* RFC 9112 2.2 */
        return fail(ps->h, "whitespace after the start line");
    while ((n = eol(ps->p, ps->end)) == 0)
        if ((rc = field_line(ps)) != SL_HTTP1_DONE)
            return rc;
    if (n < 0)
        return SL_HTTP1_PARTIAL;
    ps->p += n;
    return SL_HTTP1_DONE;
}

/* RFC 9112 6.1 and 6.3: a request's body length must be unambiguous. */
static int request_framing(struct sl_http1_head *h)
{
    if (!h->transfer_encoding)
        return SL_HTTP1_DONE;
    if (h->minor == 0)
        return fail(h, "Transfer-Encoding in an HTTP/1.0 request");
    if (h->content_length >= 0)
        return fail(h, "both Transfer-Encoding and Content-Length");
    if (!h->chunked)
        return fail(h, "Transfer-Encoding does not end in chunked");
    return SL_HTTP1_DONE;
}

static int parse(char *buf, size_t len, size_t max_head, struct sl_http1_head *h, bool request)
{
    /* Field lengths are 32 bits: no head may be longer. */
    size_t limit = max_head < UINT32_MAX ? max_head : UINT32_MAX;
    struct parse ps = {
        .buf = buf, .p = buf, .end = buf + (len < limit ? len : limit), .h = h, .request = request,
    };
    int rc;

    *h = (struct sl_http1_head){
        .fields = h->fields, .max_fields = h->max_fields, .content_length = -1};
    rc = request ? request_line(&ps) : status_line(&ps);
    if (rc == SL_HTTP1_DONE)
        rc = fields(&ps);
    if (rc == SL_HTTP1_DONE && request)
        rc = request_framing(h);
    if (rc == SL_HTTP1_DONE) {
        /* It overrides Content-Length (RFC 9112 6.3); having both is kept in mind. */
        h->both_lengths = h->transfer_encoding && h->content_length >= 0;
        if (h->transfer_encoding)
            h->content_length = -1;
        h->head_len = (size_t)(ps.p - buf);
    } else if (rc == SL_HTTP1_PARTIAL && len >= limit) {
        h->error = "head too large";
        rc = SL_HTTP1_TOO_LARGE;
    }
    return rc;
}

int sl_http1_parse_request(char *buf, size_t len, size_t max_head, struct sl_http1_head *h)
{
    return parse(buf, len, max_head, h, true);
}

int sl_http1_parse_response(char *buf, size_t len, size_t max_head, struct sl_http1_head *h)
{
    return parse(buf, len, max_head, h, false);
}

/* A host name or IPv4 literal (RFC 3986 reg-name without escapes or sub-delims). */
static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

/* host [":" port] with nothing else: no userinfo, no escapes, port digits only. */
bool sl_http1_plain_authority(const char *a, size_t n)
{
    size_t i = 0;

    if (n > 0 && a[0] == '[') {
        for (i = 1; i < n && a[i] != ']'; i++)
            if (!is(a[i], C_HEX) && a[i] != ':' && a[i] != '.')
                return false;
        if (i == n || i < 3)
            return false;
        i++;
    } else {
        while (i < n && name_char(a[i]))
            i++;
        if (i == 0)
            return false;
    }
    if (i == n)
        return true;
    if (a[i] != ':')
        return false;
    for (i++; i < n; i++)
        if (!is(a[i], C_DIGIT))
            return false;
    return true;
}

int sl_http1_absolute_form(const char *target, size_t len, const char **authority,
                           size_t *authority_len, const char **rest, size_t *rest_len)
{
    size_t skip, n = 0;

    if (len >= 7 && same_ci(target, "http://", 7))
        skip = 7;
    else if (len >= 8 && same_ci(target, "https://", 8))
        skip = 8;
    else
        return -1;
    while (skip + n < len && target[skip + n] != '/' && target[skip + n] != '?')
        n++;
    if (!sl_http1_plain_authority(target + skip, n))
        return -1;
    *authority = target + skip;
    *authority_len = n;
    *rest = target + skip + n;
    *rest_len = len - skip - n;
    return 0;
}

bool sl_http1_keep_alive(const struct sl_http1_head *h)
{
    if (h->transfer_encoding && (!h->chunked || h->minor == 0 || h->both_lengths))
        return false;
    return h->minor == 0 ? h->conn_keep_alive && !h->conn_close : !h->conn_close;
}

/* ---- the chunked coding ---- */

enum {
    CH_SIZE, CH_SIZE_WS, CH_EXT, /* the chunk-size line, before its line end */
    CH_LF,                       /* a CR was read: LF, then state `next` */
    CH_DATA, CH_DATA_END,
    CH_TRAILER, CH_NAME, CH_VALUE, /* the trailer section: at a line start, in a field */
    CH_DONE, CH_ERROR,
};

static const char *ch_fail(struct sl_http1_chunked *d, const char *why)
{
    d->error = why;
    d->state = CH_ERROR;
    return NULL;
}

void sl_http1_chunked_init(struct sl_http1_chunked *d)
{
    *d = (struct sl_http1_chunked){.state = CH_SIZE};
}

static void go(struct sl_http1_chunked *d, uint8_t state)
{
    d->state = state;
    d->in_trailer |= state == CH_TRAILER;
}

/* A line end at p, CRLF or a bare LF, after which decoding goes on in `next`. */
static const char *ch_eol(struct sl_http1_chunked *d, const char *p, uint8_t next, const char *why)
{
    if (*p != '\r' && *p != '\n')
        return ch_fail(d, why);
    d->next = next;
    go(d, *p == '\r' ? CH_LF : next);
    return p + 1;
}

/* chunk-size [BWS ";" chunk-ext] (RFC 9112 7.1): whitespace only before an extension. */
static const char *size_byte(struct sl_http1_chunked *d, const char *p)
{
    if (d->state == CH_SIZE && is(*p, C_HEX)) {
        if (d->digits++ == SIZE_DIGITS_MAX)
            return ch_fail(d, "chunk size too large");
        d->remaining = d->remaining << 4 |
                       (unsigned)(is(*p, C_DIGIT) ? *p - '0' : (*p | 0x20) - 'a' + 10);
        return p + 1;
    }
    if (d->digits == 0 || (d->state == CH_SIZE_WS && !sl_http1_is_ows(*p) && *p != ';'))
        return ch_fail(d, "malformed chunk size");
    if (*p == ';' || sl_http1_is_ows(*p)) {
        d->state = *p == ';' ? CH_EXT : CH_SIZE_WS;
        return p + 1;
    }
    return ch_eol(d, p, d->remaining > 0 ? CH_DATA : CH_TRAILER, "malformed chunk size");
}

static const char *data(struct sl_http1_chunked *d, const char *p, const char *end,
                        sl_http1_data_fn out, void *arg)
{
    size_t n = (size_t)(end - p) < d->remaining ? (size_t)(end - p) : (size_t)d->remaining;

    if (out != NULL && out(arg, p, n) != 0)
        return ch_fail(d, "data callback failed");
    if ((d->remaining -= n) == 0)
        d->state = CH_DATA_END;
    return p + n;
}

/* Trailer fields are checked (name ":" value-bytes) and skipped (RFC 9112 7.1.2). */
static const char *trailer(struct sl_http1_chunked *d, const char *p, const char *end)
{
    const char *q;

    if (d->state == CH_TRAILER) {
        if (*p == '\r' || *p == '\n')
            return ch_eol(d, p, CH_DONE, NULL);
        if (!is(*p, C_TCHAR))
            return ch_fail(d, "malformed trailer field");
        d->state = CH_NAME;
        return p + 1;
    }
    if (d->state == CH_VALUE) {
        q = span(p, end, C_VALUE);
        return q == end ? q : ch_eol(d, q, CH_TRAILER, "invalid character in trailer field");
    }
    q = span(p, end, C_TCHAR);
    if (q < end && *q != ':')
        return ch_fail(d, "malformed trailer field");
    if (q < end)
        d->state = CH_VALUE;
    return q < end ? q + 1 : q;
}

/* One step at p < end: the next byte to decode, or NULL on an error. */
static const char *step(struct sl_http1_chunked *d, const char *p, const char *end,
                        sl_http1_data_fn out, void *arg)
{
    const char *q;

    switch (d->state) {
    case CH_SIZE:
    case CH_SIZE_WS:
        return size_byte(d, p);
    case CH_EXT:
        q = span(p, end, C_VALUE);
        return q == end ? q : ch_eol(d, q, d->remaining > 0 ? CH_DATA : CH_TRAILER,
                                     "invalid character in chunk extension");
    case CH_LF:
        if (*p != '\n')
            return ch_fail(d, "bare CR");
        go(d, d->next);
        return p + 1;
    case CH_DATA:
        return data(d, p, end, out, arg);
    case CH_DATA_END:
        d->digits = 0;
        d->line_len = 0;
        return ch_eol(d, p, CH_SIZE, "missing CRLF after chunk data");
    default:
        return trailer(d, p, end);
    }
}

/*
 * Metadata is bounded, unlike data: the chunk-size line (its line end
 * aside) and the trailer section (after the last-chunk line, to the end).
 * `n` bytes were just consumed from state `before`.
 */
static bool bounded(struct sl_http1_chunked *d, uint8_t before, bool in_trailer, size_t n)
{
    if (in_trailer) {
        if (n > TRAILER_MAX - d->trailer_len)
            return ch_fail(d, "trailer section too large") != NULL;
        d->trailer_len += (uint32_t)n;
    } else if (before <= CH_EXT) {
        n -= d->state > CH_EXT; /* the step ended the line */
        if (n > SIZE_LINE_MAX - d->line_len)
            return ch_fail(d, "chunk size line too long") != NULL;
        d->line_len += (uint32_t)n;
    }
    return true;
}

long sl_http1_chunked_feed(struct sl_http1_chunked *d, const char *in, size_t len,
                           sl_http1_data_fn out, void *arg)
{
    const char *p = in, *end = in + len, *q;

    while (p < end && d->state < CH_DONE) {
        uint8_t before = d->state;
        bool in_trailer = d->in_trailer;

        q = step(d, p, end, out, arg);
        if (q == NULL || !bounded(d, before, in_trailer, (size_t)(q - p)))
            return -1;
        p = q;
    }
    d->done = d->state == CH_DONE;
    return d->state == CH_ERROR ? -1 : (long)(p - in);
}

char *sl_http1_u64(char *end, uint64_t v)
{
    *end = '\0';
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return end;
}
