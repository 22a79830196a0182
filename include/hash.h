/*
 * hash.h - keyed hashing for tables whose keys clients choose (fair keys,
 * limit keys): SipHash-2-4 with a secret key drawn at start, so a client
 * cannot pick values that fall into one chain (hash flooding).
 *
 * Pure apart from sl_hash_key_random(), which reads the kernel's random
 * source once. Ownership: a key is a plain value.
 */
#ifndef SL_HASH_H
#define SL_HASH_H

#include <stddef.h>
#include <stdint.h>

struct sl_hash_key {
    uint64_t k0, k1;
};

/* A secret key from getrandom(); falls back to time and address bits (logged by no one). */
void sl_hash_key_random(struct sl_hash_key *key);

/* SipHash-2-4 of `len` bytes. */
uint64_t sl_hash(const struct sl_hash_key *key, const void *data, size_t len);

#endif
