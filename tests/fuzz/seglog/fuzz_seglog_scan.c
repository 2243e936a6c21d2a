/*
 * Recovery over arbitrary file bytes, on the fake disk. The first input byte
 * picks the layout: bit 0 clear, the rest is the log's only file; set, the next
 * two bytes say where the rest splits into files 1 and 2. Bit 1 set reseals
 * every CRC that the bytes leave room for, so that the fuzzer also reaches what
 * lies behind the checksums (LSN order, lengths, headers). Whatever opens must
 * read back in strictly increasing LSN order, take one more entry, and open
 * again with nothing left to cut.
 */
#include <stdlib.h>
#include <string.h>

#include "meridian/seglog.h"

#define FUZZ_DIR "/f"
#define FUZZ_FILE_BYTES_MAX 4096
#define FUZZ_BATCH_BYTES_MAX 1024

static seglog *fuzz_open(seglog_fake *fake, seglog_recovery *rep)
{
    seglog_options o = {.io = seglog_fake_io(fake),
                        .dir = FUZZ_DIR,
                        .file_bytes_max = FUZZ_FILE_BYTES_MAX,
                        .batch_bytes_max = FUZZ_BATCH_BYTES_MAX};
    seglog *log = NULL;
    mrd_msg msg;
    if (seglog_open(&o, &log, rep, &msg) != 0) return NULL;
    return log;
}

/* Reads everything back; the count of entries, or aborts on a broken promise. */
static uint64_t fuzz_read_all(seglog *log)
{
    seglog_iter *it;
    mrd_msg msg;
    if (seglog_iter_open(log, 0, &it, &msg) != 0) abort();
    seglog_entry e;
    uint64_t n = 0, prev = 0;
    int rc;
    while ((rc = seglog_iter_next(it, &e, &msg)) == 1) {
        if (e.lsn <= prev || e.len == 0) abort();
        prev = e.lsn;
        n++;
    }
    if (rc != 0) abort(); /* recovery verified every frame: reading back cannot fail */
    if (prev != seglog_lsn_durable(log)) abort();
    seglog_iter_close(it);
    return n;
}

static void fuzz_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Recomputes the header CRC and each frame's CRC, walking frames by their lengths. */
static void fuzz_reseal(uint8_t *f, size_t len)
{
    if (len < SEGLOG_FILE_HEADER_BYTES) return;
    fuzz_put_u32(f + 28, mrd_crc32c(0, f, 28));
    size_t off = SEGLOG_FILE_HEADER_BYTES;
    while (len - off >= SEGLOG_FRAME_HEADER_BYTES) {
        uint32_t n = f[off] | f[off + 1] << 8 | f[off + 2] << 16 | (uint32_t)f[off + 3] << 24;
        if (n > len - off - SEGLOG_FRAME_HEADER_BYTES) return;
        uint32_t crc = mrd_crc32c(0, f + off, 4);
        crc = mrd_crc32c(crc, f + off + 8, 8);
        fuzz_put_u32(f + off + 4, mrd_crc32c(crc, f + off + SEGLOG_FRAME_HEADER_BYTES, n));
        off += SEGLOG_FRAME_HEADER_BYTES + n;
    }
}

static void fuzz_put(seglog_fake *fake, const char *path, const uint8_t *data, size_t len,
                     bool reseal)
{
    uint8_t *copy = malloc(len + 1);
    if (copy == NULL) abort();
    if (len > 0) memcpy(copy, data, len);
    if (reseal) fuzz_reseal(copy, len);
    seglog_fake_put(fake, path, copy, len);
    free(copy);
}

static void fuzz_put_files(seglog_fake *fake, const uint8_t *data, size_t size)
{
    if (size == 0) return;
    bool two = data[0] & 1, reseal = data[0] & 2;
    data++, size--;
    if (!two) {
        fuzz_put(fake, FUZZ_DIR "/seg-0000000000000001.log", data, size, reseal);
        return;
    }
    if (size < 2) return;
    size_t split = (size_t)(data[0] | data[1] << 8);
    data += 2, size -= 2;
    if (split > size) split = size;
    fuzz_put(fake, FUZZ_DIR "/seg-0000000000000001.log", data, split, reseal);
    fuzz_put(fake, FUZZ_DIR "/seg-0000000000000002.log", data + split, size - split, reseal);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    seglog_fake *fake = seglog_fake_new(size);
    fuzz_put_files(fake, data, size);
    seglog_recovery rep;
    seglog *log = fuzz_open(fake, &rep);
    if (log == NULL) goto done;
    if (fuzz_read_all(log) != rep.entries) abort();
    uint64_t lsn = seglog_lsn_durable(log);
    uint8_t byte = 0x5a;
    seglog_entry e = {.lsn = lsn + 1, .data = &byte, .len = 1};
    mrd_msg msg;
    bool more = lsn < UINT64_MAX;
    if (more && (seglog_append(log, &e, 1, &msg) != 0 || seglog_sync(log, &msg) != 0)) abort();
    seglog_close(log);
    log = fuzz_open(fake, &rep);
    if (log == NULL || rep.truncated) abort();
    if (fuzz_read_all(log) != rep.entries) abort();
    if (more && seglog_lsn_durable(log) != lsn + 1) abort();
    seglog_close(log);
done:
    seglog_fake_free(fake);
    return 0;
}
