/*
 * hash.c - SipHash-2-4 (Aumasson and Bernstein, 2012), written from the
 * paper's description: 2 compression rounds per 8-byte word, 4 finalisation
 * rounds, the length in the last word's top byte.
 */
#include "hash.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static void sip_round(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = ROTL(v[1], 13);
    v[1] ^= v[0];
    v[0] = ROTL(v[0], 32);
    v[2] += v[3];
    v[3] = ROTL(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = ROTL(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = ROTL(v[1], 17);
    v[1] ^= v[2];
    v[2] = ROTL(v[2], 32);
}

/* Little-endian 64-bit word from up to 8 bytes. */
static uint64_t word(const unsigned char *p, size_t n)
{
    uint64_t w = 0;

    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)p[i] << (8 * i);
    return w;
}

static void compress(uint64_t v[4], uint64_t m)
{
    v[3] ^= m;
    sip_round(v);
    sip_round(v);
    v[0] ^= m;
}

uint64_t sl_hash(const struct sl_hash_key *key, const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t v[4] = {
        key->k0 ^ UINT64_C(0x736f6d6570736575), key->k1 ^ UINT64_C(0x646f72616e646f6d),
        key->k0 ^ UINT64_C(0x6c7967656e657261), key->k1 ^ UINT64_C(0x7465646279746573),
    };
    size_t whole = len - len % 8;

    for (size_t i = 0; i < whole; i += 8)
        compress(v, word(p + i, 8));
    compress(v, word(p + whole, len % 8) | ((uint64_t)(len & 0xff) << 56));
    v[2] ^= 0xff;
    for (int i = 0; i < 4; i++)
        sip_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

void sl_hash_key_random(struct sl_hash_key *key)
{
    unsigned char b[16];

    if (getrandom(b, sizeof(b), GRND_NONBLOCK) != (ssize_t)sizeof(b)) {
        /* No entropy yet (early boot): still unpredictable enough to spread chains. */
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        key->k0 = (uint64_t)ts.tv_nsec * UINT64_C(0x9e3779b97f4a7c15) ^ (uint64_t)(uintptr_t)key;
        key->k1 = (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&ts;
        return;
    }
    key->k0 = word(b, 8);
    key->k1 = word(b + 8, 8);
}
