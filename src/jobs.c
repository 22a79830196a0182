/*
 * jobs.c - async jobs: intake with 202, the job as a reply sink, the result
 * table with its expiry, and GET /_sluice/jobs/{id}; in durable mode the
 * same job sink, with Redis as the store: intake (MULTI: record + stream
 * entry), the reader (XREADGROUP on its own connection), the tick
 * (heartbeat, XAUTOCLAIM, dead letters, stats, stores that wait for Redis).
 *
 * A durable job here is "held": from its delivery until its result is in
 * Redis and its entry acknowledged (or it is let go: draining, queue full,
 * claimed again later). Its entry stays pending in Redis all that time, so
 * a crash loses nothing that was accepted.
 */
#include "jobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "batch.h"
#include "clock.h"
#include "config.h"
#include "headers.h"
#include "http_msg.h"
#include "jobcodec.h"
#include "log.h"
#include "path.h"
#include "redis.h"
#include "request.h"
#include "route.h"
#include "sluice.h"

#define MIN_BUCKETS 64

struct sl_job {
    struct sl_sink sink;                /* the request answers here */
    TAILQ_ENTRY(sl_job) link;           /* jobs->live, or jobs->finished in finish order */
    struct sl_job *hnext;               /* hash chain */
    struct sl_jobs *jobs;
    struct sl_sink *client;             /* during intake only: where a refusal goes */
    enum sl_job_state state;
    bool adopted;                       /* a request answers through it */
    unsigned attempts;
    int64_t queued_us;                  /* wall clock */
    int64_t started_us;
    int64_t finished_us;
    int64_t expires_us;                 /* monotonic, once finished */
    int status;
    struct evkeyvalq headers;           /* the answer's, owned */
    unsigned char *body;                /* owned */
    size_t body_len;
    size_t bytes;                       /* counted in jobs->stored_bytes */
    char id[SL_JOB_ID_LEN + 1];
    char route[SL_CONFIG_NAME_LEN];     /* durable batches: SL_JOB_BATCH_STREAM */
    bool batch;                         /* a POST /_sluice/batch: its answer gathers the items' */
    /* Durable jobs only: held here from delivery until the result is stored. */
    bool durable;
    bool storing;                       /* the result's write is under way */
    unsigned deliveries;                /* as Redis counts them (claimed entries) */
    struct sl_http_msg *msg;            /* claimed, not submitted yet; owned */
    char *result;                       /* the JSON to store; owned */
    char entry[48];                     /* stream entry id */
    char client_addr[48];
};

TAILQ_HEAD(sl_job_list, sl_job);

/* A client waiting for Redis: an intake's EXEC, or a GET. */
struct waiter {
    struct sl_sink_owner owner;         /* the client's sink is adopted by it */
    TAILQ_ENTRY(waiter) link;
    struct sl_jobs *jobs;
    struct sl_sink *client;             /* NULL once the client has gone */
    bool batch;                         /* an intake of a batch */
    char addr[48];
    char id[SL_JOB_ID_LEN + 1];
};

/* What the stats poll learnt of a route's streams. */
struct route_info {
    char name[SL_CONFIG_NAME_LEN];
    int64_t length;                     /* XLEN of the stream: queued and held */
    int64_t pending;                    /* delivered, not acknowledged */
    int64_t dead;                       /* XLEN of the dead-letter stream */
    bool group;                         /* the reader created its group */
};

struct sl_jobs {
    struct event_base *base;
    struct sl_requests *requests;       /* borrowed */
    struct sl_batch_stats *batches;     /* borrowed: batch jobs are counted as batches */
    const struct sl_config *cfg;        /* borrowed */
    struct sl_job **buckets;            /* by id, owned array */
    size_t n_buckets;
    struct sl_job **old;                /* growing: the table being moved out, owned; or NULL */
    size_t old_n;
    size_t moved;                       /* buckets of `old` already moved */
    size_t n;
    struct sl_job_list live;            /* queued or running */
    struct sl_job_list finished;        /* done or failed, oldest first */
    size_t n_finished;
    struct event *expiry;               /* for the head of `finished` */
    struct evbuffer *reply;             /* the 202's body, drained by each answer */
    struct sl_jobs_stats stats;
    bool intake_adopted;                /* the job being submitted was adopted */
    unsigned char random[4096];         /* from getrandom, for the ids */
    size_t random_used;                 /* bytes of `random` handed out */

    /* Durable mode ([redis] jobs = on). */
    bool durable;
    bool stopping;                      /* draining: take no more from the streams */
    bool reading;                       /* an XREADGROUP is out */
    bool reading_batches;               /* one of the batches' stream is out */
    struct sl_redis *redis;             /* commands; owned */
    struct sl_redis *reader;            /* blocking reads; owned */
    char consumer[96];
    struct sl_job_list held;            /* running here, or result not stored yet */
    size_t n_held;
    size_t n_held_batches;              /* of them, batches */
    TAILQ_HEAD(, waiter) waiters;
    struct route_info *routes;          /* one per configured route, owned */
    size_t n_routes;
    struct event *tick;                 /* heartbeat, claims, stats, store retries */
    struct event *reread;               /* read again after an error */
};

/* --- ids -------------------------------------------------------------------- */

/*
 * 128 bits from the kernel's CSPRNG for an id, so ids cannot be guessed;
 * taken 4 KiB at a time (one getrandom per 256 ids rather than per job: a
 * syscall was a tenth of a durable intake's system calls). SL_OK or SL_ERR.
 */
static int job_random(struct sl_jobs *j, unsigned char out[SL_JOB_ID_RAW])
{
    if (j->random_used + SL_JOB_ID_RAW > sizeof(j->random)) {
        if (getrandom(j->random, sizeof(j->random), 0) != (ssize_t)sizeof(j->random))
            return SL_ERR;
        j->random_used = 0;
    }
    memcpy(out, j->random + j->random_used, SL_JOB_ID_RAW);
    /* Handed out once: wiped so that no copy of a live id stays in the pool. */
    memset(j->random + j->random_used, 0, SL_JOB_ID_RAW);
    j->random_used += SL_JOB_ID_RAW;
    return SL_OK;
}

/* --- the table ----------------------------------------------------------- */

/* The id is random already: its first 16 hex digits are a good hash. */
static size_t bucket_of(const char *id, size_t n_buckets)
{
    uint64_t h = 0;

    for (int i = 0; i < 16; i++)
        h = h << 4 | (uint64_t)(id[i] <= '9' ? id[i] - '0' : id[i] - 'a' + 10);
    return (size_t)(h & (n_buckets - 1));
}

/*
 * The chain that holds (or would hold) `id`: in the old table while its
 * bucket there has not been moved yet, else in the new one.
 */
static struct sl_job **chain_of(const struct sl_jobs *j, const char *id)
{
    size_t k;

    if (j->old != NULL && (k = bucket_of(id, j->old_n)) >= j->moved)
        return &j->old[k];
    return &j->buckets[bucket_of(id, j->n_buckets)];
}

/* Move up to `steps` buckets of the old table into the new one. */
static void rehash_step(struct sl_jobs *j, size_t steps)
{
    for (; j->old != NULL && steps > 0; steps--) {
        struct sl_job *job, *next;

        for (job = j->old[j->moved]; job != NULL; job = next) {
            size_t k = bucket_of(job->id, j->n_buckets);

            next = job->hnext;
            job->hnext = j->buckets[k];
            j->buckets[k] = job;
        }
        j->old[j->moved] = NULL;
        if (++j->moved == j->old_n) {
            free(j->old);
            j->old = NULL;
        }
    }
}

/*
 * Twice the buckets. The jobs move a few buckets at a time, at each
 * insertion and removal (rehash_step), as Redis's dict does: moving 260,000
 * jobs at once stalled the loop for 20 ms and made the intake's p99 202
 * latency 21 ms instead of 6 (wrk, 64 clients). Two buckets per insertion
 * finish the move before the table can fill again.
 */
static int table_grow(struct sl_jobs *j)
{
    size_t n = j->n_buckets * 2;
    struct sl_job **b;

    rehash_step(j, SIZE_MAX);
    if ((b = calloc(n, sizeof(*b))) == NULL)
        return SL_ENOMEM;
    j->old = j->buckets;
    j->old_n = j->n_buckets;
    j->moved = 0;
    j->buckets = b;
    j->n_buckets = n;
    return SL_OK;
}

static struct sl_job *table_find(const struct sl_jobs *j, const char *id)
{
    struct sl_job *job;

    for (job = *chain_of(j, id); job != NULL; job = job->hnext) {
        if (memcmp(job->id, id, SL_JOB_ID_LEN) == 0)
            return job;
    }
    return NULL;
}

static void table_insert(struct sl_jobs *j, struct sl_job *job)
{
    struct sl_job **head;

    rehash_step(j, 2);
    head = chain_of(j, job->id);
    job->hnext = *head;
    *head = job;
    j->n++;
}

static void table_remove(struct sl_jobs *j, struct sl_job *job)
{
    struct sl_job **pp;

    rehash_step(j, 2);
    pp = chain_of(j, job->id);
    while (*pp != NULL && *pp != job)
        pp = &(*pp)->hnext;
    if (*pp == job)
        *pp = job->hnext;
    j->n--;
}

