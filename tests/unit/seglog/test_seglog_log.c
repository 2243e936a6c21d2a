/* The segment log over the fake disk: round trips, recovery of torn tails, faults, truncation. */
#include <errno.h>
#include <unistd.h>

#include "seglog_test.h"

#define LAST_FRAMES 4 /* frames at the tail that the cut and flip tests walk over */

static void round_trip(void **state)
{
    seglog_fake *fake = seglog_fake_new(1);
    seglog_recovery rep;
    seglog *log = test_open(fake, &rep);
    assert_int_equal(rep.entries, 0);
    assert_false(rep.truncated);
    assert_int_equal(seglog_lsn_durable(log), 0);
    for (uint64_t b = 0; b < 10; b++) {
        assert_int_equal(test_append_range(log, b * 3 + 1, b * 3 + 3), 0);
        assert_int_equal(seglog_lsn_durable(log), b * 3);
        test_sync_ok(log);
        assert_int_equal(seglog_lsn_durable(log), b * 3 + 3);
    }
    assert_int_equal(test_check_log(log, 0), 30);
    seglog_close(log);
    log = test_open(fake, &rep);
    assert_int_equal(rep.entries, 30);
    assert_int_equal(rep.lsn_last, 30);
    assert_false(rep.truncated);
    assert_int_equal(test_check_log(log, 0), 30);
    assert_int_equal(test_check_log(log, 17), 30); /* lookup from the middle */
    assert_int_equal(test_check_log(log, 31), 30); /* past the end: nothing */
    seglog_close(log);
    seglog_fake_free(fake);
}

static void unsynced_entries_are_lost_at_crash(void **state)
{
    seglog_fake *fake = seglog_fake_new(2);
    seglog *log = test_open(fake, NULL);
    assert_int_equal(test_append_range(log, 1, 5), 0);
    test_sync_ok(log);
    assert_int_equal(test_append_range(log, 6, 9), 0);
    seglog_close(log);
    seglog_fake_crash(fake, SEGLOG_CRASH_DROP);
    log = test_open(fake, NULL);
    assert_int_equal(test_check_log(log, 0), 5);
    seglog_close(log);
    seglog_fake_free(fake);
}

static void append_rejects_bad_entries(void **state)
{
    seglog_fake *fake = seglog_fake_new(3);
    seglog *log = test_open(fake, NULL);
    mrd_msg msg;
    uint8_t byte = 1, big[1100] = {0};
    seglog_entry e = {.lsn = 5, .data = &byte, .len = 1};
    assert_int_equal(seglog_append(log, &e, 1, &msg), 0);
    assert_int_equal(seglog_append(log, &e, 1, &msg), MRD_EINVAL); /* same LSN */
    e.lsn = 4;
    assert_int_equal(seglog_append(log, &e, 1, &msg), MRD_EINVAL);
    e.lsn = 6;
    e.len = 0;
    assert_int_equal(seglog_append(log, &e, 1, &msg), MRD_EINVAL);
    e.data = big;
    e.len = sizeof(big); /* more than batch_bytes_max (1024) */
    assert_int_equal(seglog_append(log, &e, 1, &msg), MRD_ETOOBIG);
    e.len = SEGLOG_ENTRY_BYTES_MAX + 1;
    assert_int_equal(seglog_append(log, &e, 1, &msg), MRD_ETOOBIG);
    /* All or nothing: a bad entry after a good one stages neither. */
    seglog_entry two[2] = {{.lsn = 7, .data = &byte, .len = 1},
                           {.lsn = 7, .data = &byte, .len = 1}};
    assert_int_equal(seglog_append(log, two, 2, &msg), MRD_EINVAL);
    assert_int_equal(seglog_lsn_last(log), 5);
    test_sync_ok(log);
    assert_int_equal(seglog_lsn_durable(log), 5);
    seglog_close(log);
    seglog_fake_free(fake);
}

static void bad_options_are_refused(void **state)
{
    seglog_fake *fake = seglog_fake_new(4);
    int rc;
    assert_null(test_open_opts(fake, 1024, 1024, NULL, &rc)); /* no room for the header */
    assert_int_equal(rc, MRD_EINVAL);
    assert_null(test_open_opts(fake, 4096, 16, NULL, &rc)); /* batch too small */
    assert_int_equal(rc, MRD_EINVAL);
    seglog_fake_free(fake);
}

