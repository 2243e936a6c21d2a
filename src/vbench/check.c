/*
 * The log checker behind volume-verify. It reads a bench log line by line
 * and keeps, for every page, the last write at or below the highest logged
 * VDL (the page's durable content) and the writes above it (which may or
 * may not have survived). A `recovered` line discards the writes above its
 * VCL: the new writer truncated them, and it may use their LSNs again.
 * Writes are folded into the base lazily, whenever a page is touched, so
 * memory stays proportional to the pages and the writes above VDL.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/vbench.h"

static uint32_t hash_page(uint64_t page)
{
    page ^= page >> 33;
    page *= 0xc4ceb9fe1a85ec53ULL;
    page ^= page >> 33;
    return (uint32_t)page;
}

int vb_check_init(vb_check *c, uint32_t page_size, mrd_msg *msg)
{
    memset(c, 0, sizeof(*c));
    if (page_size == 0 || page_size > 65536)
        return mrd_fail(msg, MRD_EINVAL, "log check: page size %u out of range", page_size);
    c->page_size = page_size;
    uint8_t *zero = calloc(1, page_size);
    if (zero == NULL) return mrd_fail(msg, MRD_ENOMEM, "log check: out of memory");
    c->zero_crc = mrd_crc32c(0, zero, page_size);
    free(zero);
    return 0;
}

void vb_check_close(vb_check *c)
{
    for (uint32_t i = 0; i < c->n_pages; i++)
        free(c->pages[i].later);
    free(c->pages);
    free(c->index);
    memset(c, 0, sizeof(*c));
}

static uint32_t slot_of(const vb_check *c, uint64_t page)
{
    uint32_t mask = c->index_cap - 1, i = hash_page(page) & mask;
    while (c->index[i] != 0 && c->pages[c->index[i] - 1].page != page)
        i = (i + 1) & mask;
    return i;
}

static int grow_index(vb_check *c)
{
    uint32_t cap = c->index_cap ? c->index_cap * 2 : 1024;
    uint32_t *old = c->index;
    c->index = calloc(cap, sizeof(*c->index));
    if (c->index == NULL) {
        c->index = old;
        return MRD_ENOMEM;
    }
    c->index_cap = cap;
    free(old);
    for (uint32_t i = 0; i < c->n_pages; i++)
        c->index[slot_of(c, c->pages[i].page)] = i + 1;
    return 0;
}

/* The page's history, created when new. */
static int find_page(vb_check *c, uint64_t page, vb_page_hist **out)
{
    if (c->index_cap == 0 || (c->n_pages + 1) * 2 > c->index_cap)
        if (grow_index(c) != 0) return MRD_ENOMEM;
    uint32_t slot = slot_of(c, page);
    if (c->index[slot] == 0) {
        if (c->n_pages >= VB_CHECK_PAGES_MAX) return MRD_ETOOBIG;
        if (c->n_pages == c->cap_pages) {
            uint32_t cap = c->cap_pages ? c->cap_pages * 2 : 256;
            vb_page_hist *grown = realloc(c->pages, (size_t)cap * sizeof(*grown));
            if (grown == NULL) return MRD_ENOMEM;
            c->pages = grown;
            c->cap_pages = cap;
        }
        memset(&c->pages[c->n_pages], 0, sizeof(c->pages[0]));
        c->pages[c->n_pages].page = page;
        c->index[slot] = ++c->n_pages;
    }
    *out = &c->pages[c->index[slot] - 1];
    return 0;
}

/* Moves the writes at or below the logged VDL into the base. */
static void fold(const vb_check *c, vb_page_hist *h)
{
    uint32_t k = 0;
    while (k < h->n_later && h->later[k].lsn <= c->vdl_max) {
        h->has_base = true;
        h->base_lsn = h->later[k].lsn;
        h->base_crc = h->later[k].crc;
        k++;
    }
    if (k == 0) return;
    memmove(h->later, &h->later[k], (size_t)(h->n_later - k) * sizeof(h->later[0]));
    h->n_later -= k;
}

/* Splits line into at most max space-separated words; returns how many (max + 1: too many). */
static int split(char *line, char **words, int max)
{
    int n = 0;
    for (char *p = strtok(line, " \t\r"); p != NULL; p = strtok(NULL, " \t\r")) {
        if (n == max) return max + 1;
        words[n++] = p;
    }
    return n;
}

static bool parse_num(const char *s, int base, uint64_t *out)
{
    if (s[0] == '\0' || s[0] == '-' || s[0] == '+' || s[0] == ' ') return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, base);
    if (*end != '\0' || errno != 0) return false;
    *out = v;
    return true;
}