static void job_free(struct sl_job *job)
{
    sl_headers_clear(&job->headers);
    free(job->body);
    free(job);
}

/* Take a job out of every list and free it. */
static void job_drop(struct sl_job *job)
{
    struct sl_jobs *j = job->jobs;

    table_remove(j, job);
    if (job->state == SL_JOB_DONE || job->state == SL_JOB_FAILED) {
        TAILQ_REMOVE(&j->finished, job, link);
        j->n_finished--;
        j->stats.stored_bytes -= job->bytes;
    } else {
        TAILQ_REMOVE(&j->live, job, link);
    }
    j->stats.by_state[job->state]--;
    job_free(job);
}

static void set_state(struct sl_job *job, enum sl_job_state s)
{
    struct sl_jobs *j = job->jobs;

    j->stats.by_state[job->state]--;
    job->state = s;
    j->stats.by_state[s]++;
}

/* --- expiry -------------------------------------------------------------- */

static void arm_expiry(struct sl_jobs *j)
{
    struct sl_job *head = TAILQ_FIRST(&j->finished);
    struct timeval tv;

    if (head == NULL) {
        evtimer_del(j->expiry);
        return;
    }
    tv = sl_clock_timeval(head->expires_us - sl_clock_now());
    evtimer_add(j->expiry, &tv);
}

static void jobs_on_expiry(evutil_socket_t fd, short what, void *arg)
{
    struct sl_jobs *j = arg;
    int64_t now = sl_clock_now();
    struct sl_job *head;

    (void)fd;
    (void)what;
    while ((head = TAILQ_FIRST(&j->finished)) != NULL && head->expires_us <= now) {
        j->stats.expired++;
        job_drop(head);
    }
    arm_expiry(j);
}

/* The caps on kept results: the oldest goes first. */
static void enforce_caps(struct sl_jobs *j)
{
    struct sl_job *head;

    while ((head = TAILQ_FIRST(&j->finished)) != NULL &&
           (j->n_finished > j->cfg->queue_max_depth ||
            j->stats.stored_bytes > j->cfg->queue_max_bytes)) {
        j->stats.evicted++;
        job_drop(head);
    }
}

/* --- the job as a reply sink --------------------------------------------- */

static struct sl_job *job_of_sink(struct sl_sink *s)
{
    return (struct sl_job *)(void *)s;
}

static void durable_finish(struct sl_job *job, bool failed, bool not_run);
static void durable_running(struct sl_job *job);

static void job_on_adopt(struct sl_sink *s, struct sl_sink_owner *owner)
{
    struct sl_job *job = job_of_sink(s);

    if (owner != NULL) {
        job->adopted = true;
        job->jobs->intake_adopted = true;
    }
}

static void job_on_dispatched(struct sl_sink *s, unsigned attempt)
{
    struct sl_job *job = job_of_sink(s);

    job->attempts = attempt;
    if (job->state == SL_JOB_QUEUED) {
        job->started_us = sl_clock_wall();
        set_state(job, SL_JOB_RUNNING);
    }
    if (job->durable)
        durable_running(job);
}

struct collect {
    struct evkeyvalq *list;
    bool sluice_error;                  /* sluice answered itself */
    bool not_run;                       /* ...because it is stopping, its queue is full
                                         * or its route tracks max_keys keys */
};

static int collect_field(const char *name, const char *value, void *arg)
{
    struct collect *c = arg;

    if (strcasecmp(name, "X-Sluice-Error") == 0) {
        c->sluice_error = true;
        c->not_run = strcmp(value, sl_outcome_name(SL_OUTCOME_DRAINING)) == 0 ||
                     strcmp(value, sl_outcome_name(SL_OUTCOME_QUEUE_FULL)) == 0 ||
                     strcmp(value, sl_outcome_name(SL_OUTCOME_TOO_MANY_KEYS)) == 0;
    }
    return sl_headers_add(c->list, name, value);
}

static size_t max_response_size(const struct sl_job *job)
{
    const struct sl_route *r;

    /* A batch's answer is its items' answers, each capped by its own route already. */
    if (job->batch)
        return SIZE_MAX;
    r = sl_route_find(job->jobs->requests->routes, job->route);

    return r != NULL ? r->cfg.max_response_size : (size_t)64 << 20;
}

/* Replace the answer with sluice's own error `code` (a JSON body, X-Sluice-Error). */
static void store_error(struct sl_job *job, int status, const char *code, const char *detail)
{
    char body[320];
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"detail\":\"%s\"}\n", code, detail);

    sl_headers_clear(&job->headers);
    free(job->body);
    job->body = NULL;
    job->body_len = 0;
    job->status = status;
    (void)sl_headers_add(&job->headers, "Content-Type", "application/json");
    (void)sl_headers_add(&job->headers, "X-Sluice-Error", code);
    if (n > 0 && (size_t)n < sizeof(body) && (job->body = malloc((size_t)n)) != NULL) {
        memcpy(job->body, body, (size_t)n);
        job->body_len = (size_t)n;
    }
}

/*
 * Take the answer into the job: status, fields and body (drained), capped
 * at the route's max_response_size. Returns true when it is a failure
 * (sluice answered itself); *not_run when the job was not run for reasons
 * of this instance (draining, queue full, too many keys): a durable job is then let go.
 */
static bool capture(struct sl_job *job, int status, sl_sink_fields_fn fields, void *fields_arg,
                    struct evbuffer *body, bool *not_run)
{
    struct collect c = {&job->headers, false, false};
    size_t len = body != NULL ? evbuffer_get_length(body) : 0;
    size_t max = max_response_size(job);

    job->status = status;
    if (fields != NULL && fields(collect_field, &c, fields_arg) != SL_OK)
        sl_headers_clear(&job->headers);
    *not_run = c.not_run;
    if (len > max) {
        char detail[160];

        snprintf(detail, sizeof(detail), "the upstream's answer (%zu bytes) is over the "
                 "route's max_response_size (%zu bytes)", len, max);
        store_error(job, sl_outcome_status(SL_OUTCOME_RESPONSE_TOO_LARGE), "response_too_large",
                    detail);
        job->jobs->stats.too_large++;
        c.sluice_error = true;
    } else if (len > 0 && (job->body = malloc(len)) != NULL) {
        job->body_len = (size_t)evbuffer_remove(body, job->body, len);
    }
    if (body != NULL)
        evbuffer_drain(body, evbuffer_get_length(body));
    /* A job never dispatched (expired, drained) keeps started_at null. */
    job->finished_us = sl_clock_wall();
    return c.sluice_error;
}

/* A memory job's one answer: keep it until result_ttl. */
static void memory_finish(struct sl_job *job, bool failed)
{
    struct sl_jobs *j = job->jobs;

    job->expires_us = sl_clock_now() + j->cfg->redis_result_ttl_us;
    job->bytes = sizeof(*job) + job->body_len;
    TAILQ_REMOVE(&j->live, job, link);
    set_state(job, failed ? SL_JOB_FAILED : SL_JOB_DONE);
    TAILQ_INSERT_TAIL(&j->finished, job, link);
    j->n_finished++;
    j->stats.stored_bytes += job->bytes;
    if (TAILQ_FIRST(&j->finished) == job)
        arm_expiry(j);
    enforce_caps(j);
}


/* A job keeps the status, not the reason phrase (a refusal passed on keeps it). */
static void job_on_respond(struct sl_sink *s, int status, const char *reason,
                           sl_sink_fields_fn fields, void *fields_arg, struct evbuffer *body,
                           bool keep_length, bool close)
{
    struct sl_job *job = job_of_sink(s);
    bool not_run, failed;

    /* A memory job refused at intake: the client hears the refusal itself, no job exists. */
    if (!job->adopted && !job->durable) {
        if (job->client != NULL)
            job->client->ops->respond(job->client, status, reason, fields, fields_arg, body,
                                      keep_length, close);
        job->client = NULL;
        return;
    }
    if (job->state != SL_JOB_QUEUED && job->state != SL_JOB_RUNNING)
        return;
    failed = capture(job, status, fields, fields_arg, body, &not_run);
    if (job->durable)
        durable_finish(job, failed, not_run);
    else
        memory_finish(job, failed);
}

static const struct sl_sink_ops job_sink_ops = {
    .adopt = job_on_adopt,
    .respond = job_on_respond,
    /* An answer over max_response_size is answered 502 response_too_large by the request. */
    .stores = true,
    .dispatched = job_on_dispatched,
};

/* --- answers to the client ----------------------------------------------- */

static int list_fields(sl_header_fn emit, void *emit_arg, void *arg)
{
    return sl_headers_each(arg, emit, emit_arg);
}

static void respond_json(struct sl_sink *sink, int status, struct evkeyvalq *fields,
                         const char *json)
{
    struct evbuffer *body = evbuffer_new();

    (void)sl_headers_add(fields, "Content-Type", "application/json");
    (void)sl_headers_add(fields, "Cache-Control", "no-store");
    if (body != NULL) {
        evbuffer_add(body, json, strlen(json));
        evbuffer_add(body, "\n", 1);
    }
    sink->ops->respond(sink, status, NULL, list_fields, fields, body, false, false);
    sl_headers_clear(fields);
    if (body != NULL)
        evbuffer_free(body);
}

