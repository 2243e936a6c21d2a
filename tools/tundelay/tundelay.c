/*
 * tundelay: a userspace delay link for routed IP packets, for test hosts laid out
 * as network namespaces (tools/torturelib/hosts.py; this kernel has no netem qdisc).
 *
 * It attaches to a TUN device (IFF_TUN | IFF_NO_PI; a persistent one made by
 * `ip tuntap add`, or a new one). Policy routing in the hub namespace sends the
 * packets forwarded between two regions into that device; tundelay reads each
 * one, holds it for delay ± jitter and writes it back into the same device, where
 * the kernel receives it with iif = the TUN device and routes it on by the main
 * table. The link can be cut and its delay changed while it runs:
 *
 *   tundelay --dev NAME [--delay-ms N] [--jitter-ms J] [--control FILE] [--seed S]
 *
 *   SIGUSR1  blackhole: every packet held and every packet read is dropped, as
 *            when a WAN link is cut, until
 *   SIGUSR2  heals the link.
 *   SIGHUP   re-reads FILE, "DELAY_MS JITTER_MS": a delay spike, or its end.
 *   SIGTERM, SIGINT  stop, after a line with the counters.
 *
 * A direction is the order of a packet's two addresses (source below destination,
 * or above): between two subnets that is one region to the other. Packets of one
 * direction leave in the order they came: a packet is never due before the one
 * read ahead of it in its direction, so jitter spreads packets out but never
 * reorders them (as on a real path, where TCP would see reordering as loss).
 *
 * It prints one line on stdout when it is attached; each event is one key=value
 * line on stderr. A harness starts it, reads that line and ends it by pid.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <uv.h>

#include "meridian/common.h"

#define TD_DELAY_MS_MAX 60000u        /* one way */
#define TD_HELD_PACKETS_MAX 65536u    /* per direction: beyond, tail drop */
#define TD_HELD_BYTES_MAX (64u << 20) /* per direction: beyond, tail drop */
#define TD_PACKET_BYTES_MAX 65535u    /* an IPv4 packet's largest total length */
#define TD_READ_BATCH_MAX 256u        /* packets read per wake-up */
#define TD_CONTROL_BYTES_MAX 256u     /* the control file */
#define TD_SIGNALS 5

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
    uv_loop_t *loop;
    uv_poll_t poll;
    uv_timer_t timer;
    uv_signal_t sigs[TD_SIGNALS];
    int fd;
    char dev[IFNAMSIZ];
    const char *control;
    uint64_t delay_ns, jitter_ns;
    uint64_t rng; /* xorshift64* state; never 0 */
    bool blackhole;
    td_queue q[2];
    td_counters n;
    uint8_t buf[TD_PACKET_BYTES_MAX];
} tundelay;

static uint64_t td_random(tundelay *td)
{
    td->rng ^= td->rng >> 12;
    td->rng ^= td->rng << 25;
    td->rng ^= td->rng >> 27;
    return td->rng * 0x2545F4914F6CDD1Dull;
}

/* delay + a uniform offset in [-jitter, +jitter], never below zero. */
static uint64_t td_hold_ns(tundelay *td)
{
    if (td->jitter_ns == 0) return td->delay_ns;
    uint64_t span = 2 * td->jitter_ns + 1;
    int64_t offset = (int64_t)(td_random(td) % span) - (int64_t)td->jitter_ns;
    int64_t hold = (int64_t)td->delay_ns + offset;
    return hold > 0 ? (uint64_t)hold : 0;
}

/* 0 or 1 by the order of the packet's addresses; -1 for what is not IPv4 or IPv6. */
static int td_direction(const uint8_t *p, size_t len)
{
    if (len >= 20 && (p[0] >> 4) == 4) return memcmp(p + 12, p + 16, 4) < 0 ? 0 : 1;
    if (len >= 40 && (p[0] >> 4) == 6) return memcmp(p + 8, p + 24, 16) < 0 ? 0 : 1;
    return -1;
}

static void td_queue_drop_all(td_queue *q, uint64_t *dropped)
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

static void td_enqueue(tundelay *td, const uint8_t *data, size_t len, uint64_t now_ns)
{
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

/* Writes every packet that is due; returns the earliest due time left, or 0. */
static uint64_t td_flush(tundelay *td, uint64_t now_ns)
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
            /* A TUN write hands the packet to the stack at once; it does not block. */
            if (write(td->fd, p->data, p->len) == (ssize_t)p->len)
                td->n.written++;
            else
                td->n.write_errors++;
            free(p);
        }
        if (q->head != NULL && (next == 0 || q->head->due_ns < next)) next = q->head->due_ns;
    }
    return next;
}

static void on_timer(uv_timer_t *t);

static void td_arm(tundelay *td, uint64_t next_ns, uint64_t now_ns)
{
    if (next_ns == 0) {
        uv_timer_stop(&td->timer);
        return;
    }
    uint64_t wait_ms = next_ns > now_ns ? (next_ns - now_ns + 999999) / 1000000 : 0;
    uv_timer_start(&td->timer, on_timer, wait_ms, 0);
}

