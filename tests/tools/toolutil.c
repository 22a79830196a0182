/* Helpers shared by the test tools; see toolutil.h. */
#include "toolutil.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include <event2/event.h>
#include <event2/http.h>

int64_t tool_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * INT64_C(1000000) + ts.tv_nsec / 1000;
}

void tool_die_usage(const char *prog, void (*usage)(FILE *),
                    const char *what, const char *arg)
{
    fprintf(stderr, "%s: %s: \"%s\"\n", prog, what, arg ? arg : "");
    usage(stderr);
    exit(2);
}

int tool_parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    long long v;

    if (s == NULL || *s == '\0')
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int tool_parse_seconds(const char *s, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v > 0) || v > 1e7)
        return -1;
    *out = v;
    return 0;
}

int64_t tool_raise_nofile(int64_t wanted)
{
    struct rlimit rl;
    int err = 0;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        errno = 0;
        return wanted;
    }
    if (rl.rlim_max != RLIM_INFINITY && (int64_t)rl.rlim_max < wanted) {
        struct rlimit more = { (rlim_t)wanted, (rlim_t)wanted };

        if (setrlimit(RLIMIT_NOFILE, &more) == 0) {
            errno = 0;
            return wanted;
        }
    }
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit soft = { rl.rlim_max, rl.rlim_max };

        if (setrlimit(RLIMIT_NOFILE, &soft) == 0)
            rl.rlim_cur = rl.rlim_max;
        else
            err = errno;
    }
    errno = err;
    if (rl.rlim_cur == RLIM_INFINITY || (int64_t)rl.rlim_cur >= wanted)
        return wanted;
    return (int64_t)rl.rlim_cur;
}

struct event_base *tool_new_base(void)
{
    struct event_config *cfg = event_config_new();
    struct event_base *base;

    if (cfg == NULL)
        return NULL;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return base;
}

const char *tool_method_name(int cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "UNKNOWN";
    }
}
