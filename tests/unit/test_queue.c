/*
 * test_queue.c - lanes, fair flows, FIFO, caps and exact counters.
 *
 * Items are embedded in a small test struct as they are in sl_request; the
 * property test replays random operations against a plain reference model
 * of the same rules (lanes, per-key FIFOs, a rotation per lane).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "queue.h"
#include "sluice.h"

struct req {
    struct sl_queue_item item; /* first, so an item pointer is a req pointer */
    int id;
};

static struct req *req_of(struct sl_queue_item *it)
{
    return (struct req *)(void *)it;
}

static int pop_id(struct sl_queue *q)
{
    struct sl_queue_item *peek = sl_queue_peek(q);
    struct sl_queue_item *it = sl_queue_pop(q);

    assert_ptr_equal(peek, it);
    if (it == NULL)
        return -1;
    assert_null(it->flow);
    return req_of(it)->id;
}

static struct sl_queue_totals big_totals(void)
{
    struct sl_queue_totals t = {0, 0, SIZE_MAX, SIZE_MAX};

    return t;
}

static void push_ok(struct sl_queue *q, struct req *r, int id, enum sl_lane lane,
                    const char *key)
{
    r->id = id;
    assert_int_equal(sl_queue_push(q, &r->item, lane, key, 1, id, false), SL_OK);
}

static void test_lane_names(void **state)
{
    enum sl_lane lane = SL_LANE_COUNT;

    (void)state;
    assert_string_equal(sl_lane_name(SL_LANE_HIGH), "high");
    assert_string_equal(sl_lane_name(SL_LANE_NORMAL), "normal");
    assert_string_equal(sl_lane_name(SL_LANE_LOW), "low");
    assert_int_equal(sl_lane_parse("high", &lane), 0);
    assert_int_equal(lane, SL_LANE_HIGH);
    assert_int_equal(sl_lane_parse("Normal", &lane), 0);
    assert_int_equal(lane, SL_LANE_NORMAL);
    assert_int_equal(sl_lane_parse("low", &lane), 0);
    assert_int_equal(lane, SL_LANE_LOW);
    lane = SL_LANE_COUNT;
    assert_int_equal(sl_lane_parse("urgent", &lane), -1);
    assert_int_equal(sl_lane_parse("", &lane), -1);
    assert_int_equal(sl_lane_parse("hig", &lane), -1);
    assert_int_equal(sl_lane_parse(NULL, &lane), -1);
    assert_int_equal(lane, SL_LANE_COUNT);
}

static void test_fifo(void **state)
{
    enum { N = 10000 };
    struct sl_queue_totals totals = big_totals();
    struct sl_queue q;
    struct req *r = calloc(N, sizeof(*r));

    (void)state;
    assert_non_null(r);
    assert_int_equal(sl_queue_init(&q, &totals), SL_OK);
    assert_null(sl_queue_pop(&q));
    for (int i = 0; i < N; i++) {
        r[i].id = i;
        assert_int_equal(sl_queue_push(&q, &r[i].item, SL_LANE_NORMAL, NULL, 10, 1000 + i, false),
                         SL_OK);
    }
    assert_int_equal(sl_queue_depth(&q), N);
    assert_int_equal(q.bytes, 10 * N);
    assert_int_equal(totals.depth, N);
    assert_int_equal(totals.bytes, 10 * N);
    assert_int_equal(sl_queue_lane_depth(&q, SL_LANE_NORMAL), N);
    assert_int_equal(q.n_flows, 1);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].item.enqueued_us, 1000 + i);
        assert_int_equal(pop_id(&q), i);
        assert_int_equal(sl_queue_depth(&q), N - 1 - i);
    }
    assert_int_equal(pop_id(&q), -1);
    assert_int_equal(totals.depth, 0);
    assert_int_equal(totals.bytes, 0);
    assert_int_equal(q.n_flows, 0);
    sl_queue_fini(&q);
    free(r);
}

