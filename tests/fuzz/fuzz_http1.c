/*
 * fuzz_http1.c - the HTTP/1.1 head parsers and the chunked decoder (http1.h).
 *
 * The input is a message. It is parsed as a request head and as a response
 * head; the body after a complete chunked head, or the whole input when
 * neither parser found a head, goes through the chunked decoder.
 *
 * Each parse is done whole, then again as a socket would deliver the bytes:
 * one at a time, and in slices of random length. sluice parses a head again
 * from the start after every read, and decodes a chunked body piece by
 * piece as it arrives, so how the bytes were split must never change the
 * outcome: the same result, fields and framing, the same decoded body. A
 * difference aborts, as does any broken promise of http1.h.
 */
#include "fuzz.h"
#include "http1.h"

#define MAX_HEAD 2048        /* small, so that inputs reach the TOO_LARGE paths */
#define MAX_FIELDS 32
#define BYTEWISE_MAX 1024    /* one byte at a time costs n^2: only for inputs this short */
#define SLICE_MAX 64

/* How the bytes arrive: all at once, one at a time, or in random slices. */
enum split { WHOLE, BYTEWISE, RANDOM };

struct splitter {
    enum split mode;
    uint64_t rng;
};

static size_t next_slice(struct splitter *s, size_t left)
{
    size_t n = s->mode == WHOLE ? left
             : s->mode == BYTEWISE ? 1 : 1 + (size_t)(fuzz_next(&s->rng) % SLICE_MAX);

    return n < left ? n : left;
}

/* ---- heads ---- */

typedef int (*parse_fn)(char *buf, size_t len, size_t max_head, struct sl_http1_head *h);

static bool inside(const char *p, size_t n, const char *buf, size_t len)
{
    return p >= buf && n <= len && (size_t)(p - buf) <= len - n;
}

/* What http1.h promises of a result, checked while buf is still alive. */
static void check_head(int rc, const struct sl_http1_head *h, const char *buf, size_t len,
                       bool request)
{
    if (rc == SL_HTTP1_INVALID || rc == SL_HTTP1_TOO_LARGE)
        FUZZ_CHECK(h->error != NULL);
    if (rc != SL_HTTP1_DONE) {
        FUZZ_CHECK(rc == SL_HTTP1_PARTIAL || rc == SL_HTTP1_INVALID || rc == SL_HTTP1_TOO_LARGE);
        return;
    }
    FUZZ_CHECK(h->head_len > 0 && h->head_len <= len && h->head_len <= MAX_HEAD);
    FUZZ_CHECK(h->n_fields <= MAX_FIELDS && h->minor >= 0 && h->minor <= 9);
    if (request) {
        const char *a, *rest;
        size_t an, rn;

        FUZZ_CHECK(h->method_len > 0 && inside(h->method, h->method_len, buf, h->head_len) &&
                   h->target_len > 0 && inside(h->target, h->target_len, buf, h->head_len));
        FUZZ_CHECK(h->reason == NULL);
        /* An absolute-form target splits into parts of itself, the rest a path or query. */
        if (sl_http1_absolute_form(h->target, h->target_len, &a, &an, &rest, &rn) == 0)
            FUZZ_CHECK(inside(a, an, h->target, h->target_len) &&
                       inside(rest, rn, h->target, h->target_len) &&
                       sl_http1_plain_authority(a, an) &&
                       (rn == 0 || rest[0] == '/' || rest[0] == '?'));
    } else {
        FUZZ_CHECK(h->status >= 100 && h->status <= 999);
        /* The reason is relayed into a head: it must hold no CR, LF or other CTL. */
        FUZZ_CHECK(inside(h->reason, h->reason_len, buf, h->head_len));
        for (size_t i = 0; i < h->reason_len; i++)
            FUZZ_CHECK((unsigned char)h->reason[i] >= 0x20 || h->reason[i] == '\t');
        FUZZ_CHECK(memchr(h->reason, 0x7f, h->reason_len) == NULL);
    }
    for (size_t i = 0; i < h->n_fields; i++) {
        const struct sl_http1_field *f = &h->fields[i];

        FUZZ_CHECK(f->name_len > 0 && inside(f->name, f->name_len, buf, h->head_len));
        FUZZ_CHECK(inside(f->value, f->value_len, buf, h->head_len));
        /* headers.h relies on this: parsed fields never hold CR or LF. */
        FUZZ_CHECK(memchr(f->value, '\r', f->value_len) == NULL &&
                   memchr(f->value, '\n', f->value_len) == NULL);
    }
    FUZZ_CHECK(h->content_length >= -1);
    FUZZ_CHECK(!h->chunked || h->transfer_encoding);
    FUZZ_CHECK(!h->transfer_encoding || h->content_length == -1);
    FUZZ_CHECK(!h->both_lengths || h->transfer_encoding);
    (void)sl_http1_keep_alive(h);
}

