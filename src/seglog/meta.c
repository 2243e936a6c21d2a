/*
 * The metadata file: epoch, the highest VDL a writer reported, the first log
 * key a start must read, fences and, per protection group, segment index,
 * SCL, materialized LSN, forget point and the last CPL at or below it.
 * Layout (little-endian): "MRDM", u16 version (4), u16 pg count, u64 epoch,
 * u16 fence count, 6 zero bytes, u64 VDL, u64 key start; then per fence {u64
 * epoch, u64 truncate LSN}; then per PG {u32 pg id, u8 segment index, 3 zero
 * bytes, u64 scl, u64 materialized, u64 forget point, u64 its CPL}; then a
 * CRC32C of everything before it. Older versions read with the missing
 * fields 0: version 2 has neither VDL nor key start nor the forget fields,
 * version 3 has the VDL only. One canonical encoding per version: fence
 * epochs and PG ids strictly increase, padding is zero, and encode refuses
 * exactly what decode would.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "seglog_int.h"

#define SEGLOG_META_FENCE_BYTES 16u

#define SEGLOG_META_CRC_BYTES 4u
#define SEGLOG_META_TMP_SUFFIX ".tmp"

static const uint8_t seglog_meta_magic[4] = {'M', 'R', 'D', 'M'};

/* Header bytes: 24, + the VDL from version 3, + the key start from version 4. */
static size_t seglog_meta_head(unsigned version)
{
    return version == 2 ? 24u : version == 3 ? 32u : 40u;
}

/* Bytes per PG: 24, + the forget point and its CPL from version 4. */
static size_t seglog_meta_pg_bytes(unsigned version)
{
    return version < 4 ? 24u : 40u;
}

static size_t seglog_meta_size(unsigned version, uint32_t fences, uint32_t pgs)
{
    return seglog_meta_head(version) + (size_t)fences * SEGLOG_META_FENCE_BYTES +
           (size_t)pgs * seglog_meta_pg_bytes(version) + SEGLOG_META_CRC_BYTES;
}

static int seglog_meta_check_fences(const seglog_meta *m, mrd_msg *msg)
{
    if (m->fence_count > SEGLOG_META_FENCES_MAX)
        return mrd_fail(msg, MRD_ETOOBIG, "metadata: %" PRIu32 " fences, limit %d",
                        m->fence_count, SEGLOG_META_FENCES_MAX);
    for (uint32_t i = 0; i < m->fence_count; i++) {
        const seglog_meta_fence *f = &m->fences[i];
        if (i > 0 && f->epoch <= m->fences[i - 1].epoch)
            return mrd_fail(msg, MRD_EINVAL,
                            "metadata: fence %" PRIu32 ": epochs not strictly increasing", i);
        if (f->epoch > m->epoch)
            return mrd_fail(msg, MRD_EINVAL,
                            "metadata: fence %" PRIu32 ": epoch %" PRIu64
                            " above the node's epoch %" PRIu64,
                            i, f->epoch, m->epoch);
    }
    return 0;
}

static int seglog_meta_check(const seglog_meta *m, mrd_msg *msg)
{
    int rc = seglog_meta_check_fences(m, msg);
    if (rc != 0) return rc;
    if (m->pg_count > SEGLOG_META_PGS_MAX)
        return mrd_fail(msg, MRD_ETOOBIG, "metadata: %" PRIu32 " protection groups, limit %d",
                        m->pg_count, SEGLOG_META_PGS_MAX);
    for (uint32_t i = 0; i < m->pg_count; i++) {
        if (m->pgs[i].segment_index >= SEGLOG_META_SEGMENTS)
            return mrd_fail(msg, MRD_EINVAL, "metadata: pg %" PRIu32 ": segment index %u >= %d",
                            m->pgs[i].pg_id, m->pgs[i].segment_index, SEGLOG_META_SEGMENTS);
        if (i > 0 && m->pgs[i].pg_id <= m->pgs[i - 1].pg_id)
            return mrd_fail(msg, MRD_EINVAL, "metadata: pg ids not strictly increasing at %" PRIu32,
                            i);
        if (m->pgs[i].base_cpl > m->pgs[i].base || m->pgs[i].base > m->pgs[i].materialized)
            return mrd_fail(msg, MRD_EINVAL,
                            "metadata: pg %" PRIu32 ": forget point %" PRIu64 " (cpl %" PRIu64
                            ") above its materialized LSN %" PRIu64 " or its cpl above it",
                            m->pgs[i].pg_id, m->pgs[i].base, m->pgs[i].base_cpl,
                            m->pgs[i].materialized);
    }
    return 0;
}

static void seglog_put_u16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static uint32_t seglog_get_u16(const uint8_t *p)
{
    return p[0] | (uint32_t)p[1] << 8;
}

