/*
 * main.c - command line (SPEC section 2): parse flags, load the config,
 * run the proxy. Exit codes: 0 clean stop, 1 config error, 2 runtime failure.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "config.h"
#include "log.h"
#include "proxy.h"
#include "sluice.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: sluice [-c FILE] [-t] [-V] [-h]\n"
            "  -c, --config FILE   config file (default %s)\n"
            "  -t, --test          validate the config, print \"FILE: ok\" or each error, exit 0/1\n"
            "  -V, --version       print the version and exit\n"
            "  -h, --help          this help\n",
            SL_CONFIG_DEFAULT_PATH);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = SL_CONFIG_DEFAULT_PATH;
    int test_only = 0;
    struct sl_config *cfg;
    struct sl_proxy *p;
    int opt, rc;

    while ((opt = getopt_long(argc, argv, "c:tVh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test_only = 1;
            break;
        case 'V':
            printf("sluice %s\n", SLUICE_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sluice: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 1;
    }
    cfg = sl_config_load(path, stderr);
    if (cfg == NULL)
        return 1;
    if (test_only) {
        printf("%s: ok\n", path);
        sl_config_free(cfg);
        return 0;
    }
    /* Writes to a closed client socket must fail with EPIPE, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    p = sl_proxy_new(cfg);
    if (p == NULL) {
        sl_log_error("cannot start", NULL);
        return 2;
    }
    rc = sl_proxy_run(p);
    sl_proxy_free(p);
    return rc;
}
