/*
 * keys.c - per-key strict limiters in a compact hash table (see keys.h).
 *
 * Slots are 32-bit indices into chunks of nodes that never move, so a
 * request can hold its key's slot. Slot 0 is the default bucket: never in a
 * hash chain, never idle, never evicted, which lets 0 mean "none" in every
 * link (chains, the idle list, the free list, the bucket heads). Buckets
 * double when the keys outnumber them; they never shrink (the table is
 * bounded by max_keys).
 */
#include "keys.h"

#include <string.h>

#include "sluice.h"

#define CHUNK 1024u               /* nodes per chunk (40 KiB) */
#define INITIAL_BUCKETS 64u
#define LAZY_EVICT 2              /* idle keys a new key evicts on its way in */
#define NONE 0u

/* One key. 40 bytes; slot 0 is the default bucket. */
struct sl_keys_node {
    uint64_t id;                  /* 0: free (or the default bucket) */
    int64_t at_us;                /* compact: TAT; full: when its windows pass (while idle) */
    uint32_t chain;               /* next in its bucket, or on the free list */
    uint32_t prev, next;          /* idle list */
    uint32_t units;               /* units dispatched since created (saturating) */
    uint32_t parked;              /* requests of it parked */
    uint32_t in_flight;           /* dispatches not yet answered */
};

_Static_assert(sizeof(struct sl_keys_node) == 40, "a key is 40 bytes");

uint64_t sl_keys_id(const struct sl_keys *k, const void *value, size_t len)
{
    uint64_t id = sl_hash(&k->seed, value, len);

    return id != SL_KEYS_DEFAULT_ID ? id : 1;
}

/* ---- slots --------------------------------------------------------------- */

static struct sl_keys_node *node(const struct sl_keys *k, uint32_t slot)
{
    return &k->chunks[slot / CHUNK][slot % CHUNK];
}

static struct sl_limiter *full_of(const struct sl_keys *k, uint32_t slot)
{
    return k->limiters[slot / CHUNK][slot % CHUNK];
}

static void set_full(struct sl_keys *k, uint32_t slot, struct sl_limiter *l)
{
    k->limiters[slot / CHUNK][slot % CHUNK] = l;
}

/* A new full limiter with the keys' limits, or NULL. */
static struct sl_limiter *full_new(const struct sl_keys *k)
{
    struct sl_limiter *l = malloc(sizeof(*l));

    if (l == NULL)
        return NULL;
    if (sl_limiter_init(l, &k->rate, k->burst, k->quotas, k->n_quotas) != SL_OK) {
        free(l);
        return NULL;
    }
    sl_limiter_set_dating(l, k->guard_us, k->by_answer);
    return l;
}

static void full_free(struct sl_limiter *l)
{
    if (l != NULL)
        sl_limiter_fini(l);
    free(l);
}

/* One more chunk of slots (and of limiter pointers when full). */
static int add_chunk(struct sl_keys *k)
{
    size_t n = k->n_chunks + 1;
    struct sl_keys_node **chunks = realloc(k->chunks, n * sizeof(*chunks));
    struct sl_limiter ***lims;

    if (chunks == NULL)
        return SL_ENOMEM;
    k->chunks = chunks;
    if (!k->compact) {
        lims = realloc(k->limiters, n * sizeof(*lims));
        if (lims == NULL)
            return SL_ENOMEM;
        k->limiters = lims;
        lims[k->n_chunks] = calloc(CHUNK, sizeof(**lims));
        if (lims[k->n_chunks] == NULL)
            return SL_ENOMEM;
    }
    /* Not zeroed: a slot is initialised when it is handed out (keeps RSS to what is used). */
    chunks[k->n_chunks] = malloc(CHUNK * sizeof(**chunks));
    if (chunks[k->n_chunks] == NULL) {
        if (!k->compact)
            free(k->limiters[k->n_chunks]);
        return SL_ENOMEM;
    }
    k->n_chunks = n;
    return SL_OK;
}

/* A free slot, zeroed; NONE when out of memory. */
static uint32_t slot_alloc(struct sl_keys *k)
{
    uint32_t s = k->free_list;

    if (s != NONE) {
        k->free_list = node(k, s)->chain;
    } else {
        if (k->n_used == UINT32_MAX - 1)
            return NONE;
        if (k->n_used / CHUNK >= k->n_chunks && add_chunk(k) != SL_OK)
            return NONE;
        s = k->n_used++;
    }
    memset(node(k, s), 0, sizeof(struct sl_keys_node));
    return s;
}