static void test_lane_priority(void **state)
{
    struct sl_queue_totals totals = big_totals();
    struct sl_queue q;
    struct req r[320] = {0};

    (void)state;
    assert_int_equal(sl_queue_init(&q, &totals), SL_OK);
    for (int i = 0; i < 5; i++)
        push_ok(&q, &r[310 + i], 310 + i, SL_LANE_LOW, NULL);
    for (int i = 0; i < 300; i++)
        push_ok(&q, &r[i], i, SL_LANE_NORMAL, NULL);
    for (int i = 300; i < 310; i++)
        push_ok(&q, &r[i], i, SL_LANE_HIGH, NULL);
    assert_int_equal(sl_queue_lane_depth(&q, SL_LANE_HIGH), 10);
    assert_int_equal(sl_queue_lane_depth(&q, SL_LANE_NORMAL), 300);
    assert_int_equal(sl_queue_lane_depth(&q, SL_LANE_LOW), 5);
    for (int i = 300; i < 310; i++)
        assert_int_equal(pop_id(&q), i);
    assert_int_equal(pop_id(&q), 0);
    /* A high arrival overtakes the normal backlog at once. */
    push_ok(&q, &r[315], 315, SL_LANE_HIGH, "k");
    assert_int_equal(pop_id(&q), 315);
    for (int i = 1; i < 300; i++)
        assert_int_equal(pop_id(&q), i);
    for (int i = 310; i < 315; i++)
        assert_int_equal(pop_id(&q), i);
    assert_int_equal(pop_id(&q), -1);
    sl_queue_fini(&q);
}

static void test_fair_round_robin(void **state)
{
    struct sl_queue_totals totals = big_totals();
    struct sl_queue q;
    struct req a[500] = {0}, b[5] = {0}, c[12] = {0};
    const char *keys[3] = {"A", "B", "C"};

    (void)state;
    assert_int_equal(sl_queue_init(&q, &totals), SL_OK);
    for (int i = 0; i < 500; i++)
        push_ok(&q, &a[i], i, SL_LANE_NORMAL, "tenant-a");
    for (int i = 0; i < 5; i++)
        push_ok(&q, &b[i], 1000 + i, SL_LANE_NORMAL, "tenant-b");
    /* B's five come out within the first ten pops, alternating with A. */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(pop_id(&q), i);
        assert_int_equal(pop_id(&q), 1000 + i);
    }
    for (int i = 5; i < 500; i++)
        assert_int_equal(pop_id(&q), i);
    assert_int_equal(q.n_flows, 0);

    /* Three keys interleave A B C A B C ... */
    for (int i = 0; i < 12; i++)
        push_ok(&q, &c[i], i, SL_LANE_NORMAL, keys[i / 4]);
    for (int round = 0; round < 4; round++) {
        for (int k = 0; k < 3; k++)
            assert_int_equal(pop_id(&q), k * 4 + round);
    }
    assert_int_equal(pop_id(&q), -1);

    /* NULL and "" are the same key; the same key in another lane is another flow. */
    push_ok(&q, &c[0], 0, SL_LANE_NORMAL, NULL);
    push_ok(&q, &c[1], 1, SL_LANE_NORMAL, "x");
    push_ok(&q, &c[2], 2, SL_LANE_NORMAL, "");
    push_ok(&q, &c[3], 3, SL_LANE_LOW, "x");
    assert_int_equal(q.n_flows, 3);
    assert_int_equal(pop_id(&q), 0);
    assert_int_equal(pop_id(&q), 1);
    assert_int_equal(pop_id(&q), 2);
    assert_int_equal(pop_id(&q), 3);
    sl_queue_fini(&q);
}

static void test_push_head(void **state)
{
    struct sl_queue_totals totals = big_totals();
    struct sl_queue q;
    struct req r[4] = {0};
    struct sl_queue_item *it;

    (void)state;
    assert_int_equal(sl_queue_init(&q, &totals), SL_OK);
    push_ok(&q, &r[0], 0, SL_LANE_NORMAL, "a");
    push_ok(&q, &r[1], 1, SL_LANE_NORMAL, "a");
    push_ok(&q, &r[2], 2, SL_LANE_NORMAL, "b");
    it = sl_queue_pop(&q);
    assert_ptr_equal(it, &r[0].item);
    /* Retried: first again, ahead of b's turn, with its first enqueue time. */
    assert_int_equal(sl_queue_push_head(&q, it), SL_OK);
    assert_int_equal(sl_queue_depth(&q), 3);
    assert_int_equal(totals.depth, 3);
    assert_int_equal(r[0].item.enqueued_us, 0);
    assert_int_equal(pop_id(&q), 0);
    assert_int_equal(pop_id(&q), 2);
    assert_int_equal(pop_id(&q), 1);

    /* Its flow was freed when it popped the last item: push_head recreates it. */
    push_ok(&q, &r[0], 0, SL_LANE_LOW, "a");
    push_ok(&q, &r[3], 3, SL_LANE_LOW, "b");
    it = sl_queue_pop(&q);
    assert_int_equal(q.n_flows, 1);
    assert_int_equal(sl_queue_push_head(&q, it), SL_OK);
    assert_int_equal(q.n_flows, 2);
    assert_int_equal(sl_queue_lane_depth(&q, SL_LANE_LOW), 2);
    assert_int_equal(pop_id(&q), 0);
    assert_int_equal(pop_id(&q), 3);

    /* push_head ignores the caps: a retry is never refused. */
    push_ok(&q, &r[1], 1, SL_LANE_HIGH, NULL);
    it = sl_queue_pop(&q);
    totals.max_depth = 0;
    totals.max_bytes = 0;
    assert_int_equal(sl_queue_push_head(&q, it), SL_OK);
    assert_int_equal(totals.depth, 1);
    assert_int_equal(totals.bytes, 1);
    assert_int_equal(pop_id(&q), 1);
    sl_queue_fini(&q);
}

