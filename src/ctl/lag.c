/*
 * `meridian lag`: asks the current primary region's agent for its /v1/status
 * and prints every region's replication lag as the primary measures it. The
 * current primary is the one of the highest epoch the regions' agents report
 * (src/ctl/regions.c), so the command follows switchovers and failovers; the
 * topology's primary is asked only when no agent says.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ctl_private.h"
#include "meridian/json.h"

#define LAG_WATCH_MS 1000

static const char *json_str(const mrd_json_doc *doc, const mrd_json *obj, const char *key)
{
    const mrd_json *v = mrd_json_get(doc, obj, key);
    const char *s = v != NULL ? mrd_json_str(doc, v) : NULL;
    return s != NULL ? s : "";
}

static void print_region(FILE *out, const mrd_json_doc *doc, const mrd_json *r, bool json,
                         bool first)
{
    static const char *const nums[] = {"lag_ms", "lsn_gap", "bytes_gap", "durable_lsn"};
    uint64_t v[4] = {0};
    for (int i = 0; i < 4; i++)
        mrd_json_get_u64(doc, r, nums[i], &v[i]);
    const char *name = json_str(doc, r, "name"), *role = json_str(doc, r, "role");
    const char *stream = json_str(doc, r, "stream"), *reason = json_str(doc, r, "reason");
    if (!json) {
        fprintf(out, "%-12s %-10s %10llu %10llu %12llu %14llu  %s%s%s\n", name, role,
                (unsigned long long)v[0], (unsigned long long)v[1], (unsigned long long)v[2],
                (unsigned long long)v[3], stream, reason[0] ? "  " : "", reason);
        return;
    }
    mrd_buf b;
    mrd_buf_init(&b);
    mrd_buf_printf(&b, "%s{\"name\":", first ? "" : ",");
    mrd_json_quote(&b, name);
    mrd_buf_printf(&b, ",\"role\":");
    mrd_json_quote(&b, role);
    for (int i = 0; i < 4; i++)
        mrd_buf_printf(&b, ",\"%s\":%llu", nums[i], (unsigned long long)v[i]);
    if (stream[0]) {
        mrd_buf_printf(&b, ",\"stream\":");
        mrd_json_quote(&b, stream);
    }
    mrd_buf_printf(&b, "}");
    fwrite(b.data, 1, b.len, out);
    mrd_buf_free(&b);
}

static int lag_once(ctl_ctx *ctx, ctl_regions *g, bool json, mrd_msg *msg)
{
    ctl_regions_ask(ctx, CTL_STATUS_TIMEOUT_MS, g);
    const char *primary = ctx->topo->regions[g->primary].name;
    const topo_node *agent = &ctx->topo->regions[g->primary].agent;
    mrd_json_doc doc;
    int rc = ctl_get_json(ctx, agent, "/v1/status", CTL_STATUS_TIMEOUT_MS, &doc, msg);
    if (rc != 0) return mrd_fail(msg, rc, "the primary's agent %s: %s", agent->id, msg->text);
    const mrd_json *regions = mrd_json_get(&doc, mrd_json_root(&doc), "regions");
    if (regions == NULL) {
        mrd_json_free(&doc);
        return mrd_fail(msg, MRD_EPROTO, "%s reports no regions (not following its writer yet?)",
                        agent->id);
    }
    FILE *out = ctx->out;
    if (json) {
        fprintf(out, "{\"primary\":\"%s\",", primary);
        if (g->highest >= 0)
            fprintf(out, "\"global_epoch\":%" PRIu64 ",", ctl_regions_highest(g)->epoch);
        fprintf(out, "\"regions\":[");
    } else {
        fprintf(out, "%-12s %-10s %10s %10s %12s %14s  %s\n", "REGION", "ROLE", "LAG_MS", "LSN_GAP",
                "BYTES_GAP", "DURABLE_LSN", "STREAM");
    }
    bool first = true;
    for (const mrd_json *r = mrd_json_first(&doc, regions); r != NULL;
         r = mrd_json_next(&doc, r), first = false)
        print_region(out, &doc, r, json, first);
    if (json) fprintf(out, "]}\n");
    fflush(out);
    mrd_json_free(&doc);
    return 0;
}

int ctl_lag(ctl_ctx *ctx, bool json, bool watch, mrd_msg *msg)
{
    static ctl_regions g;
    for (;;) {
        int rc = lag_once(ctx, &g, json, msg);
        if (rc != 0 || !watch) return rc;
        ctl_sleep_ms(LAG_WATCH_MS);
    }
}
