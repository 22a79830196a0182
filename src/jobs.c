/*
 * jobs.c - async jobs: intake with 202, the job as a reply sink, the result
 * table with its expiry, and GET /_sluice/jobs/{id}.
 */
#include "jobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "clock.h"
#include "config.h"
#include "headers.h"
#include "http_msg.h"
#include "jobcodec.h"
#include "log.h"
#include "path.h"
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
    char route[SL_CONFIG_NAME_LEN];
};

TAILQ_HEAD(sl_job_list, sl_job);

struct sl_jobs {
    struct event_base *base;
    struct sl_requests *requests;       /* borrowed */
    const struct sl_config *cfg;        /* borrowed */
    struct sl_job **buckets;            /* by id, owned array */
    size_t n_buckets;
    size_t n;
    struct sl_job_list live;            /* queued or running */
    struct sl_job_list finished;        /* done or failed, oldest first */
    size_t n_finished;
    struct event *expiry;               /* for the head of `finished` */
    struct sl_jobs_stats stats;
};

/* --- the table ----------------------------------------------------------- */

/* The id is random already: its first 16 hex digits are a good hash. */
static size_t bucket_of(const struct sl_jobs *j, const char *id)
{
    uint64_t h = 0;

    for (int i = 0; i < 16; i++)
        h = h << 4 | (uint64_t)(id[i] <= '9' ? id[i] - '0' : id[i] - 'a' + 10);
    return (size_t)(h & (j->n_buckets - 1));
}

static int table_grow(struct sl_jobs *j)
{
    size_t n = j->n_buckets * 2;
    struct sl_job **b = calloc(n, sizeof(*b));
    struct sl_job **old = j->buckets;
    size_t old_n = j->n_buckets;

    if (b == NULL)
        return SL_ENOMEM;
    j->buckets = b;
    j->n_buckets = n;
    for (size_t i = 0; i < old_n; i++) {
        struct sl_job *job, *next;

        for (job = old[i]; job != NULL; job = next) {
            size_t k = bucket_of(j, job->id);

            next = job->hnext;
            job->hnext = b[k];
            b[k] = job;
        }
    }
    free(old);
    return SL_OK;
}

static struct sl_job *table_find(const struct sl_jobs *j, const char *id)
{
    struct sl_job *job;

    for (job = j->buckets[bucket_of(j, id)]; job != NULL; job = job->hnext) {
        if (memcmp(job->id, id, SL_JOB_ID_LEN) == 0)
            return job;
    }
    return NULL;
}