/* The 202's fields, handed to the sink one by one: no list is built on the intake's path. */
static int accepted_fields(sl_header_fn emit, void *emit_arg, void *arg)
{
    int rc;

    if ((rc = emit("Location", arg, emit_arg)) != SL_OK ||
        (rc = emit("Preference-Applied", "respond-async", emit_arg)) != SL_OK ||
        (rc = emit("Content-Type", "application/json", emit_arg)) != SL_OK)
        return rc;
    return emit("Cache-Control", "no-store", emit_arg);
}

static char *put(char *p, const char *s, size_t len)
{
    memcpy(p, s, len);
    return p + len;
}

/*
 * 202 Accepted, Location and {"id","state","location"}: written with
 * memcpy into the instance's reply buffer, as this is half of a memory
 * job's intake when built with snprintf and a header list (callgrind).
 */
static void respond_accepted(struct sl_jobs *j, struct sl_sink *sink, const char *id,
                             enum sl_job_state state)
{
    static const char path[] = SL_JOBS_PATH;
    const char *st = sl_job_state_name(state);
    char location[sizeof(path) + SL_JOB_ID_LEN];
    char json[96 + 2 * SL_JOB_ID_LEN + sizeof(path)], *p = json;

    memcpy(put(location, path, sizeof(path) - 1), id, SL_JOB_ID_LEN + 1);
    p = put(p, "{\"id\":\"", 7);
    p = put(p, id, SL_JOB_ID_LEN);
    p = put(p, "\",\"state\":\"", 11);
    p = put(p, st, strlen(st));
    p = put(p, "\",\"location\":\"", 14);
    p = put(p, location, sizeof(location) - 1);
    p = put(p, "\"}\n", 3);
    if (evbuffer_add(j->reply, json, (size_t)(p - json)) != 0)
        evbuffer_drain(j->reply, evbuffer_get_length(j->reply));
    sink->ops->respond(sink, 202, NULL, accepted_fields, location, j->reply, false, false);
    /* A sink that did not take the body leaves nothing for the next 202. */
    evbuffer_drain(j->reply, evbuffer_get_length(j->reply));
}

static void job_view(const struct sl_job *job, struct sl_job_view *v)
{
    bool finished = job->state == SL_JOB_DONE || job->state == SL_JOB_FAILED;

    memset(v, 0, sizeof(*v));
    v->id = job->id;
    v->route = job->route[0] != '\0' && !job->batch ? job->route : NULL;
    v->state = job->state;
    v->attempts = job->attempts;
    v->queued_us = job->queued_us;
    v->started_us = job->started_us;
    v->finished_us = job->finished_us;
    if (finished) {
        v->status = job->status;
        v->headers = &job->headers;
        v->body = job->body;
        v->body_len = job->body_len;
    }
}

/* GET /_sluice/jobs/{id}[?...] */
static void jobs_get(struct sl_jobs *j, struct sl_sink *sink, const char *target,
                     const char *client)
{
    const char *id = target + strlen(SL_JOBS_PATH);
    size_t len = strcspn(id, "?#");
    struct sl_job *job = sl_job_id_valid(id, len) ? table_find(j, id) : NULL;
    struct sl_job_view v;
    struct evkeyvalq h;
    char *json;

    if (job == NULL) {
        sl_request_refuse(j->requests, sink, client, SL_OUTCOME_JOB_NOT_FOUND,
                          "no such job: unknown, malformed, or its result expired", false);
        return;
    }
    job_view(job, &v);
    json = sl_job_json(&v);
    if (json == NULL) {
        sl_request_refuse(j->requests, sink, client, SL_OUTCOME_INTERNAL_ERROR,
                          "out of memory", false);
        return;
    }
    TAILQ_INIT(&h);
    respond_json(sink, 200, &h, json);
    free(json);
}

/* --- intake -------------------------------------------------------------- */

/* The route the request will take (to cap its answer), as request.c will find it. */
static void find_route(const struct sl_jobs *j, const struct sl_http_msg *msg, char *out,
                       size_t size)
{
    size_t len = strlen(msg->target);
    char *copy = malloc(len + 1);
    const struct sl_route *r = NULL;

    out[0] = '\0';
    if (copy == NULL)
        return;
    if (sl_path_normalize(msg->target, len, copy, len + 1, NULL) == SL_OK)
        r = sl_route_match_target(j->requests->routes,
                                  evhttp_find_header(&msg->headers, "Host"), copy);
    if (r != NULL)
        snprintf(out, size, "%s", r->cfg.name);
    free(copy);
}

static struct sl_job *job_new(struct sl_jobs *j)
{
    unsigned char raw[SL_JOB_ID_RAW];
    struct sl_job *job;

    if (j->n >= j->n_buckets && table_grow(j) != SL_OK)
        return NULL;
    if (job_random(j, raw) != SL_OK)
        return NULL;
    if ((job = sl_zalloc(sizeof(*job))) == NULL)
        return NULL;
    sl_job_id_format(raw, job->id);
    job->sink.ops = &job_sink_ops;
    job->jobs = j;
    job->state = SL_JOB_QUEUED;
    job->queued_us = sl_clock_wall();
    TAILQ_INIT(&job->headers);
    table_insert(j, job);
    TAILQ_INSERT_TAIL(&j->live, job, link);
    j->stats.by_state[SL_JOB_QUEUED]++;
    return job;
}

static void jobs_intake(struct sl_jobs *j, struct sl_sink *sink, struct sl_http_msg *msg,
                        const char *client, bool batch)
{
    struct sl_job *job = job_new(j);
    char id[SL_JOB_ID_LEN + 1];

    if (job == NULL || sl_job_prefer_strip(&msg->headers) != SL_OK) {
        if (job != NULL)
            job_drop(job);
        sl_http_msg_free(msg);
        sl_request_refuse(j->requests, sink, client, SL_OUTCOME_INTERNAL_ERROR,
                          "out of memory", true);
        return;
    }
    job->batch = batch;
    if (!batch)
        find_route(j, msg, job->route, sizeof(job->route));
    memcpy(id, job->id, sizeof(id));
    /*
     * A refusal (no route, bad controls, queue full, draining; a malformed
     * batch) reaches the client as it is: it is answered before any 202.
     */
    job->client = sink;
    j->intake_adopted = false;
    if (batch)
        sl_batch_submit(j->requests, j->batches, &job->sink, msg, client);
    else
        sl_request_submit(j->requests, &job->sink, msg, client);
    if (!j->intake_adopted) {
        job_drop(job);
        return;
    }
    j->stats.accepted++;
    /* Finished at once (and, with tiny caps, even evicted): the job may be gone. */
    if ((job = table_find(j, id)) != NULL) {
        job->client = NULL;
        respond_accepted(j, sink, id, job->state);
        return;
    }
    respond_accepted(j, sink, id, SL_JOB_DONE);
}

/* --- durable jobs: keys ---------------------------------------------------- */

/*
 * Keys: per route, the stream and its dead-letter stream carry the route as
 * a hash tag ("sluice:{api}:jobs"); a job's record is "sluice:job:ID".
 */
#define GROUP "sluice"
#define KEY_LEN (SL_CONFIG_NAME_LEN * 2 + 16)
#define READ_BLOCK_MS 1000
#define READ_COUNT 100
#define CLAIM_COUNT 50

static void stream_key(const struct sl_jobs *j, const char *route, const char *kind, char *out)
{
    /* KEY_LEN holds any prefix and route name the config takes. */
    (void)sl_job_stream_key(out, KEY_LEN, j->cfg->redis_prefix, route, kind);
}

/* With memcpy, as snprintf was a tenth of a durable intake (callgrind). */
static void record_key(const struct sl_jobs *j, const char *id, char *out)
{
    size_t n = strlen(j->cfg->redis_prefix);

    memcpy(out, j->cfg->redis_prefix, n);
    memcpy(out + n, "job:", 4);
    memcpy(out + n + 4, id, SL_JOB_ID_LEN + 1);
}

static long long ttl_seconds(const struct sl_jobs *j)
{
    return (long long)((j->cfg->redis_result_ttl_us + SL_USEC_PER_SEC - 1) / SL_USEC_PER_SEC);
}

/* Decimal text of n (negative numbers too) into out[24]. */
static void us_text(int64_t us, char out[24])
{
    char digits[24], *d = digits + sizeof(digits);
    uint64_t u = us < 0 ? (uint64_t)0 - (uint64_t)us : (uint64_t)us;

    *--d = '\0';
    do {
        *--d = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (us < 0)
        *--d = '-';
    memcpy(out, d, (size_t)(digits + sizeof(digits) - d));
}

/* Send argv[0..argc) on the command connection (RESP written by redis.c). */
static int send_cmd(struct sl_jobs *j, sl_redis_reply_fn fn, void *arg, int argc,
                    const char **argv)
{
    return sl_redis_commandv(j->redis, 0, fn, arg, argc, argv, NULL);
}

/* The value of field `name` of a stream entry's [f1, v1, f2, v2...], or NULL. */
static const redisReply *entry_field(const redisReply *fields, const char *name)
{
    if (fields == NULL || fields->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i], *v = fields->element[i + 1];

        if (k->type == REDIS_REPLY_STRING && strcmp(k->str, name) == 0 &&
            v->type == REDIS_REPLY_STRING)
            return v;
    }
    return NULL;
}

