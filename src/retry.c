/*
 * retry.c - retry policy: upstream limit announcements, idempotency, backoff.
 *
 * Everything here reads strings the upstream (or the client) chose, so every
 * parser is strict about syntax, bounded by the string's end, saturating on
 * overflow, and answers "unusable" rather than guessing. Dates are computed
 * by hand (days from the civil date) so no locale, time zone or libc state is
 * involved.
 */
#include "retry.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

#include <sys/queue.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "clock.h"
#include "http1.h"
#include "sluice.h"

/* Whole seconds above this are clamped: the product still fits in int64_t. */
#define MAX_PAUSE_S (SL_RETRY_MAX_PAUSE_US / SL_USEC_PER_SEC)
/* Saturation point for parsed integers, far above any meaningful value. */
#define INT_SATURATE INT64_C(999999999999999)
/* X-RateLimit-Reset above this is an epoch timestamp, not a delta. */
#define EPOCH_THRESHOLD_S INT64_C(1000000000)
#define SECS_PER_DAY INT64_C(86400)

/* Outcome of one way of announcing limits. */
#define FORM_UNUSABLE (-1)
#define FORM_NOT_SPENT 0
#define FORM_SPENT 1

static const char *const month_names[] = {
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
};
static const char *const day_names[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
static const char *const long_day_names[] = {
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
};

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_lcalpha(char c)
{
    return c >= 'a' && c <= 'z';
}

static bool is_alpha(char c)
{
    return is_lcalpha(c) || (c >= 'A' && c <= 'Z');
}

/* [start, end) of s without leading and trailing OWS. */
static void trim(const char *s, const char **start, const char **end)
{
    *start = s;
    *end = s + strlen(s);
    sl_http1_trim(start, end);
}

static int64_t secs_to_us(int64_t s)
{
    if (s <= 0)
        return 0;
    return s > MAX_PAUSE_S ? SL_RETRY_MAX_PAUSE_US : s * SL_USEC_PER_SEC;
}

static int64_t clamp_pause(int64_t us)
{
    if (us < 0)
        return 0;
    return us > SL_RETRY_MAX_PAUSE_US ? SL_RETRY_MAX_PAUSE_US : us;
}

/* Microseconds from now until epoch second `s` (plus `frac_us`), 0 if past. */
static int64_t until_epoch(int64_t s, int64_t frac_us, int64_t now_wall_us)
{
    /* Far beyond the clamp either way; keeps the arithmetic in range. */
    if (s > now_wall_us / SL_USEC_PER_SEC + 2 * MAX_PAUSE_S)
        return SL_RETRY_MAX_PAUSE_US;
    return clamp_pause(s * SL_USEC_PER_SEC + frac_us - now_wall_us);
}

/*
 * Decimal digits in [p, end), saturating at INT_SATURATE. Returns the number
 * of digits consumed (0: none) and advances *pp.
 */
static size_t read_digits(const char **pp, const char *end, int64_t *out)
{
    const char *start = *pp, *p = *pp;
    int64_t v = 0;

    while (p < end && is_digit(*p)) {
        v = v > INT_SATURATE / 10 ? INT_SATURATE : v * 10 + (*p - '0');
        p++;
    }
    *out = v;
    *pp = p;
    return (size_t)(p - start);
}

/* ---- HTTP-date (RFC 9110 5.6.7) ---------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's method). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}

/* The Gregorian year that holds `days` since the epoch. */
static int64_t year_of_days(int64_t days)
{
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;

    return yoe + era * 400 + (mp >= 10);
}

static int days_in_month(int64_t y, int m)
{
    static const int len[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return m == 2 && leap ? 29 : len[m - 1];
}

struct date {
    int64_t year;
    int month, day, hour, min, sec;
};

/* Cursor over [p, end): each helper consumes on success and fails otherwise. */
struct cur {
    const char *p, *end;
};

static bool lit(struct cur *c, const char *s)
{
    size_t n = strlen(s);

    if ((size_t)(c->end - c->p) < n || memcmp(c->p, s, n) != 0)
        return false;
    c->p += n;
    return true;
}

static void ows(struct cur *c)
{
    while (c->p < c->end && sl_http1_is_ows(*c->p))
        c->p++;
}

/* Exactly n digits. */
static bool fixed_num(struct cur *c, size_t n, int *out)
{
    int v = 0;

    if ((size_t)(c->end - c->p) < n)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(c->p[i]))
            return false;
        v = v * 10 + (c->p[i] - '0');
    }
    c->p += n;
    *out = v;
    return true;
}

