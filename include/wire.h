/*
 * wire.h - send a message head and body straight to a bufferevent's socket.
 *
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

struct bufferevent;
struct evbuffer;

/*
 * Send head, then body (may be NULL), then raw[0..raw_len) on bev. Writes
 * directly only when bev's output buffer is empty (order is kept). Sets
 * *queued when something was left for the bufferevent. Returns 0, or -1 if
 * the output buffer could not grow (the connection is then unusable).
 */
int sl_wire_send(struct bufferevent *bev, const char *head, size_t head_len,
                 struct evbuffer *body, const void *raw, size_t raw_len, bool *queued);

#endif