static bool reply_ok(const redisReply *reply)
{
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
        return false;
    if (reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements; i++)
            if (reply->element[i]->type == REDIS_REPLY_ERROR)
                return false;
    }
    return reply->type != REDIS_REPLY_NIL;
}

/* --- durable jobs: the ones held here -------------------------------------- */

/* Room for more entries from the streams: what the routes can use soon. */
static size_t hold_room(const struct sl_jobs *j)
{
    const struct sl_route_table *t = j->requests->routes;
    const struct sl_queue_totals *tot = j->requests->totals;
    size_t max = 0, queue_room;

    for (size_t i = 0; i < t->n; i++)
        max += 2 * (size_t)t->routes[i]->cfg.max_in_flight + 16;
    queue_room = tot->max_depth > tot->depth ? tot->max_depth - tot->depth : 0;
    if (max > queue_room)
        max = queue_room;
    return max > j->n_held ? max - j->n_held : 0;
}

/*
 * Room for more batches: a batch fans out into up to max_batch_items
 * requests, so this instance takes batches only while the queue has room
 * for all their items (one batch at a time when it has less than one
 * batch's worth but is empty of batches), and never more than hold_room.
 */
static size_t batch_room(const struct sl_jobs *j)
{
    const struct sl_queue_totals *tot = j->requests->totals;
    size_t queue_room = tot->max_depth > tot->depth ? tot->max_depth - tot->depth : 0;
    size_t per = j->cfg->max_batch_items > 0 ? j->cfg->max_batch_items : 1;
    size_t max = queue_room / per, room = hold_room(j);

    if (max == 0 && queue_room > 0)
        max = 1;
    max = max > j->n_held_batches ? max - j->n_held_batches : 0;
    return max < room ? max : room;
}

/* Room for more entries of the stream `ri`. */
static size_t stream_room(const struct sl_jobs *j, const struct route_info *ri)
{
    return strcmp(ri->name, SL_JOB_BATCH_STREAM) == 0 ? batch_room(j) : hold_room(j);
}

static struct sl_job *held_find(const struct sl_jobs *j, const char *route, const char *entry)
{
    struct sl_job *job;

    TAILQ_FOREACH(job, &j->held, link) {
        if (strcmp(job->entry, entry) == 0 && strcmp(job->route, route) == 0)
            return job;
    }
    return NULL;
}

/* Let go of a held job (its entry stays pending unless acknowledged). */
static void held_release(struct sl_job *job)
{
    struct sl_jobs *j = job->jobs;

    TAILQ_REMOVE(&j->held, job, link);
    j->n_held--;
    j->n_held_batches -= job->batch;
    j->stats.by_state[job->state]--;
    if (job->msg != NULL)
        sl_http_msg_free(job->msg);
    free(job->result);
    job_free(job);
    /* Draining waits for the last result to be stored: tell the owner. */
    if (j->stopping && j->n_held == 0 && j->requests->hooks.idle != NULL)
        j->requests->hooks.idle(j->requests->hooks_arg);
}

static struct sl_job *held_new(struct sl_jobs *j, const char *route, const char *entry)
{
    struct sl_job *job = sl_zalloc(sizeof(*job));

    if (job == NULL)
        return NULL;
    job->sink.ops = &job_sink_ops;
    job->jobs = j;
    job->durable = true;
    job->adopted = true;
    job->state = SL_JOB_QUEUED;
    TAILQ_INIT(&job->headers);
    snprintf(job->route, sizeof(job->route), "%s", route);
    job->batch = strcmp(route, SL_JOB_BATCH_STREAM) == 0;
    snprintf(job->entry, sizeof(job->entry), "%s", entry);
    TAILQ_INSERT_TAIL(&j->held, job, link);
    j->n_held++;
    j->n_held_batches += job->batch;
    j->stats.by_state[SL_JOB_QUEUED]++;
    return job;
}

/* The request of a stream entry; NULL (logged) if the entry is not one of ours. */
static struct sl_http_msg *entry_msg(struct sl_job *job, const redisReply *fields)
{
    const redisReply *id = entry_field(fields, "id"), *m = entry_field(fields, "method");
    const redisReply *t = entry_field(fields, "target"), *h = entry_field(fields, "headers");
    const redisReply *b = entry_field(fields, "body"), *c = entry_field(fields, "client");
    const redisReply *q = entry_field(fields, "queued_at");
    const char *method = m != NULL ? sl_job_method(m->str, m->len) : NULL;
    struct sl_http_msg *msg;

    if (id == NULL || !sl_job_id_valid(id->str, id->len) || method == NULL || t == NULL ||
        h == NULL || (msg = sl_http_msg_new(t->str, t->len)) == NULL)
        return NULL;
    msg->method = method;
    msg->head = strcmp(method, "HEAD") == 0;
    msg->header_bytes = t->len + h->len;
    if (sl_job_headers_decode(h->str, h->len, &msg->headers) != SL_OK ||
        (b != NULL && b->len > 0 &&
         ((msg->body = evbuffer_new()) == NULL || evbuffer_add(msg->body, b->str, b->len) != 0))) {
        sl_http_msg_free(msg);
        return NULL;
    }
    memcpy(job->id, id->str, SL_JOB_ID_LEN);
    job->id[SL_JOB_ID_LEN] = '\0';
    snprintf(job->client_addr, sizeof(job->client_addr), "%s", c != NULL ? c->str : "-");
    job->queued_us = q != NULL ? strtoll(q->str, NULL, 10) : 0;
    return msg;
}

/* Run a held job here: into the local queue like any request. */
static void held_submit(struct sl_job *job, struct sl_http_msg *msg)
{
    job->msg = NULL;
    /* A refusal reaches the job's sink: its result; queue full or draining let it go. */
    job->adopted = true;
    if (job->batch)
        sl_batch_submit(job->jobs->requests, job->jobs->batches, &job->sink, msg,
                        job->client_addr);
    else
        sl_request_submit(job->jobs->requests, &job->sink, msg, job->client_addr);
}

static void durable_store(struct sl_job *job);
static void reader_next(struct sl_jobs *j);

/* The job was handed to the upstream: the record says so (best effort). */
static void durable_running(struct sl_job *job)
{
    struct sl_jobs *j = job->jobs;
    char key[KEY_LEN], started[24], attempts[24];
    const char *argv[] = {"HSET", key, "state", "running", "started_at", started, "attempts",
                          attempts};

    record_key(j, job->id, key);
    us_text(job->started_us, started);
    us_text(job->attempts, attempts);
    (void)send_cmd(j, NULL, NULL, (int)SL_ARRAY_LEN(argv), argv);
}

static void durable_finish(struct sl_job *job, bool failed, bool not_run)
{
    struct sl_job_view v;

    /* Not the job's fault: leave its entry pending, to be claimed after claim_after. */
    if (not_run) {
        held_release(job);
        return;
    }
    set_state(job, failed ? SL_JOB_FAILED : SL_JOB_DONE);
    job_view(job, &v);
    job->result = sl_job_json(&v);
    sl_headers_clear(&job->headers);
    free(job->body);
    job->body = NULL;
    job->body_len = 0;
    if (job->result == NULL) {
        sl_log_error("job result lost: out of memory", "id=%s", job->id);
        held_release(job);
        return;
    }
    durable_store(job);
}

static void durable_on_acked(struct sl_redis *r, const redisReply *reply, void *arg)
{
    (void)r;
    (void)reply;
    (void)arg;
}

/* The result is in Redis: acknowledge the entry, then delete it (never trimmed). */
static void durable_on_stored(struct sl_redis *r, const redisReply *reply, void *arg)
{
    struct sl_job *job = arg;
    struct sl_jobs *j = job->jobs;
    char key[KEY_LEN];
    const char *ack[] = {"XACK", key, GROUP, job->entry}, *del[] = {"XDEL", key, job->entry};

    (void)r;
    job->storing = false;
    if (!reply_ok(reply))
        return; /* kept; the tick tries again */
    stream_key(j, job->route, "jobs", key);
    (void)send_cmd(j, durable_on_acked, NULL, (int)SL_ARRAY_LEN(ack), ack);
    (void)send_cmd(j, NULL, NULL, (int)SL_ARRAY_LEN(del), del);
    held_release(job);
    reader_next(j);
}