static void test_remove(void **state)
{
    struct sl_queue_totals totals = big_totals();
    struct sl_queue q;
    struct req r[8] = {0};

    (void)state;
    assert_int_equal(sl_queue_init(&q, &totals), SL_OK);
    for (int i = 0; i < 5; i++)
        push_ok(&q, &r[i], i, SL_LANE_NORMAL, "a");
    push_ok(&q, &r[5], 5, SL_LANE_NORMAL, "b");
    push_ok(&q, &r[6], 6, SL_LANE_NORMAL, "c");
    sl_queue_remove(&q, &r[0].item); /* head */
    sl_queue_remove(&q, &r[2].item); /* middle */
    sl_queue_remove(&q, &r[4].item); /* tail */
    assert_null(r[0].item.flow);
    assert_int_equal(sl_queue_depth(&q), 4);
    assert_int_equal(totals.depth, 4);
    assert_int_equal(totals.bytes, 4);
    /* The last item of b: its flow goes, the rotation skips it. */
    sl_queue_remove(&q, &r[5].item);
    assert_int_equal(q.n_flows, 2);
    assert_int_equal(pop_id(&q), 1);
    assert_int_equal(pop_id(&q), 6);
    assert_int_equal(pop_id(&q), 3);
    assert_int_equal(pop_id(&q), -1);
    assert_int_equal(q.n_flows, 0);
    assert_int_equal(sl_queue_lane_depth(&q, SL_LANE_NORMAL), 0);

    /* Removing the only item empties the queue entirely. */
    push_ok(&q, &r[7], 7, SL_LANE_HIGH, "z");
    sl_queue_remove(&q, &r[7].item);
    assert_null(sl_queue_peek(&q));
    assert_int_equal(totals.depth, 0);
    assert_int_equal(totals.bytes, 0);
    sl_queue_fini(&q);
}

static void test_caps(void **state)
{
    struct sl_queue_totals totals = {0, 0, 3, 100};
    struct sl_queue q1, q2;
    struct req r[6] = {0};

    (void)state;
    assert_int_equal(sl_queue_init(&q1, &totals), SL_OK);
    assert_int_equal(sl_queue_init(&q2, &totals), SL_OK);
    assert_true(sl_queue_fits(&totals, 100));
    assert_false(sl_queue_fits(&totals, 101));
    assert_int_equal(sl_queue_push(&q1, &r[0].item, SL_LANE_NORMAL, "a", 10, 0, false), SL_OK);
    assert_int_equal(sl_queue_push(&q2, &r[1].item, SL_LANE_NORMAL, "a", 10, 0, false), SL_OK);
    /* Bytes: 20 used, 81 more is one too many, 80 fits exactly. */
    assert_int_equal(sl_queue_push(&q1, &r[2].item, SL_LANE_LOW, "b", 81, 0, false), SL_EAGAIN);
    assert_null(r[2].item.flow);
    assert_int_equal(q1.n_flows, 1);
    assert_int_equal(totals.depth, 2);
    assert_int_equal(totals.bytes, 20);
    assert_int_equal(sl_queue_lane_depth(&q1, SL_LANE_LOW), 0);
    assert_int_equal(sl_queue_push(&q1, &r[2].item, SL_LANE_LOW, "b", 80, 0, false), SL_OK);
    assert_false(sl_queue_fits(&totals, 0));
    /* Depth: the fourth item, even of 0 bytes, is refused; force bypasses. */
    assert_int_equal(sl_queue_push(&q2, &r[3].item, SL_LANE_NORMAL, NULL, 0, 0, false), SL_EAGAIN);
    assert_int_equal(q2.depth, 1);
    assert_int_equal(sl_queue_push(&q2, &r[3].item, SL_LANE_NORMAL, NULL, 50, 0, true), SL_OK);
    assert_int_equal(totals.depth, 4);
    assert_int_equal(totals.bytes, 150);
    assert_false(sl_queue_fits(&totals, 0));
    /* Over the cap (after a force) stays consistent once drained. */
    (void)sl_queue_pop(&q2);
    (void)sl_queue_pop(&q2);
    assert_int_equal(totals.depth, 2);
    assert_int_equal(totals.bytes, 90);
    assert_true(sl_queue_fits(&totals, 10));
    assert_false(sl_queue_fits(&totals, 11));
    sl_queue_fini(&q1);
    assert_int_equal(totals.depth, 0);
    assert_int_equal(totals.bytes, 0);
    sl_queue_fini(&q2);
}

