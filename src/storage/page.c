/*
 * GET /v1/page and the page files. A page file (pages/pg-P.pages, one per
 * PG) starts with a 4 KiB header and holds, for page i of the PG, two slots
 * at HEADER + i * 2 * slot_bytes: the materializer writes the one not holding
 * the newest version, so the newest survives a crash in the middle of a
 * write. A read takes the newest slot that verifies (no slot: zeros as of LSN
 * 0) and applies the records of the page above it from memory.
 *
 * Reads run on the loop with pread: a page is a few KiB, normally in the
 * page cache, and the materializer only ever writes the other slot.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage_int.h"

#define PAGE_FILE_MAGIC "MRDPAGES"
#define PAGE_FILE_VERSION 1u
#define PAGE_FILE_HEAD_USED 32u /* magic, version, page size, pg, zero, crc */
#define PAGE_READ_RECS 256u     /* records applied per round of a read */

int storage_page_file_path(const storage *s, uint32_t pg, char *out, size_t len)
{
    int n = snprintf(out, len, "%s/pg-%08" PRIx32 ".pages", s->pages_dir, pg);
    return n > 0 && (size_t)n < len ? 0 : MRD_ETOOBIG;
}

bool storage_page_file_name(const char *name, uint32_t *pg)
{
    static const char prefix[] = "pg-", suffix[] = ".pages";
    if (strlen(name) != 3 + 8 + 6 || memcmp(name, prefix, 3) != 0 ||
        memcmp(name + 11, suffix, 6) != 0)
        return false;
    uint32_t v = 0;
    for (int i = 3; i < 11; i++) {
        char c = name[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return false;
        v = v << 4 | (uint32_t)d;
    }
    *pg = v;
    return true;
}

static void page_file_header(uint8_t *h, uint32_t page_size, uint32_t pg)
{
    memset(h, 0, STORAGE_PAGE_FILE_HEADER_BYTES);
    memcpy(h, PAGE_FILE_MAGIC, 8);
    uint32_t v[4] = {PAGE_FILE_VERSION, page_size, pg, 0};
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < 4; i++)
            h[8 + 4 * k + i] = (uint8_t)(v[k] >> (8 * i));
    uint32_t crc = mrd_crc32c(0, h, 28);
    for (int i = 0; i < 4; i++)
        h[28 + i] = (uint8_t)(crc >> (8 * i));
}

static int page_file_create(const storage *s, int fd, uint32_t pg, const char *path, mrd_msg *msg)
{
    uint8_t h[STORAGE_PAGE_FILE_HEADER_BYTES];
    page_file_header(h, s->page_size, pg);
    if (pwrite(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) || fdatasync(fd) != 0)
        return mrd_fail(msg, MRD_EIO, "%s: cannot write the header: %s", path, strerror(errno));
    int dfd = open(s->pages_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        if (dfd >= 0) close(dfd);
        return mrd_fail(msg, MRD_EIO, "%s: cannot fsync: %s", s->pages_dir, strerror(errno));
    }
    close(dfd);
    return 0;
}

int storage_page_file_open(storage *s, uint32_t pg, bool create, int *out, mrd_msg *msg)
{
    char path[TOPO_PATH_MAX + 64];
    if (storage_page_file_path(s, pg, path, sizeof(path)) != 0)
        return mrd_fail(msg, MRD_ETOOBIG, "%s: path too long", s->pages_dir);
    int fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
    if (fd < 0) return mrd_fail(msg, MRD_EIO, "%s: cannot open: %s", path, strerror(errno));
    uint8_t want[STORAGE_PAGE_FILE_HEADER_BYTES], got[PAGE_FILE_HEAD_USED];
    page_file_header(want, s->page_size, pg);
    ssize_t n = pread(fd, got, sizeof(got), 0);
    int rc = 0;
    if (n == 0 && create)
        rc = page_file_create(s, fd, pg, path, msg);
    else if (n != (ssize_t)sizeof(got) || memcmp(got, want, sizeof(got)) != 0)
        rc = mrd_fail(msg, MRD_EPARSE,
                      "%s: header is not that of pg %" PRIu32 " with %" PRIu32 "-byte pages", path,
                      pg, s->page_size);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    *out = fd;
    return 0;
}

/* The newest version of page in the file: *lsn 0 and zeros when none verifies. */
int storage_page_read(storage *s, int fd, uint64_t page, uint8_t *out, uint64_t *lsn,
                      mrd_msg *msg)
{
    size_t slot = STORAGE_SLOT_BYTES(s->page_size);
    uint64_t off = STORAGE_PAGE_FILE_HEADER_BYTES + (page % s->pages_per_pg) * 2 * slot;
    uint8_t *buf = calloc(2, slot);
    if (buf == NULL) return mrd_fail(msg, MRD_ENOMEM, "page %" PRIu64 ": out of memory", page);
    ssize_t n = pread(fd, buf, 2 * slot, (off_t)off);
    if (n < 0) {
        free(buf);
        return mrd_fail(msg, MRD_EIO, "page %" PRIu64 ": page file read: %s", page, strerror(errno));
    }
    uint64_t l[2] = {0, 0};
    const uint8_t *data[2] = {NULL, NULL};
    int rc[2], bad = 0;
    for (int i = 0; i < 2; i++) {
        rc[i] = storage_slot_decode(buf + i * slot, s->page_size, &l[i], &data[i], NULL);
        if (rc[i] < 0) bad++;
    }
    int best = rc[0] == 1 && (rc[1] != 1 || l[0] >= l[1]) ? 0 : rc[1] == 1 ? 1 : -1;
    *lsn = best >= 0 ? l[best] : 0;
    if (best >= 0)
        memcpy(out, data[best], s->page_size);
    else
        memset(out, 0, s->page_size);
    free(buf);
    /* One torn slot beside an empty one is a first write a crash cut; two are damage. */
    if (best < 0 && bad == 2)
        return mrd_fail(msg, MRD_ECRC, "page %" PRIu64 ": neither slot of the page file verifies",
                        page);
    return 0;
}