/* One of `names` (exact case, as the RFC requires); *index is 0-based. */
static bool name(struct cur *c, const char *const *names, size_t count, int *index)
{
    for (size_t i = 0; i < count; i++) {
        size_t n = strlen(names[i]);
        bool next_is_alpha = (size_t)(c->end - c->p) > n && is_alpha(c->p[n]);

        if (!next_is_alpha && lit(c, names[i])) {
            *index = (int)i;
            return true;
        }
    }
    return false;
}

static bool month(struct cur *c, struct date *d)
{
    int i;

    if (!name(c, month_names, SL_ARRAY_LEN(month_names), &i))
        return false;
    d->month = i + 1;
    return true;
}

/* time-of-day = hour ":" minute ":" second */
static bool time_of_day(struct cur *c, struct date *d)
{
    return fixed_num(c, 2, &d->hour) && lit(c, ":") && fixed_num(c, 2, &d->min) &&
           lit(c, ":") && fixed_num(c, 2, &d->sec);
}

static bool year4(struct cur *c, struct date *d)
{
    int y;

    if (!fixed_num(c, 4, &y))
        return false;
    d->year = y;
    return true;
}

/* IMF-fixdate after the day name: ", 06 Nov 1994 08:49:37 GMT" */
static bool imf_fixdate(struct cur *c, struct date *d)
{
    return lit(c, ", ") && fixed_num(c, 2, &d->day) && lit(c, " ") && month(c, d) &&
           lit(c, " ") && year4(c, d) && lit(c, " ") && time_of_day(c, d) && lit(c, " GMT");
}

/* rfc850-date after the day name: ", 06-Nov-94 08:49:37 GMT" */
static bool rfc850_date(struct cur *c, struct date *d, int64_t now_wall_us)
{
    int yy;

    if (!(lit(c, ", ") && fixed_num(c, 2, &d->day) && lit(c, "-") && month(c, d) &&
          lit(c, "-") && fixed_num(c, 2, &yy) && lit(c, " ") && time_of_day(c, d) &&
          lit(c, " GMT")))
        return false;
    /* RFC 9110: a two-digit year more than 50 years ahead is in the past. */
    int64_t now_year = year_of_days(now_wall_us / SL_USEC_PER_SEC / SECS_PER_DAY);
    int64_t y = now_year - now_year % 100 + yy;
    if (y > now_year + 50)
        y -= 100;
    else if (y + 100 <= now_year + 50)
        y += 100;
    d->year = y;
    return true;
}

/* asctime-date after the day name: " Nov  6 08:49:37 1994" */
static bool asctime_date(struct cur *c, struct date *d)
{
    if (!(lit(c, " ") && month(c, d) && lit(c, " ")))
        return false;
    if (lit(c, " ")) {
        if (!fixed_num(c, 1, &d->day))
            return false;
    } else if (!fixed_num(c, 2, &d->day)) {
        return false;
    }
    return lit(c, " ") && time_of_day(c, d) && lit(c, " ") && year4(c, d);
}

static bool date_valid(const struct date *d)
{
    /* sec 60: a leap second is a legal HTTP-date. */
    return d->day >= 1 && d->day <= days_in_month(d->year, d->month) && d->hour <= 23 &&
           d->min <= 59 && d->sec <= 60;
}