static void on_timer(uv_timer_t *t)
{
    tundelay *td = t->data;
    uint64_t now = mrd_now_ns();
    td_arm(td, td_flush(td, now), now);
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    tundelay *td = h->data;
    if (status < 0) {
        MRD_ERROR("tundelay_poll_failed", "dev=%s error=%s", td->dev, uv_strerror(status));
        uv_stop(td->loop);
        return;
    }
    uint64_t now = mrd_now_ns();
    for (unsigned i = 0; i < TD_READ_BATCH_MAX; i++) {
        ssize_t n = read(td->fd, td->buf, sizeof(td->buf));
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            /* The device is gone (its namespace deleted): nothing left to carry. */
            MRD_ERROR("tundelay_read_failed", "dev=%s error=\"%s\"", td->dev, strerror(errno));
            uv_stop(td->loop);
            return;
        }
        if (n <= 0) break; /* EAGAIN: all read */
        td->n.read++;
        if (td->blackhole)
            td->n.dropped_blackhole++;
        else
            td_enqueue(td, td->buf, (size_t)n, now);
    }
    td_arm(td, td_flush(td, now), now); /* a zero delay passes packets on at once */
}

static void td_log_counters(const tundelay *td, const char *event)
{
    MRD_INFO(event,
             "dev=%s delay_ms=%.3f jitter_ms=%.3f blackhole=%s read=%llu written=%llu "
             "dropped_blackhole=%llu dropped_overflow=%llu dropped_malformed=%llu "
             "write_errors=%llu held=%zu",
             td->dev, (double)td->delay_ns / 1e6, (double)td->jitter_ns / 1e6,
             td->blackhole ? "on" : "off", (unsigned long long)td->n.read,
             (unsigned long long)td->n.written, (unsigned long long)td->n.dropped_blackhole,
             (unsigned long long)td->n.dropped_overflow,
             (unsigned long long)td->n.dropped_malformed, (unsigned long long)td->n.write_errors,
             td->q[0].count + td->q[1].count);
}

/* A whole number of milliseconds, at most TD_DELAY_MS_MAX; *end is where it stopped. */
static int td_parse_ms(const char *text, uint64_t *out, char **end)
{
    errno = 0;
    unsigned long long v = strtoull(text, end, 10);
    if (*end == text || errno != 0 || v > TD_DELAY_MS_MAX) return MRD_EINVAL;
    *out = v;
    return 0;
}

/* "DELAY_MS JITTER_MS", whitespace around and between. */
static int td_parse_delay(const char *text, uint64_t *delay_ms, uint64_t *jitter_ms)
{
    char *end = NULL;
    uint64_t d = 0, j = 0;
    if (td_parse_ms(text, &d, &end) != 0) return MRD_EINVAL;
    const char *rest = end;
    if (td_parse_ms(rest, &j, &end) != 0) return MRD_EINVAL;
    while (*end == ' ' || *end == '\n' || *end == '\t')
        end++;
    if (*end != '\0') return MRD_EINVAL;
    *delay_ms = d;
    *jitter_ms = j;
    return 0;
}

/* A command-line value: only the number. */
static int td_parse_arg(const char *text, uint64_t *out)
{
    char *end = NULL;
    return td_parse_ms(text, out, &end) == 0 && *end == '\0' ? 0 : MRD_EINVAL;
}

static void td_reload(tundelay *td)
{
    if (td->control == NULL) {
        MRD_WARN("tundelay_no_control", "dev=%s reason=\"SIGHUP without --control\"", td->dev);
        return;
    }
    char *text = NULL;
    mrd_msg msg;
    uint64_t d = 0, j = 0;
    if (mrd_read_file(td->control, TD_CONTROL_BYTES_MAX, &text, NULL, &msg) != 0 ||
        td_parse_delay(text, &d, &j) != 0) {
        MRD_ERROR("tundelay_bad_control", "dev=%s file=%s want=\"DELAY_MS JITTER_MS\"", td->dev,
                  td->control);
        free(text);
        return;
    }
    free(text);
    td->delay_ns = d * 1000000ull;
    td->jitter_ns = j * 1000000ull;
    td_log_counters(td, "tundelay_delay");
}

static void on_signal(uv_signal_t *s, int signum)
{
    tundelay *td = s->data;
    if (signum == SIGUSR1) {
        td->blackhole = true;
        td_queue_drop_all(&td->q[0], &td->n.dropped_blackhole); /* in flight on a cut link */
        td_queue_drop_all(&td->q[1], &td->n.dropped_blackhole);
        uv_timer_stop(&td->timer);
        td_log_counters(td, "tundelay_blackhole");
    } else if (signum == SIGUSR2) {
        td->blackhole = false;
        td_log_counters(td, "tundelay_healed");
    } else if (signum == SIGHUP) {
        td_reload(td);
    } else if (signum == SIGTERM || signum == SIGINT) {
        uv_stop(td->loop);
    }
}

