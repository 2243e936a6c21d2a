/*
 * The region core's I/O-free parts and its file: a state's JSON round trips
 * exactly; every refusal of hostile bytes names the key at fault and leaves
 * the output alone; the state file survives save and load; an instance's mode
 * follows its region's state; rg_highest's tie rule; and the planner's steps
 * for one planned switchover and one unplanned failover, read as a trace.
 * Topologies are built in memory (region_topo.h): east (primary), west, south.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "meridian/region.h"
#include "region_topo.h"

#define TEXT_MAX 2048

static int setup(void **state)
{
    *state = rt_topology(3);
    return *state == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    free(*state);
    return 0;
}

/* "{...}" around rg_state_encode, as the agent and the CLI write it. */
static void encode(const rg_state *s, mrd_buf *out)
{
    mrd_buf_init(out);
    mrd_buf_printf(out, "{");
    rg_state_encode(s, out);
    mrd_buf_printf(out, "}");
    assert_non_null(out->data);
}

static rg_state make(const topology *t, int region, uint64_t epoch, int primary)
{
    rg_state s;
    rg_state_initial(t, region, &s);
    s.epoch = epoch;
    snprintf(s.primary, sizeof(s.primary), "%s", t->regions[primary].name);
    return s;
}

/* Encode, decode, compare the structs byte for byte, and encode again to the same text. */
static void round_trip(const topology *t, const rg_state *s)
{
    mrd_buf a, b;
    encode(s, &a);
    rg_state back;
    memset(&back, 0x5a, sizeof(back));
    mrd_msg msg = {{0}};
    int rc = rg_state_decode(t, (const char *)a.data, a.len, &back, &msg);
    if (rc != 0) fail_msg("%.*s refused: %s", (int)a.len, (const char *)a.data, msg.text);
    assert_memory_equal(&back, s, sizeof(back));
    encode(&back, &b);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    mrd_buf_free(&a);
    mrd_buf_free(&b);
}

static void initial_state(void **state)
{
    const topology *t = *state;
    rg_state s;
    rg_state_initial(t, 1, &s);
    assert_string_equal(s.region, "west");
    assert_string_equal(s.primary, "east");
    assert_string_equal(s.writer, "west-w1");
    assert_int_equal(s.epoch, 0);
    assert_int_equal(s.op, RG_OP_NONE);
    assert_int_equal(s.version, 0);
    round_trip(t, &s);
}

static void states_round_trip(void **state)
{
    const topology *t = *state;
    for (int r = 0; r < t->region_count; r++) {
        rg_state s = make(t, r, 0, 0);
        round_trip(t, &s);
        s = make(t, r, 7, 2);
        s.fork_lsn = 123456789;
        s.writer_gen = 3;
        s.version = 42;
        snprintf(s.writer, sizeof(s.writer), "%s-r1", t->regions[r].name);
        round_trip(t, &s);
        /* a switchover under way */
        s.op = RG_OP_SWITCHOVER;
        s.op_epoch = 8;
        snprintf(s.op_to, sizeof(s.op_to), "%s", t->regions[(r + 1) % 3].name);
        round_trip(t, &s);
        /* the largest numbers the decoder takes */
        s.epoch = UINT64_MAX / RG_EPOCH_STEP - 2;
        s.op_epoch = s.epoch + 1;
        s.fork_lsn = INT64_MAX;
        s.writer_gen = INT64_MAX;
        s.version = INT64_MAX;
        round_trip(t, &s);
    }
}