static void durable_store(struct sl_job *job)
{
    struct sl_jobs *j = job->jobs;
    char key[KEY_LEN], fin[24], attempts[24], ttl[24];
    const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"}, *expire[] = {"EXPIRE", key, ttl};
    const char *hset[] = {"HSET", key, "state", sl_job_state_name(job->state), "finished_at",
                          fin, "attempts", attempts, "result", job->result};

    if (job->storing || !sl_redis_up(j->redis))
        return;
    record_key(j, job->id, key);
    us_text(job->finished_us, fin);
    us_text(job->attempts, attempts);
    us_text(ttl_seconds(j), ttl);
    if (send_cmd(j, NULL, NULL, 1, multi) != SL_OK)
        return;
    (void)send_cmd(j, NULL, NULL, (int)SL_ARRAY_LEN(hset), hset);
    (void)send_cmd(j, NULL, NULL, (int)SL_ARRAY_LEN(expire), expire);
    if (send_cmd(j, durable_on_stored, job, 1, exec) == SL_OK)
        job->storing = true;
}

/* --- durable jobs: the dead-letter stream -------------------------------- */

static void dead_on_done(struct sl_redis *r, const redisReply *reply, void *arg)
{
    struct sl_job *job = arg;
    struct sl_jobs *j = job->jobs;

    (void)r;
    if (reply_ok(reply)) {
        j->stats.dead_lettered++;
        sl_log_warn("job dead-lettered", "id=%s route=%s deliveries=%u", job->id, job->route,
                    job->deliveries);
    }
    held_release(job);
    reader_next(j);
}

/*
 * Delivered max_deliveries times without a result: into the dead-letter
 * stream with its request, the record failed, the entry acknowledged and
 * deleted, all in one transaction.
 */
static void dead_letter(struct sl_job *job)
{
    struct sl_jobs *j = job->jobs;
    char stream[KEY_LEN], dead[KEY_LEN], rec[KEY_LEN], n[16], now[24], queued[24], ttl[24];
    char detail[96];
    struct sl_http_msg *msg = job->msg;
    char *headers = sl_job_headers_encode(&msg->headers);
    size_t blen = sl_http_msg_body_len(msg);
    const char *body = blen > 0 ? (const char *)evbuffer_pullup(msg->body, -1) : "";
    struct sl_job_view v;

    stream_key(j, job->route, "jobs", stream);
    stream_key(j, job->route, "dead", dead);
    record_key(j, job->id, rec);
    snprintf(n, sizeof(n), "%u", job->deliveries);
    snprintf(ttl, sizeof(ttl), "%lld", ttl_seconds(j));
    snprintf(detail, sizeof(detail), "delivered %u times without a result", job->deliveries);
    job->finished_us = sl_clock_wall();
    us_text(job->finished_us, now);
    us_text(job->queued_us, queued);
    store_error(job, 502, "dead_lettered", detail);
    set_state(job, SL_JOB_FAILED);
    job_view(job, &v);
    job->result = sl_job_json(&v);
    if (headers == NULL || job->result == NULL ||
        sl_redis_command(j->redis, 0, NULL, NULL, "MULTI") != SL_OK) {
        free(headers);
        held_release(job);
        return;
    }
    (void)sl_redis_command(j->redis, 0, NULL, NULL,
                           "XADD %s * id %s entry %s route %s deliveries %s method %s target %s "
                           "headers %s body %b client %s queued_at %s dead_at %s",
                           dead, job->id, job->entry, job->route, n, msg->method, msg->target,
                           headers, body, blen, job->client_addr, queued, now);
    (void)sl_redis_command(j->redis, 0, NULL, NULL, "HSET %s state failed finished_at %s result %s",
                           rec, now, job->result);
    (void)sl_redis_command(j->redis, 0, NULL, NULL, "EXPIRE %s %s", rec, ttl);
    (void)sl_redis_command(j->redis, 0, NULL, NULL, "XACK %s " GROUP " %s", stream, job->entry);
    (void)sl_redis_command(j->redis, 0, NULL, NULL, "XDEL %s %s", stream, job->entry);
    if (sl_redis_command(j->redis, 0, dead_on_done, job, "EXEC") != SL_OK)
        held_release(job);
    free(headers);
}

/* --- durable jobs: reading the streams --------------------------------- */

static struct route_info *route_info(struct sl_jobs *j, const char *name)
{
    for (size_t i = 0; i < j->n_routes; i++)
        if (strcmp(j->routes[i].name, name) == 0)
            return &j->routes[i];
    return NULL;
}

/* The route a stream key belongs to, or NULL. */
static struct route_info *route_of_key(struct sl_jobs *j, const char *key)
{
    char k[KEY_LEN];

    for (size_t i = 0; i < j->n_routes; i++) {
        stream_key(j, j->routes[i].name, "jobs", k);
        if (strcmp(k, key) == 0)
            return &j->routes[i];
    }
    return NULL;
}

/* A new entry for us (XREADGROUP): run it. */
static void deliver(struct sl_jobs *j, const struct route_info *ri, const redisReply *e)
{
    const redisReply *fields = e->elements == 2 ? e->element[1] : NULL;
    struct sl_http_msg *msg;
    struct sl_job *job;

    /*
     * Not looked up among the held jobs (a scan of hundreds of them per
     * entry): read with ">", an entry was never delivered to any consumer
     * before, so it cannot be one of them. Claimed entries are checked.
     */
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING)
        return;
    if ((job = held_new(j, ri->name, e->element[0]->str)) == NULL)
        return;
    job->deliveries = 1;
    if ((msg = entry_msg(job, fields)) == NULL) {
        /* Not a job of ours: never retried, left pending for an operator. */
        sl_log_error("stream entry is not a job", "route=%s entry=%s", ri->name, job->entry);
        held_release(job);
        return;
    }
    held_submit(job, msg);
}

static void reader_on_group(struct sl_redis *r, const redisReply *reply, void *arg)
{
    (void)r;
    (void)arg;
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR &&
        strncmp(reply->str, "BUSYGROUP", 9) != 0)
        sl_log_error("cannot create the consumer group", "reason=\"%s\"", reply->str);
}

static void reader_on_read(struct sl_redis *r, const redisReply *reply, void *arg)
{
    struct sl_jobs *j = arg;
    struct timeval later = {0, 200000};

    (void)r;
    j->reading = false;
    if (reply == NULL)
        return; /* the reader reconnects and reads again */
    if (reply->type == REDIS_REPLY_ERROR) {
        /* NOGROUP: the keys went away (FLUSHALL...): create the groups again. */
        for (size_t i = 0; i < j->n_routes; i++)
            j->routes[i].group = false;
        sl_log_warn("reading the job streams failed", "reason=\"%s\"", reply->str);
        evtimer_add(j->reread, &later);
        return;
    }
    for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements; i++) {
        const redisReply *s = reply->element[i];
        struct route_info *ri;

        if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 ||
            s->element[0]->type != REDIS_REPLY_STRING ||
            (ri = route_of_key(j, s->element[0]->str)) == NULL)
            continue;
        for (size_t k = 0; s->element[1]->type == REDIS_REPLY_ARRAY && k < s->element[1]->elements;
             k++)
            deliver(j, ri, s->element[1]->element[k]);
    }
    reader_next(j);
}

static void batches_on_read(struct sl_redis *r, const redisReply *reply, void *arg)
{
    struct sl_jobs *j = arg;
    struct route_info *ri = route_info(j, SL_JOB_BATCH_STREAM);

    (void)r;
    j->reading_batches = false;
    if (ri != NULL && reply != NULL && reply->type == REDIS_REPLY_ERROR)
        ri->group = false; /* NOGROUP: the reader creates it again */
    /* [[key, [[id, fields]...]]], or nil: nothing new */
    if (ri == NULL || reply == NULL || reply->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *s = reply->element[i];

        if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 ||
            s->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        for (size_t k = 0; k < s->element[1]->elements; k++)
            deliver(j, ri, s->element[1]->element[k]);
    }
}

/*
 * The batches' stream is read apart, without blocking, on the command
 * connection, for no more batches than there is room for (batch_room):
 * in the blocking read its COUNT would be the routes'. It is read when
 * this instance accepts a batch, whenever the streams are read again,
 * and at every tick (batches another instance accepted wait that long).
 */
static void batches_next(struct sl_jobs *j)
{
    struct route_info *ri = route_info(j, SL_JOB_BATCH_STREAM);
    size_t room;
    char key[KEY_LEN], count[24];
    const char *argv[] = {"XREADGROUP", "GROUP", GROUP, j->consumer, "COUNT", count,
                          "STREAMS", key, ">"};

    if (!j->durable || j->reading_batches || j->stopping || ri == NULL || !ri->group ||
        !sl_redis_up(j->redis) || (room = batch_room(j)) == 0)
        return;
    stream_key(j, SL_JOB_BATCH_STREAM, "jobs", key);
    us_text((int64_t)(room < READ_COUNT ? room : READ_COUNT), count);
    if (send_cmd(j, batches_on_read, j, (int)SL_ARRAY_LEN(argv), argv) == SL_OK)
        j->reading_batches = true;
}

