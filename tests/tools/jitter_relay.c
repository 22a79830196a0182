/*
 * jitter_relay - a TCP relay on loopback that delays what each client sends
 * by a random 0..max ms per read, as a real network's varying delay would,
 * keeping the byte order of every connection. Answers flow back at once.
 *
 *   jitter_relay --listen PORT --to 127.0.0.1:PORT [--min-ms 0] [--max-ms 20]
 *                [--seed N] [--max-seconds S] [--port-file FILE]
 *
 * Written in C on libevent's precise timers: a relay in Python added up to
 * 2 ms of its own lateness to the jitter it was asked for, which is what a
 * 5 ms window guard is measured against. Loopback only; bounded by
 * --max-seconds (default 600).
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "toolutil.h"

#define PROG "jitter_relay"

/* What one read brought, waiting for its moment. */
struct chunk {
    TAILQ_ENTRY(chunk) link;
    int64_t due_us;
    struct evbuffer *data;
};

/* A client and its upstream; freed when either side is done. */
struct pair {
    struct bufferevent *client, *upstream;
    struct event *timer;                 /* for the first chunk's due time */
    TAILQ_HEAD(, chunk) chunks;
    int64_t last_due_us;                 /* chunks leave in order, never earlier */
    int client_eof;
};

struct relay {
    struct event_base *base;
    struct sockaddr_in to;
    int64_t min_us, max_us;
    uint64_t rng;
};

static struct relay R;

static void usage(FILE *f)
{
    fprintf(f, "usage: " PROG " --listen PORT --to 127.0.0.1:PORT [--min-ms MS] [--max-ms MS]\n"
               "       [--seed N] [--max-seconds S] [--port-file FILE]\n");
}

static int64_t jitter_us(void)
{
    R.rng ^= R.rng << 13;
    R.rng ^= R.rng >> 7;
    R.rng ^= R.rng << 17;
    return R.min_us + (int64_t)(R.rng % (uint64_t)(R.max_us - R.min_us + 1));
}

static void pair_free(struct pair *p)
{
    struct chunk *c;

    while ((c = TAILQ_FIRST(&p->chunks)) != NULL) {
        TAILQ_REMOVE(&p->chunks, c, link);
        evbuffer_free(c->data);
        free(c);
    }
    event_free(p->timer);
    bufferevent_free(p->client);
    bufferevent_free(p->upstream);
    free(p);
}

static void arm(struct pair *p)
{
    struct chunk *c = TAILQ_FIRST(&p->chunks);
    int64_t wait = c != NULL ? c->due_us - tool_now_us() : 0;
    struct timeval tv = {(time_t)(wait / 1000000), (suseconds_t)(wait % 1000000)};

    if (c == NULL)
        return;
    if (wait < 0)
        tv.tv_sec = 0, tv.tv_usec = 0;
    evtimer_add(p->timer, &tv);
}

/* Send every chunk that is due; after the last one, pass on the client's EOF. */
static void on_due(evutil_socket_t fd, short what, void *arg)
{
    struct pair *p = arg;
    struct chunk *c;
    int64_t now = tool_now_us();

    (void)fd;
    (void)what;
    while ((c = TAILQ_FIRST(&p->chunks)) != NULL && c->due_us <= now) {
        TAILQ_REMOVE(&p->chunks, c, link);
        bufferevent_write_buffer(p->upstream, c->data);
        evbuffer_free(c->data);
        free(c);
    }
    if (c != NULL)
        arm(p);
    else if (p->client_eof)
        shutdown(bufferevent_getfd(p->upstream), SHUT_WR);
}

static void on_client_read(struct bufferevent *bev, void *arg)
{
    struct pair *p = arg;
    struct chunk *c = calloc(1, sizeof(*c));
    int64_t due = tool_now_us() + jitter_us();

    if (c == NULL || (c->data = evbuffer_new()) == NULL) {
        free(c);
        pair_free(p);
        return;
    }
    c->due_us = due > p->last_due_us ? due : p->last_due_us;
    p->last_due_us = c->due_us;
    evbuffer_add_buffer(c->data, bufferevent_get_input(bev));
    TAILQ_INSERT_TAIL(&p->chunks, c, link);
    if (c == TAILQ_FIRST(&p->chunks))
        arm(p);
}

static void on_upstream_read(struct bufferevent *bev, void *arg)
{
    struct pair *p = arg;

    bufferevent_write_buffer(p->client, bufferevent_get_input(bev));
}

static void on_client_event(struct bufferevent *bev, short what, void *arg)
{
    struct pair *p = arg;

    (void)bev;
    if (what & BEV_EVENT_EOF) {
        p->client_eof = 1;
        if (TAILQ_EMPTY(&p->chunks))
            shutdown(bufferevent_getfd(p->upstream), SHUT_WR);
    } else if (what & BEV_EVENT_ERROR) {
        pair_free(p);
    }
}

/* The client's output has drained after the upstream closed: done. */
static void on_client_drained(struct bufferevent *bev, void *arg)
{
    (void)bev;
    pair_free(arg);
}

