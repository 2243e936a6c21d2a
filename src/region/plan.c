/*
 * The planner of switchovers and failovers (include/meridian/region.h): from
 * what every region reports, the one next step. Each step is a state posted
 * to one agent, which keeps it durably before it answers; every step can be
 * asked for again after any crash and gives the same answer or the next one.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "meridian/region.h"

const rg_state *rg_highest(const rg_view *views, int n)
{
    const rg_state *h = NULL;
    for (int i = 0; i < n; i++) {
        if (!views[i].reachable) continue;
        const rg_state *s = &views[i].st;
        /* at equal epochs the primary's own word wins: it is told first */
        if (h == NULL || s->epoch > h->epoch ||
            (s->epoch == h->epoch && strcmp(s->primary, s->region) == 0))
            h = s;
    }
    return h;
}

static void set(rg_step *out, int region, const rg_state *s, const char *name, const char *fmt,
                ...) __attribute__((format(printf, 5, 6)));
static void set(rg_step *out, int region, const rg_state *s, const char *name, const char *fmt,
                ...)
{
    out->kind = RG_STEP_SET;
    out->region = region;
    out->set = *s;
    out->name = name;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->why, sizeof(out->why), fmt, ap);
    va_end(ap);
}

static void say(rg_step *out, rg_step_kind kind, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void say(rg_step *out, rg_step_kind kind, const char *name, const char *fmt, ...)
{
    out->kind = kind;
    out->name = name;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->why, sizeof(out->why), fmt, ap);
    va_end(ap);
}

/* Region r's own state moved to epoch g with primary p, its history forking at fork. */
static rg_state moved(const rg_state *own, uint64_t g, const char *p, uint64_t fork)
{
    rg_state s = *own;
    s.epoch = g;
    snprintf(s.primary, sizeof(s.primary), "%s", p);
    s.fork_lsn = fork;
    s.op = RG_OP_NONE;
    s.op_epoch = 0;
    s.op_to[0] = '\0';
    return s;
}

/* The target is primary at g: its writer opens, then every other region is told. */
static void finish(const rg_plan_req *req, const rg_view *views, const rg_state *h, rg_step *out)
{
    const topology *t = req->topo;
    int T = req->target;
    const rg_view *tv = &views[T];
    const char *tn = t->regions[T].name;
    uint64_t g = h->epoch;
    if (tv->st.op == RG_OP_SWITCHOVER) { /* the target was draining: call the switchover off */
        int x = topo_region_index(t, tv->st.op_to);
        if (x < 0 || !views[x].reachable)
            return say(out, RG_STEP_FAIL, "undrain",
                       "%s drains towards %s, which does not answer: it may have been promoted "
                       "at epoch %" PRIu64 "; ask again when it answers",
                       tn, tv->st.op_to, tv->st.op_epoch);
        if (views[x].st.epoch >= tv->st.op_epoch)
            return say(out, RG_STEP_FAIL, "undrain",
                       "%s already runs at epoch %" PRIu64 "; switch over to %s instead",
                       tv->st.op_to, views[x].st.epoch, tv->st.op_to);
        rg_state s = tv->st;
        s.op = RG_OP_NONE;
        s.op_epoch = 0;
        s.op_to[0] = '\0';
        return set(out, T, &s, "undrain", "%s takes writes again: the switchover to %s is off",
                   tn, tv->st.op_to);
    }
    if (!tv->writer_reachable || tv->writer_mode != RG_INST_WRITER || !tv->writer_ready ||
        tv->writer_epoch < rg_volume_epoch_min(g))
        return say(out, RG_STEP_WAIT, "open",
                   "waiting for %s's writer %s to open the volume at epoch >= %" PRIu64, tn,
                   tv->st.writer, rg_volume_epoch_min(g));
    /* the first writer of epoch g knows exactly where the new history starts */
    if (tv->writer_epoch == rg_volume_epoch_min(g) && tv->writer_recovered_vdl != tv->st.fork_lsn) {
        /* below the fork: the target's storage had those commits durable, its writer did not
         * find them; telling the others would make them drop what they hold above it */
        if (tv->writer_recovered_vdl < tv->st.fork_lsn)
            return say(out, RG_STEP_FAIL, "fork",
                       "%s's new writer recovered VDL %" PRIu64 ", below the fork %" PRIu64
                       " its agent held durable: the other regions are not told (they would "
                       "drop LSNs %" PRIu64 "..%" PRIu64 "); see %s's writer and agent logs",
                       tn, tv->writer_recovered_vdl, tv->st.fork_lsn,
                       tv->writer_recovered_vdl + 1, tv->st.fork_lsn, tn);
        rg_state s = tv->st;
        s.fork_lsn = tv->writer_recovered_vdl;
        return set(out, T, &s, "fork",
                   "epoch %" PRIu64 " continues the log after LSN %" PRIu64 " (recovered)", g,
                   s.fork_lsn);
    }
    for (int r = 0; r < t->region_count; r++) {
        if (r == T || !views[r].reachable) continue;
        const rg_state *o = &views[r].st;
        /* the fork too: a region that learned epoch g from a peer before the fork step
         * holds the fork of the promotion, and would take its own records above it for a
         * divergent tail */
        if (o->epoch == g && strcmp(o->primary, tn) == 0 && o->op == RG_OP_NONE &&
            o->fork_lsn == tv->st.fork_lsn)
            continue;
        if (o->epoch > g)
            return say(out, RG_STEP_FAIL, "tell", "%s is at epoch %" PRIu64 ", above %" PRIu64,
                       t->regions[r].name, o->epoch, g);
        rg_state s = moved(o, g, tn, tv->st.fork_lsn);
        return set(out, r, &s, "tell", "%s follows %s at epoch %" PRIu64, t->regions[r].name, tn,
                   g);
    }
    say(out, RG_STEP_DONE, "done", "%s is primary at epoch %" PRIu64 " (history forks after LSN %" PRIu64 ")",
        tn, g, tv->st.fork_lsn);
}