/*
 * The outcome as bytes: equal outcomes give equal records. Error sentences
 * are left out: for the same bytes the parser may name a fault differently
 * depending on what follows it (a CR last in the buffer is only known to be
 * bare once the next byte came), and that is not worth a finding.
 */
static void record_head(struct fuzz_bytes *r, int rc, const struct sl_http1_head *h)
{
    fuzz_put(r, &rc, sizeof(rc));
    if (rc != SL_HTTP1_DONE)
        return;
    fuzz_put_str(r, h->method != NULL ? h->method : "", h->method_len);
    fuzz_put_str(r, h->target != NULL ? h->target : "", h->target_len);
    fuzz_put(r, &h->status, sizeof(h->status));
    fuzz_put(r, &h->minor, sizeof(h->minor));
    fuzz_put(r, &h->head_len, sizeof(h->head_len));
    fuzz_put(r, &h->content_length, sizeof(h->content_length));
    fuzz_put(r, (bool[]){h->chunked, h->transfer_encoding, h->both_lengths, h->conn_close,
                         h->conn_keep_alive, h->conn_other}, 6 * sizeof(bool));
    fuzz_put(r, &h->n_fields, sizeof(h->n_fields));
    for (size_t i = 0; i < h->n_fields; i++) {
        fuzz_put_str(r, h->fields[i].name, h->fields[i].name_len);
        fuzz_put_str(r, h->fields[i].value, h->fields[i].value_len);
    }
}

/*
 * Parse buf[0..len) from an exact-size copy, so that ASan sees any read
 * past len, then keep the parser's in-place edits (obs-fold joins) in buf,
 * as they would stay in a real read buffer. The record replaces r's.
 */
static int parse_once(parse_fn parse, bool request, char *buf, size_t len,
                      struct sl_http1_head *h, struct fuzz_bytes *r)
{
    char *copy = fuzz_copy(buf, len);
    int rc = parse(copy, len, MAX_HEAD, h);

    check_head(rc, h, copy, len, request);
    r->len = 0;
    record_head(r, rc, h);
    memcpy(buf, copy, len);
    free(copy);
    return rc;
}

/* Deliver data as the splitter says, parsing after each piece until the result is final. */
static int parse_split(parse_fn parse, bool request, const uint8_t *data, size_t n,
                       struct splitter *s, struct sl_http1_head *h, struct fuzz_bytes *r)
{
    char *buf = fuzz_alloc(n);
    size_t have = 0;
    int rc = SL_HTTP1_PARTIAL;

    while (rc == SL_HTTP1_PARTIAL && have < n) {
        size_t step = next_slice(s, n - have);

        memcpy(buf + have, data + have, step);
        have += step;
        rc = parse_once(parse, request, buf, have, h, r);
    }
    free(buf);
    return rc;
}

static void head_mismatch(bool request, enum split mode, const struct fuzz_bytes *whole,
                          const struct fuzz_bytes *split)
{
    int a, b;

    memcpy(&a, whole->p, sizeof(a));
    memcpy(&b, split->p, sizeof(b));
    fprintf(stderr, "%s head: whole gives %d, %s gives %d (or other fields differ)\n",
            request ? "request" : "response", a, mode == BYTEWISE ? "byte by byte" : "slices",
            b);
    abort();
}

/*
 * Parse data as one kind of head, whole and split; the whole outcome's
 * head_len and chunked flag are returned for the body.
 */
static int head(bool request, const uint8_t *data, size_t n, uint64_t seed, size_t *head_len,
                bool *chunked)
{
    parse_fn parse = request ? sl_http1_parse_request : sl_http1_parse_response;
    struct sl_http1_field fields[MAX_FIELDS];
    struct sl_http1_head h = {.fields = fields, .max_fields = MAX_FIELDS};
    struct fuzz_bytes whole = {0}, split = {0};
    struct splitter s = {WHOLE, seed};
    int rc = parse_split(parse, request, data, n, &s, &h, &whole);

    *head_len = h.head_len;
    *chunked = rc == SL_HTTP1_DONE && h.chunked;
    for (enum split mode = n <= BYTEWISE_MAX ? BYTEWISE : RANDOM; mode <= RANDOM; mode++) {
        s.mode = mode;
        parse_split(parse, request, data, n, &s, &h, &split);
        if (!fuzz_same(&whole, &split))
            head_mismatch(request, mode, &whole, &split);
    }
    fuzz_free(&whole);
    fuzz_free(&split);
    return rc;
}

/* ---- the chunked coding ---- */

struct decoded {
    struct fuzz_bytes data;
    const char *in, *in_end; /* the piece being fed */
    long consumed;           /* in all, or -1 after an error */
    bool done;
    const char *error;
};