/* Writes LSNs 1..n in batches of batch entries, each synced. */
static void fill(seglog *log, uint64_t first, uint64_t n, uint64_t batch)
{
    for (uint64_t l = first; l < first + n; l += batch) {
        uint64_t last = l + batch - 1 < first + n - 1 ? l + batch - 1 : first + n - 1;
        assert_int_equal(test_append_range(log, l, last), 0);
        test_sync_ok(log);
    }
}

static void rollover_keeps_files_within_limit(void **state)
{
    seglog_fake *fake = seglog_fake_new(5);
    seglog *log = test_open(fake, NULL);
    fill(log, 1, 300, 4);
    assert_true(seglog_file_count(log) > 5);
    uint64_t files = seglog_file_count(log);
    seglog_close(log);
    seglog_recovery rep;
    log = test_open(fake, &rep);
    assert_int_equal(rep.files, files);
    assert_int_equal(rep.entries, 300);
    assert_int_equal(test_check_log(log, 0), 300);
    assert_int_equal(test_check_log(log, 250), 300);
    mrd_buf b;
    mrd_buf_init(&b);
    for (uint64_t s = 1; s <= files; s++) {
        char path[64];
        snprintf(path, sizeof(path), TEST_DIR "/seg-%016llx.log", (unsigned long long)s);
        assert_int_equal(seglog_fake_get(fake, path, &b), 0);
        assert_true(b.len <= 4096 && b.len > SEGLOG_FILE_HEADER_BYTES);
    }
    mrd_buf_free(&b);
    seglog_close(log);
    seglog_fake_free(fake);
}

/* Offsets of the frames of a file's bytes. */
static size_t frame_offsets(const mrd_buf *b, uint64_t *offs, size_t max)
{
    size_t n = 0, off = SEGLOG_FILE_HEADER_BYTES;
    while (off < b->len && n < max) {
        offs[n++] = off;
        uint32_t len = b->data[off] | b->data[off + 1] << 8 | b->data[off + 2] << 16 |
                       (uint32_t)b->data[off + 3] << 24;
        off += SEGLOG_FRAME_HEADER_BYTES + len;
    }
    assert_int_equal(off, b->len);
    return n;
}

/* A log of two files; returns the path and bytes of the last one and its first LSN. */
static seglog_fake *two_file_log(char *path, mrd_buf *last, uint64_t *lsn_first_last)
{
    seglog_fake *fake = seglog_fake_new(6);
    seglog *log = test_open(fake, NULL);
    fill(log, 1, 60, 3);
    uint64_t files = seglog_file_count(log);
    assert_true(files >= 2);
    seglog_close(log);
    sprintf(path, TEST_DIR "/seg-%016llx.log", (unsigned long long)files);
    assert_int_equal(seglog_fake_get(fake, path, last), 0);
    uint64_t offs[256];
    size_t n = frame_offsets(last, offs, 256);
    *lsn_first_last = 60 - n + 1;
    return fake;
}

/* Frames of the last file and how many complete ones lie before offset cut. */
static uint64_t complete_before(const mrd_buf *b, size_t cut)
{
    uint64_t offs[256];
    size_t n = frame_offsets(b, offs, 256);
    uint64_t whole = 0;
    for (size_t i = 0; i < n; i++) {
        size_t end = i + 1 < n ? offs[i + 1] : b->len;
        if (end <= cut) whole++;
    }
    return whole;
}

