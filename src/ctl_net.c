/* Addresses, trusted networks and the failed-login limit. */
#include <config.h>
#include "ctl_net.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int
ctl_net_split_listen(const char *spec, char **host_r, char **port_r,
		     char **error_r)
{
	const char *colon = strrchr(spec, ':');
	const char *port;

	*host_r = *port_r = NULL;
	if (colon == NULL || colon == spec || colon[1] == '\0')
		goto fail;
	port = colon + 1;
	if (strspn(port, "0123456789") != strlen(port))
		goto fail;
	if (spec[0] == '[') {
		if (colon[-1] != ']' || colon - spec < 3)
			goto fail;
		*host_r = xstrndup(spec + 1, colon - spec - 2);
	} else {
		if (memchr(spec, ':', colon - spec) != NULL)
			goto fail;
		*host_r = xstrndup(spec, colon - spec);
	}
	*port_r = xstrdup(port);
	return 0;
fail:
	*error_r = xasprintf("invalid listen address \"%s\"; expected "
			     "HOST:PORT or [IPV6]:PORT such as [::]:2005",
			     spec);
	return -1;
}

/* Map an IPv4 address to its IPv4-mapped IPv6 form. */
static void
map_v4(const struct in_addr *v4, unsigned char out[16])
{
	memset(out, 0, 10);
	out[10] = out[11] = 0xff;
	memcpy(out + 12, &v4->s_addr, 4);
}

static int
parse_network(const char *item, struct ctl_network *net)
{
	const char *slash = strchr(item, '/');
	char *addr = NULL, *end;
	struct in_addr v4;
	unsigned long prefix;
	int ret = -1;

	if (slash == NULL || slash[1] < '0' || slash[1] > '9')
		goto out;
	prefix = strtoul(slash + 1, &end, 10);
	if (*end != '\0')
		goto out;
	addr = xstrndup(item, slash - item);
	if (inet_pton(AF_INET, addr, &v4) == 1 && prefix <= 32) {
		map_v4(&v4, net->addr);
		net->prefix = prefix + 96;
		ret = 0;
	} else if (inet_pton(AF_INET6, addr, net->addr) == 1 && prefix <= 128) {
		net->prefix = prefix;
		ret = 0;
	}
out:
	free(addr);
	return ret;
}

int
ctl_net_parse_networks(const char *list, struct ctl_network **nets_r,
		       size_t *count_r, char **error_r)
{
	char *copy = xstrdup(list), *rest = copy, *item;
	struct ctl_network *nets = NULL;
	size_t count = 0, cap = 0;
	int ret = 0;

	while (ret == 0 && (item = strsep(&rest, ",")) != NULL) {
		item += strspn(item, " \t");
		item[strcspn(item, " \t")] = '\0';
		nets = xgrow(nets, &cap, count + 1, sizeof(*nets));
		if (parse_network(item, &nets[count]) == 0) {
			count++;
			continue;
		}
		*error_r = xasprintf("invalid network \"%s\" in trusted "
				     "networks; expected CIDR such as "
				     "127.0.0.0/8 or ::1/128",
				     item);
		ret = -1;
	}
	free(copy);
	if (ret < 0)
		xfree(&nets);
	*nets_r = nets;
	*count_r = count;
	return ret;
}

/* The peer address as IPv6 (IPv4 mapped); false for other families. */
static bool
addr_as_v6(const struct sockaddr *sa, unsigned char out[16])
{
	if (sa->sa_family == AF_INET) {
		map_v4(&((const struct sockaddr_in *)sa)->sin_addr, out);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		return true;
	}
	return false;
}

static bool
prefix_matches(const unsigned char *a, const unsigned char *b, unsigned prefix)
{
	unsigned bytes = prefix / 8, bits = prefix % 8;
	unsigned char mask;

	if (memcmp(a, b, bytes) != 0)
		return false;
	if (bits == 0)
		return true;
	mask = (unsigned char)(0xff << (8 - bits));
	return (a[bytes] & mask) == (b[bytes] & mask);
}