/* Parses the whole of [p, end) as an HTTP-date into epoch seconds. */
static bool http_date(const char *p, const char *end, int64_t now_wall_us, int64_t *epoch_s)
{
    struct cur c = {p, end};
    struct date d = {0};
    int wday;
    bool ok;

    if (name(&c, long_day_names, SL_ARRAY_LEN(long_day_names), &wday))
        ok = rfc850_date(&c, &d, now_wall_us);
    else if (name(&c, day_names, SL_ARRAY_LEN(day_names), &wday))
        ok = (c.p < c.end && *c.p == ',') ? imf_fixdate(&c, &d) : asctime_date(&c, &d);
    else
        return false;
    if (!ok || c.p != c.end || !date_valid(&d))
        return false;
    *epoch_s = days_from_civil(d.year, d.month, d.day) * SECS_PER_DAY + d.hour * 3600 +
               d.min * 60 + d.sec;
    return true;
}

int sl_retry_after_parse(const char *value, int64_t now_wall_us, int64_t *delay_us)
{
    const char *b, *e;
    int64_t v;

    if (value == NULL || delay_us == NULL)
        return -1;
    trim(value, &b, &e);
    if (b == e)
        return -1;
    if (is_digit(*b)) {
        const char *p = b;
        read_digits(&p, e, &v);
        if (p != e)
            return -1;
        *delay_us = secs_to_us(v);
        return 0;
    }
    if (!http_date(b, e, now_wall_us, &v))
        return -1;
    *delay_us = until_epoch(v, 0, now_wall_us);
    return 0;
}

/* ---- Single-valued fields ---------------------------------------------- */

/*
 * The value of a field that must appear once. Repeats with the same value
 * are harmless; repeats that disagree make the field unusable (NULL).
 */
static const char *single_value(const struct evkeyvalq *headers, const char *field)
{
    const struct evkeyval *h;
    const char *found = NULL;

    TAILQ_FOREACH(h, headers, next) {
        if (strcasecmp(h->key, field) != 0)
            continue;
        if (found != NULL && strcmp(found, h->value) != 0)
            return NULL;
        found = h->value;
    }
    return found;
}

/* An optionally negative integer, surrounded by OWS at most. */
static bool parse_int(const char *s, int64_t *out)
{
    const char *b, *e;
    bool neg;

    if (s == NULL)
        return false;
    trim(s, &b, &e);
    neg = b < e && *b == '-';
    if (neg)
        b++;
    if (read_digits(&b, e, out) == 0 || b != e)
        return false;
    if (neg)
        *out = -*out;
    return true;
}

/* Non-negative seconds with an optional fraction, in µs rounded up. */
static bool parse_seconds_frac(const char *s, int64_t *whole_s, int64_t *frac_us)
{
    const char *b, *e;
    int64_t us = 0, scale = SL_USEC_PER_SEC;
    bool round_up = false;

    if (s == NULL)
        return false;
    trim(s, &b, &e);
    if (read_digits(&b, e, whole_s) == 0)
        return false;
    if (b < e && *b == '.') {
        if (++b == e || !is_digit(*b))
            return false;
        for (; b < e && is_digit(*b); b++) {
            scale /= 10;
            if (scale > 0)
                us += (*b - '0') * scale;
            else if (*b != '0')
                round_up = true;
        }
    }
    *frac_us = us + round_up;
    return b == e;
}

/* ---- The three ways of announcing a spent budget ----------------------- */

/* A parsed RateLimit item: the r and t parameters, if any (q and w for policies). */
struct rl_item {
    bool has_r, has_t, has_q, has_w;
    int64_t r, t, q, w;
};

/* Accumulated over every usable item of every RateLimit line. */
struct rl_result {
    bool usable, spent;
    int64_t pause_s;
};

