/*
 * A region's control state (include/meridian/region.h): its JSON, its file,
 * and which mode an instance runs in under it.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/json.h"
#include "meridian/region.h"

static const char *op_names[] = {"none", "switchover"};

void rg_state_initial(const topology *t, int region, rg_state *out)
{
    memset(out, 0, sizeof(*out));
    const topo_region *r = &t->regions[region];
    snprintf(out->region, sizeof(out->region), "%s", r->name);
    snprintf(out->primary, sizeof(out->primary), "%s", t->regions[t->primary_region].name);
    snprintf(out->writer, sizeof(out->writer), "%s", r->instances[r->writer].id);
}

void rg_state_encode(const rg_state *s, mrd_buf *out)
{
    mrd_buf_printf(out, "\"region\":");
    mrd_json_quote(out, s->region);
    mrd_buf_printf(out, ",\"epoch\":%" PRIu64 ",\"primary\":", s->epoch);
    mrd_json_quote(out, s->primary);
    mrd_buf_printf(out, ",\"fork_lsn\":%" PRIu64 ",\"writer\":", s->fork_lsn);
    mrd_json_quote(out, s->writer);
    mrd_buf_printf(out, ",\"writer_gen\":%" PRIu64 ",\"op\":\"%s\"", s->writer_gen,
                   op_names[s->op]);
    if (s->op != RG_OP_NONE) {
        mrd_buf_printf(out, ",\"op_epoch\":%" PRIu64 ",\"op_to\":", s->op_epoch);
        mrd_json_quote(out, s->op_to);
    }
    mrd_buf_printf(out, ",\"version\":%" PRIu64, s->version);
}

static int get_name(const topology *t, const mrd_json_doc *d, const mrd_json *v, const char *key,
                    char *dst, bool instance_of, int region, mrd_msg *msg)
{
    if (v->kind != MRD_JSON_STRING || v->str_len == 0 || v->str_len >= TOPO_NAME_MAX)
        return mrd_fail(msg, MRD_EINVAL, "region state: \"%s\": a name of 1..%d bytes", key,
                        TOPO_NAME_MAX - 1);
    const char *s = mrd_json_str(d, v);
    if (strlen(s) != v->str_len)
        return mrd_fail(msg, MRD_EINVAL, "region state: \"%s\": a NUL byte", key);
    if (!instance_of && topo_region_index(t, s) < 0)
        return mrd_fail(msg, MRD_EINVAL, "region state: \"%s\": no region '%s' in %s", key, s,
                        t->path);
    if (instance_of) {
        const topo_node *n = topo_find(t, s);
        if (n == NULL || n->region != region ||
            (n->role != TOPO_ROLE_WRITER && n->role != TOPO_ROLE_READER))
            return mrd_fail(msg, MRD_EINVAL,
                            "region state: \"%s\": '%s' is no instance of region %s", key, s,
                            t->regions[region].name);
    }
    memcpy(dst, s, v->str_len + 1);
    return 0;
}

int rg_state_from_json(const topology *t, const mrd_json_doc *doc, const mrd_json *root,
                       rg_state *out, mrd_msg *msg)
{
    const mrd_json_doc d = *doc;
    int rc = 0;
    rg_state s = {0};
    bool have_region = false, have_primary = false, have_writer = false;
    int region = -1;
    if (root->kind != MRD_JSON_OBJECT) {
        rc = mrd_fail(msg, MRD_EINVAL, "region state: an object, not %s",
                      mrd_json_kind_name(root->kind));
        goto out;
    }
    /* the region first: instance names are checked against it */
    const mrd_json *rv = mrd_json_get(&d, root, "region");
    if (rv == NULL) {
        rc = mrd_fail(msg, MRD_EINVAL, "region state: \"region\" is missing");
        goto out;
    }
    rc = get_name(t, &d, rv, "region", s.region, false, -1, msg);
    if (rc != 0) goto out;
    region = topo_region_index(t, s.region);
    for (const mrd_json *m = mrd_json_first(&d, root); m != NULL; m = mrd_json_next(&d, m)) {
        const char *k = mrd_json_key(&d, m);
        uint64_t *u = NULL;
        if (strlen(k) != m->key_len) {
            /* "epoch\u0000" would pass for "epoch", past the parser's duplicate check */
            rc = mrd_fail(msg, MRD_EINVAL, "region state: unknown key \"%s\\u0000...\"", k);
        } else if (strcmp(k, "region") == 0) {
            have_region = true;
        } else if (strcmp(k, "primary") == 0) {
            rc = get_name(t, &d, m, k, s.primary, false, -1, msg);
            have_primary = true;
        } else if (strcmp(k, "writer") == 0) {
            rc = get_name(t, &d, m, k, s.writer, true, region, msg);
            have_writer = true;
        } else if (strcmp(k, "op_to") == 0) {
            rc = get_name(t, &d, m, k, s.op_to, false, -1, msg);
        } else if (strcmp(k, "op") == 0) {
            const char *o = m->kind == MRD_JSON_STRING ? mrd_json_str(&d, m) : "";
            if (strlen(o) != m->str_len) o = ""; /* "none\u0000x" is no op name */
            int found = -1;
            for (int i = 0; i < 2; i++)
                if (strcmp(o, op_names[i]) == 0) found = i;
            if (found < 0)
                rc = mrd_fail(msg, MRD_EINVAL,
                              "region state: \"op\": none or switchover");
            else
                s.op = (rg_op)found;
        } else if (strcmp(k, "epoch") == 0) {
            u = &s.epoch;
        } else if (strcmp(k, "fork_lsn") == 0) {
            u = &s.fork_lsn;
        } else if (strcmp(k, "writer_gen") == 0) {
            u = &s.writer_gen;
        } else if (strcmp(k, "op_epoch") == 0) {
            u = &s.op_epoch;
        } else if (strcmp(k, "version") == 0) {
            u = &s.version;
        } else {
            rc = mrd_fail(msg, MRD_EINVAL, "region state: unknown key \"%s\"", k);
        }
        if (rc == 0 && u != NULL) {
            if (m->kind != MRD_JSON_NUMBER || !m->is_uint || m->u > UINT64_MAX / 2)
                rc = mrd_fail(msg, MRD_EINVAL,
                              "region state: \"%s\": a non-negative integer below 2^63", k);
            else
                *u = m->u;
        }
        if (rc != 0) goto out;
    }
    if (!have_region || !have_primary || !have_writer) {
        rc = mrd_fail(msg, MRD_EINVAL, "region state: \"%s\" is missing",
                      !have_primary ? "primary" : "writer");
        goto out;
    }
    /* an operation's epoch becomes a state's epoch when its target is promoted */
    if (s.epoch > UINT64_MAX / RG_EPOCH_STEP - 1 || s.op_epoch > UINT64_MAX / RG_EPOCH_STEP - 1) {
        bool op = s.epoch <= UINT64_MAX / RG_EPOCH_STEP - 1;
        rc = mrd_fail(msg, MRD_EINVAL, "region state: \"%s\" %" PRIu64 " is too large",
                      op ? "op_epoch" : "epoch", op ? s.op_epoch : s.epoch);
        goto out;
    }
    if (s.op != RG_OP_NONE && (s.op_to[0] == '\0' || s.op_epoch <= s.epoch)) {
        rc = mrd_fail(msg, MRD_EINVAL,
                      "region state: \"op\" %s needs \"op_to\" and an \"op_epoch\" above "
                      "\"epoch\"",
                      op_names[s.op]);
        goto out;
    }
    if (s.op == RG_OP_NONE && (s.op_to[0] != '\0' || s.op_epoch != 0)) {
        rc = mrd_fail(msg, MRD_EINVAL, "region state: \"op_to\"/\"op_epoch\" without an \"op\"");
        goto out;
    }
    *out = s;
