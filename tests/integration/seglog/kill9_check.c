/*
 * Opens (recovers) the log in argv[1] and checks it: LSNs 1..n with no gap,
 * every payload the one its LSN implies, and n >= argv[2], the highest LSN the
 * writer had acknowledged. Prints one summary line; exit 0 when all holds.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kill9_content.h"
#include "meridian/seglog.h"

static int check_entries(seglog *log, uint64_t *count, mrd_msg *msg)
{
    static uint8_t want[KILL9_PAYLOAD_MAX];
    seglog_iter *it;
    if (seglog_iter_open(log, 0, &it, msg) != 0) return -1;
    seglog_entry e;
    int rc;
    uint64_t n = 0;
    while ((rc = seglog_iter_next(it, &e, msg)) == 1) {
        size_t len = kill9_payload(e.lsn, want);
        if (e.lsn != n + 1 || e.len != len || memcmp(e.data, want, len) != 0) {
            snprintf(msg->text, sizeof(msg->text), "lsn %" PRIu64 " after %" PRIu64 ": wrong",
                     e.lsn, n);
            rc = -1;
            break;
        }
        n++;
    }
    seglog_iter_close(it);
    *count = n;
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s DIR ACKED_LSN\n", argv[0]);
        return 2;
    }
    uint64_t acked = strtoull(argv[2], NULL, 10);
    seglog_io io;
    seglog_io_posix_init(&io);
    seglog_options o = {.io = &io,
                        .dir = argv[1],
                        .file_bytes_max = KILL9_FILE_BYTES_MAX,
                        .batch_bytes_max = KILL9_BATCH_BYTES_MAX};
    seglog *log;
    seglog_recovery rep;
    mrd_msg msg;
    if (seglog_open(&o, &log, &rep, &msg) != 0) {
        fprintf(stderr, "check: open: %s\n", msg.text);
        return 1;
    }
    uint64_t n = 0;
    int rc = check_entries(log, &n, &msg);
    seglog_close(log);
    if (rc != 0) {
        fprintf(stderr, "check: %s\n", msg.text);
        return 1;
    }
    printf("check: entries=%" PRIu64 " acked=%" PRIu64 " files=%" PRIu64 " cut_bytes=%" PRIu64 "\n",
           n, acked, rep.files, rep.tail_bytes);
    if (n < acked) {
        fprintf(stderr, "check: acknowledged lsn %" PRIu64 " lost\n", acked);
        return 1;
    }
    return 0;
}