int seglog_meta_encode(const seglog_meta *m, uint8_t *out, size_t cap, size_t *len, mrd_msg *msg)
{
    int rc = seglog_meta_check(m, msg);
    if (rc != 0) return rc;
    size_t size = seglog_meta_size(SEGLOG_META_VERSION, m->fence_count, m->pg_count);
    if (cap < size) return mrd_fail(msg, MRD_ETOOBIG, "metadata: needs %zu bytes", size);
    memcpy(out, seglog_meta_magic, 4);
    seglog_put_u16(out + 4, SEGLOG_META_VERSION);
    seglog_put_u16(out + 6, m->pg_count);
    seglog_put_u64(out + 8, m->epoch);
    seglog_put_u16(out + 16, m->fence_count);
    memset(out + 18, 0, 6);
    seglog_put_u64(out + 24, m->vdl);
    seglog_put_u64(out + 32, m->key_start);
    uint8_t *p = out + seglog_meta_head(SEGLOG_META_VERSION);
    for (uint32_t i = 0; i < m->fence_count; i++, p += SEGLOG_META_FENCE_BYTES) {
        seglog_put_u64(p, m->fences[i].epoch);
        seglog_put_u64(p + 8, m->fences[i].truncate_lsn);
    }
    for (uint32_t i = 0; i < m->pg_count; i++, p += seglog_meta_pg_bytes(SEGLOG_META_VERSION)) {
        seglog_put_u32(p, m->pgs[i].pg_id);
        p[4] = m->pgs[i].segment_index;
        p[5] = p[6] = p[7] = 0;
        seglog_put_u64(p + 8, m->pgs[i].scl);
        seglog_put_u64(p + 16, m->pgs[i].materialized);
        seglog_put_u64(p + 24, m->pgs[i].base);
        seglog_put_u64(p + 32, m->pgs[i].base_cpl);
    }
    seglog_put_u32(p, mrd_crc32c(0, out, size - SEGLOG_META_CRC_BYTES));
    *len = size;
    return 0;
}

/* Magic, version, counts and exact size: what must hold before anything else is read. */
static int seglog_meta_frame(const uint8_t *d, size_t len, unsigned *version, uint32_t *fences,
                             uint32_t *pgs, mrd_msg *msg)
{
    if (len < seglog_meta_size(2, 0, 0))
        return mrd_fail(msg, MRD_ETRUNC, "metadata: %zu bytes, shorter than the %zu-byte minimum",
                        len, seglog_meta_size(2, 0, 0));
    if (memcmp(d, seglog_meta_magic, 4) != 0)
        return mrd_fail(msg, MRD_EPARSE, "metadata: offset 0: bad magic");
    *version = seglog_get_u16(d + 4);
    if (*version < 2 || *version > SEGLOG_META_VERSION)
        return mrd_fail(msg, MRD_EVERSION, "metadata: offset 4: version %u, expected 2 to %u",
                        *version, SEGLOG_META_VERSION);
    *pgs = seglog_get_u16(d + 6);
    if (*pgs > SEGLOG_META_PGS_MAX)
        return mrd_fail(msg, MRD_ETOOBIG, "metadata: offset 6: %" PRIu32 " groups, limit %d", *pgs,
                        SEGLOG_META_PGS_MAX);
    *fences = seglog_get_u16(d + 16);
    if (*fences > SEGLOG_META_FENCES_MAX)
        return mrd_fail(msg, MRD_ETOOBIG, "metadata: offset 16: %" PRIu32 " fences, limit %d",
                        *fences, SEGLOG_META_FENCES_MAX);
    size_t want_len = seglog_meta_size(*version, *fences, *pgs);
    if (len != want_len)
        return mrd_fail(msg, MRD_ETRUNC,
                        "metadata: %zu bytes, %" PRIu32 " fences and %" PRIu32 " groups need %zu",
                        len, *fences, *pgs, want_len);
    uint32_t want = seglog_get_u32(d + len - SEGLOG_META_CRC_BYTES);
    if (mrd_crc32c(0, d, len - SEGLOG_META_CRC_BYTES) != want)
        return mrd_fail(msg, MRD_ECRC, "metadata: offset %zu: crc mismatch",
                        len - SEGLOG_META_CRC_BYTES);
    return 0;
}

static int seglog_meta_zero(const uint8_t *d, size_t at, size_t n, mrd_msg *msg)
{
    for (size_t i = 0; i < n; i++)
        if (d[at + i] != 0)
            return mrd_fail(msg, MRD_EPARSE, "metadata: offset %zu: padding not zero", at + i);
    return 0;
}

