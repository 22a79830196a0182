/*
 * fuzz_config_values.c - the value parsers of config.h: durations, sizes
 * and limits, on the input as a string.
 *
 * Besides crashes, the parsers are checked against each other: the same
 * number with a larger unit must give an exact multiple (the units are
 * whole multiples of a second and of a byte), a bare number must mean
 * seconds and bytes, and a size suffix is case-insensitive. These catch
 * overflow and rounding slips that no crash would show.
 */
#include "config.h"
#include "fuzz.h"
#include "sluice.h"

/* s + suffix, as a fresh exact-size string. */
static char *with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    char *p = fuzz_alloc(a + b + 1);

    memcpy(p, s, a);
    memcpy(p + a, suffix, b + 1);
    return p;
}

static int duration(const char *s, const char *suffix, int64_t *us)
{
    char *p = with(s, suffix);
    int rc = sl_config_parse_duration(p, us);

    free(p);
    FUZZ_CHECK(rc == 0 || rc == -1);
    FUZZ_CHECK(rc != 0 || *us >= 0);
    return rc;
}

static int size(const char *s, const char *suffix, size_t *n)
{
    char *p = with(s, suffix);
    int rc = sl_config_parse_size(p, n);

    free(p);
    FUZZ_CHECK(rc == 0 || rc == -1);
    return rc;
}

/* Each unit is a whole multiple of the one before it. */
static void durations(const char *s, bool ends_in_digit)
{
    static const struct {
        const char *unit;
        int64_t times; /* the previous unit's value times this */
    } units[] = {{"s", 0}, {"m", 60}, {"h", 60}, {"d", 24}};
    int64_t bare, prev = 0, us;
    bool prev_ok = false;

    if (duration(s, "", &bare) != 0 || !ends_in_digit)
        return;
    for (size_t i = 0; i < SL_ARRAY_LEN(units); i++) {
        bool ok = duration(s, units[i].unit, &us) == 0;

        if (i == 0)
            FUZZ_CHECK(ok && us == bare); /* a bare number is seconds */
        else if (ok)
            FUZZ_CHECK(prev_ok && us / units[i].times == prev && us % units[i].times == 0);
        prev = us;
        prev_ok = ok;
    }
}

static void sizes(const char *s, bool ends_in_digit)
{
    size_t bare, k, upper;

    if (size(s, "", &bare) != 0 || !ends_in_digit)
        return;
    if (size(s, "k", &k) == 0) {
        FUZZ_CHECK(k / 1024 == bare && k % 1024 == 0);
        FUZZ_CHECK(size(s, "K", &upper) == 0 && upper == k);
    }
    if (size(s, "g", &k) == 0)
        FUZZ_CHECK(size(s, "m", &upper) == 0 && upper == k / 1024);
}

static void limit(const char *s)
{
    struct sl_limit l;
    int rc = sl_config_parse_limit(s, &l);

    FUZZ_CHECK(rc == 0 || rc == -1);
    if (rc != 0)
        return;
    /* N up to 10^7, three decimals at most; P one of s, m, h, d. */
    FUZZ_CHECK(l.n >= 0.001 && l.n < 10000001.0);
    FUZZ_CHECK(l.period_us == INT64_C(1000000) || l.period_us == INT64_C(60000000) ||
               l.period_us == INT64_C(3600000000) || l.period_us == INT64_C(86400000000));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    char *s = fuzz_string(data, n);
    size_t len = strlen(s);
    bool ends_in_digit = len > 0 && s[len - 1] >= '0' && s[len - 1] <= '9';

    durations(s, ends_in_digit);
    sizes(s, ends_in_digit);
    limit(s);
    free(s);
    return 0;
}