/* Members in any order, the answer wrapper around a state, extra keys in the answer. */
static void decode_accepts(void **state)
{
    const topology *t = *state;
    static const char reordered[] = " {\"version\":1 ,\"op\":\"switchover\",\"op_to\":\"west\","
                                    "\"op_epoch\":5,\"writer\":\"east-r1\",\"primary\":\"east\","
                                    "\"region\":\"east\",\"epoch\":4}\n";
    rg_state s;
    mrd_msg msg = {{0}};
    assert_int_equal(rg_state_decode(t, reordered, strlen(reordered), &s, &msg), 0);
    assert_string_equal(s.writer, "east-r1");
    assert_int_equal(s.op, RG_OP_SWITCHOVER);
    assert_string_equal(s.op_to, "west");
    assert_int_equal(s.op_epoch, 5);
    assert_int_equal(s.fork_lsn, 0); /* absent numbers are 0 */
    assert_int_equal(rg_inst_mode_of(&s, "east-r1"), RG_INST_DRAINED);

    rg_state want = make(t, 2, 9, 1), got;
    want.version = 11;
    mrd_buf b;
    mrd_buf_init(&b);
    mrd_buf_printf(&b, "{\"state\":{");
    rg_state_encode(&want, &b);
    mrd_buf_printf(&b, "},\"agent\":\"secondary\",\"vdl\":17,\"primary_vdl\":20,\"rejoin\":\"x\"}");
    assert_int_equal(rg_state_decode_answer(t, (const char *)b.data, b.len, &got, &msg), 0);
    assert_memory_equal(&got, &want, sizeof(got));
    mrd_buf_free(&b);
}

/* ---- refusals -------------------------------------------------------------------------------- */

static const char BASE[] = "{\"region\":\"east\",\"epoch\":3,\"primary\":\"east\",\"fork_lsn\":10,"
                           "\"writer\":\"east-w1\",\"writer_gen\":2,\"op\":\"none\",\"version\":7}";

typedef struct {
    const char *find; /* text in BASE to replace; NULL: `with` is the whole text */
    const char *with;
    const char *says; /* a piece of the message: the key at fault, quoted as the message does */
} refusal;

#define NAME64 "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
#define OP(rest) "\"op\":\"switchover\"" rest