static void test_long_key_and_many_flows(void **state)
{
    enum { KEYS = 1000 };
    struct sl_queue_totals totals = big_totals();
    struct sl_queue q;
    struct req *r = calloc(KEYS + 2, sizeof(*r));
    char long_key[1001];
    char keys[KEYS][8];

    (void)state;
    assert_non_null(r);
    memset(long_key, 'k', 1000);
    long_key[1000] = '\0';
    assert_int_equal(sl_queue_init(&q, &totals), SL_OK);
    push_ok(&q, &r[KEYS], -1, SL_LANE_NORMAL, long_key);
    long_key[999] = 'j'; /* the queue keeps its own copy of the key */
    push_ok(&q, &r[KEYS + 1], -2, SL_LANE_NORMAL, long_key);
    assert_int_equal(q.n_flows, 2);
    assert_int_equal(pop_id(&q), -1);
    assert_int_equal(pop_id(&q), -2);
    /* A thousand keys: the table grows and every flow is found again. */
    for (int i = 0; i < KEYS; i++) {
        snprintf(keys[i], sizeof(keys[i]), "t%d", i);
        push_ok(&q, &r[i], i, SL_LANE_NORMAL, keys[i]);
    }
    assert_int_equal(q.n_flows, KEYS);
    assert_true(q.n_buckets >= KEYS);
    for (int i = 0; i < KEYS; i++) {
        struct req extra = {0};

        push_ok(&q, &extra, 0, SL_LANE_NORMAL, keys[i]);
        assert_int_equal(q.n_flows, KEYS);
        sl_queue_remove(&q, &extra.item);
    }
    for (int i = 0; i < KEYS; i++)
        assert_int_equal(pop_id(&q), i);
    assert_int_equal(q.n_flows, 0);
    sl_queue_fini(&q);
    free(r);
}

static void test_fini_with_items(void **state)
{
    struct sl_queue_totals totals = big_totals();
    struct sl_queue q;
    struct req r[9] = {0};
    const char *keys[3] = {"a", "b", NULL};

    (void)state;
    assert_int_equal(sl_queue_init(&q, &totals), SL_OK);
    for (int i = 0; i < 9; i++)
        push_ok(&q, &r[i], i, (enum sl_lane)(i % 3), keys[i / 3]);
    assert_int_equal(q.n_flows, 9);
    sl_queue_fini(&q); /* ASan reports any flow left behind */
    for (int i = 0; i < 9; i++)
        assert_null(r[i].item.flow);
    assert_int_equal(totals.depth, 0);
    assert_int_equal(totals.bytes, 0);
}

