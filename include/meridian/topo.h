/*
 * topo: the topology file (a YAML file under regions/) as a typed, validated struct.
 *
 * A topology names a global database, its primary region and up to eleven
 * regions (one primary and up to ten secondaries). Each region has three
 * availability zones, exactly six storage nodes (two per AZ), one writer and
 * up to fifteen readers ("instances"), one replication agent, one or more
 * routers serving the region's endpoints, and optional custom endpoints.
 *
 * topo_parse() is the one place where the file's bytes become this struct:
 * every key, type, bound, address and cross-reference is checked there, and a
 * refusal names the file, the line and the field at fault. Everything else
 * trusts the struct. Every process id and every address is unique across the
 * whole file.
 */
#ifndef MERIDIAN_TOPO_H
#define MERIDIAN_TOPO_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "meridian/common.h"

#define TOPO_NAME_MAX 64   /* ids and names, including the NUL */
#define TOPO_HOST_MAX 64   /* an address's host part, including the NUL */
#define TOPO_PATH_MAX 1024 /* paths in settings, including the NUL */
#define TOPO_REGIONS_MAX 11
#define TOPO_AZS 3
#define TOPO_STORAGE_PER_AZ 2
#define TOPO_STORAGE 6
#define TOPO_READERS_MAX 15
#define TOPO_INSTANCES_MAX 16 /* one writer + 15 readers */
#define TOPO_ROUTERS_MAX 4
#define TOPO_CUSTOM_MAX 8
#define TOPO_CUSTOM_MEMBERS_MAX 16
#define TOPO_FILE_BYTES_MAX (1024 * 1024)

typedef enum {
    TOPO_ROLE_STORAGE,
    TOPO_ROLE_WRITER,
    TOPO_ROLE_READER,
    TOPO_ROLE_AGENT,
    TOPO_ROLE_ROUTER,
} topo_role;

/* "storage", "writer", ...; and back (-1 when unknown). */
const char *topo_role_name(topo_role role);
int topo_role_parse(const char *name);

/* host:port, where host is an IPv4 literal, "[v6]" literal or a DNS name. */
typedef struct {
    char host[TOPO_HOST_MAX]; /* without brackets for IPv6 */
    uint16_t port;            /* never 0 after parsing */
} topo_addr;

/* Parses "127.0.0.1:7000", "[::1]:7000" or "db1.example:7000"; an IPv6 host is
 * kept in its canonical form. Returns 0, or MRD_EPARSE leaving *out as it was. */
int topo_addr_parse(const char *text, topo_addr *out);
/* Formats as host:port (brackets for IPv6) into buf; returns buf. */
const char *topo_addr_str(const topo_addr *addr, char *buf, size_t len);

/* One process of the topology. */
typedef struct {
    char id[TOPO_NAME_MAX]; /* unique across the file */
    topo_role role;
    int region;     /* index into topology.regions */
    int az;         /* index into the region's azs (0..2) */
    topo_addr addr; /* its own API: status, metrics, and its role's protocol */
    int priority;   /* instances only: failover tier, 0 (first) .. 15; default 1 */
    int line;       /* line in the file, for later messages */
} topo_node;

/* A router's listeners, one per endpoint it serves. */
typedef struct {
    topo_node node;         /* role TOPO_ROLE_ROUTER; node.addr serves its own status */
    topo_addr cluster;      /* -> the region's writer */
    topo_addr reader;       /* -> healthy readers, balanced */
    topo_addr global_writer; /* -> the writer of the primary region at the highest epoch */
    topo_addr custom[TOPO_CUSTOM_MAX]; /* parallel to region.custom[] */
    bool has_cluster, has_reader, has_global_writer;
    bool has_custom[TOPO_CUSTOM_MAX];
} topo_router;

/* A custom endpoint: a named list of instances, or all readers except a list. */
typedef struct {
    char name[TOPO_NAME_MAX];
    bool exclude; /* true: all readers except members; false: exactly members */
    char members[TOPO_CUSTOM_MEMBERS_MAX][TOPO_NAME_MAX];
    int member_count;
    int line;
} topo_custom;

