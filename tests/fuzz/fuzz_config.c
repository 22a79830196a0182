/*
 * fuzz_config.c - the config loader (config.h), fed whole files.
 *
 * sl_config_load() reads a path, so the input goes into a memfd reached as
 * /proc/self/fd/N: no disk write per run. Besides crashes, this checks the
 * loader's contract: a config comes back exactly when no error was
 * reported, every error line names the file (so no value from the file can
 * forge a line of its own), and a loaded config holds what validation
 * promises.
 */
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"

static int file_fd = -1;
static char file_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    file_fd = memfd_create("sluice.conf", 0);
    if (file_fd < 0) {
        perror("memfd_create");
        abort();
    }
    snprintf(file_path, sizeof(file_path), "/proc/self/fd/%d", file_fd);
    return 0;
}

static void write_file(const uint8_t *data, size_t size)
{
    FUZZ_CHECK(ftruncate(file_fd, 0) == 0);
    FUZZ_CHECK(pwrite(file_fd, data, size, 0) == (ssize_t)size);
}

static bool terminated(const char *s, size_t size)
{
    return memchr(s, '\0', size) != NULL;
}

/* Every line reads "PATH:LINE: ..." or "PATH: ...". */
static void check_errors(const char *text, size_t len)
{
    size_t plen = strlen(file_path);

    for (const char *p = text, *end = text + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));

        FUZZ_CHECK(nl != NULL);
        FUZZ_CHECK((size_t)(nl - p) > plen && memcmp(p, file_path, plen) == 0 && p[plen] == ':');
        p = nl + 1;
    }
}

static void check_route(const struct sl_config *cfg, size_t i)
{
    const struct sl_route_config *r = &cfg->routes[i];

    FUZZ_CHECK(terminated(r->name, sizeof(r->name)) && r->name[0] != '\0');
    FUZZ_CHECK(sl_config_find_route(cfg, r->name) == (int)i); /* names are unique */
    FUZZ_CHECK(terminated(r->match, sizeof(r->match)) && r->match[0] == '/');
    FUZZ_CHECK(terminated(r->upstream, sizeof(r->upstream)));
    FUZZ_CHECK(strncmp(r->upstream, "http://", 7) == 0 || strncmp(r->upstream, "https://", 8) == 0);
    FUZZ_CHECK(r->upstream[strlen(r->upstream) - 1] != '/');
    FUZZ_CHECK(terminated(r->fair_key, sizeof(r->fair_key)));
    FUZZ_CHECK(r->rate.n > 0 && r->rate.period_us > 0 && r->burst >= 1);
    FUZZ_CHECK(r->n_quotas <= SL_CONFIG_MAX_QUOTAS && r->max_in_flight >= 1);
    for (size_t q = 0; q < r->n_quotas; q++)
        FUZZ_CHECK(r->quotas[q].n > 0 && r->quotas[q].period_us > 0);
    FUZZ_CHECK(r->timeout_us > 0);
    for (size_t j = 0; j < i; j++)
        FUZZ_CHECK(strcmp(cfg->routes[j].match, r->match) != 0);
}

static void check_config(const struct sl_config *cfg)
{
    FUZZ_CHECK(cfg->n_listen >= 1 && cfg->n_listen <= SL_CONFIG_MAX_LISTEN);
    for (size_t i = 0; i < cfg->n_listen; i++)
        FUZZ_CHECK(terminated(cfg->listen[i], SL_CONFIG_ADDR_LEN) && cfg->listen[i][0] != '\0' &&
                   strcmp(cfg->listen[i], cfg->admin_listen) != 0);
    FUZZ_CHECK(terminated(cfg->admin_listen, sizeof(cfg->admin_listen)));
    FUZZ_CHECK(terminated(cfg->admin_token, sizeof(cfg->admin_token)));
    FUZZ_CHECK(cfg->max_connections >= 1 && cfg->max_header_size >= 1024);
    FUZZ_CHECK(cfg->client_timeout_us > 0 && cfg->drain_timeout_us >= 0);
    FUZZ_CHECK(cfg->queue_max_depth >= 1 && cfg->queue_timeout_us >= 0);
    FUZZ_CHECK(!cfg->has_redis); /* memory mode only for now (config.c validate()) */
    FUZZ_CHECK(cfg->n_routes >= 1 && cfg->n_routes <= SL_CONFIG_MAX_ROUTES);
    for (size_t i = 0; i < cfg->n_routes; i++)
        check_route(cfg, i);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = NULL;
    size_t len = 0;
    FILE *err;
    struct sl_config *cfg;

    write_file(data, size);
    err = open_memstream(&text, &len);
    FUZZ_CHECK(err != NULL);
    cfg = sl_config_load(file_path, err);
    FUZZ_CHECK(fclose(err) == 0);
    check_errors(text, len);
    FUZZ_CHECK((cfg == NULL) == (len > 0));
    if (cfg != NULL)
        check_config(cfg);
    sl_config_free(cfg);
    free(text);
    return 0;
}