/* XREADGROUP over every route's stream, blocking up to a second, for what fits. */
static void reader_next(struct sl_jobs *j)
{
    size_t room = hold_room(j), n = j->n_routes, argc = 0, k = 0;
    char count[16], block[16];
    char (*keys)[KEY_LEN];
    const char **argv;

    batches_next(j);
    if (!j->durable || j->reading || j->stopping || n == 0 || room == 0 ||
        !sl_redis_up(j->reader))
        return;
    keys = calloc(n, KEY_LEN);
    argv = calloc(2 * n + 10, sizeof(*argv));
    if (keys == NULL || argv == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        stream_key(j, j->routes[i].name, "jobs", keys[i]);
        /* From 0: entries added before the group existed are jobs too. */
        if (!j->routes[i].group &&
            sl_redis_command(j->reader, 0, reader_on_group, j, "XGROUP CREATE %s " GROUP " 0 MKSTREAM",
                             keys[i]) == SL_OK)
            j->routes[i].group = true;
    }
    snprintf(count, sizeof(count), "%zu", room < READ_COUNT ? room : READ_COUNT);
    snprintf(block, sizeof(block), "%d", READ_BLOCK_MS);
    argv[argc++] = "XREADGROUP";
    argv[argc++] = "GROUP";
    argv[argc++] = GROUP;
    argv[argc++] = j->consumer;
    argv[argc++] = "COUNT";
    argv[argc++] = count;
    argv[argc++] = "BLOCK";
    argv[argc++] = block;
    argv[argc++] = "STREAMS";
    /* Not the batches' stream: its COUNT would be the routes' (batches_next). */
    for (size_t i = 0; i < n; i++)
        if (strcmp(j->routes[i].name, SL_JOB_BATCH_STREAM) != 0) {
            argv[argc++] = keys[i];
            k++;
        }
    if (k == 0)
        goto out;
    for (size_t i = 0; i < k; i++)
        argv[argc++] = ">";
    if (sl_redis_commandv(j->reader, (READ_BLOCK_MS + 2000) * SL_USEC_PER_MSEC, reader_on_read, j,
                          (int)argc, argv, NULL) == SL_OK)
        j->reading = true;
out:
    free(keys);
    free(argv);
}

static void jobs_on_reread(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    reader_next(arg);
}

static void reader_on_state(struct sl_redis *r, bool up, void *arg)
{
    struct sl_jobs *j = arg;

    (void)r;
    j->reading = false;
    for (size_t i = 0; i < j->n_routes; i++)
        j->routes[i].group = false;
    if (up)
        reader_next(j);
}

static void redis_on_state(struct sl_redis *r, bool up, void *arg)
{
    struct sl_jobs *j = arg;
    struct sl_job *job;

    (void)r;
    if (!up)
        return;
    /* Results finished while Redis was away go in now. */
    TAILQ_FOREACH(job, &j->held, link)
        if (job->result != NULL)
            durable_store(job);
}

/* --- durable jobs: claiming the jobs of a dead holder ---------------------- */

/* After XPENDING (deliveries) and HGET (the record's state): run, skip or dead-letter. */
static void claim_on_pending(struct sl_redis *r, const redisReply *reply, void *arg)
{
    struct sl_job *job = arg;

    (void)r;
    /* [[id, consumer, idle, deliveries]] */
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
        reply->element[0]->type == REDIS_REPLY_ARRAY && reply->element[0]->elements == 4)
        job->deliveries = (unsigned)reply->element[0]->element[3]->integer;
}

static void claim_on_record(struct sl_redis *r, const redisReply *reply, void *arg)
{
    struct sl_job *job = arg;
    struct sl_jobs *j = job->jobs;
    char key[KEY_LEN];

    (void)r;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR || job->deliveries == 0) {
        held_release(job); /* claimed again later */
        return;
    }
    /* Finished already (its holder died before the acknowledgement): just acknowledge. */
    if (reply->type == REDIS_REPLY_STRING &&
        (strcmp(reply->str, "done") == 0 || strcmp(reply->str, "failed") == 0)) {
        stream_key(j, job->route, "jobs", key);
        (void)sl_redis_command(j->redis, 0, NULL, NULL, "XACK %s " GROUP " %s", key, job->entry);
        (void)sl_redis_command(j->redis, 0, NULL, NULL, "XDEL %s %s", key, job->entry);
        held_release(job);
        return;
    }
    if (job->deliveries > j->cfg->redis_max_deliveries) {
        dead_letter(job);
        return;
    }
    sl_log_info("job claimed", "id=%s route=%s deliveries=%u", job->id, job->route,
                job->deliveries);
    held_submit(job, job->msg);
}

/* One entry XAUTOCLAIM gave us: ask how often it was delivered, and whether it finished. */
static void claimed(struct sl_jobs *j, const struct route_info *ri, const redisReply *e)
{
    char key[KEY_LEN], rec[KEY_LEN];
    struct sl_job *job;

    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING || held_find(j, ri->name, e->element[0]->str))
        return;
    if ((job = held_new(j, ri->name, e->element[0]->str)) == NULL)
        return;
    if ((job->msg = entry_msg(job, e->element[1])) == NULL) {
        sl_log_error("stream entry is not a job", "route=%s entry=%s", ri->name, job->entry);
        held_release(job);
        return;
    }
    stream_key(j, ri->name, "jobs", key);
    record_key(j, job->id, rec);
    if (sl_redis_command(j->redis, 0, claim_on_pending, job, "XPENDING %s " GROUP " %s %s 1", key,
                         job->entry, job->entry) != SL_OK ||
        sl_redis_command(j->redis, 0, claim_on_record, job, "HGET %s state", rec) != SL_OK)
        held_release(job);
}

struct route_cmd {
    struct sl_jobs *jobs;
    char route[SL_CONFIG_NAME_LEN];
};

static struct route_cmd *route_cmd(struct sl_jobs *j, const char *route)
{
    struct route_cmd *c = malloc(sizeof(*c));

    if (c != NULL) {
        c->jobs = j;
        snprintf(c->route, sizeof(c->route), "%s", route);
    }
    return c;
}

static void claim_on_reply(struct sl_redis *r, const redisReply *reply, void *arg)
{
    struct route_cmd *c = arg;
    struct route_info *ri = route_info(c->jobs, c->route);

    (void)r;
    /* [next-cursor, [[id, fields]...], [deleted ids]] */
    if (ri != NULL && reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2 &&
        reply->element[1]->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->element[1]->elements; i++)
            claimed(c->jobs, ri, reply->element[1]->element[i]);
    }
    free(c);
}

/* --- durable jobs: the tick ------------------------------------------------ */

/*
 * Reset the idle time of every entry held here (XCLAIM ... JUSTID to
 * ourselves does not count a delivery), so that a job waiting in the local
 * queue longer than claim_after is not claimed by another instance.
 */
static void heartbeat(struct sl_jobs *j)
{
    for (size_t i = 0; i < j->n_routes; i++) {
        const char **argv = NULL;
        char key[KEY_LEN];
        size_t argc = 0;
        struct sl_job *job;

        stream_key(j, j->routes[i].name, "jobs", key);
        TAILQ_FOREACH(job, &j->held, link) {
            const char **bigger;

            if (strcmp(job->route, j->routes[i].name) != 0)
                continue;
            if (argc == 0 || (argc & (argc - 1)) == 0) {
                bigger = realloc(argv, (argc == 0 ? 16 : 2 * argc + 16) * sizeof(*argv));
                if (bigger == NULL)
                    break;
                argv = bigger;
            }
            if (argc == 0) {
                argv[argc++] = "XCLAIM";
                argv[argc++] = key;
                argv[argc++] = GROUP;
                argv[argc++] = j->consumer;
                argv[argc++] = "0";
            }
            argv[argc++] = job->entry;
        }
        if (argc > 5) {
            argv[argc++] = "JUSTID";
            (void)sl_redis_commandv(j->redis, 0, NULL, NULL, (int)argc, argv, NULL);
        }
        free(argv);
    }
}

static void stats_on_reply(struct sl_redis *r, const redisReply *reply, void *arg)
{
    struct route_cmd *c = arg;
    struct route_info *ri = route_info(c->jobs, c->route);

    (void)r;
    /* EXEC of [XLEN jobs, XPENDING summary, XLEN dead] */
    if (ri != NULL && reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3) {
        const redisReply *p = reply->element[1];

        if (reply->element[0]->type == REDIS_REPLY_INTEGER)
            ri->length = reply->element[0]->integer;
        if (p->type == REDIS_REPLY_ARRAY && p->elements >= 1 &&
            p->element[0]->type == REDIS_REPLY_INTEGER)
            ri->pending = p->element[0]->integer;
        else if (p->type == REDIS_REPLY_ERROR)
            ri->pending = 0; /* NOGROUP: nothing delivered yet */
        if (reply->element[2]->type == REDIS_REPLY_INTEGER)
            ri->dead = reply->element[2]->integer;
    }
    free(c);
}

