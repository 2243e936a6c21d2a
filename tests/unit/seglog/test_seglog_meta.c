/* The metadata file (codec, atomic replacement) and the fake disk's own promises. */
#include <errno.h>
#include <unistd.h>

#include "seglog_test.h"

#define META_PATH "/node/meta"

static seglog_meta sample(uint64_t epoch)
{
    seglog_meta m;
    memset(&m, 0, sizeof(m));
    m.epoch = epoch;
    m.vdl = 3 * epoch;
    m.key_start = 5 * epoch;
    m.fence_count = 2;
    m.fences[0] = (seglog_meta_fence){.epoch = epoch / 2, .truncate_lsn = 77};
    m.fences[1] = (seglog_meta_fence){.epoch = epoch, .truncate_lsn = 1000 * epoch};
    m.pg_count = 3;
    for (uint32_t i = 0; i < 3; i++) {
        m.pgs[i].pg_id = 10 + i * 7;
        m.pgs[i].segment_index = (uint8_t)(i * 2);
        m.pgs[i].scl = 1000 * epoch + i;
        m.pgs[i].materialized = 900 * epoch + i;
        m.pgs[i].base = 800 * epoch + i;
        m.pgs[i].base_cpl = 700 * epoch + i;
    }
    return m;
}

static void assert_meta_equal(const seglog_meta *a, const seglog_meta *b)
{
    assert_int_equal(a->epoch, b->epoch);
    assert_int_equal(a->vdl, b->vdl);
    assert_int_equal(a->key_start, b->key_start);
    assert_int_equal(a->fence_count, b->fence_count);
    for (uint32_t i = 0; i < a->fence_count; i++) {
        assert_int_equal(a->fences[i].epoch, b->fences[i].epoch);
        assert_int_equal(a->fences[i].truncate_lsn, b->fences[i].truncate_lsn);
    }
    assert_int_equal(a->pg_count, b->pg_count);
    for (uint32_t i = 0; i < a->pg_count; i++) {
        assert_int_equal(a->pgs[i].pg_id, b->pgs[i].pg_id);
        assert_int_equal(a->pgs[i].segment_index, b->pgs[i].segment_index);
        assert_int_equal(a->pgs[i].scl, b->pgs[i].scl);
        assert_int_equal(a->pgs[i].materialized, b->pgs[i].materialized);
        assert_int_equal(a->pgs[i].base, b->pgs[i].base);
        assert_int_equal(a->pgs[i].base_cpl, b->pgs[i].base_cpl);
    }
}

static void codec_round_trip(void **state)
{
    static seglog_meta m, out;
    uint8_t buf[SEGLOG_META_BYTES_MAX];
    size_t len;
    mrd_msg msg;
    m = sample(42);
    assert_int_equal(seglog_meta_encode(&m, buf, sizeof(buf), &len, &msg), 0);
    assert_int_equal(len, 40 + 2 * 16 + 3 * 40 + 4);
    assert_int_equal(seglog_meta_decode(buf, len, &out, &msg), 0);
    assert_meta_equal(&m, &out);
    m.epoch = UINT64_MAX;
    m.fence_count = SEGLOG_META_FENCES_MAX;
    for (uint32_t i = 0; i < m.fence_count; i++)
        m.fences[i] = (seglog_meta_fence){.epoch = i * 5, .truncate_lsn = ~(uint64_t)i};
    m.pg_count = SEGLOG_META_PGS_MAX;
    for (uint32_t i = 0; i < m.pg_count; i++)
        m.pgs[i] = (seglog_meta_pg){
            .pg_id = i * 3, .segment_index = i % 6, .scl = ~(uint64_t)i, .materialized = i,
            .base = i / 2, .base_cpl = i / 4};
    assert_int_equal(seglog_meta_encode(&m, buf, sizeof(buf), &len, &msg), 0);
    assert_int_equal(len, SEGLOG_META_BYTES_MAX);
    assert_int_equal(seglog_meta_decode(buf, len, &out, &msg), 0);
    assert_meta_equal(&m, &out);
    m.pg_count = 0;
    m.fence_count = 0;
    assert_int_equal(seglog_meta_encode(&m, buf, sizeof(buf), &len, &msg), 0);
    assert_int_equal(len, 44);
    assert_int_equal(seglog_meta_decode(buf, len, &out, &msg), 0);
    assert_int_equal(out.pg_count, 0);
    assert_int_equal(out.fence_count, 0);
}