static void test_oldest(void **state)
{
    struct sl_queue_totals totals = big_totals();
    struct sl_queue q;
    struct req r[4] = {0};
    struct sl_queue_item *it;

    (void)state;
    assert_int_equal(sl_queue_init(&q, &totals), SL_OK);
    for (int l = 0; l < SL_LANE_COUNT; l++)
        assert_int_equal(sl_queue_oldest(&q, (enum sl_lane)l), INT64_MAX);
    assert_int_equal(sl_queue_oldest(&q, SL_LANE_COUNT), INT64_MAX);
    /* The id is the enqueue time. */
    push_ok(&q, &r[0], 10, SL_LANE_NORMAL, "a");
    push_ok(&q, &r[1], 20, SL_LANE_NORMAL, "b");
    push_ok(&q, &r[2], 30, SL_LANE_NORMAL, "a");
    push_ok(&q, &r[3], 5, SL_LANE_HIGH, NULL);
    assert_int_equal(sl_queue_oldest(&q, SL_LANE_HIGH), 5);
    assert_int_equal(sl_queue_oldest(&q, SL_LANE_NORMAL), 10);
    assert_int_equal(sl_queue_oldest(&q, SL_LANE_LOW), INT64_MAX);
    assert_int_equal(pop_id(&q), 5);
    assert_int_equal(sl_queue_oldest(&q, SL_LANE_HIGH), INT64_MAX);
    /* Flow a's head leaves: b's head is now the oldest. */
    it = sl_queue_pop(&q);
    assert_ptr_equal(it, &r[0].item);
    assert_int_equal(sl_queue_oldest(&q, SL_LANE_NORMAL), 20);
    /* A retry goes back with its first time. */
    assert_int_equal(sl_queue_push_head(&q, it), SL_OK);
    assert_int_equal(sl_queue_oldest(&q, SL_LANE_NORMAL), 10);
    sl_queue_remove(&q, &r[0].item);
    sl_queue_remove(&q, &r[1].item);
    assert_int_equal(sl_queue_oldest(&q, SL_LANE_NORMAL), 30);
    assert_int_equal(pop_id(&q), 30);
    assert_int_equal(sl_queue_oldest(&q, SL_LANE_NORMAL), INT64_MAX);
    sl_queue_fini(&q);
}

/* ---- property test against a reference model ---- */

enum { POOL = 64, KEYS = 4, OPS = 200000 };

static const char *const model_keys[KEYS] = {"", "a", "b", "c"};

struct model {
    int fifo[SL_LANE_COUNT][KEYS][POOL];
    int fifo_len[SL_LANE_COUNT][KEYS];
    int rot[SL_LANE_COUNT][KEYS];
    int rot_len[SL_LANE_COUNT];
    int key_of[POOL];
    int popped[POOL]; /* popped and not finished: may be pushed back at the head */
    size_t depth, bytes, lane_depth[SL_LANE_COUNT];
};

static uint64_t rng_state;

static unsigned rnd(unsigned bound)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state % bound);
}

static void arr_remove(int *a, int *len, int at)
{
    memmove(&a[at], &a[at + 1], (size_t)(*len - at - 1) * sizeof(*a));
    (*len)--;
}

static void arr_insert(int *a, int *len, int at, int v)
{
    memmove(&a[at + 1], &a[at], (size_t)(*len - at) * sizeof(*a));
    a[at] = v;
    (*len)++;
}

static int arr_find(const int *a, int len, int v)
{
    for (int i = 0; i < len; i++) {
        if (a[i] == v)
            return i;
    }
    return -1;
}

/* Put id into its flow (tail or head) and keep the rotation rule. */
static void model_add(struct model *m, int lane, int key, int id, size_t bytes, int head)
{
    int *len = &m->fifo_len[lane][key];
    int at = arr_find(m->rot[lane], m->rot_len[lane], key);

    if (head) {
        if (at >= 0)
            arr_remove(m->rot[lane], &m->rot_len[lane], at);
        arr_insert(m->rot[lane], &m->rot_len[lane], 0, key);
    } else if (*len == 0) {
        arr_insert(m->rot[lane], &m->rot_len[lane], m->rot_len[lane], key);
    }
    arr_insert(m->fifo[lane][key], len, head ? 0 : *len, id);
    m->key_of[id] = key;
    m->depth++;
    m->bytes += bytes;
    m->lane_depth[lane]++;
}

static void model_del(struct model *m, int lane, int key, int id, size_t bytes)
{
    int *len = &m->fifo_len[lane][key];

    arr_remove(m->fifo[lane][key], len, arr_find(m->fifo[lane][key], *len, id));
    if (*len == 0)
        arr_remove(m->rot[lane], &m->rot_len[lane],
                   arr_find(m->rot[lane], m->rot_len[lane], key));
    m->depth--;
    m->bytes -= bytes;
    m->lane_depth[lane]--;
}

static int model_peek(const struct model *m, int *lane_out)
{
    for (int l = 0; l < SL_LANE_COUNT; l++) {
        if (m->rot_len[l] > 0) {
            *lane_out = l;
            return m->fifo[l][m->rot[l][0]][0];
        }
    }
    return -1;
}

static void model_pop(struct model *m, int id, int lane, size_t bytes)
{
    int key = m->key_of[id];

    /* A flow with items left goes to the tail of the rotation. */
    if (m->fifo_len[lane][key] > 1) {
        arr_remove(m->rot[lane], &m->rot_len[lane], 0);
        arr_insert(m->rot[lane], &m->rot_len[lane], m->rot_len[lane], key);
    }
    model_del(m, lane, key, id, bytes);
}

