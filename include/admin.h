/*
 * admin.h - the admin listener: GET /health, /metrics, /status.
 *
 * Served by libevent's evhttp on its own address: the admin side sees a
 * handful of requests from trusted scrapers, so evhttp's limits (see
 * frontend.h) do not matter here. Handlers only read counters; they never
 * block the loop. With admin_token set, every request needs
 * "Authorization: Bearer TOKEN" (401 otherwise).
 *
 * Ownership: the admin owns its evhttp; it borrows the proxy.
 */
#ifndef SL_ADMIN_H
#define SL_ADMIN_H

struct sl_proxy;
struct sl_admin;

/* Listen on p->cfg->admin_listen. NULL (logged) if it cannot. */
struct sl_admin *sl_admin_new(struct sl_proxy *p);

void sl_admin_free(struct sl_admin *a);

#endif