static void encode_refuses_what_decode_would(void **state)
{
    seglog_meta m = sample(1);
    uint8_t buf[SEGLOG_META_BYTES_MAX];
    size_t len;
    mrd_msg msg;
    m.pgs[1].segment_index = SEGLOG_META_SEGMENTS;
    assert_int_equal(seglog_meta_encode(&m, buf, sizeof(buf), &len, &msg), MRD_EINVAL);
    m = sample(1);
    m.pgs[2].pg_id = m.pgs[1].pg_id;
    assert_int_equal(seglog_meta_encode(&m, buf, sizeof(buf), &len, &msg), MRD_EINVAL);
    m = sample(1);
    m.pg_count = SEGLOG_META_PGS_MAX + 1;
    assert_int_equal(seglog_meta_encode(&m, buf, sizeof(buf), &len, &msg), MRD_ETOOBIG);
    m = sample(1);
    m.fence_count = SEGLOG_META_FENCES_MAX + 1;
    assert_int_equal(seglog_meta_encode(&m, buf, sizeof(buf), &len, &msg), MRD_ETOOBIG);
    m = sample(4);
    m.fences[1].epoch = m.fences[0].epoch; /* epochs must strictly increase */
    assert_int_equal(seglog_meta_encode(&m, buf, sizeof(buf), &len, &msg), MRD_EINVAL);
    assert_non_null(strstr(msg.text, "fence 1"));
    m = sample(4);
    m.fences[1].epoch = 5; /* above the node's epoch */
    assert_int_equal(seglog_meta_encode(&m, buf, sizeof(buf), &len, &msg), MRD_EINVAL);
    assert_non_null(strstr(msg.text, "above the node's epoch"));
    m = sample(1);
    m.pgs[0].base = m.pgs[0].materialized + 1; /* forgotten, not in the page file */
    assert_int_equal(seglog_meta_encode(&m, buf, sizeof(buf), &len, &msg), MRD_EINVAL);
    assert_non_null(strstr(msg.text, "forget point"));
    m = sample(1);
    m.pgs[2].base_cpl = m.pgs[2].base + 1;
    assert_int_equal(seglog_meta_encode(&m, buf, sizeof(buf), &len, &msg), MRD_EINVAL);
    m = sample(1);
    assert_int_equal(seglog_meta_encode(&m, buf, 20, &len, &msg), MRD_ETOOBIG);
}

/* Re-seals buf's CRC after an edit, so that the field rule (not the CRC) must catch it. */
static void reseal(uint8_t *buf, size_t len)
{
    uint32_t crc = mrd_crc32c(0, buf, len - 4);
    for (int i = 0; i < 4; i++)
        buf[len - 4 + i] = (uint8_t)(crc >> (8 * i));
}

static int decode_edited(size_t at, uint8_t value, bool seal, mrd_msg *msg)
{
    seglog_meta m = sample(9), out;
    uint8_t buf[SEGLOG_META_BYTES_MAX];
    size_t len;
    assert_int_equal(seglog_meta_encode(&m, buf, sizeof(buf), &len, msg), 0);
    buf[at] = value;
    if (seal) reseal(buf, len);
    return seglog_meta_decode(buf, len, &out, msg);
}

static void decode_names_each_broken_rule(void **state)
{
    /* sample(9): 40-byte head, fences at 40 and 56, groups at 72, 112, 152, crc at 192. */
    mrd_msg msg;
    assert_int_equal(decode_edited(0, 'X', true, &msg), MRD_EPARSE);
    assert_non_null(strstr(msg.text, "magic"));
    assert_int_equal(decode_edited(4, 1, false, &msg), MRD_EVERSION);
    assert_non_null(strstr(msg.text, "version 1,"));
    assert_int_equal(decode_edited(7, 1, false, &msg), MRD_ETOOBIG); /* 259 groups */
    assert_int_equal(decode_edited(6, 4, false, &msg), MRD_ETRUNC);  /* 4 groups, 3 present */
    assert_int_equal(decode_edited(16, 17, false, &msg), MRD_ETOOBIG); /* 17 fences */
    assert_non_null(strstr(msg.text, "fences"));
    assert_int_equal(decode_edited(16, 3, false, &msg), MRD_ETRUNC); /* 3 fences, 2 present */
    assert_int_equal(decode_edited(9, 0xff, false, &msg), MRD_ECRC);
    assert_non_null(strstr(msg.text, "crc"));
    assert_int_equal(decode_edited(20, 1, true, &msg), MRD_EPARSE);
    assert_non_null(strstr(msg.text, "offset 20: padding"));
    assert_int_equal(decode_edited(72 + 5, 1, true, &msg), MRD_EPARSE);
    assert_non_null(strstr(msg.text, "padding"));
    assert_int_equal(decode_edited(72 + 4, 6, true, &msg), MRD_EPARSE);
    assert_non_null(strstr(msg.text, "segment index"));
    assert_int_equal(decode_edited(112, 0, true, &msg), MRD_EPARSE); /* pg 0 after pg 10 */
    assert_non_null(strstr(msg.text, "increasing"));
    assert_int_equal(decode_edited(56, 3, true, &msg), MRD_EPARSE); /* fence epoch 3 after 4 */
    assert_non_null(strstr(msg.text, "fence 1"));
    assert_int_equal(decode_edited(56 + 7, 1, true, &msg), MRD_EPARSE); /* above the epoch */
    assert_non_null(strstr(msg.text, "above the node's epoch"));
    assert_int_equal(decode_edited(72 + 31, 0xff, true, &msg), MRD_EPARSE); /* forget point */
    assert_int_equal(decode_edited(4, 5, false, &msg), MRD_EVERSION);
}

