/*
 * Appends entries (LSN 1, 2, ... continuing after what recovery found) in
 * random batches to the log in argv[1], forever, and after every successful
 * sync writes the durable LSN as one line to stdout. Meant to be killed.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kill9_content.h"
#include "meridian/seglog.h"

#define KILL9_BATCH_ENTRIES_MAX 16

static int write_all(int fd, const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, s, len);
        if (n <= 0) return -1;
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

static int append_batch(seglog *log, uint64_t *state, mrd_msg *msg)
{
    static uint8_t bufs[KILL9_BATCH_ENTRIES_MAX][KILL9_PAYLOAD_MAX];
    seglog_entry e[KILL9_BATCH_ENTRIES_MAX];
    *state = kill9_mix(*state);
    size_t n = 1 + (size_t)(*state % KILL9_BATCH_ENTRIES_MAX);
    uint64_t lsn = seglog_lsn_last(log);
    for (size_t i = 0; i < n; i++) {
        e[i].lsn = lsn + 1 + i;
        e[i].len = kill9_payload(e[i].lsn, bufs[i]);
        e[i].data = bufs[i];
    }
    return seglog_append(log, e, n, msg);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    seglog_io io;
    seglog_io_posix_init(&io);
    seglog_options o = {.io = &io,
                        .dir = argv[1],
                        .file_bytes_max = KILL9_FILE_BYTES_MAX,
                        .batch_bytes_max = KILL9_BATCH_BYTES_MAX};
    seglog *log;
    mrd_msg msg;
    if (seglog_open(&o, &log, NULL, &msg) != 0) {
        fprintf(stderr, "writer: open: %s\n", msg.text);
        return 1;
    }
    uint64_t state = (uint64_t)getpid();
    for (;;) {
        if (append_batch(log, &state, &msg) != 0 || seglog_sync(log, &msg) != 0) {
            fprintf(stderr, "writer: %s\n", msg.text);
            return 1;
        }
        char line[32];
        int len = snprintf(line, sizeof(line), "%" PRIu64 "\n", seglog_lsn_durable(log));
        if (write_all(1, line, (size_t)len) != 0) return 1;
    }
}