static void poll_route(struct sl_jobs *j, const struct route_info *ri, size_t room)
{
    char key[KEY_LEN], dead[KEY_LEN], idle[24], count[16];
    struct route_cmd *c;

    stream_key(j, ri->name, "jobs", key);
    stream_key(j, ri->name, "dead", dead);
    if (room > 0 && !j->stopping && ri->group && (c = route_cmd(j, ri->name)) != NULL) {
        snprintf(idle, sizeof(idle), "%lld", (long long)(j->cfg->redis_claim_after_us / 1000));
        snprintf(count, sizeof(count), "%zu", room < CLAIM_COUNT ? room : CLAIM_COUNT);
        if (sl_redis_command(j->redis, 0, claim_on_reply, c,
                             "XAUTOCLAIM %s " GROUP " %s %s 0-0 COUNT %s", key, j->consumer, idle,
                             count) != SL_OK)
            free(c);
    }
    if ((c = route_cmd(j, ri->name)) == NULL)
        return;
    if (sl_redis_command(j->redis, 0, NULL, NULL, "MULTI") != SL_OK) {
        free(c);
        return;
    }
    (void)sl_redis_command(j->redis, 0, NULL, NULL, "XLEN %s", key);
    (void)sl_redis_command(j->redis, 0, NULL, NULL, "XPENDING %s " GROUP, key);
    (void)sl_redis_command(j->redis, 0, NULL, NULL, "XLEN %s", dead);
    if (sl_redis_command(j->redis, 0, stats_on_reply, c, "EXEC") != SL_OK)
        free(c);
}

static int64_t tick_us(const struct sl_jobs *j)
{
    int64_t t = j->cfg->redis_claim_after_us / 3;

    return t < 200 * SL_USEC_PER_MSEC ? 200 * SL_USEC_PER_MSEC
           : t > 5 * SL_USEC_PER_SEC  ? 5 * SL_USEC_PER_SEC
                                      : t;
}

static void jobs_on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct sl_jobs *j = arg;
    struct timeval tv = sl_clock_timeval(tick_us(j));
    struct sl_job *job;

    (void)fd;
    (void)what;
    evtimer_add(j->tick, &tv);
    if (!sl_redis_up(j->redis))
        return;
    heartbeat(j);
    TAILQ_FOREACH(job, &j->held, link)
        if (job->result != NULL)
            durable_store(job);
    for (size_t i = 0; i < j->n_routes; i++)
        poll_route(j, &j->routes[i], stream_room(j, &j->routes[i]));
    reader_next(j);
}

/* The routes of the config, keeping what is known of the ones that stay. */
/* The streams of the config's routes, then the batches' stream, keeping what is known. */
static int sync_routes(struct sl_jobs *j, const struct sl_config *cfg)
{
    size_t n = cfg->n_routes + 1;
    struct route_info *ri = calloc(n, sizeof(*ri));

    if (ri == NULL)
        return SL_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *name = i < cfg->n_routes ? cfg->routes[i].name : SL_JOB_BATCH_STREAM;
        const struct route_info *old = route_info(j, name);

        if (old != NULL)
            ri[i] = *old;
        snprintf(ri[i].name, sizeof(ri[i].name), "%s", name);
    }
    free(j->routes);
    j->routes = ri;
    j->n_routes = n;
    return SL_OK;
}

/* --- durable jobs: intake and GET ------------------------------------------ */

/* The client left while Redis was answering: nobody to tell. */
static void waiter_on_gone(struct sl_sink_owner *owner)
{
    struct waiter *w = (struct waiter *)(void *)owner;

    w->client = NULL;
}

static struct waiter *waiter_new(struct sl_jobs *j, struct sl_sink *sink, const char *client)
{
    struct waiter *w = sl_zalloc(sizeof(*w));
    size_t n;

    if (w == NULL)
        return NULL;
    w->owner.gone = waiter_on_gone;
    w->jobs = j;
    w->client = sink;
    client = client != NULL ? client : "-";
    n = strnlen(client, sizeof(w->addr) - 1);
    memcpy(w->addr, client, n); /* zeroed: terminated */
    TAILQ_INSERT_TAIL(&j->waiters, w, link);
    /* The frontend tells us if the client leaves meanwhile (waiter_on_gone). */
    sink->ops->adopt(sink, &w->owner);
    return w;
}

/* Done waiting: the client (if still there) is ours to answer; frees w. */
static struct sl_sink *waiter_end(struct waiter *w)
{
    struct sl_sink *sink = w->client;

    TAILQ_REMOVE(&w->jobs->waiters, w, link);
    free(w);
    return sink;
}

static void unavailable(struct sl_jobs *j, struct sl_sink *sink, const char *client,
                        const char *detail)
{
    sl_request_refuse(j->requests, sink, client, SL_OUTCOME_REDIS_UNAVAILABLE, detail, false);
}

static void intake_on_exec(struct sl_redis *r, const redisReply *reply, void *arg)
{
    struct waiter *w = arg;
    struct sl_jobs *j = w->jobs;
    char addr[48], id[SL_JOB_ID_LEN + 1];
    bool batch = w->batch;
    struct sl_sink *sink;

    (void)r;
    memcpy(addr, w->addr, sizeof(addr));
    memcpy(id, w->id, sizeof(id));
    sink = waiter_end(w);
    if (reply_ok(reply))
        j->stats.accepted++;
    /* The batches' stream is not in the blocking read: fetch the new batch now. */
    if (batch && reply_ok(reply))
        batches_next(j);
    if (sink == NULL)
        return; /* the client left: the job runs all the same */
    if (!reply_ok(reply)) {
        unavailable(j, sink, addr, "Redis did not store the job");
        return;
    }
    respond_accepted(j, sink, id, SL_JOB_QUEUED);
}

/*
 * Store the job (record and stream entry in one transaction) before the
 * 202: no 202 for a job Redis does not hold. A request goes to its route's
 * stream; a batch, checked whole first (its 400 comes before any 202), to
 * the batches' stream, as the batch request itself (its fields are what
 * its items inherit).
 */
static void durable_intake(struct sl_jobs *j, struct sl_sink *sink, struct sl_http_msg *msg,
                           const char *client, bool batch)
{
    const char *detail = NULL, *stream_name = SL_JOB_BATCH_STREAM;
    enum sl_outcome o;
    struct sl_route *route = NULL;
    char stream[KEY_LEN], rec[KEY_LEN], now[24];
    unsigned char raw[SL_JOB_ID_RAW];
    char *headers = NULL;
    struct waiter *w;
    size_t blen;
    int rc;

    if (batch) {
        if (!sl_batch_check(j->requests, j->batches, sink, msg, client))
            goto out;
    } else if ((route = sl_request_check(j->requests, msg, &o, &detail)) == NULL) {
        sl_request_refuse(j->requests, sink, client, o, detail, false);
        goto out;
    } else {
        stream_name = route->cfg.name;
    }
    if (!sl_redis_up(j->redis)) {
        unavailable(j, sink, client, "Redis is unreachable: the job cannot be stored");
        goto out;
    }
    if (sl_job_prefer_strip(&msg->headers) != SL_OK ||
        (headers = sl_job_headers_encode(&msg->headers)) == NULL) {
        /* The parser's names are tokens and no value holds CR or LF: out of memory. */
        sl_request_refuse(j->requests, sink, client, SL_OUTCOME_INTERNAL_ERROR, "out of memory",
                          false);
        goto out;
    }
    if (job_random(j, raw) != SL_OK ||
        (w = waiter_new(j, sink, client)) == NULL) {
        sl_request_refuse(j->requests, sink, client, SL_OUTCOME_INTERNAL_ERROR, "out of memory",
                          false);
        goto out;
    }
    sl_job_id_format(raw, w->id);
    w->batch = batch;
    stream_key(j, stream_name, "jobs", stream);
    record_key(j, w->id, rec);
    us_text(sl_clock_wall(), now);
    blen = sl_http_msg_body_len(msg);
    {
        const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"};
        const char *hset[] = {"HSET", rec, "state", "queued", "queued_at", now, "route",
                              stream_name};
        const char *xadd[] = {"XADD", stream, "*", "id", w->id, "method", msg->method,
                              "target", msg->target, "headers", headers, "body",
                              blen > 0 ? (const char *)evbuffer_pullup(msg->body, -1) : "",
                              "client", client != NULL ? client : "-", "queued_at", now};
        size_t xlens[SL_ARRAY_LEN(xadd)];

        /* xadd[12] is the body: binary, not terminated. */
        for (size_t i = 0; i < SL_ARRAY_LEN(xadd); i++)
            xlens[i] = i == 12 ? blen : strlen(xadd[i]);
        /* A batch has no route: its record has none. */
        (void)sl_redis_commandv(j->redis, 0, NULL, NULL, 1, multi, NULL);
        (void)sl_redis_commandv(j->redis, 0, NULL, NULL, batch ? 6 : 8, hset, NULL);
        (void)sl_redis_commandv(j->redis, 0, NULL, NULL, (int)SL_ARRAY_LEN(xadd), xadd, xlens);
        rc = sl_redis_commandv(j->redis, 0, intake_on_exec, w, 1, exec, NULL);
    }
    if (rc != SL_OK) {
        sink = waiter_end(w);
        (void)sl_redis_command(j->redis, 0, NULL, NULL, "DISCARD");
        unavailable(j, sink, client, "Redis is unreachable: the job cannot be stored");
    }
out:
    free(headers);
    sl_http_msg_free(msg);
}

static int64_t field_us(const redisReply *e)
{
    return e != NULL && e->type == REDIS_REPLY_STRING ? strtoll(e->str, NULL, 10) : 0;
}

