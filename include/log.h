/*
 * log.h - leveled logfmt lines on stderr (journald picks them up as is).
 *
 * A line reads: ts=2026-11-21T23:39:35.123Z level=info msg="..." k=v ...
 * The message is quoted by the logger; callers append their own key=value
 * pairs through `fmt` and must pass any value that comes from a client or a
 * file through sl_log_quote() so that spaces and quotes cannot forge fields.
 * No line may ever carry a request body or a credential header value.
 */
#ifndef SL_LOG_H
#define SL_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

enum sl_log_level {
    SL_LOG_ERROR = 0,
    SL_LOG_WARN,
    SL_LOG_INFO,
    SL_LOG_DEBUG,
};

void sl_log_set_level(enum sl_log_level level);
enum sl_log_level sl_log_get_level(void);

/* Redirect output (default stderr). For tests. */
void sl_log_set_stream(FILE *stream);

/* "error", "warn", "info", "debug" by enum value, NULL-terminated (config's enum table). */
extern const char *const sl_log_level_names[];

/*
 * Write one line if `level` is enabled. `fmt` (may be NULL) formats extra
 * logfmt pairs appended after msg=.
 */
void sl_log(enum sl_log_level level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Quote `s` as a logfmt value into buf (always NUL-terminated, truncated to
 * fit): bare if it has no space, quote, '=' or control byte, else in double
 * quotes with \" \\ \n escapes and other control bytes as \xNN.
 * Returns buf.
 */
const char *sl_log_quote(const char *s, char *buf, size_t size);

#define sl_log_error(msg, ...) sl_log(SL_LOG_ERROR, msg, __VA_ARGS__)
#define sl_log_warn(msg, ...) sl_log(SL_LOG_WARN, msg, __VA_ARGS__)
#define sl_log_info(msg, ...) sl_log(SL_LOG_INFO, msg, __VA_ARGS__)
#define sl_log_debug(msg, ...) sl_log(SL_LOG_DEBUG, msg, __VA_ARGS__)

#endif
