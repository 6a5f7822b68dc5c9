/* Addresses for the control server: listen specs, trusted networks
 * (CIDR lists), the loopback test that exempts a peer from STARTTLS, and
 * the per-address limit on failed logins. No I/O happens here. */
#ifndef MAILREPL_CTL_NET_H
#define MAILREPL_CTL_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <time.h>

/* Split "host:port" or "[v6]:port" into its parts. Returns 0 with
 * *host_r and *port_r (caller frees), or -1 with *error_r (caller
 * frees) naming spec. */
int ctl_net_split_listen(const char *spec, char **host_r, char **port_r,
			 char **error_r);

/* One network of a trusted_networks list, stored as IPv6 (IPv4 networks
 * as IPv4-mapped addresses with the prefix plus 96). */
struct ctl_network {
	unsigned char addr[16];
	unsigned prefix;
};
/* Parse a comma-separated CIDR list ("127.0.0.0/8, ::1/128"). Returns 0
 * with *nets_r (caller frees) and *count_r, or -1 with *error_r (caller
 * frees) naming the item that is invalid. */
int ctl_net_parse_networks(const char *list, struct ctl_network **nets_r,
			   size_t *count_r, char **error_r);
/* Whether sa (AF_INET or AF_INET6, IPv4-mapped handled) lies in one of
 * nets. Other families are never inside. */
bool ctl_net_in_networks(const struct sockaddr *sa,
			 const struct ctl_network *nets, size_t count);
/* Whether sa is a loopback address (127.0.0.0/8, ::1, or the
 * IPv4-mapped form of 127.0.0.0/8): such a peer may skip STARTTLS. */
bool ctl_net_is_loopback(const struct sockaddr *sa);
/* Whether host is "localhost" or a loopback IPv4 or IPv6 literal. */
bool ctl_net_host_is_loopback(const char *host);
/* Format sa's address (no port) into buf: "192.0.2.1" or "2001:db8::1";
 * an IPv4-mapped address is shown as IPv4. */
void ctl_net_addr_text(const struct sockaddr *sa, char *buf, size_t size);

/* Failed logins per source address: CTL_RATE_FAILURES failures within
 * CTL_RATE_WINDOW_S seconds block that address until the oldest of them
 * is CTL_RATE_WINDOW_S old. The table is fixed-size; when it is full the
 * oldest entry is reused. Not thread-safe: the caller locks. */
#define CTL_RATE_FAILURES 5
#define CTL_RATE_WINDOW_S 60
#define CTL_RATE_ENTRIES 256
struct ctl_rate_entry {
	char addr[48];
	time_t failures[CTL_RATE_FAILURES]; /* ring, 0 = unused */
	size_t next;
	time_t last;
};
struct ctl_ratelimit {
	struct ctl_rate_entry entries[CTL_RATE_ENTRIES];
};
/* Seconds addr must still wait at time now, 0 when it may try. */
unsigned ctl_ratelimit_wait(const struct ctl_ratelimit *rl, const char *addr,
			    time_t now);
void ctl_ratelimit_fail(struct ctl_ratelimit *rl, const char *addr, time_t now);
/* Forget addr's failures after a successful login. */
void ctl_ratelimit_clear(struct ctl_ratelimit *rl, const char *addr);

#endif
