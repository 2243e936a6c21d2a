/*
 * rd_core (include/meridian/reader.h): what a reader holds and when it
 * applies the writer's log. Every function takes the core's mutex: the SQL
 * thread reads pages and pins read points while the loop receives and
 * applies records.
 */
#include <stdlib.h>
#include <string.h>

#include "meridian/reader.h"

typedef struct {
    uint64_t page;
    uint64_t used; /* LRU clock */
    int32_t next;  /* hash chain */
    bool live;
} rd_entry;

typedef struct {
    uint64_t vdl;
    uint64_t at_ms; /* when it arrived */
} rd_markq;

struct rd_core {
    uv_mutex_t mu;
    uint32_t page_size;
    uint64_t pages_per_pg;
    /* pages held */
    uint32_t cap, count;
    uint64_t clock;
    rd_entry *entries;
    uint8_t *data;
    int32_t *buckets; /* entry index, -1 empty */
    uint32_t nbuckets;
    /* records received, not yet applied: consecutive LSNs */
    mrd_buf *pend;
    uint32_t pend_head, pend_count, pend_cap;
    uint64_t pend_bytes;
    uint64_t last_received;
    /* durability marks not yet applied */
    rd_markq marks[RD_MARKS_MAX];
    uint32_t marks_head, marks_count;
    uint64_t applied_vdl, writer_vdl, epoch;
    uint32_t pins;
    bool stream_up;
    uint64_t down_since_ms;
    uint64_t reset_vdl;                 /* where the stream (re)started */
    uint64_t head[QUORUM_PGS_MAX];      /* each PG's last record at or below reset_vdl */
    bool head_known[QUORUM_PGS_MAX];
    uint64_t seen_max[QUORUM_PGS_MAX];  /* each PG's last record applied since the reset */
    uint64_t applied, dropped, resets;
    bool mu_ready;
};

int rd_core_new(uint32_t page_size, uint64_t pages_per_pg, uint32_t cache_pages, rd_core **out,
                mrd_msg *msg)
{
    rd_core *c = calloc(1, sizeof(*c));
    if (c == NULL) return mrd_fail(msg, MRD_ENOMEM, "reader: out of memory");
    c->page_size = page_size;
    c->pages_per_pg = pages_per_pg;
    c->cap = cache_pages ? cache_pages : RD_CACHE_PAGES_DEFAULT;
    c->nbuckets = 1;
    while (c->nbuckets < 2 * c->cap)
        c->nbuckets *= 2;
    c->entries = calloc(c->cap, sizeof(*c->entries));
    c->data = malloc((size_t)c->cap * page_size);
    c->buckets = malloc(c->nbuckets * sizeof(*c->buckets));
    if (c->entries == NULL || c->data == NULL || c->buckets == NULL) {
        rd_core_free(c);
        return mrd_fail(msg, MRD_ENOMEM, "reader: out of memory for %u pages", c->cap);
    }
    memset(c->buckets, 0xff, c->nbuckets * sizeof(*c->buckets));
    uv_mutex_init(&c->mu);
    c->mu_ready = true;
    c->down_since_ms = mrd_now_ms();
    *out = c;
    return 0;
}

static void pend_clear(rd_core *c)
{
    for (uint32_t i = 0; i < c->pend_count; i++)
        mrd_buf_free(&c->pend[(c->pend_head + i) % c->pend_cap]);
    c->pend_head = c->pend_count = 0;
    c->pend_bytes = 0;
}

void rd_core_free(rd_core *c)
{
    if (c == NULL) return;
    if (c->pend != NULL) pend_clear(c);
    free(c->pend);
    free(c->entries);
    free(c->data);
    free(c->buckets);
    if (c->mu_ready) uv_mutex_destroy(&c->mu);
    free(c);
}

/* ---- pages held ------------------------------------------------------------------------- */

static uint32_t bucket_of(const rd_core *c, uint64_t page)
{
    return (uint32_t)((page * 0x9e3779b97f4a7c15ull) >> 32) & (c->nbuckets - 1);
}

static int32_t find(const rd_core *c, uint64_t page)
{
    for (int32_t i = c->buckets[bucket_of(c, page)]; i >= 0; i = c->entries[i].next)
        if (c->entries[i].page == page) return i;
    return -1;
}

static void unlink_entry(rd_core *c, int32_t idx)
{
    int32_t *p = &c->buckets[bucket_of(c, c->entries[idx].page)];
    while (*p != idx)
        p = &c->entries[*p].next;
    *p = c->entries[idx].next;
    c->entries[idx].live = false;
    c->count--;
}