static void check_model(const struct sl_queue *q, const struct sl_queue_totals *t,
                        const struct model *m)
{
    struct sl_queue_item *it = sl_queue_peek(q);
    size_t flows = 0;
    int lane = -1;
    int id = model_peek(m, &lane);

    for (int l = 0; l < SL_LANE_COUNT; l++) {
        assert_int_equal(sl_queue_lane_depth(q, (enum sl_lane)l), m->lane_depth[l]);
        flows += (size_t)m->rot_len[l];
    }
    assert_int_equal(q->depth, m->depth);
    assert_int_equal(q->bytes, m->bytes);
    assert_int_equal(t->depth, m->depth);
    assert_int_equal(t->bytes, m->bytes);
    assert_int_equal(q->n_flows, flows);
    assert_int_equal(it == NULL ? -1 : req_of(it)->id, id);
}

static int pick(const struct req *r, int want_queued, const int *popped)
{
    for (int tries = 0; tries < 16; tries++) {
        int i = (int)rnd(POOL);

        if ((r[i].item.flow != NULL) == want_queued && (popped == NULL || popped[i]))
            return i;
    }
    return -1;
}

static void op_push(struct sl_queue *q, struct sl_queue_totals *t, struct model *m,
                    struct req *r)
{
    int i = pick(r, 0, NULL);
    int lane = (int)rnd(SL_LANE_COUNT), key = (int)rnd(KEYS);
    size_t bytes = rnd(101);
    bool force = rnd(10) == 0;
    bool fits = t->depth + 1 <= t->max_depth && t->bytes + bytes <= t->max_bytes;
    const char *k = key == 0 && rnd(2) ? NULL : model_keys[key];
    int rc;

    if (i < 0)
        return;
    rc = sl_queue_push(q, &r[i].item, (enum sl_lane)lane, k, bytes, 0, force);
    if (!force && !fits) {
        assert_int_equal(rc, SL_EAGAIN);
        assert_null(r[i].item.flow);
        return;
    }
    assert_int_equal(rc, SL_OK);
    model_add(m, lane, key, i, bytes, 0);
    m->popped[i] = 0;
}

static void op_pop(struct sl_queue *q, struct model *m)
{
    int lane = -1;
    int id = model_peek(m, &lane);
    struct sl_queue_item *it = sl_queue_pop(q);

    assert_int_equal(it == NULL ? -1 : req_of(it)->id, id);
    if (it == NULL)
        return;
    model_pop(m, id, lane, it->bytes);
    m->popped[id] = 1;
}

static void op_push_head(struct sl_queue *q, struct model *m, struct req *r)
{
    int i = pick(r, 0, m->popped);

    if (i < 0)
        return;
    assert_int_equal(sl_queue_push_head(q, &r[i].item), SL_OK);
    model_add(m, (int)r[i].item.lane, m->key_of[i], i, r[i].item.bytes, 1);
    m->popped[i] = 0;
}

static void op_remove(struct sl_queue *q, struct model *m, struct req *r)
{
    int i = pick(r, 1, NULL);

    if (i < 0)
        return;
    sl_queue_remove(q, &r[i].item);
    model_del(m, (int)r[i].item.lane, m->key_of[i], i, r[i].item.bytes);
}


/* Pop one item and mark it gone; 0 once the queue is empty. */
static int head_pop_all(struct sl_queue *q, bool *queued)
{
    struct sl_queue_item *it = sl_queue_pop(q);

    if (it == NULL)
        return 0;
    queued[req_of(it)->id] = false;
    return 1;
}

/* --- waiting flows ---------------------------------------------------------- */

/* A flow whose head may not go yet steps aside: the others are served meanwhile. */
static void test_block_and_wake(void **state)
{
    struct sl_queue_totals totals = big_totals();
    struct sl_queue q;
    struct req r[6] = {0};

    (void)state;
    assert_int_equal(sl_queue_init(&q, &totals), SL_OK);
    push_ok(&q, &r[0], 0, SL_LANE_NORMAL, "a");
    push_ok(&q, &r[1], 1, SL_LANE_NORMAL, "a");
    push_ok(&q, &r[2], 2, SL_LANE_NORMAL, "b");
    push_ok(&q, &r[3], 3, SL_LANE_NORMAL, "c");
    assert_int_equal(sl_queue_wake_at(&q), 0);
    assert_int_equal(sl_queue_block(&q, sl_queue_peek(&q), 500), SL_OK);
    assert_int_equal(sl_queue_waiting(&q), 1);
    assert_int_equal(sl_queue_wake_at(&q), 500);
    /* Items pushed to a waiting flow wait with it. */
    push_ok(&q, &r[4], 4, SL_LANE_NORMAL, "a");
    assert_int_equal(pop_id(&q), 2);
    assert_int_equal(sl_queue_wake(&q, 499, 10), 0);
    assert_int_equal(pop_id(&q), 3);
    assert_null(sl_queue_peek(&q));
    assert_int_equal(sl_queue_depth(&q), 3);
    assert_int_equal(sl_queue_wake(&q, 500, 10), 1);
    assert_int_equal(sl_queue_wake_at(&q), 0);
    assert_int_equal(pop_id(&q), 0);
    assert_int_equal(pop_id(&q), 1);
    assert_int_equal(pop_id(&q), 4);
    assert_int_equal(q.n_flows, 0);
    sl_queue_fini(&q);
}

