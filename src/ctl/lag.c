/*
 * `meridian lag`: asks the primary region's agent for its /v1/status and
 * prints every region's replication lag as the primary measures it.
 */
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

static int lag_once(ctl_ctx *ctx, bool json, mrd_msg *msg)
{
    const topo_node *agent = &ctx->topo->regions[ctx->topo->primary_region].agent;
    h2_result res;
    memset(&res, 0, sizeof(res));
    int rc = ctl_fetch(ctx, agent, "GET", "/v1/status", NULL, 0, CTL_STATUS_TIMEOUT_MS, &res, msg);
    if (rc == 0 && res.status != 200)
        rc = mrd_fail(msg, MRD_EPROTO, "%s answered %d", agent->id, res.status);
    mrd_json_doc doc;
    if (rc == 0 && mrd_json_parse((const char *)res.body.data, res.body.len, &doc, msg) != 0)
        rc = MRD_EPARSE;
    h2_result_free(&res);
    if (rc != 0) return mrd_fail(msg, rc, "the primary's agent %s: %s", agent->id, msg->text);
    const mrd_json *regions = mrd_json_get(&doc, mrd_json_root(&doc), "regions");
    if (regions == NULL) {
        mrd_json_free(&doc);
        return mrd_fail(msg, MRD_EPROTO, "%s reports no regions (not following its writer yet?)",
                        agent->id);
    }
    FILE *out = ctx->out;
    if (json)
        fprintf(out, "{\"primary\":\"%s\",\"regions\":[", ctx->topo->primary);
    else
        fprintf(out, "%-12s %-10s %10s %10s %12s %14s  %s\n", "REGION", "ROLE", "LAG_MS", "LSN_GAP",
                "BYTES_GAP", "DURABLE_LSN", "STREAM");
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
    for (;;) {
        int rc = lag_once(ctx, json, msg);
        if (rc != 0 || !watch) return rc;
        ctl_sleep_ms(LAG_WATCH_MS);
    }
}
