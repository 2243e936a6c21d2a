/* seglog's private types and helpers, shared by its source files only. */
#ifndef MERIDIAN_SEGLOG_INT_H
#define MERIDIAN_SEGLOG_INT_H

#include <assert.h>
#include <string.h>

#include "meridian/seglog.h"

#define SEGLOG_NAME_PREFIX "seg-"
#define SEGLOG_NAME_SUFFIX ".log"
#define SEGLOG_NAME_HEX 16
#define SEGLOG_NAME_LEN (4 + SEGLOG_NAME_HEX + 4)
#define SEGLOG_READ_CHUNK (64u * 1024) /* bytes a reader fetches at once */

/* ---- little-endian fields ----------------------------------------------------------- */

static inline void seglog_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void seglog_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t seglog_get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline uint64_t seglog_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* ---- format (format.c) -------------------------------------------------------------- */

typedef struct {
    uint32_t len;
    uint32_t crc;
    uint64_t lsn;
} seglog_frame_head;

void seglog_header_encode(uint8_t out[SEGLOG_FILE_HEADER_BYTES], uint64_t seq);
/* 0, or MRD_EPARSE / MRD_ECRC / MRD_EVERSION with a message about the header. */
int seglog_header_decode(const uint8_t in[SEGLOG_FILE_HEADER_BYTES], uint64_t *seq,
                         const char **why);
bool seglog_header_is_zero(const uint8_t *in, size_t len);

uint32_t seglog_frame_crc(uint32_t len, uint64_t lsn, const uint8_t *payload);
/* Appends one encoded frame to buf. */
int seglog_frame_encode(mrd_buf *buf, uint64_t lsn, const uint8_t *payload, uint32_t len);
void seglog_frame_head_decode(const uint8_t in[SEGLOG_FRAME_HEADER_BYTES], seglog_frame_head *h);

/* "seg-%016x.log" for seq; parse returns false for any other name. */
void seglog_file_name(char out[SEGLOG_NAME_LEN + 1], uint64_t seq);
bool seglog_file_name_parse(const char *name, uint64_t *seq);

/* ---- buffered reader (format.c) ----------------------------------------------------- */

/* Reads a file of known size through a window, so small frames cost no syscall each. */
typedef struct {
    seglog_io *io;
    int fd;
    uint64_t size;
    mrd_buf win;
    uint64_t win_off;
} seglog_reader;

void seglog_reader_init(seglog_reader *r, seglog_io *io, int fd, uint64_t size);
void seglog_reader_free(seglog_reader *r);
/* *out points at len bytes from off (off + len <= size), valid until the next call.
 * Returns 0 or a negative errno, like the vtable. */
int seglog_reader_get(seglog_reader *r, uint64_t off, size_t len, const uint8_t **out);

/* ---- scanning (scan.c) -------------------------------------------------------------- */

typedef struct {
    uint64_t end;       /* offset just past the last good frame */
    uint64_t entries;   /* good frames */
    uint64_t lsn_first; /* 0 when none */
    uint64_t lsn_last;  /* 0 when none */
    const char *tail;   /* why the scan stopped before the file's end; NULL if it did not */
} seglog_scan;

/*
 * Verifies frames from the header's end up to size, each LSN above lsn_prev,
 * stopping before the first frame whose LSN exceeds lsn_stop. A bad frame ends
 * the scan (s->tail says why); a good frame whose LSN goes back is MRD_EPARSE.
 */
int seglog_scan_file(seglog_reader *r, const char *path, uint64_t lsn_prev, uint64_t lsn_stop,
                     seglog_scan *s, mrd_msg *msg);

/* ---- the log ------------------------------------------------------------------------ */

typedef struct {
    uint64_t seq;
    uint64_t size; /* bytes written and durable */
    uint64_t entries;
    uint64_t lsn_first; /* 0 when the file holds no entry */
    uint64_t lsn_last;
} seglog_file;

/* The batch between prepare and complete. The worker writes rc, fatal, msg. */
typedef struct {
    bool active;
    mrd_buf frames;
    uint64_t count;
    uint64_t lsn_first;
    uint64_t lsn_last;
    int rc;
    bool fatal;
    mrd_msg msg;
} seglog_flight;

struct seglog {
    seglog_io *io;
    char dir[SEGLOG_PATH_MAX];
    uint64_t file_bytes_max;
    uint64_t batch_bytes_max;

    /* Disk state: the worker's while a batch is in flight, the loop's otherwise. */
    seglog_file *files;
    size_t file_count;
    size_t file_cap;
    int fd_last; /* read-write fd of files[file_count - 1] */

    seglog_flight flight;

    /* The loop's, always. */
    mrd_buf pending; /* encoded frames of the next batch */
    uint64_t pending_count;
    uint64_t pending_lsn_first;
    uint64_t pending_lsn_last;
    uint64_t lsn_durable;
    uint64_t lsn_last; /* highest LSN staged, in flight or durable */
    unsigned iters_open;
    bool failed;
};

/* dir + "/" + name of file seq. */
int seglog_path(const seglog *log, uint64_t seq, char out[SEGLOG_PATH_MAX]);
/* Turns a vtable error (-errno) into MRD_EIO with a message naming the call and the path. */
int seglog_io_err(mrd_msg *msg, int err, const char *what, const char *path);

/* sync.c */
int seglog_file_create(seglog *log, uint64_t seq, const void *frames, size_t len, int *fd_out,
                       bool *fatal, mrd_msg *msg);

#endif
