/*
 * test_redis.c - the Redis client: backoff (pure), then the connection
 * against a port that refuses, a listener that never answers (the
 * handshake times out), and a real redis-server when one is installed
 * (AUTH, SELECT, pipelining, loss and reconnect).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "clock.h"
#include "log.h"
#include "redis.h"
#include "sluice.h"

static void test_backoff(void **state)
{
    uint64_t seed = 42;

    (void)state;
    for (unsigned f = 0; f < 40; f++) {
        int64_t cap = 5000000, d = 100000;

        for (unsigned i = 0; i < f && d < cap; i++)
            d *= 2;
        if (d > cap)
            d = cap;
        for (int k = 0; k < 50; k++) {
            int64_t w = sl_redis_backoff(f, 100000, cap, &seed);

            assert_true(w >= d / 2);
            assert_true(w <= d);
        }
    }
    /* Jitter: not every wait the same. */
    assert_true(sl_redis_backoff(3, 100000, 5000000, &seed) !=
                    sl_redis_backoff(3, 100000, 5000000, &seed) ||
                sl_redis_backoff(3, 100000, 5000000, &seed) !=
                    sl_redis_backoff(3, 100000, 5000000, &seed));
}

/* --- a loop to run the client on --------------------------------------- */

struct run {
    struct event_base *base;
    int ups, downs;
    int replies, nulls;
    long long last_int;
    char last_str[64];
};

static void on_state(struct sl_redis *r, bool up, void *arg)
{
    struct run *run = arg;

    (void)r;
    if (up)
        run->ups++;
    else
        run->downs++;
    event_base_loopbreak(run->base);
}

static void on_reply(struct sl_redis *r, const redisReply *reply, void *arg)
{
    struct run *run = arg;

    (void)r;
    if (reply == NULL) {
        run->nulls++;
        return;
    }
    run->replies++;
    if (reply->type == REDIS_REPLY_INTEGER)
        run->last_int = reply->integer;
    if (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS)
        snprintf(run->last_str, sizeof(run->last_str), "%s", reply->str);
}

/* Run the loop until `*counter` reaches `want` or `ms` pass. */
static void run_until(struct run *run, int *counter, int want, int ms)
{
    int64_t end = sl_clock_now() + (int64_t)ms * 1000;
    struct timeval tick = {0, 20000};

    while (*counter < want && sl_clock_now() < end) {
        event_base_loopexit(run->base, &tick);
        event_base_dispatch(run->base);
    }
}

static struct sl_redis_url url_tcp(unsigned port)
{
    struct sl_redis_url u;

    memset(&u, 0, sizeof(u));
    snprintf(u.host, sizeof(u.host), "127.0.0.1");
    u.port = port;
    return u;
}

static unsigned free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void test_refused(void **state)
{
    struct run run = {.base = event_base_new()};
    struct sl_redis_url u = url_tcp(free_port());
    struct sl_redis *r = sl_redis_new(run.base, &u, "test", on_state, &run);
    int64_t t0 = sl_clock_now();

    (void)state;
    assert_non_null(r);
    assert_false(sl_redis_up(r));
    assert_int_equal(sl_redis_command(r, 0, on_reply, &run, "PING"), SL_EAGAIN);
    run_until(&run, &run.ups, 1, 700);
    /* Refused, retried with backoff (100 ms doubling): a few attempts, never up. */
    assert_int_equal(run.ups, 0);
    assert_true(sl_redis_stats(r)->failures >= 2);
    assert_true(sl_redis_stats(r)->failures <= 6);
    assert_true(sl_clock_now() - t0 >= 600000);
    assert_string_not_equal(sl_redis_error(r), "");
    sl_redis_free(r);
    event_base_free(run.base);
}

/* A listener that accepts (the kernel's backlog) and never answers. */
static void test_silent_server(void **state)
{
    struct run run = {.base = event_base_new()};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sl_redis_url u;
    struct sl_redis *r;

    (void)state;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    u = url_tcp(ntohs(a.sin_port));
    r = sl_redis_new(run.base, &u, "test", on_state, &run);
    run_until(&run, &run.ups, 1, (int)(SL_REDIS_TIMEOUT_US / 1000) + 500);
    assert_int_equal(run.ups, 0);
    assert_true(sl_redis_stats(r)->timeouts >= 1);
    assert_true(strstr(sl_redis_error(r), "timed out") != NULL ||
                strstr(sl_redis_error(r), "connecting") != NULL);
    sl_redis_free(r);
    close(fd);
    event_base_free(run.base);
}

/* --- a real redis-server ------------------------------------------------ */

static const char *redis_server(void)
{
    static const char *const paths[] = {"/usr/bin/redis-server", "/usr/local/bin/redis-server"};

    for (size_t i = 0; i < SL_ARRAY_LEN(paths); i++)
        if (access(paths[i], X_OK) == 0)
            return paths[i];
    return NULL;
}

