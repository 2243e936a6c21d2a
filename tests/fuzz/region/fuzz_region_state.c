/*
 * Fuzzes the region state's decoders (rg_state_decode, rg_state_decode_answer)
 * against a fixed topology of three regions (east, west, south): any bytes are
 * either refused with a message, or give a state that keeps every promise of
 * the decoder (names in the topology, the writer an instance of the region,
 * bounded numbers, a consistent operation) and that encodes to JSON decoding
 * back to the same state and the same text.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../unit/region/region_topo.h"
#include "meridian/region.h"

static void check(bool ok)
{
    if (!ok) abort();
}

/* Parsed once: the topology never changes between inputs. */
static const topology *fixed_topology(void)
{
    static topology *t;
    if (t == NULL) t = rt_topology(3);
    check(t != NULL);
    return t;
}

static bool name_ok(const char *s)
{
    size_t len = strnlen(s, TOPO_NAME_MAX);
    return len > 0 && len < TOPO_NAME_MAX;
}

static int region_index(const topology *t, const char *name)
{
    for (int i = 0; i < t->region_count; i++)
        if (strcmp(t->regions[i].name, name) == 0) return i;
    return -1;
}

static void check_promises(const topology *t, const rg_state *s)
{
    check(name_ok(s->region) && name_ok(s->primary) && name_ok(s->writer));
    int r = region_index(t, s->region);
    check(r >= 0 && region_index(t, s->primary) >= 0);
    const topo_node *w = topo_find(t, s->writer);
    check(w != NULL && w->region == r &&
          (w->role == TOPO_ROLE_WRITER || w->role == TOPO_ROLE_READER));
    uint64_t epoch_max = UINT64_MAX / RG_EPOCH_STEP - 1;
    check(s->epoch <= epoch_max && s->op_epoch <= epoch_max);
    check(rg_volume_epoch_min(s->epoch) > s->epoch * RG_EPOCH_STEP); /* no overflow */
    check(s->fork_lsn <= INT64_MAX && s->writer_gen <= INT64_MAX && s->version <= INT64_MAX);
    if (s->op == RG_OP_NONE) {
        check(s->op_epoch == 0 && s->op_to[0] == '\0');
    } else {
        check(s->op == RG_OP_SWITCHOVER && s->op_epoch > s->epoch);
        check(name_ok(s->op_to) && region_index(t, s->op_to) >= 0);
    }
    check(rg_inst_mode_of(s, s->writer) != RG_INST_READER);
}

static bool same(const rg_state *a, const rg_state *b)
{
    return strcmp(a->region, b->region) == 0 && a->epoch == b->epoch &&
           strcmp(a->primary, b->primary) == 0 && a->fork_lsn == b->fork_lsn &&
           strcmp(a->writer, b->writer) == 0 && a->writer_gen == b->writer_gen && a->op == b->op &&
           a->op_epoch == b->op_epoch && strcmp(a->op_to, b->op_to) == 0 &&
           a->version == b->version;
}

/* Encode, decode again (as a state and inside an answer), encode again: all the same. */
static void check_round_trip(const topology *t, const rg_state *s)
{
    mrd_buf a, b;
    mrd_buf_init(&a);
    mrd_buf_init(&b);
    mrd_buf_printf(&a, "{\"state\":{");
    rg_state_encode(s, &a);
    mrd_buf_printf(&a, "}}");
    check(a.data != NULL);
    const char *state = (const char *)a.data + 9; /* past {"state": */
    size_t state_len = a.len - 10;
    rg_state back, answer;
    mrd_msg msg = {{0}};
    check(rg_state_decode(t, state, state_len, &back, &msg) == 0);
    check(same(&back, s));
    check(rg_state_decode_answer(t, (const char *)a.data, a.len, &answer, &msg) == 0);
    check(same(&answer, s));
    mrd_buf_printf(&b, "{\"state\":{");
    rg_state_encode(&back, &b);
    mrd_buf_printf(&b, "}}");
    check(b.data != NULL && b.len == a.len && memcmp(a.data, b.data, a.len) == 0);
    mrd_buf_free(&a);
    mrd_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const topology *t = fixed_topology();
    const char *text = (const char *)data;
    rg_state s, untouched;
    memset(&s, 0x5a, sizeof(s));
    untouched = s;
    mrd_msg msg = {{0}};
    if (rg_state_decode(t, text, size, &s, &msg) == 0) {
        check_promises(t, &s);
        check_round_trip(t, &s);
    } else {
        check(msg.text[0] != '\0' && memcmp(&s, &untouched, sizeof(s)) == 0);
    }
    msg.text[0] = '\0';
    memset(&s, 0x5a, sizeof(s));
    if (rg_state_decode_answer(t, text, size, &s, &msg) == 0) {
        check_promises(t, &s);
        check_round_trip(t, &s);
    } else {
        check(msg.text[0] != '\0' && memcmp(&s, &untouched, sizeof(s)) == 0);
    }
    return 0;
}
