/* wire.c - one sendmsg for a head and its body; one readv, no ioctl, per read. */
#include "wire.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#define WIRE_BODY_VECS 8
#define WIRE_READ_MAX (16 * 1024)

/* What the socket takes now; 0 when it would block or failed (the bufferevent sees errors). */
static size_t send_vecs(int fd, struct iovec *iov, int n)
{
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    ssize_t w;

    do {
        w = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (w < 0 && errno == EINTR);
    return w > 0 ? (size_t)w : 0;
}

/* The body's first chains; *whole tells whether they are all of it. */
static size_t body_vecs(struct evbuffer *body, struct iovec *iov, bool *whole)
{
    struct evbuffer_iovec v[WIRE_BODY_VECS];
    int n = body != NULL ? evbuffer_peek(body, -1, NULL, v, WIRE_BODY_VECS) : 0;

    *whole = n <= WIRE_BODY_VECS;
    if (n > WIRE_BODY_VECS)
        n = WIRE_BODY_VECS; /* the chains past these wait in the output buffer */
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = v[i].iov_len;
    }
    return n > 0 ? (size_t)n : 0;
}

/* Queue what `sent` bytes did not cover, in order. */
static int queue_rest(struct evbuffer *out, size_t sent, const char *head, size_t head_len,
                      struct evbuffer *body, const char *raw, size_t raw_len)
{
    size_t k = sent < head_len ? sent : head_len;
    int rc = 0;

    if (k < head_len)
        rc |= evbuffer_add(out, head + k, head_len - k);
    sent -= k;
    if (body != NULL) {
        size_t blen = evbuffer_get_length(body);

        k = sent < blen ? sent : blen;
        rc |= evbuffer_drain(body, k);
        sent -= k;
        rc |= evbuffer_add_buffer(out, body);
    }
    if (sent < raw_len)
        rc |= evbuffer_add_reference(out, raw + sent, raw_len - sent, NULL, NULL);
    return rc == 0 ? 0 : -1;
}

int sl_wire_send(struct bufferevent *bev, const char *head, size_t head_len,
                 struct evbuffer *body, const void *raw, size_t raw_len, bool *queued)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    struct iovec iov[2 + WIRE_BODY_VECS];
    size_t sent = 0;
    bool whole = true;
    int n = 0;

    if (evbuffer_get_length(out) == 0 && bufferevent_getfd(bev) >= 0) {
        iov[n++] = (struct iovec){(void *)head, head_len};
        n += (int)body_vecs(body, iov + n, &whole);
        /* raw must not overtake body chains left for later. */
        if (raw_len > 0 && whole)
            iov[n++] = (struct iovec){(void *)raw, raw_len};
        sent = send_vecs(bufferevent_getfd(bev), iov, n);
    }
    if (queue_rest(out, sent, head, head_len, body, raw, raw_len) != 0)
        return -1;
    *queued = evbuffer_get_length(out) > 0;
    return 0;
}

/*
 * Through a buffer on the stack, then copied: a read is almost always a
 * small request or answer, and reserving 16 KiB of evbuffer space made a
 * large chain (a slow malloc) per read, which cost more than the copy.
 */
long sl_wire_read(int fd, struct evbuffer *in)
{
    char buf[WIRE_READ_MAX];
    ssize_t r;

    do {
        r = read(fd, buf, sizeof(buf));
    } while (r < 0 && errno == EINTR);
    if (r > 0 && evbuffer_add(in, buf, (size_t)r) != 0) {
        errno = ENOMEM;
        return -1;
    }
    return (long)r;
}

long sl_wire_read_bulk(int fd, struct evbuffer *in, size_t max)
{
    struct evbuffer_iovec vec[2];
    struct iovec iov[2];
    int n = evbuffer_reserve_space(in, (ev_ssize_t)max, vec, 2);
    ssize_t r;

    if (n <= 0) {
        errno = ENOMEM;
        return -1;
    }
    for (int i = 0; i < n; i++)
        iov[i] = (struct iovec){vec[i].iov_base, vec[i].iov_len};
    do {
        r = readv(fd, iov, n);
    } while (r < 0 && errno == EINTR);
    /* Commit what came: the vectors it filled, the last one in part. */
    size_t left = r > 0 ? (size_t)r : 0;
    int used = 0;
    while (used < n && left > 0) {
        size_t k = left < vec[used].iov_len ? left : vec[used].iov_len;

        vec[used++].iov_len = k;
        left -= k;
    }
    if (evbuffer_commit_space(in, vec, used) != 0) {
        errno = ENOMEM;
        return -1;
    }
    return (long)r;
}

int sl_wire_dechunk(struct evbuffer *in, struct sl_http1_chunked *d, sl_http1_data_fn out,
                    void *arg)
{
    struct evbuffer_iovec vec[WIRE_BODY_VECS];
    size_t used;

    /* A few chains at a time, until the body ends or what arrived is used up. */
    do {
        int n = evbuffer_peek(in, -1, NULL, vec, WIRE_BODY_VECS);
        long k = 0;

        used = 0;
        for (int i = 0; i < n && i < WIRE_BODY_VECS && !d->done; i++) {
            if ((k = sl_http1_chunked_feed(d, vec[i].iov_base, vec[i].iov_len, out, arg)) < 0)
                return -1;
            used += (size_t)k;
        }
        evbuffer_drain(in, used);
    } while (!d->done && used > 0 && evbuffer_get_length(in) > 0);
    return 0;
}

int sl_wire_head(struct evbuffer *in, size_t max, size_t *scanned, char **buf, size_t *n)
{
    size_t len = evbuffer_get_length(in);

    *n = len < max ? len : max;
    if (*n == 0)
        return 1;
    if ((*buf = (char *)evbuffer_pullup(in, (ssize_t)*n)) == NULL)
        return -1;
    /* A head ends with a line end: without a new one, a parse cannot complete. */
    if (len < max && (*scanned >= *n || memchr(*buf + *scanned, '\n', *n - *scanned) == NULL)) {
        *scanned = *n;
        return 1;
    }
    *scanned = *n;
    return 0;
}
