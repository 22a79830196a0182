/* log.c - logfmt lines on stderr, one write per line so lines never interleave. */
#include "log.h"

#include <stdint.h>
#include <string.h>
#include <time.h>

#include "clock.h"

static enum sl_log_level log_level = SL_LOG_INFO;
static FILE *log_stream;

const char *const sl_log_level_names[] = {"error", "warn", "info", "debug", NULL};

void sl_log_set_level(enum sl_log_level level)
{
    log_level = level;
}

enum sl_log_level sl_log_get_level(void)
{
    return log_level;
}

void sl_log_set_stream(FILE *stream)
{
    log_stream = stream;
}

static int needs_quotes(const char *s)
{
    if (*s == '\0')
        return 1;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f)
            return 1;
    }
    return 0;
}

const char *sl_log_quote(const char *s, char *buf, size_t size)
{
    size_t o = 0;

    if (size == 0)
        return buf;
    if (s == NULL)
        s = "";
    if (!needs_quotes(s)) {
        snprintf(buf, size, "%s", s);
        return buf;
    }
    /* Reserve room for the closing quote and NUL. */
    if (size < 3) {
        buf[0] = '\0';
        return buf;
    }
    buf[o++] = '"';
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[5];
        size_t n;

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            n = 2;
        } else if (c == '\n') {
            memcpy(esc, "\\n", 2);
            n = 2;
        } else if (c < ' ' || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\x%02x", c);
            n = 4;
        } else {
            esc[0] = (char)c;
            n = 1;
        }
        if (o + n + 2 > size)
            break;
        memcpy(buf + o, esc, n);
        o += n;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

void sl_log(enum sl_log_level level, const char *msg, const char *fmt, ...)
{
    char line[4096];
    char qmsg[512];
    struct tm tm;
    int64_t wall;
    time_t secs;
    int n;

    if (level > log_level)
        return;
    wall = sl_clock_wall();
    secs = (time_t)(wall / SL_USEC_PER_SEC);
    gmtime_r(&secs, &tm);
    n = snprintf(line, sizeof(line),
                 "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s msg=%s",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                 tm.tm_sec, (int)(wall % SL_USEC_PER_SEC / 1000), sl_log_level_names[level],
                 sl_log_quote(msg, qmsg, sizeof(qmsg)));
    if (n < 0)
        return;
    if (fmt != NULL && (size_t)n < sizeof(line) - 2) {
        va_list ap;
        int m;

        line[n++] = ' ';
        va_start(ap, fmt);
        m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        va_end(ap);
        if (m > 0)
            n += m;
    }
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    line[n] = '\0';
    fwrite(line, 1, (size_t)n, log_stream != NULL ? log_stream : stderr);
    fflush(log_stream != NULL ? log_stream : stderr);
}