/* A slot for page: a free one, or the least recently used. */
static int32_t slot_for(rd_core *c, uint64_t page)
{
    int32_t idx = -1;
    if (c->count < c->cap) {
        for (uint32_t i = 0; i < c->cap && idx < 0; i++)
            if (!c->entries[i].live) idx = (int32_t)i;
    } else {
        for (uint32_t i = 0; i < c->cap; i++)
            if (idx < 0 || c->entries[i].used < c->entries[idx].used) idx = (int32_t)i;
        unlink_entry(c, idx);
    }
    uint32_t b = bucket_of(c, page);
    c->entries[idx] = (rd_entry){.page = page, .used = ++c->clock, .next = c->buckets[b], .live = true};
    c->buckets[b] = idx;
    c->count++;
    return idx;
}

static void drop_pages(rd_core *c)
{
    memset(c->buckets, 0xff, c->nbuckets * sizeof(*c->buckets));
    for (uint32_t i = 0; i < c->cap; i++)
        c->entries[i].live = false;
    c->count = 0;
}

bool rd_core_page(rd_core *c, uint64_t page, uint8_t *out)
{
    uv_mutex_lock(&c->mu);
    int32_t i = find(c, page);
    if (i >= 0) {
        c->entries[i].used = ++c->clock;
        memcpy(out, c->data + (size_t)i * c->page_size, c->page_size);
    }
    uv_mutex_unlock(&c->mu);
    return i >= 0;
}

void rd_core_page_put(rd_core *c, uint64_t page, uint64_t read_point, const uint8_t *data)
{
    uv_mutex_lock(&c->mu);
    /* Records above an older read point were applied without this page: it would miss them. */
    if (read_point == c->applied_vdl && find(c, page) < 0) {
        int32_t i = slot_for(c, page);
        memcpy(c->data + (size_t)i * c->page_size, data, c->page_size);
    }
    uv_mutex_unlock(&c->mu);
}

/* ---- the stream ------------------------------------------------------------------------- */

void rd_core_reset(rd_core *c, uint64_t vdl, uint64_t epoch, uint64_t now_ms)
{
    uv_mutex_lock(&c->mu);
    pend_clear(c);
    drop_pages(c);
    c->marks_head = c->marks_count = 0;
    c->applied_vdl = c->writer_vdl = c->last_received = vdl;
    c->epoch = epoch;
    c->stream_up = true;
    memset(c->head_known, 0, sizeof(c->head_known));
    memset(c->seen_max, 0, sizeof(c->seen_max));
    c->reset_vdl = vdl;
    c->resets++;
    uv_mutex_unlock(&c->mu);
}

void rd_core_stream_down(rd_core *c, uint64_t now_ms)
{
    uv_mutex_lock(&c->mu);
    if (c->stream_up) c->down_since_ms = now_ms;
    c->stream_up = false;
    uv_mutex_unlock(&c->mu);
}

int rd_core_record(rd_core *c, const wire_record *rec, const uint8_t *enc, size_t len)
{
    int rc = 0;
    uv_mutex_lock(&c->mu);
    if (rec->lsn != c->last_received + 1 || rec->pg >= QUORUM_PGS_MAX)
        rc = MRD_EPROTO;
    else if (c->pend_count >= RD_PENDING_RECORDS_MAX || c->pend_bytes + len > RD_PENDING_BYTES_MAX)
        rc = MRD_ETOOBIG;
    if (rc == 0 && c->pend_count == c->pend_cap) { /* grow the ring, oldest first */
        uint32_t cap = c->pend_cap ? c->pend_cap * 2 : 1024;
        mrd_buf *p = malloc(cap * sizeof(*p));
        if (p == NULL) rc = MRD_ENOMEM;
        for (uint32_t i = 0; rc == 0 && i < c->pend_count; i++)
            p[i] = c->pend[(c->pend_head + i) % c->pend_cap];
        if (rc == 0) {
            free(c->pend);
            c->pend = p;
            c->pend_cap = cap;
            c->pend_head = 0;
        }
    }
    if (rc == 0) {
        mrd_buf *b = &c->pend[(c->pend_head + c->pend_count) % c->pend_cap];
        mrd_buf_init(b);
        rc = mrd_buf_append(b, enc, len);
        if (rc == 0) {
            c->pend_count++;
            c->pend_bytes += len;
            c->last_received = rec->lsn;
        }
    }
    uv_mutex_unlock(&c->mu);
    return rc;
}

int rd_core_mark(rd_core *c, uint64_t vdl, uint64_t lsn_last, uint64_t now_ms)
{
    int rc = 0;
    uv_mutex_lock(&c->mu);
    if (vdl < c->writer_vdl || vdl > c->last_received) {
        rc = MRD_EPROTO;
    } else if (vdl > c->writer_vdl) {
        c->writer_vdl = vdl;
        if (c->marks_count == RD_MARKS_MAX) /* fold into the newest: its age stays the older */
            c->marks[(c->marks_head + c->marks_count - 1) % RD_MARKS_MAX].vdl = vdl;
        else
            c->marks[(c->marks_head + c->marks_count++) % RD_MARKS_MAX] =
                (rd_markq){.vdl = vdl, .at_ms = now_ms};
    }
    uv_mutex_unlock(&c->mu);
    return rc;
}