static void on_upstream_event(struct bufferevent *bev, short what, void *arg)
{
    struct pair *p = arg;

    (void)bev;
    if (what & BEV_EVENT_ERROR) {
        pair_free(p);
    } else if (what & BEV_EVENT_EOF) {
        /* Let what the upstream said reach the client first. */
        if (evbuffer_get_length(bufferevent_get_output(p->client)) == 0)
            pair_free(p);
        else
            bufferevent_setcb(p->client, NULL, on_client_drained, NULL, p);
    }
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int len, void *arg)
{
    struct pair *p = calloc(1, sizeof(*p));
    int one = 1;

    (void)lev;
    (void)sa;
    (void)len;
    (void)arg;
    if (p == NULL) {
        evutil_closesocket(fd);
        return;
    }
    TAILQ_INIT(&p->chunks);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    p->client = bufferevent_socket_new(R.base, fd, BEV_OPT_CLOSE_ON_FREE);
    p->upstream = bufferevent_socket_new(R.base, -1, BEV_OPT_CLOSE_ON_FREE);
    p->timer = evtimer_new(R.base, on_due, p);
    if (p->client == NULL || p->upstream == NULL || p->timer == NULL ||
        bufferevent_socket_connect(p->upstream, (struct sockaddr *)&R.to, sizeof(R.to)) != 0) {
        if (p->client == NULL)
            evutil_closesocket(fd);
        pair_free(p);
        return;
    }
    setsockopt(bufferevent_getfd(p->upstream), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    bufferevent_setcb(p->client, on_client_read, NULL, on_client_event, p);
    bufferevent_setcb(p->upstream, on_upstream_read, NULL, on_upstream_event, p);
    bufferevent_enable(p->client, EV_READ);
    bufferevent_enable(p->upstream, EV_READ);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopexit(arg, NULL);
}

static void parse_to(const char *v)
{
    const char *colon = strrchr(v, ':');
    int64_t port;
    char host[64];

    if (colon == NULL || (size_t)(colon - v) >= sizeof(host) ||
        tool_parse_int(colon + 1, 1, 65535, &port) != 0)
        tool_die_usage(PROG, usage, "--to expects 127.x.x.x:PORT", v);
    memcpy(host, v, (size_t)(colon - v));
    host[colon - v] = '\0';
    R.to.sin_family = AF_INET;
    R.to.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &R.to.sin_addr) != 1 ||
        (ntohl(R.to.sin_addr.s_addr) >> 24) != 127)
        tool_die_usage(PROG, usage, "--to must be a loopback address", v);
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"listen", required_argument, NULL, 'l'},  {"to", required_argument, NULL, 't'},
        {"min-ms", required_argument, NULL, 'm'},  {"max-ms", required_argument, NULL, 'M'},
        {"seed", required_argument, NULL, 's'},    {"max-seconds", required_argument, NULL, 'x'},
        {"port-file", required_argument, NULL, 'p'}, {NULL, 0, NULL, 0},
    };
    int64_t port = -1, min_ms = 0, max_ms = 20, seed = (int64_t)getpid();
    double max_s = 600;
    const char *port_file = NULL;
    struct sockaddr_in sin = {.sin_family = AF_INET};
    struct evconnlistener *lev;
    struct timeval tv;
    int c;

    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        int bad = 0;

        switch (c) {
        case 'l': bad = tool_parse_int(optarg, 0, 65535, &port); break;
        case 't': parse_to(optarg); break;
        case 'm': bad = tool_parse_int(optarg, 0, 10000, &min_ms); break;
        case 'M': bad = tool_parse_int(optarg, 0, 10000, &max_ms); break;
        case 's': bad = tool_parse_int(optarg, 1, INT64_MAX, &seed); break;
        case 'x': bad = tool_parse_seconds(optarg, &max_s); break;
        case 'p': port_file = optarg; break;
        default: tool_die_usage(PROG, usage, "unknown option", argv[optind - 1]);
        }
        if (bad)
            tool_die_usage(PROG, usage, "bad value", optarg);
    }
    if (port < 0 || R.to.sin_family == 0 || min_ms > max_ms)
        tool_die_usage(PROG, usage, "--listen and --to are required; min <= max", "");
    R.min_us = min_ms * 1000;
    R.max_us = max_ms * 1000;
    R.rng = (uint64_t)seed * UINT64_C(0x9e3779b97f4a7c15) | 1;
    if ((R.base = tool_new_base()) == NULL)
        return 2;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    lev = evconnlistener_new_bind(R.base, on_accept, NULL,
                                  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 128,
                                  (struct sockaddr *)&sin, sizeof(sin));
    if (lev == NULL) {
        perror(PROG ": listen");
        return 2;
    }
    if (port_file != NULL) {
        struct sockaddr_in got;
        socklen_t len = sizeof(got);
        FILE *f;
        char tmp[4096];

        getsockname(evconnlistener_get_fd(lev), (struct sockaddr *)&got, &len);
        snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
        if ((f = fopen(tmp, "w")) == NULL || fprintf(f, "%d\n", ntohs(got.sin_port)) < 0 ||
            fclose(f) != 0 || rename(tmp, port_file) != 0)
            return 2;
    }
    tv.tv_sec = (time_t)max_s;
    tv.tv_usec = (suseconds_t)((max_s - (double)tv.tv_sec) * 1e6);
    event_base_once(R.base, -1, EV_TIMEOUT, on_deadline, R.base, &tv);
    event_base_dispatch(R.base);
    evconnlistener_free(lev);
    event_base_free(R.base);
    return 0;
}