/* Applies the page's records in (*lsn, upto] from memory, a round at a time. */
static int page_apply_records(storage *s, const stp *p, uint64_t page, uint64_t upto,
                              uint8_t *out, uint64_t *lsn, mrd_msg *msg)
{
    const stp_rec *recs[PAGE_READ_RECS];
    storage_page_rec pr[PAGE_READ_RECS];
    for (;;) {
        uint32_t n = 0;
        int rc = stp_page_recs(p, page, *lsn, upto, recs, PAGE_READ_RECS, &n);
        if (rc != 0 && rc != MRD_ETOOBIG) return rc;
        for (uint32_t i = 0; i < n; i++)
            pr[i] = (storage_page_rec){recs[i]->lsn, recs[i]->payload, recs[i]->len};
        int arc = storage_page_apply(out, s->page_size, lsn, pr, n, msg);
        if (arc != 0) return arc;
        if (rc == 0) return 0;
    }
}

typedef struct {
    uint64_t page, lsn, need;
} page_req;

static bool page_parse(storage *s, h2_req *req, page_req *r)
{
    storage_query q;
    mrd_msg msg;
    unsigned allowed = 1u << STQ_PAGE | 1u << STQ_LSN | 1u << STQ_NEED;
    uint64_t epoch = s->epoch;
    if (storage_query_parse(h2_req_path(req), allowed, &q, &msg) != 0) {
        storage_reply_error(s, req, 400, "bad_request", "%s", msg.text);
        return false;
    }
    if (!q.has[STQ_PAGE] || !q.has[STQ_LSN]) {
        storage_reply_error(s, req, 400, "bad_request", "page and lsn are required");
        return false;
    }
    if (!storage_header_u64(s, req, "meridian-epoch", false, &epoch)) return false;
    if (epoch < s->epoch) {
        storage_reply_error(s, req, 409, "stale_epoch",
                            "epoch %" PRIu64 " is below this node's epoch %" PRIu64, epoch,
                            s->epoch);
        return false;
    }
    r->page = q.value[STQ_PAGE];
    r->lsn = q.value[STQ_LSN];
    r->need = q.has[STQ_NEED] ? q.value[STQ_NEED] : r->lsn;
    if (r->page / s->pages_per_pg >= QUORUM_PGS_MAX) {
        storage_reply_error(s, req, 400, "bad_request",
                            "page %" PRIu64 " is beyond the volume's limit of %" PRIu64 " pages",
                            r->page, (uint64_t)QUORUM_PGS_MAX * s->pages_per_pg);
        return false;
    }
    return true;
}

static void page_answer(storage *s, h2_req *req, const page_req *r, stp *p, uint32_t pg)
{
    mrd_msg msg = {{0}};
    uint8_t *out = malloc(s->page_size);
    uint64_t lsn = 0;
    int rc = out ? 0 : MRD_ENOMEM;
    if (rc == 0 && s->page_fd[pg] >= 0)
        rc = storage_page_read(s, s->page_fd[pg], r->page, out, &lsn, &msg);
    else if (rc == 0)
        memset(out, 0, s->page_size);
    if (rc == 0 && lsn > r->lsn) rc = MRD_ENOTFOUND;
    if (rc == 0 && p != NULL) rc = page_apply_records(s, p, r->page, r->lsn, out, &lsn, &msg);
    char lsn_text[24];
    snprintf(lsn_text, sizeof(lsn_text), "%" PRIu64, lsn);
    h2_header hdr = {"meridian-lsn", lsn_text};
    if (rc == 0)
        storage_reply(s, req, 200, "application/octet-stream", &hdr, 1, out, s->page_size);
    else if (rc == MRD_ENOTFOUND)
        storage_reply_error(s, req, 410, "gone",
                            "page %" PRIu64 " is materialized past lsn %" PRIu64
                            " on this node (pg %" PRIu32 " materialized to %" PRIu64 ")",
                            r->page, r->lsn, pg, p ? p->materialized : 0);
    else
        storage_reply_error(s, req, 500, "internal", "page %" PRIu64 ": %s", r->page, msg.text);
    free(out);
}

void storage_route_page(mrd_node *node, h2_req *req, void *ud)
{
    storage *s = ud;
    page_req r;
    if (storage_refuse_resetting(s, req)) return;
    if (!page_parse(s, req, &r)) return;
    uint32_t pg = (uint32_t)(r.page / s->pages_per_pg);
    stp *p = s->pgs[pg];
    uint64_t scl = p ? stp_scl(p) : 0;
    if (scl < r.need) {
        storage_reply_error(s, req, 409, "incomplete",
                            "segment %u of pg %" PRIu32 " is complete to lsn %" PRIu64
                            ", the read needs %" PRIu64,
                            s->seg, pg, scl, r.need);
        return;
    }
    if (s->pages_stale[pg]) {
        storage_reply_error(s, req, 503, "pages_stale",
                            "pg %" PRIu32 "'s page file holds records a fence voided; "
                            "a restart rebuilds it",
                            pg);
        return;
    }
    page_answer(s, req, &r, p, pg);
}