static bool is_tchar(char c)
{
    return is_alpha(c) || is_digit(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* sf-string: '"' *(unescaped / '\' ( '"' / '\' )) '"' */
static bool sf_string(struct cur *c)
{
    if (!lit(c, "\""))
        return false;
    while (c->p < c->end) {
        char ch = *c->p++;
        if (ch == '"')
            return true;
        if (ch == '\\') {
            if (c->p == c->end || (*c->p != '"' && *c->p != '\\'))
                return false;
            c->p++;
        } else if (ch < 0x20 || ch > 0x7e) {
            return false;
        }
    }
    return false;
}

/* sf-token: ( ALPHA / "*" ) *( tchar / ":" / "/" ) */
static bool sf_token(struct cur *c)
{
    if (c->p == c->end || !(is_alpha(*c->p) || *c->p == '*'))
        return false;
    c->p++;
    while (c->p < c->end && (is_tchar(*c->p) || *c->p == ':' || *c->p == '/'))
        c->p++;
    return true;
}

/* sf-integer or sf-decimal; *is_int and *v only for an integer. */
static bool sf_number(struct cur *c, bool *is_int, int64_t *v)
{
    bool neg = lit(c, "-");
    size_t n = read_digits(&c->p, c->end, v);

    if (n == 0 || n > 15)
        return false;
    *is_int = !lit(c, ".");
    if (!*is_int) {
        int64_t frac;
        size_t fn = read_digits(&c->p, c->end, &frac);
        if (n > 12 || fn == 0 || fn > 3)
            return false;
    }
    if (neg)
        *v = -*v;
    return true;
}

/* sf-binary ':' base64 ':' and sf-boolean '?0' / '?1'. */
static bool sf_binary_or_bool(struct cur *c)
{
    if (lit(c, "?0") || lit(c, "?1"))
        return true;
    if (!lit(c, ":"))
        return false;
    while (c->p < c->end && (is_alpha(*c->p) || is_digit(*c->p) || *c->p == '+' ||
                             *c->p == '/' || *c->p == '='))
        c->p++;
    return lit(c, ":");
}

/* A bare item as a parameter value; *int_ok and *v when it is an integer. */
static bool sf_bare_item(struct cur *c, bool *int_ok, int64_t *v)
{
    *int_ok = false;
    if (c->p == c->end)
        return false;
    if (*c->p == '-' || is_digit(*c->p))
        return sf_number(c, int_ok, v);
    if (*c->p == '"')
        return sf_string(c);
    if (*c->p == '?' || *c->p == ':')
        return sf_binary_or_bool(c);
    return sf_token(c);
}

/* sf key: ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" ) */
static bool sf_key(struct cur *c, const char **key, size_t *len)
{
    const char *start = c->p;

    if (c->p == c->end || !(is_lcalpha(*c->p) || *c->p == '*'))
        return false;
    while (c->p < c->end && (is_lcalpha(*c->p) || is_digit(*c->p) ||
                             (*c->p != '\0' && strchr("_-.*", *c->p) != NULL)))
        c->p++;
    *key = start;
    *len = (size_t)(c->p - start);
    return true;
}

/* One ";key[=value]" (OWS tolerated around ';' and '='); records r and t. */
static bool sf_param(struct cur *c, struct rl_item *it)
{
    const char *key;
    size_t len;
    bool is_int = false;
    int64_t v = 0;

    ows(c);
    if (!sf_key(c, &key, &len))
        return false;
    ows(c);
    if (lit(c, "=")) {
        ows(c);
        if (!sf_bare_item(c, &is_int, &v))
            return false;
    }
    /* The last occurrence wins (RFC 9651); a non-integer value unsets. */
    if (len == 1 && key[0] == 'r') {
        it->has_r = is_int;
        it->r = v;
    } else if (len == 1 && key[0] == 't') {
        it->has_t = is_int && v >= 0;
        it->t = v;
    } else if (len == 1 && key[0] == 'q') {
        it->has_q = is_int && v > 0;
        it->q = v;
    } else if (len == 1 && key[0] == 'w') {
        it->has_w = is_int && v > 0;
        it->w = v;
    }
    return true;
}

/* One list member: a policy name (string or token) and its parameters. */
static bool rl_member(struct cur *c, struct rl_item *it)
{
    bool quoted = c->p < c->end && *c->p == '"';

    memset(it, 0, sizeof(*it));
    if (!(quoted ? sf_string(c) : sf_token(c)))
        return false;
    for (;;) {
        ows(c);
        if (!lit(c, ";"))
            return true;
        if (!sf_param(c, it))
            return false;
    }
}

static void rl_account(struct rl_result *res, const struct rl_item *it)
{
    if (!it->has_r || !it->has_t)
        return;
    res->usable = true;
    if (it->r > 0)
        return;
    if (!res->spent || it->t > res->pause_s)
        res->pause_s = it->t;
    res->spent = true;
}

/*
 * Parses one RateLimit line as a list, folding its items into `res`.
 * Returns false on a syntax error (the field as a whole is then unusable).
 */
static bool rl_line(const char *value, struct rl_result *res)
{
    const char *b, *e;
    struct rl_item it;

    trim(value, &b, &e);
    struct cur c = {b, e};
    if (c.p == c.end)
        return true;
    /* Each member consumes at least one byte, so this loop ends. */
    for (;;) {
        if (!rl_member(&c, &it))
            return false;
        rl_account(res, &it);
        ows(&c);
        if (c.p == c.end)
            return true;
        if (!lit(&c, ","))
            return false;
        ows(&c);
        if (c.p == c.end)
            return false;
    }
}

/* IETF RateLimit: several lines form one list. */
static int form_ietf(const struct evkeyvalq *headers, int64_t *pause_us)
{
    const struct evkeyval *h;
    struct rl_result res = {false, false, 0};

    TAILQ_FOREACH(h, headers, next)
        if (strcasecmp(h->key, "RateLimit") == 0 && !rl_line(h->value, &res))
            return FORM_UNUSABLE;
    if (!res.usable)
        return FORM_UNUSABLE;
    if (!res.spent)
        return FORM_NOT_SPENT;
    *pause_us = secs_to_us(res.pause_s);
    return FORM_SPENT;
}

/* Older drafts: RateLimit-Remaining + RateLimit-Reset (delta seconds). */
static int form_draft(const struct evkeyvalq *headers, int64_t *pause_us)
{
    int64_t remaining, reset;

    if (!parse_int(single_value(headers, "RateLimit-Remaining"), &remaining))
        return FORM_UNUSABLE;
    if (remaining > 0)
        return FORM_NOT_SPENT;
    if (!parse_int(single_value(headers, "RateLimit-Reset"), &reset) || reset < 0)
        return FORM_UNUSABLE;
    *pause_us = secs_to_us(reset);
    return FORM_SPENT;
}

/* X-RateLimit-*: reset is delta seconds (maybe fractional) or epoch seconds. */
static int form_x(const struct evkeyvalq *headers, int64_t now_wall_us, int64_t *pause_us)
{
    int64_t remaining, reset_s, frac_us;

    if (!parse_int(single_value(headers, "X-RateLimit-Remaining"), &remaining))
        return FORM_UNUSABLE;
    if (remaining > 0)
        return FORM_NOT_SPENT;
    if (!parse_seconds_frac(single_value(headers, "X-RateLimit-Reset"), &reset_s, &frac_us))
        return FORM_UNUSABLE;
    if (reset_s > EPOCH_THRESHOLD_S)
        *pause_us = until_epoch(reset_s, frac_us, now_wall_us);
    else
        *pause_us = clamp_pause(reset_s * SL_USEC_PER_SEC + frac_us);
    return FORM_SPENT;
}

int sl_retry_ratelimit_exhausted(const struct evkeyvalq *headers, int64_t now_wall_us,
                                 int64_t *pause_us)
{
    int64_t pause = 0;
    int r;

    if (headers == NULL || pause_us == NULL)
        return 0;
    /* The first form that says something usable decides, even "not spent". */
    r = form_ietf(headers, &pause);
    if (r == FORM_UNUSABLE)
        r = form_draft(headers, &pause);
    if (r == FORM_UNUSABLE)
        r = form_x(headers, now_wall_us, &pause);
    if (r != FORM_SPENT)
        return 0;
    *pause_us = pause;
    return 1;
}

/* ---- Announced limits ----------------------------------------------------- */

/*
 * One policy member: an integer quota ("100;w=60", older drafts and
 * X-RateLimit-Limit) or a named policy with q ('"default";q=100;w=60').
 * Sets *n and *w_s when it names both a quota and a window.
 */
static bool policy_member(struct cur *c, bool *usable, int64_t *n, int64_t *w_s)
{
    struct rl_item it;
    bool is_int = false;
    int64_t v = 0;

    memset(&it, 0, sizeof(it));
    *usable = false;
    if (c->p < c->end && (*c->p == '-' || is_digit(*c->p))) {
        if (!sf_number(c, &is_int, &v))
            return false;
    } else if (!(c->p < c->end && *c->p == '"' ? sf_string(c) : sf_token(c))) {
        return false;
    }
    for (;;) {
        ows(c);
        if (!lit(c, ";"))
            break;
        if (!sf_param(c, &it))
            return false;
    }
    if (is_int && v > 0 && !it.has_q) {
        it.has_q = true;
        it.q = v;
    }
    if (it.has_q && it.has_w) {
        *usable = true;
        *n = it.q;
        *w_s = it.w > MAX_PAUSE_S ? MAX_PAUSE_S : it.w;
    }
    return true;
}

/* The policies of every `field` line into out; -1 on a syntax error. */
static int policy_field(const struct evkeyvalq *headers, const char *field,
                        struct sl_retry_policy *out, size_t max)
{
    const struct evkeyval *h;
    size_t n = 0;

    TAILQ_FOREACH(h, headers, next) {
        const char *b, *e;
        struct cur c;

        if (strcasecmp(h->key, field) != 0)
            continue;
        trim(h->value, &b, &e);
        c = (struct cur){b, e};
        while (c.p < c.end) {
            bool usable;
            int64_t q, w;

            if (!policy_member(&c, &usable, &q, &w))
                return -1;
            if (usable && n < max) {
                out[n].n = q;
                out[n].window_us = w * SL_USEC_PER_SEC;
                n++;
            }
            ows(&c);
            if (c.p < c.end && !lit(&c, ","))
                return -1;
            ows(&c);
        }
    }
    return (int)n;
}

size_t sl_retry_ratelimit_policies(const struct evkeyvalq *headers,
                                   struct sl_retry_policy *out, size_t max)
{
    static const char *const fields[] = {"RateLimit-Policy", "RateLimit-Limit",
                                         "X-RateLimit-Limit"};

    if (headers == NULL || out == NULL)
        return 0;
    /* The first field that names a usable policy decides. */
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        int n = policy_field(headers, fields[i], out, max);

        if (n > 0)
            return (size_t)n;
    }
    return 0;
}

/* ---- Idempotency, statuses, backoff ------------------------------------ */

bool sl_retry_idempotent(const char *method, const struct evkeyvalq *request_headers)
{
    /* RFC 9110 9.2.2; method names are case-sensitive. */
    static const char *const safe[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"};
    const char *key, *b, *e;

    if (method == NULL)
        return false;
    for (size_t i = 0; i < SL_ARRAY_LEN(safe); i++)
        if (strcmp(method, safe[i]) == 0)
            return true;
    if (request_headers == NULL)
        return false;
    key = evhttp_find_header(request_headers, "Idempotency-Key");
    if (key == NULL)
        return false;
    trim(key, &b, &e);
    return b != e;
}

bool sl_retry_status_retryable(int status)
{
    return status == 502 || status == 503 || status == 504;
}

static uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state;

    if (x == 0)
        x = UINT64_C(0x9e3779b97f4a7c15); /* zero is a fixed point: reseed */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

/* min(cap, base * 2^(attempt-1)) without overflow. */
static int64_t backoff_ceiling(unsigned attempt, int64_t base_us, int64_t cap_us)
{
    unsigned shift = attempt > 0 ? attempt - 1 : 0;

    if (base_us <= 0 || cap_us <= 0)
        return 0;
    if (base_us >= cap_us || shift >= 63 || base_us > (cap_us >> shift))
        return cap_us;
    return base_us << shift;
}

int64_t sl_retry_backoff(unsigned attempt, int64_t base_us, int64_t cap_us, uint64_t *rng)
{
    int64_t d = backoff_ceiling(attempt, base_us, cap_us);
    int64_t lo = d / 2;
    uint64_t span = (uint64_t)(d - lo) + 1;

    if (d == 0 || rng == NULL)
        return d;
    return lo + (int64_t)(xorshift64(rng) % span);
}