/* Waits end in the order of their instants, ties in the order they began. */
static void test_wake_order(void **state)
{
    static const int64_t until[] = {300, 100, 200, 100, 50, 300};
    struct sl_queue_totals totals = big_totals();
    struct sl_queue q;
    struct req r[6] = {0};
    char key[8];

    (void)state;
    assert_int_equal(sl_queue_init(&q, &totals), SL_OK);
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        push_ok(&q, &r[i], i, SL_LANE_NORMAL, key);
    }
    for (int i = 0; i < 6; i++) {
        struct sl_queue_item *head = sl_queue_peek(&q);

        assert_int_equal(req_of(head)->id, i);
        assert_int_equal(sl_queue_block(&q, head, until[i]), SL_OK);
    }
    assert_null(sl_queue_peek(&q));
    /* At most `max` per call. */
    assert_int_equal(sl_queue_wake(&q, 1000, 2), 2);
    assert_int_equal(pop_id(&q), 4);
    assert_int_equal(pop_id(&q), 1);
    assert_int_equal(sl_queue_wake(&q, 1000, 10), 4);
    assert_int_equal(pop_id(&q), 3);
    assert_int_equal(pop_id(&q), 2);
    assert_int_equal(pop_id(&q), 0);
    assert_int_equal(pop_id(&q), 5);
    sl_queue_fini(&q);
}

/* Leaving a waiting flow, a retry into one, unblocking by key and all. */
static void test_waiting_flows_change(void **state)
{
    struct sl_queue_totals totals = big_totals();
    struct sl_queue q;
    struct req r[8] = {0};
    struct sl_queue_item *it;

    (void)state;
    assert_int_equal(sl_queue_init(&q, &totals), SL_OK);
    push_ok(&q, &r[0], 0, SL_LANE_NORMAL, "a");
    push_ok(&q, &r[1], 1, SL_LANE_NORMAL, "b");
    push_ok(&q, &r[2], 2, SL_LANE_HIGH, "b");
    push_ok(&q, &r[3], 3, SL_LANE_NORMAL, "c");
    assert_int_equal(sl_queue_block(&q, sl_queue_peek(&q), 100), SL_OK); /* b, high */
    assert_int_equal(sl_queue_block(&q, sl_queue_peek(&q), 200), SL_OK); /* a */
    assert_int_equal(sl_queue_block(&q, sl_queue_peek(&q), 300), SL_OK); /* b, normal */
    assert_int_equal(sl_queue_waiting(&q), 3);
    /* The last item of a waiting flow leaves: the flow goes, the heap stays sound. */
    sl_queue_remove(&q, &r[0].item);
    assert_int_equal(sl_queue_waiting(&q), 2);
    assert_int_equal(sl_queue_wake_at(&q), 100);
    /* Both lanes of key b come back at once (an answer may allow it early). */
    sl_queue_unblock_key(&q, "b");
    assert_int_equal(sl_queue_waiting(&q), 0);
    assert_int_equal(pop_id(&q), 2);
    /* A retry of a waiting flow's key goes first again. */
    assert_int_equal(sl_queue_block(&q, sl_queue_peek(&q), 400), SL_OK); /* c */
    it = sl_queue_peek(&q);
    assert_int_equal(req_of(it)->id, 1);
    assert_int_equal(sl_queue_block(&q, it, 400), SL_OK); /* b */
    it = &r[2].item;
    it->lane = SL_LANE_NORMAL;
    it->key = "b";
    assert_int_equal(sl_queue_push_head(&q, it), SL_OK);
    assert_int_equal(sl_queue_waiting(&q), 1);
    assert_int_equal(pop_id(&q), 2);
    assert_int_equal(pop_id(&q), 1);
    assert_null(sl_queue_peek(&q));
    sl_queue_unblock_all(&q);
    assert_int_equal(pop_id(&q), 3);
    assert_int_equal(sl_queue_depth(&q), 0);
    assert_int_equal(q.n_flows, 0);
    sl_queue_fini(&q);
}

