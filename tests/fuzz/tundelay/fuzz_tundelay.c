/*
 * Fuzzes tundelay's packet logic (tools/tundelay/tdlink.c) as the network and the
 * control file drive it. The input is a script: an 8-byte seed for the link's jitter,
 * then operations, each an opcode byte (modulo FUZZ_OP_COUNT) and its arguments
 * (little endian; missing bytes read as zero):
 *
 *   ENQUEUE    u16 len, u16 advance_us, then len bytes of packet (as many as are
 *              left; the rest zeros): the clock moves on, the packet is read
 *   BURST      u16 len, u16 count-1, then up to FUZZ_BURST_PREFIX_MAX bytes of
 *              packet (the rest zeros): count copies read at once, to reach the
 *              tail-drop limits
 *   FLUSH      u32 advance_us, u8 fail: the clock moves on, due packets are written;
 *              the n-th write of the input fails when bit (n % 8) of fail is set
 *   DELAY      u16 delay_ms, u16 jitter_ms (modulo TD_DELAY_MS_MAX + 1)
 *   BLACKHOLE  u8: odd cuts the link (every held packet dropped), even heals it
 *   CONTROL    u8 len, then len bytes of control-file text: parsed, and applied when
 *              accepted, as on SIGHUP
 *
 * Beside the link the target keeps a shadow: per direction, a FIFO of what it
 * expects to be held (length, a hash of the bytes, due time), and the counters it
 * expects. After every operation it checks, and abort()s on a violation:
 *  - each packet read lands where the rules say (blackhole, malformed, tail drop or
 *    held in its direction), with a due time within delay ± jitter of the clock and
 *    never before the one ahead of it;
 *  - packets come out of each direction in the order they went in, unchanged, and
 *    only once due; what td_flush returns is the earliest due time left;
 *  - the counters are the expected ones, and read == written + write_errors +
 *    dropped_* + held;
 *  - a walk of each queue agrees with its count, bytes, tail and last due time, and
 *    with the shadow (due times never decrease); nothing is held after a blackhole;
 *  - td_parse_delay accepts exactly "<ms> <ms>" (whitespace around and between,
 *    each ms at most TD_DELAY_MS_MAX) and td_parse_ms exactly "<ms>".
 * Operations, packets, bytes and queue walks per input are capped, so one input's
 * memory and time stay bounded; everything is freed at the end (the leak check sees it).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tdlink.h"

#define FUZZ_OPS_MAX 1024u
#define FUZZ_PACKETS_MAX (TD_HELD_PACKETS_MAX + 1024u) /* read per input: one tail drop */
/* Bytes read per input: one fill of TD_HELD_BYTES_MAX, made of packets of the largest
 * size, and a little of every other size. ASan holds on to freed memory (in its
 * quarantine, then in the free list of its size class), so fills of many sizes would
 * add up to gigabytes over a run. */
#define FUZZ_BYTES_MAX (TD_HELD_BYTES_MAX + (1ull << 20))
#define FUZZ_OTHER_BYTES_MAX (2ull << 20) /* enough for the packet limit: 65536 x 32 */
#define FUZZ_WALK_STEPS_MAX (1u << 18)    /* queue walks per input; the last one is free */
#define FUZZ_BURST_PREFIX_MAX 64u

enum { OP_ENQUEUE, OP_BURST, OP_FLUSH, OP_DELAY, OP_BLACKHOLE, OP_CONTROL, FUZZ_OP_COUNT };

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) abort();                                                                      \
    } while (0)

typedef struct {
    const uint8_t *p;
    size_t left;
} cursor;

typedef struct {
    uint64_t hash, due_ns;
    size_t len;
} shadow_packet;

typedef struct {
    shadow_packet *v;
    size_t head, tail, cap; /* v[head..tail) */
} shadow_fifo;

typedef struct {
    td_link link;
    shadow_fifo fifo[2];
    td_counters want;
    uint64_t now_ns;
    uint8_t fail;    /* FLUSH's failure pattern */
    unsigned writes; /* write calls so far */
    size_t packets_left, walk_steps_left;
    uint64_t bytes_left, other_bytes_left;
    uint8_t *buf; /* TD_PACKET_BYTES_MAX */
} fuzz;

static uint64_t take(cursor *c, unsigned bytes)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes && c->left > 0; i++, c->p++, c->left--)
        v |= (uint64_t)c->p[0] << (8 * i);
    return v;
}

/* Copies up to max bytes of the input into out; returns how many. */
static size_t take_bytes(cursor *c, uint8_t *out, size_t max)
{
    size_t n = max < c->left ? max : c->left;
    memcpy(out, c->p, n);
    c->p += n;
    c->left -= n;
    return n;
}

