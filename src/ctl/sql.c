/*
 * `meridian sql`: one SQL request to an endpoint, the answer as a table or
 * JSON. Without --region the endpoint is the current primary region's: the
 * primary of the highest epoch the regions' agents report (src/ctl/regions.c),
 * or the topology's primary when no agent answers.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_private.h"
#include "meridian/json.h"

#define SQL_TIMEOUT_MS 30000
#define SQL_CELL_MAX 60 /* characters of a value shown in a table */

typedef struct {
    const char *topology, *data, *region, *endpoint, *params, *consistency, *sql;
    const char *after_lsn;
    bool json;
} sql_args;

static const char sql_usage[] =
    "usage: meridian sql TOPOLOGY [--data DIR] [--region NAME] [--endpoint E] [--json]\n"
    "                   [--params JSON-ARRAY] [--consistency eventual|session|strong]\n"
    "                   [--after-lsn N] \"SQL\"\n"
    "  E: cluster (default), reader, custom:NAME, global_writer, instance:ID\n";

static int parse(int argc, char **argv, sql_args *a)
{
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'},     {"region", required_argument, NULL, 'r'},
        {"endpoint", required_argument, NULL, 'e'}, {"json", no_argument, NULL, 'j'},
        {"params", required_argument, NULL, 'p'},   {"consistency", required_argument, NULL, 'c'},
        {"after-lsn", required_argument, NULL, 'a'}, {NULL, 0, NULL, 0}};
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': a->data = optarg; break;
        case 'r': a->region = optarg; break;
        case 'e': a->endpoint = optarg; break;
        case 'j': a->json = true; break;
        case 'p': a->params = optarg; break;
        case 'c': a->consistency = optarg; break;
        case 'a': a->after_lsn = optarg; break;
        default: return -1;
        }
    }
    if (optind + 2 != argc) return -1;
    a->topology = argv[optind];
    a->sql = argv[optind + 1];
    if (a->endpoint == NULL) a->endpoint = "cluster";
    return 0;
}

/* The region to send to: --region, else the current primary (asking the agents). */
static int pick_region(const ctl_ctx *ctx, const sql_args *a, int *out, mrd_msg *msg)
{
    if (a->region != NULL) {
        *out = topo_region_index(ctx->topo, a->region);
        if (*out < 0) return mrd_fail(msg, MRD_ENOTFOUND, "--region %s: no such region", a->region);
        return 0;
    }
    static ctl_regions g;
    ctl_regions_ask(ctx, CTL_STATUS_TIMEOUT_MS, &g);
    *out = g.primary;
    return 0;
}

/* The address of the endpoint asked for, in the region asked for. */
static int endpoint_addr(const ctl_ctx *ctx, const sql_args *a, topo_addr *out, mrd_msg *msg)
{
    const topology *topo = ctx->topo;
    const char *e = a->endpoint;
    bool instance = strncmp(e, "instance:", 9) == 0;
    int ri = 0;
    if (a->region != NULL || !instance) { /* an instance needs no region: ask no agent */
        int rc = pick_region(ctx, a, &ri, msg);
        if (rc != 0) return rc;
    }
    if (instance) {
        const topo_node *n = topo_find(topo, e + 9);
        if (n == NULL || (n->role != TOPO_ROLE_WRITER && n->role != TOPO_ROLE_READER))
            return mrd_fail(msg, MRD_ENOTFOUND, "--endpoint %s: no such instance", e);
        *out = n->addr;
        return 0;
    }
    const topo_region *r = &topo->regions[ri];
    for (int i = 0; i < r->router_count; i++) {
        const topo_router *rt = &r->routers[i];
        if (strcmp(e, "cluster") == 0 && rt->has_cluster) return *out = rt->cluster, 0;
        if (strcmp(e, "reader") == 0 && rt->has_reader) return *out = rt->reader, 0;
        if (strcmp(e, "global_writer") == 0 && rt->has_global_writer)
            return *out = rt->global_writer, 0;
        for (int k = 0; k < r->custom_count; k++)
            if (strncmp(e, "custom:", 7) == 0 && strcmp(e + 7, r->custom[k].name) == 0 &&
                rt->has_custom[k])
                return *out = rt->custom[k], 0;
    }
    return mrd_fail(msg, MRD_ENOTFOUND, "--endpoint %s: region %s has no such endpoint", e,
                    r->name);
}

