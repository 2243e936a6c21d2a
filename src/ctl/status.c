/*
 * `meridian status`: every process of the topology, as a table or as JSON,
 * then the regions as their agents see them (GET /v1/region): the current
 * primary and global epoch, each region's role, epoch and writer, and what
 * is under way (a switchover, a rejoin, a saved divergent tail, a region
 * that has not heard of the latest epoch yet). A process's role is the one
 * it says it runs, which a failover may have changed from the topology's.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_private.h"
#include "meridian/json.h"

#define STATUS_NOTES_MAX (TOPO_REGIONS_MAX * 4)
#define STATUS_NOTE_BYTES (TOPO_PATH_MAX * 3 + MRD_MSG_MAX + 256)

typedef struct {
    const topo_node *node;
    topo_role role;    /* what it says it runs (GET /v1/status "role"); else the topology's */
    const char *state; /* running, unresponsive, stopped, foreign */
    long pid;          /* 0: none */
    bool has_scl, has_vdl, has_epoch, has_lag; /* what roles report on /v1/status */
    uint64_t scl, vdl, epoch, lag_ms, lag_lsn;
    bool has_checksum; /* agents: the rolling checksum of the volume at checksum_lsn */
    uint64_t checksum_lsn;
    char checksum[16];
    char detail[MRD_MSG_MAX];
} status_row;

typedef struct {
    status_row rows[CTL_NODES_MAX];
    int count;
    const ctl_ctx *ctx;
    ctl_regions regions;
    char notes[STATUS_NOTES_MAX][STATUS_NOTE_BYTES]; /* what is under way, one line each */
    int note_count;
} status_table;

static long json_pid(const h2_result *res)
{
    const char *p = res->body.data != NULL ? strstr((char *)res->body.data, "\"pid\":") : NULL;
    return p != NULL ? strtol(p + 6, NULL, 10) : 0;
}

/* The role a process runs, and SCL, VDL and epoch when its status answer gives them. */
static void read_status_fields(status_row *row, const h2_result *res)
{
    mrd_json_doc doc;
    if (mrd_json_parse((const char *)res->body.data, res->body.len, &doc, NULL) != 0) return;
    const mrd_json *root = mrd_json_root(&doc);
    const mrd_json *role = mrd_json_get(&doc, root, "role");
    int parsed = role != NULL && role->kind == MRD_JSON_STRING
                     ? topo_role_parse(mrd_json_str(&doc, role))
                     : -1;
    if (parsed >= 0) row->role = (topo_role)parsed;
    row->has_scl = mrd_json_get_u64(&doc, root, "scl", &row->scl);
    row->has_vdl = mrd_json_get_u64(&doc, root, "vdl", &row->vdl);
    row->has_epoch = mrd_json_get_u64(&doc, root, "epoch", &row->epoch);
    row->has_lag = mrd_json_get_u64(&doc, root, "lag_ms", &row->lag_ms);
    mrd_json_get_u64(&doc, root, "lag_lsn", &row->lag_lsn);
    const mrd_json *ck = mrd_json_get(&doc, root, "checksum");
    const char *text = ck != NULL ? mrd_json_str(&doc, ck) : NULL;
    row->has_checksum = text != NULL && strlen(text) < sizeof(row->checksum) &&
                        mrd_json_get_u64(&doc, root, "checksum_lsn", &row->checksum_lsn);
    if (row->has_checksum) snprintf(row->checksum, sizeof(row->checksum), "%s", text);
    mrd_json_free(&doc);
}

/* The highest VDL the region's storage nodes have heard of from the writer; false if none. */
static bool region_vdl(const status_table *t, int region, uint64_t *vdl)
{
    bool any = false;
    *vdl = 0;
    for (int i = 0; i < t->count; i++) {
        const status_row *r = &t->rows[i];
        if (r->node->region != region || !r->has_vdl || strcmp(r->state, "running") != 0 ||
            r->role == TOPO_ROLE_READER)
            continue;
        if (!any || r->vdl > *vdl) *vdl = r->vdl;
        any = true;
    }
    return any;
}

