/*
 * h2_certs_generate: a local certificate authority and node certificates for
 * mutual TLS, made with the OpenSSL 3 API (EC P-256, SHA-256, X509v3).
 * Existing files are kept: running it again only adds missing ids.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "meridian/h2.h"

#define H2_CA_DAYS (10 * 365)
#define H2_LEAF_DAYS 825
#define H2_CA_CN "Meridian local CA"
#define H2_CERT_ID_MAX 200
#define H2_PATH_MAX 4096
/* Largest PEM file we read back. */
#define H2_PEM_BYTES_MAX (64u * 1024)

typedef struct {
    X509 *cert;
    EVP_PKEY *key;
} cert_pair;

static void pair_free(cert_pair *p)
{
    X509_free(p->cert);
    EVP_PKEY_free(p->key);
    p->cert = NULL;
    p->key = NULL;
}

static int ossl_fail(mrd_msg *msg, const char *what)
{
    char why[256] = "";
    unsigned long e = ERR_get_error();
    if (e != 0) ERR_error_string_n(e, why, sizeof(why));
    ERR_clear_error();
    return mrd_fail(msg, MRD_ETLS, "certs: %s: %s", what, why);
}

/* ids become CNs and SAN entries: keep them to host-name characters. */
static bool id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > H2_CERT_ID_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = id[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == ':';
        if (!ok) return false;
    }
    return strcmp(id, "ca") != 0;
}

static bool is_ip(const char *s)
{
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    return uv_ip4_addr(s, 0, &a4) == 0 || uv_ip6_addr(s, 0, &a6) == 0;
}

static bool file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* Writes a private file: created 0600, synced, renamed into place. */
static int write_private(const char *path, const void *data, size_t len, mrd_msg *msg)
{
    char tmp[H2_PATH_MAX + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return mrd_fail(msg, MRD_EIO, "%s: %s", tmp, strerror(errno));
    const uint8_t *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) goto fail_write;
        p += n;
        left -= (size_t)n;
    }
    if (fdatasync(fd) != 0) goto fail_write;
    close(fd);
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return mrd_fail(msg, MRD_EIO, "%s: %s", path, strerror(errno));
    }
    return 0;

fail_write:
    close(fd);
    unlink(tmp);
    return mrd_fail(msg, MRD_EIO, "%s: %s", tmp, strerror(errno));
}

static int write_pem(const char *path, X509 *cert, EVP_PKEY *key, mrd_msg *msg)
{
    BIO *mem = BIO_new(BIO_s_mem());
    if (mem == NULL) return mrd_fail(msg, MRD_ENOMEM, "certs: out of memory");
    int ok = cert != NULL ? PEM_write_bio_X509(mem, cert)
                          : PEM_write_bio_PrivateKey(mem, key, NULL, NULL, 0, NULL, NULL);
    int rc;
    if (ok != 1) {
        rc = ossl_fail(msg, "cannot encode PEM");
    } else {
        char *data = NULL;
        long len = BIO_get_mem_data(mem, &data);
        rc = cert != NULL ? mrd_write_file_atomic(path, data, (size_t)len, msg)
                          : write_private(path, data, (size_t)len, msg);
    }
    BIO_free(mem);
    return rc;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext == NULL) return -1;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1 ? 0 : -1;
}

static int set_serial(X509 *cert)
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof(raw)) != 1) return -1;
    raw[0] &= 0x7f; /* positive */
    BIGNUM *bn = BN_bin2bn(raw, sizeof(raw), NULL);
    if (bn == NULL) return -1;
    ASN1_INTEGER *serial = BN_to_ASN1_INTEGER(bn, NULL);
    BN_free(bn);
    if (serial == NULL) return -1;
    int ok = X509_set_serialNumber(cert, serial);
    ASN1_INTEGER_free(serial);
    return ok == 1 ? 0 : -1;
}

/* A certificate for key with subject CN=cn, valid for days, before extensions. */
static X509 *cert_base(EVP_PKEY *key, const char *cn, int days)
{
    X509 *cert = X509_new();
    if (cert == NULL) return NULL;
    X509_NAME *name = X509_get_subject_name(cert);
    bool ok = X509_set_version(cert, 2) == 1 && set_serial(cert) == 0 &&
              X509_gmtime_adj(X509_getm_notBefore(cert), -3600) != NULL &&
              X509_gmtime_adj(X509_getm_notAfter(cert), (long)days * 24 * 3600) != NULL &&
              X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
                                         -1, 0) == 1 &&
              X509_set_pubkey(cert, key) == 1;
    if (!ok) {
        X509_free(cert);
        return NULL;
    }
    return cert;
}