static void table_remove(struct sl_jobs *j, struct sl_job *job)
{
    struct sl_job **pp = &j->buckets[bucket_of(j, job->id)];

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

static void job_on_adopt(struct sl_sink *s, void *owner)
{
    if (owner != NULL)
        job_of_sink(s)->adopted = true;
}

static void job_on_dispatched(struct sl_sink *s, unsigned attempt)
{
    struct sl_job *job = job_of_sink(s);

    job->attempts = attempt;
    if (job->state == SL_JOB_QUEUED) {
        job->started_us = sl_clock_wall();
        set_state(job, SL_JOB_RUNNING);
    }
}

struct collect {
    struct evkeyvalq *list;
    bool sluice_error;                  /* sluice answered itself */
};

static int collect_field(const char *name, const char *value, void *arg)
{
    struct collect *c = arg;

    if (strcasecmp(name, "X-Sluice-Error") == 0)
        c->sluice_error = true;
    return sl_headers_add(c->list, name, value);
}

static size_t max_response_size(const struct sl_job *job)
{
    const struct sl_route *r = sl_route_find(job->jobs->requests->routes, job->route);

    return r != NULL ? r->cfg.max_response_size : (size_t)64 << 20;
}

/* Replace the answer with sluice's own 502 response_too_large. */
static void store_too_large(struct sl_job *job, size_t len, size_t max)
{
    char body[256];
    int n = snprintf(body, sizeof(body),
                     "{\"error\":\"response_too_large\",\"detail\":\"the upstream's answer "
                     "(%zu bytes) is over the route's max_response_size (%zu bytes)\"}\n",
                     len, max);

    sl_headers_clear(&job->headers);
    job->status = sl_outcome_status(SL_OUTCOME_RESPONSE_TOO_LARGE);
    (void)sl_headers_add(&job->headers, "Content-Type", "application/json");
    (void)sl_headers_add(&job->headers, "X-Sluice-Error", "response_too_large");
    job->body = malloc((size_t)n);
    if (job->body != NULL) {
        memcpy(job->body, body, (size_t)n);
        job->body_len = (size_t)n;
    }
    job->jobs->stats.too_large++;
}

/* The job's one answer: keep it until result_ttl. */
static void job_store(struct sl_job *job, int status, sl_sink_fields_fn fields, void *fields_arg,
                      struct evbuffer *body)
{
    struct sl_jobs *j = job->jobs;
    struct collect c = {&job->headers, false};
    size_t len = body != NULL ? evbuffer_get_length(body) : 0;
    size_t max = max_response_size(job);
    bool failed;

    job->status = status;
    if (fields != NULL && fields(collect_field, &c, fields_arg) != SL_OK)
        sl_headers_clear(&job->headers);
    failed = c.sluice_error;
    if (len > max) {
        store_too_large(job, len, max);
        failed = true;
    } else if (len > 0 && (job->body = malloc(len)) != NULL) {
        job->body_len = (size_t)evbuffer_remove(body, job->body, len);
    }
    if (body != NULL)
        evbuffer_drain(body, evbuffer_get_length(body));
    /* A job never dispatched (expired, drained) keeps started_at null. */
    job->finished_us = sl_clock_wall();
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

static void job_on_respond(struct sl_sink *s, int status, sl_sink_fields_fn fields,
                           void *fields_arg, struct evbuffer *body, bool keep_length, bool close)
{
    struct sl_job *job = job_of_sink(s);

    /* Refused at intake: the client hears the refusal itself, no job exists. */
    if (!job->adopted) {
        if (job->client != NULL)
            job->client->ops->respond(job->client, status, fields, fields_arg, body,
                                      keep_length, close);
        job->client = NULL;
        return;
    }
    if (job->state == SL_JOB_QUEUED || job->state == SL_JOB_RUNNING)
        job_store(job, status, fields, fields_arg, body);
}

static const struct sl_sink_ops job_sink_ops = {
    .adopt = job_on_adopt,
    .respond = job_on_respond,
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
    sink->ops->respond(sink, status, list_fields, fields, body, false, false);
    sl_headers_clear(fields);
    if (body != NULL)
        evbuffer_free(body);
}

static void respond_accepted(struct sl_sink *sink, const struct sl_job *job)
{
    struct evkeyvalq h;
    char location[sizeof(SL_JOBS_PATH) + SL_JOB_ID_LEN];
    char json[256];

    TAILQ_INIT(&h);
    snprintf(location, sizeof(location), SL_JOBS_PATH "%s", job->id);
    snprintf(json, sizeof(json), "{\"id\":\"%s\",\"state\":\"%s\",\"location\":\"%s\"}",
             job->id, sl_job_state_name(job->state), location);
    (void)sl_headers_add(&h, "Location", location);
    (void)sl_headers_add(&h, "Preference-Applied", "respond-async");
    respond_json(sink, 202, &h, json);
}

static void job_view(const struct sl_job *job, struct sl_job_view *v)
{
    bool finished = job->state == SL_JOB_DONE || job->state == SL_JOB_FAILED;

    memset(v, 0, sizeof(*v));
    v->id = job->id;
    v->route = job->route[0] != '\0' ? job->route : NULL;
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
        r = sl_route_match_target(j->requests->routes, copy);
    if (r != NULL)
        snprintf(out, size, "%s", r->cfg.name);
    free(copy);
}

static struct sl_job *job_new(struct sl_jobs *j)
{
    unsigned char raw[SL_JOB_ID_RAW];
    struct sl_job *job;
    size_t k;

    if (j->n >= j->n_buckets && table_grow(j) != SL_OK)
        return NULL;
    /* 128 bits from the kernel's CSPRNG: ids cannot be guessed. */
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        return NULL;
    if ((job = sl_zalloc(sizeof(*job))) == NULL)
        return NULL;
    sl_job_id_format(raw, job->id);
    job->sink.ops = &job_sink_ops;
    job->jobs = j;
    job->state = SL_JOB_QUEUED;
    job->queued_us = sl_clock_wall();
    TAILQ_INIT(&job->headers);
    k = bucket_of(j, job->id);
    job->hnext = j->buckets[k];
    j->buckets[k] = job;
    j->n++;
    TAILQ_INSERT_TAIL(&j->live, job, link);
    j->stats.by_state[SL_JOB_QUEUED]++;
    return job;
}

static void jobs_intake(struct sl_jobs *j, struct sl_sink *sink, struct sl_http_msg *msg,
                        const char *client)
{
    struct sl_job *job = job_new(j);

    if (job == NULL || sl_job_prefer_strip(&msg->headers) != SL_OK) {
        if (job != NULL)
            job_drop(job);
        sl_http_msg_free(msg);
        sl_request_refuse(j->requests, sink, client, SL_OUTCOME_INTERNAL_ERROR,
                          "out of memory", true);
        return;
    }
    find_route(j, msg, job->route, sizeof(job->route));
    /* A refusal (no route, bad controls, queue full, draining) reaches the client as it is. */
    job->client = sink;
    sl_request_submit(j->requests, &job->sink, msg, client);
    job->client = NULL;
    if (!job->adopted) {
        job_drop(job);
        return;
    }
    j->stats.accepted++;
    respond_accepted(sink, job);
}

bool sl_jobs_take(struct sl_jobs *j, struct sl_sink *sink, struct sl_http_msg *msg,
                  const char *client)
{
    if (strncmp(msg->target, SL_JOBS_PATH, strlen(SL_JOBS_PATH)) == 0 &&
        strcmp(msg->method, "GET") == 0) {
        jobs_get(j, sink, msg->target, client);
        sl_http_msg_free(msg);
        return true;
    }
    if (!sl_job_prefers_async(&msg->headers))
        return false;
    jobs_intake(j, sink, msg, client);
    return true;
}

/* --- life ---------------------------------------------------------------- */

struct sl_jobs *sl_jobs_new(struct event_base *base, struct sl_requests *q,
                            const struct sl_config *cfg)
{
    struct sl_jobs *j = sl_zalloc(sizeof(*j));

    if (j == NULL)
        return NULL;
    j->base = base;
    j->requests = q;
    j->cfg = cfg;
    TAILQ_INIT(&j->live);
    TAILQ_INIT(&j->finished);
    j->n_buckets = MIN_BUCKETS;
    j->buckets = calloc(j->n_buckets, sizeof(*j->buckets));
    j->expiry = evtimer_new(base, jobs_on_expiry, j);
    if (j->buckets == NULL || j->expiry == NULL) {
        sl_jobs_free(j);
        return NULL;
    }
    return j;
}

void sl_jobs_configure(struct sl_jobs *j, const struct sl_config *cfg)
{
    j->cfg = cfg;
    enforce_caps(j);
}

void sl_jobs_stats(const struct sl_jobs *j, struct sl_jobs_stats *out)
{
    *out = j->stats;
}

void sl_jobs_free(struct sl_jobs *j)
{
    struct sl_job *job;

    if (j == NULL)
        return;
    while ((job = TAILQ_FIRST(&j->finished)) != NULL)
        job_drop(job);
    while ((job = TAILQ_FIRST(&j->live)) != NULL)
        job_drop(job);
    if (j->expiry != NULL)
        event_free(j->expiry);
    free(j->buckets);
    free(j);
}
