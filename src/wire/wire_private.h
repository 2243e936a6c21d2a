/*
 * Inside the wire module: the bounded msgpack cursor every decoder reads
 * through, and the field lists that declare each message once.
 *
 * A message is a msgpack map whose first entry is key 0 = WIRE_VERSION and
 * whose other keys are dense (1..n) and listed in an X-macro:
 * X(key, member, type, required). From one list come the descriptor table
 * that the generic map codec (codec.c) walks to decode, encode and size a
 * message, a compile-time check that each member has the width its type
 * writes, and a check that keys are dense and in order.
 */
#ifndef MERIDIAN_WIRE_PRIVATE_H
#define MERIDIAN_WIRE_PRIVATE_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "meridian/common.h"
#include "meridian/wire.h"

/* ---- cursor ----------------------------------------------------------------------------- */

/*
 * Reads msgpack from [pos, end) and never past it. On failure a reader
 * returns MRD_ETRUNC / MRD_EPARSE / MRD_ETOOBIG, leaves pos where the bad
 * value starts and fills why/at for the caller's message.
 */
typedef struct {
    const uint8_t *base; /* start of the whole input: "at byte N" counts from here */
    const uint8_t *pos;
    const uint8_t *end;
    size_t at;    /* offset of the last failure */
    char why[96]; /* what went wrong there */
} wire_cur;

void wire_cur_init(wire_cur *c, const uint8_t *data, size_t len);
size_t wire_cur_offset(const wire_cur *c);
/* An unsigned integer (any width; non-negative signed forms too) no larger than max. */
int wire_cur_uint(wire_cur *c, uint64_t max, uint64_t *out);
/* A map header of at most max entries that the remaining bytes could hold. */
int wire_cur_map(wire_cur *c, uint32_t max, uint32_t *n);
/* An array header of at most max elements that the remaining bytes could hold. */
int wire_cur_array(wire_cur *c, uint32_t max, uint32_t *n);
/* A bin of at most max bytes, returned in place. */
int wire_cur_bin(wire_cur *c, uint32_t max, const uint8_t **data, uint32_t *len);

