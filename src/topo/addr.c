/*
 * Addresses ("host:port") and role names. A host is an IPv4 literal, an IPv6
 * literal in brackets (kept in its canonical form, without the brackets), or
 * a DNS name; a port is 1..65535 written without leading zeros.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "topo_internal.h"

#define TOPO_PORT_DIGITS_MAX 5
#define TOPO_PORT_MAX 65535
#define TOPO_DNS_LABEL_MAX 63

static const char *const role_names[] = {
    [TOPO_ROLE_STORAGE] = "storage", [TOPO_ROLE_WRITER] = "writer", [TOPO_ROLE_READER] = "reader",
    [TOPO_ROLE_AGENT] = "agent",     [TOPO_ROLE_ROUTER] = "router",
};

const char *topo_role_name(topo_role role)
{
    if ((unsigned)role >= MRD_ARRAY_LEN(role_names)) return "unknown";
    return role_names[role];
}

int topo_role_parse(const char *name)
{
    if (name == NULL) return -1;
    for (size_t i = 0; i < MRD_ARRAY_LEN(role_names); i++)
        if (strcmp(name, role_names[i]) == 0) return (int)i;
    return -1;
}

static const char *port_problem(const char *s, size_t len, uint16_t *port)
{
    if (len == 0) return "missing port after ':'";
    if (len > TOPO_PORT_DIGITS_MAX) return "port must be 1..65535";
    unsigned v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return "port must be a decimal number";
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (len > 1 && s[0] == '0') return "port has a leading zero";
    if (v == 0 || v > TOPO_PORT_MAX) return "port must be 1..65535";
    *port = (uint16_t)v;
    return NULL;
}

static const char *dns_problem(const char *host, size_t len)
{
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = host[i];
        bool alnum =
            (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (ch == '.') {
            if (label == 0) return "empty label in host name";
            if (host[i - 1] == '-') return "host name label ends with '-'";
            label = 0;
            continue;
        }
        if (!alnum && ch != '-')
            return "host must be an IPv4 literal, [IPv6] literal or a name of A-Z a-z 0-9 . -";
        if (ch == '-' && label == 0) return "host name label starts with '-'";
        if (++label > TOPO_DNS_LABEL_MAX) return "host name label longer than 63 characters";
    }
    if (label == 0) return "empty label in host name";
    if (host[len - 1] == '-') return "host name label ends with '-'";
    return NULL;
}

static bool all_digits_and_dots(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != '.' && (s[i] < '0' || s[i] > '9')) return false;
    return true;
}

static const char *host_problem(const char *host, size_t len, bool bracketed, topo_addr *out)
{
    if (len == 0) return "missing host";
    if (len >= TOPO_HOST_MAX) return "host longer than 63 characters";
    char copy[TOPO_HOST_MAX];
    memcpy(copy, host, len);
    copy[len] = '\0';
    if (memchr(host, '\0', len) != NULL) return "host contains a NUL byte";
    if (bracketed) {
        unsigned char bin[16];
        if (inet_pton(AF_INET6, copy, bin) != 1) return "not a valid IPv6 address";
        if (inet_ntop(AF_INET6, bin, out->host, sizeof(out->host)) == NULL)
            return "not a valid IPv6 address";
        return NULL;
    }
    if (memchr(host, ':', len) != NULL) return "an IPv6 address needs brackets, like [::1]:7000";
    if (all_digits_and_dots(host, len)) {
        unsigned char bin[4];
        if (inet_pton(AF_INET, copy, bin) != 1) return "not a valid IPv4 address";
    } else {
        const char *problem = dns_problem(host, len);
        if (problem != NULL) return problem;
    }
    memcpy(out->host, copy, len + 1);
    return NULL;
}

const char *topo_addr_problem(const char *text, size_t len, topo_addr *out)
{
    topo_addr addr = {0};
    const char *host = text, *colon;
    size_t host_len;
    bool bracketed = len > 0 && text[0] == '[';
    if (len == 0) return "empty";
    if (bracketed) {
        const char *close = memchr(text, ']', len);
        if (close == NULL) return "'[' without ']'";
        host = text + 1;
        host_len = (size_t)(close - host);
        colon = close + 1;
        if (colon == text + len || *colon != ':') return "expected ':port' after ']'";
    } else {
        colon = NULL;
        for (size_t i = len; i > 0 && colon == NULL; i--)
            if (text[i - 1] == ':') colon = text + i - 1;
        if (colon == NULL) return "expected host:port";
        host_len = (size_t)(colon - text);
    }
    const char *problem = host_problem(host, host_len, bracketed, &addr);
    if (problem == NULL)
        problem = port_problem(colon + 1, len - (size_t)(colon + 1 - text), &addr.port);
    if (problem == NULL) *out = addr;
    return problem;
}

int topo_addr_parse(const char *text, topo_addr *out)
{
    if (text == NULL || out == NULL) return MRD_EINVAL;
    return topo_addr_problem(text, strlen(text), out) == NULL ? 0 : MRD_EPARSE;
}

const char *topo_addr_str(const topo_addr *addr, char *buf, size_t len)
{
    if (buf == NULL || len == 0) return buf;
    bool v6 = strchr(addr->host, ':') != NULL;
    snprintf(buf, len, v6 ? "[%s]:%u" : "%s:%u", addr->host, (unsigned)addr->port);
    return buf;
}
