/*
 * redis.h - one Redis connection on our event loop: hiredis 0.14's async
 * API (its libevent adapter) plus what 0.14 lacks.
 *
 * - Reconnect: a lost or refused connection is retried with exponential
 *   backoff and jitter (100 ms doubling, at most 5 s), forever.
 * - Per-command timeouts: a command not answered in time means the
 *   connection is dead (Redis answers in order, so everything behind it is
 *   stuck too): the connection is dropped, every pending command is
 *   answered with reply NULL, and a reconnect is scheduled. A TCP connect
 *   that hangs is caught the same way (the handshake has a timeout).
 * - Handshake: AUTH (with a password) and SELECT (db > 0), then PING; the
 *   connection is "up" only once they succeeded.
 * - Pipelining: commands issued in one turn of the loop leave in one write
 *   (hiredis buffers until the socket is writable); replies come in order.
 * - No name lookups: the url holds an IP or a unix socket (config.h), as
 *   redisAsyncConnect resolves names with a blocking getaddrinfo.
 *
 * A blocking command (XREADGROUP ... BLOCK) needs a connection of its own:
 * it holds up every command behind it.
 *
 * Ownership: sl_redis owns its hiredis context and the pending commands.
 * A reply handed to a callback belongs to hiredis and is valid only during
 * the call. sl_redis_free() answers every pending command with NULL before
 * it returns.
 */
#ifndef SL_REDIS_H
#define SL_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "config.h"
#include "metrics.h"

struct event_base;
struct sl_redis;

/* A reply, or NULL when there will be none (timeout, connection lost, freeing). */
typedef void (*sl_redis_reply_fn)(struct sl_redis *r, const redisReply *reply, void *arg);

/* The connection came up (handshake done) or went down. */
typedef void (*sl_redis_state_fn)(struct sl_redis *r, bool up, void *arg);

struct sl_redis_stats {
    bool up;
    uint64_t connects;                  /* handshakes completed (the first one included) */
    uint64_t failures;                  /* attempts that failed, connections lost */
    uint64_t timeouts;                  /* commands not answered in time */
    struct sl_histogram rtt;            /* seconds from a command's send to its reply */
};

/* Default timeout of a command (and of the handshake). */
#define SL_REDIS_TIMEOUT_US (2 * INT64_C(1000000))

/*
 * Start connecting to `url` (copied) in the background. `name` shows in
 * logs ("jobs", "reader"). NULL when out of memory.
 */
struct sl_redis *sl_redis_new(struct event_base *base, const struct sl_redis_url *url,
                              const char *name, sl_redis_state_fn on_state, void *arg);

/* Connected and handshake done. */
bool sl_redis_up(const struct sl_redis *r);

/*
 * Send a command (binary-safe arguments). `fn` (may be NULL) gets the
 * reply, or NULL when none comes within `timeout_us` (0: the default).
 * Returns SL_OK; SL_EAGAIN while the connection is not up, SL_ENOMEM:
 * then `fn` is never called.
 */
int sl_redis_commandv(struct sl_redis *r, int64_t timeout_us, sl_redis_reply_fn fn, void *arg,
                      int argc, const char **argv, const size_t *lens);

/*
 * The same with hiredis's format ("SET %s %b"): handy, but hiredis 0.14
 * formats slowly (sds appends, sprintf per length); hot paths use
 * sl_redis_commandv, whose RESP we write ourselves in one pass.
 */
int sl_redis_command(struct sl_redis *r, int64_t timeout_us, sl_redis_reply_fn fn, void *arg,
                     const char *fmt, ...);

/* Commands sent and not yet answered. */
size_t sl_redis_pending(const struct sl_redis *r);

const struct sl_redis_stats *sl_redis_stats(const struct sl_redis *r);

/* Why the connection is not up (a short sentence), or "" when it is. */
const char *sl_redis_error(const struct sl_redis *r);

/* "127.0.0.1:6379" or the socket path, for logs (never the password). */
const char *sl_redis_addr(const struct sl_redis *r);

void sl_redis_free(struct sl_redis *r);

/*
 * The wait before reconnect attempt `failures` (0 for the first retry):
 * base * 2^failures capped at cap, half of it fixed and half random
 * ("equal jitter") from the xorshift state *seed. Pure.
 */
int64_t sl_redis_backoff(unsigned failures, int64_t base_us, int64_t cap_us, uint64_t *seed);

#endif