static void recovery_after_cut_at_every_offset(void **state)
{
    char path[64];
    mrd_buf last;
    mrd_buf_init(&last);
    uint64_t first;
    seglog_fake *fake = two_file_log(path, &last, &first);
    uint64_t offs[256];
    size_t n = frame_offsets(&last, offs, 256);
    assert_true(n >= LAST_FRAMES);
    for (size_t cut = offs[n - LAST_FRAMES]; cut <= last.len; cut++) {
        assert_int_equal(seglog_fake_put(fake, path, last.data, cut), 0);
        seglog_recovery rep;
        seglog *log = test_open(fake, &rep);
        uint64_t whole = complete_before(&last, cut);
        bool boundary = cut == last.len || cut == offs[whole];
        assert_int_equal(rep.truncated, !boundary);
        if (!boundary) assert_int_equal(rep.tail_offset, offs[whole]);
        if (!boundary) assert_int_equal(rep.tail_bytes, cut - offs[whole]);
        assert_int_equal(test_check_log(log, 0), first - 1 + whole);
        seglog_close(log);
        log = test_open(fake, &rep); /* recovery is idempotent */
        assert_false(rep.truncated);
        assert_int_equal(rep.lsn_last, first - 1 + whole);
        seglog_close(log);
    }
    /* A last file cut inside its header was never completely created: it goes. */
    for (size_t cut = 0; cut < SEGLOG_FILE_HEADER_BYTES; cut++) {
        assert_int_equal(seglog_fake_put(fake, path, last.data, cut), 0);
        seglog_recovery rep;
        seglog *log = test_open(fake, &rep);
        assert_true(rep.truncated && rep.file_removed);
        assert_int_equal(test_check_log(log, 0), first - 1);
        seglog_close(log);
    }
    mrd_buf_free(&last);
    seglog_fake_free(fake);
}

static void recovery_after_flipping_each_tail_byte(void **state)
{
    char path[64];
    mrd_buf last;
    mrd_buf_init(&last);
    uint64_t first;
    seglog_fake *fake = two_file_log(path, &last, &first);
    uint64_t offs[256];
    size_t n = frame_offsets(&last, offs, 256);
    for (size_t at = offs[n - LAST_FRAMES]; at < last.len; at++) {
        for (int bit = 0; bit < 8; bit += 3) {
            last.data[at] ^= (uint8_t)(1u << bit);
            assert_int_equal(seglog_fake_put(fake, path, last.data, last.len), 0);
            last.data[at] ^= (uint8_t)(1u << bit);
            seglog_recovery rep;
            seglog *log = test_open(fake, &rep);
            uint64_t whole = complete_before(&last, at);
            assert_true(rep.truncated);
            assert_int_equal(rep.tail_offset, offs[whole]);
            assert_int_equal(test_check_log(log, 0), first - 1 + whole);
            /* The log goes on after the cut. */
            assert_int_equal(test_append_range(log, first + whole, first + whole), 0);
            test_sync_ok(log);
            seglog_close(log);
        }
    }
    mrd_buf_free(&last);
    seglog_fake_free(fake);
}

static void corruption_in_an_older_file_is_an_error(void **state)
{
    seglog_fake *fake = seglog_fake_new(7);
    seglog *log = test_open(fake, NULL);
    fill(log, 1, 200, 3);
    assert_true(seglog_file_count(log) >= 4);
    seglog_close(log);
    const char *path = TEST_DIR "/seg-0000000000000001.log";
    mrd_buf b;
    mrd_buf_init(&b);
    assert_int_equal(seglog_fake_get(fake, path, &b), 0);
    b.data[b.len - 3] ^= 0x40;
    assert_int_equal(seglog_fake_put(fake, path, b.data, b.len), 0);
    int rc;
    seglog_options o = {.io = seglog_fake_io(fake),
                        .dir = TEST_DIR,
                        .file_bytes_max = 4096,
                        .batch_bytes_max = 1024};
    mrd_msg msg;
    assert_int_equal(seglog_open(&o, &log, NULL, &msg), MRD_ECRC);
    assert_non_null(strstr(msg.text, "seg-0000000000000001.log: offset "));
    /* A header damaged in an older file, or a missing file, also stops the open. */
    b.data[b.len - 3] ^= 0x40;
    b.data[3] ^= 1;
    assert_int_equal(seglog_fake_put(fake, path, b.data, b.len), 0);
    assert_int_equal(seglog_open(&o, &log, NULL, &msg), MRD_EPARSE);
    assert_int_equal(seglog_fake_io(fake)->unlink(seglog_fake_io(fake), path), 0);
    log = test_open_opts(fake, 4096, 1024, NULL, &rc);
    assert_int_equal(rc, 0); /* the first file gone is the log's start moving (no gap) */
    seglog_close(log);
    assert_int_equal(
        seglog_fake_io(fake)->unlink(seglog_fake_io(fake), TEST_DIR "/seg-0000000000000003.log"),
        0);
    assert_null(test_open_opts(fake, 4096, 1024, NULL, &rc));
    assert_int_equal(rc, MRD_EPARSE);
    mrd_buf_free(&b);
    seglog_fake_free(fake);
}

