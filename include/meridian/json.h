/*
 * json: a strict JSON (RFC 8259) reader for the bytes Meridian receives as
 * JSON — SQL requests from clients, status answers of other processes.
 *
 * mrd_json_parse turns a whole text into a read-only tree held by one
 * document: nodes live in one array and refer to each other by index, strings
 * are unescaped into one arena, so freeing the document frees everything. The
 * input is hostile: depth, node count, text size and string length are
 * bounded by named limits; invalid UTF-8, lone surrogates, control characters
 * in strings, leading zeros, trailing commas, duplicate object keys and
 * anything after the value are refused with a message giving line and column.
 * Integers that fit an int64 are kept exact (mrd_json.is_int); other numbers
 * are doubles.
 */
#ifndef MERIDIAN_JSON_H
#define MERIDIAN_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meridian/common.h"

#define MRD_JSON_DEPTH_MAX 64
#define MRD_JSON_NODES_MAX (1u << 20)
#define MRD_JSON_TEXT_BYTES_MAX (64u << 20)
#define MRD_JSON_NONE UINT32_MAX /* "no node" index */

typedef enum {
    MRD_JSON_NULL,
    MRD_JSON_BOOL,
    MRD_JSON_NUMBER,
    MRD_JSON_STRING,
    MRD_JSON_ARRAY,
    MRD_JSON_OBJECT,
} mrd_json_kind;

typedef struct {
    mrd_json_kind kind;
    bool boolean;
    bool is_int;      /* NUMBER: an integer that fits int64 (then i is exact) */
    int64_t i;        /* NUMBER and is_int */
    bool is_uint;     /* NUMBER: a non-negative integer that fits uint64 (then u is exact) */
    uint64_t u;       /* NUMBER and is_uint */
    double num;       /* NUMBER: always set */
    uint32_t count;   /* ARRAY, OBJECT: elements / members */
    uint32_t first;   /* ARRAY, OBJECT: first child, MRD_JSON_NONE when empty */
    uint32_t next;    /* next sibling, MRD_JSON_NONE at the end */
    size_t key;       /* member of an OBJECT: its key's offset in the string arena */
    size_t key_len;
    size_t str;       /* STRING: offset in the string arena (NUL-terminated there) */
    size_t str_len;   /* may contain NUL bytes (\u0000) */
} mrd_json;

typedef struct {
    mrd_json *nodes;
    uint32_t count, cap;
    char *strings; /* arena of unescaped strings, each NUL-terminated */
    size_t strings_len, strings_cap;
} mrd_json_doc;

/* Parses text[0..len). On error the document is empty and msg says where. */
int mrd_json_parse(const char *text, size_t len, mrd_json_doc *doc, mrd_msg *msg);
void mrd_json_free(mrd_json_doc *doc);

/* The root value (index 0); NULL for an empty document. */
const mrd_json *mrd_json_root(const mrd_json_doc *doc);
/* The first child / next sibling of a node, or NULL. */
const mrd_json *mrd_json_first(const mrd_json_doc *doc, const mrd_json *node);
const mrd_json *mrd_json_next(const mrd_json_doc *doc, const mrd_json *node);
/* An object's member by key, or NULL (also when obj is NULL or not an object). */
const mrd_json *mrd_json_get(const mrd_json_doc *doc, const mrd_json *obj, const char *key);
/* A STRING's text (NUL-terminated) or a member's key. */
const char *mrd_json_str(const mrd_json_doc *doc, const mrd_json *node);
const char *mrd_json_key(const mrd_json_doc *doc, const mrd_json *node);
/* A member that is a non-negative integer: true and *out, else false. */
bool mrd_json_get_u64(const mrd_json_doc *doc, const mrd_json *obj, const char *key,
                      uint64_t *out);
/* "null", "bool", "number", "string", "array", "object". */
const char *mrd_json_kind_name(mrd_json_kind kind);

#endif
