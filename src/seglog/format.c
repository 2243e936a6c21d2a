/* The segment log's bytes: file header, frames, file names, and a windowed reader. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "seglog_int.h"

static const uint8_t seglog_magic[8] = {'M', 'R', 'D', 'S', 'E', 'G', 'L', 'G'};

#define SEGLOG_HEADER_CRC_AT 28u

void seglog_header_encode(uint8_t out[SEGLOG_FILE_HEADER_BYTES], uint64_t seq)
{
    memset(out, 0, SEGLOG_FILE_HEADER_BYTES);
    memcpy(out, seglog_magic, sizeof(seglog_magic));
    seglog_put_u32(out + 8, SEGLOG_FORMAT_VERSION);
    seglog_put_u32(out + 12, 0); /* flags */
    seglog_put_u64(out + 16, seq);
    seglog_put_u32(out + 24, 0); /* reserved */
    seglog_put_u32(out + SEGLOG_HEADER_CRC_AT, mrd_crc32c(0, out, SEGLOG_HEADER_CRC_AT));
}

int seglog_header_decode(const uint8_t in[SEGLOG_FILE_HEADER_BYTES], uint64_t *seq,
                         const char **why)
{
    if (memcmp(in, seglog_magic, sizeof(seglog_magic)) != 0) {
        *why = "bad magic";
        return MRD_EPARSE;
    }
    if (mrd_crc32c(0, in, SEGLOG_HEADER_CRC_AT) != seglog_get_u32(in + SEGLOG_HEADER_CRC_AT)) {
        *why = "bad header crc";
        return MRD_ECRC;
    }
    if (seglog_get_u32(in + 8) != SEGLOG_FORMAT_VERSION) {
        *why = "unsupported format version";
        return MRD_EVERSION;
    }
    if (seglog_get_u32(in + 12) != 0 || seglog_get_u32(in + 24) != 0) {
        *why = "unknown flags";
        return MRD_EPARSE;
    }
    *seq = seglog_get_u64(in + 16);
    return 0;
}

bool seglog_header_is_zero(const uint8_t *in, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (in[i] != 0) return false;
    return true;
}

uint32_t seglog_frame_crc(uint32_t len, uint64_t lsn, const uint8_t *payload)
{
    uint8_t head[12];
    seglog_put_u32(head, len);
    seglog_put_u64(head + 4, lsn);
    return mrd_crc32c(mrd_crc32c(0, head, sizeof(head)), payload, len);
}

int seglog_frame_encode(mrd_buf *buf, uint64_t lsn, const uint8_t *payload, uint32_t len)
{
    assert(lsn > 0 && len > 0 && len <= SEGLOG_ENTRY_BYTES_MAX);
    int rc = mrd_buf_reserve(buf, SEGLOG_FRAME_HEADER_BYTES + len);
    if (rc != 0) return rc;
    uint8_t *p = buf->data + buf->len;
    seglog_put_u32(p, len);
    seglog_put_u32(p + 4, seglog_frame_crc(len, lsn, payload));
    seglog_put_u64(p + 8, lsn);
    memcpy(p + SEGLOG_FRAME_HEADER_BYTES, payload, len);
    buf->len += SEGLOG_FRAME_HEADER_BYTES + len;
    return 0;
}

void seglog_frame_head_decode(const uint8_t in[SEGLOG_FRAME_HEADER_BYTES], seglog_frame_head *h)
{
    h->len = seglog_get_u32(in);
    h->crc = seglog_get_u32(in + 4);
    h->lsn = seglog_get_u64(in + 8);
}

void seglog_file_name(char out[SEGLOG_NAME_LEN + 1], uint64_t seq)
{
    snprintf(out, SEGLOG_NAME_LEN + 1, SEGLOG_NAME_PREFIX "%016" PRIx64 SEGLOG_NAME_SUFFIX, seq);
}

bool seglog_file_name_parse(const char *name, uint64_t *seq)
{
    if (strlen(name) != SEGLOG_NAME_LEN) return false;
    if (memcmp(name, SEGLOG_NAME_PREFIX, 4) != 0) return false;
    if (memcmp(name + 4 + SEGLOG_NAME_HEX, SEGLOG_NAME_SUFFIX, 4) != 0) return false;
    uint64_t v = 0;
    for (int i = 0; i < SEGLOG_NAME_HEX; i++) {
        char c = name[4 + i];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else
            return false;
        v = (v << 4) | (uint64_t)d;
    }
    *seq = v;
    return true;
}

int seglog_io_err(mrd_msg *msg, int err, const char *what, const char *path)
{
    return mrd_fail(msg, MRD_EIO, "%s: %s failed: %s", path, what, strerror(-err));
}

int seglog_path(const seglog *log, uint64_t seq, char out[SEGLOG_PATH_MAX])
{
    char name[SEGLOG_NAME_LEN + 1];
    seglog_file_name(name, seq);
    int n = snprintf(out, SEGLOG_PATH_MAX, "%s/%s", log->dir, name);
    return (n < 0 || n >= SEGLOG_PATH_MAX) ? MRD_EINVAL : 0;
}

/* ---- reader ------------------------------------------------------------------------- */

void seglog_reader_init(seglog_reader *r, seglog_io *io, int fd, uint64_t size)
{
    r->io = io;
    r->fd = fd;
    r->size = size;
    mrd_buf_init(&r->win);
    r->win_off = 0;
}

void seglog_reader_free(seglog_reader *r)
{
    mrd_buf_free(&r->win);
}

int seglog_reader_get(seglog_reader *r, uint64_t off, size_t len, const uint8_t **out)
{
    assert(off <= r->size && len <= r->size - off);
    if (off >= r->win_off && off + len <= r->win_off + r->win.len) {
        *out = r->win.data + (off - r->win_off);
        return 0;
    }
    size_t want = len > SEGLOG_READ_CHUNK ? len : SEGLOG_READ_CHUNK;
    if (want > r->size - off) want = (size_t)(r->size - off);
    r->win.len = 0;
    if (mrd_buf_reserve(&r->win, want) != 0) return -ENOMEM;
    size_t got = 0;
    int rc = r->io->pread(r->io, r->fd, r->win.data, want, off, &got);
    if (rc != 0) return rc;
    if (got < len) return -EIO; /* the file shrank under us */
    r->win.len = got;
    r->win_off = off;
    *out = r->win.data;
    return 0;
}