/* Agents of two regions whose checksums differ at the same LSN: true, and prints them. */
static bool checksum_mismatch(const status_table *t, FILE *out)
{
    bool found = false;
    for (int i = 0; i < t->count; i++)
        for (int j = i + 1; j < t->count; j++) {
            const status_row *a = &t->rows[i], *b = &t->rows[j];
            if (a->role != TOPO_ROLE_AGENT || b->role != TOPO_ROLE_AGENT || !a->has_checksum ||
                !b->has_checksum || a->checksum_lsn != b->checksum_lsn ||
                strcmp(a->checksum, b->checksum) == 0)
                continue;
            found = true;
            if (out != NULL)
                fprintf(out, "checksum mismatch: %s has %s and %s has %s at LSN %llu\n",
                        a->node->id, a->checksum, b->node->id, b->checksum,
                        (unsigned long long)a->checksum_lsn);
        }
    return found;
}

/* "TOPOLOGY [--data DIR]" to type again: --data only when it is not the default one. */
static void cli_args(const ctl_ctx *ctx, char *buf, size_t len)
{
    char def[TOPO_NAME_MAX + 8], real[PATH_MAX];
    snprintf(def, sizeof(def), "data/%s", ctx->topo->name);
    if (realpath(def, real) != NULL && strcmp(real, ctx->data_dir) == 0)
        snprintf(buf, len, "%s", ctx->topo_path);
    else
        snprintf(buf, len, "%s --data %s", ctx->topo_path, ctx->data_dir);
}

static void note(status_table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(status_table *t, const char *fmt, ...)
{
    if (t->note_count == STATUS_NOTES_MAX) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->notes[t->note_count++], STATUS_NOTE_BYTES, fmt, ap);
    va_end(ap);
}

/* Region `from` drains towards s->op_to: how far it got, and the commands that end it. */
static void switchover_note(status_table *t, const char *from, const rg_state *s, const char *args)
{
    const rg_state *h = ctl_regions_highest(&t->regions);
    if (h->epoch >= s->op_epoch && strcmp(h->primary, s->op_to) == 0)
        note(t,
             "switchover to %s at epoch %" PRIu64 " under way: %s is primary, %s has not been "
             "told yet; run `meridian switchover %s --to %s` to finish it",
             s->op_to, s->op_epoch, s->op_to, from, args, s->op_to);
    else
        note(t,
             "switchover to %s at epoch %" PRIu64 " under way: %s drains; run `meridian "
             "switchover %s --to %s` to finish it or `--to %s` to call it off",
             s->op_to, s->op_epoch, from, args, s->op_to, from);
}

/* What is under way, from the agents' answers: one line each. */
static void collect_notes(status_table *t)
{
    const topology *topo = t->ctx->topo;
    const ctl_regions *g = &t->regions;
    const rg_state *h = ctl_regions_highest(g);
    char args[TOPO_PATH_MAX * 2 + 16];
    cli_args(t->ctx, args, sizeof(args));
    t->note_count = 0;
    for (int r = 0; h != NULL && r < topo->region_count; r++) {
        const rg_view *v = &g->views[r];
        const ctl_agent_extra *x = &g->extra[r];
        const char *name = topo->regions[r].name;
        if (!v->reachable) continue;
        if (v->st.op == RG_OP_SWITCHOVER) switchover_note(t, name, &v->st, args);
        if (v->st.epoch < h->epoch)
            note(t, "%s still at epoch %" PRIu64 ": it has not heard of epoch %" PRIu64 " yet",
                 name, v->st.epoch, h->epoch);
        if (x->rejoin[0]) note(t, "%s rejoins: %s", name, x->rejoin);
        if (x->has_divergent)
            note(t,
                 "%s saved its divergent tail to %s: LSNs %" PRIu64 "..%" PRIu64 ", %" PRIu64
                 " commits (%" PRIu64 " records)",
                 name, x->divergent_path, x->divergent_after_lsn + 1, x->divergent_to_lsn,
                 x->divergent_commits, x->divergent_records);
    }
}