static void fdatasync_failure_fails_the_log(void **state)
{
    seglog_fake *fake = seglog_fake_new(8);
    seglog *log = test_open(fake, NULL);
    fill(log, 1, 10, 5);
    assert_int_equal(test_append_range(log, 11, 15), 0);
    seglog_fake_fail(fake, SEGLOG_OP_FDATASYNC, 1, EIO);
    mrd_msg msg;
    assert_int_equal(seglog_sync(log, &msg), MRD_EIO);
    assert_non_null(strstr(msg.text, "fdatasync"));
    assert_true(seglog_failed(log));
    assert_int_equal(seglog_lsn_durable(log), 10);
    /* A retry must not be able to report success (fsyncgate). */
    assert_int_equal(seglog_sync(log, &msg), MRD_ESTATE);
    assert_int_equal(test_append_range(log, 16, 16), MRD_ESTATE);
    assert_int_equal(seglog_truncate_after(log, 5, &msg), MRD_ESTATE);
    assert_int_equal(seglog_sync_prepare(log), MRD_ESTATE);
    seglog_close(log);
    seglog_fake_crash(fake, SEGLOG_CRASH_DROP);
    log = test_open(fake, NULL);
    assert_int_equal(test_check_log(log, 0), 10);
    seglog_close(log);
    seglog_fake_free(fake);
}

/* Bytes that LSNs first..last take as frames. */
static size_t frames_bytes(uint64_t first, uint64_t last)
{
    uint8_t buf[TEST_PAYLOAD_MAX];
    size_t total = 0;
    for (uint64_t l = first; l <= last; l++)
        total += SEGLOG_FRAME_HEADER_BYTES + test_payload(l, buf);
    return total;
}

static void fdatasync_failure_on_rollover_fails_the_log(void **state)
{
    seglog_fake *fake = seglog_fake_new(9);
    seglog *log = test_open(fake, NULL);
    mrd_buf b;
    mrd_buf_init(&b);
    uint64_t lsn = 0;
    for (;;) {
        assert_int_equal(seglog_fake_get(fake, TEST_DIR "/seg-0000000000000001.log", &b), 0);
        if (b.len + frames_bytes(lsn + 1, lsn + 4) > 4096) break;
        fill(log, lsn + 1, 4, 4);
        lsn += 4;
    }
    /* The next batch opens file 2: fail its fdatasync. */
    assert_int_equal(test_append_range(log, lsn + 1, lsn + 4), 0);
    seglog_fake_fail(fake, SEGLOG_OP_FDATASYNC, 1, EIO);
    mrd_msg msg;
    assert_int_equal(seglog_sync(log, &msg), MRD_EIO);
    assert_non_null(strstr(msg.text, "seg-0000000000000002.log: fdatasync failed"));
    assert_true(seglog_failed(log));
    assert_int_equal(seglog_file_count(log), 1);
    seglog_close(log);
    seglog_fake_crash(fake, SEGLOG_CRASH_RANDOM);
    log = test_open(fake, NULL);
    uint64_t last = test_check_log(log, 0);
    assert_true(last == lsn || last == lsn + 4);
    seglog_close(log);
    mrd_buf_free(&b);
    seglog_fake_free(fake);
}

static void enospc_is_a_clear_error_and_loses_nothing(void **state)
{
    seglog_fake *fake = seglog_fake_new(10);
    seglog *log = test_open(fake, NULL);
    mrd_msg msg;
    uint64_t lsn = 0;
    for (int round = 0; round < 200; round++) {
        uint64_t n = 1 + round % 5;
        assert_int_equal(test_append_range(log, lsn + 1, lsn + n), 0);
        if (round % 3 == 0) {
            seglog_fake_fail(fake, SEGLOG_OP_PWRITE, 1, ENOSPC);
            assert_int_equal(seglog_sync(log, &msg), MRD_EIO);
            assert_non_null(strstr(msg.text, "No space left on device"));
            assert_false(seglog_failed(log));
            assert_int_equal(seglog_lsn_durable(log), lsn);
            assert_int_equal(seglog_lsn_last(log), lsn); /* the batch was dropped whole */
            assert_int_equal(test_append_range(log, lsn + 1, lsn + n), 0);
        }
        test_sync_ok(log);
        lsn += n;
        assert_int_equal(seglog_lsn_durable(log), lsn);
    }
    assert_true(seglog_file_count(log) > 2); /* failures hit rollovers too */
    seglog_close(log);
    seglog_fake_crash(fake, SEGLOG_CRASH_TEAR);
    seglog_recovery rep;
    log = test_open(fake, &rep);
    assert_int_equal(test_check_log(log, 0), lsn);
    seglog_close(log);
    seglog_fake_free(fake);
}

