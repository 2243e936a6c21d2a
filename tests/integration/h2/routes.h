/*
 * Routes of the h2 test server, shared by h2_test_server and the in-process
 * tests (which also read the counters):
 *   GET  /v1/status          {"status":"ok","peer":CN|null}
 *   POST /echo               the body back (buffered)
 *   GET  /stream?bytes=N     N pattern bytes, streamed under back-pressure
 *   POST /sink               a streamed body, checked against the pattern;
 *                            answers {"bytes":N,"crc32c":C,"pattern_ok":B}
 *   POST /hold               parked until hold_release_at requests wait, then
 *                            each gets its body back (proves concurrency)
 */
#ifndef MERIDIAN_TEST_H2_ROUTES_H
#define MERIDIAN_TEST_H2_ROUTES_H

#include "meridian/h2.h"

/* A /stream producer writes while less than this is queued. */
#define ROUTES_STREAM_QUEUE_HIGH (256u * 1024)
#define ROUTES_STREAM_CHUNK_BYTES (64u * 1024)
#define ROUTES_HELD_MAX 1024

typedef struct {
    size_t open_reqs; /* requests between on_headers and on_close */
    size_t open_reqs_max;
    size_t closes;       /* on_close calls */
    size_t closes_error; /* ... with a non-zero error code */
    uint32_t last_close_code;
    /* /hold */
    size_t hold_release_at;
    h2_req *held[ROUTES_HELD_MAX];
    size_t nheld;
    /* /stream: the latest one */
    h2_req *stream_req;
    uint64_t stream_produced;
    /* /sink: the latest one */
    bool sink_start_paused;
    h2_req *sink_req;
    uint64_t sink_received;
} routes;

extern const h2_server_cbs routes_cbs; /* ud: a routes * */

/* The byte at offset i of every test pattern (position-dependent: order errors show). */
static inline uint8_t routes_pattern_byte(uint64_t i)
{
    return (uint8_t)(i ^ (i >> 8) ^ (i >> 16) ^ (i >> 24) ^ 0x5a);
}

void routes_pattern_fill(uint8_t *buf, uint64_t off, size_t len);

#endif