/* "primary r2 at global epoch 1", then "region r1: secondary of r2, epoch 1, writer r1-w1". */
static void print_regions(const ctl_ctx *ctx, const status_table *t)
{
    FILE *out = ctx->out;
    const topology *topo = ctx->topo;
    const ctl_regions *g = &t->regions;
    const rg_state *h = ctl_regions_highest(g);
    const char *primary = topo->regions[g->primary].name;
    if (h == NULL)
        fprintf(out, "primary %s (the topology's: no region's agent answers)\n", primary);
    else if (strcmp(primary, topo->primary) != 0)
        fprintf(out, "primary %s at global epoch %" PRIu64 " (the topology file names %s)\n",
                primary, h->epoch, topo->primary);
    else
        fprintf(out, "primary %s at global epoch %" PRIu64 "\n", primary, h->epoch);
    for (int r = 0; r < topo->region_count; r++) {
        const rg_state *s = &g->views[r].st;
        fprintf(out, "region %s: ", topo->regions[r].name);
        if (!g->views[r].reachable) {
            fprintf(out, "agent not answering\n");
            continue;
        }
        if (strcmp(s->primary, s->region) == 0)
            fprintf(out, "primary");
        else
            fprintf(out, "secondary of %s", s->primary);
        fprintf(out, ", epoch %" PRIu64 ", writer %s", s->epoch, s->writer);
        if (s->writer_gen > 0) fprintf(out, " (gen %" PRIu64 ")", s->writer_gen);
        fprintf(out, "\n");
    }
    for (int i = 0; i < t->note_count; i++)
        fprintf(out, "%s\n", t->notes[i]);
}

/* A region's members in --json beside name and vdl: what its agent says. */
static void region_json(mrd_buf *b, const rg_view *v, const ctl_agent_extra *x)
{
    mrd_buf_printf(b, ",\"agent_answering\":%s", v->reachable ? "true" : "false");
    if (!v->reachable) return;
    const rg_state *s = &v->st;
    mrd_buf_printf(b, ",\"role\":\"%s\",\"epoch\":%" PRIu64 ",\"primary\":",
                   strcmp(s->primary, s->region) == 0 ? "primary" : "secondary", s->epoch);
    mrd_json_quote(b, s->primary);
    mrd_buf_printf(b, ",\"fork_lsn\":%" PRIu64 ",\"writer\":", s->fork_lsn);
    mrd_json_quote(b, s->writer);
    mrd_buf_printf(b, ",\"writer_gen\":%" PRIu64 ",\"op\":\"%s\"", s->writer_gen,
                   s->op == RG_OP_SWITCHOVER ? "switchover" : "none");
    if (s->op == RG_OP_SWITCHOVER) {
        mrd_buf_printf(b, ",\"op_epoch\":%" PRIu64 ",\"op_to\":", s->op_epoch);
        mrd_json_quote(b, s->op_to);
    }
    if (x->rejoin[0]) {
        mrd_buf_printf(b, ",\"rejoin\":");
        mrd_json_quote(b, x->rejoin);
    }
    if (x->has_divergent) {
        mrd_buf_printf(b, ",\"divergent\":{\"path\":");
        mrd_json_quote(b, x->divergent_path);
        mrd_buf_printf(b,
                       ",\"after_lsn\":%" PRIu64 ",\"to_lsn\":%" PRIu64 ",\"records\":%" PRIu64
                       ",\"commits\":%" PRIu64 "}",
                       x->divergent_after_lsn, x->divergent_to_lsn, x->divergent_records,
                       x->divergent_commits);
    }
}