static int on_submit(vb_check *c, uint64_t lsn, uint64_t page, uint32_t crc, uint64_t line_no,
                     mrd_msg *msg)
{
    if (lsn <= c->last_lsn)
        return mrd_fail(msg, MRD_EINVAL,
                        "log line %" PRIu64 ": lsn %" PRIu64
                        " is not above the previous write's %" PRIu64,
                        line_no, lsn, c->last_lsn);
    vb_page_hist *h;
    int rc = find_page(c, page, &h);
    if (rc != 0) return mrd_fail(msg, rc, "log line %" PRIu64 ": too many pages", line_no);
    fold(c, h);
    if (h->n_later >= VB_CHECK_LATER_MAX)
        return mrd_fail(msg, MRD_ETOOBIG,
                        "log line %" PRIu64 ": page %" PRIu64
                        " has more than %u writes above the logged vdl",
                        line_no, page, VB_CHECK_LATER_MAX);
    if (h->n_later == h->cap_later) {
        uint32_t cap = h->cap_later ? h->cap_later * 2 : 4;
        vb_write *grown = realloc(h->later, (size_t)cap * sizeof(*grown));
        if (grown == NULL) return mrd_fail(msg, MRD_ENOMEM, "log check: out of memory");
        h->later = grown;
        h->cap_later = cap;
    }
    h->later[h->n_later++] = (vb_write){.lsn = lsn, .crc = crc};
    c->last_lsn = lsn;
    c->submits++;
    return 0;
}

static int on_recovered(vb_check *c, uint64_t epoch, uint64_t vcl, uint64_t vdl, uint64_t line_no,
                        mrd_msg *msg)
{
    if (vdl < c->vdl_max || vcl < vdl)
        return mrd_fail(msg, MRD_EINVAL,
                        "log line %" PRIu64 ": the writer of epoch %" PRIu64
                        " recovered vdl %" PRIu64 " (vcl %" PRIu64
                        "), below the logged vdl %" PRIu64 ": acknowledged writes were lost",
                        line_no, epoch, vdl, vcl, c->vdl_max);
    for (uint32_t i = 0; i < c->n_pages; i++) {
        vb_page_hist *h = &c->pages[i];
        uint32_t keep = 0;
        while (keep < h->n_later && h->later[keep].lsn <= vcl)
            keep++;
        c->truncated += h->n_later - keep;
        h->n_later = keep;
    }
    if (c->last_lsn > vcl) c->last_lsn = vcl;
    c->recoveries++;
    return 0;
}

int vb_check_line(vb_check *c, const char *line, uint64_t line_no, mrd_msg *msg)
{
    char buf[VB_LOG_LINE_MAX + 1];
    size_t len = strlen(line);
    if (len > VB_LOG_LINE_MAX)
        return mrd_fail(msg, MRD_EPARSE, "log line %" PRIu64 ": longer than %u bytes", line_no,
                        VB_LOG_LINE_MAX);
    memcpy(buf, line, len + 1);
    char *w[5];
    int n = split(buf, w, 4);
    c->lines++;
    uint64_t a = 0, b = 0, d = 0;
    if (n == 0) return 0;
    if (strcmp(w[0], "submit") == 0 && n == 4 && parse_num(w[1], 10, &a) &&
        parse_num(w[2], 10, &b) && parse_num(w[3], 16, &d) && d <= UINT32_MAX && a > 0)
        return on_submit(c, a, b, (uint32_t)d, line_no, msg);
    if (strcmp(w[0], "vdl") == 0 && n == 2 && parse_num(w[1], 10, &a)) {
        if (a > c->vdl_max) c->vdl_max = a;
        c->vdls++;
        return 0;
    }
    uint64_t e = 0;
    if (strcmp(w[0], "recovered") == 0 && n == 4 && parse_num(w[1], 10, &e) &&
        parse_num(w[2], 10, &a) && parse_num(w[3], 10, &b))
        return on_recovered(c, e, a, b, line_no, msg);
    return mrd_fail(msg, MRD_EPARSE,
                    "log line %" PRIu64 ": expected 'submit LSN PAGE CRC', "
                    "'vdl N' or 'recovered EPOCH VCL VDL', got '%.80s'",
                    line_no, line);
}

vb_match vb_check_page(vb_check *c, uint64_t page, uint32_t crc, mrd_msg *msg)
{
    vb_page_hist *h = NULL;
    if (find_page(c, page, &h) != 0) return VB_MISMATCH;
    fold(c, h);
    uint32_t durable = h->has_base ? h->base_crc : c->zero_crc;
    if (crc == durable) return VB_MATCH_DURABLE;
    for (uint32_t i = 0; i < h->n_later; i++)
        if (h->later[i].crc == crc) return VB_MATCH_LATER;
    char durable_text[96];
    if (h->has_base)
        snprintf(durable_text, sizeof(durable_text), "%08x of lsn %" PRIu64, durable, h->base_lsn);
    else
        snprintf(durable_text, sizeof(durable_text), "%08x (never written)", durable);
    mrd_fail(msg, MRD_EINVAL,
             "page %" PRIu64 ": crc %08x, expected %s (its last write at or "
             "below the logged vdl %" PRIu64 ") or one of %u later writes",
             page, crc, durable_text, c->vdl_max, h->n_later);
    return VB_MISMATCH;
}

uint64_t vb_check_page_at(const vb_check *c, uint32_t i)
{
    return i < c->n_pages ? c->pages[i].page : 0;
}
