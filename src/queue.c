/*
 * queue.c - priority lanes of round-robin flows of FIFO items (see queue.h).
 *
 * A flow is one (lane, fair key) pair. It exists only while it holds items:
 * then it sits both in its lane's rotation and in a chained hash table that
 * finds it by key. The table starts at 64 buckets and doubles when the load
 * passes 1, so a lookup stays short whatever the number of keys. A flow
 * that waits is in the heap instead of its rotation (never in both).
 */
#include "queue.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hash.h"
#include "sluice.h"

#define INITIAL_BUCKETS 64
#define NOT_WAITING SIZE_MAX

struct sl_queue_flow {
    TAILQ_ENTRY(sl_queue_flow) rot;      /* in its lane's rotation */
    TAILQ_HEAD(, sl_queue_item) items;   /* FIFO */
    struct sl_queue_flow *next;          /* hash chain */
    uint64_t hash;
    int64_t until;                       /* waiting: its head may not go before */
    uint64_t seq;                        /* waiting: when it started to wait */
    size_t heap_i;                       /* its index in the heap, or NOT_WAITING */
    enum sl_lane lane;
    char key[];                          /* owned copy */
};

static const char *const lane_names[SL_LANE_COUNT] = {"high", "normal", "low"};

const char *sl_lane_name(enum sl_lane lane)
{
    return (unsigned)lane < SL_LANE_COUNT ? lane_names[lane] : "unknown";
}

int sl_lane_parse(const char *s, enum sl_lane *out)
{
    for (unsigned i = 0; s != NULL && i < SL_LANE_COUNT; i++) {
        if (strcasecmp(s, lane_names[i]) == 0) {
            *out = (enum sl_lane)i;
            return 0;
        }
    }
    return -1;
}

/* Drawn at the first queue: clients choose fair keys, not where they land. */
static struct sl_hash_key flow_key;
static bool flow_key_drawn;

/* The key's keyed hash, with the lane mixed in (one table holds every lane). */
static uint64_t flow_hash(enum sl_lane lane, const char *key)
{
    return sl_hash(&flow_key, key, strlen(key)) ^ ((uint64_t)lane * UINT64_C(0x9e3779b97f4a7c15));
}

int sl_queue_init(struct sl_queue *q, struct sl_queue_totals *totals)
{
    memset(q, 0, sizeof(*q));
    if (!flow_key_drawn) {
        sl_hash_key_random(&flow_key);
        flow_key_drawn = true;
    }
    q->buckets = calloc(INITIAL_BUCKETS, sizeof(*q->buckets));
    if (q->buckets == NULL)
        return SL_ENOMEM;
    q->n_buckets = INITIAL_BUCKETS;
    q->totals = totals;
    for (int i = 0; i < SL_LANE_COUNT; i++)
        TAILQ_INIT(&q->lanes[i].rotation);
    return SL_OK;
}

void sl_queue_fini(struct sl_queue *q)
{
    for (size_t b = 0; q->buckets != NULL && b < q->n_buckets; b++) {
        struct sl_queue_flow *f = q->buckets[b];

        while (f != NULL) {
            struct sl_queue_flow *next = f->next;
            struct sl_queue_item *it;

            TAILQ_FOREACH(it, &f->items, link)
                it->flow = NULL;
            free(f);
            f = next;
        }
    }
    free(q->buckets);
    free(q->heap);
    if (q->totals != NULL) {
        q->totals->depth -= q->depth;
        q->totals->bytes -= q->bytes;
    }
    memset(q, 0, sizeof(*q));
}

bool sl_queue_fits(const struct sl_queue_totals *t, size_t bytes)
{
    if (t->depth >= t->max_depth || t->bytes > t->max_bytes)
        return false;
    return bytes <= t->max_bytes - t->bytes;
}

static struct sl_queue_flow *flow_find(const struct sl_queue *q, enum sl_lane lane,
                                       const char *key, uint64_t hash)
{
    struct sl_queue_flow *f = q->buckets[hash % q->n_buckets];

    for (; f != NULL; f = f->next) {
        if (f->hash == hash && f->lane == lane && strcmp(f->key, key) == 0)
            return f;
    }
    return NULL;
}

/* Double the table; on allocation failure keep the old one (still correct). */
static void table_grow(struct sl_queue *q)
{
    size_t n = q->n_buckets * 2;
    struct sl_queue_flow **b = calloc(n, sizeof(*b));

    if (b == NULL)
        return;
    for (size_t i = 0; i < q->n_buckets; i++) {
        struct sl_queue_flow *f = q->buckets[i];

        while (f != NULL) {
            struct sl_queue_flow *next = f->next;

            f->next = b[f->hash % n];
            b[f->hash % n] = f;
            f = next;
        }
    }
    free(q->buckets);
    q->buckets = b;
    q->n_buckets = n;
}