static pid_t start_redis(const char *bin, unsigned port, const char *dir)
{
    char p[16];
    pid_t pid;

    snprintf(p, sizeof(p), "%u", port);
    pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", 1);

        dup2(null, 1);
        execl(bin, bin, "--port", p, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
              "--dir", dir, "--requirepass", "pw", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void stop_redis(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void test_real_server(void **state)
{
    const char *bin = redis_server();
    char dir[] = "/tmp/sluice-redis-test.XXXXXX";
    struct run run = {.base = event_base_new()};
    struct sl_redis_url u;
    struct sl_redis *r;
    unsigned port;
    pid_t pid;

    (void)state;
    if (bin == NULL) {
        event_base_free(run.base);
        skip();
    }
    assert_non_null(mkdtemp(dir));
    port = free_port();
    u = url_tcp(port);
    snprintf(u.password, sizeof(u.password), "pw");
    u.db = 3;
    pid = start_redis(bin, port, dir);
    r = sl_redis_new(run.base, &u, "test", on_state, &run);
    run_until(&run, &run.ups, 1, 5000);
    assert_int_equal(run.ups, 1);
    assert_true(sl_redis_up(r));

    /* SELECT 3 happened: the key lands in db 3. 1000 commands pipelined. */
    for (int i = 0; i < 1000; i++)
        assert_int_equal(sl_redis_command(r, 0, on_reply, &run, "INCR %s", "n"), SL_OK);
    assert_int_equal(sl_redis_pending(r), 1000);
    run_until(&run, &run.replies, 1000, 5000);
    assert_int_equal(run.replies, 1000);
    assert_int_equal(run.last_int, 1000);
    assert_int_equal(sl_redis_command(r, 0, on_reply, &run, "SELECT 3"), SL_OK);
    assert_int_equal(sl_redis_command(r, 0, on_reply, &run, "DBSIZE"), SL_OK);
    run_until(&run, &run.replies, 1002, 5000);
    assert_int_equal(run.last_int, 1);
    assert_true(sl_redis_stats(r)->rtt.count >= 1002);

    /* Binary-safe arguments. */
    {
        const char *argv[] = {"SET", "bin", "a\0b"};
        size_t lens[] = {3, 3, 3};

        assert_int_equal(sl_redis_commandv(r, 0, on_reply, &run, 3, argv, lens), SL_OK);
        assert_int_equal(sl_redis_command(r, 0, on_reply, &run, "STRLEN bin"), SL_OK);
        run_until(&run, &run.replies, 1004, 5000);
        assert_int_equal(run.last_int, 3);
    }

    /* Lost: the pending command is answered NULL, the state goes down... */
    assert_int_equal(sl_redis_command(r, 0, on_reply, &run, "BLPOP never 10"), SL_OK);
    stop_redis(pid);
    run_until(&run, &run.downs, 1, 5000);
    assert_int_equal(run.downs, 1);
    assert_int_equal(run.nulls, 1);
    assert_false(sl_redis_up(r));
    assert_int_equal(sl_redis_command(r, 0, on_reply, &run, "PING"), SL_EAGAIN);

    /* ...and comes back by itself. */
    pid = start_redis(bin, port, dir);
    run_until(&run, &run.ups, 2, 8000);
    assert_int_equal(run.ups, 2);
    assert_int_equal(sl_redis_stats(r)->connects, 2);

    /* A command not answered in time drops the connection (and reconnects). */
    kill(pid, SIGSTOP);
    assert_int_equal(sl_redis_command(r, 300000, on_reply, &run, "PING"), SL_OK);
    run_until(&run, &run.downs, 2, 3000);
    assert_int_equal(run.downs, 2);
    assert_int_equal(run.nulls, 2);
    assert_true(sl_redis_stats(r)->timeouts >= 1);
    kill(pid, SIGCONT);
    run_until(&run, &run.ups, 3, 8000);
    assert_int_equal(run.ups, 3);

    sl_redis_free(r);
    stop_redis(pid);
    rmdir(dir);
    event_base_free(run.base);
}

/* A wrong password is refused at the handshake: never up. */
static void test_wrong_password(void **state)
{
    const char *bin = redis_server();
    char dir[] = "/tmp/sluice-redis-test.XXXXXX";
    struct run run = {.base = event_base_new()};
    struct sl_redis_url u;
    struct sl_redis *r;
    unsigned port;
    pid_t pid;

    (void)state;
    if (bin == NULL) {
        event_base_free(run.base);
        skip();
    }
    assert_non_null(mkdtemp(dir));
    port = free_port();
    u = url_tcp(port);
    snprintf(u.password, sizeof(u.password), "wrong");
    pid = start_redis(bin, port, dir);
    r = sl_redis_new(run.base, &u, "test", on_state, &run);
    run_until(&run, &run.ups, 1, 1500);
    assert_int_equal(run.ups, 0);
    assert_true(strstr(sl_redis_error(r), "AUTH refused") != NULL);
    sl_redis_free(r);
    stop_redis(pid);
    rmdir(dir);
    event_base_free(run.base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_silent_server),
        cmocka_unit_test(test_real_server),
        cmocka_unit_test(test_wrong_password),
    };

    sl_log_set_level(SL_LOG_ERROR);
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