bool
ctl_net_in_networks(const struct sockaddr *sa, const struct ctl_network *nets,
		    size_t count)
{
	unsigned char addr[16];

	if (!addr_as_v6(sa, addr))
		return false;
	for (size_t i = 0; i < count; i++)
		if (prefix_matches(addr, nets[i].addr, nets[i].prefix))
			return true;
	return false;
}

bool
ctl_net_is_loopback(const struct sockaddr *sa)
{
	static const unsigned char v6_loopback[16] = {[15] = 1};
	static const unsigned char v4_loopback[16] = {
		[10] = 0xff, [11] = 0xff, [12] = 127};
	unsigned char addr[16];

	if (!addr_as_v6(sa, addr))
		return false;
	return memcmp(addr, v6_loopback, 16) == 0 ||
	       prefix_matches(addr, v4_loopback, 96 + 8);
}

bool
ctl_net_host_is_loopback(const char *host)
{
	struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
	struct sockaddr_in v4 = {.sin_family = AF_INET};

	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &v4.sin_addr) == 1)
		return ctl_net_is_loopback((struct sockaddr *)&v4);
	if (inet_pton(AF_INET6, host, &v6.sin6_addr) == 1)
		return ctl_net_is_loopback((struct sockaddr *)&v6);
	return false;
}

void
ctl_net_addr_text(const struct sockaddr *sa, char *buf, size_t size)
{
	unsigned char addr[16];
	static const unsigned char mapped[12] = {[10] = 0xff, [11] = 0xff};

	if (!addr_as_v6(sa, addr)) {
		snprintf(buf, size, "local");
		return;
	}
	if (memcmp(addr, mapped, 12) == 0)
		inet_ntop(AF_INET, addr + 12, buf, size);
	else
		inet_ntop(AF_INET6, addr, buf, size);
}

static const struct ctl_rate_entry *
rate_find(const struct ctl_ratelimit *rl, const char *addr)
{
	for (size_t i = 0; i < CTL_RATE_ENTRIES; i++)
		if (rl->entries[i].last != 0 &&
		    strcmp(rl->entries[i].addr, addr) == 0)
			return &rl->entries[i];
	return NULL;
}

unsigned
ctl_ratelimit_wait(const struct ctl_ratelimit *rl, const char *addr, time_t now)
{
	const struct ctl_rate_entry *e = rate_find(rl, addr);
	time_t oldest;

	if (e == NULL)
		return 0;
	/* The ring is full when the slot to be overwritten next is used;
	 * that slot then contains the oldest failure. */
	oldest = e->failures[e->next];
	if (oldest == 0 || now - oldest >= CTL_RATE_WINDOW_S)
		return 0;
	return (unsigned)(CTL_RATE_WINDOW_S - (now - oldest));
}

void
ctl_ratelimit_fail(struct ctl_ratelimit *rl, const char *addr, time_t now)
{
	struct ctl_rate_entry *e = (struct ctl_rate_entry *)rate_find(rl, addr);

	if (e == NULL) {
		e = &rl->entries[0];
		for (size_t i = 1; i < CTL_RATE_ENTRIES; i++)
			if (rl->entries[i].last < e->last)
				e = &rl->entries[i];
		memset(e, 0, sizeof(*e));
		snprintf(e->addr, sizeof(e->addr), "%s", addr);
	}
	e->failures[e->next] = now;
	e->next = (e->next + 1) % CTL_RATE_FAILURES;
	e->last = now;
}

void
ctl_ratelimit_clear(struct ctl_ratelimit *rl, const char *addr)
{
	struct ctl_rate_entry *e = (struct ctl_rate_entry *)rate_find(rl, addr);

	if (e != NULL)
		memset(e, 0, sizeof(*e));
}
