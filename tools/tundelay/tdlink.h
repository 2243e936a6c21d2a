/*
 * tdlink: the part of tundelay that touches no device, clock or signal: what it does
 * with a packet read from the network (classify, count, hold or drop), when a held
 * packet is due, and what the control file's text means. tundelay.c reads the TUN
 * device, takes the time and writes packets back; it calls in here for everything
 * else, and tests/fuzz/tundelay drives the same code with bytes of its choosing.
 *
 * A link owns the packets it holds. It guarantees:
 *  - a direction (the order of a packet's two addresses) is a FIFO whose due times
 *    never decrease: a packet is never due before the one read ahead of it;
 *  - at most TD_HELD_PACKETS_MAX packets and TD_HELD_BYTES_MAX bytes held per
 *    direction; beyond, the packet read is dropped (tail drop) and counted;
 *  - every packet read is counted once, and ends up counted exactly once more:
 *    written, a write error, dropped (blackhole, overflow, malformed) or still held:
 *      read == written + write_errors + dropped_* + held.
 */
#ifndef TD_LINK_H
#define TD_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TD_DELAY_MS_MAX 60000u        /* one way */
#define TD_HELD_PACKETS_MAX 65536u    /* per direction: beyond, tail drop */
#define TD_HELD_BYTES_MAX (64u << 20) /* per direction: beyond, tail drop */
#define TD_PACKET_BYTES_MAX 65535u    /* an IPv4 packet's largest total length */
#define TD_CONTROL_BYTES_MAX 256u     /* the control file's text */

typedef struct td_packet {
    struct td_packet *next;
    uint64_t due_ns;
    size_t len;
    uint8_t data[];
} td_packet;

/* One direction's packets, in the order they were read; due times never decrease. */
typedef struct {
    td_packet *head, *tail;
    size_t count, bytes;
    uint64_t last_due_ns;
} td_queue;

typedef struct {
    uint64_t read, written, dropped_blackhole, dropped_overflow, dropped_malformed, write_errors;
} td_counters;

typedef struct {
    uint64_t delay_ns, jitter_ns;
    uint64_t rng; /* xorshift64* state; never 0 */
    bool blackhole;
    td_queue q[2];
    td_counters n;
} td_link;

/* Writes one packet out; 0 when it was written whole. */
typedef int (*td_write_fn)(void *ctx, const uint8_t *p, size_t len);

/* An empty link with that delay and jitter; a seed of 0 counts as 1. */
void td_link_init(td_link *td, uint64_t delay_ns, uint64_t jitter_ns, uint64_t seed);

/* Frees every packet held, uncounted (the link stops). */
void td_link_close(td_link *td);

/* Cuts the link (every packet held is dropped, counted, and so is every packet read
 * until it heals), or heals it. */
void td_link_blackhole(td_link *td, bool on);

/* delay + a uniform offset in [-jitter, +jitter], never below zero. */
uint64_t td_hold_ns(td_link *td);

/* 0 or 1 by the order of the packet's addresses; -1 for what is not IPv4 (at least
 * 20 bytes) or IPv6 (at least 40 bytes). */
int td_direction(const uint8_t *p, size_t len);

/* Frees every packet of q, adding their number to *dropped unless it is NULL. */
void td_queue_drop_all(td_queue *q, uint64_t *dropped);

/* One packet read at now_ns: counted, then dropped or held until it is due. */
void td_enqueue(td_link *td, const uint8_t *data, size_t len, uint64_t now_ns);

/* Writes every packet due at now_ns, in order; returns the earliest due time left,
 * or 0 when nothing is held. */
uint64_t td_flush(td_link *td, uint64_t now_ns, td_write_fn write, void *ctx);

/* A whole number of milliseconds (decimal digits, no sign), at most TD_DELAY_MS_MAX,
 * after optional whitespace (space, tab, newline); *end is where it stopped. 0 or
 * MRD_EINVAL. */
int td_parse_ms(const char *text, uint64_t *out, const char **end);

/* The control file: "DELAY_MS JITTER_MS", whitespace around and between. 0 or
 * MRD_EINVAL, and then the outputs are untouched. */
int td_parse_delay(const char *text, uint64_t *delay_ms, uint64_t *jitter_ms);

#endif