/* Versions 2 (no VDL) and 3 (no key start, no forget points) still read, with zeros. */
static void decode_reads_older_versions(void **state)
{
    for (unsigned version = 2; version <= 3; version++) {
        seglog_meta m = sample(9), out;
        uint8_t buf[SEGLOG_META_BYTES_MAX], old[SEGLOG_META_BYTES_MAX];
        size_t len, n = 0;
        mrd_msg msg;
        assert_int_equal(seglog_meta_encode(&m, buf, sizeof(buf), &len, &msg), 0);
        memcpy(old, buf, 24); /* the header up to the VDL */
        n = 24;
        if (version == 3) {
            memcpy(old + n, buf + 24, 8);
            n += 8;
        }
        memcpy(old + n, buf + 40, 2 * 16); /* the fences */
        n += 2 * 16;
        for (int g = 0; g < 3; g++) { /* each group without its forget point */
            memcpy(old + n, buf + 72 + 40 * g, 24);
            n += 24;
        }
        n += 4;
        old[4] = (uint8_t)version;
        reseal(old, n);
        assert_int_equal(seglog_meta_decode(old, n, &out, &msg), 0);
        if (version == 2) m.vdl = 0;
        m.key_start = 0;
        for (int g = 0; g < 3; g++)
            m.pgs[g].base = m.pgs[g].base_cpl = 0;
        assert_meta_equal(&m, &out);
    }
}

static void decode_refuses_every_cut_and_flip(void **state)
{
    seglog_meta m = sample(3), out;
    uint8_t buf[SEGLOG_META_BYTES_MAX];
    size_t len;
    mrd_msg msg;
    assert_int_equal(seglog_meta_encode(&m, buf, sizeof(buf), &len, &msg), 0);
    for (size_t cut = 0; cut < len; cut++)
        assert_int_not_equal(seglog_meta_decode(buf, cut, &out, &msg), 0);
    for (size_t at = 0; at < len; at++)
        for (int bit = 0; bit < 8; bit++) {
            buf[at] ^= (uint8_t)(1u << bit);
            assert_int_not_equal(seglog_meta_decode(buf, len, &out, &msg), 0);
            buf[at] ^= (uint8_t)(1u << bit);
        }
    assert_int_equal(seglog_meta_decode(buf, len, &out, &msg), 0);
}

static void write_read_and_replace(void **state)
{
    seglog_fake *fake = seglog_fake_new(1);
    seglog_io *io = seglog_fake_io(fake);
    seglog_meta m = sample(1), out;
    mrd_msg msg;
    assert_int_equal(seglog_meta_read(io, META_PATH, &out, &msg), MRD_ENOTFOUND);
    assert_int_equal(seglog_meta_write(io, META_PATH, &m, &msg), 0);
    assert_int_equal(seglog_meta_read(io, META_PATH, &out, &msg), 0);
    assert_meta_equal(&m, &out);
    m = sample(2);
    assert_int_equal(seglog_meta_write(io, META_PATH, &m, &msg), 0);
    seglog_fake_crash(fake, SEGLOG_CRASH_DROP);
    assert_int_equal(seglog_meta_read(io, META_PATH, &out, &msg), 0);
    assert_meta_equal(&m, &out);
    mrd_buf b;
    mrd_buf_init(&b);
    assert_int_equal(seglog_fake_get(fake, META_PATH ".tmp", &b), MRD_ENOTFOUND);
    /* Damaged on disk: the error names the file. */
    assert_int_equal(seglog_fake_get(fake, META_PATH, &b), 0);
    b.data[12] ^= 1;
    assert_int_equal(seglog_fake_put(fake, META_PATH, b.data, b.len), 0);
    assert_int_equal(seglog_meta_read(io, META_PATH, &out, &msg), MRD_ECRC);
    assert_non_null(strstr(msg.text, META_PATH ": metadata: offset"));
    mrd_buf_free(&b);
    seglog_fake_free(fake);
}