typedef struct {
    char name[TOPO_NAME_MAX];
    char azs[TOPO_AZS][TOPO_NAME_MAX];
    topo_node storage[TOPO_STORAGE]; /* two per AZ */
    topo_node instances[TOPO_INSTANCES_MAX];
    int instance_count;
    int writer; /* index into instances of the one writer */
    topo_node agent;
    topo_addr agent_peer; /* the address other regions' agents dial: peer_address, else address */
    topo_router routers[TOPO_ROUTERS_MAX];
    int router_count;
    topo_custom custom[TOPO_CUSTOM_MAX];
    int custom_count;
    int line;
} topo_region;

typedef struct {
    char path[TOPO_PATH_MAX]; /* the file it came from, for messages */
    char name[TOPO_NAME_MAX]; /* the global database's name */
    char primary[TOPO_NAME_MAX];
    int primary_region; /* index into regions */

    /* settings: */
    uint64_t pg_size_bytes;   /* protection group size; default 10 GiB */
    uint32_t page_size;       /* database page size; default 4096 */
    bool tls;                 /* TLS 1.3 with mutual certificates on every link; default true */
    char certs_dir[TOPO_PATH_MAX]; /* relative paths are relative to the topology file */
    uint32_t rpo_seconds;     /* 0: no RPO; otherwise 1 .. 86400 */
    uint32_t reader_lag_max_ms; /* reader endpoint skips readers lagging more; default 10000 */
    bool write_forwarding;    /* secondaries forward writes to the primary; default false */
    uint32_t writer_timeout_ms; /* a writer silent this long is replaced by a reader; 0: never */

    topo_region regions[TOPO_REGIONS_MAX];
    int region_count;
} topology;

/*
 * Parses and validates a topology held in memory. `name` is used in messages
 * (normally the file's path). On refusal returns MRD_EPARSE (or MRD_EINVAL,
 * or MRD_ENOMEM when memory runs out), msg says "NAME:LINE: FIELD: what is
 * wrong", and *out is left as it was. docs/topology.md lists every key.
 */
int topo_parse(const char *name, const char *text, size_t len, topology *out, mrd_msg *msg);

/* Reads and parses a file (at most TOPO_FILE_BYTES_MAX bytes). */
int topo_load(const char *path, topology *out, mrd_msg *msg);

/* Prints the topology for `meridian check`: regions, AZs, every process. */
void topo_print(const topology *topo, FILE *out);

/* Calls fn for every process of the file, region by region: storage, instances, agent,
 * routers. Stops early and returns fn's value when it is non-zero. */
typedef int (*topo_node_fn)(const topology *topo, const topo_node *node, void *ud);
int topo_each_node(const topology *topo, topo_node_fn fn, void *ud);

/* Finds a process by id (NULL when none). */
const topo_node *topo_find(const topology *topo, const char *id);
/* A region's index by name, or -1. */
int topo_region_index(const topology *topo, const char *name);
/* An instance's index in its region by id, or -1. */
int topo_instance_index(const topo_region *region, const char *id);
/* The router record a router node belongs to (NULL when node is not a router). */
const topo_router *topo_router_of(const topology *topo, const topo_node *node);

/*
 * The segment index (0..5) a storage node holds of every protection group of
 * its region: nodes ordered by AZ (the order of the region's azs), then by
 * their order in the file, so that segments 2k and 2k+1 share AZ k
 * (QUORUM_AZ_OF). -1 when node is not a storage node of region.
 */
int topo_segment_of(const topo_region *region, const topo_node *node);
/* The storage node holding segment seg (0..5) of region's PGs. */
const topo_node *topo_segment_node(const topo_region *region, int seg);

/* The certs folder resolved against the topology file's folder, into buf;
 * returns buf, or NULL when buf is too small or the file sets no certs folder
 * (then the CLI uses DATA/certs). */
const char *topo_certs_dir(const topology *topo, char *buf, size_t len);

#endif
