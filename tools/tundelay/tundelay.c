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
 *
 * This file does the I/O (the device, the clock, signals, the control file); what
 * happens to the bytes read, and what the control file's text means, is tdlink.c,
 * which does none, so that tests/fuzz/tundelay can drive it with any bytes.
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
#include "tdlink.h"

#define TD_READ_BATCH_MAX 256u /* packets read per wake-up */
#define TD_SIGNALS 5

typedef struct {
    uv_loop_t *loop;
    uv_poll_t poll;
    uv_timer_t timer;
    uv_signal_t sigs[TD_SIGNALS];
    int fd;
    char dev[IFNAMSIZ];
    const char *control;
    td_link link; /* the packets held, the delay and the counters */
    uint8_t buf[TD_PACKET_BYTES_MAX];
} tundelay;

/* A TUN write hands the packet to the stack at once; it does not block. */
static int td_write(void *ctx, const uint8_t *p, size_t len)
{
    tundelay *td = ctx;
    return write(td->fd, p, len) == (ssize_t)len ? 0 : -1;
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
    td_arm(td, td_flush(&td->link, now, td_write, td), now);
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
        td_enqueue(&td->link, td->buf, (size_t)n, now);
    }
    /* A zero delay passes packets on at once. */
    td_arm(td, td_flush(&td->link, now, td_write, td), now);
}

static void td_log_counters(const tundelay *td, const char *event)
{
    const td_link *l = &td->link;
    MRD_INFO(event,
             "dev=%s delay_ms=%.3f jitter_ms=%.3f blackhole=%s read=%llu written=%llu "
             "dropped_blackhole=%llu dropped_overflow=%llu dropped_malformed=%llu "
             "write_errors=%llu held=%zu",
             td->dev, (double)l->delay_ns / 1e6, (double)l->jitter_ns / 1e6,
             l->blackhole ? "on" : "off", (unsigned long long)l->n.read,
             (unsigned long long)l->n.written, (unsigned long long)l->n.dropped_blackhole,
             (unsigned long long)l->n.dropped_overflow, (unsigned long long)l->n.dropped_malformed,
             (unsigned long long)l->n.write_errors, l->q[0].count + l->q[1].count);
}

/* A command-line value: only the number. */
static int td_parse_arg(const char *text, uint64_t *out)
{
    const char *end = NULL;
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
    td->link.delay_ns = d * 1000000ull;
    td->link.jitter_ns = j * 1000000ull;
    td_log_counters(td, "tundelay_delay");
}

static void on_signal(uv_signal_t *s, int signum)
{
    tundelay *td = s->data;
    if (signum == SIGUSR1) {
        td_link_blackhole(&td->link, true); /* drops the packets in flight on a cut link */
        uv_timer_stop(&td->timer);
        td_log_counters(td, "tundelay_blackhole");
    } else if (signum == SIGUSR2) {
        td_link_blackhole(&td->link, false);
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
    td_link_close(&td->link);
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
    td_link_init(&td.link, delay_ms * 1000000ull, jitter_ms * 1000000ull, seed);
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
