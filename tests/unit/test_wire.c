/*
 * test_wire.c - sl_wire_send keeps byte order whatever the socket takes:
 * everything at once, a part (the rest written later by the bufferevent),
 * or nothing because earlier output is still queued.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "wire.h"

#define BODY_CHAINS 12            /* more than wire.c sends in one sendmsg */
#define CHAIN_LEN 70000

struct pair {
    struct event_base *base;
    struct bufferevent *bev;
    int peer;
    unsigned char *expect;
    size_t expect_len;
};

static void pair_open(struct pair *p, int sndbuf)
{
    int sv[2];

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
    assert_int_equal(evutil_make_socket_nonblocking(sv[0]), 0);
    p->base = event_base_new();
    assert_non_null(p->base);
    p->bev = bufferevent_socket_new(p->base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    assert_non_null(p->bev);
    p->peer = sv[1];
    p->expect = NULL;
    p->expect_len = 0;
}

static void pair_close(struct pair *p)
{
    bufferevent_free(p->bev);
    event_base_free(p->base);
    close(p->peer);
    free(p->expect);
}

/* Remember bytes as they are handed to sl_wire_send, to compare with what arrives. */
static void expect_bytes(struct pair *p, const void *b, size_t n)
{
    p->expect = realloc(p->expect, p->expect_len + n);
    assert_non_null(p->expect);
    memcpy(p->expect + p->expect_len, b, n);
    p->expect_len += n;
}

/* Read everything from the peer while the loop lets the bufferevent write the rest. */
static void drain_and_compare(struct pair *p)
{
    unsigned char *got = malloc(p->expect_len);
    size_t n = 0;

    assert_non_null(got);
    for (int turns = 0; n < p->expect_len && turns < 100000; turns++) {
        ssize_t r = recv(p->peer, got + n, p->expect_len - n, MSG_DONTWAIT);
        if (r > 0)
            n += (size_t)r;
        event_base_loop(p->base, EVLOOP_NONBLOCK);
    }
    assert_int_equal(n, p->expect_len);
    assert_memory_equal(got, p->expect, p->expect_len);
    assert_int_equal(evbuffer_get_length(bufferevent_get_output(p->bev)), 0);
    free(got);
}

static void free_chunk(const void *data, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    free((void *)data);
}

static struct evbuffer *make_body(struct pair *p, unsigned char seed)
{
    struct evbuffer *body = evbuffer_new();
    unsigned char *chunk = malloc(CHAIN_LEN);

    assert_non_null(body);
    assert_non_null(chunk);
    for (int c = 0; c < BODY_CHAINS; c++) {
        for (size_t i = 0; i < CHAIN_LEN; i++)
            chunk[i] = (unsigned char)(seed + c * 7 + i * 13);
        /* Separate chains: evbuffer_add_reference never merges them. */
        unsigned char *copy = malloc(CHAIN_LEN);
        assert_non_null(copy);
        memcpy(copy, chunk, CHAIN_LEN);
        assert_int_equal(evbuffer_add_reference(body, copy, CHAIN_LEN, free_chunk, NULL), 0);
        expect_bytes(p, copy, CHAIN_LEN);
    }
    free(chunk);
    return body;
}

static void test_small_message_goes_out_at_once(void **state)
{
    (void)state;
    struct pair p;
    bool queued = true;
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
    struct evbuffer *body = evbuffer_new();

    pair_open(&p, 1 << 20);
    assert_int_equal(evbuffer_add(body, "hello", 5), 0);
    expect_bytes(&p, head, sizeof(head) - 1);
    expect_bytes(&p, "hello", 5);
    assert_int_equal(sl_wire_send(p.bev, head, sizeof(head) - 1, body, NULL, 0, &queued), 0);
    assert_false(queued);
    assert_int_equal(evbuffer_get_length(body), 0);
    drain_and_compare(&p);
    evbuffer_free(body);
    pair_close(&p);
}

static void test_partial_write_keeps_order(void **state)
{
    (void)state;
    struct pair p;
    bool queued = false;
    char head[3000];
    static char raw[50000];

    pair_open(&p, 16 * 1024);
    memset(head, 'h', sizeof(head));
    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (char)(i * 31);
    expect_bytes(&p, head, sizeof(head));
    struct evbuffer *body = make_body(&p, 1);
    expect_bytes(&p, raw, sizeof(raw));
    assert_int_equal(sl_wire_send(p.bev, head, sizeof(head), body, raw, sizeof(raw), &queued), 0);
    assert_true(queued);
    assert_int_equal(evbuffer_get_length(body), 0);
    assert_int_equal(bufferevent_enable(p.bev, EV_WRITE), 0);
    drain_and_compare(&p);
    evbuffer_free(body);
    pair_close(&p);
}

/* With output already queued, nothing may overtake it. */
static void test_queued_output_is_not_overtaken(void **state)
{
    (void)state;
    struct pair p;
    bool queued = false;

    pair_open(&p, 1 << 20);
    assert_int_equal(evbuffer_add(bufferevent_get_output(p.bev), "first ", 6), 0);
    expect_bytes(&p, "first ", 6);
    expect_bytes(&p, "second", 6);
    assert_int_equal(sl_wire_send(p.bev, "second", 6, NULL, NULL, 0, &queued), 0);
    assert_true(queued);
    assert_int_equal(bufferevent_enable(p.bev, EV_WRITE), 0);
    drain_and_compare(&p);
    pair_close(&p);
}

/* Nothing yet, some bytes (appended after what was there), more than one read takes, EOF. */
static void test_read(void **state)
{
    (void)state;
    int sv[2];
    struct evbuffer *in = evbuffer_new();
    static char big[40000];
    char got[64];

    assert_non_null(in);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(evutil_make_socket_nonblocking(sv[0]), 0);
    assert_int_equal(sl_wire_read(sv[0], in), -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);

    assert_int_equal(evbuffer_add(in, "old ", 4), 0);
    assert_int_equal(write(sv[1], "new bytes", 9), 9);
    assert_int_equal(sl_wire_read(sv[0], in), 9);
    assert_int_equal(evbuffer_get_length(in), 13);
    assert_int_equal(evbuffer_remove(in, got, sizeof(got)), 13);
    assert_memory_equal(got, "old new bytes", 13);

    memset(big, 'b', sizeof(big));
    assert_int_equal(write(sv[1], big, sizeof(big)), (ssize_t)sizeof(big));
    long n, total = 0;
    while ((n = sl_wire_read(sv[0], in)) > 0) {
        assert_true(n <= 16 * 1024);
        total += n;
    }
    assert_int_equal(total, sizeof(big));
    assert_int_equal(evbuffer_get_length(in), sizeof(big));

    close(sv[1]);
    assert_int_equal(sl_wire_read(sv[0], in), 0);
    close(sv[0]);
    evbuffer_free(in);
}

static int collect(void *arg, const char *data, size_t len)
{
    return evbuffer_add(arg, data, len);
}

/*
 * A chunked body in more chains than one peek takes, all there already: it
 * is decoded in one call (nothing may wait for a read that never comes),
 * and the next message's bytes stay.
 */
static void test_dechunk_many_chains(void **state)
{
    (void)state;
    static const char *const pieces[] = {"3\r\n", "abc", "\r\n", "2;ext=1\r\n", "de",
                                         "\r\n", "1\r\n", "f", "\r\n", "4\r\n", "ghij",
                                         "\r\n", "0\r\n", "X-T: 1\r\n", "\r\n", "NEXT"};
    struct evbuffer *in = evbuffer_new(), *body = evbuffer_new();
    struct sl_http1_chunked d;
    char got[16];

    assert_non_null(in);
    assert_non_null(body);
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++)
        assert_int_equal(evbuffer_add_reference(in, pieces[i], strlen(pieces[i]), NULL, NULL), 0);
    sl_http1_chunked_init(&d);
    assert_int_equal(sl_wire_dechunk(in, &d, collect, body), 0);
    assert_true(d.done);
    assert_int_equal(evbuffer_get_length(body), 10);
    assert_int_equal(evbuffer_remove(body, got, sizeof(got)), 10);
    assert_memory_equal(got, "abcdefghij", 10);
    assert_int_equal(evbuffer_get_length(in), 4);

    /* Malformed: -1 and the reason. */
    evbuffer_drain(in, 4);
    assert_int_equal(evbuffer_add(in, "zz\r\n", 4), 0);
    sl_http1_chunked_init(&d);
    assert_int_equal(sl_wire_dechunk(in, &d, collect, body), -1);
    assert_non_null(d.error);
    evbuffer_free(in);
    evbuffer_free(body);
}