static void group_commit_in_three_steps(void **state)
{
    seglog_fake *fake = seglog_fake_new(11);
    seglog *log = test_open(fake, NULL);
    mrd_msg msg;
    assert_int_equal(seglog_sync_prepare(log), 0); /* nothing staged */
    assert_int_equal(test_append_range(log, 1, 4), 0);
    uint64_t calls = seglog_fake_calls(fake);
    assert_int_equal(seglog_sync_prepare(log), 1);
    /* While in flight: the loop may stage the next batch and nothing else. */
    assert_int_equal(test_append_range(log, 5, 6), 0);
    assert_int_equal(seglog_sync_prepare(log), MRD_EBUSY);
    assert_int_equal(seglog_sync(log, &msg), MRD_EBUSY);
    seglog_iter *it;
    assert_int_equal(seglog_iter_open(log, 0, &it, &msg), MRD_EBUSY);
    assert_int_equal(seglog_truncate_after(log, 1, &msg), MRD_EBUSY);
    assert_int_equal(seglog_fake_calls(fake), calls); /* prepare does no I/O */
    seglog_sync_run(log);
    assert_int_equal(seglog_fake_calls(fake), calls + 2); /* one write, one fdatasync */
    assert_int_equal(seglog_lsn_durable(log), 0);         /* not published before complete */
    assert_int_equal(seglog_sync_complete(log, &msg), 0);
    assert_int_equal(seglog_lsn_durable(log), 4);
    assert_int_equal(seglog_lsn_last(log), 6);
    test_sync_ok(log);
    assert_int_equal(test_check_log(log, 0), 6);
    seglog_close(log);
    seglog_fake_free(fake);
}