/* Prepends "prefix: " to msg's text (if msg is not NULL). */
void wire_msg_prefix(mrd_msg *msg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- fields ----------------------------------------------------------------------------- */

typedef enum {
    WIRE_FT_U32,     /* unsigned integer stored in a uint32_t */
    WIRE_FT_U64,     /* unsigned integer stored in a uint64_t */
    WIRE_FT_DELTAS,  /* record deltas: array of [offset, bin] */
    WIRE_FT_RECORDS, /* batch records: array of record maps */
} wire_ft;

#define WIRE_FT_SIZE_U32 4
#define WIRE_FT_SIZE_U64 8
#define WIRE_FT_SIZE_DELTAS sizeof(wire_delta[WIRE_DELTAS_MAX])
#define WIRE_FT_SIZE_RECORDS sizeof(const uint8_t *)

#define WIRE_REQUIRED 1
#define WIRE_OPTIONAL 0 /* encoded only when nonzero; 0 when absent */

typedef struct {
    uint8_t key;
    uint8_t type; /* wire_ft */
    uint8_t required;
    uint16_t offset; /* of the member in the message struct */
    const char *name;
} wire_field;

typedef struct {
    const char *what; /* "record", "batch" */
    const wire_field *fields;
    uint32_t count;
} wire_msg_desc;

/* Key 0 of every message. */
#define WIRE_KEY_VERSION 0u

#define WIRE_RECORD_FIELDS(X)                                                                      \
    X(1, lsn, U64, WIRE_REQUIRED)                                                                  \
    X(2, epoch, U64, WIRE_REQUIRED)                                                                \
    X(3, pg, U32, WIRE_REQUIRED)                                                                   \
    X(4, prev_lsn, U64, WIRE_REQUIRED)                                                             \
    X(5, page, U64, WIRE_REQUIRED)                                                                 \
    X(6, flags, U32, WIRE_REQUIRED)                                                                \
    X(7, deltas, DELTAS, WIRE_REQUIRED)                                                            \
    X(8, txn, U64, WIRE_OPTIONAL)                                                                  \
    X(9, vol_prev_lsn, U64, WIRE_OPTIONAL)

/* The batch header's fields; the records array comes last so a builder can stream it. */
#define WIRE_BATCH_FIELDS(X)                                                                       \
    X(1, kind, U32, WIRE_REQUIRED)                                                                 \
    X(2, lsn_first, U64, WIRE_REQUIRED)                                                            \
    X(3, lsn_last, U64, WIRE_REQUIRED)                                                             \
    X(4, records, RECORDS, WIRE_REQUIRED)

/* A storage node's acknowledgement of one append: its epoch, the PG and its SCL. */
#define WIRE_ACK_FIELDS(X)                                                                         \
    X(1, epoch, U64, WIRE_REQUIRED)                                                                \
    X(2, pg, U32, WIRE_REQUIRED)                                                                   \
    X(3, scl, U64, WIRE_REQUIRED)                                                                  \
    X(4, lsn_durable, U64, WIRE_REQUIRED)

/* The writer's durability mark on its log stream to readers. */
#define WIRE_MARK_FIELDS(X)                                                                        \
    X(1, vdl, U64, WIRE_REQUIRED)                                                                  \
    X(2, epoch, U64, WIRE_REQUIRED)                                                                \
    X(3, lsn_last, U64, WIRE_REQUIRED)

/*
 * WIRE_DECLARE_MSG(prefix, type, FIELDS) defines prefix_fields[] and prefix_desc
 * from a field list, with compile-time checks that each member is as wide as
 * its wire type and that keys run 1, 2, 3... in list order.
 */
#define WIRE_FIELD_DESC(type_, key_, member_, ft_, req_)                                           \
    {.key = key_,                                                                                  \
     .type = WIRE_FT_##ft_,                                                                        \
     .required = req_,                                                                             \
     .offset = offsetof(type_, member_),                                                           \
     .name = #member_},
#define WIRE_FIELD_WIDTH_CHECK(type_, key_, member_, ft_, req_)                                    \
    _Static_assert(sizeof(((type_ *)0)->member_) == WIRE_FT_SIZE_##ft_,                            \
                   #type_ "." #member_ " is as wide as its wire type");
#define WIRE_FIELD_POS(type_, key_, member_, ft_, req_) WIRE_POS_##type_##_##member_,
#define WIRE_FIELD_KEY_CHECK(type_, key_, member_, ft_, req_)                                      \
    _Static_assert(key_ == WIRE_POS_##type_##_##member_ + 1, #type_ "." #member_ " key in order");

extern const wire_msg_desc wire_record_desc;
extern const wire_msg_desc wire_batch_desc;
extern const wire_msg_desc wire_ack_desc;
extern const wire_msg_desc wire_mark_desc;

/* Decodes one message map into out (zeroed first), version checked, keys and types checked. */
int wire_map_decode(wire_cur *c, const wire_msg_desc *d, void *out, mrd_msg *msg);
/* Encodes out's fields as a message map (version first, keys in order). */
int wire_map_encode(msgpack_packer *pk, const wire_msg_desc *d, const void *in);
/* Exact size of wire_map_encode's output. */
size_t wire_map_size(const wire_msg_desc *d, const void *in);

/* msgpack sizes, matching msgpack-c's choice of the smallest form. */
size_t wire_size_uint(uint64_t v);
size_t wire_size_container(uint32_t n); /* map or array header */
size_t wire_size_bin(uint32_t len);

/* A msgpack-c packer appending to an mrd_buf. */
void wire_packer_init(msgpack_packer *pk, mrd_buf *out);

/* Custom field types, implemented beside their messages. */
int wire_deltas_decode(wire_cur *c, wire_record *rec, mrd_msg *msg);
int wire_deltas_encode(msgpack_packer *pk, const wire_record *rec);
size_t wire_deltas_size(const wire_record *rec);
int wire_records_decode(wire_cur *c, wire_batch *batch, mrd_msg *msg);

/* A record map read from a cursor (nested in a batch, or alone). */
int wire_record_read(wire_cur *c, wire_record *rec, mrd_msg *msg);

#endif