/* HMGET state route queued_at started_at finished_at attempts result */
static void get_on_reply(struct sl_redis *r, const redisReply *reply, void *arg)
{
    struct waiter *w = arg;
    struct sl_jobs *j = w->jobs;
    char addr[48], id[SL_JOB_ID_LEN + 1];
    struct sl_sink *sink;
    const redisReply *const *e;
    struct sl_job_view v;
    struct evkeyvalq h;
    char *json;

    (void)r;
    memcpy(addr, w->addr, sizeof(addr));
    memcpy(id, w->id, sizeof(id));
    if ((sink = waiter_end(w)) == NULL)
        return;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 7) {
        unavailable(j, sink, addr, "Redis did not answer");
        return;
    }
    e = (const redisReply *const *)reply->element;
    TAILQ_INIT(&h);
    if (e[6]->type == REDIS_REPLY_STRING) {
        respond_json(sink, 200, &h, e[6]->str);
        return;
    }
    if (e[0]->type != REDIS_REPLY_STRING) {
        sl_request_refuse(j->requests, sink, addr, SL_OUTCOME_JOB_NOT_FOUND,
                          "no such job: unknown, malformed, or its result expired", false);
        return;
    }
    memset(&v, 0, sizeof(v));
    v.id = id;
    v.route = e[1]->type == REDIS_REPLY_STRING ? e[1]->str : NULL;
    v.state = strcmp(e[0]->str, "running") == 0 ? SL_JOB_RUNNING : SL_JOB_QUEUED;
    v.queued_us = field_us(e[2]);
    v.started_us = field_us(e[3]);
    v.attempts = (unsigned)field_us(e[5]);
    if ((json = sl_job_json(&v)) == NULL) {
        sl_request_refuse(j->requests, sink, addr, SL_OUTCOME_INTERNAL_ERROR, "out of memory",
                          false);
        return;
    }
    respond_json(sink, 200, &h, json);
    free(json);
}

static void durable_get(struct sl_jobs *j, struct sl_sink *sink, const char *id, size_t len,
                        const char *client)
{
    char rec[KEY_LEN];
    struct waiter *w;

    if (!sl_job_id_valid(id, len)) {
        sl_request_refuse(j->requests, sink, client, SL_OUTCOME_JOB_NOT_FOUND,
                          "no such job: unknown, malformed, or its result expired", false);
        return;
    }
    if (!sl_redis_up(j->redis)) {
        unavailable(j, sink, client, "Redis is unreachable: the job cannot be read");
        return;
    }
    if ((w = waiter_new(j, sink, client)) == NULL) {
        sl_request_refuse(j->requests, sink, client, SL_OUTCOME_INTERNAL_ERROR, "out of memory",
                          false);
        return;
    }
    memcpy(w->id, id, SL_JOB_ID_LEN);
    record_key(j, w->id, rec);
    if (sl_redis_command(j->redis, 0, get_on_reply, w,
                         "HMGET %s state route queued_at started_at finished_at attempts result",
                         rec) != SL_OK) {
        sink = waiter_end(w);
        unavailable(j, sink, client, "Redis is unreachable: the job cannot be read");
    }
}

static int durable_start(struct sl_jobs *j, const struct sl_config *cfg)
{
    char host[64] = "";
    unsigned char raw[4];
    struct timeval tv;

    j->durable = true;
    TAILQ_INIT(&j->held);
    (void)gethostname(host, sizeof(host) - 1);
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        memset(raw, 0, sizeof(raw));
    /* One consumer per process: a restart is a new consumer, its old entries are claimed. */
    snprintf(j->consumer, sizeof(j->consumer), "%s-%ld-%02x%02x%02x%02x", host, (long)getpid(),
             raw[0], raw[1], raw[2], raw[3]);
    if (sync_routes(j, cfg) != SL_OK)
        return SL_ENOMEM;
    j->tick = evtimer_new(j->base, jobs_on_tick, j);
    j->reread = evtimer_new(j->base, jobs_on_reread, j);
    j->redis = sl_redis_new(j->base, &cfg->redis_url, "jobs", redis_on_state, j);
    j->reader = sl_redis_new(j->base, &cfg->redis_url, "jobs-reader", reader_on_state, j);
    if (j->tick == NULL || j->reread == NULL || j->redis == NULL || j->reader == NULL)
        return SL_ENOMEM;
    tv = sl_clock_timeval(tick_us(j));
    evtimer_add(j->tick, &tv);
    return SL_OK;
}

bool sl_jobs_take(struct sl_jobs *j, struct sl_sink *sink, struct sl_http_msg *msg,
                  const char *client)
{
    bool batch;

    if (strncmp(msg->target, SL_JOBS_PATH, strlen(SL_JOBS_PATH)) == 0 &&
        strcmp(msg->method, "GET") == 0) {
        const char *id = msg->target + strlen(SL_JOBS_PATH);

        if (j->durable)
            durable_get(j, sink, id, strcspn(id, "?#"), client);
        else
            jobs_get(j, sink, msg->target, client);
        sl_http_msg_free(msg);
        return true;
    }
    if (!sl_job_prefers_async(&msg->headers))
        return false;
    batch = sl_batch_is_endpoint(msg);
    if (j->durable)
        durable_intake(j, sink, msg, client, batch);
    else
        jobs_intake(j, sink, msg, client, batch);
    return true;
}

/* --- life ---------------------------------------------------------------- */

struct sl_jobs *sl_jobs_new(struct event_base *base, struct sl_requests *q,
                            struct sl_batch_stats *batches, const struct sl_config *cfg)
{
    struct sl_jobs *j = sl_zalloc(sizeof(*j));

    if (j == NULL)
        return NULL;
    j->base = base;
    j->requests = q;
    j->batches = batches;
    j->cfg = cfg;
    TAILQ_INIT(&j->live);
    TAILQ_INIT(&j->finished);
    j->n_buckets = MIN_BUCKETS;
    j->random_used = sizeof(j->random); /* empty: filled at the first id */
    j->buckets = calloc(j->n_buckets, sizeof(*j->buckets));
    TAILQ_INIT(&j->held);
    TAILQ_INIT(&j->waiters);
    j->expiry = evtimer_new(base, jobs_on_expiry, j);
    j->reply = evbuffer_new();
    if (j->buckets == NULL || j->expiry == NULL || j->reply == NULL ||
        (sl_config_redis_jobs(cfg) && durable_start(j, cfg) != SL_OK)) {
        sl_jobs_free(j);
        return NULL;
    }
    return j;
}

void sl_jobs_configure(struct sl_jobs *j, const struct sl_config *cfg)
{
    j->cfg = cfg;
    enforce_caps(j);
    if (j->durable) {
        (void)sync_routes(j, cfg);
        reader_next(j);
    }
}

void sl_jobs_drain(struct sl_jobs *j)
{
    j->stopping = true;
}

size_t sl_jobs_held(const struct sl_jobs *j)
{
    return j->n_held;
}

bool sl_jobs_healthy(const struct sl_jobs *j, const char **reason)
{
    if (!j->durable || sl_redis_up(j->redis))
        return true;
    *reason = sl_redis_error(j->redis);
    return false;
}

void sl_jobs_stats(const struct sl_jobs *j, struct sl_jobs_stats *out)
{
    *out = j->stats;
    out->durable = j->durable;
    out->held = j->n_held;
    if (j->durable) {
        out->redis_up = sl_redis_up(j->redis);
        out->redis_addr = sl_redis_addr(j->redis);
        out->redis_error = sl_redis_error(j->redis);
        out->consumer = j->consumer;
        out->redis = sl_redis_stats(j->redis);
        out->reader = sl_redis_stats(j->reader);
    }
}

bool sl_jobs_route(const struct sl_jobs *j, const char *route, struct sl_jobs_route *out)
{
    for (size_t i = 0; j->durable && i < j->n_routes; i++) {
        if (strcmp(j->routes[i].name, route) == 0) {
            out->length = j->routes[i].length;
            out->pending = j->routes[i].pending;
            out->dead = j->routes[i].dead;
            return true;
        }
    }
    return false;
}

void sl_jobs_free(struct sl_jobs *j)
{
    struct sl_job *job;

    if (j == NULL)
        return;
    /* Pending commands are answered NULL: waiting clients hear 503, results stay unstored. */
    j->stopping = false;
    sl_redis_free(j->reader);
    j->reader = NULL;
    sl_redis_free(j->redis);
    j->redis = NULL;
    while ((job = TAILQ_FIRST(&j->held)) != NULL)
        held_release(job);
    while ((job = TAILQ_FIRST(&j->finished)) != NULL)
        job_drop(job);
    while ((job = TAILQ_FIRST(&j->live)) != NULL)
        job_drop(job);
    if (j->expiry != NULL)
        event_free(j->expiry);
    if (j->reply != NULL)
        evbuffer_free(j->reply);
    if (j->tick != NULL)
        event_free(j->tick);
    if (j->reread != NULL)
        event_free(j->reread);
    free(j->routes);
    free(j->old);
    free(j->buckets);
    free(j);
}
