/* `meridian status`: every process of the topology, as a table or as JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_private.h"
#include "meridian/json.h"

typedef struct {
    const topo_node *node;
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
} status_table;

static long json_pid(const h2_result *res)
{
    const char *p = res->body.data != NULL ? strstr((char *)res->body.data, "\"pid\":") : NULL;
    return p != NULL ? strtol(p + 6, NULL, 10) : 0;
}

/* SCL, VDL and epoch from a storage node's status answer, when it gives them. */
static void read_volume_fields(status_row *row, const h2_result *res)
{
    mrd_json_doc doc;
    if (mrd_json_parse((const char *)res->body.data, res->body.len, &doc, NULL) != 0) return;
    const mrd_json *root = mrd_json_root(&doc);
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
            r->node->role == TOPO_ROLE_READER)
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
            if (a->node->role != TOPO_ROLE_AGENT || b->node->role != TOPO_ROLE_AGENT ||
                !a->has_checksum || !b->has_checksum || a->checksum_lsn != b->checksum_lsn ||
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

/* running: answers as the pid its pid file names; foreign: something else answers there. */
static int probe_node(const topology *topo, const topo_node *node, void *ud)
{
    status_table *t = ud;
    if (t->count >= CTL_NODES_MAX) return MRD_ETOOBIG;
    status_row *row = &t->rows[t->count++];
    memset(row, 0, sizeof(*row));
    row->node = node;
    row->pid = (long)ctl_running_pid(t->ctx, node);
    h2_result res;
    memset(&res, 0, sizeof(res));
    mrd_msg msg = {{0}};
    int rc = ctl_fetch(t->ctx, node, "GET", "/v1/status", NULL, 0, CTL_STATUS_TIMEOUT_MS, &res,
                       &msg);
    bool answered = rc == 0 && res.status == 200;
    long answered_pid = answered ? json_pid(&res) : 0;
    if (answered) read_volume_fields(row, &res);
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
                topo_role_name(r->node->role), region->name, region->azs[r->node->az],
                topo_addr_str(&r->node->addr, addr, sizeof(addr)), r->state, pid, scl,
                r->detail[0] ? "  " : "", r->detail);
    }
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
    mrd_buf_printf(&b, ",\"primary\":");
    mrd_json_quote(&b, ctx->topo->primary);
    mrd_buf_printf(&b, ",\"processes\":[");
    for (int i = 0; i < t->count; i++) {
        const status_row *r = &t->rows[i];
        const topo_region *region = &ctx->topo->regions[r->node->region];
        char addr[128];
        mrd_buf_printf(&b, "%s{\"id\":", i ? "," : "");
        mrd_json_quote(&b, r->node->id);
        mrd_buf_printf(&b, ",\"role\":\"%s\",\"region\":", topo_role_name(r->node->role));
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
            mrd_buf_printf(&b, ",\"vdl\":%llu}", (unsigned long long)vdl);
        else
            mrd_buf_printf(&b, ",\"vdl\":null}");
    }
    mrd_buf_printf(&b, "],\"checksum_mismatch\":%s}\n", checksum_mismatch(t, NULL) ? "true" : "false");
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
    if (json)
        print_json(ctx, &t);
    else
        print_table(ctx, &t);
    return 0;
}
