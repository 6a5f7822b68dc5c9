/* Server certificate checks for the IMAP client.
 *
 * libetpan 1.9.4 built with GnuTLS completes the TLS handshake without
 * looking at the server's certificate, so imapc.c fetches the leaf
 * certificate after the handshake and calls imapc_verify_certificate()
 * before it sends any credential. Only the leaf is available
 * (mailstream_ssl_get_certificate), so intermediate CA certificates must
 * be in the CA file. */
#include <config.h>
#include "imapc.h"

#include <ctype.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define SHA256_LEN 32
/* "sha256:" and 64 hex digits */
#define FINGERPRINT_TEXT_LEN (7 + 2 * SHA256_LEN)

static const char fix_hint[] =
	"set [master] tls_ca_file to the CA that signed the replica's "
	"certificate, or pin it with tls_fingerprint";

/* Format the SHA-256 of der as "sha256:<lowercase hex>". Returns 0, or
 * -1 with *err when GnuTLS cannot compute it. */
static int
fingerprint_format(const unsigned char *der, size_t len, const char *host,
		   char out[FINGERPRINT_TEXT_LEN + 1], struct mrerr *err)
{
	unsigned char digest[SHA256_LEN];
	int r = gnutls_hash_fast(GNUTLS_DIG_SHA256, der, len, digest);

	if (r < 0)
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
				 "cannot compute the SHA-256 fingerprint of "
				 "the TLS certificate of %s: %s",
				 host, gnutls_strerror(r));
	memcpy(out, "sha256:", 7);
	for (size_t i = 0; i < SHA256_LEN; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", digest[i]);
	return 0;
}

/* Normalise a configured pin to "sha256:<lowercase hex>": the prefix is
 * case-insensitive and colons between hex pairs are accepted, as
 * "openssl x509 -fingerprint" prints them. Returns 0, or -1 when pin is
 * not a SHA-256 fingerprint. */
static int
fingerprint_normalise(const char *pin, char out[FINGERPRINT_TEXT_LEN + 1])
{
	size_t n = 7;

	if (strncasecmp(pin, "sha256:", 7) != 0)
		return -1;
	memcpy(out, "sha256:", 7);
	for (const char *p = pin + 7; *p != '\0'; p++) {
		if (*p == ':')
			continue;
		if (!isxdigit((unsigned char)*p) || n == FINGERPRINT_TEXT_LEN)
			return -1;
		out[n++] = (char)tolower((unsigned char)*p);
	}
	out[n] = '\0';
	return n == FINGERPRINT_TEXT_LEN ? 0 : -1;
}

static int
check_pin(const unsigned char *der, size_t len, const char *host,
	  const char *pin, struct mrerr *err)
{
	char want[FINGERPRINT_TEXT_LEN + 1], got[FINGERPRINT_TEXT_LEN + 1];

	if (fingerprint_normalise(pin, want) < 0)
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
				 "[master] tls_fingerprint '%s' is invalid; "
				 "expected sha256: followed by 64 hex digits",
				 pin);
	if (fingerprint_format(der, len, host, got, err) < 0)
		return -1;
	if (strcmp(want, got) != 0)
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
				 "TLS certificate of %s was rejected: "
				 "fingerprint %s does not match the pin %s; "
				 "update [master] tls_fingerprint if the "
				 "replica's certificate was replaced",
				 host, got, want);
	return 0;
}

/* Load the CA file, or the system trust store when ca_file is NULL. */
static int
load_trust(gnutls_x509_trust_list_t list, const char *host,
	   const char *ca_file, struct mrerr *err)
{
	int n;

	if (ca_file == NULL) {
		n = gnutls_x509_trust_list_add_system_trust(list, 0, 0);
		if (n <= 0)
			return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
					 "cannot verify the TLS certificate "
					 "of %s: the system trust store has "
					 "no CA certificates; %s",
					 host, fix_hint);
		return 0;
	}

	n = gnutls_x509_trust_list_add_trust_file(list, ca_file, NULL,
						  GNUTLS_X509_FMT_PEM, 0, 0);
	if (n < 0)
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
				 "cannot load [master] tls_ca_file %s: %s",
				 ca_file, gnutls_strerror(n));
	if (n == 0)
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
				 "[master] tls_ca_file %s contains no PEM "
				 "certificate",
				 ca_file);
	return 0;
}