void rg_plan(const rg_plan_req *req, const rg_view *views, rg_step *out)
{
    memset(out, 0, sizeof(*out));
    const topology *t = req->topo;
    int n = t->region_count, T = req->target;
    const rg_state *h = rg_highest(views, n);
    if (h == NULL) return say(out, RG_STEP_FAIL, "ask", "no region's agent answers");
    const rg_view *tv = &views[T];
    const char *tn = t->regions[T].name;
    if (!tv->reachable)
        return say(out, RG_STEP_FAIL, "ask", "the target region %s's agent does not answer", tn);
    int P = topo_region_index(t, h->primary);
    if (P == T) {
        if (tv->st.epoch < h->epoch) { /* told by another region only: take it over */
            rg_state s = moved(&tv->st, h->epoch, tn, h->fork_lsn);
            return set(out, T, &s, "promote", "%s is primary at epoch %" PRIu64, tn, h->epoch);
        }
        return finish(req, views, h, out);
    }
    if (req->allow_loss) {
        /* above any switchover's epoch too: its target may have been promoted at op_epoch
         * and not answer now; the same epoch again would make two primaries of it */
        uint64_t g = h->epoch;
        for (int r = 0; r < n; r++)
            if (views[r].reachable && views[r].st.op != RG_OP_NONE && views[r].st.op_epoch > g)
                g = views[r].st.op_epoch;
        rg_state s = moved(&tv->st, g + 1, tn, tv->vdl);
        return set(out, T, &s, "promote",
                   "%s is primary at epoch %" PRIu64 " with what it holds (LSN %" PRIu64 ")", tn,
                   s.epoch, tv->vdl);
    }
    const rg_view *pv = &views[P];
    const char *pn = t->regions[P].name;
    if (!pv->reachable)
        return say(out, RG_STEP_FAIL, "drain",
                   "the primary region %s does not answer: a switchover needs it; "
                   "`meridian failover --to %s --allow-data-loss` promotes %s with what it holds",
                   pn, tn, tn);
    if (pv->st.epoch != h->epoch)
        return say(out, RG_STEP_FAIL, "drain",
                   "%s is primary at epoch %" PRIu64 " but its agent says epoch %" PRIu64, pn,
                   h->epoch, pv->st.epoch);
    if (pv->st.op == RG_OP_SWITCHOVER && strcmp(pv->st.op_to, tn) != 0) {
        int x = topo_region_index(t, pv->st.op_to);
        if (x < 0 || !views[x].reachable || views[x].st.epoch >= pv->st.op_epoch)
            return say(out, RG_STEP_FAIL, "drain",
                       "%s drains towards %s (epoch %" PRIu64 "), which does not answer or was "
                       "promoted: finish that switchover first",
                       pn, pv->st.op_to, pv->st.op_epoch);
    }
    if (pv->st.op != RG_OP_SWITCHOVER || strcmp(pv->st.op_to, tn) != 0) {
        rg_state s = pv->st;
        s.op = RG_OP_SWITCHOVER;
        s.op_epoch = h->epoch + 1;
        snprintf(s.op_to, sizeof(s.op_to), "%s", tn);
        return set(out, P, &s, "drain",
                   "%s takes no new writes and finishes those in flight (towards %s, epoch "
                   "%" PRIu64 ")",
                   pn, tn, s.op_epoch);
    }
    if (!pv->writer_reachable || pv->writer_mode != RG_INST_DRAINED || !pv->writer_ready)
        return say(out, RG_STEP_WAIT, "drain",
                   "waiting for %s's writer %s to finish the writes in flight", pn,
                   pv->st.writer);
    /* A writer that just opened (one that replaced a dead writer mid-drain) has nothing in
     * flight but its VDL covers what it recovered only once the new volume epoch's first
     * records are durable; until then it says less than its own region, or the target,
     * holds, and that is no final VDL */
    uint64_t final = pv->writer_vdl, held = pv->writer_recovered_vdl;
    if (pv->vdl > held) held = pv->vdl;
    if (tv->vdl > held) held = tv->vdl;
    if (final < held)
        return say(out, RG_STEP_WAIT, "drain",
                   "waiting for %s's writer %s: its VDL %" PRIu64 " is below LSN %" PRIu64
                   " the regions hold",
                   pn, pv->st.writer, final, held);
    if (tv->vdl < final)
        return say(out, RG_STEP_WAIT, "catch-up",
                   "%s holds LSN %" PRIu64 " of %s's final %" PRIu64, tn, tv->vdl, pn, final);
    rg_state s = moved(&tv->st, pv->st.op_epoch, tn, final);
    set(out, T, &s, "promote",
        "%s holds everything up to %s's final LSN %" PRIu64 ": primary at epoch %" PRIu64, tn, pn,
        final, s.epoch);
}