/* ---- limits -------------------------------------------------------------- */

/* Longest window of the limits, normalised; -1 if a limit is refused. */
static int64_t longest_window(const struct sl_limit *rate, const struct sl_limit *quotas,
                              size_t n_quotas)
{
    int64_t longest = 0;

    for (size_t i = 0; i <= n_quotas; i++) {
        uint32_t n;
        int64_t w;

        if (sl_limiter_normalize(i == 0 ? rate : &quotas[i - 1], &n, &w) != 0)
            return -1;
        if (w > longest)
            longest = w;
    }
    return longest;
}

/* Parameters from cfg into k (not its storage); SL_ERR on a refused limit. */
static int set_limits(struct sl_keys *k, const struct sl_route_config *cfg)
{
    uint32_t n;
    int64_t window, guard, longest, span;
    struct sl_limiter probe;

    /* The limiter validates rate, burst and quotas once for all keys. */
    if (sl_limiter_init(&probe, &cfg->rate, cfg->burst, cfg->quotas, cfg->n_quotas) != SL_OK)
        return SL_ERR;
    sl_limiter_set_dating(&probe, cfg->window_guard_us, cfg->jitter_proof);
    guard = probe.logs[0].guard_us;
    sl_limiter_fini(&probe);
    if (sl_limiter_normalize(&cfg->rate, &n, &window) != 0)
        return SL_ERR;
    longest = longest_window(&cfg->rate, cfg->quotas, cfg->n_quotas);
    span = longest + guard;
    k->rate = cfg->rate;
    k->burst = cfg->burst;
    memcpy(k->quotas, cfg->quotas, sizeof(k->quotas));
    k->n_quotas = cfg->n_quotas;
    k->max_cost = cfg->max_cost > 0 ? cfg->max_cost : 1;
    k->guard_us = cfg->window_guard_us;
    k->by_answer = cfg->jitter_proof;
    k->compact = cfg->burst <= 1 && cfg->n_quotas == 0 && !cfg->jitter_proof;
    k->span_us = span;
    k->max_keys = cfg->max_keys > 0 ? cfg->max_keys : 1;
    if (k->compact) {
        /* The leaky bucket of max_cost units: I = (P + guard) / (N + 1 - max_cost). */
        int64_t room = (int64_t)n + 1 - (int64_t)k->max_cost;

        if (room < 1)
            return SL_ERR;
        k->interval_us = (window + guard + room - 1) / room;
    } else {
        k->interval_us = 0;
    }
    return SL_OK;
}

bool sl_keys_same_limits(const struct sl_route_config *a, const struct sl_route_config *b)
{
    if (a->rate.n != b->rate.n || a->rate.period_us != b->rate.period_us ||
        a->burst != b->burst || a->n_quotas != b->n_quotas || a->max_cost != b->max_cost ||
        a->window_guard_us != b->window_guard_us || a->jitter_proof != b->jitter_proof)
        return false;
    for (size_t i = 0; i < a->n_quotas; i++) {
        if (a->quotas[i].n != b->quotas[i].n || a->quotas[i].period_us != b->quotas[i].period_us)
            return false;
    }
    return true;
}

struct sl_keys *sl_keys_new(const struct sl_route_config *cfg, const struct sl_hash_key *seed)
{
    struct sl_keys *k = calloc(1, sizeof(*k));
    uint32_t s;

    if (k == NULL)
        return NULL;
    k->seed = *seed;
    if (set_limits(k, cfg) != SL_OK)
        goto fail;
    k->buckets = calloc(INITIAL_BUCKETS, sizeof(*k->buckets));
    if (k->buckets == NULL)
        goto fail;
    k->mask = INITIAL_BUCKETS - 1;
    k->last_take_us = INT64_MIN;
    /* Slot 0: the default bucket. */
    s = slot_alloc(k);
    if (s != SL_KEYS_DEFAULT_SLOT)
        goto fail;
    if (!k->compact) {
        struct sl_limiter *l = full_new(k);

        if (l == NULL)
            goto fail;
        set_full(k, s, l);
    }
    return k;

fail:
    sl_keys_free(k);
    return NULL;
}

