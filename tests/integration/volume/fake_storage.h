/* A storage node in miniature for the volume client's tests (fake_storage.c). */
#ifndef MERIDIAN_FAKE_STORAGE_H
#define MERIDIAN_FAKE_STORAGE_H

#include "meridian/h2.h"
#include "meridian/quorum.h"
#include "meridian/topo.h"
#include "meridian/wire.h"

#define FK_NODES 6
#define FK_PGS_MAX 4
#define FK_PG_BYTES (64u * 1024) /* 16 pages of 4096 bytes per PG */

typedef struct fk fk;

typedef struct {
    uint64_t lsn, epoch, page;
    uint32_t pg;
    mrd_buf enc; /* the record as appended */
} fk_rec;

typedef struct {
    fk *f;
    int seg;
    uint16_t port;
    h2_server *srv;
    uint64_t epoch;
    seg_chain chains[FK_PGS_MAX];
    bool chain_live[FK_PGS_MAX];
    fk_rec *recs;
    uint32_t n_recs, cap_recs;
    uint64_t persist_seq;
    const wire_record *current;
    /* faults */
    int append_status;           /* answer appends with it (0: serve them) */
    const char *append_code;     /* and this error code */
    uint32_t append_faults_left; /* that many times (0: for ever) */
    bool reads_incomplete;       /* 409 incomplete to every page read */
    bool garbage_ack;            /* 200 with bytes that are no ack */
    /* counters */
    uint64_t appends, reads, fences;
} fk_node;

struct fk {
    uv_loop_t *loop;
    topology topo;
    uint32_t page_size;
    uint64_t pages_per_pg;
    fk_node nodes[FK_NODES];
};

/* Six nodes on free loopback ports and the topology naming them (tls off). */
int fk_start(fk *f, uv_loop_t *loop);
void fk_stop(fk *f);
/* Stop a node's server (its connections close) and start it again on its port. */
void fk_node_stop(fk_node *n);
int fk_node_start(fk_node *n);

#endif