/* FNV-1a over 8-byte words (a byte at a time, the fuzzer's compare tracing of the
 * loop would cost more than the link itself on a 64 KiB packet). */
static uint64_t hash_bytes(const uint8_t *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull ^ len;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
    }
    for (; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* The direction by the rule, written apart from td_direction. */
static int ref_direction(const uint8_t *p, size_t len)
{
    size_t src, addr_len;
    if (len >= 20 && p[0] >> 4 == 4) {
        src = 12, addr_len = 4;
    } else if (len >= 40 && p[0] >> 4 == 6) {
        src = 8, addr_len = 16;
    } else {
        return -1;
    }
    for (size_t i = 0; i < addr_len; i++)
        if (p[src + i] != p[src + addr_len + i]) return p[src + i] < p[src + addr_len + i] ? 0 : 1;
    return 1;
}

static size_t fifo_size(const shadow_fifo *f)
{
    return f->tail - f->head;
}

static void fifo_push(shadow_fifo *f, shadow_packet s)
{
    if (f->head == f->tail) f->head = f->tail = 0;
    if (f->tail == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 64;
        shadow_packet *v = realloc(f->v, cap * sizeof(*v));
        CHECK(v != NULL);
        f->v = v;
        f->cap = cap;
    }
    f->v[f->tail++] = s;
}

static uint64_t held(const td_link *l)
{
    return l->q[0].count + l->q[1].count;
}

/* The counters are the expected ones, and every packet read is accounted for once. */
static void check_counters(const fuzz *f)
{
    const td_counters *n = &f->link.n, *w = &f->want;
    CHECK(n->read == w->read && n->written == w->written && n->write_errors == w->write_errors);
    CHECK(n->dropped_blackhole == w->dropped_blackhole);
    CHECK(n->dropped_overflow == w->dropped_overflow);
    CHECK(n->dropped_malformed == w->dropped_malformed);
    CHECK(n->read == n->written + n->write_errors + n->dropped_blackhole + n->dropped_overflow +
                         n->dropped_malformed + held(&f->link));
    for (int d = 0; d < 2; d++) {
        const td_queue *q = &f->link.q[d];
        CHECK(q->count == fifo_size(&f->fifo[d]));
        CHECK((q->head == NULL) == (q->tail == NULL) && (q->head == NULL) == (q->count == 0));
        CHECK(q->count <= TD_HELD_PACKETS_MAX && q->bytes <= TD_HELD_BYTES_MAX);
    }
}

/* A walk of each queue agrees with its bookkeeping and with the shadow. */
static void check_walk(fuzz *f, bool always)
{
    if (!always && f->walk_steps_left < held(&f->link)) return;
    if (!always) f->walk_steps_left -= held(&f->link);
    for (int d = 0; d < 2; d++) {
        const td_queue *q = &f->link.q[d];
        const shadow_fifo *s = &f->fifo[d];
        size_t count = 0, bytes = 0, size = fifo_size(s);
        uint64_t due = 0;
        const td_packet *last = NULL;
        for (const td_packet *p = q->head; p != NULL; last = p, p = p->next) {
            CHECK(count < size);
            const shadow_packet *want = &s->v[s->head + count];
            CHECK(p->len == want->len && p->due_ns == want->due_ns);
            CHECK(p->due_ns >= due && p->due_ns <= q->last_due_ns);
            due = p->due_ns;
            count++;
            bytes += p->len;
        }
        CHECK(count == q->count && bytes == q->bytes && last == q->tail);
        CHECK(last == NULL || last->due_ns == q->last_due_ns);
    }
}

/* How many more packets of len bytes a queue takes before it drops at its tail. */
static size_t room(const td_queue *q, size_t len)
{
    if (q->count >= TD_HELD_PACKETS_MAX) return 0;
    size_t n = TD_HELD_PACKETS_MAX - q->count;
    if (len > 0 && (TD_HELD_BYTES_MAX - q->bytes) / len < n)
        n = (TD_HELD_BYTES_MAX - q->bytes) / len;
    return n;
}

/* The n packets from p on are the ones just read, in order, with due times that keep
 * the order and lie within delay ± jitter of the clock; they join the shadow. */
static void check_held(fuzz *f, int dir, const td_packet *p, size_t n, const uint8_t *data,
                       size_t len, uint64_t hash, uint64_t last_due)
{
    const td_link *l = &f->link;
    uint64_t lo = l->delay_ns > l->jitter_ns ? l->delay_ns - l->jitter_ns : 0;
    uint64_t hi = l->delay_ns + l->jitter_ns;
    const td_packet *last = NULL;
    for (size_t i = 0; i < n; i++, last = p, p = p->next) {
        CHECK(p != NULL && p->len == len && memcmp(p->data, data, len) == 0);
        CHECK(p->due_ns >= last_due && p->due_ns >= f->now_ns + lo);
        CHECK(p->due_ns == last_due || p->due_ns <= f->now_ns + hi);
        last_due = p->due_ns;
        fifo_push(&f->fifo[dir], (shadow_packet){hash, p->due_ns, len});
    }
    CHECK(p == NULL && last == l->q[dir].tail && last_due == l->q[dir].last_due_ns);
}

/* Reads count copies of one packet into the link at once (as far as the input's
 * budget goes), and checks where they went against the rules: blackhole, malformed,
 * held until the tail drop, then dropped. */
static void read_packets(fuzz *f, const uint8_t *data, size_t len, size_t count)
{
    if (count > f->packets_left) count = f->packets_left;
    uint64_t *bytes_left = len == TD_PACKET_BYTES_MAX ? &f->bytes_left : &f->other_bytes_left;
    if (len > 0 && count > *bytes_left / len) count = (size_t)(*bytes_left / len);
    f->packets_left -= count;
    *bytes_left -= (uint64_t)count * len;
    td_link *l = &f->link;
    int dir = ref_direction(data, len);
    const td_queue *q = dir >= 0 ? &l->q[dir] : NULL;
    size_t held_new = 0;
    f->want.read += count;
    if (l->blackhole) {
        f->want.dropped_blackhole += count;
    } else if (dir < 0) {
        f->want.dropped_malformed += count;
    } else {
        size_t n = room(q, len);
        held_new = count < n ? count : n;
        f->want.dropped_overflow += count - held_new; /* malloc does not fail here */
    }
    const td_packet *before = q ? q->tail : NULL;
    size_t count_before = q ? q->count : 0, bytes_before = q ? q->bytes : 0;
    uint64_t last_due = q ? q->last_due_ns : 0;
    for (size_t i = 0; i < count; i++)
        td_enqueue(l, data, len, f->now_ns);
    if (held_new > 0) {
        CHECK(q->count == count_before + held_new && q->bytes == bytes_before + held_new * len);
        check_held(f, dir, before ? before->next : q->head, held_new, data, len,
                   hash_bytes(data, len), last_due);
    }
    check_counters(f);
}

/* What td_flush writes: the head of its direction's shadow, due, unchanged. */
static int on_write(void *ctx, const uint8_t *p, size_t len)
{
    fuzz *f = ctx;
    int dir = ref_direction(p, len);
    CHECK(dir >= 0);
    shadow_fifo *s = &f->fifo[dir];
    CHECK(fifo_size(s) > 0);
    shadow_packet want = s->v[s->head++];
    CHECK(want.len == len && want.hash == hash_bytes(p, len) && want.due_ns <= f->now_ns);
    bool fails = (f->fail >> (f->writes++ % 8)) & 1;
    if (fails)
        f->want.write_errors++;
    else
        f->want.written++;
    return fails ? -1 : 0;
}

static void op_enqueue(fuzz *f, cursor *c)
{
    size_t len = (size_t)take(c, 2);
    f->now_ns += take(c, 2) * 1000;
    size_t n = take_bytes(c, f->buf, len);
    memset(f->buf + n, 0, len - n);
    read_packets(f, f->buf, len, 1);
}

static void op_burst(fuzz *f, cursor *c)
{
    size_t len = (size_t)take(c, 2);
    size_t count = (size_t)take(c, 2) + 1;
    size_t n = take_bytes(c, f->buf, len < FUZZ_BURST_PREFIX_MAX ? len : FUZZ_BURST_PREFIX_MAX);
    memset(f->buf + n, 0, len - n);
    read_packets(f, f->buf, len, count);
}

static void op_flush(fuzz *f, cursor *c)
{
    f->now_ns += take(c, 4) * 1000;
    f->fail = (uint8_t)take(c, 1);
    uint64_t next = td_flush(&f->link, f->now_ns, on_write, f);
    uint64_t want = 0;
    for (int d = 0; d < 2; d++) {
        const td_packet *head = f->link.q[d].head;
        if (head == NULL) continue;
        CHECK(head->due_ns > f->now_ns);
        if (want == 0 || head->due_ns < want) want = head->due_ns;
    }
    CHECK(next == want);
    check_counters(f);
}

static void op_delay(fuzz *f, cursor *c)
{
    td_link *l = &f->link;
    l->delay_ns = take(c, 2) % (TD_DELAY_MS_MAX + 1) * 1000000ull;
    l->jitter_ns = take(c, 2) % (TD_DELAY_MS_MAX + 1) * 1000000ull;
    uint64_t hold = td_hold_ns(l);
    CHECK(hold <= l->delay_ns + l->jitter_ns);
    CHECK(hold + l->jitter_ns >= l->delay_ns);
}

static void op_blackhole(fuzz *f, cursor *c)
{
    bool on = take(c, 1) & 1;
    uint64_t before = held(&f->link);
    td_link_blackhole(&f->link, on);
    CHECK(f->link.blackhole == on);
    if (on) {
        f->want.dropped_blackhole += before;
        for (int d = 0; d < 2; d++) {
            const td_queue *q = &f->link.q[d];
            CHECK(q->head == NULL && q->tail == NULL && q->count == 0 && q->bytes == 0);
            f->fifo[d].head = f->fifo[d].tail = 0;
        }
    }
    check_counters(f);
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n';
}

/* Whitespace then digits: how many characters, 0 when no digit; *v saturates above
 * TD_DELAY_MS_MAX. */
static size_t ref_ms(const char *s, uint64_t *v)
{
    size_t i = 0;
    while (is_space(s[i]))
        i++;
    size_t digits = i;
    uint64_t x = 0;
    for (; s[i] >= '0' && s[i] <= '9'; i++)
        x = x > TD_DELAY_MS_MAX ? x : x * 10 + (uint64_t)(s[i] - '0');
    *v = x;
    return i > digits ? i : 0;
}

/* The grammar: "<ms> <ms>", whitespace around and between. */
static bool ref_delay(const char *s, uint64_t *d, uint64_t *j)
{
    size_t a = ref_ms(s, d);
    if (a == 0 || *d > TD_DELAY_MS_MAX) return false;
    size_t b = ref_ms(s + a, j);
    if (b == 0 || *j > TD_DELAY_MS_MAX) return false;
    const char *rest = s + a + b;
    while (is_space(*rest))
        rest++;
    return *rest == '\0';
}

static void op_control(fuzz *f, cursor *c)
{
    char text[TD_CONTROL_BYTES_MAX + 1];
    size_t n = take_bytes(c, (uint8_t *)text, (size_t)take(c, 1) % (TD_CONTROL_BYTES_MAX + 1));
    text[n] = '\0';

    uint64_t ms = 7, want_ms = 0;
    const char *end = NULL;
    size_t want_end = ref_ms(text, &want_ms);
    bool ok = want_end > 0 && want_ms <= TD_DELAY_MS_MAX;
    CHECK((td_parse_ms(text, &ms, &end) == 0) == ok);
    CHECK(!ok || (ms == want_ms && end == text + want_end));

    uint64_t d = 1, j = 2, want_d = 0, want_j = 0;
    ok = ref_delay(text, &want_d, &want_j);
    CHECK((td_parse_delay(text, &d, &j) == 0) == ok);
    CHECK(ok ? d == want_d && j == want_j : d == 1 && j == 2);
    if (!ok) return;
    f->link.delay_ns = d * 1000000ull;
    f->link.jitter_ns = j * 1000000ull;
}

static void run(fuzz *f, cursor *c)
{
    for (unsigned i = 0; i < FUZZ_OPS_MAX && c->left > 0; i++) {
        switch (take(c, 1) % FUZZ_OP_COUNT) {
        case OP_ENQUEUE:
            op_enqueue(f, c);
            break;
        case OP_BURST:
            op_burst(f, c);
            break;
        case OP_FLUSH:
            op_flush(f, c);
            break;
        case OP_DELAY:
            op_delay(f, c);
            break;
        case OP_BLACKHOLE:
            op_blackhole(f, c);
            break;
        default:
            op_control(f, c);
            break;
        }
        check_counters(f);
        check_walk(f, false);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cursor c = {data, size};
    fuzz *f = calloc(1, sizeof(*f));
    if (f == NULL) return 0;
    f->buf = malloc(TD_PACKET_BYTES_MAX);
    if (f->buf == NULL) goto fail_buf;
    f->packets_left = FUZZ_PACKETS_MAX;
    f->bytes_left = FUZZ_BYTES_MAX;
    f->other_bytes_left = FUZZ_OTHER_BYTES_MAX;
    f->walk_steps_left = FUZZ_WALK_STEPS_MAX;
    td_link_init(&f->link, 0, 0, take(&c, 8));
    CHECK(f->link.rng != 0);

    run(f, &c);
    check_walk(f, true);
    check_counters(f);

    td_link_close(&f->link);
    for (int d = 0; d < 2; d++) {
        const td_queue *q = &f->link.q[d];
        CHECK(q->head == NULL && q->tail == NULL && q->count == 0 && q->bytes == 0);
        free(f->fifo[d].v);
    }
    free(f->buf);
fail_buf:
    free(f);
    return 0;
}
