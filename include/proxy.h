/*
 * proxy.h - the running instance: one event_base and everything on it.
 *
 * The proxy wires the modules together and owns what they share: the
 * config, the route table (and routes retired by a reload), the frontend,
 * the upstream backends, the admin listener and every live request. It
 * handles signals: SIGHUP reloads, SIGTERM/SIGINT drain (a second one
 * stops at once). Its struct is private; each module gets only the narrow
 * context it needs (struct sl_requests, struct sl_admin_view, callbacks).
 *
 * Ownership: sl_proxy_new() takes the config; sl_proxy_free() frees all.
 */
#ifndef SL_PROXY_H
#define SL_PROXY_H

struct sl_config;
struct sl_proxy;

/* Build the instance on a new event_base; takes cfg. NULL on failure (cfg freed). */
struct sl_proxy *sl_proxy_new(struct sl_config *cfg);

/* Bind listeners (SL_ERR if one cannot be bound), then run until stopped. Returns the exit code. */
int sl_proxy_run(struct sl_proxy *p);

void sl_proxy_free(struct sl_proxy *p);

#endif
