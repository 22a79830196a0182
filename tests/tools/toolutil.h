/*
 * toolutil - the few helpers burst, mock_upstream and the upstream unit
 * test's own HTTP server share. Test code only: like the tools, it shares
 * nothing with sluice.
 */
#ifndef SLUICE_TOOLUTIL_H
#define SLUICE_TOOLUTIL_H

#include <stdint.h>
#include <stdio.h>

struct event_base;

/* Monotonic clock in microseconds. */
int64_t tool_now_us(void);

/* Prints "PROG: WHAT: "ARG"" and usage(stderr), then exits 2. */
_Noreturn void tool_die_usage(const char *prog, void (*usage)(FILE *),
                              const char *what, const char *arg);

/* Strict decimal integer in [min, max]; 0 on success, -1 (out untouched)
 * otherwise. */
int tool_parse_int(const char *s, int64_t min, int64_t max, int64_t *out);

/* Seconds, fractions allowed, in (0, 1e7]; 0 on success, -1 otherwise. */
int tool_parse_seconds(const char *s, double *out);

/* Raises the descriptor limit towards wanted (> 0): hard and soft to wanted
 * when that is allowed (only a privileged process may raise the hard limit),
 * else soft to the hard limit. Returns the soft limit now in force, capped
 * at wanted (wanted also when the limit cannot be read). errno is 0 on
 * return unless raising the soft limit to the hard limit failed. */
int64_t tool_raise_nofile(int64_t wanted);

/* An event base with precise timers: the tools time in microseconds, so no
 * millisecond rounding. NULL on failure. */
struct event_base *tool_new_base(void);

/* "GET", "POST"... for evhttp's command type (an enum evhttp_cmd_type);
 * "UNKNOWN" for any other. */
const char *tool_method_name(int cmd);

#endif