void sl_keys_free(struct sl_keys *k)
{
    if (k == NULL)
        return;
    for (size_t c = 0; c < k->n_chunks; c++) {
        if (k->limiters != NULL) {
            for (uint32_t i = 0; i < CHUNK; i++)
                full_free(k->limiters[c][i]);
            free(k->limiters[c]);
        }
        free(k->chunks[c]);
    }
    free(k->limiters);
    free(k->chunks);
    free(k->buckets);
    free(k);
}

/* ---- the hash table and the idle list ------------------------------------ */

static uint32_t find(const struct sl_keys *k, uint64_t id)
{
    uint32_t s = k->buckets[id & k->mask];

    while (s != NONE && node(k, s)->id != id)
        s = node(k, s)->chain;
    return s;
}

static void chain_insert(struct sl_keys *k, uint32_t s)
{
    uint32_t *head = &k->buckets[node(k, s)->id & k->mask];

    node(k, s)->chain = *head;
    *head = s;
}

static void chain_remove(struct sl_keys *k, uint32_t s)
{
    uint32_t *pp = &k->buckets[node(k, s)->id & k->mask];

    while (*pp != s)
        pp = &node(k, *pp)->chain;
    *pp = node(k, s)->chain;
}

/* Double the buckets; on allocation failure keep the old ones (still correct). */
static void table_grow(struct sl_keys *k)
{
    size_t n = ((size_t)k->mask + 1) * 2;
    uint32_t *old = k->buckets;
    size_t old_n = (size_t)k->mask + 1;
    uint32_t *b;

    if (n > UINT32_MAX || (b = calloc(n, sizeof(*b))) == NULL)
        return;
    k->buckets = b;
    k->mask = (uint32_t)(n - 1);
    for (size_t i = 0; i < old_n; i++) {
        uint32_t s = old[i];

        while (s != NONE) {
            uint32_t next = node(k, s)->chain;

            chain_insert(k, s);
            s = next;
        }
    }
    free(old);
}

static bool is_idle(const struct sl_keys_node *n)
{
    return n->parked == 0 && n->in_flight == 0;
}

static void idle_unlink(struct sl_keys *k, uint32_t s)
{
    struct sl_keys_node *n = node(k, s);

    if (n->prev != NONE)
        node(k, n->prev)->next = n->next;
    else
        k->idle_head = n->next;
    if (n->next != NONE)
        node(k, n->next)->prev = n->prev;
    else
        k->idle_tail = n->prev;
    n->prev = n->next = NONE;
}

/* Newest dated instant of a log, INT64_MIN if none. */
static int64_t log_last(const struct sl_limiter_log *lg)
{
    for (uint32_t i = lg->count; i > 0; i--) {
        int64_t at = lg->ring[(lg->head + i - 1) % lg->n];

        if (at < SL_LIMITER_UNANSWERED)
            return at;
    }
    return INT64_MIN;
}

/* When every window of a full limiter has passed its last dispatch. */
static int64_t full_quiet_at(const struct sl_limiter *l)
{
    int64_t at = l->started ? l->tat_us - l->tolerance_us : INT64_MIN;

    for (size_t i = 0; i < l->n_logs; i++) {
        const struct sl_limiter_log *lg = &l->logs[i];
        int64_t last = log_last(lg);

        if (last != INT64_MIN && last + lg->window_us + lg->guard_us > at)
            at = last + lg->window_us + lg->guard_us;
    }
    return at;
}

/* The key of slot s has nothing parked or in flight: it waits for eviction. */
static void became_idle(struct sl_keys *k, uint32_t s)
{
    struct sl_keys_node *n = node(k, s);

    if (s == SL_KEYS_DEFAULT_SLOT || !is_idle(n))
        return;
    if (!k->compact)
        n->at_us = full_quiet_at(full_of(k, s));
    n->next = NONE;
    n->prev = k->idle_tail;
    if (k->idle_tail != NONE)
        node(k, k->idle_tail)->next = s;
    else
        k->idle_head = s;
    k->idle_tail = s;
}

static void evict(struct sl_keys *k, uint32_t s)
{
    struct sl_keys_node *n = node(k, s);

    idle_unlink(k, s);
    chain_remove(k, s);
    if (!k->compact) {
        full_free(full_of(k, s));
        set_full(k, s, NULL);
    }
    n->id = 0;
    n->chain = k->free_list;
    k->free_list = s;
    k->live--;
    k->evictions++;
}

