/*
 * wire.h - the socket I/O under both HTTP sides, cheaper than a bufferevent's.
 *
 * Reading: evbuffer_read(), which a bufferevent reads with, asks the kernel
 * how much is readable (ioctl FIONREAD) before every read: two of the six
 * system calls of a proxied request. sl_wire_read() makes one read, so the
 * HTTP sides read their sockets
 * themselves (a plain event) and keep bufferevents for connecting and for
 * what a write leaves over.
 *
 * Writing:
 * Why: a socket bufferevent keeps the front of its output buffer frozen, so
 * evbuffer_write() on it fails and every response would cost EV_WRITE to be
 * armed and disarmed (two epoll_ctl calls) and a loop turn. Most messages fit
 * the socket buffer: one sendmsg() from our own memory sends them, and only
 * what the socket refuses goes to the output buffer for the bufferevent to
 * write (EV_WRITE is then enabled).
 *
 * Ownership: nothing is kept. `head` is copied if it has to wait; `body`'s
 * chains are moved to the output buffer (it is left empty); `raw` is
 * referenced, not copied, so it must outlive the write (the caller's
 * borrowed request body does).
 */
#ifndef SL_WIRE_H
#define SL_WIRE_H

#include <stdbool.h>
#include <stddef.h>

#include "http1.h"

struct bufferevent;
struct evbuffer;

/*
 * Send head, then body (may be NULL), then raw[0..raw_len) on bev. Writes
 * directly only when bev's output buffer is empty (order is kept). Sets
 * *queued when something was left for the bufferevent. Returns 0, or -1 if
 * the output buffer could not grow (the connection is then unusable).
 *
 * Pass body or raw, not both: a streamed answer that sent each chunk's
 * closing CRLF as `raw` after a body got bytes of a later chunk written
 * among earlier ones once part of it had to wait in the output buffer
 * (a referenced chain after moved chains; seen in test_stream, not pinned
 * down further). Nothing sends both now.
 */
int sl_wire_send(struct bufferevent *bev, const char *head, size_t head_len,
                 struct evbuffer *body, const void *raw, size_t raw_len, bool *queued);

/*
 * Read what `fd` has (up to 16 KiB) onto the end of `in` with one read.
 * Returns the bytes read, 0 at end of stream, or -1 with errno set
 * (EAGAIN: nothing yet; ENOMEM: `in` could not grow).
 */
long sl_wire_read(int fd, struct evbuffer *in);

/*
 * The same for a stream of bulk data (a large answer's body): up to `max`
 * bytes read straight into `in`'s own space, no copy. Sixteen times fewer
 * reads, loop turns and writes per byte than sl_wire_read() for a large
 * body; a small message pays a large chain for it, so only streams use it.
 */
long sl_wire_read_bulk(int fd, struct evbuffer *in, size_t max);

/*
 * The head at the front of `in`, made contiguous for a head parser (http1.h
 * parses whole heads): *buf and *n (at most `max` bytes). Returns 0 when
 * it is worth parsing, 1 when no line end arrived since the last look
 * (*scanned, kept by the caller and reset with each message: a client
 * dribbling its head then costs one parse per line, not per read), -1 when
 * out of memory.
 */
int sl_wire_head(struct evbuffer *in, size_t max, size_t *scanned, char **buf, size_t *n);

/*
 * Decode the chunked body at the front of `in` as far as it has arrived
 * (both HTTP sides read bodies this way): data goes to out(), what was
 * consumed is drained. Returns 0, or -1 as sl_http1_chunked_feed() does
 * (d->error says why); d->done tells whether the body is complete.
 */
int sl_wire_dechunk(struct evbuffer *in, struct sl_http1_chunked *d, sl_http1_data_fn out,
                    void *arg);

#endif
