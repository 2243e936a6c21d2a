/*
 * tdlink: tundelay's packet logic without I/O (see tdlink.h for what it guarantees).
 */
#include "tdlink.h"

#include <stdlib.h>
#include <string.h>

#include "meridian/common.h"

void td_link_init(td_link *td, uint64_t delay_ns, uint64_t jitter_ns, uint64_t seed)
{
    memset(td, 0, sizeof(*td));
    td->delay_ns = delay_ns;
    td->jitter_ns = jitter_ns;
    td->rng = seed != 0 ? seed : 1;
}

void td_link_close(td_link *td)
{
    td_queue_drop_all(&td->q[0], NULL);
    td_queue_drop_all(&td->q[1], NULL);
}

void td_link_blackhole(td_link *td, bool on)
{
    td->blackhole = on;
    if (!on) return;
    td_queue_drop_all(&td->q[0], &td->n.dropped_blackhole); /* in flight on a cut link */
    td_queue_drop_all(&td->q[1], &td->n.dropped_blackhole);
}

static uint64_t td_random(td_link *td)
{
    td->rng ^= td->rng >> 12;
    td->rng ^= td->rng << 25;
    td->rng ^= td->rng >> 27;
    return td->rng * 0x2545F4914F6CDD1Dull;
}

uint64_t td_hold_ns(td_link *td)
{
    if (td->jitter_ns == 0) return td->delay_ns;
    uint64_t span = 2 * td->jitter_ns + 1;
    int64_t offset = (int64_t)(td_random(td) % span) - (int64_t)td->jitter_ns;
    int64_t hold = (int64_t)td->delay_ns + offset;
    return hold > 0 ? (uint64_t)hold : 0;
}

int td_direction(const uint8_t *p, size_t len)
{
    if (len >= 20 && (p[0] >> 4) == 4) return memcmp(p + 12, p + 16, 4) < 0 ? 0 : 1;
    if (len >= 40 && (p[0] >> 4) == 6) return memcmp(p + 8, p + 24, 16) < 0 ? 0 : 1;
    return -1;
}

void td_queue_drop_all(td_queue *q, uint64_t *dropped)
{
    while (q->head != NULL) {
        td_packet *p = q->head;
        q->head = p->next;
        free(p);
        if (dropped != NULL) (*dropped)++;
    }
    q->tail = NULL;
    q->count = q->bytes = 0;
}

void td_enqueue(td_link *td, const uint8_t *data, size_t len, uint64_t now_ns)
{
    td->n.read++;
    if (td->blackhole) {
        td->n.dropped_blackhole++;
        return;
    }
    int dir = td_direction(data, len);
    if (dir < 0) {
        td->n.dropped_malformed++;
        return;
    }
    td_queue *q = &td->q[dir];
    if (q->count >= TD_HELD_PACKETS_MAX || q->bytes + len > TD_HELD_BYTES_MAX) {
        td->n.dropped_overflow++;
        return;
    }
    td_packet *p = malloc(sizeof(*p) + len);
    if (p == NULL) {
        td->n.dropped_overflow++;
        return;
    }
    uint64_t due = now_ns + td_hold_ns(td);
    p->due_ns = due > q->last_due_ns ? due : q->last_due_ns; /* never ahead of the one before */
    q->last_due_ns = p->due_ns;
    p->next = NULL;
    p->len = len;
    memcpy(p->data, data, len);
    if (q->tail != NULL)
        q->tail->next = p;
    else
        q->head = p;
    q->tail = p;
    q->count++;
    q->bytes += len;
}

uint64_t td_flush(td_link *td, uint64_t now_ns, td_write_fn write, void *ctx)
{
    uint64_t next = 0;
    for (int d = 0; d < 2; d++) {
        td_queue *q = &td->q[d];
        while (q->head != NULL && q->head->due_ns <= now_ns) {
            td_packet *p = q->head;
            q->head = p->next;
            if (q->head == NULL) q->tail = NULL;
            q->count--;
            q->bytes -= p->len;
            if (write(ctx, p->data, p->len) == 0)
                td->n.written++;
            else
                td->n.write_errors++;
            free(p);
        }
        if (q->head != NULL && (next == 0 || q->head->due_ns < next)) next = q->head->due_ns;
    }
    return next;
}

static bool td_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n';
}

/* Digits by hand, not strtoull, which also takes a sign ("-0 0" and "1+2" passed) and
 * more whitespace (\v, \f, \r) than the grammar allows. */
int td_parse_ms(const char *text, uint64_t *out, const char **end)
{
    const char *p = text;
    while (td_is_space(*p))
        p++;
    const char *digits = p;
    uint64_t v = 0;
    for (; *p >= '0' && *p <= '9'; p++)
        if (v <= TD_DELAY_MS_MAX) v = v * 10 + (uint64_t)(*p - '0'); /* past the max: stays */
    *end = p;
    if (p == digits || v > TD_DELAY_MS_MAX) return MRD_EINVAL;
    *out = v;
    return 0;
}

int td_parse_delay(const char *text, uint64_t *delay_ms, uint64_t *jitter_ms)
{
    const char *end = NULL;
    uint64_t d = 0, j = 0;
    if (td_parse_ms(text, &d, &end) != 0) return MRD_EINVAL;
    const char *rest = end;
    if (td_parse_ms(rest, &j, &end) != 0) return MRD_EINVAL;
    while (td_is_space(*end))
        end++;
    if (*end != '\0') return MRD_EINVAL;
    *delay_ms = d;
    *jitter_ms = j;
    return 0;
}