static int build_body(const sql_args *a, mrd_buf *b)
{
    int rc = mrd_buf_printf(b, "{\"sql\":");
    if (rc == 0) rc = mrd_json_quote(b, a->sql);
    if (rc == 0 && a->params != NULL) rc = mrd_buf_printf(b, ",\"params\":%s", a->params);
    if (rc == 0 && a->consistency != NULL) {
        rc = mrd_buf_printf(b, ",\"consistency\":");
        if (rc == 0) rc = mrd_json_quote(b, a->consistency);
    }
    if (rc == 0 && a->after_lsn != NULL) rc = mrd_buf_printf(b, ",\"after_lsn\":%s", a->after_lsn);
    return rc == 0 ? mrd_buf_printf(b, "}") : rc;
}

/* A JSON value as a table cell. */
static void cell(const mrd_json_doc *d, const mrd_json *v, char *out, size_t len)
{
    switch (v->kind) {
    case MRD_JSON_NULL: snprintf(out, len, "NULL"); break;
    case MRD_JSON_BOOL: snprintf(out, len, "%s", v->boolean ? "true" : "false"); break;
    case MRD_JSON_NUMBER:
        if (v->is_int) snprintf(out, len, "%lld", (long long)v->i);
        else snprintf(out, len, "%.17g", v->num);
        break;
    case MRD_JSON_STRING: snprintf(out, len, "%s", mrd_json_str(d, v)); break;
    default: {
        const mrd_json *b = mrd_json_get(d, v, "base64");
        snprintf(out, len, "<blob %s>", b != NULL ? mrd_json_str(d, b) : "?");
    }
    }
    if (strlen(out) > SQL_CELL_MAX) strcpy(out + SQL_CELL_MAX - 3, "...");
}

static void print_result(const mrd_json_doc *d, const mrd_json *res)
{
    const mrd_json *cols = mrd_json_get(d, res, "columns"), *rows = mrd_json_get(d, res, "rows");
    uint64_t changes = 0, rowid = 0;
    mrd_json_get_u64(d, res, "changes", &changes);
    mrd_json_get_u64(d, res, "last_insert_rowid", &rowid);
    if (cols == NULL || cols->count == 0) {
        printf("%llu row%s changed", (unsigned long long)changes, changes == 1 ? "" : "s");
        if (rowid) printf(", last_insert_rowid %llu", (unsigned long long)rowid);
        printf("\n");
        return;
    }
    size_t w[64] = {0}, nc = cols->count < 64 ? cols->count : 64, i = 0;
    char c[SQL_CELL_MAX + 8];
    for (const mrd_json *k = mrd_json_first(d, cols); k && i < nc; k = mrd_json_next(d, k), i++)
        w[i] = strlen(mrd_json_str(d, k));
    for (const mrd_json *row = mrd_json_first(d, rows); row; row = mrd_json_next(d, row)) {
        i = 0;
        for (const mrd_json *v = mrd_json_first(d, row); v && i < nc; v = mrd_json_next(d, v), i++) {
            cell(d, v, c, sizeof(c));
            if (strlen(c) > w[i]) w[i] = strlen(c);
        }
    }
    i = 0;
    for (const mrd_json *k = mrd_json_first(d, cols); k && i < nc; k = mrd_json_next(d, k), i++)
        printf("%s%-*s", i ? "  " : "", (int)w[i], mrd_json_str(d, k));
    printf("\n");
    for (i = 0; i < nc; i++) {
        printf("%s", i ? "  " : "");
        for (size_t k = 0; k < w[i]; k++)
            putchar('-');
    }
    printf("\n");
    for (const mrd_json *row = mrd_json_first(d, rows); row; row = mrd_json_next(d, row)) {
        i = 0;
        for (const mrd_json *v = mrd_json_first(d, row); v && i < nc; v = mrd_json_next(d, v), i++) {
            cell(d, v, c, sizeof(c));
            printf("%s%-*s", i ? "  " : "", (int)w[i], c);
        }
        printf("\n");
    }
    printf("(%u row%s)\n", rows ? rows->count : 0, rows && rows->count == 1 ? "" : "s");
}