static void iterator_sees_new_entries_and_blocks_truncation(void **state)
{
    seglog_fake *fake = seglog_fake_new(12);
    seglog *log = test_open(fake, NULL);
    mrd_msg msg;
    fill(log, 1, 3, 3);
    seglog_iter *it;
    seglog_entry e;
    assert_int_equal(seglog_iter_open(log, 0, &it, &msg), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(seglog_iter_next(it, &e, &msg), 1);
    assert_int_equal(seglog_iter_next(it, &e, &msg), 0);
    assert_int_equal(seglog_truncate_after(log, 1, &msg), MRD_EBUSY);
    fill(log, 4, 100, 5); /* across a rollover */
    for (uint64_t l = 4; l <= 103; l++) {
        assert_int_equal(seglog_iter_next(it, &e, &msg), 1);
        assert_int_equal(e.lsn, l);
    }
    assert_int_equal(seglog_iter_next(it, &e, &msg), 0);
    seglog_iter_close(it);
    seglog_close(log);
    seglog_fake_free(fake);
}

static void truncate_after_drops_the_tail_durably(void **state)
{
    seglog_fake *fake = seglog_fake_new(13);
    seglog *log = test_open(fake, NULL);
    mrd_msg msg;
    fill(log, 1, 200, 4);
    uint64_t files = seglog_file_count(log);
    assert_true(files >= 4);
    assert_int_equal(test_append_range(log, 201, 203), 0); /* staged: dropped too */
    assert_int_equal(seglog_truncate_after(log, 57, &msg), 0);
    assert_int_equal(seglog_lsn_durable(log), 57);
    assert_int_equal(seglog_lsn_last(log), 57);
    assert_true(seglog_file_count(log) < files);
    assert_int_equal(test_check_log(log, 0), 57);
    seglog_close(log);
    seglog_fake_crash(fake, SEGLOG_CRASH_DROP);
    log = test_open(fake, NULL);
    assert_int_equal(test_check_log(log, 0), 57);
    /* The log continues after the cut, with new entries where the old tail was. */
    fill(log, 58, 40, 4);
    assert_int_equal(seglog_truncate_after(log, 1000, &msg), 0); /* above: no change */
    assert_int_equal(seglog_truncate_after(log, 0, &msg), 0);    /* everything */
    assert_int_equal(seglog_lsn_durable(log), 0);
    assert_int_equal(seglog_file_count(log), 1);
    fill(log, 1, 10, 2);
    seglog_close(log);
    seglog_fake_crash(fake, SEGLOG_CRASH_TEAR);
    log = test_open(fake, NULL);
    assert_int_equal(test_check_log(log, 0), 10);
    seglog_close(log);
    seglog_fake_free(fake);
}

/* A power cut at every call of a truncation leaves a prefix; running it again finishes. */
static void truncate_after_survives_a_crash_at_every_step(void **state)
{
    for (uint64_t cut = 0;; cut++) {
        seglog_fake *fake = seglog_fake_new(100 + cut);
        seglog *log = test_open(fake, NULL);
        mrd_msg msg;
        fill(log, 1, 150, 5);
        seglog_fake_power_cut(fake, cut);
        int rc = seglog_truncate_after(log, 33, &msg);
        seglog_close(log);
        seglog_fake_crash(fake, SEGLOG_CRASH_RANDOM);
        log = test_open(fake, NULL);
        uint64_t last = test_check_log(log, 0);
        assert_true(last >= 33 && last <= 150);
        if (rc == 0) assert_int_equal(last, 33);
        assert_int_equal(seglog_truncate_after(log, 33, &msg), 0);
        assert_int_equal(test_check_log(log, 0), 33);
        seglog_close(log);
        seglog_fake_free(fake);
        if (rc == 0) break;
    }
}

/* The real POSIX implementation, in a temporary folder. */
static void posix_round_trip(void **state)
{
    char dir[] = "/tmp/mrd-seglog-XXXXXX";
    assert_non_null(mkdtemp(dir));
    seglog_io io;
    seglog_io_posix_init(&io);
    seglog_options o = {.io = &io, .dir = dir, .file_bytes_max = 4096, .batch_bytes_max = 1024};
    seglog *log;
    mrd_msg msg;
    assert_int_equal(seglog_open(&o, &log, NULL, &msg), 0);
    fill(log, 1, 100, 4);
    assert_true(seglog_file_count(log) > 1);
    assert_int_equal(seglog_truncate_after(log, 90, &msg), 0);
    seglog_close(log);
    seglog_recovery rep;
    assert_int_equal(seglog_open(&o, &log, &rep, &msg), 0);
    assert_int_equal(rep.entries, 90);
    assert_int_equal(test_check_log(log, 0), 90);
    uint64_t files = seglog_file_count(log);
    seglog_close(log);
    for (uint64_t s = 1; s <= files; s++) {
        char path[128];
        snprintf(path, sizeof(path), "%s/seg-%016llx.log", dir, (unsigned long long)s);
        assert_int_equal(unlink(path), 0);
    }
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip),
        cmocka_unit_test(unsynced_entries_are_lost_at_crash),
        cmocka_unit_test(append_rejects_bad_entries),
        cmocka_unit_test(bad_options_are_refused),
        cmocka_unit_test(rollover_keeps_files_within_limit),
        cmocka_unit_test(recovery_after_cut_at_every_offset),
        cmocka_unit_test(recovery_after_flipping_each_tail_byte),
        cmocka_unit_test(corruption_in_an_older_file_is_an_error),
        cmocka_unit_test(fdatasync_failure_fails_the_log),
        cmocka_unit_test(fdatasync_failure_on_rollover_fails_the_log),
        cmocka_unit_test(enospc_is_a_clear_error_and_loses_nothing),
        cmocka_unit_test(group_commit_in_three_steps),
        cmocka_unit_test(iterator_sees_new_entries_and_blocks_truncation),
        cmocka_unit_test(truncate_after_drops_the_tail_durably),
        cmocka_unit_test(truncate_after_survives_a_crash_at_every_step),
        cmocka_unit_test(posix_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