/* running: answers as the pid its pid file names; foreign: something else answers there. */
static int probe_node(const topology *topo, const topo_node *node, void *ud)
{
    status_table *t = ud;
    if (t->count >= CTL_NODES_MAX) return MRD_ETOOBIG;
    status_row *row = &t->rows[t->count++];
    memset(row, 0, sizeof(*row));
    row->node = node;
    row->role = node->role;
    row->pid = (long)ctl_running_pid(t->ctx, node);
    h2_result res;
    memset(&res, 0, sizeof(res));
    mrd_msg msg = {{0}};
    int rc = ctl_fetch(t->ctx, node, "GET", "/v1/status", NULL, 0, CTL_STATUS_TIMEOUT_MS, &res,
                       &msg);
    bool answered = rc == 0 && res.status == 200;
    long answered_pid = answered ? json_pid(&res) : 0;
    if (answered) read_status_fields(row, &res);
    h2_result_free(&res);
    if (row->pid != 0 && answered && answered_pid == row->pid) {
        row->state = "running";
    } else if (row->pid != 0) {
        row->state = "unresponsive";
        snprintf(row->detail, sizeof(row->detail), "%s", rc != 0 ? msg.text : "bad status answer");
    } else if (answered) {
        row->state = "foreign";
        snprintf(row->detail, sizeof(row->detail),
                 "a process not started from this data folder answers there (pid %ld)",
                 answered_pid);
    } else {
        row->state = "stopped";
    }
    return 0;
}

static void print_table(const ctl_ctx *ctx, const status_table *t)
{
    FILE *out = ctx->out;
    fprintf(out, "%-20s %-8s %-12s %-6s %-22s %-13s %-8s %s\n", "ID", "ROLE", "REGION", "AZ",
            "ADDRESS", "STATE", "PID", "VOLUME");
    for (int i = 0; i < t->count; i++) {
        const status_row *r = &t->rows[i];
        const topo_region *region = &ctx->topo->regions[r->node->region];
        char addr[128], pid[24] = "-", scl[80] = "-";
        if (r->pid != 0) snprintf(pid, sizeof(pid), "%ld", r->pid);
        if (r->has_scl)
            snprintf(scl, sizeof(scl), "scl %llu", (unsigned long long)r->scl);
        else if (r->has_lag)
            snprintf(scl, sizeof(scl), "vdl %llu, lag %llu ms / %llu lsn",
                     (unsigned long long)r->vdl, (unsigned long long)r->lag_ms,
                     (unsigned long long)r->lag_lsn);
        else if (r->has_vdl)
            snprintf(scl, sizeof(scl), "vdl %llu, epoch %llu", (unsigned long long)r->vdl,
                     (unsigned long long)r->epoch);
        fprintf(out, "%-20s %-8s %-12s %-6s %-22s %-13s %-8s %s%s%s\n", r->node->id,
                topo_role_name(r->role), region->name, region->azs[r->node->az],
                topo_addr_str(&r->node->addr, addr, sizeof(addr)), r->state, pid, scl,
                r->detail[0] ? "  " : "", r->detail);
    }
    print_regions(ctx, t);
    for (int i = 0; i < ctx->topo->region_count; i++) {
        uint64_t vdl;
        if (region_vdl(t, i, &vdl))
            fprintf(out, "volume of region %s: VDL %llu\n", ctx->topo->regions[i].name,
                    (unsigned long long)vdl);
    }
    for (int i = 0; i < t->count; i++)
        if (t->rows[i].has_checksum)
            fprintf(out, "checksum of region %s: %s at LSN %llu\n",
                    ctx->topo->regions[t->rows[i].node->region].name, t->rows[i].checksum,
                    (unsigned long long)t->rows[i].checksum_lsn);
    checksum_mismatch(t, out);
}