out:
    return rc;
}

int rg_state_decode(const topology *t, const char *text, size_t len, rg_state *out, mrd_msg *msg)
{
    mrd_json_doc d = {0};
    int rc = mrd_json_parse(text, len, &d, msg);
    if (rc == 0) rc = rg_state_from_json(t, &d, mrd_json_root(&d), out, msg);
    mrd_json_free(&d);
    return rc;
}

int rg_state_decode_answer(const topology *t, const char *text, size_t len, rg_state *out,
                           mrd_msg *msg)
{
    mrd_json_doc d = {0};
    int rc = mrd_json_parse(text, len, &d, msg);
    if (rc != 0) return rc;
    const mrd_json *st = mrd_json_get(&d, mrd_json_root(&d), "state");
    if (st == NULL)
        rc = mrd_fail(msg, MRD_EINVAL, "region answer: \"state\" is missing");
    else
        rc = rg_state_from_json(t, &d, st, out, msg);
    mrd_json_free(&d);
    return rc;
}


int rg_state_load(const topology *t, const char *path, rg_state *out, mrd_msg *msg)
{
    char *text = NULL;
    size_t len = 0;
    int rc = mrd_read_file(path, RG_STATE_BYTES_MAX, &text, &len, msg);
    if (rc != 0) return rc;
    mrd_msg why = {{0}};
    rc = rg_state_decode(t, text, len, out, &why);
    free(text);
    if (rc != 0) return mrd_fail(msg, rc, "%s: %s", path, why.text);
    return 0;
}

int rg_state_save(const rg_state *s, const char *path, mrd_msg *msg)
{
    mrd_buf b;
    mrd_buf_init(&b);
    mrd_buf_printf(&b, "{");
    rg_state_encode(s, &b);
    mrd_buf_printf(&b, "}\n");
    int rc = b.data == NULL ? mrd_fail(msg, MRD_ENOMEM, "region state: out of memory")
                            : mrd_write_file_atomic(path, b.data, b.len, msg);
    mrd_buf_free(&b);
    return rc;
}

void rg_state_to_topology(const rg_state *s, topology *t)
{
    int p = topo_region_index(t, s->primary);
    if (p >= 0) t->primary_region = p;
    int r = topo_region_index(t, s->region);
    if (r < 0) return;
    int w = topo_instance_index(&t->regions[r], s->writer);
    if (w >= 0) t->regions[r].writer = w;
}

const char *rg_inst_mode_name(rg_inst_mode m)
{
    static const char *names[] = {"writer", "drained", "standby", "reader"};
    return names[m];
}

rg_inst_mode rg_inst_mode_of(const rg_state *s, const char *id)
{
    if (strcmp(s->writer, id) != 0) return RG_INST_READER;
    if (strcmp(s->primary, s->region) != 0) return RG_INST_STANDBY;
    if (s->op == RG_OP_SWITCHOVER) return RG_INST_DRAINED;
    return RG_INST_WRITER;
}
