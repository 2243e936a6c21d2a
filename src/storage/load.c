/*
 * Start: the metadata file, the segment log (recovered: a torn or corrupt
 * tail is cut off), the page files, and every log entry read back into the
 * segment chains. Runs before the node serves, so its blocking file work
 * (the recovery's truncation, the first metadata write) holds up no one.
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage_int.h"

static void storage_log_recovery(const seglog_recovery *r)
{
    MRD_INFO("log_open", "files=%" PRIu64 " entries=%" PRIu64 " key_last=%" PRIu64, r->files,
             r->entries, r->lsn_last);
    if (r->truncated)
        MRD_WARN("log_tail_cut",
                 "file_seq=%" PRIu64 " offset=%" PRIu64 " bytes=%" PRIu64
                 " reason=\"%s\" file_removed=%d",
                 r->tail_seq, r->tail_offset, r->tail_bytes,
                 r->tail_reason ? r->tail_reason : "", r->file_removed);
}

/* Epoch, fences and segments from the metadata file. */
static int storage_adopt_meta(storage *s, const seglog_meta *m, mrd_msg *msg)
{
    s->epoch = s->epoch_staged = m->epoch;
    s->vdl = m->vdl;
    s->key_start = m->key_start;
    for (uint32_t i = 0; i < m->fence_count; i++) {
        quorum_fence f = {.epoch = m->fences[i].epoch, .truncate_lsn = m->fences[i].truncate_lsn};
        storage_fences_add(s->fences, &s->n_fences, f);
    }
    memcpy(s->fences_staged, s->fences, sizeof(s->fences));
    s->n_fences_staged = s->n_fences;
    for (uint32_t i = 0; i < m->pg_count; i++) {
        const seglog_meta_pg *mp = &m->pgs[i];
        if (mp->segment_index != s->seg)
            return mrd_fail(msg, MRD_EINVAL,
                            "%s: pg %" PRIu32 " was segment %u, the topology now makes this node "
                            "segment %u; refusing to start",
                            s->meta_path, mp->pg_id, mp->segment_index, s->seg);
        s->start_base[mp->pg_id] = mp->base;
        s->start_base_cpl[mp->pg_id] = mp->base_cpl;
        stp *p = storage_pg(s, mp->pg_id, msg);
        if (p == NULL) return MRD_EINVAL;
        p->materialized = mp->materialized;
    }
    return 0;
}

/* A segment that must be read back from the whole log: no forget point, no key start. */
static int storage_pg_restart(storage *s, uint32_t pg, mrd_msg *msg)
{
    stp_close(s->pgs[pg]);
    free(s->pgs[pg]);
    s->pgs[pg] = NULL;
    s->start_base[pg] = s->start_base_cpl[pg] = 0;
    s->key_start = 0;
    return storage_pg(s, pg, msg) != NULL ? 0 : MRD_EINVAL;
}

/* Page files: open those the metadata vouches for; a cache nothing vouches for goes. */
static int storage_open_pages(storage *s, mrd_msg *msg)
{
    for (uint32_t pg = 0; pg < QUORUM_PGS_MAX; pg++) {
        stp *p = s->pgs[pg];
        if (p == NULL || p->materialized == 0) continue;
        mrd_msg why;
        if (storage_page_file_open(s, pg, false, &s->page_fd[pg], &why) != 0) {
            MRD_WARN("pages_rebuild", "pg=%" PRIu32 " materialized=%" PRIu64 " reason=\"%s\"", pg,
                     p->materialized, why.text);
            p->materialized = 0;
            if (stp_base(p) > 0) { /* its forgotten records must come back from the log */
                int rc = storage_pg_restart(s, pg, msg);
                if (rc != 0) return rc;
            }
        }
    }
    DIR *d = opendir(s->pages_dir);
    if (d == NULL) return mrd_fail(msg, MRD_EIO, "%s: cannot open", s->pages_dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint32_t pg;
        if (!storage_page_file_name(e->d_name, &pg)) continue;
        if (pg < QUORUM_PGS_MAX && s->page_fd[pg] >= 0) continue;
        char path[sizeof(s->pages_dir) + sizeof(e->d_name) + 2];
        snprintf(path, sizeof(path), "%s/%s", s->pages_dir, e->d_name);
        MRD_INFO("pages_drop", "file=%s", path);
        unlink(path);
    }
    closedir(d);
    return 0;
}

int storage_open_files(storage *s, mrd_msg *msg)
{
    int rc = mrd_mkdirs(s->log_dir, msg);
    if (rc == 0) rc = mrd_mkdirs(s->pages_dir, msg);
    if (rc != 0) return rc;
    seglog_meta *m = calloc(1, sizeof(*m));
    if (m == NULL) return mrd_fail(msg, MRD_ENOMEM, "storage: out of memory");
    rc = seglog_meta_read(&s->io, s->meta_path, m, msg);
    bool fresh = rc == MRD_ENOTFOUND;
    if (fresh) rc = 0;
    seglog_recovery rec;
    seglog_options lo = {.io = &s->io, .dir = s->log_dir, .batch_bytes_max = STORAGE_BATCH_BYTES_MAX};
    if (rc == 0) rc = seglog_open(&lo, &s->log, &rec, msg);
    if (rc == 0) {
        storage_log_recovery(&rec);
        if (fresh && rec.entries > 0)
            rc = mrd_fail(msg, MRD_ENOTFOUND,
                          "%s is missing but the segment log holds %" PRIu64
                          " entries; refusing to start without its fences",
                          s->meta_path, rec.entries);
    }
    if (rc == 0) rc = storage_adopt_meta(s, m, msg);
    if (rc == 0) rc = storage_open_pages(s, msg);
    /* Kept for the comparison after replay: the SCL each PG had. */
    for (uint32_t i = 0; rc == 0 && i < m->pg_count; i++)
        s->scl_recorded[m->pgs[i].pg_id] = m->pgs[i].scl;
    free(m);
    return rc;
}