static int collect(void *arg, const char *p, size_t n)
{
    struct decoded *d = arg;

    /* Data is handed over in place, never copied (http1.h). */
    FUZZ_CHECK(p >= d->in && n <= (size_t)(d->in_end - p));
    fuzz_put(&d->data, p, n);
    return 0;
}

/* Feed one piece from an exact-size copy; the bytes used, or -1. */
static long feed(struct sl_http1_chunked *c, const char *in, size_t n, struct decoded *d)
{
    char *copy = fuzz_copy(in, n);
    long used;

    d->in = copy;
    d->in_end = copy + n;
    used = sl_http1_chunked_feed(c, copy, n, collect, d);
    free(copy);
    FUZZ_CHECK(used >= -1 && (used < 0 || (size_t)used <= n));
    /* All of it unless done (http1.h); once done, never a byte past the final CRLF. */
    FUZZ_CHECK(used < 0 || c->done || (size_t)used == n);
    return used;
}

static void decode(const char *body, size_t n, struct splitter *s, struct decoded *d)
{
    struct sl_http1_chunked c;
    size_t off = 0;
    long used = 0;

    sl_http1_chunked_init(&c);
    *d = (struct decoded){0};
    while (off < n && !c.done && used >= 0) {
        size_t step = next_slice(s, n - off);

        used = feed(&c, body + off, step, d);
        off += used >= 0 ? (size_t)used : 0;
    }
    d->consumed = used < 0 ? -1 : (long)off;
    d->done = c.done;
    d->error = used < 0 ? c.error : NULL;
    FUZZ_CHECK(used >= 0 || c.error != NULL);
    /* After an error, -1 for ever; once done, 0 whatever follows. */
    if (used < 0)
        FUZZ_CHECK(feed(&c, "0\r\n\r\n", 5, d) == -1);
    else if (c.done)
        FUZZ_CHECK(feed(&c, "0\r\n\r\n", 5, d) == 0);
}

static bool same_decoded(const struct decoded *a, const struct decoded *b)
{
    return a->consumed == b->consumed && a->done == b->done &&
           (a->error == NULL) == (b->error == NULL) &&
           (a->error == NULL || strcmp(a->error, b->error) == 0) && fuzz_same(&a->data, &b->data);
}

static int refuse(void *arg, const char *p, size_t n)
{
    (void)arg;
    (void)p;
    (void)n;
    return 1;
}

/* A callback's refusal stops the decoding for good, and says so (http1.h). */
static void refused(const char *in, size_t n)
{
    struct sl_http1_chunked c;
    char *copy = fuzz_copy(in, n);

    sl_http1_chunked_init(&c);
    FUZZ_CHECK(sl_http1_chunked_feed(&c, copy, n, refuse, NULL) == -1);
    FUZZ_CHECK(c.error != NULL && strcmp(c.error, "data callback failed") == 0);
    FUZZ_CHECK(sl_http1_chunked_feed(&c, copy, n, NULL, NULL) == -1);
    free(copy);
}

static void body(const char *in, size_t n, uint64_t seed)
{
    struct splitter s = {WHOLE, seed};
    struct decoded whole, split;

    decode(in, n, &s, &whole);
    for (enum split mode = n <= BYTEWISE_MAX ? BYTEWISE : RANDOM; mode <= RANDOM; mode++) {
        s.mode = mode;
        decode(in, n, &s, &split);
        if (!same_decoded(&whole, &split)) {
            fprintf(stderr, "chunked: whole gives %ld (%s), %s gives %ld (%s), or data differ\n",
                    whole.consumed, whole.error ? whole.error : "ok",
                    mode == BYTEWISE ? "byte by byte" : "slices", split.consumed,
                    split.error ? split.error : "ok");
            abort();
        }
        fuzz_free(&split.data);
    }
    /* Data came before any fault: refusing it must be what stops the decoding. */
    if (whole.data.len > 0)
        refused(in, n);
    fuzz_free(&whole.data);
}

/* sl_http1_u64 must print what strtoull reads back. */
static void u64(uint64_t v)
{
    char buf[32], *s = sl_http1_u64(buf + 21, v);

    FUZZ_CHECK(s >= buf && strtoull(s, NULL, 10) == v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t seed = fuzz_seed(data, size);
    size_t head_len, body_from = 0;
    bool chunked, any = false, chunked_body = false;

    if (size == 0)
        return 0;
    for (int request = 1; request >= 0; request--) {
        /* Both parsers see every input; the first head found frames the body. */
        if (head(request, data, size, seed, &head_len, &chunked) != SL_HTTP1_DONE || any)
            continue;
        any = true;
        chunked_body = chunked;
        body_from = head_len;
    }
    /* No head at all: the input may be a chunked body by itself (a seed or a mutation of one). */
    if (!any || chunked_body)
        body((const char *)data + body_from, size - body_from, seed);
    u64(seed >> (seed & 63));
    return 0;
}
