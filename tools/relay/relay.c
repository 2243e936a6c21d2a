/*
 * relay: a TCP relay that emulates a WAN relay_link between regions, in user space
 * (this kernel has no netem qdisc). Every byte is held for the given delay in
 * each direction before it is passed on, in order; the relay_link can be cut:
 *
 *   relay --listen HOST:PORT --to HOST:PORT [--delay-ms N]
 *
 *   SIGUSR1  partition: bytes in both directions are dropped (connections stay
 *            open, as when a WAN relay_link blackholes), until
 *   SIGUSR2  heals the relay_link.
 *   SIGTERM  stops.
 *
 * It prints one line when it listens; a test starts it, reads that line and
 * ends it by pid.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "meridian/common.h"
#include "meridian/topo.h"

#define RELAY_HELD_BYTES_MAX (256u << 20) /* per direction: beyond, reading pauses */

typedef struct chunk {
    struct chunk *next;
    uint64_t due_ns; /* never before the delay has passed: ns, not rounded ms */
    size_t len;
    char data[];
} chunk;

typedef struct pipe_ pipe_;
typedef struct relay_link relay_link;

/* One direction: reads from `from`, holds, writes to `to`. */
struct pipe_ {
    relay_link *l;
    uv_tcp_t *from, *to;
    chunk *head, *tail;
    size_t held;
    bool reading;
};

struct relay_link {
    uv_tcp_t a, b; /* a: accepted, b: connected to the target */
    uv_connect_t conn;
    pipe_ ab, ba;
    int open_handles;
    bool closing, connected;
};

static uv_loop_t *loop;
static uint64_t delay_ms;
static bool partitioned;
static struct sockaddr_storage target;
static uv_timer_t tick;

static void link_close(relay_link *l);

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    buf->base = malloc(65536);
    buf->len = buf->base ? 65536 : 0;
}

static void on_write(uv_write_t *w, int status)
{
    free(w->data);
    free(w);
}

static void pipe_flush(pipe_ *p, uint64_t now)
{
    while (p->head != NULL && p->head->due_ns <= now && p->l->connected && !p->l->closing) {
        chunk *c = p->head;
        p->head = c->next;
        if (p->head == NULL) p->tail = NULL;
        p->held -= c->len;
        uv_write_t *w = malloc(sizeof(*w));
        uv_buf_t buf = uv_buf_init(c->data, (unsigned)c->len);
        w->data = c;
        if (w == NULL || uv_write(w, (uv_stream_t *)p->to, &buf, 1, on_write) != 0) {
            free(c);
            free(w);
            link_close(p->l);
            return;
        }
    }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    relay_link *l = s->data;
    pipe_ *p = (uv_tcp_t *)s == &l->a ? &l->ab : &l->ba;
    if (n < 0) {
        free(buf->base);
        link_close(l);
        return;
    }
    if (n > 0 && !partitioned) {
        chunk *c = malloc(sizeof(*c) + (size_t)n);
        if (c != NULL) {
            c->next = NULL;
            c->due_ns = mrd_now_ns() + delay_ms * 1000000ull;
            c->len = (size_t)n;
            memcpy(c->data, buf->base, (size_t)n);
            if (p->tail) p->tail->next = c;
            else p->head = c;
            p->tail = c;
            p->held += (size_t)n;
        }
        if (p->held > RELAY_HELD_BYTES_MAX && p->reading) {
            uv_read_stop(s);
            p->reading = false;
        }
    }
    free(buf->base);
    if (delay_ms == 0) pipe_flush(p, mrd_now_ns());
}

static void walk_flush(uv_handle_t *h, void *arg)
{
    if (h->type != UV_TCP || h->data == NULL || uv_is_closing(h)) return;
    relay_link *l = h->data;
    if ((uv_tcp_t *)h != &l->a) return; /* once per relay_link */
    uint64_t now = *(uint64_t *)arg;
    pipe_flush(&l->ab, now);
    pipe_flush(&l->ba, now);
    pipe_ *ps[2] = {&l->ab, &l->ba};
    for (int i = 0; i < 2; i++)
        if (!ps[i]->reading && ps[i]->held < RELAY_HELD_BYTES_MAX / 2 && !l->closing) {
            uv_read_start((uv_stream_t *)ps[i]->from, alloc_cb, on_read);
            ps[i]->reading = true;
        }
}