size_t sl_keys_sweep(struct sl_keys *k, int64_t now, size_t max)
{
    size_t done = 0;

    while (done < max && k->idle_head != NONE && node(k, k->idle_head)->at_us <= now) {
        evict(k, k->idle_head);
        done++;
    }
    return done;
}

int64_t sl_keys_sweep_at(const struct sl_keys *k)
{
    return k->idle_head != NONE ? node(k, k->idle_head)->at_us : 0;
}

/* ---- requests of a key ---------------------------------------------------- */

static void pin(struct sl_keys *k, uint32_t s)
{
    struct sl_keys_node *n = node(k, s);

    if (s != SL_KEYS_DEFAULT_SLOT && is_idle(n))
        idle_unlink(k, s);
    n->parked++;
}

/* A new key in a fresh slot, pinned; SL_EAGAIN at the cap, SL_ENOMEM. */
static int create(struct sl_keys *k, uint64_t id, int64_t now, uint32_t *slot)
{
    struct sl_keys_node *n;
    uint32_t s;

    (void)sl_keys_sweep(k, now, LAZY_EVICT);
    if (k->live >= k->max_keys) {
        k->refused++;
        return SL_EAGAIN;
    }
    s = slot_alloc(k);
    if (s == NONE)
        return SL_ENOMEM;
    if (!k->compact) {
        struct sl_limiter *l = full_new(k);

        if (l == NULL) {
            node(k, s)->chain = k->free_list;
            k->free_list = s;
            return SL_ENOMEM;
        }
        set_full(k, s, l);
    }
    n = node(k, s);
    n->id = id;
    n->parked = 1;
    chain_insert(k, s);
    if (++k->live > (size_t)k->mask + 1)
        table_grow(k);
    *slot = s;
    return SL_OK;
}

int sl_keys_acquire(struct sl_keys *k, uint64_t id, int64_t now, uint32_t *slot)
{
    uint32_t s;

    if (id == SL_KEYS_DEFAULT_ID) {
        s = SL_KEYS_DEFAULT_SLOT;
    } else if ((s = find(k, id)) == NONE) {
        return create(k, id, now, slot);
    }
    pin(k, s);
    *slot = s;
    return SL_OK;
}

void sl_keys_hold(struct sl_keys *k, uint32_t slot)
{
    pin(k, slot);
}

void sl_keys_release(struct sl_keys *k, uint32_t slot, int64_t now)
{
    struct sl_keys_node *n = node(k, slot);

    (void)now;
    if (n->parked > 0)
        n->parked--;
    became_idle(k, slot);
}

int64_t sl_keys_next(const struct sl_keys *k, uint32_t slot, int64_t now, uint32_t units)
{
    const struct sl_keys_node *n = node(k, slot);
    int64_t next;

    if (units == 0)
        units = 1;
    if (k->compact) {
        if (units > k->max_cost)
            return SL_LIMITER_UNANSWERED; /* never: the config refuses such a cost */
        next = n->at_us - (int64_t)(k->max_cost - units) * k->interval_us;
        if (next < now)
            next = now;
    } else {
        next = sl_limiter_next_units(full_of(k, slot), now, units);
    }
    return next < k->floor_us ? k->floor_us : next;
}

int sl_keys_take(struct sl_keys *k, uint32_t slot, int64_t now, uint32_t units)
{
    struct sl_keys_node *n = node(k, slot);

    if (units == 0)
        units = 1;
    if (now < sl_keys_next(k, slot, now, units))
        return SL_EAGAIN;
    if (k->compact) {
        int64_t base = n->at_us > now ? n->at_us : now;

        n->at_us = base + (int64_t)units * k->interval_us;
    } else if (sl_limiter_take_units(full_of(k, slot), now, units) != SL_OK) {
        return SL_EAGAIN;
    }
    if (now > k->last_take_us)
        k->last_take_us = now;
    n->units = n->units > UINT32_MAX - units ? UINT32_MAX : n->units + units;
    if (n->parked > 0)
        n->parked--;
    n->in_flight++;
    return SL_OK;
}

void sl_keys_sent(struct sl_keys *k, uint32_t slot, int64_t taken, int64_t sent)
{
    if (sent <= taken)
        return;
    /* The bucket drains from when the units really left: later, so stricter. */
    if (k->compact)
        node(k, slot)->at_us += sent - taken;
    else
        sl_limiter_sent(full_of(k, slot), taken, sent);
}