/* One log entry back into its segment; *voided counts what fences void. */
static int storage_replay_entry(storage *s, const seglog_entry *e, uint64_t *voided,
                                uint64_t *skipped, mrd_msg *msg)
{
    wire_record rec;
    mrd_msg inner;
    int rc = wire_record_decode(e->data, e->len, &rec, &inner);
    if (rc != 0)
        return mrd_fail(msg, rc, "%s: entry %" PRIu64 ": not a record: %s", s->log_dir, e->lsn,
                        inner.text);
    stp *p = storage_pg(s, rec.pg, msg);
    if (p == NULL) return MRD_EINVAL;
    /* Forget as the log is read, as the node did while it ran (s->vdl is the recorded
     * one): memory then holds about what it held before the restart. */
    if (stp_records(p) >= s->opts.held_max / 2) stp_forget(p, s->vdl);
    rc = storage_record_fits(&rec, rec.pg, s->pages_per_pg, s->page_size, &inner);
    if (rc != 0)
        return mrd_fail(msg, rc, "%s: entry %" PRIu64 ": %s (topology changed?)", s->log_dir,
                        e->lsn, inner.text);
    quorum_rec q;
    storage_qrec(&rec, &q);
    rc = stp_load(p, &q, rec.page, e->lsn, e->data, e->len);
    if (rc == MRD_ESTALE) {
        (*voided)++;
        return 0;
    }
    if (rc == MRD_EINVAL) {
        MRD_WARN("log_entry_skipped", "key=%" PRIu64 " pg=%" PRIu32 " lsn=%" PRIu64
                                      " reason=\"does not fit the segment's chain\"",
                 e->lsn, rec.pg, rec.lsn);
        (*skipped)++;
        return 0;
    }
    if (rc == MRD_ESTATE)
        return mrd_fail(msg, rc,
                        "%s: entry %" PRIu64 ": record %" PRIu64 " of epoch %" PRIu64
                        " is above the node's epoch %" PRIu64 ": the metadata lost a fence",
                        s->log_dir, e->lsn, rec.lsn, rec.epoch, s->epoch);
    if (rc != 0)
        return mrd_fail(msg, rc, "%s: entry %" PRIu64 ": pg %" PRIu32 ": %s", s->log_dir, e->lsn,
                        rec.pg, mrd_strerror(rc));
    return 0;
}

int storage_replay(storage *s, mrd_msg *msg)
{
    seglog_iter *it;
    /* Entries below the key start hold only records at or below their PG's forget
     * point: in the page files, and served to peers from the log when they ask. */
    uint64_t from = s->key_start > 0 ? s->key_start : 1;
    int rc = seglog_iter_open(s->log, from, &it, msg);
    if (rc != 0) return rc;
    uint64_t entries = 0, voided = 0, skipped = 0;
    seglog_entry e;
    while ((rc = seglog_iter_next(it, &e, msg)) == 1) {
        rc = storage_replay_entry(s, &e, &voided, &skipped, msg);
        if (rc != 0) break;
        entries++;
    }
    seglog_iter_close(it);
    if (rc != 0) return rc;
    s->key_next = seglog_lsn_last(s->log) + 1;
    for (uint32_t pg = 0; pg < QUORUM_PGS_MAX; pg++) {
        stp *p = s->pgs[pg];
        if (p == NULL) continue;
        stp_forget(p, s->vdl);
        MRD_INFO("pg_loaded", "pg=%" PRIu32 " records=%" PRIu32 " scl=%" PRIu64
                              " durable=%" PRIu64 " materialized=%" PRIu64 " forgotten=%" PRIu64,
                 pg, stp_records(p), stp_scl(p), stp_lsn_durable(p), p->materialized,
                 stp_base(p));
        if (stp_scl(p) < s->scl_recorded[pg])
            MRD_WARN("scl_behind",
                     "pg=%" PRIu32 " scl=%" PRIu64 " scl_recorded=%" PRIu64
                     " reason=\"the log lost records it held; gap filling restores them\"",
                     pg, stp_scl(p), s->scl_recorded[pg]);
    }
    MRD_INFO("replayed", "from_key=%" PRIu64 " entries=%" PRIu64 " voided=%" PRIu64
                         " skipped=%" PRIu64 " epoch=%" PRIu64 " fences=%" PRIu32,
             from, entries, voided, skipped, s->epoch, s->n_fences);
    seglog_meta *m = calloc(1, sizeof(*m));
    if (m == NULL) return mrd_fail(msg, MRD_ENOMEM, "storage: out of memory");
    storage_meta_snapshot(s, m);
    rc = seglog_meta_write(&s->io, s->meta_path, m, msg);
    free(m);
    s->meta_written_ms = mrd_now_ms();
    return rc;
}