/* The flow for (lane, key), created empty and unrotated if absent; NULL on ENOMEM. */
static struct sl_queue_flow *flow_get(struct sl_queue *q, enum sl_lane lane, const char *key)
{
    uint64_t hash = flow_hash(lane, key);
    struct sl_queue_flow *f = flow_find(q, lane, key, hash);
    size_t len;

    if (f != NULL)
        return f;
    len = strlen(key);
    f = malloc(sizeof(*f) + len + 1);
    if (f == NULL)
        return NULL;
    memcpy(f->key, key, len + 1);
    TAILQ_INIT(&f->items);
    f->heap_i = NOT_WAITING;
    f->hash = hash;
    f->lane = lane;
    f->next = q->buckets[hash % q->n_buckets];
    q->buckets[hash % q->n_buckets] = f;
    if (++q->n_flows > q->n_buckets)
        table_grow(q);
    return f;
}

/* --- the heap of waiting flows ------------------------------------------- */

static bool heap_less(const struct sl_queue_flow *a, const struct sl_queue_flow *b)
{
    return a->until < b->until || (a->until == b->until && a->seq < b->seq);
}

static void heap_set(struct sl_queue *q, size_t i, struct sl_queue_flow *f)
{
    q->heap[i] = f;
    f->heap_i = i;
}

static void heap_up(struct sl_queue *q, size_t i)
{
    struct sl_queue_flow *f = q->heap[i];

    while (i > 0 && heap_less(f, q->heap[(i - 1) / 2])) {
        heap_set(q, i, q->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(q, i, f);
}

static void heap_down(struct sl_queue *q, size_t i)
{
    struct sl_queue_flow *f = q->heap[i];

    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= q->n_heap)
            break;
        if (c + 1 < q->n_heap && heap_less(q->heap[c + 1], q->heap[c]))
            c++;
        if (!heap_less(q->heap[c], f))
            break;
        heap_set(q, i, q->heap[c]);
        i = c;
    }
    heap_set(q, i, f);
}

static void heap_remove(struct sl_queue *q, struct sl_queue_flow *f)
{
    size_t i = f->heap_i;
    struct sl_queue_flow *last = q->heap[--q->n_heap];

    f->heap_i = NOT_WAITING;
    if (i == q->n_heap)
        return;
    heap_set(q, i, last);
    heap_down(q, i);
    heap_up(q, last->heap_i);
}

/* Out of its rotation or out of the heap, wherever it is. */
static void flow_unlink(struct sl_queue *q, struct sl_queue_flow *f)
{
    if (f->heap_i != NOT_WAITING)
        heap_remove(q, f);
    else
        TAILQ_REMOVE(&q->lanes[f->lane].rotation, f, rot);
}

int sl_queue_block(struct sl_queue *q, struct sl_queue_item *head, int64_t until)
{
    struct sl_queue_flow *f = head->flow;

    assert(f != NULL && f->heap_i == NOT_WAITING && TAILQ_FIRST(&f->items) == head);
    if (q->n_heap == q->cap_heap) {
        size_t cap = q->cap_heap == 0 ? 16 : q->cap_heap * 2;
        struct sl_queue_flow **h = realloc(q->heap, cap * sizeof(*h));

        if (h == NULL)
            return SL_ENOMEM;
        q->heap = h;
        q->cap_heap = cap;
    }
    TAILQ_REMOVE(&q->lanes[f->lane].rotation, f, rot);
    f->until = until;
    f->seq = q->wait_seq++;
    heap_set(q, q->n_heap++, f);
    heap_up(q, q->n_heap - 1);
    return SL_OK;
}

size_t sl_queue_wake(struct sl_queue *q, int64_t now, size_t max)
{
    size_t n = 0;

    while (n < max && q->n_heap > 0 && q->heap[0]->until <= now) {
        struct sl_queue_flow *f = q->heap[0];

        heap_remove(q, f);
        TAILQ_INSERT_TAIL(&q->lanes[f->lane].rotation, f, rot);
        n++;
    }
    return n;
}

int64_t sl_queue_wake_at(const struct sl_queue *q)
{
    return q->n_heap > 0 ? q->heap[0]->until : 0;
}

void sl_queue_unblock_key(struct sl_queue *q, const char *key)
{
    uint64_t hash;
    struct sl_queue_flow *f;

    if (q->n_heap == 0)
        return;
    if (key == NULL)
        key = "";
    for (int lane = 0; lane < SL_LANE_COUNT; lane++) {
        hash = flow_hash((enum sl_lane)lane, key);
        f = flow_find(q, (enum sl_lane)lane, key, hash);
        if (f != NULL && f->heap_i != NOT_WAITING) {
            heap_remove(q, f);
            TAILQ_INSERT_TAIL(&q->lanes[lane].rotation, f, rot);
        }
    }
}

void sl_queue_unblock_all(struct sl_queue *q)
{
    (void)sl_queue_wake(q, INT64_MAX, SIZE_MAX);
}