int seglog_meta_decode(const uint8_t *d, size_t len, seglog_meta *out, mrd_msg *msg)
{
    uint32_t fences = 0, pgs = 0;
    unsigned version = 0;
    int rc = seglog_meta_frame(d, len, &version, &fences, &pgs, msg);
    if (rc == 0) rc = seglog_meta_zero(d, 18, 6, msg);
    if (rc != 0) return rc;
    out->epoch = seglog_get_u64(d + 8);
    out->vdl = version >= 3 ? seglog_get_u64(d + 24) : 0;
    out->key_start = version >= 4 ? seglog_get_u64(d + 32) : 0;
    out->fence_count = fences;
    out->pg_count = pgs;
    const uint8_t *p = d + seglog_meta_head(version);
    for (uint32_t i = 0; i < fences; i++, p += SEGLOG_META_FENCE_BYTES) {
        out->fences[i].epoch = seglog_get_u64(p);
        out->fences[i].truncate_lsn = seglog_get_u64(p + 8);
    }
    for (uint32_t i = 0; i < pgs; i++, p += seglog_meta_pg_bytes(version)) {
        rc = seglog_meta_zero(d, (size_t)(p - d) + 5, 3, msg);
        if (rc != 0) return rc;
        out->pgs[i].pg_id = seglog_get_u32(p);
        out->pgs[i].segment_index = p[4];
        out->pgs[i].scl = seglog_get_u64(p + 8);
        out->pgs[i].materialized = seglog_get_u64(p + 16);
        out->pgs[i].base = version >= 4 ? seglog_get_u64(p + 24) : 0;
        out->pgs[i].base_cpl = version >= 4 ? seglog_get_u64(p + 32) : 0;
    }
    rc = seglog_meta_check(out, msg);
    if (rc != 0) return MRD_EPARSE;
    return 0;
}

static void seglog_dir_of(const char *path, char dir[SEGLOG_PATH_MAX])
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    }
}

/* tmp written and synced; the caller renames it into place. */
static int seglog_meta_write_tmp(seglog_io *io, const char *tmp, const uint8_t *data, size_t len,
                                 mrd_msg *msg)
{
    int fd;
    int rc = io->open(io, tmp, SEGLOG_IO_WRITE | SEGLOG_IO_CREATE | SEGLOG_IO_TRUNC, &fd);
    if (rc != 0) return seglog_io_err(msg, rc, "create", tmp);
    rc = io->pwrite(io, fd, data, len, 0);
    if (rc != 0) {
        seglog_io_err(msg, rc, "write", tmp);
        goto fail_fd;
    }
    rc = io->fdatasync(io, fd);
    if (rc != 0) {
        seglog_io_err(msg, rc, "fdatasync", tmp);
        goto fail_fd;
    }
    io->close(io, fd);
    return 0;
fail_fd:
    io->close(io, fd);
    io->unlink(io, tmp);
    return MRD_EIO;
}

int seglog_meta_write(seglog_io *io, const char *path, const seglog_meta *meta, mrd_msg *msg)
{
    uint8_t data[SEGLOG_META_BYTES_MAX];
    size_t len;
    char tmp[SEGLOG_PATH_MAX], dir[SEGLOG_PATH_MAX];
    int rc = seglog_meta_encode(meta, data, sizeof(data), &len, msg);
    if (rc != 0) return rc;
    if (strlen(path) + sizeof(SEGLOG_META_TMP_SUFFIX) > SEGLOG_PATH_MAX)
        return mrd_fail(msg, MRD_EINVAL, "%s: path too long", path);
    snprintf(tmp, sizeof(tmp), "%s" SEGLOG_META_TMP_SUFFIX, path);
    seglog_dir_of(path, dir);
    rc = seglog_meta_write_tmp(io, tmp, data, len, msg);
    if (rc != 0) return rc;
    rc = io->rename(io, tmp, path);
    if (rc != 0) {
        io->unlink(io, tmp);
        return seglog_io_err(msg, rc, "rename", path);
    }
    rc = io->fsync_dir(io, dir);
    if (rc != 0) return seglog_io_err(msg, rc, "fsync", dir);
    return 0;
}

int seglog_meta_read(seglog_io *io, const char *path, seglog_meta *out, mrd_msg *msg)
{
    uint8_t data[SEGLOG_META_BYTES_MAX + 1];
    int fd;
    uint64_t size;
    size_t got = 0;
    int rc = io->open(io, path, 0, &fd);
    if (rc == -ENOENT) return mrd_fail(msg, MRD_ENOTFOUND, "%s: no metadata file", path);
    if (rc != 0) return seglog_io_err(msg, rc, "open", path);
    rc = io->size(io, fd, &size);
    if (rc == 0 && size > SEGLOG_META_BYTES_MAX) {
        io->close(io, fd);
        return mrd_fail(msg, MRD_ETOOBIG, "%s: %" PRIu64 " bytes, limit %u", path, size,
                        SEGLOG_META_BYTES_MAX);
    }
    if (rc == 0) rc = io->pread(io, fd, data, (size_t)size, 0, &got);
    io->close(io, fd);
    if (rc != 0) return seglog_io_err(msg, rc, "read", path);
    mrd_msg inner;
    rc = seglog_meta_decode(data, got, out, &inner);
    if (rc != 0) return mrd_fail(msg, rc, "%s: %s", path, inner.text);
    return 0;
}