static int make_ca(cert_pair *ca, mrd_msg *msg)
{
    ca->key = EVP_EC_gen("P-256");
    if (ca->key == NULL) return ossl_fail(msg, "cannot generate CA key");
    ca->cert = cert_base(ca->key, H2_CA_CN, H2_CA_DAYS);
    if (ca->cert == NULL) return ossl_fail(msg, "cannot build CA certificate");
    X509 *c = ca->cert;
    bool ok = X509_set_issuer_name(c, X509_get_subject_name(c)) == 1 &&
              add_ext(c, c, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") == 0 &&
              add_ext(c, c, NID_key_usage, "critical,keyCertSign,cRLSign") == 0 &&
              add_ext(c, c, NID_subject_key_identifier, "hash") == 0 &&
              X509_sign(c, ca->key, EVP_sha256()) > 0;
    return ok ? 0 : ossl_fail(msg, "cannot sign CA certificate");
}

static int make_leaf(const cert_pair *ca, const char *id, cert_pair *leaf, mrd_msg *msg)
{
    char san[2 * H2_CERT_ID_MAX + 64];
    snprintf(san, sizeof(san), "%s:%s,DNS:localhost,IP:127.0.0.1,IP:::1", is_ip(id) ? "IP" : "DNS",
             id);
    leaf->key = EVP_EC_gen("P-256");
    if (leaf->key == NULL) return ossl_fail(msg, "cannot generate key");
    leaf->cert = cert_base(leaf->key, id, H2_LEAF_DAYS);
    if (leaf->cert == NULL) return ossl_fail(msg, "cannot build certificate");
    X509 *c = leaf->cert;
    bool ok = X509_set_issuer_name(c, X509_get_subject_name(ca->cert)) == 1 &&
              add_ext(c, ca->cert, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
              add_ext(c, ca->cert, NID_key_usage, "critical,digitalSignature,keyAgreement") == 0 &&
              add_ext(c, ca->cert, NID_ext_key_usage, "serverAuth,clientAuth") == 0 &&
              add_ext(c, ca->cert, NID_subject_alt_name, san) == 0 &&
              add_ext(c, ca->cert, NID_subject_key_identifier, "hash") == 0 &&
              add_ext(c, ca->cert, NID_authority_key_identifier, "keyid:always") == 0 &&
              X509_sign(c, ca->key, EVP_sha256()) > 0;
    return ok ? 0 : ossl_fail(msg, "cannot sign certificate");
}

static int load_ca(const char *crt, const char *key, cert_pair *ca, mrd_msg *msg)
{
    BIO *in = BIO_new_file(crt, "r");
    if (in != NULL) ca->cert = PEM_read_bio_X509(in, NULL, NULL, NULL);
    BIO_free(in);
    in = BIO_new_file(key, "r");
    if (in != NULL) ca->key = PEM_read_bio_PrivateKey(in, NULL, NULL, NULL);
    BIO_free(in);
    if (ca->cert == NULL || ca->key == NULL) return ossl_fail(msg, "cannot read the CA in place");
    return 0;
}

static int ensure_ca(const char *dir, cert_pair *ca, mrd_msg *msg)
{
    char crt[H2_PATH_MAX], key[H2_PATH_MAX];
    snprintf(crt, sizeof(crt), "%s/ca.crt", dir);
    snprintf(key, sizeof(key), "%s/ca.key", dir);
    if (file_exists(crt)) return load_ca(crt, key, ca, msg);
    int rc = make_ca(ca, msg);
    if (rc == 0) rc = write_pem(key, NULL, ca->key, msg);
    if (rc == 0) rc = write_pem(crt, ca->cert, NULL, msg);
    if (rc == 0) MRD_INFO("h2_ca_created", "dir=%s", dir);
    return rc;
}

static int ensure_leaf(const char *dir, const cert_pair *ca, const char *id, mrd_msg *msg)
{
    char crt[H2_PATH_MAX], key[H2_PATH_MAX];
    snprintf(crt, sizeof(crt), "%s/%s.crt", dir, id);
    snprintf(key, sizeof(key), "%s/%s.key", dir, id);
    if (file_exists(crt)) return 0;
    cert_pair leaf = {0};
    int rc = make_leaf(ca, id, &leaf, msg);
    if (rc == 0) rc = write_pem(key, NULL, leaf.key, msg); /* the key first: crt marks done */
    if (rc == 0) rc = write_pem(crt, leaf.cert, NULL, msg);
    pair_free(&leaf);
    if (rc == 0) MRD_INFO("h2_cert_created", "dir=%s id=%s", dir, id);
    return rc;
}

int h2_certs_generate(const char *dir, const char *const *ids, size_t n, mrd_msg *msg)
{
    if (dir == NULL || strlen(dir) > H2_PATH_MAX - H2_CERT_ID_MAX - 16) {
        return mrd_fail(msg, MRD_EINVAL, "certs: bad folder");
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == NULL || !id_ok(ids[i])) {
            return mrd_fail(msg, MRD_EINVAL, "certs: bad id '%s' (letters, digits, - . _ :)",
                            ids[i] ? ids[i] : "(null)");
        }
    }
    int rc = mrd_mkdirs(dir, msg);
    if (rc != 0) return rc;
    cert_pair ca = {0};
    rc = ensure_ca(dir, &ca, msg);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = ensure_leaf(dir, &ca, ids[i], msg);
    pair_free(&ca);
    return rc;
}