void sl_keys_answered(struct sl_keys *k, uint32_t slot, int64_t now, uint32_t units)
{
    struct sl_keys_node *n = node(k, slot);

    if (!k->compact)
        sl_limiter_answered(full_of(k, slot), now, units > 0 ? units : 1);
    if (n->in_flight > 0)
        n->in_flight--;
    became_idle(k, slot);
}

void sl_keys_pause(struct sl_keys *k, uint32_t slot, int64_t until)
{
    struct sl_keys_node *n = node(k, slot);

    if (k->compact) {
        /* next(units) = at - (max_cost - units) * I is then >= until for any units. */
        int64_t at = until + (int64_t)(k->max_cost - 1) * k->interval_us;

        if (at > n->at_us)
            n->at_us = at;
        return;
    }
    sl_limiter_hold_until(full_of(k, slot), until);
    /* An idle key's eviction instant was computed when it went idle. */
    if (slot != SL_KEYS_DEFAULT_SLOT && is_idle(n))
        n->at_us = full_quiet_at(full_of(k, slot));
}

size_t sl_keys_bytes(const struct sl_keys *k)
{
    size_t b = sizeof(*k) + ((size_t)k->mask + 1) * sizeof(*k->buckets) +
               k->n_chunks * CHUNK * sizeof(struct sl_keys_node);

    if (!k->compact) {
        size_t per = sizeof(struct sl_limiter);

        for (size_t i = 0; i < full_of(k, SL_KEYS_DEFAULT_SLOT)->n_logs; i++)
            per += full_of(k, SL_KEYS_DEFAULT_SLOT)->logs[i].n * sizeof(int64_t);
        b += k->n_chunks * CHUNK * sizeof(void *) + (k->live + 1) * per;
    }
    return b;
}

size_t sl_keys_longest_chain(const struct sl_keys *k)
{
    size_t longest = 0;

    for (size_t b = 0; b <= k->mask; b++) {
        size_t len = 0;

        for (uint32_t s = k->buckets[b]; s != NONE; s = node(k, s)->chain)
            len++;
        if (len > longest)
            longest = len;
    }
    return longest;
}

uint64_t sl_keys_slot_id(const struct sl_keys *k, uint32_t slot)
{
    return node(k, slot)->id;
}

size_t sl_keys_busiest(const struct sl_keys *k, struct sl_keys_top *out, size_t n)
{
    size_t got = 0;

    for (uint32_t s = 1; s < k->n_used && n > 0; s++) {
        const struct sl_keys_node *kn = node(k, s);
        size_t i;

        if (kn->id == 0 || (got == n && kn->units <= out[n - 1].units))
            continue;
        i = got < n ? got++ : n - 1;
        for (; i > 0 && out[i - 1].units < kn->units; i--)
            out[i] = out[i - 1];
        out[i] = (struct sl_keys_top){sl_keys_digest(kn->id), kn->units, kn->parked,
                                      kn->in_flight};
    }
    return got;
}

/* ---- reload --------------------------------------------------------------- */

void sl_keys_set_floor(struct sl_keys *k, int64_t at)
{
    if (at > k->floor_us)
        k->floor_us = at;
}

/* When the windows of slot s have passed (under the current limits). */
static int64_t quiet_at(const struct sl_keys *k, uint32_t s, int64_t now)
{
    int64_t at;

    if (k->compact)
        return node(k, s)->at_us;
    at = full_quiet_at(full_of(k, s));
    /* Unanswered dispatches reached the upstream by their answer: count them as now. */
    return node(k, s)->in_flight > 0 && at < now ? now : at;
}

/* Hold slot s (with the new limits in k) until `at`: nothing goes before it. */
static void hold_until(struct sl_keys *k, uint32_t s, struct sl_limiter *l, int64_t at)
{
    if (k->compact) {
        node(k, s)->at_us = at + (int64_t)(k->max_cost - 1) * k->interval_us;
    } else {
        l->started = 1;
        l->tat_us = at + l->tolerance_us;
    }
}

/* Is slot s in use (the default bucket always is)? */
static bool in_use(const struct sl_keys *k, uint32_t s)
{
    return s == SL_KEYS_DEFAULT_SLOT || node(k, s)->id != 0;
}

