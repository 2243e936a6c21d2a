/*
 * common: what every Meridian module shares and nothing more.
 *
 * Errors are negative integers from one enum (`mrd_err`), named by
 * mrd_strerror(); functions return 0 or such an error and carry results in
 * out-parameters. Where an error crosses to a user it also carries a human
 * message (`mrd_msg`), which names what and where ("topology.yaml:12: ...").
 *
 * Logging is structured: one event per line, key=value pairs, written to
 * stderr (a daemon's stderr is its log file). No global mutable state beyond
 * the log's identity, which main() sets once before anything else runs.
 */
#ifndef MERIDIAN_COMMON_H
#define MERIDIAN_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define MRD_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define mrd_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Every error Meridian returns. Values are negative; 0 is success. */
#define MRD_ERRORS(X)                                                                              \
    X(MRD_EINVAL, -1, "invalid argument")                                                          \
    X(MRD_ENOMEM, -2, "out of memory")                                                             \
    X(MRD_EIO, -3, "i/o error")                                                                    \
    X(MRD_EPARSE, -4, "malformed input")                                                           \
    X(MRD_ECRC, -5, "checksum mismatch")                                                           \
    X(MRD_ETOOBIG, -6, "exceeds a limit")                                                          \
    X(MRD_ETRUNC, -7, "truncated input")                                                           \
    X(MRD_EVERSION, -8, "unsupported version")                                                     \
    X(MRD_ENOTFOUND, -9, "not found")                                                              \
    X(MRD_EEXIST, -10, "already exists")                                                           \
    X(MRD_ECONN, -11, "connection failed")                                                         \
    X(MRD_ECLOSED, -12, "closed")                                                                  \
    X(MRD_ETLS, -13, "tls failure")                                                                \
    X(MRD_EPROTO, -14, "protocol error")                                                           \
    X(MRD_ETIMEDOUT, -15, "timed out")                                                             \
    X(MRD_ESTALE, -16, "stale epoch")                                                              \
    X(MRD_EBUSY, -17, "busy")                                                                      \
    X(MRD_ESTATE, -18, "wrong state")

typedef enum {
    MRD_OK = 0,
#define MRD_ERR_ENUM(name, value, text) name = value,
    MRD_ERRORS(MRD_ERR_ENUM)
#undef MRD_ERR_ENUM
} mrd_err;

/* Short English text for an error code ("checksum mismatch"). */
const char *mrd_strerror(int err);
/* The enum's name for an error code ("MRD_ECRC"), for logs and JSON. */
const char *mrd_errname(int err);

/* A human message that travels with an error to a user. */
#define MRD_MSG_MAX 512
typedef struct {
    char text[MRD_MSG_MAX];
} mrd_msg;

/* Formats into msg (if not NULL) and returns err, for `return mrd_fail(...)`. */
int mrd_fail(mrd_msg *msg, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- structured log ------------------------------------------------------------------- */

typedef enum { MRD_LOG_DEBUG, MRD_LOG_INFO, MRD_LOG_WARN, MRD_LOG_ERROR } mrd_log_level;

/* Sets the node id every log line carries; call once from main(). */
void mrd_log_init(const char *node_id, mrd_log_level min_level);

/*
 * Writes one line: `ts=2026-11-26T12:00:00.123Z level=info node=s1 event=EVENT k=v ...`.
 * fmt formats the key=value tail; values with spaces must be quoted by the caller
 * (mrd_log_quote helps).
 */
void mrd_log(mrd_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define MRD_DEBUG(event, ...) mrd_log(MRD_LOG_DEBUG, event, __VA_ARGS__)
#define MRD_INFO(event, ...) mrd_log(MRD_LOG_INFO, event, __VA_ARGS__)
#define MRD_WARN(event, ...) mrd_log(MRD_LOG_WARN, event, __VA_ARGS__)
#define MRD_ERROR(event, ...) mrd_log(MRD_LOG_ERROR, event, __VA_ARGS__)

/* ---- time ----------------------------------------------------------------------------- */

/* Monotonic clock in nanoseconds / milliseconds. */
uint64_t mrd_now_ns(void);
uint64_t mrd_now_ms(void);
/* Wall clock, milliseconds since the epoch (only for logs and human output). */
uint64_t mrd_wall_ms(void);

/* ---- files ---------------------------------------------------------------------------- */

/* Reads a whole file (at most max_bytes) into a malloc'd, NUL-terminated buffer. */
int mrd_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len, mrd_msg *msg);

/*
 * Replaces path atomically and durably with data: writes path.tmp, fdatasync,
 * rename over path, fsync of the containing folder.
 */
int mrd_write_file_atomic(const char *path, const void *data, size_t len, mrd_msg *msg);

/* mkdir -p. */
int mrd_mkdirs(const char *path, mrd_msg *msg);

/* ---- CRC32C (Castagnoli) --------------------------------------------------------------- */

/* Extends crc over data; start from 0. Uses SSE4.2 where the CPU has it. */
uint32_t mrd_crc32c(uint32_t crc, const void *data, size_t len);

/* ---- growable byte buffer --------------------------------------------------------------- */

typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} mrd_buf;

void mrd_buf_init(mrd_buf *b);
void mrd_buf_free(mrd_buf *b);
int mrd_buf_reserve(mrd_buf *b, size_t extra);
int mrd_buf_append(mrd_buf *b, const void *data, size_t len);
int mrd_buf_printf(mrd_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes. */
void mrd_buf_consume(mrd_buf *b, size_t n);

/* Appends s as a JSON string (quoted, escaped; control bytes as \u00XX) to out. */
int mrd_json_quote(mrd_buf *out, const char *s);

#endif