/* A power cut at every call of a replacement: the old or the new file, never a mix. */
static void replacement_is_atomic_at_every_step(void **state)
{
    for (uint64_t cut = 0;; cut++) {
        seglog_fake *fake = seglog_fake_new(cut);
        seglog_io *io = seglog_fake_io(fake);
        seglog_meta old = sample(1), new = sample(2), out;
        mrd_msg msg;
        assert_int_equal(seglog_meta_write(io, META_PATH, &old, &msg), 0);
        seglog_fake_power_cut(fake, cut);
        int rc = seglog_meta_write(io, META_PATH, &new, &msg);
        seglog_fake_crash(fake, (seglog_crash_mode)(cut % 3));
        assert_int_equal(seglog_meta_read(io, META_PATH, &out, &msg), 0);
        assert_true(out.epoch == 1 || out.epoch == 2);
        assert_meta_equal(out.epoch == 1 ? &old : &new, &out);
        if (rc == 0) assert_int_equal(out.epoch, 2);
        seglog_fake_free(fake);
        if (rc == 0) break;
    }
}

static void write_faults_are_clear_errors(void **state)
{
    seglog_fake *fake = seglog_fake_new(2);
    seglog_io *io = seglog_fake_io(fake);
    seglog_meta m = sample(1), out;
    mrd_msg msg;
    assert_int_equal(seglog_meta_write(io, META_PATH, &m, &msg), 0);
    m = sample(2);
    seglog_fake_fail(fake, SEGLOG_OP_PWRITE, 1, ENOSPC);
    assert_int_equal(seglog_meta_write(io, META_PATH, &m, &msg), MRD_EIO);
    assert_non_null(strstr(msg.text, "No space left on device"));
    seglog_fake_fail(fake, SEGLOG_OP_FDATASYNC, 1, EIO);
    assert_int_equal(seglog_meta_write(io, META_PATH, &m, &msg), MRD_EIO);
    assert_non_null(strstr(msg.text, "fdatasync"));
    assert_int_equal(seglog_meta_read(io, META_PATH, &out, &msg), 0);
    assert_int_equal(out.epoch, 1);
    seglog_fake_free(fake);
}

static void posix_write_read(void **state)
{
    char dir[] = "/tmp/mrd-seglog-meta-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/meta", dir);
    seglog_io io;
    seglog_io_posix_init(&io);
    seglog_meta m = sample(5), out;
    mrd_msg msg;
    assert_int_equal(seglog_meta_read(&io, path, &out, &msg), MRD_ENOTFOUND);
    assert_int_equal(seglog_meta_write(&io, path, &m, &msg), 0);
    assert_int_equal(seglog_meta_read(&io, path, &out, &msg), 0);
    assert_meta_equal(&m, &out);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

/* ---- the fake disk itself ----------------------------------------------------------- */