/*
 * New full limiters for every slot in use into *out (the old ones stay until
 * commit). SL_OK or SL_ENOMEM; *out holds what was built either way.
 */
static int new_limiters(const struct sl_keys *nk, const struct sl_keys *k,
                        struct sl_limiter ****out)
{
    struct sl_limiter ***lims = calloc(k->n_chunks, sizeof(*lims));

    *out = lims;
    if (lims == NULL)
        return SL_ENOMEM;
    for (size_t c = 0; c < k->n_chunks; c++) {
        lims[c] = calloc(CHUNK, sizeof(**lims));
        if (lims[c] == NULL)
            return SL_ENOMEM;
        for (uint32_t i = 0; i < CHUNK; i++) {
            uint32_t s = (uint32_t)(c * CHUNK + i);

            if (s >= k->n_used || !in_use(k, s))
                continue;
            lims[c][i] = full_new(nk);
            if (lims[c][i] == NULL)
                return SL_ENOMEM;
        }
    }
    return SL_OK;
}

static void free_limiters(struct sl_limiter ***lims, size_t n_chunks)
{
    for (size_t c = 0; lims != NULL && c < n_chunks; c++) {
        for (uint32_t i = 0; lims[c] != NULL && i < CHUNK; i++)
            full_free(lims[c][i]);
        free(lims[c]);
    }
    free(lims);
}

/* Do two tables give their keys the same limits? */
static bool same_params(const struct sl_keys *a, const struct sl_keys *b)
{
    if (a->compact != b->compact || a->interval_us != b->interval_us ||
        a->span_us != b->span_us || a->max_cost != b->max_cost || a->burst != b->burst ||
        a->n_quotas != b->n_quotas || a->by_answer != b->by_answer ||
        a->guard_us != b->guard_us || a->rate.n != b->rate.n ||
        a->rate.period_us != b->rate.period_us)
        return false;
    for (size_t i = 0; i < a->n_quotas; i++) {
        if (a->quotas[i].n != b->quotas[i].n || a->quotas[i].period_us != b->quotas[i].period_us)
            return false;
    }
    return true;
}

int sl_keys_reconfigure(struct sl_keys *k, const struct sl_route_config *cfg, int64_t now)
{
    struct sl_keys nk = *k;
    struct sl_limiter ***lims = NULL;
    int64_t old_span = k->span_us;
    int rc;

    if (set_limits(&nk, cfg) != SL_OK)
        return SL_ERR;
    if (same_params(&nk, k)) {
        k->max_keys = nk.max_keys;
        return SL_OK;
    }
    if (!nk.compact && (rc = new_limiters(&nk, k, &lims)) != SL_OK) {
        free_limiters(lims, k->n_chunks);
        return rc;
    }
    /* From here nothing fails. */
    for (uint32_t s = 0; s < k->n_used; s++) {
        struct sl_limiter *l = lims != NULL ? lims[s / CHUNK][s % CHUNK] : NULL;
        int64_t quiet;

        if (!in_use(k, s))
            continue;
        if (!k->compact && !nk.compact) {
            sl_limiter_inherit(l, full_of(k, s), now);
            continue;
        }
        quiet = quiet_at(k, s, now);
        if (quiet < now)
            quiet = now;
        if (quiet < k->floor_us)
            quiet = k->floor_us;
        hold_until(&nk, s, l, quiet + nk.span_us);
    }
    if (!k->compact)
        free_limiters(k->limiters, k->n_chunks);
    nk.limiters = lims;
    if (nk.compact) {
        nk.limiters = NULL;
        nk.floor_us = k->floor_us > now + nk.span_us ? k->floor_us : now + nk.span_us;
    } else if (!k->compact) {
        /* Evicted keys sent nothing within their old windows before now. */
        if (nk.span_us > old_span)
            sl_keys_set_floor(&nk, now + nk.span_us - old_span);
    } else {
        sl_keys_set_floor(&nk, now + nk.span_us);
    }
    /* Idle keys keep their place; their eviction instants follow the new limits. */
    for (uint32_t s = nk.idle_head; s != NONE; s = node(&nk, s)->next)
        node(&nk, s)->at_us = nk.compact ? node(&nk, s)->at_us : full_quiet_at(full_of(&nk, s));
    *k = nk;
    return SL_OK;
}