/* A head is handed to the parser only when a line end may have completed it. */
static void test_head_waits_for_a_line_end(void **state)
{
    (void)state;
    struct evbuffer *in = evbuffer_new();
    size_t scanned = 0, n = 0;
    char *buf = NULL;

    assert_non_null(in);
    assert_int_equal(sl_wire_head(in, 64, &scanned, &buf, &n), 1); /* nothing yet */
    assert_int_equal(evbuffer_add_reference(in, "GET / HTTP/1.1", 14, NULL, NULL), 0);
    assert_int_equal(sl_wire_head(in, 64, &scanned, &buf, &n), 1);
    assert_int_equal(scanned, 14);
    assert_int_equal(evbuffer_add_reference(in, "\r", 1, NULL, NULL), 0);
    /* Only the new byte is looked at. */
    assert_int_equal(sl_wire_head(in, 64, &scanned, &buf, &n), 1);
    assert_int_equal(evbuffer_add_reference(in, "\nHost: x\r\n", 10, NULL, NULL), 0);
    assert_int_equal(sl_wire_head(in, 64, &scanned, &buf, &n), 0); /* three chains, now one */
    assert_int_equal(n, 25);
    assert_memory_equal(buf, "GET / HTTP/1.1\r\nHost: x\r\n", 25);
    assert_int_equal(sl_wire_head(in, 64, &scanned, &buf, &n), 1); /* nothing new since */

    /* At the cap without a line end the parser must see it (to say too large). */
    scanned = 0;
    evbuffer_drain(in, evbuffer_get_length(in));
    for (int i = 0; i < 8; i++)
        assert_int_equal(evbuffer_add(in, "xxxxxxxx", 8), 0);
    assert_int_equal(sl_wire_head(in, 64, &scanned, &buf, &n), 0);
    assert_int_equal(n, 64);
    evbuffer_free(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_message_goes_out_at_once),
        cmocka_unit_test(test_partial_write_keeps_order),
        cmocka_unit_test(test_queued_output_is_not_overtaken),
        cmocka_unit_test(test_read),
        cmocka_unit_test(test_dechunk_many_chains),
        cmocka_unit_test(test_head_waits_for_a_line_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