/* Prints the answer; returns 0, or 1 for an error answer. */
static int show(const h2_result *res, bool json)
{
    mrd_json_doc d;
    mrd_msg msg = {{0}};
    if (json && res->status == 200) {
        fwrite(res->body.data, 1, res->body.len, stdout);
        return 0;
    }
    if (mrd_json_parse((const char *)res->body.data, res->body.len, &d, &msg) != 0) {
        fprintf(stderr, "meridian sql: HTTP %d, and the answer is not JSON: %s\n", res->status,
                msg.text);
        return 1;
    }
    const mrd_json *root = mrd_json_root(&d), *err = mrd_json_get(&d, root, "error");
    int rc = 0;
    if (res->status != 200 || err != NULL) {
        const char *code = mrd_json_str(&d, mrd_json_get(&d, err, "code"));
        const char *m = mrd_json_str(&d, mrd_json_get(&d, err, "message"));
        if (json) fwrite(res->body.data, 1, res->body.len, stdout);
        fprintf(stderr, "error %s (HTTP %d): %s\n", code ? code : "?", res->status, m ? m : "");
        rc = 1;
    } else {
        const mrd_json *results = mrd_json_get(&d, root, "results");
        for (const mrd_json *r = mrd_json_first(&d, results); r; r = mrd_json_next(&d, r))
            print_result(&d, r);
        uint64_t lsn = 0, lag = 0;
        mrd_json_get_u64(&d, root, "lsn", &lsn);
        const char *inst = mrd_json_str(&d, mrd_json_get(&d, root, "instance"));
        const char *reg = mrd_json_str(&d, mrd_json_get(&d, root, "region"));
        printf("-- lsn %llu, %s in region %s", (unsigned long long)lsn, inst ? inst : "?",
               reg ? reg : "?");
        if (mrd_json_get_u64(&d, root, "lag_ms", &lag)) printf(", lag %llu ms", (unsigned long long)lag);
        printf("\n");
    }
    mrd_json_free(&d);
    return rc;
}

int ctl_sql_main(int argc, char **argv)
{
    sql_args a = {0};
    if (parse(argc, argv, &a) != 0) {
        fputs(sql_usage, stderr);
        return 2;
    }
    mrd_log_init("cli", MRD_LOG_ERROR);
    static topology topo;
    static ctl_ctx ctx;
    mrd_msg msg = {{0}};
    char data[TOPO_PATH_MAX];
    int rc = topo_load(a.topology, &topo, &msg);
    if (rc == 0) {
        if (a.data != NULL) snprintf(data, sizeof(data), "%s", a.data);
        else snprintf(data, sizeof(data), "data/%s", topo.name);
        rc = ctl_init(&ctx, &topo, a.topology, data, &msg);
    }
    topo_addr addr;
    if (rc == 0) rc = endpoint_addr(&ctx, &a, &addr, &msg);
    mrd_buf body;
    mrd_buf_init(&body);
    h2_result res;
    memset(&res, 0, sizeof(res));
    if (rc == 0) rc = build_body(&a, &body);
    if (rc == 0)
        rc = ctl_fetch_addr(&ctx, &addr, "POST", "/v1/sql", body.data, body.len, SQL_TIMEOUT_MS,
                            &res, &msg);
    mrd_buf_free(&body);
    if (rc != 0) {
        fprintf(stderr, "meridian sql: %s\n", msg.text);
        return 1;
    }
    int out = show(&res, a.json);
    h2_result_free(&res);
    return out;
}