static void apply_one(rd_core *c, const mrd_buf *enc)
{
    wire_record rec;
    if (wire_record_decode(enc->data, enc->len, &rec, NULL) != 0) return; /* checked on arrival */
    c->seen_max[rec.pg] = rec.lsn; /* with the head at the reset, the head now */
    int32_t i = find(c, rec.page);
    if (i < 0) {
        c->dropped++;
        return;
    }
    if (wire_record_apply(c->data + (size_t)i * c->page_size, c->page_size, &rec, NULL) != 0)
        unlink_entry(c, i); /* cannot happen for a valid stream; never serve a wrong page */
    c->applied++;
}

uint32_t rd_core_apply(rd_core *c, uint64_t now_ms)
{
    uint32_t n = 0;
    uv_mutex_lock(&c->mu);
    if (c->pins == 0 && c->writer_vdl > c->applied_vdl) {
        uint64_t target = c->writer_vdl;
        while (c->pend_count > 0) {
            mrd_buf *b = &c->pend[c->pend_head];
            uint64_t lsn = c->last_received - c->pend_count + 1;
            if (lsn > target) break;
            apply_one(c, b);
            c->pend_bytes -= b->len;
            mrd_buf_free(b);
            c->pend_head = (c->pend_head + 1) % c->pend_cap;
            c->pend_count--;
            n++;
        }
        c->applied_vdl = target;
        while (c->marks_count > 0 && c->marks[c->marks_head].vdl <= target) {
            c->marks_head = (c->marks_head + 1) % RD_MARKS_MAX;
            c->marks_count--;
        }
    }
    uv_mutex_unlock(&c->mu);
    return n;
}

/* ---- read transactions ------------------------------------------------------------------ */

uint64_t rd_core_pin(rd_core *c)
{
    uv_mutex_lock(&c->mu);
    c->pins++;
    uint64_t rp = c->applied_vdl;
    uv_mutex_unlock(&c->mu);
    return rp;
}

void rd_core_unpin(rd_core *c)
{
    uv_mutex_lock(&c->mu);
    if (c->pins > 0) c->pins--;
    uv_mutex_unlock(&c->mu);
}

bool rd_core_need(rd_core *c, uint32_t pg, uint64_t *need)
{
    if (pg >= QUORUM_PGS_MAX) return false;
    uv_mutex_lock(&c->mu);
    bool known = c->head_known[pg];
    *need = c->seen_max[pg] > c->head[pg] ? c->seen_max[pg] : c->head[pg];
    uv_mutex_unlock(&c->mu);
    return known;
}

bool rd_core_started_at(rd_core *c, uint64_t reset_vdl)
{
    uv_mutex_lock(&c->mu);
    bool yes = c->stream_up && c->reset_vdl == reset_vdl;
    uv_mutex_unlock(&c->mu);
    return yes;
}

uint64_t rd_core_reset_vdl(rd_core *c)
{
    uv_mutex_lock(&c->mu);
    uint64_t v = c->reset_vdl;
    uv_mutex_unlock(&c->mu);
    return v;
}

bool rd_core_heads_missing(rd_core *c, uint32_t pgs, uint32_t *pg)
{
    bool missing = false;
    uv_mutex_lock(&c->mu);
    for (uint32_t i = 0; i < pgs && i < QUORUM_PGS_MAX && !missing; i++)
        if (!c->head_known[i]) {
            *pg = i;
            missing = true;
        }
    uv_mutex_unlock(&c->mu);
    return missing;
}

void rd_core_set_head(rd_core *c, uint32_t pg, uint64_t read_point, uint64_t head)
{
    if (pg >= QUORUM_PGS_MAX) return;
    uv_mutex_lock(&c->mu);
    if (read_point == c->reset_vdl && head <= read_point) {
        c->head[pg] = head;
        c->head_known[pg] = true;
    }
    uv_mutex_unlock(&c->mu);
}

void rd_core_stats(rd_core *c, uint64_t now_ms, rd_stats *out)
{
    uv_mutex_lock(&c->mu);
    uint64_t lag = 0;
    if (c->marks_count > 0 && now_ms > c->marks[c->marks_head].at_ms)
        lag = now_ms - c->marks[c->marks_head].at_ms;
    if (!c->stream_up && now_ms > c->down_since_ms && now_ms - c->down_since_ms > lag)
        lag = now_ms - c->down_since_ms;
    *out = (rd_stats){.applied_vdl = c->applied_vdl,
                      .writer_vdl = c->writer_vdl,
                      .lag_ms = lag,
                      .lag_lsn = c->writer_vdl - c->applied_vdl,
                      .epoch = c->epoch,
                      .records_applied = c->applied,
                      .records_dropped = c->dropped,
                      .pages_held = c->count,
                      .resets = c->resets,
                      .pins = c->pins,
                      .received = c->last_received,
                      .stream_up = c->stream_up};
    uv_mutex_unlock(&c->mu);
}