/* Random blocks, wakes, pushes and removals: the heap hands flows back in order. */
static void test_property_waiting(void **state)
{
    enum { N = 400, NKEYS = 40 };
    struct sl_queue_totals totals = big_totals();
    struct sl_queue q;
    struct req *r = calloc(N, sizeof(*r));
    bool queued[N] = {false};
    uint64_t x = 0x9e3779b97f4a7c15u;
    int64_t now = 0, last_woken = 0;
    int next = 0;
    char keys[NKEYS][8];

    (void)state;
    assert_non_null(r);
    assert_int_equal(sl_queue_init(&q, &totals), SL_OK);
    for (int i = 0; i < NKEYS; i++)
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
    for (int step = 0; step < 20000; step++) {
        struct sl_queue_item *head;
        unsigned op;

        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        op = (unsigned)(x % 5);
        if (op == 0 && next < N) {
            push_ok(&q, &r[next], next, (enum sl_lane)(x / 5 % SL_LANE_COUNT),
                    keys[x / 15 % NKEYS]);
            queued[next++] = true;
        } else if (op == 1 && (head = sl_queue_peek(&q)) != NULL) {
            assert_int_equal(sl_queue_block(&q, head, now + (int64_t)(x / 7 % 100)), SL_OK);
        } else if (op == 2) {
            int64_t at = sl_queue_wake_at(&q);
            size_t woke;

            now += (int64_t)(x / 11 % 30);
            woke = sl_queue_wake(&q, now, 3);
            /* What came back was due, earliest first across calls. */
            if (woke > 0) {
                assert_true(at <= now);
                assert_true(at >= last_woken);
                last_woken = at;
            }
            if (sl_queue_waiting(&q) > 0 && woke < 3)
                assert_true(sl_queue_wake_at(&q) > now);
        } else if (op == 3 && next > 0) {
            int i = (int)(x / 13 % (unsigned)next);

            if (queued[i]) {
                sl_queue_remove(&q, &r[i].item);
                queued[i] = false;
            }
        } else if (op == 4 && (head = sl_queue_pop(&q)) != NULL) {
            queued[req_of(head)->id] = false;
        }
        if (sl_queue_waiting(&q) == 0)
            last_woken = 0;
    }
    sl_queue_unblock_all(&q);
    while ((head_pop_all(&q, queued)) != 0)
        ;
    for (int i = 0; i < N; i++)
        assert_false(queued[i]);
    assert_int_equal(sl_queue_depth(&q), 0);
    assert_int_equal(q.n_flows, 0);
    sl_queue_fini(&q);
    free(r);
}

static void test_property_counters(void **state)
{
    struct sl_queue_totals totals = {0, 0, 40, 2000};
    struct sl_queue q;
    struct req r[POOL];
    struct model *m = calloc(1, sizeof(*m));

    (void)state;
    assert_non_null(m);
    memset(r, 0, sizeof(r));
    for (int i = 0; i < POOL; i++)
        r[i].id = i;
    rng_state = 0x2545F4914F6CDD1Du;
    assert_int_equal(sl_queue_init(&q, &totals), SL_OK);
    for (int op = 0; op < OPS; op++) {
        unsigned what = rnd(100);

        if (what < 40)
            op_push(&q, &totals, m, r);
        else if (what < 65)
            op_pop(&q, m);
        else if (what < 80)
            op_push_head(&q, m, r);
        else
            op_remove(&q, m, r);
        check_model(&q, &totals, m);
    }
    sl_queue_fini(&q);
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lane_names),
        cmocka_unit_test(test_fifo),
        cmocka_unit_test(test_lane_priority),
        cmocka_unit_test(test_fair_round_robin),
        cmocka_unit_test(test_push_head),
        cmocka_unit_test(test_remove),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_long_key_and_many_flows),
        cmocka_unit_test(test_fini_with_items),
        cmocka_unit_test(test_oldest),
        cmocka_unit_test(test_property_counters),
        cmocka_unit_test(test_block_and_wake),
        cmocka_unit_test(test_wake_order),
        cmocka_unit_test(test_waiting_flows_change),
        cmocka_unit_test(test_property_waiting),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