/* Free a flow that has just become empty: out of its rotation and its chain. */
static void flow_release(struct sl_queue *q, struct sl_queue_flow *f)
{
    struct sl_queue_flow **pp = &q->buckets[f->hash % q->n_buckets];

    flow_unlink(q, f);
    while (*pp != f)
        pp = &(*pp)->next;
    *pp = f->next;
    q->n_flows--;
    free(f);
}

static void count_in(struct sl_queue *q, const struct sl_queue_item *item)
{
    q->depth++;
    q->bytes += item->bytes;
    q->lanes[item->lane].depth++;
    q->totals->depth++;
    q->totals->bytes += item->bytes;
}

static void count_out(struct sl_queue *q, const struct sl_queue_item *item)
{
    q->depth--;
    q->bytes -= item->bytes;
    q->lanes[item->lane].depth--;
    q->totals->depth--;
    q->totals->bytes -= item->bytes;
}

int sl_queue_push(struct sl_queue *q, struct sl_queue_item *item, enum sl_lane lane,
                  const char *key, size_t bytes, int64_t now, bool force)
{
    struct sl_queue_flow *f;

    assert(item->flow == NULL);
    if ((unsigned)lane >= SL_LANE_COUNT)
        return SL_ERR;
    if (!force && !sl_queue_fits(q->totals, bytes))
        return SL_EAGAIN;
    if (key == NULL)
        key = "";
    f = flow_get(q, lane, key);
    if (f == NULL)
        return SL_ENOMEM;
    if (TAILQ_EMPTY(&f->items))
        TAILQ_INSERT_TAIL(&q->lanes[lane].rotation, f, rot);
    TAILQ_INSERT_TAIL(&f->items, item, link);
    item->flow = f;
    item->lane = lane;
    item->key = key;
    item->bytes = bytes;
    item->enqueued_us = now;
    count_in(q, item);
    return SL_OK;
}

int sl_queue_push_head(struct sl_queue *q, struct sl_queue_item *item)
{
    struct sl_queue_flow *f;

    assert(item->flow == NULL);
    if ((unsigned)item->lane >= SL_LANE_COUNT)
        return SL_ERR;
    f = flow_get(q, item->lane, item->key != NULL ? item->key : "");
    if (f == NULL)
        return SL_ENOMEM;
    /* A retry goes first, whatever its flow was waiting for (the dispatcher looks again). */
    if (!TAILQ_EMPTY(&f->items))
        flow_unlink(q, f);
    TAILQ_INSERT_HEAD(&q->lanes[item->lane].rotation, f, rot);
    TAILQ_INSERT_HEAD(&f->items, item, link);
    item->flow = f;
    count_in(q, item);
    return SL_OK;
}

struct sl_queue_item *sl_queue_peek(const struct sl_queue *q)
{
    for (int i = 0; i < SL_LANE_COUNT; i++) {
        const struct sl_queue_flow *f = TAILQ_FIRST(&q->lanes[i].rotation);

        if (f != NULL)
            return TAILQ_FIRST(&f->items);
    }
    return NULL;
}

struct sl_queue_item *sl_queue_pop(struct sl_queue *q)
{
    struct sl_queue_item *item = sl_queue_peek(q);
    struct sl_queue_flow *f;

    if (item == NULL)
        return NULL;
    f = item->flow;
    /* A flow that keeps items waits for its next turn at the tail. */
    if (TAILQ_NEXT(item, link) != NULL) {
        TAILQ_REMOVE(&q->lanes[f->lane].rotation, f, rot);
        TAILQ_INSERT_TAIL(&q->lanes[f->lane].rotation, f, rot);
    }
    sl_queue_remove(q, item); /* frees the flow if that was its last item */
    return item;
}

void sl_queue_remove(struct sl_queue *q, struct sl_queue_item *item)
{
    struct sl_queue_flow *f = item->flow;

    assert(f != NULL);
    if (f == NULL)
        return;
    TAILQ_REMOVE(&f->items, item, link);
    item->flow = NULL;
    count_out(q, item);
    if (TAILQ_EMPTY(&f->items))
        flow_release(q, f);
}

int64_t sl_queue_oldest(const struct sl_queue *q, enum sl_lane lane)
{
    const struct sl_queue_flow *f;
    int64_t oldest = INT64_MAX;

    if ((unsigned)lane >= SL_LANE_COUNT)
        return oldest;
    TAILQ_FOREACH(f, &q->lanes[lane].rotation, rot) {
        const struct sl_queue_item *head = TAILQ_FIRST(&f->items);

        if (head->enqueued_us < oldest)
            oldest = head->enqueued_us;
    }
    /* Flows waiting for their key's limit are parked too, out of the rotation. */
    for (size_t i = 0; i < q->n_heap; i++) {
        const struct sl_queue_item *head = TAILQ_FIRST(&q->heap[i]->items);

        if (q->heap[i]->lane == lane && head->enqueued_us < oldest)
            oldest = head->enqueued_us;
    }
    return oldest;
}