static const refusal refusals[] = {
    /* unknown keys */
    {"\"version\":7", "\"version\":7,\"colour\":1", "unknown key \"colour\""},
    {"\"version\":7", "\"version\":7,\"Epoch\":1", "unknown key \"Epoch\""},
    {"\"version\":7", "\"version\":7,\"\":1", "unknown key \"\""},
    {"\"version\":7", "\"version\":7,\"epoch\\u0000\":4", "\"epoch"},
    {"\"version\":7", "\"version\":7,\"region\\u0000x\":[]", "\"region"},
    /* numbers: wrong types, negative, fractions, too large */
    {"\"epoch\":3", "\"epoch\":\"3\"", "\"epoch\""},
    {"\"epoch\":3", "\"epoch\":3.5", "\"epoch\""},
    {"\"epoch\":3", "\"epoch\":3e0", "\"epoch\""},
    {"\"epoch\":3", "\"epoch\":-1", "\"epoch\""},
    {"\"epoch\":3", "\"epoch\":true", "\"epoch\""},
    {"\"epoch\":3", "\"epoch\":null", "\"epoch\""},
    {"\"epoch\":3", "\"epoch\":18446744073709552", "\"epoch\" 18446744073709552 is too large"},
    {"\"epoch\":3", "\"epoch\":9223372036854775808", "\"epoch\""},
    {"\"fork_lsn\":10", "\"fork_lsn\":-10", "\"fork_lsn\""},
    {"\"fork_lsn\":10", "\"fork_lsn\":{}", "\"fork_lsn\""},
    {"\"writer_gen\":2", "\"writer_gen\":[2]", "\"writer_gen\""},
    {"\"writer_gen\":2", "\"writer_gen\":-0.5", "\"writer_gen\""},
    {"\"version\":7", "\"version\":9223372036854775808", "\"version\""},
    {"\"version\":7", "\"version\":18446744073709551615", "\"version\""},
    {"\"version\":7", "\"version\":18446744073709551616", "\"version\""},
    {"\"version\":7", "\"version\":-9223372036854775808", "\"version\""},
    /* names: wrong types, empty, too long, NUL bytes, not in the topology */
    {"\"region\":\"east\"", "\"region\":1", "\"region\""},
    {"\"region\":\"east\"", "\"region\":\"\"", "\"region\""},
    {"\"region\":\"east\"", "\"region\":\"north\"", "\"region\": no region 'north'"},
    {"\"region\":\"east\"", "\"region\":\"" NAME64 "\"", "\"region\""},
    {"\"region\":\"east\"", "\"region\":\"east\\u0000\"", "\"region\": a NUL byte"},
    {"\"primary\":\"east\"", "\"primary\":\"north\"", "\"primary\": no region 'north'"},
    {"\"primary\":\"east\"", "\"primary\":null", "\"primary\""},
    {"\"primary\":\"east\"", "\"primary\":\"east-w1\"", "\"primary\": no region 'east-w1'"},
    {"\"primary\":\"east\"", "\"primary\":\"East\"", "\"primary\""},
    /* the writer must be an instance of the state's region */
    {"\"writer\":\"east-w1\"", "\"writer\":\"west-w1\"", "\"writer\": 'west-w1' is no instance"},
    {"\"writer\":\"east-w1\"", "\"writer\":\"east-s1\"", "\"writer\": 'east-s1' is no instance"},
    {"\"writer\":\"east-w1\"", "\"writer\":\"east-agent\"", "\"writer\": 'east-agent'"},
    {"\"writer\":\"east-w1\"", "\"writer\":\"east-router\"", "\"writer\": 'east-router'"},
    {"\"writer\":\"east-w1\"", "\"writer\":\"nobody\"", "\"writer\": 'nobody'"},
    {"\"writer\":\"east-w1\"", "\"writer\":\"east\"", "\"writer\": 'east'"},
    {"\"writer\":\"east-w1\"", "\"writer\":[]", "\"writer\""},
    /* the operation */
    {"\"op\":\"none\"", "\"op\":\"drain\"", "\"op\": none or switchover"},
    {"\"op\":\"none\"", "\"op\":1", "\"op\": none or switchover"},
    {"\"op\":\"none\"", "\"op\":\"none\\u0000x\"", "\"op\""},
    {"\"op\":\"none\"", OP(",\"op_epoch\":4"), "\"op_to\""},
    {"\"op\":\"none\"", OP(",\"op_to\":\"west\""), "\"op_epoch\" above"},
    {"\"op\":\"none\"", OP(",\"op_to\":\"west\",\"op_epoch\":3"), "\"op_epoch\" above"},
    {"\"op\":\"none\"", OP(",\"op_to\":\"west\",\"op_epoch\":2"), "\"op_epoch\" above"},
    {"\"op\":\"none\"", OP(",\"op_to\":\"north\",\"op_epoch\":4"), "\"op_to\": no region"},
    {"\"op\":\"none\"", OP(",\"op_to\":\"west\",\"op_epoch\":-4"), "\"op_epoch\""},
    {"\"op\":\"none\"", OP(",\"op_to\":\"west\",\"op_epoch\":\"4\""), "\"op_epoch\""},
    {"\"op\":\"none\"", "\"op\":\"none\",\"op_to\":\"west\"", "\"op_to\"/\"op_epoch\" without"},
    {"\"op\":\"none\"", "\"op\":\"none\",\"op_epoch\":4", "\"op_to\"/\"op_epoch\" without"},
    {"\"op\":\"none\",", "\"op_epoch\":4,", "\"op_to\"/\"op_epoch\" without"},
    /* an operation's epoch becomes the state's epoch: it has the same bound */
    {"\"op\":\"none\"", OP(",\"op_to\":\"west\",\"op_epoch\":9223372036854775807"), "\"op_epoch\""},
    /* members missing */
    {"\"region\":\"east\",", "", "\"region\" is missing"},
    {"\"primary\":\"east\",", "", "\"primary\" is missing"},
    {"\"writer\":\"east-w1\",", "", "\"writer\" is missing"},
    {"\"region\":\"east\",\"epoch\":3,\"primary\":\"east\",", "", "\"region\" is missing"},
    {NULL, "{}", "\"region\" is missing"},
    /* not an object; not JSON; more than one value */
    {NULL, "[]", "an object, not array"},
    {NULL, "3", "an object, not number"},
    {NULL, "\"east\"", "an object, not string"},
    {NULL, "null", "an object, not null"},
    {NULL, "", ""},
    {"\"version\":7}", "\"version\":7} x", ""},
    {"\"version\":7}", "\"version\":7}{}", ""},
    {"\"version\":7}", "\"version\":7,}", ""},
    {"\"version\":7", "\"version\":7,\"epoch\":3", ""}, /* a duplicate key */
    {"\"version\":7}", "\"version\":7", ""},
};

