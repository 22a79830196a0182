/*
 * path.h - request-target normalisation, pure.
 *
 * Routes are matched on the path sluice sees, but the upstream acts on the
 * path it resolves. Any difference between the two is a way around a route:
 * "/api/x/%2e%2e/reports", "/api/%72eports" and "//api/reports" all matched
 * the default route while the upstream served "/api/reports". This module
 * turns an origin-form target into the one form both sides agree on, or
 * refuses it when no such form exists, so that a path can neither reach
 * another route's path nor climb out of a route's upstream base path.
 *
 * Rules (RFC 3986 section 6.2.2 syntax-based normalisation, plus refusals of
 * whatever an upstream could read in more than one way):
 *
 *  - The target must start with '/'. "*" and absolute-form are the caller's
 *    business: "not an origin-form target".
 *  - '#' anywhere is refused ("fragment in the target"): a client never
 *    sends a fragment (RFC 9112 section 3.2.1), and cutting it off would
 *    forward something other than what was asked.
 *  - Control characters (0x00-0x1F, 0x7F) and SP are refused anywhere (the
 *    head parser already refuses them, but targets also come from batch
 *    items, where they would break the request line), and so is %00 (C
 *    upstreams stop at it).
 *  - Every '%' must start a %HH escape; "%G1" or a trailing '%' is "bad
 *    percent-encoding". Escapes of unreserved characters (ALPHA DIGIT - . _ ~)
 *    are decoded, in the path and in the query alike: RFC 3986 section
 *    2.3 makes them equivalent to the character in every component, so the
 *    upstream sees no difference, and a query-based limit key cannot be
 *    dodged by encoding it. All other escapes are kept, their hex digits
 *    uppercased (section 6.2.2.1). Reserved characters are never decoded:
 *    that would change the meaning ("%2B" is not '+' in a form query).
 *
 * In the path only (the part before the first '?'):
 *  - "." and ".." segments are refused. Literal ones keep the long-standing
 *    detail "dot segments are not allowed in the path"; ones spelled with
 *    escapes ("%2e", ".%2E", ...) are "encoded dot segment in the path".
 *    They are refused rather than resolved: a client that sends them is
 *    either broken or probing, and resolving would answer for a path the
 *    client did not name. "..." and "a." are ordinary segments.
 *  - Empty segments are collapsed ("//a//b" becomes "/a/b"), as nginx's
 *    merge_slashes does by default: clients that join URLs carelessly keep
 *    working, and the upstream and the route see the same path. A trailing
 *    '/' is kept ("/a/" stays "/a/"): it is not an empty segment in the
 *    middle and upstreams often treat it differently.
 *  - Encoded '/' (%2F) and encoded '\' (%5C) are refused (servers disagree
 *    on whether they split segments), and so is a literal '\' (Windows and
 *    some frameworks read it as '/').
 *  - ';' and %3B are refused: Java servlet containers strip ";params" from
 *    each segment before resolving, so "/api;/reports" and "/api/..;/x"
 *    would reach paths the route never saw.
 *  - Encoded control characters (%01-%1F, %7F) are refused.
 *  - A "%25" followed by two hex digits is refused ("double percent-encoding
 *    in the path"): an upstream that decodes twice would see "%252e" as '.'.
 *    A lone "%25" ("/100%25") is fine.
 *  - Bytes 0x80-0xFF are refused: RFC 3986 has no room for them, and which
 *    character they stand for is the upstream's guess. Encoded, they pass.
 *
 * In the query, '/', '.', '\', ';' and bytes 0x80-0xFF are data and pass
 * unchanged; no route depends on them. Elsewhere, other printable ASCII
 * passes unchanged, even what RFC 3986 wants encoded ('|', '{', '^', ...):
 * clients send it raw and no server splits a path on it.
 *
 * The output is never longer than the input, so out_size >= len + 1 always
 * suffices. Normalising an accepted output again gives the same output.
 *
 * Ownership: nothing is allocated and nothing is kept; the caller owns both
 * buffers.
 */
#ifndef SL_PATH_H
#define SL_PATH_H

#include <stddef.h>

/*
 * Normalise the origin-form target `target` (len bytes, need not be
 * NUL-terminated) into out, NUL-terminated. out may be target itself
 * (in place); it must not overlap it otherwise.
 *
 * Returns SL_OK, or SL_ERR with *detail (when detail is not NULL) set to a
 * short static sentence that names the problem (the request's 400 detail; "request target too long"
 * when out_size is too small). On SL_ERR, out holds unspecified bytes, so an
 * in-place caller has lost the original target.
 */
int sl_path_normalize(const char *target, size_t len, char *out, size_t out_size,
                      const char **detail);

#endif