/* Attaches to the TUN device (making it when it does not exist), non-blocking. */
static int td_open(tundelay *td, const char *dev, mrd_msg *msg)
{
    if (strlen(dev) >= IFNAMSIZ)
        return mrd_fail(msg, MRD_EINVAL, "--dev %s: longer than %d characters", dev, IFNAMSIZ - 1);
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return mrd_fail(msg, MRD_EIO, "/dev/net/tun: %s", strerror(errno));
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    memcpy(ifr.ifr_name, dev, strlen(dev));
    if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
        int err = errno;
        close(fd);
        return mrd_fail(msg, MRD_EIO, "TUNSETIFF %s: %s", dev, strerror(err));
    }
    td->fd = fd;
    snprintf(td->dev, sizeof(td->dev), "%s", ifr.ifr_name);
    return 0;
}

static void on_closed(uv_handle_t *h) {}

static void td_close(tundelay *td)
{
    uv_close((uv_handle_t *)&td->poll, on_closed);
    uv_close((uv_handle_t *)&td->timer, on_closed);
    for (int i = 0; i < TD_SIGNALS; i++)
        uv_close((uv_handle_t *)&td->sigs[i], on_closed);
    uv_run(td->loop, UV_RUN_DEFAULT); /* the close callbacks */
    td_queue_drop_all(&td->q[0], NULL);
    td_queue_drop_all(&td->q[1], NULL);
    close(td->fd);
}

static int td_start(tundelay *td, mrd_msg *msg)
{
    static const int nums[TD_SIGNALS] = {SIGUSR1, SIGUSR2, SIGHUP, SIGTERM, SIGINT};
    int rc = uv_poll_init(td->loop, &td->poll, td->fd);
    if (rc != 0) return mrd_fail(msg, MRD_EIO, "poll %s: %s", td->dev, uv_strerror(rc));
    td->poll.data = td;
    uv_timer_init(td->loop, &td->timer);
    td->timer.data = td;
    for (int i = 0; i < TD_SIGNALS; i++) {
        uv_signal_init(td->loop, &td->sigs[i]);
        td->sigs[i].data = td;
        uv_signal_start(&td->sigs[i], on_signal, nums[i]);
    }
    rc = uv_poll_start(&td->poll, UV_READABLE, on_readable);
    if (rc != 0) return mrd_fail(msg, MRD_EIO, "poll %s: %s", td->dev, uv_strerror(rc));
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: tundelay --dev NAME [--delay-ms N] [--jitter-ms J] [--control FILE] "
                    "[--seed S]\n");
    return 2;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dev", required_argument, NULL, 'i'},       {"delay-ms", required_argument, NULL, 'd'},
        {"jitter-ms", required_argument, NULL, 'j'}, {"control", required_argument, NULL, 'c'},
        {"seed", required_argument, NULL, 's'},      {NULL, 0, NULL, 0}};
    static tundelay td; /* large (a packet buffer): not on the stack */
    const char *dev = NULL;
    const char *delay = "0", *jitter = "0";
    uint64_t seed = mrd_now_ns() ^ ((uint64_t)getpid() << 32);
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'i')
            dev = optarg;
        else if (c == 'd')
            delay = optarg;
        else if (c == 'j')
            jitter = optarg;
        else if (c == 'c')
            td.control = optarg;
        else if (c == 's')
            seed = strtoull(optarg, NULL, 10);
        else
            return usage();
    }
    uint64_t delay_ms = 0, jitter_ms = 0;
    if (dev == NULL || optind != argc || td_parse_arg(delay, &delay_ms) != 0 ||
        td_parse_arg(jitter, &jitter_ms) != 0)
        return usage();
    mrd_log_init(dev, MRD_LOG_INFO);
    td.delay_ns = delay_ms * 1000000ull;
    td.jitter_ns = jitter_ms * 1000000ull;
    td.rng = seed != 0 ? seed : 1;
    td.loop = uv_default_loop();
    mrd_msg msg;
    if (td_open(&td, dev, &msg) != 0) {
        fprintf(stderr, "tundelay: %s\n", msg.text);
        return 1;
    }
    if (td_start(&td, &msg) != 0) {
        fprintf(stderr, "tundelay: %s\n", msg.text);
        td_close(&td);
        return 1;
    }
    printf("tundelay: dev %s delay %llu ms jitter %llu ms seed %llu\n", td.dev,
           (unsigned long long)delay_ms, (unsigned long long)jitter_ms, (unsigned long long)seed);
    fflush(stdout);
    uv_run(td.loop, UV_RUN_DEFAULT);
    td_log_counters(&td, "tundelay_stopped");
    td_close(&td);
    uv_loop_close(td.loop);
    return 0;
}