static void fake_disk_loses_what_was_not_synced(void **state)
{
    seglog_fake *fake = seglog_fake_new(3);
    seglog_io *io = seglog_fake_io(fake);
    mrd_buf b;
    mrd_buf_init(&b);
    int fd;
    /* A file whose name was never synced is gone after a crash, synced data or not. */
    assert_int_equal(io->open(io, "/d/a", SEGLOG_IO_WRITE | SEGLOG_IO_CREATE, &fd), 0);
    assert_int_equal(io->pwrite(io, fd, "hello", 5, 0), 0);
    assert_int_equal(io->fdatasync(io, fd), 0);
    seglog_fake_crash(fake, SEGLOG_CRASH_RANDOM);
    assert_int_equal(seglog_fake_get(fake, "/d/a", &b), MRD_ENOTFOUND);
    /* With the folder synced it stays; an unsynced write is dropped. */
    assert_int_equal(io->open(io, "/d/a", SEGLOG_IO_WRITE | SEGLOG_IO_CREATE, &fd), 0);
    assert_int_equal(io->pwrite(io, fd, "hello", 5, 0), 0);
    assert_int_equal(io->fdatasync(io, fd), 0);
    assert_int_equal(io->fsync_dir(io, "/d"), 0);
    assert_int_equal(io->pwrite(io, fd, " world", 6, 5), 0);
    seglog_fake_crash(fake, SEGLOG_CRASH_DROP);
    assert_int_equal(seglog_fake_get(fake, "/d/a", &b), 0);
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "hello", 5);
    /* A rename not followed by a folder sync is undone. */
    assert_int_equal(io->rename(io, "/d/a", "/d/b"), 0);
    seglog_fake_crash(fake, SEGLOG_CRASH_DROP);
    assert_int_equal(seglog_fake_get(fake, "/d/a", &b), 0);
    assert_int_equal(seglog_fake_get(fake, "/d/b", &b), MRD_ENOTFOUND);
    mrd_buf_free(&b);
    seglog_fake_free(fake);
}

static void fake_disk_tears_unsynced_writes(void **state)
{
    int torn = 0, whole = 0, none = 0;
    for (uint64_t seed = 0; seed < 200; seed++) {
        seglog_fake *fake = seglog_fake_new(seed);
        seglog_io *io = seglog_fake_io(fake);
        int fd;
        assert_int_equal(io->open(io, "/d/a", SEGLOG_IO_WRITE | SEGLOG_IO_CREATE, &fd), 0);
        assert_int_equal(io->fsync_dir(io, "/d"), 0);
        assert_int_equal(io->pwrite(io, fd, "0123456789", 10, 0), 0);
        assert_int_equal(io->pwrite(io, fd, "abcdefghij", 10, 10), 0);
        seglog_fake_crash(fake, SEGLOG_CRASH_TEAR);
        mrd_buf b;
        mrd_buf_init(&b);
        assert_int_equal(seglog_fake_get(fake, "/d/a", &b), 0);
        assert_true(b.len <= 20);
        if (b.len == 0)
            none++;
        else if (b.len == 20 && memcmp(b.data + 10, "abcdefghij", 10) == 0)
            whole++;
        else
            torn++;
        mrd_buf_free(&b);
        seglog_fake_free(fake);
    }
    assert_true(torn > 0 && whole > 0 && none > 0);
}

static void fake_disk_fault_switch_and_power_cut(void **state)
{
    seglog_fake *fake = seglog_fake_new(4);
    seglog_io *io = seglog_fake_io(fake);
    int fd;
    assert_int_equal(io->open(io, "/d/a", SEGLOG_IO_WRITE | SEGLOG_IO_CREATE, &fd), 0);
    seglog_fake_fail(fake, SEGLOG_OP_FDATASYNC, 2, EIO);
    assert_int_equal(io->fdatasync(io, fd), 0);
    assert_int_equal(io->fdatasync(io, fd), -EIO);
    assert_int_equal(io->fdatasync(io, fd), 0); /* once */
    seglog_fake_power_cut(fake, 2);
    assert_int_equal(io->fdatasync(io, fd), 0);
    assert_int_equal(io->pwrite(io, fd, "x", 1, 0), 0);
    assert_int_equal(io->fdatasync(io, fd), -EIO);
    assert_int_equal(io->open(io, "/d/b", SEGLOG_IO_CREATE, &fd), -EIO);
    seglog_fake_crash(fake, SEGLOG_CRASH_DROP);
    assert_int_equal(io->open(io, "/d/b", SEGLOG_IO_CREATE, &fd), 0);
    assert_int_equal(io->open(io, "/d/none", 0, &fd), -ENOENT);
    seglog_fake_free(fake);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(codec_round_trip),
        cmocka_unit_test(encode_refuses_what_decode_would),
        cmocka_unit_test(decode_names_each_broken_rule),
        cmocka_unit_test(decode_reads_older_versions),
        cmocka_unit_test(decode_refuses_every_cut_and_flip),
        cmocka_unit_test(write_read_and_replace),
        cmocka_unit_test(replacement_is_atomic_at_every_step),
        cmocka_unit_test(write_faults_are_clear_errors),
        cmocka_unit_test(posix_write_read),
        cmocka_unit_test(fake_disk_loses_what_was_not_synced),
        cmocka_unit_test(fake_disk_tears_unsynced_writes),
        cmocka_unit_test(fake_disk_fault_switch_and_power_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