static void on_tick_walk(uv_timer_t *t)
{
    uint64_t now = mrd_now_ns();
    uv_walk(loop, walk_flush, &now); /* every relay_link's pipes, through the loop's handles */
}

static void free_chunks(pipe_ *p)
{
    while (p->head != NULL) {
        chunk *c = p->head;
        p->head = c->next;
        free(c);
    }
    p->tail = NULL;
}

static void on_closed(uv_handle_t *h)
{
    relay_link *l = h->data;
    if (--l->open_handles == 0) {
        free_chunks(&l->ab);
        free_chunks(&l->ba);
        free(l);
    }
}

static void link_close(relay_link *l)
{
    if (l->closing) return;
    l->closing = true;
    uv_close((uv_handle_t *)&l->a, on_closed);
    uv_close((uv_handle_t *)&l->b, on_closed);
}

static void on_connected(uv_connect_t *c, int status)
{
    relay_link *l = c->data;
    if (status != 0 || l->closing) {
        link_close(l);
        return;
    }
    l->connected = true;
    uv_read_start((uv_stream_t *)&l->a, alloc_cb, on_read);
    uv_read_start((uv_stream_t *)&l->b, alloc_cb, on_read);
    l->ab.reading = l->ba.reading = true;
}

static void on_accept(uv_stream_t *server, int status)
{
    if (status != 0) return;
    relay_link *l = calloc(1, sizeof(*l));
    if (l == NULL) return;
    uv_tcp_init(loop, &l->a);
    uv_tcp_init(loop, &l->b);
    l->a.data = l->b.data = l->conn.data = l;
    l->open_handles = 2;
    l->ab = (pipe_){.l = l, .from = &l->a, .to = &l->b};
    l->ba = (pipe_){.l = l, .from = &l->b, .to = &l->a};
    if (uv_accept(server, (uv_stream_t *)&l->a) != 0 ||
        uv_tcp_connect(&l->conn, &l->b, (struct sockaddr *)&target, on_connected) != 0)
        link_close(l);
}

static void on_signal(uv_signal_t *s, int signum)
{
    if (signum == SIGUSR1) partitioned = true;
    if (signum == SIGUSR2) partitioned = false;
    if (signum == SIGTERM || signum == SIGINT) uv_stop(loop);
    fprintf(stderr, "relay: %s\n", partitioned ? "partitioned" : "healed");
}

static int resolve(const char *text, struct sockaddr_storage *out)
{
    topo_addr a;
    if (topo_addr_parse(text, &a) != 0) return -1;
    if (uv_ip4_addr(a.host, a.port, (struct sockaddr_in *)out) == 0) return 0;
    return uv_ip6_addr(a.host, a.port, (struct sockaddr_in6 *)out);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"to", required_argument, NULL, 't'},
                                         {"delay-ms", required_argument, NULL, 'd'},
                                         {NULL, 0, NULL, 0}};
    const char *listen_at = NULL, *to = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'l') listen_at = optarg;
        else if (c == 't') to = optarg;
        else if (c == 'd') delay_ms = strtoull(optarg, NULL, 10);
        else return 2;
    }
    struct sockaddr_storage la;
    if (listen_at == NULL || to == NULL || resolve(listen_at, &la) != 0 || resolve(to, &target) != 0) {
        fprintf(stderr, "usage: relay --listen HOST:PORT --to HOST:PORT [--delay-ms N]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();
    uv_tcp_t server;
    uv_tcp_init(loop, &server);
    server.data = NULL;
    int rc = uv_tcp_bind(&server, (struct sockaddr *)&la, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&server, 128, on_accept);
    if (rc != 0) {
        fprintf(stderr, "relay: cannot listen on %s: %s\n", listen_at, uv_strerror(rc));
        return 1;
    }
    uv_signal_t sigs[4];
    int nums[4] = {SIGUSR1, SIGUSR2, SIGTERM, SIGINT};
    for (int i = 0; i < 4; i++) {
        uv_signal_init(loop, &sigs[i]);
        sigs[i].data = NULL;
        uv_signal_start(&sigs[i], on_signal, nums[i]);
    }
    uv_timer_init(loop, &tick);
    tick.data = NULL;
    uv_timer_start(&tick, on_tick_walk, 1, 1);
    printf("relay: %s -> %s, delay %llu ms each way\n", listen_at, to, (unsigned long long)delay_ms);
    fflush(stdout);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