/* BASE with r's edit, into out. */
static size_t edited(const refusal *r, char *out, size_t cap)
{
    if (r->find == NULL) return (size_t)snprintf(out, cap, "%s", r->with);
    const char *at = strstr(BASE, r->find);
    assert_non_null(at);
    return (size_t)snprintf(out, cap, "%.*s%s%s", (int)(at - BASE), BASE, r->with,
                            at + strlen(r->find));
}

static void decode_refuses(void **state)
{
    const topology *t = *state;
    rg_state base;
    mrd_msg msg = {{0}};
    assert_int_equal(rg_state_decode(t, BASE, strlen(BASE), &base, &msg), 0);
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
        char text[TEXT_MAX];
        size_t len = edited(&refusals[i], text, sizeof(text));
        rg_state out;
        memset(&out, 0xa5, sizeof(out));
        rg_state untouched = out;
        msg.text[0] = '\0';
        int rc = rg_state_decode(t, text, len, &out, &msg);
        if (rc == 0) fail_msg("refusal %zu accepted: %s", i, text);
        if (msg.text[0] == '\0' || strstr(msg.text, refusals[i].says) == NULL)
            fail_msg("refusal %zu (%s): message \"%s\" does not say '%s'", i, text, msg.text,
                     refusals[i].says);
        assert_memory_equal(&out, &untouched, sizeof(out));
        /* the same state inside an agent's answer is refused the same way */
        char answer[TEXT_MAX + 32];
        int alen = snprintf(answer, sizeof(answer), "{\"state\":%.*s}", (int)len, text);
        rc = rg_state_decode_answer(t, answer, (size_t)alen, &out, &msg);
        assert_int_not_equal(rc, 0);
        assert_memory_equal(&out, &untouched, sizeof(out));
    }
}