/* The first reason in status, in words an administrator searches for. */
static const char *
status_reason(unsigned status)
{
	static const struct {
		unsigned bit;
		const char *text;
	} reasons[] = {
		{GNUTLS_CERT_SIGNER_NOT_FOUND,
		 "certificate signed by an unknown authority"},
		{GNUTLS_CERT_EXPIRED, "certificate has expired"},
		{GNUTLS_CERT_NOT_ACTIVATED, "certificate is not yet valid"},
		{GNUTLS_CERT_REVOKED, "certificate was revoked"},
		{GNUTLS_CERT_SIGNER_NOT_CA,
		 "certificate signer is not a CA"},
		{GNUTLS_CERT_INSECURE_ALGORITHM,
		 "certificate uses an insecure signature algorithm"},
		{GNUTLS_CERT_SIGNATURE_FAILURE,
		 "certificate signature is invalid"},
		{GNUTLS_CERT_PURPOSE_MISMATCH,
		 "certificate is not valid for a TLS server"},
		{GNUTLS_CERT_SIGNER_CONSTRAINTS_FAILURE,
		 "certificate violates its CA's name constraints"},
	};

	for (size_t i = 0; i < sizeof(reasons) / sizeof(*reasons); i++)
		if (status & reasons[i].bit)
			return reasons[i].text;
	return "certificate is not trusted";
}

static int
check_chain(gnutls_x509_crt_t crt, const char *host, const char *ca_file,
	    const char *got, struct mrerr *err)
{
	gnutls_x509_trust_list_t list = NULL;
	gnutls_typed_vdata_st purpose = {
		.type = GNUTLS_DT_KEY_PURPOSE_OID,
		.data = (unsigned char *)GNUTLS_KP_TLS_WWW_SERVER,
	};
	unsigned status = 0;
	int ret = -1, r;

	if (gnutls_x509_trust_list_init(&list, 0) < 0) {
		mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
			  "cannot verify the TLS certificate of %s: GnuTLS "
			  "failed to create a trust list",
			  host);
		goto out;
	}
	if (load_trust(list, host, ca_file, err) < 0)
		goto out;

	r = gnutls_x509_trust_list_verify_crt2(list, &crt, 1, &purpose, 1, 0,
					       &status, NULL);
	if (r < 0 || status != 0) {
		mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
			  "TLS certificate of %s (%s) was rejected: %s; %s",
			  host, got,
			  r < 0 ? gnutls_strerror(r) : status_reason(status),
			  fix_hint);
		goto out;
	}
	ret = 0;
out:
	if (list != NULL)
		gnutls_x509_trust_list_deinit(list, 1);
	return ret;
}

int
imapc_verify_certificate(const unsigned char *der, size_t len,
			 const char *host, const char *ca_file,
			 const char *fingerprint, struct mrerr *err)
{
	gnutls_x509_crt_t crt = NULL;
	gnutls_datum_t data = {(unsigned char *)der, (unsigned)len};
	char got[FINGERPRINT_TEXT_LEN + 1];
	int ret = -1;

	if (fingerprint != NULL) {
		if (check_pin(der, len, host, fingerprint, err) < 0)
			goto out;
		/* A pin alone identifies the certificate exactly: the host
		 * name and the issuer add nothing, so they are checked only
		 * when a CA file is configured as well. */
		if (ca_file == NULL) {
			ret = 0;
			goto out;
		}
	}

	if (fingerprint_format(der, len, host, got, err) < 0)
		goto out;
	if (gnutls_x509_crt_init(&crt) < 0 ||
	    gnutls_x509_crt_import(crt, &data, GNUTLS_X509_FMT_DER) < 0) {
		mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
			  "TLS certificate of %s is not a valid X.509 "
			  "certificate",
			  host);
		goto out;
	}
	if (check_chain(crt, host, ca_file, got, err) < 0)
		goto out;

	/* GnuTLS matches an IP address such as 127.0.0.1 against the
	 * certificate's IP address SANs and a name against its DNS SANs. */
	if (!gnutls_x509_crt_check_hostname(crt, host)) {
		mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
			  "TLS certificate of %s (%s) was rejected: host name "
			  "mismatch, the certificate is not issued for %s; "
			  "set [master] replica_host to a name in the "
			  "certificate, or pin it with tls_fingerprint",
			  host, got, host);
		goto out;
	}
	ret = 0;
out:
	if (crt != NULL)
		gnutls_x509_crt_deinit(crt);
	return ret;
}