static void print_json(const ctl_ctx *ctx, const status_table *t)
{
    mrd_buf b;
    mrd_buf_init(&b);
    mrd_buf_printf(&b, "{\"database\":");
    mrd_json_quote(&b, ctx->topo->name);
    const rg_state *h = ctl_regions_highest(&t->regions);
    mrd_buf_printf(&b, ",\"primary\":");
    mrd_json_quote(&b, ctx->topo->regions[t->regions.primary].name);
    mrd_buf_printf(&b, ",\"topology_primary\":");
    mrd_json_quote(&b, ctx->topo->primary);
    if (h != NULL)
        mrd_buf_printf(&b, ",\"global_epoch\":%" PRIu64, h->epoch);
    else
        mrd_buf_printf(&b, ",\"global_epoch\":null");
    mrd_buf_printf(&b, ",\"processes\":[");
    for (int i = 0; i < t->count; i++) {
        const status_row *r = &t->rows[i];
        const topo_region *region = &ctx->topo->regions[r->node->region];
        char addr[128];
        mrd_buf_printf(&b, "%s{\"id\":", i ? "," : "");
        mrd_json_quote(&b, r->node->id);
        mrd_buf_printf(&b, ",\"role\":\"%s\",\"topology_role\":\"%s\",\"region\":",
                       topo_role_name(r->role), topo_role_name(r->node->role));
        mrd_json_quote(&b, region->name);
        mrd_buf_printf(&b, ",\"az\":");
        mrd_json_quote(&b, region->azs[r->node->az]);
        mrd_buf_printf(&b, ",\"address\":");
        mrd_json_quote(&b, topo_addr_str(&r->node->addr, addr, sizeof(addr)));
        mrd_buf_printf(&b, ",\"state\":\"%s\",\"pid\":", r->state);
        if (r->pid != 0)
            mrd_buf_printf(&b, "%ld", r->pid);
        else
            mrd_buf_printf(&b, "null");
        if (r->has_scl) mrd_buf_printf(&b, ",\"scl\":%llu", (unsigned long long)r->scl);
        if (r->has_epoch) mrd_buf_printf(&b, ",\"epoch\":%llu", (unsigned long long)r->epoch);
        if (r->has_vdl) mrd_buf_printf(&b, ",\"vdl\":%llu", (unsigned long long)r->vdl);
        if (r->has_lag)
            mrd_buf_printf(&b, ",\"lag_ms\":%llu,\"lag_lsn\":%llu", (unsigned long long)r->lag_ms,
                           (unsigned long long)r->lag_lsn);
        mrd_buf_printf(&b, "}");
    }
    mrd_buf_printf(&b, "],\"regions\":[");
    for (int i = 0; i < ctx->topo->region_count; i++) {
        uint64_t vdl;
        mrd_buf_printf(&b, "%s{\"name\":", i ? "," : "");
        mrd_json_quote(&b, ctx->topo->regions[i].name);
        if (region_vdl(t, i, &vdl))
            mrd_buf_printf(&b, ",\"vdl\":%llu", (unsigned long long)vdl);
        else
            mrd_buf_printf(&b, ",\"vdl\":null");
        region_json(&b, &t->regions.views[i], &t->regions.extra[i]);
        mrd_buf_printf(&b, "}");
    }
    mrd_buf_printf(&b, "],\"under_way\":[");
    for (int i = 0; i < t->note_count; i++) {
        if (i > 0) mrd_buf_printf(&b, ",");
        mrd_json_quote(&b, t->notes[i]);
    }
    mrd_buf_printf(&b, "],\"checksum_mismatch\":%s}\n",
                   checksum_mismatch(t, NULL) ? "true" : "false");
    fwrite(b.data, 1, b.len, ctx->out);
    mrd_buf_free(&b);
}

int ctl_status(ctl_ctx *ctx, bool json, mrd_msg *msg)
{
    static status_table t;
    t.count = 0;
    t.ctx = ctx;
    int rc = topo_each_node(ctx->topo, probe_node, &t);
    if (rc != 0) return mrd_fail(msg, rc, "too many processes in the topology");
    ctl_regions_ask(ctx, CTL_STATUS_TIMEOUT_MS, &t.regions);
    collect_notes(&t);
    if (json)
        print_json(ctx, &t);
    else
        print_table(ctx, &t);
    return 0;
}