static void decode_answer_refuses(void **state)
{
    const topology *t = *state;
    static const refusal bad[] = {
        {NULL, "{\"agent\":\"primary\",\"vdl\":3}", "\"state\" is missing"},
        {NULL, "[]", "\"state\" is missing"},
        {NULL, "{\"state\":[]}", "an object, not array"},
        {NULL, "{\"state\":null}", "an object, not null"},
        {NULL, "{\"State\":{}}", "\"state\" is missing"},
        {NULL, "", ""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rg_state out;
        mrd_msg msg = {{0}};
        const char *text = bad[i].with;
        assert_int_not_equal(rg_state_decode_answer(t, text, strlen(text), &out, &msg), 0);
        if (msg.text[0] == '\0' || strstr(msg.text, bad[i].says) == NULL)
            fail_msg("answer %s: message \"%s\" does not say '%s'", text, msg.text, bad[i].says);
    }
}

/* A state valid in one topology names regions another does not have. */
static void decode_checks_the_topology(void **state)
{
    const topology *t3 = *state;
    topology *t2 = rt_topology(2);
    assert_non_null(t2);
    rg_state s = make(t3, 2, 1, 2), out;
    mrd_buf b;
    encode(&s, &b);
    mrd_msg msg = {{0}};
    assert_int_equal(rg_state_decode(t3, (const char *)b.data, b.len, &out, &msg), 0);
    assert_int_not_equal(rg_state_decode(t2, (const char *)b.data, b.len, &out, &msg), 0);
    assert_non_null(strstr(msg.text, "\"region\": no region 'south'"));
    mrd_buf_free(&b);
    s = make(t3, 0, 1, 0);
    s.op = RG_OP_SWITCHOVER;
    s.op_epoch = 2;
    snprintf(s.op_to, sizeof(s.op_to), "south");
    encode(&s, &b);
    assert_int_not_equal(rg_state_decode(t2, (const char *)b.data, b.len, &out, &msg), 0);
    assert_non_null(strstr(msg.text, "\"op_to\": no region 'south'"));
    mrd_buf_free(&b);
    free(t2);
}

/* ---- the file -------------------------------------------------------------------------------- */

static void save_and_load(void **state)
{
    const topology *t = *state;
    char dir[] = "/tmp/test_region_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], missing[256], junk[256], big[256];
    snprintf(path, sizeof(path), "%s/%s", dir, RG_STATE_FILE);
    snprintf(missing, sizeof(missing), "%s/nothing/%s", dir, RG_STATE_FILE);
    snprintf(junk, sizeof(junk), "%s/junk.json", dir);
    snprintf(big, sizeof(big), "%s/big.json", dir);
    mrd_msg msg = {{0}};

    rg_state s = make(t, 1, 5, 2), back;
    s.fork_lsn = 99;
    s.op = RG_OP_NONE;
    s.version = 3;
    assert_int_equal(rg_state_save(&s, path, &msg), 0);
    assert_int_equal(rg_state_load(t, path, &back, &msg), 0);
    assert_memory_equal(&back, &s, sizeof(s));
    /* saved again over itself, changed */
    s.version = 4;
    s.op = RG_OP_SWITCHOVER;
    s.op_epoch = 6;
    snprintf(s.op_to, sizeof(s.op_to), "east");
    assert_int_equal(rg_state_save(&s, path, &msg), 0);
    assert_int_equal(rg_state_load(t, path, &back, &msg), 0);
    assert_memory_equal(&back, &s, sizeof(s));
    /* one line of JSON, nothing left behind */
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(mrd_read_file(path, RG_STATE_BYTES_MAX, &text, &len, &msg), 0);
    assert_true(len > 2 && text[0] == '{' && text[len - 2] == '}' && text[len - 1] == '\n');
    assert_null(memchr(text, '\n', len - 1));
    free(text);
    char tmp[300];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    assert_int_not_equal(access(tmp, F_OK), 0);

    /* refusals name the file (and the key) */
    assert_int_not_equal(rg_state_load(t, missing, &back, &msg), 0);
    assert_non_null(strstr(msg.text, missing));
    assert_int_not_equal(rg_state_save(&s, missing, &msg), 0);
    assert_non_null(strstr(msg.text, "nothing"));
    FILE *f = fopen(junk, "w");
    assert_non_null(f);
    fputs("{\"region\":\"west\",\"primary\":\"east\",\"writer\":\"west-w1\",\"epoch\":-1}\n", f);
    fclose(f);
    assert_int_not_equal(rg_state_load(t, junk, &back, &msg), 0);
    assert_non_null(strstr(msg.text, junk));
    assert_non_null(strstr(msg.text, "\"epoch\""));
    f = fopen(big, "w");
    assert_non_null(f);
    fputs("{\"region\":\"west\",\"primary\":\"east\",\"writer\":\"west-w1\"}", f);
    for (unsigned i = 0; i < RG_STATE_BYTES_MAX; i++)
        fputc(' ', f);
    fclose(f);
    assert_int_not_equal(rg_state_load(t, big, &back, &msg), 0);
    assert_non_null(strstr(msg.text, big));
    assert_memory_equal(&back, &s, sizeof(s)); /* refusals leave the output alone */

    unlink(path);
    unlink(junk);
    unlink(big);
    assert_int_equal(rmdir(dir), 0);
}

/* ---- instance modes -------------------------------------------------------------------------- */

static void instance_modes(void **state)
{
    const topology *t = *state;
    rg_state s = make(t, 0, 2, 0); /* east is primary; its writer is east-w1 */
    assert_int_equal(rg_inst_mode_of(&s, "east-w1"), RG_INST_WRITER);
    assert_int_equal(rg_inst_mode_of(&s, "east-r1"), RG_INST_READER);
    assert_int_equal(rg_inst_mode_of(&s, "west-w1"), RG_INST_READER);
    assert_int_equal(rg_inst_mode_of(&s, ""), RG_INST_READER);
    s.op = RG_OP_SWITCHOVER; /* draining towards west */
    s.op_epoch = 3;
    snprintf(s.op_to, sizeof(s.op_to), "west");
    assert_int_equal(rg_inst_mode_of(&s, "east-w1"), RG_INST_DRAINED);
    assert_int_equal(rg_inst_mode_of(&s, "east-r1"), RG_INST_READER);
    /* an in-region change of writer: the reader becomes the writer */
    snprintf(s.writer, sizeof(s.writer), "east-r1");
    assert_int_equal(rg_inst_mode_of(&s, "east-r1"), RG_INST_DRAINED);
    assert_int_equal(rg_inst_mode_of(&s, "east-w1"), RG_INST_READER);
    s.op = RG_OP_NONE;
    assert_int_equal(rg_inst_mode_of(&s, "east-r1"), RG_INST_WRITER);

    rg_state w = make(t, 1, 2, 0); /* west is a secondary of east */
    assert_int_equal(rg_inst_mode_of(&w, "west-w1"), RG_INST_STANDBY);
    assert_int_equal(rg_inst_mode_of(&w, "west-r1"), RG_INST_READER);
    w.op = RG_OP_SWITCHOVER; /* not a state the planner makes; a secondary stays standby */
    w.op_epoch = 3;
    snprintf(w.op_to, sizeof(w.op_to), "east");
    assert_int_equal(rg_inst_mode_of(&w, "west-w1"), RG_INST_STANDBY);
    w = make(t, 1, 3, 1); /* west promoted */
    assert_int_equal(rg_inst_mode_of(&w, "west-w1"), RG_INST_WRITER);

    assert_string_equal(rg_inst_mode_name(RG_INST_WRITER), "writer");
    assert_string_equal(rg_inst_mode_name(RG_INST_DRAINED), "drained");
    assert_string_equal(rg_inst_mode_name(RG_INST_STANDBY), "standby");
    assert_string_equal(rg_inst_mode_name(RG_INST_READER), "reader");
}

/* ---- rg_highest ------------------------------------------------------------------------------ */

static void highest(void **state)
{
    const topology *t = *state;
    rg_view v[3];
    memset(v, 0, sizeof(v));
    for (int r = 0; r < 3; r++)
        v[r].st = make(t, r, 1, 0);
    assert_null(rg_highest(v, 3)); /* nobody answers */

    v[1].reachable = v[2].reachable = true;
    assert_ptr_equal(rg_highest(v, 3), &v[1].st); /* equal, none its own primary: the first */
    v[0].reachable = true;
    assert_ptr_equal(rg_highest(v, 3), &v[0].st); /* the primary's own word */
    /* the primary's own word wins wherever it is in the list */
    for (int r = 0; r < 3; r++)
        v[r].st = make(t, r, 4, 2);
    assert_ptr_equal(rg_highest(v, 3), &v[2].st);
    /* a higher epoch wins over the primary's own word, and unanswered views count for nothing */
    v[1].st.epoch = 5;
    assert_ptr_equal(rg_highest(v, 3), &v[1].st);
    v[1].reachable = false;
    assert_ptr_equal(rg_highest(v, 3), &v[2].st);
    v[0].st.epoch = 9;
    assert_ptr_equal(rg_highest(v, 3), &v[0].st);
    assert_ptr_equal(rg_highest(v, 1), &v[0].st);
    v[0].reachable = false;
    assert_ptr_equal(rg_highest(v, 2), NULL);
}

/* ---- the planner, step by step --------------------------------------------------------------- */

typedef struct {
    const topology *t;
    rg_view v[3];
    rg_plan_req req;
    rg_step step;
} plan_fixture;

static void fixture(plan_fixture *f, const topology *t, int target, bool allow_loss)
{
    memset(f, 0, sizeof(*f));
    f->t = t;
    f->req = (rg_plan_req){.topo = t, .target = target, .allow_loss = allow_loss};
    for (int r = 0; r < 3; r++) {
        f->v[r].reachable = true;
        f->v[r].st = make(t, r, 1, 0);
        f->v[r].writer_reachable = true;
        f->v[r].writer_ready = true;
        f->v[r].writer_mode = r == 0 ? RG_INST_WRITER : RG_INST_STANDBY;
        f->v[r].writer_epoch = r == 0 ? rg_volume_epoch_min(1) : 0;
        f->v[r].vdl = 100;
    }
}

/* Plans, expects kind and name; a SET is applied to the views as its agent would. */
static void expect(plan_fixture *f, rg_step_kind kind, const char *name)
{
    rg_plan(&f->req, f->v, &f->step);
    if (f->step.kind != kind || strcmp(f->step.name, name) != 0)
        fail_msg("expected %d %s, got %d %s: %s", kind, name, f->step.kind, f->step.name,
                 f->step.why);
    assert_true(f->step.why[0] != '\0');
    if (kind == RG_STEP_SET) f->v[f->step.region].st = f->step.set;
}

static void plan_switchover_trace(void **state)
{
    plan_fixture f;
    fixture(&f, *state, 1, false);
    expect(&f, RG_STEP_SET, "drain");
    assert_int_equal(f.step.region, 0);
    assert_int_equal(f.v[0].st.op_epoch, 2);
    assert_string_equal(f.v[0].st.op_to, "west");
    expect(&f, RG_STEP_WAIT, "drain"); /* its writer has not seen the state yet */
    f.v[0].writer_mode = RG_INST_DRAINED;
    f.v[0].writer_ready = false;
    expect(&f, RG_STEP_WAIT, "drain");
    f.v[0].writer_ready = true;
    /* a writer that replaced a dead one mid-drain: nothing in flight, but its VDL does not
     * cover what it recovered yet; what its region or the target holds is no final either */
    f.v[0].writer_recovered_vdl = 150;
    f.v[0].writer_vdl = 0;
    expect(&f, RG_STEP_WAIT, "drain");
    assert_non_null(strstr(f.step.why, "150"));
    f.v[0].writer_recovered_vdl = 0;
    f.v[0].vdl = 120;
    expect(&f, RG_STEP_WAIT, "drain");
    f.v[0].writer_vdl = 120;
    f.v[1].vdl = 130;
    expect(&f, RG_STEP_WAIT, "drain");
    f.v[1].vdl = 0;
    f.v[0].writer_vdl = 150;
    expect(&f, RG_STEP_WAIT, "catch-up");
    assert_non_null(strstr(f.step.why, "150"));
    f.v[1].vdl = 149;
    expect(&f, RG_STEP_WAIT, "catch-up");
    f.v[1].vdl = 150;
    expect(&f, RG_STEP_SET, "promote");
    assert_int_equal(f.step.region, 1);
    assert_int_equal(f.v[1].st.epoch, 2);
    assert_string_equal(f.v[1].st.primary, "west");
    assert_int_equal(f.v[1].st.fork_lsn, 150);
    expect(&f, RG_STEP_WAIT, "open"); /* the standby writer has not restarted yet */
    f.v[1].writer_mode = RG_INST_WRITER;
    f.v[1].writer_epoch = rg_volume_epoch_min(2);
    f.v[1].writer_recovered_vdl = 150;
    expect(&f, RG_STEP_SET, "tell");
    assert_int_equal(f.step.region, 0);
    assert_string_equal(f.v[0].st.primary, "west");
    assert_int_equal(f.v[0].st.op, RG_OP_NONE);
    expect(&f, RG_STEP_SET, "tell");
    assert_int_equal(f.step.region, 2);
    expect(&f, RG_STEP_DONE, "done");
    /* the primary's agent now being unreachable changes nothing: the switchover is over */
    f.v[0].reachable = false;
    expect(&f, RG_STEP_DONE, "done");
}

static void plan_refusals(void **state)
{
    plan_fixture f;
    fixture(&f, *state, 1, false);
    f.v[0].reachable = false; /* a planned switchover needs the primary */
    expect(&f, RG_STEP_FAIL, "drain");
    assert_non_null(strstr(f.step.why, "east does not answer"));
    assert_non_null(strstr(f.step.why, "--allow-data-loss"));
    f.v[0].reachable = true;
    f.v[1].reachable = false;
    expect(&f, RG_STEP_FAIL, "ask");
    assert_non_null(strstr(f.step.why, "west"));
    for (int r = 0; r < 3; r++)
        f.v[r].reachable = false;
    expect(&f, RG_STEP_FAIL, "ask");

    /* a switchover to south under way, south unreachable: no other switchover and no abort */
    fixture(&f, *state, 1, false);
    f.v[0].st.op = RG_OP_SWITCHOVER;
    f.v[0].st.op_epoch = 2;
    snprintf(f.v[0].st.op_to, sizeof(f.v[0].st.op_to), "south");
    f.v[2].reachable = false;
    expect(&f, RG_STEP_FAIL, "drain");
    f.req.target = 0;
    expect(&f, RG_STEP_FAIL, "undrain");
    /* south answers, not promoted: retarget, or call it off */
    f.v[2].reachable = true;
    expect(&f, RG_STEP_SET, "undrain");
    assert_int_equal(f.v[0].st.op, RG_OP_NONE);
    expect(&f, RG_STEP_DONE, "done");
}

static void plan_failover_trace(void **state)
{
    plan_fixture f;
    fixture(&f, *state, 2, true);
    f.v[0].reachable = false;
    f.v[2].vdl = 90;
    expect(&f, RG_STEP_SET, "promote");
    assert_int_equal(f.step.region, 2);
    assert_int_equal(f.v[2].st.epoch, 2);
    assert_int_equal(f.v[2].st.fork_lsn, 90);
    expect(&f, RG_STEP_WAIT, "open");
    /* the writer recovered more than the agent reported: the fork follows the recovery */
    f.v[2].writer_mode = RG_INST_WRITER;
    f.v[2].writer_epoch = rg_volume_epoch_min(2);
    f.v[2].writer_recovered_vdl = 95;
    expect(&f, RG_STEP_SET, "fork");
    assert_int_equal(f.v[2].st.fork_lsn, 95);
    expect(&f, RG_STEP_SET, "tell");
    assert_int_equal(f.step.region, 1);
    assert_int_equal(f.v[1].st.fork_lsn, 95);
    expect(&f, RG_STEP_DONE, "done");
    /* the old primary returns still at epoch 1: it is told */
    f.v[0].reachable = true;
    expect(&f, RG_STEP_SET, "tell");
    assert_int_equal(f.step.region, 0);
    expect(&f, RG_STEP_DONE, "done");
}

/* An unplanned failover while a switchover is under way goes above the switchover's epoch:
 * its target may have been promoted there without answering now. */
static void plan_failover_above_a_switchover(void **state)
{
    plan_fixture f;
    fixture(&f, *state, 2, true);
    f.v[0].st.op = RG_OP_SWITCHOVER; /* east drains towards west, at epoch 2 */
    f.v[0].st.op_epoch = 2;
    snprintf(f.v[0].st.op_to, sizeof(f.v[0].st.op_to), "west");
    f.v[1].reachable = false; /* west: promoted at 2, perhaps */
    expect(&f, RG_STEP_SET, "promote");
    assert_int_equal(f.step.region, 2);
    assert_int_equal(f.v[2].st.epoch, 3);
    /* without a switchover under way, the next epoch */
    fixture(&f, *state, 2, true);
    expect(&f, RG_STEP_SET, "promote");
    assert_int_equal(f.v[2].st.epoch, 2);
}

/* A region that learned the epoch from a peer before the fork step is told the fork. */
static void plan_tells_the_fork(void **state)
{
    plan_fixture f;
    fixture(&f, *state, 1, true);
    for (int r = 0; r < 3; r++) {
        f.v[r].st.epoch = 2;
        snprintf(f.v[r].st.primary, sizeof(f.v[r].st.primary), "west");
        f.v[r].st.fork_lsn = 90; /* the promotion's */
    }
    f.v[1].st.fork_lsn = 95; /* the fork step's, after west's writer recovered */
    f.v[1].writer_mode = RG_INST_WRITER;
    f.v[1].writer_epoch = rg_volume_epoch_min(2);
    f.v[1].writer_recovered_vdl = 95;
    expect(&f, RG_STEP_SET, "tell");
    assert_int_equal(f.step.region, 0);
    assert_int_equal(f.step.set.epoch, 2);
    assert_int_equal(f.step.set.fork_lsn, 95);
    expect(&f, RG_STEP_SET, "tell");
    assert_int_equal(f.step.region, 2);
    assert_int_equal(f.step.set.fork_lsn, 95);
    expect(&f, RG_STEP_DONE, "done");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(initial_state),
        cmocka_unit_test(states_round_trip),
        cmocka_unit_test(decode_accepts),
        cmocka_unit_test(decode_refuses),
        cmocka_unit_test(decode_answer_refuses),
        cmocka_unit_test(decode_checks_the_topology),
        cmocka_unit_test(save_and_load),
        cmocka_unit_test(instance_modes),
        cmocka_unit_test(highest),
        cmocka_unit_test(plan_switchover_trace),
        cmocka_unit_test(plan_refusals),
        cmocka_unit_test(plan_failover_trace),
        cmocka_unit_test(plan_failover_above_a_switchover),
        cmocka_unit_test(plan_tells_the_fork),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
